# The Redis script (ngx_imgbill_module/redis/ngx_http_imgbill_script.lua) on its
# own, against redis-server, without nginx: each command's keys, arguments,
# replies and writes, its idempotency and its rollback; and the C header
# built from it is current.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha1_hex);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(key_hash);

# scripts/test's second pass runs the nginx of a test under memcheck:
# none starts here, and the first pass ran it all
plan skip_all => 'no nginx here: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $root = Imgbill::Harness->root;
my $lua_file = "$root/ngx_imgbill_module/redis/ngx_http_imgbill_script.lua";
my $lua = do { local (@ARGV, $/) = ($lua_file); <> };

# --- the generated header matches the .lua file
{
    my $out = `"$root/scripts/gen-script" --check 2>&1`;
    is $?, 0, 'ngx_http_imgbill_script_lua.h is current (scripts/gen-script)'
        or diag $out;
    my $h = do {
        local (@ARGV, $/) = ("$root/ngx_imgbill_module/redis/ngx_http_imgbill_script_lua.h");
        <>;
    };
    my ($sha) = $h =~ /NGX_HTTP_IMGBILL_SCRIPT_SHA\s+"([0-9a-f]{40})"/;
    is $sha, sha1_hex($lua), 'the header names the script by its SHA-1';
}

my $h = Imgbill::Harness->new(nginx => 0, mock => 0);
my $r = $h->redis_client;
my $sha = $r->cmd('SCRIPT', 'LOAD', $lua);
is $sha, sha1_hex($lua), 'Redis names the script as the header does';

# the numbers of the "run" table
my %FN = (admit => 1, settle => 2, release => 3, release_key => 4,
          lookup => 5, info => 6, refresh => 7, reverse => 8, redeem => 9);

# call([name, [keys], [args]], ...) -> the array of results; a failing
# command's result is { err => text }
sub call {
    my (@cmds) = @_;
    my (@keys, @argv);
    for my $c (@cmds) {
        my ($name, $k, $a) = @$c;
        push @keys, @$k;
        push @argv, $FN{$name}, scalar @$k, scalar @$a, @$a;
    }
    my $res = eval { $r->cmd_each('EVALSHA', $sha, scalar @keys, @keys, @argv) };
    die "EVALSHA failed: $@" unless $res;
    return $res;
}

sub one { return call([@_])->[0] }

