# What a key holder reads of their own money, served by the module with
# the same API key and no upstream call: /v1/imgbill/account, the ledger
# page by page, OpenAI's legacy billing endpoints (with and without /v1),
# checked to the unit against Redis; another account's data never shows,
# a wrong key learns nothing, bad arguments are 400s, Redis down is a 503.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use POSIX qw(strftime);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units error_ok);

# one key reads here far more often than conf.d's limit_req lets it (that
# limit is t/64-usage.t's): lifted
my $h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s/(limit_req_zone \S+ zone=imgbill_reads:\S+) rate=\S+;/$1 rate=10000r\/s;/
        or die 'no imgbill_reads zone in conf.d';
});
my $JSON = JSON::PP->new;

sub get {
    my ($path, $key) = @_;
    my $r = $h->request('GET', $path, undef,
                        defined $key ? (Authorization => "Bearer $key") : ());
    $r->{json} = eval { $JSON->decode($r->{body}) };
    return $r;
}

my ($acct, $key) = $h->fresh_account(prefix => 'holder', units => 200000);
my ($other, $okey) = $h->fresh_account(prefix => 'other', units => 50000);

# ---- the account ------------------------------------------------------------

{
    my $r = get('/v1/imgbill/account', $key);
    is $r->{status}, 200, 'account: 200';
    like $r->{headers}{'content-type'}, qr{^application/json}, '... JSON';
    is $r->{headers}{'cache-control'}, 'no-store', '... Cache-Control: no-store';
    is_deeply $r->{json}, { object => 'account', id => $acct, balance => '20.0000',
                            available => '20.0000', held => '0.0000', currency => 'CNY' },
        '... the contract, to the unit';
}

# 23 charges: a ledger of two pages of 20
$h->chat(key => $key) for 1 .. 23;
my $ledger = $h->ledger($acct);    # oldest first
is scalar @$ledger, 23, '23 charges in Redis';
my $balance = $h->balance($acct);
is $balance, 200000 - 23 * 2465, "balance $balance";

{
    # a live hold of another request: held, and not available
    my $exp = time + 600;
    $h->redis('HSET', "imgbill:{$acct}:holds", 'live1', "7000:$exp");
    $h->redis('DEL', "imgbill:{$acct}:held");
    my $r = get('/v1/imgbill/account', $key);
    is_deeply $r->{json}, { object => 'account', id => $acct,
                            balance => fmt_units($balance),
                            available => fmt_units($balance - 7000),
                            held => '0.7000', currency => 'CNY' },
        'account: a live hold is held, not available';
    $h->redis('HDEL', "imgbill:{$acct}:holds", 'live1');
    $h->redis('DEL', "imgbill:{$acct}:held");
}

# ---- the ledger ----------------------------------------------------------------

{
    my $p1 = get('/v1/imgbill/ledger', $key);
    is $p1->{status}, 200, 'ledger: 200';
    my $d = $p1->{json}{data} || [];
    is scalar @$d, 20, 'page 1: 20 entries by default';
    ok $p1->{json}{has_more}, '... has_more';
    like $p1->{json}{next}, qr/^\d+-\d+$/, '... next: a cursor';
    my @newest = reverse @$ledger;
    is_deeply [ map { $_->{id} } @$d ], [ map { $_->{request_id} } @newest[0 .. 19] ],
        '... newest first, ids are the request ids';
    is_deeply $d->[0], {
        id => $newest[0]{request_id}, created => $newest[0]{ts} + 0, type => 'charge',
        channel => 'metered', model => 'gemini-2.5-flash-image',
        prompt_tokens => 560, completion_tokens => 1120, images => 1, api => 'openai',
        key => $h->key_id($acct),
        amount => '-0.2465', balance => fmt_units($newest[0]{balance_after}),
    }, '... an entry: the contract, to the unit (the API the client spoke and the key too)';
    is_deeply [ map { $_->{balance} } @$d ],
        [ map { fmt_units($_->{balance_after}) } @newest[0 .. 19] ], '... every balance';

    my $p2 = get("/v1/imgbill/ledger?after=$p1->{json}{next}", $key);
    my $d2 = $p2->{json}{data} || [];
    is_deeply [ map { $_->{id} } @$d2 ], [ map { $_->{request_id} } @newest[20 .. 22] ],
        'page 2: the 3 oldest';
    is $p2->{json}{has_more}, JSON::PP::false, '... has_more false';
    ok exists $p2->{json}{next} && !defined $p2->{json}{next}, '... next null';

    my $p5 = get('/v1/imgbill/ledger?limit=5', $key);
    is scalar @{ $p5->{json}{data} }, 5, 'limit=5: 5 entries';
    my $p100 = get('/v1/imgbill/ledger?limit=100', $key);
    is scalar @{ $p100->{json}{data} }, 23, 'limit=100: all 23, has_more false';
    is $p100->{json}{has_more}, JSON::PP::false, '...';
}

