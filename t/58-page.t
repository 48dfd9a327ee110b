# The self-service page, /imgbill/ (html/index.html), in a real browser:
# Debian's chromium, headless, driven by puppeteer-core (t/sdk/page.mjs).
# A key holder pastes the key; the figures and the ledger the page shows are
# checked against Redis to the unit, page 1 and page 2 of the ledger, a
# wrong key shows the API's 401 message and nothing of the account before
# it, Redis down shows the API's 503 message.  The page asks nothing of any
# other origin and leaves the key nowhere but in its memory.  A screenshot
# of ledger page 1 is kept in build/artifacts/page.png, of page 2 in
# build/artifacts/page-older.png, of a wrong key in page-401.png.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use File::Path qw(make_path);
use POSIX qw(strftime);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units browser);

# scripts/test's second pass: what the browser calls runs under memcheck in
# the tests of the same requests without one (t/59-account.t, t/64-usage.t)
plan skip_all => 'the browser adds nothing under valgrind: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my ($CHROMIUM, $sdk) = browser();

my $root = Imgbill::Harness::root();
my $artifacts = "$root/build/artifacts";
make_path($artifacts);
my $shot = "$artifacts/page.png";
my $shot2 = "$artifacts/page-older.png";
my $shot3 = "$artifacts/page-401.png";
unlink $shot, $shot2, $shot3;

my $JSON = JSON::PP->new->canonical;
my $h = Imgbill::Harness->new;
my $base = $h->url('');

