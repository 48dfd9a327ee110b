# Many relays, one Redis: three nginx instances (each its own prefix, port,
# mock upstream, journal and logs, as three machines would have) on one
# redis-server, driven together by scripts/loadcheck, round-robin, so one
# account's requests are in flight on every relay at once.  The money must
# stay exact across them: conservation to the unit, no hold left, each
# charge in the ledger once and served by exactly one relay, and 1.00 split
# into exactly 14 calls of 0.07 that every relay took part in.  Redis and
# the relays' own access logs are read back here, independently of the
# checker's verdict.  scripts/loadcheck --help says how to run it larger.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);
use Imgbill::Loadcheck qw(loadcheck verdict_ok);

my $t0 = time;

# under valgrind (scripts/test's second pass) nginx is many times slower:
# three of them on two cores can stall past the 1 s Redis timeout on a
# worker's first connection, and fail closed (503) with no fault fired
my $vg = $ENV{IMGBILL_VALGRIND_DIR};
my @slow = $vg ? (conf_filter => sub {
    $_[0] =~ s/^(\s*imgbill_redis_timeout)\s+[^;]*;/$1 5s;/m
        or die 'conf.d/imgbill.conf: no imgbill_redis_timeout';
}) : ();

# the first runs redis-server (restartable: DEBUG RESTART keeps the data),
# the others share it
my $h1 = Imgbill::Harness->new(workers => 2, redis_restartable => 1, @slow);
my @relays = ($h1, map { Imgbill::Harness->new(share_redis => $h1, @slow) }
                   1, 2);
my $nr = @relays;

