# CORS (imgbill_cors): a browser's preflight is answered by the module, for
# no key, with nothing held and nothing sent upstream; every reply of the
# location says who may read it and which of its headers, errors included;
# the upstream's own CORS headers never reach the client.  conf.d turns it
# on for any origin; a list of origins answers only those; off (the
# module's default) answers an OPTIONS as it always did.  The same in a
# real browser: t/38-cors-browser.t.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok gerror_ok conf_ok conf_bad);

my $ORIGIN = 'http://127.0.0.2:8081';
my $EXPOSE = 'X-Imgbill-Charge, X-Imgbill-Balance, X-Imgbill-Request-Id';
my $ASKED = 'authorization,content-type,x-stainless-os,x-stainless-retry-count';

sub preflight {
    my ($h, $path, %o) = @_;
    return $h->request('OPTIONS', $path, undef,
                       Origin => $o{origin} // $ORIGIN,
                       'Access-Control-Request-Method' => $o{method} // 'POST',
                       ($o{asked} ? ('Access-Control-Request-Headers' => $o{asked})
                                  : ()));
}

# the headers every reply of a CORS location carries, for origin $allow
sub readable_ok {
    my ($res, $allow, $name) = @_;
    is $res->{headers}{'access-control-allow-origin'}, $allow,
        "$name: Access-Control-Allow-Origin $allow";
    is $res->{header_count}{'access-control-allow-origin'}, 1,
        "$name: ... once";
    is $res->{headers}{'access-control-expose-headers'}, $EXPOSE,
        "$name: the charge, the balance and the request id readable";
}

# --- conf.d: any origin ----------------------------------------------------

# the request lines, as a log with $request has them (the harness' own
# log has the path only)
my $lines = tempdir(CLEANUP => 1) . '/requests.log';
my $h = Imgbill::Harness->new(extra_server => "    access_log $lines combined;");
{
    open my $f, '<', Imgbill::Harness::root() . '/conf.d/imgbill.conf' or die $!;
    like do { local $/; <$f> }, qr/^\s*imgbill_cors \*;/m,
        'conf.d turns CORS on, for any origin';
}
my ($acct, $key) = $h->fresh_account(prefix => 'cors', units => 100000);

my %locations = (
    'chat completions'   => ['/v1/chat/completions', 'POST'],
    'fast channel'       => ['/fast/v1/chat/completions', 'POST'],
    'Images API'         => ['/v1/images/generations', 'POST'],
    'an upload'          => ['/v1/images/edits', 'POST'],
    'Gemini'             => ['/v1beta/models/gemini-2.5-flash-image:generateContent', 'POST'],
    'Ideogram'           => ['/ideogram/v1/ideogram-v3/generate', 'POST'],
    'the model list'     => ['/v1/models', 'GET'],
    'the account'        => ['/v1/imgbill/account', 'GET'],
);

my $before = $h->snapshot;
my $hits = $h->upstream_hits;