{
    # entries the operator writes, and a charge older than the "type" field
    my $id = $h->redis('XADD', "imgbill:{$acct}:ledger", '*', 'type', 'credit',
                       'amount', 100000, 'reason', 'bank transfer "0042"',
                       'ts', 1796000000, 'balance_after', $balance + 100000);
    my $adj = $h->redis('XADD', "imgbill:{$acct}:ledger", '*', 'type', 'adjustment',
              'amount', -100, 'reason', 'correction', 'ts', 1796000001,
              'balance_after', $balance + 99900);
    my $old = $h->redis('XADD', "imgbill:{$acct}:ledger", '*', 'request_id', 'old1',
              'ts', 1796000002, 'channel', 'fast', 'model', 'm', 'prompt_tokens', 0,
              'completion_tokens', 0, 'charge', 700, 'balance_after', $balance + 99200);
    my $d = get('/v1/imgbill/ledger?limit=3', $key)->{json}{data};
    is_deeply $d->[0], { id => 'old1', created => 1796000002, type => 'charge',
                         channel => 'fast', model => 'm', prompt_tokens => 0,
                         completion_tokens => 0, images => 1,
                         amount => '-0.0700',
                         balance => fmt_units($balance + 99200) },
        'a charge without "type" (nor "images") is a charge for one image';
    is_deeply $d->[1], { id => $d->[1]{id}, created => 1796000001, type => 'adjustment',
                         amount => '-0.0100', reason => 'correction',
                         balance => fmt_units($balance + 99900) },
        'an adjustment: signed amount, reason';
    is_deeply $d->[2], { id => $id, created => 1796000000, type => 'credit',
                         amount => '10.0000', reason => 'bank transfer "0042"',
                         balance => fmt_units($balance + 100000) },
        'a credit: its stream id, amount, reason escaped';
    $h->redis('XDEL', "imgbill:{$acct}:ledger", $id, $adj, $old);
}

# ---- OpenAI's billing endpoints -------------------------------------------------

for my $prefix ('/v1', '') {
    my $s = get("$prefix/dashboard/billing/subscription", $key);
    is $s->{status}, 200, "$prefix/dashboard/billing/subscription: 200";
    is $s->{json}{object}, 'billing_subscription', '... object';
    is $s->{json}{hard_limit_usd}, $balance / 10000, '... hard_limit_usd: what is available, in yuan';
    like $s->{body}, qr/"hard_limit_usd":\Q${\ fmt_units($balance)}\E[,}]/, '... a number with 4 decimals';

    my $today = strftime('%Y-%m-%d', gmtime);
    my $tomorrow = strftime('%Y-%m-%d', gmtime(time + 86400));
    my $u = get("$prefix/dashboard/billing/usage?start_date=$today&end_date=$tomorrow", $key);
    is $u->{status}, 200, "$prefix/dashboard/billing/usage: 200";
    like $u->{body}, qr/"total_usage":566\.95[,}]/,
        '... total_usage: 23 x 0.2465 yuan in hundredths, 566.95';
    my $none = get("$prefix/dashboard/billing/usage?start_date=2020-01-01&end_date=2020-02-01", $key);
    is $none->{json}{total_usage}, 0, '... none in January 2020';
    is get("$prefix/dashboard/billing/usage", $key)->{json}{total_usage}, 566.95,
        '... this month by default';
}

# ---- one's own data only; wrong keys; bad arguments --------------------------------

{
    my $o = get('/v1/imgbill/account', $okey);
    is $o->{json}{id}, $other, 'the other key sees its own account';
    is $o->{json}{balance}, '5.0000', '... and its own balance';
    is_deeply get('/v1/imgbill/ledger', $okey)->{json}{data}, [], '... and an empty ledger';

    for my $p ('/v1/imgbill/account', '/v1/imgbill/ledger', '/v1/dashboard/billing/subscription',
               '/dashboard/billing/usage') {
        my $r = get($p, 'sk-nobody-knows');
        error_ok($r, 401, 'invalid_request_error', 'invalid_api_key', "$p, wrong key: 401");
        unlike $r->{body}, qr/\Q$acct\E|balance/, '... telling nothing';
        error_ok(get($p), 401, 'invalid_request_error', 'missing_api_key', "$p, no key: 401");
    }
    my $post = $h->request('POST', '/v1/imgbill/account', {}, Authorization => "Bearer $key");
    is $post->{status}, 405, 'POST: 405';

    for my $q ('limit=0', 'limit=101', 'limit=x', 'after=abc', 'after=1-', 'after=1--2') {
        error_ok(get("/v1/imgbill/ledger?$q", $key), 400, 'invalid_request_error',
                 $q =~ /limit/ ? 'invalid_limit' : 'invalid_cursor', "ledger?$q: 400");
    }
    for my $q ('start_date=2026-13-01', 'start_date=yesterday',
               'start_date=2026-02-01&end_date=2026-01-01') {
        error_ok(get("/v1/dashboard/billing/usage?$q", $key), 400, 'invalid_request_error',
                 'invalid_date', "usage?$q: 400");
    }
    is $h->upstream_hits, 23, 'no upstream call but the 23 generations';
}

# ---- Redis down --------------------------------------------------------------------

{
    $h->redis_stop;
    my $r = get('/v1/imgbill/account', $key);
    error_ok($r, 503, 'server_error', 'billing_unavailable', 'Redis down: 503');
    $h->redis_start;
}

unlike $h->error_log . $h->access_log, qr/\Q$key\E|\Q$okey\E/, 'no raw key in the logs';

done_testing;