sub keys_of { my ($a) = @_; map { "imgbill:{$a}:$_" } @_[1 .. $#_] }

sub admit {
    my ($key, $rid, $gate, $hold, $ttl) = @_;
    return one('admit', ['imgbill:key:' . key_hash($key)],
               [$rid, $gate, $hold, $ttl // 900]);
}

sub settle {
    my ($acct, $rid, $charge, %o) = @_;
    return one('settle',
               [keys_of($acct, qw(balance holds ledger)),
                "imgbill:{$acct}:settled:$rid", "imgbill:{$acct}:held"],
               [$rid, $charge, $o{channel} // 'metered',
                $o{model} // 'gemini-2.5-flash-image', $o{pt} // 560,
                $o{ct} // 1120, 604800, $o{ts} // 1700000000,
                $o{hold} // 0, $o{images} // 1,
                (exists $o{api} || exists $o{key} ? ($o{api} // '') : ()),
                (exists $o{key} ? ($o{key}, $o{limited} // 1) : ())]);
}

sub reverse_charge {
    my ($acct, $rid, %o) = @_;
    return one('reverse', [keys_of($acct, qw(balance ledger)),
                           "imgbill:{$acct}:settled:$rid"],
               [$rid, 604800, $o{ts} // 1700000100, $o{charge_ts} // 1700000000]);
}

sub release {
    my ($acct, $rid, $hold) = @_;
    return one('release', [keys_of($acct, qw(holds held))], [$rid, $hold // 0]);
}

sub held { my ($a) = @_; return { @{ $r->cmd('HGETALL', "imgbill:{$a}:held") } } }
sub holds { my ($a) = @_; return { @{ $r->cmd('HGETALL', "imgbill:{$a}:holds") } } }
sub bal { my ($a) = @_; return $r->cmd('GET', "imgbill:{$a}:balance") }

my $now = $r->cmd('TIME')->[0];

# --- admit
$h->account('alice', 'sk-alice', 100000);

is_deeply admit('sk-nobody', 'r0', 50000, 100), [-1], 'unknown key -> {-1}';

{
    my $before = $h->snapshot;
    is_deeply admit('sk-alice', 'r0', 100001, 100),
              [0, 'alice', 100000, 100000],
              'gate not met -> {0, account, balance, available}';
    is $h->snapshot, $before, 'a refusal writes nothing';
}

is_deeply admit('sk-alice', 'r1', 50000, 7000),
          [1, 'alice', 100000, 100000], 'admitted -> {1, account, balance, available}';
like holds('alice')->{r1}, qr/^7000:(\d+)$/, 'the hold is "units:expiry"';
my ($exp) = holds('alice')->{r1} =~ /:(\d+)$/;
cmp_ok abs($exp - ($now + 900)), '<=', 2, 'expiry is now + the ttl';
is held('alice')->{units}, 7000, 'held: the sum of the holds';

is_deeply admit('sk-alice', 'r2', 50000, 3000),
          [1, 'alice', 100000, 93000], 'a second admission sees 7000 held';
is held('alice')->{units}, 10000, 'held adds up: 10000';

is_deeply admit('sk-alice', 'r3', 90001, 100), [0, 'alice', 100000, 90000],
          'the gate is on the available balance, not the balance';

# --- release, with and without the amount
is release('alice', 'r2', 3000), 1, 'release with the amount -> 1';
is release('alice', 'r2', 3000), 0, 'again -> 0: nothing to release';
is held('alice')->{units}, 7000, 'held: 7000 after the release';
is release('alice', 'r1', 0), 1, 'release without the amount reads it back';
is held('alice')->{units}, 0, 'held: 0';
is_deeply holds('alice'), {}, 'no hold left';

# --- refresh: a hold whose request lives on, another ttl from now
{
    admit('sk-alice', 'rf', 50000, 7000, 10);
    my ($e0) = holds('alice')->{rf} =~ /:(\d+)$/;
    is one('refresh', ['imgbill:{alice}:holds'], ['rf', 7000, 900]), 1,
       'refresh -> 1';
    my ($e1) = holds('alice')->{rf} =~ /^7000:(\d+)$/;
    cmp_ok $e1 - $e0, '>=', 880, '... its expiry moved on by the ttl';
    is held('alice')->{units}, 7000, '... its sum unchanged';
    release('alice', 'rf', 7000);
    is one('refresh', ['imgbill:{alice}:holds'], ['rf', 7000, 900]), 0,
       'refresh of a hold gone -> 0';
    is_deeply holds('alice'), {}, '... and it does not come back';
}

# --- settle: charge, ledger, marker, idempotency
admit('sk-alice', 'r4', 50000, 7000);
is_deeply settle('alice', 'r4', 2465, hold => 7000), [1, 97535],
          'settle -> {1, balance after}';
is bal('alice'), 97535, 'balance decreased by the charge, to the unit';
is_deeply holds('alice'), {}, 'its hold released';
is held('alice')->{units}, 0, 'held back to 0';
{
    my $l = $r->cmd('XRANGE', 'imgbill:{alice}:ledger', '-', '+');
    is scalar @$l, 1, 'one ledger entry';
    is_deeply { @{ $l->[0][1] } }, {
        type => 'charge', request_id => 'r4', ts => 1700000000, channel => 'metered',
        model => 'gemini-2.5-flash-image', prompt_tokens => 560,
        completion_tokens => 1120, images => 1, charge => 2465,
        balance_after => 97535,
    }, 'the entry has every field';
    my $ttl = $r->cmd('TTL', 'imgbill:{alice}:settled:r4');
    cmp_ok $ttl, '>', 604000, 'the marker lives 7 days';
}
is_deeply settle('alice', 'r4', 2465, hold => 7000), [0, 97535],
          'the same request again -> {0, balance}: applied before';
is bal('alice'), 97535, 'not charged twice';
is scalar @{ $r->cmd('XRANGE', 'imgbill:{alice}:ledger', '-', '+') }, 1,
   'no second ledger entry';

# a journal replay does not know the hold: the script reads it
admit('sk-alice', 'r5', 50000, 7000);
is_deeply settle('alice', 'r5', 700, hold => 0, channel => 'fast',
                 images => 3),
          [1, 96835], 'settle with hold 0 (a replay)';
is held('alice')->{units}, 0, 'the hold it read back is released';
is { @{ $r->cmd('XREVRANGE', 'imgbill:{alice}:ledger', '+', '-',
                'COUNT', 1)->[0][1] } }->{images}, 3,
   'the entry says how many images the charge was for';

# a free outcome: the hold goes back, nothing else is written
admit('sk-alice', 'r6', 50000, 7000);
is_deeply settle('alice', 'r6', 0, hold => 7000), [1, 96835], 'a free settle';
is $r->cmd('EXISTS', 'imgbill:{alice}:settled:r6'), 0, 'no marker for it';
is scalar @{ $r->cmd('XRANGE', 'imgbill:{alice}:ledger', '-', '+') }, 2,
   'no ledger entry for it';
is_deeply holds('alice'), {}, 'its hold released';
is_deeply settle('alice', 'r4', 0), [0, 96835],
          'a free settle of a charged request changes nothing';

# --- release_key: only the key is known
admit('sk-alice', 'r7', 50000, 7000);
is one('release_key', ['imgbill:key:' . key_hash('sk-alice')], ['r7']), 1,
   'release_key -> 1';
is held('alice')->{units}, 0, 'held back to 0';
is one('release_key', ['imgbill:key:' . key_hash('sk-nobody')], ['r7']), 0,
   'release_key of an unknown key -> 0';

# --- lookup: the account of a key, nothing written
{
    my $before = $h->snapshot;
    is_deeply one('lookup', ['imgbill:key:' . key_hash('sk-alice')], []),
              [1, 'alice'], 'lookup -> {1, account}';
    is_deeply one('lookup', ['imgbill:key:' . key_hash('sk-nobody')], []),
              [-1], 'lookup of an unknown key -> {-1}';
    is $h->snapshot, $before, 'a lookup writes nothing';
}

# --- info: what a key holder reads, nothing written
{
    my $before = $h->snapshot;
    my $k = ['imgbill:key:' . key_hash('sk-alice')];
    my $bal = $r->cmd('GET', 'imgbill:{alice}:balance');
    my $acc = one('info', $k, ['account', 20, '', '-', '+']);
    is_deeply [ @$acc[0 .. 2] ], [1, 'alice', $bal], 'info account -> {1, account, balance, held}';
    like $acc->[3], qr/^\d+$/, '... the held sum';
    my $led = one('info', $k, ['ledger', 1, '', '-', '+']);
    is scalar @$led, 6, 'info ledger -> 6 elements';
    my $all = $r->cmd('XREVRANGE', 'imgbill:{alice}:ledger', '+', '-');
    is_deeply $led->[5], [ $all->[0] ], '... the newest entry, as XREVRANGE gives it';
    is $led->[4], (@$all > 1 ? 1 : 0), '... and whether more follow';
    my $next = one('info', $k, ['ledger', 100, $all->[0][0], '-', '+']);
    is_deeply $next->[5], [ @$all[1 .. $#$all] ], 'a cursor is exclusive: the entries after it';
    is $next->[4], 0, '... none more';
    my $use = one('info', $k, ['usage', 0, '', '0-0', '99999999999999-0']);
    my $sum = 0;
    for my $e (@$all) {
        my %f = @{ $e->[1] };
        $sum += $f{charge} if ($f{type} // 'charge') eq 'charge';
    }
    is $use->[4], $sum, "info usage over all time -> the charges' sum ($sum)";
    is one('info', $k, ['usage', 0, '', '0-0', '1-0'])->[4], 0,
       '... and 0 before the first entry';
    is_deeply one('info', ['imgbill:key:' . key_hash('sk-nobody')],
                  ['account', 20, '', '-', '+']), [-1], 'info of an unknown key -> {-1}';
    is $h->snapshot, $before, 'info writes nothing';
}

# --- the held sum: recounted once "sweep" has passed, expired holds dropped
{
    $h->account('bob', 'sk-bob', 100000);
    $r->cmd('HSET', 'imgbill:{bob}:holds', 'old', '5000:' . ($now - 10),
            'live', '2000:' . ($now + 100));
    $r->cmd('HSET', 'imgbill:{bob}:held', 'units', 99999, 'sweep', $now - 1);
    is_deeply admit('sk-bob', 'b1', 50000, 1000), [1, 'bob', 100000, 98000],
              'recount: only the live hold counts';
    my $hs = holds('bob');
    ok !exists $hs->{old}, 'the expired hold is swept';
    is held('bob')->{units}, 3000, 'held: the live hold and the new one';
    cmp_ok abs(held('bob')->{sweep} - ($now + 100)), '<=', 2,
           'sweep: the earliest live expiry';

    # before "sweep", the sum is trusted as it is
    $r->cmd('HSET', 'imgbill:{bob}:held', 'units', 60000);
    is_deeply admit('sk-bob', 'b2', 50000, 1000), [0, 'bob', 100000, 40000],
              'before sweep the stored sum decides';

    # a missing sum is recounted
    $r->cmd('DEL', 'imgbill:{bob}:held');
    is_deeply admit('sk-bob', 'b3', 50000, 1000), [1, 'bob', 100000, 97000],
              'a missing sum is recounted';
    is held('bob')->{units}, 4000, 'and stored';

    # a sum driven below zero by hand is reset, never negative
    $r->cmd('HSET', 'imgbill:{bob}:held', 'units', 10);
    is release('bob', 'b3', 1000), 1, 'release past the sum';
    is held('bob')->{units}, 0, 'the sum stops at 0';
}

# --- one call, one clock: admissions of a batch share Redis' time, each
# with its own ttl; a hold of 0 units goes back like any other
{
    $h->account('dave', 'sk-dave', 100000);
    my $k = ['imgbill:key:' . key_hash('sk-dave')];
    my $res = call(['admit', $k, ['d1', 50000, 1000, 900]],
                   ['admit', $k, ['d2', 50000, 2000, 60]],
                   ['admit', $k, ['d3', 50000, 3000, 900]],
                   ['admit', $k, ['d4', 50000, 0, 900]]);
    is_deeply [ map { $_->[3] } @$res ], [100000, 99000, 97000, 94000],
              'each admission of a call sees the holds before it';
    my $hs = holds('dave');
    my %exp = map { $_ => ($hs->{$_} =~ /:(\d+)$/)[0] } keys %$hs;
    is $exp{d1}, $exp{d3}, 'the same ttl, the same expiry';
    is $exp{d1} - $exp{d2}, 840, 'another ttl, its own expiry';
    cmp_ok abs($exp{d1} - ($now + 900)), '<=', 2, '... from Redis\' time';
    is $hs->{d4}, "0:$exp{d4}", 'a hold of 0 units is kept';
    is release('dave', 'd4', 0), 1, 'and released, its amount read back';
    is held('dave')->{units}, 6000, 'the sum unchanged by it';
    is_deeply settle('dave', 'd2', -5, hold => 2000), [1, 100000],
              'a negative charge is no charge';
    is held('dave')->{units}, 4000, '... its hold given back';
    is $r->cmd('EXISTS', 'imgbill:{dave}:settled:d2'), 0, '... no marker';
    is release('dave', $_, 0), 1, "$_ released" for qw(d1 d3);
    is held('dave')->{units}, 0, 'the sum back to 0';
}

# --- rollback: a failing command fails alone, and leaves no marker
{
    $h->account('carol', 'sk-carol', 100000);
    admit('sk-carol', 'c1', 50000, 7000);
    $r->cmd('DEL', 'imgbill:{carol}:balance');
    $r->cmd('HSET', 'imgbill:{carol}:balance', 'oops', 1);
    my $res = call(
        ['settle', [keys_of('carol', qw(balance holds ledger)),
                    'imgbill:{carol}:settled:c1', 'imgbill:{carol}:held'],
         ['c1', 2465, 'metered', 'm', 1, 1, 604800, 1700000000, 7000, 1]],
        ['settle', [keys_of('alice', qw(balance holds ledger)),
                    'imgbill:{alice}:settled:a9', 'imgbill:{alice}:held'],
         ['a9', 100, 'fast', 'm', 0, 0, 604800, 1700000000, 0, 1]]);
    is scalar @$res, 2, 'a result for each command';
    like $res->[0], qr/^-.*WRONGTYPE/, 'the failing command answers an error';
    is_deeply $res->[1], [1, 96735], 'the other command of the call applies';
    is $r->cmd('EXISTS', 'imgbill:{carol}:settled:c1'), 0,
       'the marker is taken back: the journal can retry';
    is scalar @{ $r->cmd('XRANGE', 'imgbill:{carol}:ledger', '-', '+') }, 0,
       'no ledger entry';

    $r->cmd('DEL', 'imgbill:{carol}:balance');
    $r->cmd('SET', 'imgbill:{carol}:balance', 100000);
    is_deeply settle('carol', 'c1', 2465, hold => 0), [1, 97535],
              'mended, the retry applies once';
    is_deeply settle('carol', 'c1', 2465, hold => 0), [0, 97535],
              'and only once';
}

# --- usage: per-day totals beside the ledger, the ledger scanned only
#     before them, and `imgbill usage-backfill` giving them the rest
{
    my $day = 86400;
    my $today = int($now / $day) * $day;
    my $id = sub { ($_[0] * 1000) . '-' . $_[1] };
    my $usage = sub {
        my ($acct, $from, $to) = @_;
        return one('info', ['imgbill:key:' . key_hash("sk-$acct")],
                   ['usage', 0, '', $id->($from, 0), $id->($to, 0)]);
    };
    $h->account('dora', 'sk-dora', 1_000_000);
    my $L = 'imgbill:{dora}:ledger';
    # history from before the totals: two charges yesterday, one today
    $r->cmd('XADD', $L, $id->($today - $day + 60, 0), 'type', 'charge', 'charge', 100);
    $r->cmd('XADD', $L, $id->($today - $day + 120, 0), 'type', 'credit', 'amount', 9);
    $r->cmd('XADD', $L, $id->($today - $day + 180, 0), 'charge', 200);    # no type
    $r->cmd('XADD', $L, $id->($today + 1, 0), 'type', 'charge', 'charge', 50);
    is_deeply $usage->('dora', $today - $day, $today + $day), [1, 'dora', 1_000_000, 0, 350],
              'no totals yet: the ledger is summed (350)';
    settle('dora', 'd1', 1000, ts => $now);
    my $d = { @{ $r->cmd('HGETALL', 'imgbill:{dora}:daily') } };
    my $first = $r->cmd('XREVRANGE', $L, '+', '-', 'COUNT', 1)->[0][0];
    my @g = gmtime $now;
    my $ymd = sprintf '%04d-%02d-%02d', $g[5] + 1900, $g[4] + 1, $g[3];
    is_deeply $d, { $ymd => 1000, since => $first },
              "a charge adds to its UTC day's total ($ymd), since its entry";
    settle('dora', 'd2', 7, ts => $now);
    settle('dora', 'd2', 7, ts => $now);
    is $r->cmd('HGET', 'imgbill:{dora}:daily', $ymd), 1007, '... once per request';
    is $r->cmd('HGET', 'imgbill:{dora}:daily', 'since'), $first, '... since unchanged';
    is $usage->('dora', $today, $today + $day)->[4], 1057,
       'usage today: the total, and the ledger before since (50)';
    is $usage->('dora', $today - $day, $today + $day)->[4], 1357, '... from yesterday: 1357';
    is $usage->('dora', $today - $day, $today)->[4], 300, '... yesterday alone: 300';
    is $usage->('dora', $today + $day, $today + 2 * $day)->[4], 0, '... tomorrow: 0';

    my ($rc, $out) = $h->cli('usage-backfill', 'dora');
    is "$rc|$out", "0|dora charges=3 days=2\n", 'usage-backfill: 3 charges on 2 days';
    $d = { @{ $r->cmd('HGETALL', 'imgbill:{dora}:daily') } };
    is $d->{since}, '0', '... since "0": all counted';
    is $usage->('dora', $today - $day, $today + $day)->[4], 1357, '... the same usage';
    is $usage->('dora', $today, $today + $day)->[4], 1057, '... today too';
    ($rc, $out) = $h->cli('usage-backfill', 'dora');
    is "$rc|$out", "0|dora charges=0 days=0\n", '... again: nothing to do';
    is_deeply { @{ $r->cmd('HGETALL', 'imgbill:{dora}:daily') } }, $d, '... nothing changed';

    # a ledger too long to sum before its totals: status 2, not a stall
    $h->account('ed', 'sk-ed', 1_000_000);
    $r->cmd('EVAL', "for i = 1, 10001 do redis.call('XADD', KEYS[1], '*', "
                    . "'type', 'charge', 'charge', 1) end", 1, 'imgbill:{ed}:ledger');
    settle('ed', 'e1', 5, ts => $now);
    is_deeply $usage->('ed', $today - $day, $today + $day), [2, 'ed', 1_000_000 - 5, 0],
              '10,001 entries before the totals: {2, ...}, nothing summed';
    ($rc, $out) = $h->cli('usage-backfill', 'ed');
    is "$rc|$out", "0|ed charges=10001 days=1\n", 'usage-backfill gives them to the totals';
    is $usage->('ed', $today - $day, $today + $day)->[4], 10006, '... then usage reads 10006';
}

# --- settle names the API the client spoke, where the relay says it; a
# caller of old (ten arguments) and an empty one write no field
{
    $h->account('ada', 'sk-ada', 100000);
    is_deeply settle('ada', 'a1', 3059, api => 'openai_images', ts => 1700000001), [1, 96941],
              'ada: 0.3059 settled, the API named';
    is_deeply settle('ada', 'a2', 100, ts => 1700000002), [1, 96841], '... and one without';
    is_deeply settle('ada', 'a3', 100, api => '', ts => 1700000003), [1, 96741],
              '... and one with an empty API';
    my @e = map { { @{ $_->[1] } } } @{ $r->cmd('XRANGE', 'imgbill:{ada}:ledger', '-', '+') };
    is_deeply $e[0], { type => 'charge', request_id => 'a1', ts => 1700000001,
                       channel => 'metered', model => 'gemini-2.5-flash-image',
                       prompt_tokens => 560, completion_tokens => 1120, images => 1,
                       charge => 3059, balance_after => 96941, api => 'openai_images' },
              '... its entry: every field, the API last';
    ok !exists $e[1]{api} && !exists $e[2]{api}, '... the others have no api field';
    is $e[1]{balance_after}, 96841, '... and their balances';
}

# --- reverse: a charge given back once, whichever of settle and reversal
# comes first; the day's total loses it on the charge's day
{
    my $now = time;
    my @g = gmtime $now;
    my $ymd = sprintf '%04d-%02d-%02d', $g[5] + 1900, $g[4] + 1, $g[3];
    $h->account('vera', 'sk-vera', 100000);
    is(($h->cli('audit', 'vera', '--open'))[0], 0, 'vera: opened with 10.0000');
    is_deeply settle('vera', 'v1', 2465, ts => $now), [1, 97535], 'vera: charged 0.2465';
    is_deeply settle('vera', 'v2', 700, ts => $now), [1, 96835], '... and 0.0700';
    is_deeply reverse_charge('vera', 'v1', ts => $now + 1, charge_ts => $now), [1, 99300],
              'reverse: 0.2465 given back';
    is_deeply reverse_charge('vera', 'v1', ts => $now + 2, charge_ts => $now), [0, 99300],
              '... once: again, nothing';
    is_deeply settle('vera', 'v1', 2465, ts => $now), [0, 99300],
              '... and its settle, replayed, charges nothing';
    my @e = @{ $r->cmd('XRANGE', 'imgbill:{vera}:ledger', '-', '+') };
    is scalar @e, 4, '... four ledger entries';
    is_deeply { @{ $e[3][1] } }, { type => 'reversal', request_id => 'v1',
                                   ts => $now + 1, charge_ts => $now,
                                   amount => 2465, balance_after => 99300 },
              '... the last a reversal of 2465';
    is $r->cmd('HGET', 'imgbill:{vera}:daily', $ymd), 700,
       "... the day's total 700";
    my $usage = one('info', ['imgbill:key:' . key_hash('sk-vera')],
                    ['usage', 0, '', ($now - 86400) * 1000 . '-0',
                     ($now + 86400) * 1000 . '-0']);
    is $usage->[4], 700, '... and usage reads 700';

    is admit('sk-vera', 'v3', 50000, 2465)->[0], 1, 'v3 holds 0.2465';
    is_deeply reverse_charge('vera', 'v3', ts => $now), [2, 99300],
              'reverse before its settle: {2}, nothing moves';
    like holds('vera')->{v3}, qr/^2465:\d+$/, '... the hold stays';
    is_deeply settle('vera', 'v3', 2465, ts => $now, hold => 2465), [0, 99300],
              '... and the settle that follows charges nothing';
    is_deeply holds('vera'), {}, '... but gives the hold back';
    is held('vera')->{units}, 0, '... and its units';
    is admit('sk-vera', 'v4', 50000, 700)->[0], 1, 'v4 holds 0.0700';
    is_deeply reverse_charge('vera', 'v4', ts => $now), [2, 99300],
              'v4 reversed before its settle';
    is_deeply settle('vera', 'v4', 0, ts => $now), [0, 99300],
              '... a free settle after it (hold not known) charges nothing';
    is_deeply holds('vera'), {}, '... and gives the hold back too';
    is scalar @{ $r->cmd('XRANGE', 'imgbill:{vera}:ledger', '-', '+') }, 4,
       '... nor writes to the ledger';
    my ($rc, $out) = $h->cli('audit', 'vera');
    like "$rc|$out", qr/^0\|/, 'imgbill audit: the reversal squares the ledger' or diag $out;
}

# --- redeem: a code spent once, its credit a ledger entry; the code's
# states answered without a write
{
    my $redeem = sub {
        my ($key, $code) = @_;
        return one('redeem', ['imgbill:key:' . key_hash($key),
                              'imgbill:code:' . key_hash($code)],
                   [substr(key_hash($key), 0, 12), substr(key_hash($code), 0, 12)]);
    };
    $h->account('rita', 'sk-rita', 5000);
    my $ck = 'imgbill:code:' . key_hash('rc-one');
    $r->cmd('HSET', $ck, 'amount', 30000, 'created', $now);
    is_deeply $redeem->('sk-nobody', 'rc-one'), [-1], 'redeem: an unknown key, {-1}';
    is_deeply $redeem->('sk-rita', 'rc-none'), [-2], '... an unknown code, {-2}';
    is_deeply $redeem->('sk-rita', 'rc-one'), [1, 'rita', 35000, 30000],
        '... a code: {1, account, balance, amount}';
    my ($e) = @{ $r->cmd('XRANGE', 'imgbill:{rita}:ledger', '-', '+') };
    my %f = @{ $e->[1] };
    is_deeply [ @f{qw(type amount reason code key balance_after)} ],
              [ 'credit', 30000, 'redeem', substr(key_hash('rc-one'), 0, 12),
                substr(key_hash('sk-rita'), 0, 12), 35000 ], '... a credit entry';
    my $used = $redeem->('sk-rita', 'rc-one');
    is $used->[0], -3, '... the same code again: {-3, used at}';
    ok abs($used->[1] - $now) < 60, '... used now';
    $r->cmd('HSET', 'imgbill:code:' . key_hash('rc-old'), 'amount', 1, 'expires', $now - 1);
    is_deeply $redeem->('sk-rita', 'rc-old'), [-4, $now - 1], '... an expired code: {-4, expired at}';
    is bal('rita'), 35000, '... the balance credited once';
    $r->cmd('SET', 'imgbill:code:' . key_hash('rc-bad'), 'x');
    my $res = call(['redeem', ['imgbill:key:' . key_hash('sk-rita'),
                               'imgbill:code:' . key_hash('rc-bad')], ['a', 'b']],
                   ['lookup', ['imgbill:key:' . key_hash('sk-rita')], []]);
    like $res->[0], qr/^-.*WRONGTYPE/, '... a code of the wrong type: an error';
    is_deeply $res->[1], [1, 'rita'], '... for that command only';
}

# --- a key's limits, command by command
{
    $h->account('kim', 'sk-kim', 1000000);
    my $id = substr(key_hash('sk-kim'), 0, 12);
    my $kk = "imgbill:{kim}:key:$id";
    my $kh = "$kk:holds";
    my $day = sub { my @t = gmtime $_[0]; sprintf '%04d-%02d-%02d', $t[5] + 1900, $t[4] + 1, $t[3] };
    my $adm = sub {
        my ($rid, $hold, %o) = @_;
        return one('admit', ['imgbill:key:' . key_hash('sk-kim')],
                   [$rid, 0, $hold, 900, $o{model} // 'm1', $o{ip} // '4:7f000001']);
    };
    $r->cmd('HSET', $kk, 'since', $now, 'limit', 3000, 'daily_limit', 2000);
    is_deeply $adm->('k1', 1500), [1, 'kim', 1000000, 1000000, 1], 'a limited key: held, {..., 1}';
    is_deeply $adm->('k2', 1000), [-5, 'kim', 500, 2], '... a second over the daily limit: {-5, left 500, daily}';
    is_deeply [ sort keys %{ { @{ $r->cmd('HGETALL', $kh) } } } ], ['k1'], '... the key holds k1 only';
    is $r->cmd('HGET', "$kk:held", 'units'), 1500, '... and its sum, as an account\'s';
    is_deeply settle('kim', 'k1', 1200, ts => $now, hold => 1500, key => $id), [1, 998800],
        'k1 settles 1200';
    is_deeply [ @{ $r->cmd('HMGET', $kk, 'spent', 'day', 'day_spent') } ], [1200, $day->($now), 1200],
        '... the key spent 1200 today';
    is_deeply { @{ $r->cmd('HGETALL', $kh) } }, {}, '... its hold gone';
    is $r->cmd('HGET', "$kk:held", 'units'), 0, '... from the sum too';
    my $ch = settle('kim', 'k0', 500, ts => $now - 86400, key => $id);
    is $ch->[0], 1, 'a replayed charge of yesterday';
    is_deeply [ @{ $r->cmd('HMGET', $kk, 'spent', 'day', 'day_spent') } ], [1700, $day->($now), 1200],
        '... counts in the total, not in today\'s';
    is_deeply $adm->('k3', 1400), [-5, 'kim', 1300, 1], 'now the total limit: {-5, left 1300, total}';
    is_deeply reverse_charge('kim', 'k1', ts => $now, charge_ts => $now, ), [1, 999500],
        'k1 reversed (the key not named): the account gets it back';
    is $r->cmd('HGET', $kk, 'spent'), 1700, '... the key\'s spend stays';
    is_deeply one('reverse', [keys_of('kim', qw(balance ledger)), 'imgbill:{kim}:settled:k0'],
                  [ 'k0', 604800, $now, $now - 86400, $id ]), [1, 1000000],
        'k0 reversed, naming the key';
    is_deeply [ @{ $r->cmd('HMGET', $kk, 'spent', 'day_spent') } ], [1200, 1200],
        '... its spend less 500, today\'s as it was (it was yesterday\'s)';
    is $adm->('k4', 700)->[0], 1, 'k4 held';
    is one('refresh', [keys_of('kim', 'holds')], ['k4', 700, 5000, $id]), 1, '... refreshed';
    my ($exp) = $r->cmd('HGET', $kh, 'k4') =~ /:(\d+)$/;
    ok $exp >= $now + 4999, '... the key\'s hold too';
    is release('kim', 'k4', 700), 1, '... released without the key named';
    is $r->cmd('HEXISTS', $kh, 'k4'), 1, '... the key\'s hold stays (it expires)';
    is one('release', [keys_of('kim', qw(holds held))], ['k4', 700, $id]), 0, 'released naming the key';
    is $r->cmd('HEXISTS', $kh, 'k4'), 0, '... the key\'s hold gone';
    is $adm->('k5', 100)->[0], 1, 'k5 held';
    is one('release_key', ['imgbill:key:' . key_hash('sk-kim')], ['k5']), 1, '... released by the key';
    is $r->cmd('HEXISTS', $kh, 'k5'), 0, '... the key\'s hold too';
    is $r->cmd('HGET', "$kk:held", 'units'), 0, '... and the sum of its holds is 0';

    # the lists
    $r->cmd('HSET', $kk, 'models', 'm1,m2', 'ips', '4:0a000000/8,6:20010db8000000000000000000000000/33,4:7f000001/32');
    $r->cmd('HDEL', $kk, 'limit', 'daily_limit');
    is $adm->('m', 1, model => 'm2')->[0], 1, 'a listed model';
    is_deeply $adm->('m', 1, model => 'm')->[0], -3, 'a prefix of one is not: -3';
    is_deeply $adm->('m', 1, model => 'm1,m2')->[0], -3, '... nor two of them';
    is $adm->('i', 1, ip => '4:0affffff')->[0], 1, '10.255.255.255 in 10.0.0.0/8';
    is $adm->('i', 1, ip => '4:0b000000')->[0], -4, '11.0.0.0 not: -4';
    is $adm->('i', 1, ip => '6:20010db87fffffffffffffffffffffff')->[0], 1, '2001:db8:7fff:... in 2001:db8::/33';
    is $adm->('i', 1, ip => '6:20010db8800000000000000000000000')->[0], -4, '2001:db8:8000:: not';
    is $adm->('i', 1, ip => '6:0000000000000000000000000a000001')->[0], -4, 'an IPv6 address is no IPv4 one';
    is $adm->('i', 1, ip => '')->[0], -4, 'no address (a unix socket): not in any network';
    is $adm->('i', 1, ip => '4:7f000001')->[0], 1, '127.0.0.1/32';
    $r->cmd('HSET', $kk, 'expires', $now - 1);
    is_deeply $adm->('e', 1), [-2, 'kim', $now - 1], 'expired: {-2, expired at}';
}

# --- scripts/bench-src/script-cost: the script's own Redis cost, the money
# of its calls checked; a script that charges one unit too much fails it
{
    my $tool = "$root/scripts/bench-src/script-cost";
    my $out = `"$tool" "$lua_file" 200 3 2>&1`;
    is $?, 0, 'script-cost runs the script' or diag $out;
    # 10, and the day's usage total a settle adds to
    like $out, qr/^redis_us_per_request [\d.]+ commands_per_request 12\.\d+ /m,
         'it prints Redis\' cost per request, about 11 commands each';
    like $out, qr/requests 600, ledger entries 600, charged 1479000 units, holds left 0, error replies 0/,
         '... and the money of 600 requests, exact';

    my $bad = $h->dir . '/overcharge.lua';
    (my $worse = $lua) =~ s/call\('DECRBY', balk, charge\)/call('DECRBY', balk, charge + 1)/
        or die 'no DECRBY in the script';
    open my $f, '>', $bad or die "$bad: $!";
    print $f $worse;
    close $f;
    $out = `"$tool" "$bad" 20 3 2>&1`;
    isnt $?, 0, 'a script that charges a unit too much fails it';
    like $out, qr/charged 147960 units.*\n.*the money is not exact/,
         '... saying so' or diag $out;
}

done_testing;