for my $name (sort keys %locations) {
    my ($path, $method) = @{ $locations{$name} };
    my $res = preflight($h, $path, method => $method, asked => $ASKED);
    is $res->{status}, 204, "preflight, $name: 204";
    is $res->{body} // '', '', "preflight, $name: no body";
    is $res->{headers}{'access-control-allow-origin'}, '*',
        "preflight, $name: any origin";
    like $res->{headers}{'access-control-allow-methods'}, qr/\b$method\b/,
        "preflight, $name: $method allowed";
    my $allowed = lc($res->{headers}{'access-control-allow-headers'} // '');
    for my $hdr (qw(authorization content-type x-goog-api-key api-key
                    x-stainless-os x-stainless-retry-count
                    x-stainless-package-version)) {
        like $allowed, qr/(?:^|, ?)\Q$hdr\E(?:,|$)/,
            "preflight, $name: $hdr may be sent";
    }
    is $res->{headers}{'access-control-max-age'}, 7200,
        "preflight, $name: kept two hours";
}

# the list sent without a preflight's asking: what the SDKs send from a
# browser, whatever the browser names
my $res = preflight($h, '/v1/chat/completions');
is $res->{header_count}{'access-control-allow-origin'}, 1,
    'a preflight: one Access-Control-Allow-Origin';
my $listed = lc($res->{headers}{'access-control-allow-headers'} // '');
for my $hdr (qw(authorization content-type x-goog-api-key api-key
                x-stainless-os x-stainless-retry-count x-stainless-lang
                x-stainless-package-version x-stainless-runtime
                x-stainless-runtime-version x-stainless-arch
                x-stainless-timeout)) {
    like $listed, qr/(?:^|, )\Q$hdr\E(?:,|$)/, "unasked, $hdr may be sent";
}

# a Gemini key in the URL of the call is in its preflight's URL too
my $SECRET = 'AIzaPreflightSecret4711';
$res = preflight($h, "/v1beta/models/gemini-2.5-flash-image:generateContent?key=$SECRET");
is $res->{status}, 204, 'a preflight with ?key=: 204';
$res = preflight($h, "/v1beta/models?key=$SECRET", method => 'GET');
is $res->{status}, 204, "a preflight of Gemini's model list with ?key=: 204";

is_deeply $h->snapshot, $before, 'the preflights left Redis as it was';
is $h->upstream_hits, $hits, '... and sent nothing upstream';
my @pre = grep { $_->{method} eq 'OPTIONS' } $h->access_entries;
is scalar(@pre), scalar(keys %locations) + 3, 'each preflight logged';
my $requests = do { local (@ARGV, $/) = ($lines); <> } // '';
like $requests, qr{OPTIONS /v1beta/models/\S+\?key=x+ }, 'the request line logged';
unlike $requests . $h->error_log, qr/\Q$SECRET\E/,
    '... with no key of the URL: masked';
is scalar(grep { $_->{status} eq '204' && ($_->{charge} // '-') eq '-' } @pre),
    scalar(@pre), '... 204, no charge';

# a preflight asking for headers of no sane name gets the list, not them
$res = preflight($h, '/v1/chat/completions',
                    asked => 'authorization, x-evil: 1');
is $res->{status}, 204, 'preflight asking for "x-evil: 1": 204';
unlike $res->{headers}{'access-control-allow-headers'}, qr/evil/,
    '... which is not repeated';

# an OPTIONS that is no preflight is what it was: the method is not allowed
$res = $h->request('OPTIONS', '/v1/chat/completions', undef, Origin => $ORIGIN);
error_ok($res, 405, 'invalid_request_error', 'method_not_allowed',
         'OPTIONS without Access-Control-Request-Method');
readable_ok($res, '*', 'the 405');

# --- every reply readable --------------------------------------------------

my $bal = $h->balance($acct);
$res = $h->chat(key => $key, headers => { Origin => $ORIGIN });
is $res->{status}, 200, 'a generation from another origin: 200';
readable_ok($res, '*', 'a generation');
is $res->{headers}{'x-imgbill-charge'}, '0.2465', '... charged 0.2465';
is $h->balance($acct), $bal - 2465, '... in Redis';

$res = $h->chat(key => $key, headers => { Origin => $ORIGIN },
                body => { model => 'gemini-2.5-flash-image', stream => \1,
                          messages => [ { role => 'user', content => 'a cat' } ] });
is $res->{status}, 200, 'a stream: 200';
readable_ok($res, '*', 'a stream');

$res = $h->chat(key => $key, headers => { Origin => $ORIGIN }, mock => 'cors=1');
is $res->{status}, 200, 'an upstream answering CORS itself: 200';
readable_ok($res, '*', "the upstream's CORS headers replaced");
ok !exists $res->{headers}{'access-control-allow-credentials'},
    "... none of the upstream's left";

$res = $h->chat(key => "$key-wrong", headers => { Origin => $ORIGIN });
error_ok($res, 401, 'invalid_request_error', 'invalid_api_key', 'a wrong key');
readable_ok($res, '*', 'the 401');

my ($poor, $poor_key) = $h->fresh_account(prefix => 'cors-poor', units => 100);
$res = $h->chat(key => $poor_key, headers => { Origin => $ORIGIN });
is $res->{status}, 402, 'too little balance: 402';
readable_ok($res, '*', 'the 402');

$res = $h->chat(key => $key, headers => { Origin => $ORIGIN },
                mock => 'status=500');
is $res->{status}, 500, "the upstream's 500";
readable_ok($res, '*', "the upstream's error");

$res = $h->post('/v1beta/models/gemini-2.5-flash-image:generateContent',
                { prompt => 'a cat' }, 'x-goog-api-key' => $key, Origin => $ORIGIN);
gerror_ok($res, 400, 'INVALID_ARGUMENT', 'a Gemini error');
readable_ok($res, '*', "Gemini's 400");

$res = $h->chat(key => $key, headers => { Origin => $ORIGIN }, mock => 'drop=1');
error_ok($res, 502, 'upstream_error', 'upstream_response_incomplete', 'a reply cut short');
readable_ok($res, '*', "the cut reply's 502");

$res = $h->chat(key => $key, headers => { Origin => $ORIGIN }, mock => 'kind=nonjson');
is $res->{status}, 502, 'a reply not JSON: 502';
readable_ok($res, '*', "the 502 in the reply's place");

# nginx's own refusal, in conf.d's JSON (error_page 413 = @imgbill_too_large)
$res = $h->raw_http(key => $key, upto => 'headers',
                    headers => [ Origin => $ORIGIN,
                                 'Content-Type' => 'application/json',
                                 'Content-Length' => 40_000_000 ]);
is $res->{status}, 413, "a body over client_max_body_size: nginx's 413";
readable_ok($res, '*', "nginx's 413");

$res = $h->request('GET', '/v1/no-such-path', undef, Origin => $ORIGIN);
is $res->{status}, 404, 'an unknown path: 404';
readable_ok($res, '*', 'the JSON 404');

$res = $h->request('GET', '/v1/imgbill/account', undef,
                   Authorization => "Bearer $key", Origin => $ORIGIN);
is $res->{status}, 200, "the key holder's account: 200";
readable_ok($res, '*', 'the account');

$res = $h->request('GET', '/imgbill/metrics', undef, Origin => $ORIGIN);
ok !exists $res->{headers}{'access-control-allow-origin'},
    'the metrics: no page of another origin reads them';

# last: the key's reads are spent after it
# limit_req's, in Google's shape (error_page 429 = @imgbill_too_many_google)
my $limited;
for (1 .. 60) {
    $res = $h->request('GET', '/v1beta/models', undef,
                       'x-goog-api-key' => $key, Origin => $ORIGIN);
    next unless $res->{status} == 429;
    $limited = $res;
    last;
}
ok $limited, "Gemini's model list read too often: limit_req's 429";
readable_ok($limited || {}, '*', "limit_req's 429");

$h->teardown;

# --- a list of origins -------------------------------------------------------

my $APP = 'https://app.example';
$h = Imgbill::Harness->new(conf_filter => sub {
    # an operator's capitals: browsers send origins in lowercase
    $_[0] =~ s/^(\s*)imgbill_cors \*;/${1}imgbill_cors $ORIGIN https:\/\/App.Example;/m
        or die 'no imgbill_cors in conf.d';
});
($acct, $key) = $h->fresh_account(prefix => 'cors-list', units => 100000);

$res = preflight($h, '/v1/chat/completions', origin => $APP);
is $res->{status}, 204, 'a listed origin: 204';
is $res->{headers}{'access-control-allow-origin'}, $APP,
    '... named back as browsers spell it (configured "https://App.Example")';
like $res->{headers}{'vary'}, qr/\bOrigin\b/, '... Vary: Origin';

$before = $h->snapshot;
$hits = $h->upstream_hits;
$res = preflight($h, '/v1/chat/completions', origin => 'https://evil.example');
error_ok($res, 403, 'invalid_request_error', 'origin_not_allowed',
         'an origin not listed');
ok !exists $res->{headers}{'access-control-allow-origin'},
    '... nothing a browser would accept';
like $res->{headers}{'vary'}, qr/\bOrigin\b/, '... Vary: Origin';
is_deeply $h->snapshot, $before, '... Redis as it was';
is $h->upstream_hits, $hits, '... nothing upstream';

$res = $h->chat(key => $key, headers => { Origin => $ORIGIN });
is $res->{status}, 200, 'a generation from a listed origin: 200';
readable_ok($res, $ORIGIN, 'a listed origin');
like $res->{headers}{'vary'}, qr/\bOrigin\b/, '... Vary: Origin';

$res = preflight($h, "/v1beta/models/gemini-2.5-flash-image:generateContent?key=$SECRET",
                 origin => 'https://evil.example');
is $res->{status}, 403, 'an origin not listed, a key in the URL: 403';
unlike $h->access_log . $h->error_log, qr/\Q$SECRET\E/, '... not in the logs';

$res = preflight($h, '/v1/chat/completions', origin => 'HTTPS://APP.EXAMPLE');
is $res->{status}, 403, 'an origin as no browser spells it: no match';

# a client that is no browser is served: CORS only tells browsers
$res = $h->chat(key => $key, headers => { Origin => 'https://evil.example' });
is $res->{status}, 200, 'another origin, no preflight (no browser): served';
ok !exists $res->{headers}{'access-control-allow-origin'},
    '... with nothing that lets a page read it';
$res = $h->chat(key => $key);
is $res->{status}, 200, 'no Origin: served';
ok !exists $res->{headers}{'access-control-allow-origin'}, '... as before';

$h->teardown;

# --- off ---------------------------------------------------------------------

$h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s/^\s*imgbill_cors \*;\n//m or die 'no imgbill_cors in conf.d';
});
($acct, $key) = $h->fresh_account(prefix => 'cors-off', units => 100000);
$res = preflight($h, '/v1/chat/completions');
error_ok($res, 405, 'invalid_request_error', 'method_not_allowed',
         'off: a preflight is a method not allowed');
$res = $h->chat(key => $key, headers => { Origin => $ORIGIN });
is $res->{status}, 200, 'off: a generation';
ok !exists $res->{headers}{'access-control-allow-origin'}, '... not readable';
$h->teardown;

# --- the directive -------------------------------------------------------------

my $loc = "server { listen 127.0.0.1:1; location / { imgbill fast; "
        . "imgbill_fast_price m 1; proxy_pass http://127.0.0.1:2; %s } }\n"
        . "imgbill_redis 127.0.0.1:3;\n";
conf_ok('imgbill_cors *', sprintf $loc, 'imgbill_cors *;');
conf_ok('imgbill_cors with two origins',
        sprintf $loc, 'imgbill_cors https://a.example http://b.example:8080;');
conf_ok('imgbill_cors off', sprintf $loc, 'imgbill_cors off;');
conf_bad('an origin with a path',
         sprintf($loc, 'imgbill_cors https://a.example/;'),
         qr/"https:\/\/a\.example\/" is no origin/);
conf_bad('an origin without a scheme', sprintf($loc, 'imgbill_cors a.example;'),
         qr/"a\.example" is no origin/);
conf_bad('https with its default port',
         sprintf($loc, 'imgbill_cors https://a.example:443;'),
         qr/"https:\/\/a\.example:443" is no origin/);
conf_bad('http with its default port',
         sprintf($loc, 'imgbill_cors http://a.example:80;'),
         qr/"http:\/\/a\.example:80" is no origin/);
conf_ok('another port', sprintf $loc, 'imgbill_cors https://a.example:8443;');
conf_bad('"*" in a list', sprintf($loc, 'imgbill_cors * https://a.example;'),
         qr/takes "\*" alone/);
conf_bad('twice', sprintf($loc, 'imgbill_cors *; imgbill_cors off;'),
         qr/"imgbill_cors" directive is duplicate/);

done_testing;
