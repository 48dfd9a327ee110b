# A web app on another origin calls the relay from a real browser: Debian's
# chromium, headless, driven by puppeteer-core (t/sdk/cors.mjs).  The app
# and a second, unlisted origin are two more servers of the test's nginx
# (127.0.0.1, ports of their own); the relay's imgbill_cors lists the app
# only.  From the app, fetch() and the official openai SDK (its ES modules
# served by the app, dangerouslyAllowBrowser) read the image and the
# charge, and a wrong key's 401; the browser sent a preflight first.  From
# the unlisted origin the browser refuses the reply, and the preflight it
# sent charged nothing and reached no upstream.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(browser free_port);

# scripts/test's second pass: what the browser calls runs under memcheck in
# the tests of the same requests without one (t/37-cors.t)
plan skip_all => 'the browser adds nothing under valgrind: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my ($CHROMIUM, $sdk) = browser();

my ($app_port, $other_port) = (free_port(), free_port());
my $APP = "http://127.0.0.1:$app_port";
my $OTHER = "http://127.0.0.1:$other_port";

# the app's page: nothing but what lets the SDK's modules load unbundled
# (its one bare import, resolved as a bundler does for a browser)
my $page = '<!doctype html><html><head><meta charset="utf-8">'
         . '<script type="importmap">{"imports":{"openai/_shims/auto/runtime":'
         . '"/openai/_shims/auto/runtime.mjs"}}</script></head>'
         . '<body>app</body></html>';
my $app = sub {
    my ($port) = @_;
    return <<"EOC";
server {
    listen 127.0.0.1:$port;
    location = / {
        default_type text/html;
        return 200 '$page';
    }
    location /openai/ {
        alias $sdk/node_modules/openai/;
        types { text/javascript mjs js; }
    }
}
EOC
};

my $h = Imgbill::Harness->new(
    extra_http  => $app->($app_port) . $app->($other_port),
    conf_filter => sub {
        $_[0] =~ s/^(\s*)imgbill_cors \*;/${1}imgbill_cors $APP;/m
            or die 'no imgbill_cors in conf.d';
    });
my ($acct, $key) = $h->fresh_account(prefix => 'browser', units => 100000);

my $arg = JSON::PP->new->encode({ chromium => $CHROMIUM, relay => $h->url,
                                  app => $APP, other => $OTHER, key => $key });
$arg =~ s/'/'\\''/g;
my $out = `node $sdk/cors.mjs '$arg' 2>&1`;
my $r = eval { decode_json((grep { /^\{/ } split /\n/, $out)[-1] // '') };
ok $r && !$r->{failure}, 'the browser ran the app'
    or diag $r ? $r->{failure} : $out;
$r //= {};

# --- the app's own fetch() -------------------------------------------------

my $f = $r->{fetch} || {};
is $f->{status}, 200, 'fetch() from the app: 200';
is $f->{image_url_start}, 'data:image/png;base64,', '... the image read';
is $f->{charge}, '0.2465', '... X-Imgbill-Charge read: 0.2465';
is $f->{balance}, '9.7535', '... X-Imgbill-Balance read';
like $f->{request_id} // '', qr/^[0-9a-f]{32}$/, '... X-Imgbill-Request-Id read';

my $w = $r->{wrong_key} || {};
is $w->{status}, 401, 'a wrong key from the app: 401, read by the page';
is $w->{error_code}, 'invalid_api_key', '... its code read';

# --- the openai SDK in the browser -------------------------------------------

my $s = $r->{sdk} || {};
ok !$s->{error}, 'the openai SDK in the browser' or diag $s->{error};
is $s->{image_url_start}, 'data:image/png;base64,', '... the image read';
is $s->{charge}, '0.2465', '... the charge read from the response';

is $h->balance($acct), 100000 - 2 * 2465, 'two generations charged in Redis';
is scalar(@{ $h->ledger($acct) }), 2, '... two ledger entries';

# --- what the browser sent, as the relay logged it ----------------------------

my @log = $h->access_entries;
my @pre = grep { $_->{method} eq 'OPTIONS' } @log;
my @posts = grep { $_->{method} eq 'POST' } @log;
ok scalar(grep { $_->{status} eq '204' } @pre),
    'the browser asked first: a preflight, answered 204';
is scalar(@posts), 3, "three calls sent: the app's two fetch()es and the SDK's";

# --- an origin not listed ----------------------------------------------------

my $o = $r->{other} || {};
ok $o->{refused}, 'fetch() from an unlisted origin: refused by the browser'
    or diag explain $o;
ok !defined $o->{charge}, '... which read no charge';
is scalar(grep { $_->{status} eq '403' } @pre), 1,
    '... its preflight answered 403';
is $h->balance($acct), 100000 - 2 * 2465, '... and nothing more charged';

done_testing;
