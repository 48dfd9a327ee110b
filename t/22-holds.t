# Holds bound what a request can cost, and an account's holds never add up
# to more than its balance: concurrent requests cannot overspend.
#
# Metered hold = ceil(input_bound * p_in / 1e6) + ceil(max_output * p_out / 1e6)
# input_bound  = body bytes outside inline images + 1290 per reference image
# max_output   = 4096 unless the price says max_output=N; hold=AMOUNT overrides
# gate         = max(imgbill_min_balance, hold) metered; the price fast
use strict;
use warnings;
use Test::More;
use JSON::PP;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units);

my %P = (   # units per 1M tokens
    'gemini-2.5-flash-image'     => [22000, 2190000],
    'gemini-3-pro-image-preview' => [142000, 8530000],
);

sub ceil_m { my ($n) = @_; int(($n + 999999) / 1000000) }

sub expected_hold {
    my ($model, $in, $max_out) = @_;
    my ($pi, $po) = @{ $P{$model} };
    my $h = ceil_m($in * $pi) + ceil_m(($max_out // 4096) * $po);
    return $h < 100 ? 100 : $h;
}

sub body {
    my ($model, $text, @images) = @_;
    my @parts = ({ type => 'text', text => $text },
                 map { { type => 'image_url', image_url => { url => $_ } } } @images);
    return JSON::PP->new->canonical->encode({ model => $model,
        messages => [ { role => 'user', content => \@parts } ] });
}

my $h = Imgbill::Harness->new(workers => 2, extra_server => '
        location = /capped/v1/chat/completions {
            imgbill metered;
            imgbill_metered_price gemini-3-pro-image-preview 14.2 853 max_output=2000;
            imgbill_metered_price gemini-2.5-flash-image 2.2 219 hold=1.50;
            proxy_pass http://imgbill_upstream/v1/chat/completions;
        }');

# the hold placed for one request, read while its generation is in flight,
# on a fresh account named after $o{acct}
sub hold_of {
    my (%o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => $o{acct},
                                         units => $o{balance} // 1000000);
    my $wait = $h->in_flight(1, key => $key, path => $o{path},
                             body => $o{body}, mock => 'sleep=1.5');
    my ($held) = map { /^(\d+):/ } values %{ $h->wait_holds($acct, 1, 2) || {} };
    my ($got) = $wait->();
    return ($held, $got);
}

for my $case (
    [ 'flash, short prompt', 'gemini-2.5-flash-image', 'a koi pond' ],
    [ '3-pro, short prompt', 'gemini-3-pro-image-preview', 'a koi pond' ],
    [ '3-pro, 60 kB prompt', 'gemini-3-pro-image-preview', 'x' x 60000 ],
) {
    my ($name, $model, $text) = @$case;
    my $b = body($model, $text);
    my ($held, $got) = hold_of(acct => "h" . length($b) . substr($model, 7, 3), body => $b);
    is $held, expected_hold($model, length $b), "$name: hold bounds body bytes + max output";
    like $got, qr/^200 /, "$name: then charged normally";
}

{
    my $img = 'data:image/png;base64,' . ('QUJD' x 25000);     # 100 kB of base64
    my $b = body('gemini-3-pro-image-preview', 'edit this', $img, $img);
    my ($held) = hold_of(acct => 'himg', body => $b);
    is $held, expected_hold('gemini-3-pro-image-preview',
                            length($b) - 2 * length($img) + 2 * 1290),
        'two reference images: 1290 tokens each instead of their bytes';
}

{
    my $b = body('gemini-3-pro-image-preview', 'a koi pond');
    my ($held) = hold_of(acct => 'hcap', body => $b, path => '/capped/v1/chat/completions');
    is $held, expected_hold('gemini-3-pro-image-preview', length $b, 2000),
        'max_output=2000 bounds the reply at 2000 tokens';
    $b = body('gemini-2.5-flash-image', 'a koi pond');
    ($held) = hold_of(acct => 'hfix', body => $b, path => '/capped/v1/chat/completions');
    is $held, 15000, 'hold=1.50 is taken as configured';
}

{
    my ($held) = hold_of(acct => 'hfast', path => '/fast/v1/chat/completions',
                         body => body('gemini-3-pro-image-preview', 'x'));
    is $held, 2000, 'fast: the hold is the price';
}

# a hold above the 5.00 floor becomes the gate
{
    my $b = body('gemini-3-pro-image-preview', 'y' x 500000);
    my $need = expected_hold('gemini-3-pro-image-preview', length $b);
    cmp_ok $need, '>', 50000, "a 500 kB prompt holds more than 5.0000 ($need)";
    $h->account('big', 'sk-big', $need - 1);
    my $res = $h->chat(key => 'sk-big', body => $b);
    is $res->{status}, 402, 'one unit short of its own hold: 402';
    my $want = fmt_units($need);
    like $res->{json}{error}{message}, qr/required \Q$want\E/, "... required $want";
    is_deeply $h->holds('big'), {}, '... and no hold placed';
    $h->redis('SET', 'imgbill:{big}:balance', $need);
    $res = $h->chat(key => 'sk-big', body => $b);
    is $res->{status}, 200, 'exactly its hold: admitted';
}

# concurrency: holds never add up to more than the balance
{
    $h->account('race', 'sk-race', 100000);                  # 10.0000
    my $b = body('gemini-3-pro-image-preview', 'a koi pond');
    my $hold = expected_hold('gemini-3-pro-image-preview', length $b);
    # admitted while balance - holds >= max(5.0000, hold)
    my $fits = 0;
    $fits++ while 100000 - $fits * $hold >= ($hold > 50000 ? $hold : 50000);
    my $wait = $h->in_flight(8, key => 'sk-race', body => $b, mock => 'sleep=1.5');
    my @got = $wait->();
    my $ok = grep { /^200 1\.7232$/ } @got;
    my $poor = grep { /^402 / } @got;
    is $ok, $fits, "8 at once on 10.0000: exactly $fits admitted (hold $hold each)";
    is $poor, 8 - $fits, '... the rest 402';
    is $h->balance('race'), 100000 - $fits * 17232, '... balance charged exactly';
    cmp_ok $h->balance('race'), '>=', 0, '... never below zero';
    is_deeply $h->holds('race'), {}, '... no hold left';
}

# the fast channel: 1.0000 buys exactly 14 calls at 0.0700
{
    $h->account('fast14', 'sk-fast14', 10000);
    my $wait = $h->in_flight(30, key => 'sk-fast14', path => '/fast/v1/chat/completions',
                             mock => 'sleep=0.5');
    my @got = $wait->();
    is scalar(grep { $_ eq '200 0.0700' } @got), 14, 'fast: 30 at once on 1.0000: 14 served';
    is scalar(grep { /^402 / } @got), 16, '... 16 refused with 402';
    is $h->balance('fast14'), 200, '... balance exactly 0.0200';
    is scalar @{ $h->ledger('fast14') }, 14, '... 14 ledger entries';
}

# The bookkeeping behind the gate: the holds hash (what operators read)
# and imgbill:{acct}:held, their sum and a time before which none can have
# expired.  An admission reads the sum, not every hold, however many are in
# flight; it recounts once that time has passed.
{
    my $key = 'sk-book';
    my $acct = 'book';
    my $p = "imgbill:{$acct}:";
    $h->account($acct, $key, 100000);
    my $exp = time + 600;
    $h->redis('HSET', "${p}holds", "live$_", "50:$exp") for 1 .. 1000;
    $h->redis('HSET', "${p}held", 'units', 50000, 'sweep', $exp);

    $h->redis('CONFIG', 'RESETSTAT');
    my $res = $h->chat(key => $key);
    is $res->{status}, 200, '1000 holds in flight, 5.0000 available: admitted';
    # the admission's one HGETALL reads the key's own hash (it has none)
    like $h->redis('INFO', 'commandstats'), qr/cmdstat_hgetall:calls=1,/,
        '... without reading every hold';
    my ($rid) = grep { !/^live/ } keys %{ $h->holds($acct) };
    ok !defined $rid, '... and its own hold given back on settlement';
    is $h->redis('HGET', "${p}held", 'units'), 50000, '... the sum as before';

    # a hold that expired a minute ago is still in the sum, and its expiry
    # is the recount time: the admission recounts, and it no longer counts
    $h->redis('SET', "${p}balance", 100000);
    $h->redis('HSET', "${p}holds", 'gone', '20000:' . (time - 60));
    $h->redis('HSET', "${p}held", 'units', 70000, 'sweep', time - 60);
    $h->redis('CONFIG', 'RESETSTAT');
    $res = $h->chat(key => $key);
    is $res->{status}, 200, 'an expired hold does not count: admitted';
    like $h->redis('INFO', 'commandstats'), qr/cmdstat_hgetall:calls=2,/,
        '... after one recount';
    is $h->redis('HEXISTS', "${p}holds", 'gone'), 0, '... which swept it';
    is $h->redis('HGET', "${p}held", 'units'), 50000, '... the sum recounted';
    cmp_ok $h->redis('HGET', "${p}held", 'sweep'), '>', time,
        '... and the next recount due when the oldest live hold expires';

    # available 4.9999 by the sum: 402, and nothing written
    $h->redis('SET', "${p}balance", 100000);
    $h->redis('HSET', "${p}holds", 'one', "1:$exp");
    $h->redis('HINCRBY', "${p}held", 'units', 1);
    my $before = $h->snapshot;
    $res = $h->chat(key => $key);
    is $res->{status}, 402, 'available 4.9999: 402';
    like $res->{json}{error}{message} // '', qr/available 4\.9999/, '... from the sum';
    is $h->snapshot, $before, '... and the rejection wrote nothing';

    # holds deleted by hand stay in the sum (refusing, never overspending)
    # until the recount time
    $h->redis('HDEL', "${p}holds", map { "live$_" } 1 .. 500);
    $res = $h->chat(key => $key);
    is $res->{status}, 402, 'holds deleted by hand: still counted for now';
    $h->redis('HSET', "${p}held", 'sweep', time - 1);
    $res = $h->chat(key => $key);
    is $res->{status}, 200, '... until the recount: admitted';
    is $h->redis('HGET', "${p}held", 'units'), 500 * 50 + 1,
        '... the sum recounted from the hash';

    # a request's hold comes and goes with the sum
    $h->redis('DEL', "${p}holds", "${p}held");
    my $wait = $h->in_flight(1, key => $key, mock => 'sleep=1');
    $h->wait_holds($acct, 1);
    my ($r2, $v) = %{ $h->holds($acct) };
    my ($amt) = ($v // '') =~ /^(\d+):/;
    is $h->redis('HGET', "${p}held", 'units'), $amt, 'in flight: the sum is its hold';
    $wait->();
    is $h->redis('EXISTS', "${p}holds"), 0, 'settled: no hold left';
    is $h->redis('HGET', "${p}held", 'units'), 0, '... and the sum back to 0';
}

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