is $_->redis_port, $h1->redis_port, 'relay ' . $_->port . ' on the one Redis'
    for @relays[1 .. $#relays];
# a relay does not own the Redis it shares: it cannot stop it
ok !eval { $relays[1]->redis_stop; 1 }, 'a sharing harness cannot stop Redis';
like $@, qr/belongs to share_redis/, '... and says why';

my @stack = ((map { ('--relay', $_->url, '--relay-pid', $_->dir . '/nginx.pid') }
              @relays), '--redis', $h1->redis_addr);

my ($n_mixed, $n_faults, $c) = $vg ? (90, 150, 6) : (240, 300, 24);

# loadcheck(@args), each relay's access log length noted beforehand:
# relays_agree() reads what follows
sub run {
    my @logged = map { scalar $_->access_entries } @relays;
    my $r = loadcheck($h1, @_);
    $r->{logged} = \@logged;
    return $r;
}

sub per_relay { [ split m{/}, $_[0]{f}{$_[1]} // '' ] }

# the verdict's invariants, and the load spread over every relay
sub clean_ok {
    my ($r, $n, $name) = @_;
    verdict_ok($r, $n, $name);
    my $f = $r->{f};
    is $f->{relays}, $nr, "$name: $nr relays";
    my $sent = per_relay($r, 'relay_requests');
    my $want = join '/', map { int($n / $nr) + ($_ < $n % $nr) } 0 .. $nr - 1;
    is join('/', @$sent), $want, "$name: round-robin over the relays";
}

# Redis itself, not the checker: returns the ledger's request ids
sub redis_agrees { Imgbill::Loadcheck::redis_agrees($h1, @_) }

# Each ledger entry was charged by exactly one relay: its request id is in
# one relay's access log with that charge, in no other's.  Returns how
# many entries each relay charged.
sub relays_agree {
    my ($r, $rids, $name) = @_;
    my (%by, @count);
    for my $i (0 .. $#relays) {
        my $h = $relays[$i];
        # nginx logs after the reply is out: wait for this run's lines
        my $want = $r->{logged}[$i] + (per_relay($r, 'relay_requests')->[$i] // 0);
        my @e;
        wait_for(sub { @e = $h->access_entries; @e >= $want }, 10);
        for (@e[$r->{logged}[$i] .. $#e]) {
            next unless ($_->{charge} // '-') =~ /^\d+\.\d{4}$/ && $_->{charge} > 0;
            push @{ $by{$_->{request_id}} }, $i;
        }
    }
    my $bad = 0;
    for my $rid (@$rids) {
        my $where = $by{$rid} || [];
        if (@$where != 1) {
            $bad++;
            diag "$name: ledger entry $rid charged by relays (@$where)";
            next;
        }
        $count[$where->[0]]++;
    }
    is $bad, 0, "$name: every ledger entry charged by exactly one relay";
    return map { $count[$_] // 0 } 0 .. $#relays;
}

my @mixed_initial = ((100000000) x 7, 60000);

# --- mixed, no faults: a 503 would be a defect here ---------------------

my $r = run(@stack, '--requests', $n_mixed, '--concurrency', $c,
            '--seed', 9101);
clean_ok($r, $n_mixed, 'mixed');
cmp_ok $r->{f}{$_} // 0, '>', 0, "mixed: some $_"
    for qw(ok free failed rejected aborted dropped);
my @rids = redis_agrees($r, \@mixed_initial, 'mixed');
my @charged = relays_agree($r, \@rids, 'mixed');
cmp_ok $charged[$_], '>', 0, "mixed: relay $_ charged some of the ledger"
    for 0 .. $#relays;

# --- mixed under faults: Redis paused, its connections killed, the server
# restarted, and two relays reloaded (their workers replaced) meanwhile ---

$r = run(@stack, '--requests', $n_faults, '--concurrency', $c,
         '--faults', 'pause,reload,kill,reload,restart', '--seed', 9102);
clean_ok($r, $n_faults, 'faults');
cmp_ok $r->{f}{$_} // 0, '>', 0, "faults: some $_"
    for qw(ok free failed rejected aborted);
is $r->{f}{faults}, 5, 'faults: five fired';
like $r->{err}, qr/reloaded relay \Q${\ $relays[$_]->url }\E /,
    "faults: relay $_ reloaded" for 0, 1;
@rids = redis_agrees($r, \@mixed_initial, 'faults');
relays_agree($r, \@rids, 'faults');
# the reloads replaced workers: each relay's error.log tells of it
for my $i (0, 1) {
    like $relays[$i]->error_log, qr/signal 1 \(SIGHUP\) received/,
        "faults: relay $i got its SIGHUP";
}

# --- fast-exhaust across relays: 1.00 buys 14 calls at 0.07 -------------
#
# Four in flight per relay: all at once, one worker's batch of admissions
# can take the whole 1.00 before another relay's arrives (exact still, but
# no race between relays); four each interleave, so every relay must win.

my $n_ex = $vg ? 30 : 60;
$r = run(@stack, '--scenario', 'fast-exhaust', '--requests', $n_ex,
         '--concurrency', 4 * $nr);
clean_ok($r, $n_ex, 'exhaust');
is $r->{f}{ok}, 14, 'exhaust: exactly 14 calls charged';
is $r->{f}{rejected}, $n_ex - 14, 'exhaust: every other one refused';
is $r->{f}{ledger}, 14, 'exhaust: 14 ledger entries';
my $won = per_relay($r, 'relay_ok');
my $sum = 0;
$sum += $_ for @$won;
is $sum, 14, 'exhaust: the relays\' wins add up to 14';
cmp_ok $won->[$_] // 0, '>', 0, "exhaust: relay $_ won some of the 14"
    for 0 .. $#relays;
my $ex = ($r->{f}{prefix} // 'none') . '-0';
is $_->balance($ex), 200, 'exhaust: 0.0200 left, read through relay '
    . $_->port . "'s harness" for @relays;
@rids = map { $_->{request_id} } grep { $_->{charge} == 700 }
        @{ $h1->ledger($ex) };
is scalar @rids, 14, 'exhaust: each entry 700 units';
my @split = relays_agree($r, \@rids, 'exhaust');
is join('/', @split), join('/', @$won),
    'exhaust: the access logs split the 14 as the checker saw';

# --- a relay's workers SIGKILLed mid-run, as a machine lost --------------
# What was in flight there is lost: each may keep its hold until
# imgbill_hold_ttl (on the side of refusing), or have a charge no client
# saw; the money itself stays exact.

$r = run(@stack, '--requests', $vg ? 60 : 120, '--concurrency', $c,
         '--faults', 'crash', '--seed', 9104);
is $r->{rc}, 0, 'crash: exit 0' or diag $r->{err};
ok $r->{ok}, 'crash: verdict OK' or diag $r->{line};
is $r->{f}{$_}, 0, "crash: $_=0" for qw(drift_units duplicates);
like $r->{err}, qr/crashed relay \Q${\ $relays[0]->url }\E: 2 workers killed/,
    'crash: both workers of relay 0 killed';
cmp_ok $r->{f}{killed} // 0, '>', 0, 'crash: requests were in flight there';
# a failed or aborted request gives its hold back after its client has
# the reply: one that ended there just before the kill may keep it too
like $r->{line}, qr/ late=\d+/, 'crash: the checker counts those (late=)';
cmp_ok $r->{f}{holds_left} // -1, '<=',
    ($r->{f}{killed} // 0) + ($r->{f}{late} // 0),
    'crash: at most one hold left per request killed or just ended there';
{
    # per account, from Redis: the balance is the initial one less the
    # ledger, and the held sum is exactly what the holds left still hold
    my ($bad, $prefix) = (0, $r->{f}{prefix} // 'none');
    for my $i (0 .. $#mixed_initial) {
        my $acct = "$prefix-$i";
        my $sum = 0;
        # (a client that left while its charge settled has it back)
        $sum += ($_->{type} // '') eq 'reversal' ? -$_->{amount} : $_->{charge}
            for @{ $h1->ledger($acct) };
        my $held = 0;
        $held += (split /:/)[0] for values %{ $h1->holds($acct) };
        my $units = $h1->redis('HGET', "imgbill:{$acct}:held", 'units') // 0;
        my $bal = $h1->balance($acct) // 'none';
        next if $bal eq $mixed_initial[$i] - $sum && $units == $held;
        $bad++;
        diag "$acct: $mixed_initial[$i] -> $bal, ledger $sum, "
            . "held $units for holds of $held";
    }
    is $bad, 0, 'crash: Redis agrees, account by account';
}
my @respawned = $relays[0]->crashes;
is scalar(grep { /exited on signal 9\b/ } @respawned), 2,
    'crash: relay 0\'s master saw its two workers killed';

# --- the judge can fail: one unit slipped into a balance -----------------
# (the relays as one comma list this time)

$r = run('--relay', join(',', map { $_->url } @relays),
         '--redis', $h1->redis_addr, '--requests', $vg ? 45 : 90,
         '--concurrency', $c, '--seed', 9103, '--self-test');
is $r->{rc}, 1, 'self-test: exit 1';
like $r->{line}, qr/^loadcheck: FAIL /, 'self-test: verdict FAIL';
is $r->{f}{drift_units}, 1, 'self-test: drift_units=1';
is $r->{f}{$_}, 0, "self-test: nothing else wrong ($_)"
    for qw(duplicates holds_left);
is $r->{f}{relay_requests}, join('/', ($vg ? 15 : 30) x $nr),
    'self-test: the comma list named every relay';

# --- and every relay lived through it all ---------------------------------

# (but for the two workers the crash run killed on purpose)
for my $i (0 .. $#relays) {
    my @crashes = grep { $i || !/exited on signal 9\b/ } $relays[$i]->crashes;
    is scalar @crashes, 0, "relay $i: no worker crashed"
        or diag join "\n", @crashes;
    my @alerts = grep { /\[(?:alert|emerg)\]/ && ($i || !/exited on signal 9\b/) }
                 split /\n/, $relays[$i]->error_log;
    is scalar @alerts, 0, "relay $i: no alert in error.log"
        or diag join "\n", @alerts;
}

note sprintf 'total %.1f s', time - $t0;
done_testing;
