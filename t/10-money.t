# Money: the worked examples, fast prices, rounding, the minimum charge,
# all checked to the unit in Redis, in the headers and in the ledger.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units);

my $h = Imgbill::Harness->new;
my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';

# charged_ok(name, model, path, mock, start units, charge units,
#            channel, pt, ct for the ledger)
sub charged_ok {
    my (%o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'money', units => $o{start});
    my $res = $h->chat(key => $key, model => $o{model}, path => $o{path},
                       mock => $o{mock});
    my $t = $o{name};
    my $after = $o{start} - $o{charge};
    subtest $t => sub {
        is $res->{status}, 200, 'status 200' or diag $res->{body};
        is $res->{headers}{'x-imgbill-charge'}, fmt_units($o{charge}), 'X-Imgbill-Charge';
        is $res->{headers}{'x-imgbill-balance'}, fmt_units($after), 'X-Imgbill-Balance';
        is $res->{header_count}{'x-imgbill-charge'}, 1, 'one X-Imgbill-Charge';
        is $res->{header_count}{'x-imgbill-balance'}, 1, 'one X-Imgbill-Balance';
        my $rid = $res->{headers}{'x-imgbill-request-id'} // '';
        like $rid, qr/^[0-9a-f]{32}$/, 'X-Imgbill-Request-Id: 32 hex';
        is $h->balance($acct), $after, "Redis balance $after units";
        is_deeply $h->holds($acct), {}, 'no hold left';
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        my $e = $l->[0] || {};
        is $e->{request_id}, $rid, 'ledger request_id = header';
        is $e->{channel}, $o{channel}, 'ledger channel';
        is $e->{model}, $o{model}, 'ledger model';
        is $e->{prompt_tokens}, $o{pt}, 'ledger prompt_tokens';
        is $e->{completion_tokens}, $o{ct}, 'ledger completion_tokens';
        is $e->{charge}, $o{charge}, 'ledger charge (units)';
        is $e->{balance_after}, $after, 'ledger balance_after (units)';
        like $e->{ts} // '', qr/^\d+$/, 'ledger ts is unix seconds';
        cmp_ok abs(($e->{ts} // 0) - time), '<', 120, 'ledger ts is now';
        my $settled = "imgbill:{$acct}:settled:$rid";
        is $h->redis('EXISTS', $settled), 1, 'settled marker exists';
        cmp_ok $h->redis('TTL', $settled), '>', 0, 'settled marker has a TTL';
        ok $res->{json} && $res->{json}{choices}, 'upstream body relayed';
    };
    return $res;
}

# the two worked examples, via real HTTP
charged_ok(name => 'worked example: flash 560/1120 -> 0.2465',
           model => $FLASH, start => 100000, charge => 2465,
           channel => 'metered', pt => 560, ct => 1120);
charged_ok(name => 'worked example: 3-pro 1210/2000 -> 1.7232',
           model => $PRO, start => 100000, charge => 17232,
           channel => 'metered', pt => 1210, ct => 2000);

# explicit tokens agree with the defaults
charged_ok(name => 'flash pt=560 ct=1120 explicit', model => $FLASH,
           mock => 'pt=560 ct=1120', start => 100000, charge => 2465,
           channel => 'metered', pt => 560, ct => 1120);

# minimum charge
charged_ok(name => 'minimum charge: flash 1/1 -> 0.0100', model => $FLASH,
           mock => 'pt=1 ct=1', start => 100000, charge => 100,
           channel => 'metered', pt => 1, ct => 1);
charged_ok(name => 'minimum charge: flash 0/0 -> 0.0100', model => $FLASH,
           mock => 'pt=0 ct=0', start => 100000, charge => 100,
           channel => 'metered', pt => 0, ct => 0);

# rounding: half up, per component.
# flash: 750 * 2.2 / 1e6 yuan = 16.5 units -> 17; 150 * 219 / 1e6 = 328.5 -> 329
# (half-even would give 16 + 328 = 344, rounding the sum 345)
charged_ok(name => 'half-up rounding per component: flash 750/150 -> 0.0346',
           model => $FLASH, mock => 'pt=750 ct=150', start => 100000,
           charge => 346, channel => 'metered', pt => 750, ct => 150);
# 3-pro (142000 / 8530000 units per 1M): 37 -> 5.254 units -> 5;
# 999 -> 8521.47 units -> 8521
charged_ok(name => 'rounding down: 3-pro 37/999 -> 0.8526 (5.254 + 8521.47 units)',
           model => $PRO, mock => 'pt=37 ct=999', start => 100000,
           charge => 5 + 8521, channel => 'metered', pt => 37, ct => 999);
# the largest reply the hold allows (max_output 4096), for a prompt within
# the body's bytes: 3-pro 50/4096: 7.1 units -> 7; 4096 * 853 = 34938.88
# units -> 34939
charged_ok(name => 'the largest reply the hold covers: 3-pro 50/4096 -> 3.4946',
           model => $PRO, mock => 'pt=50 ct=4096', start => 1000000,
           charge => 7 + 34939, channel => 'metered', pt => 50, ct => 4096);

# fast channel: fixed price, tokens recorded from usage
charged_ok(name => 'fast flash -> 0.0700', model => $FLASH,
           path => '/fast/v1/chat/completions', start => 100000,
           charge => 700, channel => 'fast', pt => 560, ct => 1120);
charged_ok(name => 'fast 3-pro -> 0.2000', model => $PRO,
           path => '/fast/v1/chat/completions', start => 100000,
           charge => 2000, channel => 'fast', pt => 1210, ct => 2000);
charged_ok(name => 'fast ignores token counts: flash 100000/100000 -> 0.0700',
           model => $FLASH, path => '/fast/v1/chat/completions',
           mock => 'pt=100000 ct=100000', start => 100000, charge => 700,
           channel => 'fast', pt => 100000, ct => 100000);
charged_ok(name => 'fast without usage is still charged 0.0700, tokens 0',
           model => $FLASH, path => '/fast/v1/chat/completions',
           mock => 'kind=nousage', start => 100000, charge => 700,
           channel => 'fast', pt => 0, ct => 0);

# consecutive charges on one account add up exactly
{
    $h->account('series', 'sk-series', 100000);
    my @hdr;
    for (1 .. 3) {
        my $r = $h->chat(key => 'sk-series');
        push @hdr, $r->{headers}{'x-imgbill-balance'};
    }
    is_deeply \@hdr, [ '9.7535', '9.5070', '9.2605' ],
        'three flash calls: balances 9.7535, 9.5070, 9.2605';
    is $h->balance('series'), 100000 - 3 * 2465, 'Redis balance after three';
    my $l = $h->ledger('series');
    is_deeply [ map { $_->{balance_after} } @$l ], [ 97535, 95070, 92605 ],
        'ledger balance_after in order';
    my %rids = map { $_->{request_id} => 1 } @$l;
    is scalar keys %rids, 3, 'distinct request ids';
}

# A reply that claims more than the hold (100000/100000 would be 86.7200)
# is charged the hold: ceil(body bytes * 14.2 units / 1e6 ... per token) for
# the prompt, 4096 output tokens; the ledger keeps the counts as claimed.
{
    $h->account('over', 'sk-over', 50000);
    my $r = $h->chat(key => 'sk-over', model => $PRO,
                     mock => 'pt=100000 ct=100000');
    my ($up) = grep { ($_->{model} // '') eq $PRO } reverse $h->upstream_requests;
    my $len = $up->{body_length} // 0;
    my $hold = int(($len * 142000 + 999999) / 1000000) + 34939;
    is $r->{status}, 200, 'over-claiming reply is delivered';
    is $r->{headers}{'x-imgbill-charge'}, fmt_units($hold),
        "charged the hold for a $len-byte body, not 86.7200";
    is $h->balance('over'), 50000 - $hold, '... in Redis too: the balance stays >= 0';
    my ($e) = @{ $h->ledger('over') };
    is "$e->{prompt_tokens}/$e->{completion_tokens}/$e->{charge}",
        "100000/100000/$hold", 'the ledger keeps the claimed counts';
    like $h->error_log, qr/would cost 867200 units, more than the $hold held/,
        'logged at warn';
}

# a balance that goes below zero (an operator's correction while a request
# was in flight) formats with a sign
{
    $h->account('neg', 'sk-neg', 50000);
    my $wait = $h->in_flight(1, key => 'sk-neg', mock => 'sleep=1');
    $h->wait_holds('neg', 1);
    $h->redis('DECRBY', 'imgbill:{neg}:balance', 60000);
    my ($got) = $wait->();
    is $got, '200 0.2465', 'charged while the balance went below zero';
    is $h->balance('neg'), 50000 - 60000 - 2465, 'negative balance in Redis';
    my ($e) = @{ $h->ledger('neg') };
    is $e->{balance_after}, -12465, 'ledger balance_after -12465';
    my $r = $h->chat(key => 'sk-neg');
    is $r->{status}, 402, 'then: 402';
    like $r->{json}{error}{message} // '', qr/available -1\.2465/,
        'the 402 shows the negative balance with its sign';
}

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