# node page.mjs CONFIG -> what the page showed, as JSON
sub browse {
    my (%cfg) = @_;
    my $arg = $JSON->encode({ base => $base, chromium => $CHROMIUM, %cfg });
    $arg =~ s/'/'\\''/g;
    my $out = `node $sdk/page.mjs '$arg' 2>&1`;
    my $r = eval { decode_json((grep { /^\{/ } split /\n/, $out)[-1] // '') };
    if (!$r || $r->{failure}) {
        diag "page.mjs: " . ($r ? $r->{failure} : $out);
        $r //= {};
    }
    return $r;
}

# ---- the file itself ----------------------------------------------------

{
    open my $f, '<', "$root/html/index.html" or die "html/index.html: $!";
    my $html = do { local $/; <$f> };
    my @refs = $html =~ /\b(?:src|href|action)\s*=\s*["']?([^"'\s>]+)/gi;
    is_deeply [ grep { !/^data:/ } @refs ], [], 'index.html loads nothing by URL (inline only)';
    unlike $html, qr{(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/}i, '... and names no other host';
    my $js = join '', $html =~ m{<script>(.*?)</script>}gs;
    ok length $js, '... its script inline';
    unlike $js, qr/localStorage|sessionStorage|document\.cookie|indexedDB/,
        '... which touches no storage that outlives the page';
}

# ---- an account with two pages of ledger ----------------------------------

my ($acct, $key) = $h->fresh_account(prefix => 'page', units => 1000000);
my $bad = 'sk-page-wrong-key';

# a credit first, if the CLI writes credit entries (shown then; not needed)
my ($ok) = $h->cli('topup', $acct, '1.00');
note 'topup by the CLI: exit ' . $ok;

my @charges = map { $h->chat(key => $key) } 1 .. 23;
is scalar(grep { $_->{status} == 200 && ($_->{headers}{'x-imgbill-charge'} // '') eq '0.2465' }
          @charges), 23, '23 charges of 0.2465 through the relay';
ok $h->wait_holds($acct, 0), 'no hold left';

my $balance = $h->balance($acct);
my $ledger = $h->ledger($acct);
my @newest = reverse @$ledger;
my @charged = grep { ($_->{type} // 'charge') eq 'charge' } @newest;
is scalar @charged, 23, '23 charge entries in Redis';

# what a row must show, from a Redis ledger entry
sub expect_row {
    my ($e) = @_;
    my $type = $e->{type} // 'charge';
    my $amount = $type eq 'charge' ? fmt_units(-$e->{charge}) : fmt_units($e->{amount});
    $amount = "+$amount" if $amount !~ /^-/ && $amount ne '0.0000';
    return {
        id      => $type eq 'charge' ? $e->{request_id} : $e->{_id},
        type    => $type,
        time    => strftime('%Y-%m-%d %H:%M:%S', localtime $e->{ts}),
        model   => $type eq 'charge' ? $e->{model} : undef,
        amount  => $amount,
        balance => fmt_units($e->{balance_after}),
    };
}
sub shown_rows {
    my ($rows) = @_;
    return [ map { my $r = $_; +{ map { $_ => $r->{$_} } qw(id type time model amount balance) } }
             @{ $rows || [] } ];
}

my $api_401 = $h->request('GET', '/v1/imgbill/account', undef,
                          Authorization => "Bearer $bad");
is $api_401->{status}, 401, 'the API: a wrong key is a 401';
my $msg_401 = eval { $api_401->{json}{error}{message} } // '(none)';

# ---- the browser ----------------------------------------------------------

my $r = browse(key => $key, bad_key => $bad, screenshot => $shot,
            screenshot_older => $shot2, screenshot_bad => $shot3, mode => 'full');
ok !$r->{failure}, 'the browser script ran to the end';
is $r->{page}{status}, 200, 'GET /imgbill/: 200';
like $r->{page}{csp} // '', qr/default-src 'self'/, '... with its Content-Security-Policy';
is $r->{idle_state}, 'idle', '... and waits for a key';

my $p1 = $r->{first} || {};
is $p1->{state}, 'ready', 'the key entered: figures and ledger shown';
ok !$p1->{error_shown}, '... no error';
is_deeply $p1->{account}, { id => $acct, balance => fmt_units($balance),
                            available => fmt_units($balance), held => '0.0000',
                            currency => "\x{a5}" },
    'balance, available, held as Redis has them: ' . fmt_units($balance) . ' yuan';

is scalar @{ $p1->{rows} || [] }, 20, 'ledger page 1: 20 rows';
is_deeply shown_rows($p1->{rows}), [ map { expect_row($_) } @newest[0 .. 19] ],
    '... newest first: ids, types, times, models, amounts, balances as in Redis';
is_deeply [ map { $_->{amount} } @{ $p1->{rows} || [] } ], [ ('-0.2465') x 20 ],
    '... each charged -0.2465';
is_deeply [ map { $_->{model} } @{ $p1->{rows} || [] } ], [ ('gemini-2.5-flash-image') x 20 ],
    '... for gemini-2.5-flash-image';
is_deeply [ map { $_->{id} } @{ $p1->{rows} || [] } ],
          [ map { $_->{request_id} } @charged[0 .. 19] ],
    '... the ids are the request ids of the last 20 charges';
is_deeply [ map { $_->{id_shown} } @{ $p1->{rows} || [] } ],
          [ map { $_->{id} } @{ $p1->{rows} || [] } ], '... shown in full';
like $p1->{rows}[0]{detail} // '', qr/\b560\b.*\b1120\b/, '... with their token counts';
like $p1->{rows}[0]{detail} // '', qr/\x{5bf9}\x{8bdd} Chat Completions/, '... and the API their client spoke';
my $kid = substr(Imgbill::Harness::key_hash($key), 0, 12);
is scalar(grep { ($_->{detail} // '') =~ /Key \Q$kid\E$/ } @{ $p1->{rows} || [] }), 20,
    '... and the key that spent, by its id';
ok $p1->{newer_disabled}, '... "newer" disabled on the newest page';
ok !$p1->{older_disabled}, '... "older" enabled';

my $p2 = $r->{older} || {};
is $p2->{state}, 'ready', '"older": page 2 shown';
my @rest = @newest[20 .. $#newest];
is scalar @{ $p2->{rows} || [] }, scalar @rest, 'ledger page 2: ' . scalar(@rest) . ' rows';
is scalar(grep { $_->{type} eq 'charge' } @{ $p2->{rows} || [] }), 3, '... 3 of them charges';
is_deeply shown_rows($p2->{rows}), [ map { expect_row($_) } @rest ],
    '... the oldest entries, as in Redis';
ok !$p2->{newer_disabled}, '... "newer" enabled';
ok $p2->{older_disabled}, '... "older" disabled: nothing older';
is $p2->{account}{balance}, fmt_units($balance), '... the balance still shown';
if (my @credit = grep { $_->{type} ne 'charge' } @{ $p2->{rows} || [] }) {
    note 'credit entries shown: ' . join ', ', map { "$_->{type} $_->{amount}" } @credit;
    ok scalar(grep { $_->{type} eq 'credit' && $_->{amount} eq '+1.0000' } @credit),
        '... the CLI\'s credit of 1.00 shown as +1.0000';
}

my $back = $r->{newer} || {};
is_deeply shown_rows($back->{rows}), shown_rows($p1->{rows}), '"newer": page 1 again';
ok $back->{newer_disabled} && !$back->{older_disabled}, '... its buttons as before';

ok -s $shot && -s $shot2 && -s $shot3, 'screenshots saved';
note "screenshot of page 1: $shot";
note "screenshot of page 2: $shot2";
note "screenshot of a wrong key: $shot3";

my $bp = $r->{bad} || {};
is $bp->{state}, 'error', 'a wrong key: an error shown';
is $bp->{error_message}, $msg_401, "... the API's message: $msg_401";
like $bp->{error_status}, qr/\b401\b/, '... with the status 401';
ok !$bp->{account_shown} && !$bp->{ledger_shown}, '... the previous account hidden';
is_deeply [ @{ $bp->{account} }{qw(id balance available held)}, scalar @{ $bp->{rows} || [] } ],
          [ '', '', '', '', 0 ], '... and its figures and rows gone from the page';

# the page talked to its own origin only, and the key stayed in memory
my @reqs = @{ $r->{requests} || [] };
my @http = grep { $_->{url} !~ /^data:/ } @reqs;
is_deeply [ grep { index($_->{url}, "$base/") != 0 } @http ], [],
    'every request went to the page\'s own origin';
my @api = grep { $_->{url} =~ m{^\Q$base\E/v1/imgbill/} } @http;
is_deeply [ sort map { m{^\Q$base\E(/v1/imgbill/\w+)} ? $1 : $_ } map { $_->{url} } @api ],
          [ ('/v1/imgbill/account') x 4, ('/v1/imgbill/ledger') x 4 ],
    '... the account and the ledger: key, older, newer, wrong key';
is_deeply [ grep { ($_->{authorization} // '') !~ /^Bearer (?:\Q$key\E|\Q$bad\E)$/ } @api ], [],
    '... each with the key as Authorization: Bearer';
is_deeply [ grep { $_->{method} ne 'GET' } @api ], [], '... each a GET';
is_deeply [ grep { defined $_->{authorization} } grep { $_->{url} !~ m{/v1/imgbill/} } @http ], [],
    '... and the key sent nowhere else';
is_deeply [ grep { index($_->{url}, $key) >= 0 } @reqs ], [], 'the key in no URL';
my $st = $r->{storage} || {};
is_deeply [ $st->{local}, $st->{session}, $st->{cookie}, $st->{browser_cookies} ],
          [ {}, {}, '', [] ], 'nothing in localStorage, sessionStorage or cookies';
is $st->{href}, "$base/imgbill/", 'location still /imgbill/ (no key in the URL)';
is $st->{input_value}, '', 'the input emptied once the key was taken';
ok defined $st->{html} && index($st->{html}, $key) < 0, 'the key nowhere in the document';
# Chromium logs each 4xx/5xx it was given; the 401s asked for are not errors
is_deeply [ grep { !/^Failed to load resource: .* status of 401\b/ } @{ $r->{console_errors} || [] } ],
          [], 'no console errors (CSP violations included)';
is_deeply $r->{page_errors}, [], 'no script errors';

# ---- a redemption code, typed into the page --------------------------------

{
    my ($rc, $out) = $h->cli('codes-new', '3.5', '--count', '1');
    my ($code) = $out =~ /^(rc-\S+)$/m;
    is $rc, 0, 'codes-new made a code of 3.5 yuan';
    my $before = $h->balance($acct);
    my $shot4 = "$artifacts/page-redeem.png";
    unlink $shot4;
    my $rr = browse(key => $key, mode => 'redeem', codes => [ $code // 'rc-none', $code // 'rc-none' ],
                    screenshot => $shot4);
    ok !$rr->{failure}, 'the browser redeemed through the box';
    my ($first, $again) = @{ $rr->{redeemed} || [] };
    is $h->balance($acct), $before + 35000, '... Redis credited 3.5000 once';
    is $first->{redeem}{outcome}, 'done', '... the first try: done';
    like $first->{redeem}{result}, qr/\x{a5}3\.5000\b.*\x{a5}\Q@{[fmt_units($before + 35000)]}\E/,
        '... showing the amount and the new balance';
    is $first->{account}{balance}, fmt_units($before + 35000), '... the figures reloaded';
    is $first->{rows}[0]{type}, 'credit', '... the ledger\'s newest row a credit';
    is $first->{rows}[0]{amount}, '+3.5000', '... of +3.5000';
    like $first->{rows}[0]{detail}, qr/\x{5151}\x{6362}\x{7801} redemption code\s*Key \Q$kid\E$/,
        '... from a redemption code, by the key';
    is $first->{redeem}{input_value}, '', '... the box emptied';
    my $used = $h->request('POST', '/v1/imgbill/redeem', { code => $code // 'rc-none' },
                           Authorization => "Bearer $key");
    is $again->{redeem}{outcome}, 'failed', 'the same code again: refused';
    is $again->{redeem}{result}, "HTTP 409 " . (eval { $used->{json}{error}{message} } // '?'),
        "... with the API's status and message";
    is $again->{account}{balance}, fmt_units($before + 35000), '... the balance unchanged';
    is_deeply [ map { $_->{url} } grep { $_->{method} eq 'POST' } @{ $rr->{requests} || [] } ],
              [ ("$base/v1/imgbill/redeem") x 2 ], '... two POSTs, to /v1/imgbill/redeem';
    is_deeply [ grep { !/status of (?:401|409)\b/ } @{ $rr->{console_errors} || [] } ], [],
        '... no console errors but the 409';
    is_deeply $rr->{page_errors}, [], '... no script errors';
    note "screenshot of a redemption: $shot4";
}

# ---- Redis down: the API's 503 message ----------------------------------

$h->redis_stop;
my $api_503 = $h->request('GET', '/v1/imgbill/account', undef, Authorization => "Bearer $key");
is $api_503->{status}, 503, 'Redis down: the API answers 503';
my $down = browse(key => $key, mode => 'error');
my $d = $down->{first} || {};
is $d->{state}, 'error', 'Redis down: the page shows an error';
is $d->{error_message}, eval { $api_503->{json}{error}{message} } // '(none)',
    "... the API's message";
like $d->{error_status}, qr/\b503\b/, '... with the status 503';
ok !$d->{account_shown} && !$d->{ledger_shown}, '... and no figures';
is_deeply $down->{page_errors}, [], '... no script errors';

done_testing;
