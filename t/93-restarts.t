# Restarts release what they hold: a worker that exits with generations in
# flight journals their holds ("H <request id>@<pid> <account> <until>"),
# and the next workers give the money back once that worker is gone, within
# seconds instead of imgbill_hold_ttl (15 minutes).  Fast stop (nginx -s
# stop); Debian's stop (QUIT, 5 s, then TERM, or KILL of every process);
# start-stop-daemon's KILL of the master alone, whose orphaned worker
# finishes its generation beside the next nginx; a reload whose old worker
# finishes its generation.  A generation that finishes is charged once:
# its H line waits while its worker lives, then changes nothing.
use strict;
use warnings;
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use JSON::PP ();
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);

my $NGINX  = $ENV{IMGBILL_NGINX} || '/usr/sbin/nginx';
my $CHARGE = 2465;      # flash 560/1120
my $SLOW   = $ENV{IMGBILL_VALGRIND_DIR} ? 4 : 1;

sub journal { my ($h) = @_; $h->dir . '/imgbill.journal' }

sub lines {
    my ($h) = @_;
    my $j = journal($h);
    return -e $j ? do { local @ARGV = $j; map { chomp; $_ } <> } : ();
}

# H lines of an account: { request id => [pid, ...] }
sub held_lines {
    my ($h, $acct) = @_;
    my %r;
    for (lines($h)) {
        push @{ $r{$1} }, $2 if /^H ([0-9a-f]{32})\@(\d+) \Q$acct\E \d+$/;
    }
    return \%r;
}

# a pid that no process has: a child that has come and gone
sub dead_pid {
    my $pid = fork // die "fork: $!";
    POSIX::_exit(0) if $pid == 0;
    waitpid $pid, 0;
    return $pid;
}

# every process of this nginx gone (zombies aside: they listen no more)
sub gone {
    my ($h, @pids) = @_;
    return wait_for(sub {
        !grep { kill(0, $_) && !zombie($_) } @pids
    }, 15 * $SLOW) && wait_for(sub { !Imgbill::Harness::port_open($h->port) },
                               5 * $SLOW);
}

sub zombie {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/stat" or return 1;
    my $s = <$f> // '';
    return $s =~ /\)\s+[ZX]\s/;
}

# a stream in flight: the first events out, the rest 30 s later
sub stream_body {
    return { model => 'gemini-2.5-flash-image', stream => JSON::PP::true,
             messages => [ { role => 'user', content => 'draw a cat' } ] };
}

subtest 'nginx -s stop with generations in flight: the next start gives '
      . 'the money back' => sub {
    my $h = Imgbill::Harness->new(workers => 2);
    my ($acct, $key) = $h->fresh_account(units => 100000, prefix => 'stop');

    my $plain = $h->in_flight(1, key => $key, mock => 'sleep=30');
    my $stream = $h->in_flight(1, key => $key, body => stream_body(),
                               mock => 'gap=30');
    ok $h->wait_holds($acct, 2, 5 * $SLOW),
       'a generation and a stream in flight hold money';
    my @w = $h->workers;
    my $master = $h->{nginx_pid};

    my $t0 = time;
    my $out = `$NGINX -p ${\ $h->dir}/ -c ${\ $h->dir}/nginx.conf -s stop 2>&1`;
    is $?, 0, 'nginx -s stop' or diag $out;
    ok gone($h, $master, @w), 'nginx is down';
    my @got = ($plain->(), $stream->());
    isnt $got[0], '200 0.2465', "the generation's client got no image ($got[0])";

    my $held = held_lines($h, $acct);
    is scalar keys %$held, 2, 'each hold was journaled as its worker exited';
    my %w = map { $_ => 1 } @w;
    is scalar(grep { !$w{ $_->[0] } || @$_ != 1 } values %$held), 0,
       '... once, marked with the pid of a worker';
    is_deeply [ sort keys %$held ], [ sort keys %{ $h->holds($acct) } ],
       '... the holds nginx left in Redis';
    like $h->error_log, qr/exiting with \d generation\(s\) unfinished/,
       'error.log says so';

    $h->_nginx_start;
    my $t1 = time;
    ok $h->wait_holds($acct, 0, 5), 'within 5 s of the new start both holds are gone';
    my $t2 = time;
    note sprintf 'nginx -s stop: money held %.1f s after the new start, '
               . '%.1f s from the stop (nginx down %.1f s); before: '
               . 'imgbill_hold_ttl, 15 minutes', $t2 - $t1, $t2 - $t0,
               $t1 - $t0;
    is $h->balance($acct), 100000, 'the balance is untouched';
    is_deeply $h->ledger($acct), [], 'no ledger entry';
    is $h->redis('HGET', "imgbill:{$acct}:held", 'units'), 0,
       'nothing counts as held';
    ok wait_for(sub { -z journal($h) }, 5 * $SLOW), 'the journal emptied';

    my $res = $h->chat(key => $key);
    is $res->{status}, 200, 'the new workers bill as before';
    is $h->balance($acct), 100000 - $CHARGE, '... to the unit';
    is_deeply [ $h->crashes ], [], 'no worker crashed';
};

# Debian's nginx.service: start-stop-daemon --retry QUIT/5, then systemd
# sends TERM to the master (KillMode=mixed), and KILL to every process
# that is left after TimeoutStopSec; a KILL can come while the graceful
# quit still waits for a generation.
for my $end (qw(KILL TERM)) {
    subtest "QUIT, then $end: the next start gives the money back" => sub {
        my $h = Imgbill::Harness->new;
        my ($acct, $key) = $h->fresh_account(units => 100000,
                                             prefix => lc "quit$end");

        my $wait = $h->in_flight(1, key => $key, mock => 'sleep=30');
        ok $h->wait_holds($acct, 1, 5 * $SLOW), 'a generation in flight';
        my @w = $h->workers;
        is scalar @w, 1, 'one worker';
        my $master = $h->{nginx_pid};
        my ($rid) = keys %{ $h->holds($acct) };

        my $t0 = time;
        kill 'QUIT', $master;
        ok wait_for(sub { held_lines($h, $acct)->{$rid} }, 3 * $SLOW),
           'the worker journaled its hold as its graceful quit began';
        is_deeply held_lines($h, $acct)->{$rid}, [ $w[0] ],
           '... marked with its pid';
        ok wait_for(sub { !Imgbill::Harness::port_open($h->port) }, 5 * $SLOW),
           'the quit is under way: nginx listens no more';
        ok kill(0, $w[0]), 'the worker stays for its generation';
        is scalar keys %{ $h->holds($acct) }, 1,
           'the generation still runs, its hold with it';

        if ($end eq 'KILL') {
            kill 'KILL', $master, @w;      # systemd: the whole control group
        } else {
            kill 'TERM', $master;          # systemd: the main process
        }
        ok gone($h, $master, @w), "nginx is down after $end";
        my ($got) = $wait->();
        isnt $got, '200 0.2465', "the client got no image ($got)";
        is scalar @{ held_lines($h, $acct)->{$rid} || [] }, 1,
           'one H line for the hold, not one more at exit';

        $h->_nginx_start;
        my $t1 = time;
        ok $h->wait_holds($acct, 0, 5), 'within 5 s of the new start the hold is gone';
        my $t2 = time;
        note sprintf "QUIT, then $end: money held %.1f s after the new start, "
                   . '%.1f s from the QUIT; before: 15 minutes',
                   $t2 - $t1, $t2 - $t0;
        is $h->balance($acct), 100000, 'the balance is untouched';
        is_deeply $h->ledger($acct), [], 'no ledger entry';
        ok wait_for(sub { -z journal($h) }, 5 * $SLOW), 'the journal emptied';
        is_deeply [ grep { !/exited on signal 9/ } $h->crashes ], [],
           'no worker crashed';
    };
}

# start-stop-daemon alone (sysvinit, or --retry QUIT/5/KILL/5) KILLs the
# master only: its worker lives on, orphaned, and finishes its generation
# beside the next nginx, whose workers must leave its hold alone
subtest 'QUIT, then KILL of the master only: the orphaned worker settles, '
      . 'charged once' => sub {
    my $h = Imgbill::Harness->new;
    my ($acct, $key) = $h->fresh_account(units => 100000, prefix => 'orphan');

    my $wait = $h->in_flight(1, key => $key, mock => 'sleep=11');
    ok $h->wait_holds($acct, 1, 5 * $SLOW), 'a generation in flight';
    my ($w) = $h->workers;
    my $master = $h->{nginx_pid};
    my ($rid) = keys %{ $h->holds($acct) };

    kill 'QUIT', $master;
    ok wait_for(sub { held_lines($h, $acct)->{$rid} }, 3 * $SLOW),
       'the worker journaled its hold as its graceful quit began';
    ok wait_for(sub { !Imgbill::Harness::port_open($h->port) }, 5 * $SLOW),
       'the quit is under way: nginx listens no more';
    kill 'KILL', $master;
    ok wait_for(sub { !Imgbill::Harness::port_open($h->port) }, 5),
       'the master is gone';
    ok kill(0, $w) && !zombie($w), 'its worker lives on';

    $h->_nginx_start;
    sleep 2.5;
    is scalar keys %{ $h->holds($acct) }, 1,
       'the next nginx runs, and leaves the live worker\'s hold alone';

    my ($got) = $wait->();
    is $got, '200 0.2465', 'the orphaned worker finished its generation, charged';
    is $h->balance($acct), 100000 - $CHARGE, 'charged once, to the unit';
    ok $h->wait_holds($acct, 0, 5), 'its settlement gave the hold back';
    ok wait_for(sub { !kill(0, $w) || zombie($w) }, 10 * $SLOW),
       'the orphaned worker exited';
    ok wait_for(sub { -z journal($h) }, 5 * $SLOW),
       'its H line was replayed, and the journal emptied';
    is $h->balance($acct), 100000 - $CHARGE, 'the release undid no charge';
    is scalar @{ $h->ledger($acct) }, 1, 'one ledger entry';
};

subtest 'reload with a generation in flight: it settles in the old worker, '
      . 'charged once; the H line waits for it, then changes nothing' => sub {
    my $h = Imgbill::Harness->new;
    my ($acct, $key) = $h->fresh_account(units => 100000, prefix => 'hup');

    my $wait = $h->in_flight(1, key => $key, mock => 'sleep=5');
    ok $h->wait_holds($acct, 1, 5 * $SLOW), 'a generation in flight';
    my ($old) = $h->workers;
    my ($rid) = keys %{ $h->holds($acct) };

    my $t0 = time;
    kill 'HUP', $h->{nginx_pid};
    ok wait_for(sub { held_lines($h, $acct)->{$rid} }, 3 * $SLOW),
       'the old worker journaled its hold as it began to quit';
    is_deeply held_lines($h, $acct)->{$rid}, [ $old ], '... marked with its pid';
    ok wait_for(sub { grep { $_ != $old } $h->workers }, 5 * $SLOW),
       'a new worker runs';
    sleep 2 - (time - $t0) if time - $t0 < 2;
    is scalar keys %{ $h->holds($acct) }, 1,
       '2 s after the reload the hold is still there: the new worker, which '
     . 'replays every second, left it to the live old one';
    ok !-z journal($h), '... and the line stays owed';

    my ($got) = $wait->();
    is $got, '200 0.2465', 'the generation finished in the old worker, charged';
    is $h->balance($acct), 100000 - $CHARGE, 'charged once, to the unit';
    ok $h->wait_holds($acct, 0, 5), 'the settlement gave the hold back';

    ok wait_for(sub { !kill(0, $old) || zombie($old) }, 10 * $SLOW),
       'the old worker is gone';
    ok wait_for(sub { -z journal($h) }, 5 * $SLOW),
       'the H line was replayed once the old worker was gone, and the journal emptied';
    like $h->error_log, qr/replaying 1 of 1 owed journal line/, '... as the log says';
    is $h->balance($acct), 100000 - $CHARGE, 'the release undid no charge';
    is scalar @{ $h->ledger($acct) }, 1, 'one ledger entry';
    is $h->redis('HGET', "imgbill:{$acct}:held", 'units'), 0,
       'nothing counts as held (no release counted twice)';
    is_deeply [ $h->crashes ], [], 'no worker crashed';
};

# H lines as the journal's replay sees them, appended by hand: a live
# worker's waits, a gone (or zombie) worker's is released, a charged
# request's changes nothing, old lines still replay, and an H line's D
# never answers an S line of the same request.
subtest 'H lines replayed: live, gone, zombie, late, settled' => sub {
    my $h = Imgbill::Harness->new;
    my $j = journal($h);
    my $exp = int(time) + 900;
    my $append = sub {
        open my $f, '>>', $j or die "$j: $!";
        print $f map { "$_\n" } @_;
        close $f;
    };

    # a worker that lives on (a child of this test), then dies unreaped
    my ($a1) = $h->fresh_account(units => 100000, prefix => 'live',
                                 holds => { ('1' x 32) => "9060:$exp" });
    my $kid = fork // die;
    if ($kid == 0) { sleep 60; POSIX::_exit(0) }
    $append->("H ${\ ('1' x 32)}\@$kid $a1 $exp");
    sleep 2.5;
    is scalar keys %{ $h->holds($a1) }, 1, 'a live pid\'s H line waits';
    ok !-z $j, '... owed';
    kill 'KILL', $kid;
    ok wait_for(sub { zombie($kid) }, 2), 'its worker died (a zombie: not reaped)';
    ok $h->wait_holds($a1, 0, 5), 'the hold is released: a zombie settles nothing';
    waitpid $kid, 0;
    ok wait_for(sub { -z $j }, 5), 'the journal emptied';

    # past "until", the line applies whatever the pid: this test lives on
    my ($a2) = $h->fresh_account(units => 100000, prefix => 'late',
                                 holds => { ('2' x 32) => "9060:$exp" });
    $append->("H ${\ ('2' x 32)}\@$$ $a2 " . (int(time) - 1));
    ok $h->wait_holds($a2, 0, 5), 'an H line past its time applies (a pid reused)';

    # a charged request's H line, and its worker gone: nothing changes
    my ($a3, $k3) = $h->fresh_account(units => 100000, prefix => 'paid');
    my $res = $h->chat(key => $k3);
    is $res->{status}, 200, 'a generation charged';
    my $rid = $res->{headers}{'x-imgbill-request-id'};
    my $before = $h->snapshot;
    $append->("H $rid\@${\ dead_pid()} $a3 $exp");
    ok wait_for(sub { -z $j }, 5), 'its H line replayed';
    is $h->snapshot, $before, 'Redis unchanged: the charge stands, nothing held';

    # an H line and an S line of one request replayed together; the S
    # fails (its account's balance is broken), the H succeeds: the S stays
    # owed, and is applied, once, when the account is mended
    my $r4 = '4' x 32;
    $h->redis('HSET', 'imgbill:{brk}:balance', 'oops', 1);
    $h->redis('HSET', 'imgbill:{brk}:holds', $r4, "700:$exp");
    $append->("H $r4\@${\ dead_pid()} brk $exp",
              "S $r4 brk 700 fast 0 0 gemini-2.5-flash-image");
    ok wait_for(sub { !$h->redis('HEXISTS', 'imgbill:{brk}:holds', $r4) }, 5),
       'the H line released the hold';
    ok wait_for(sub { $h->error_log =~ /WRONGTYPE[^\n]* to settle/ }, 5),
       'the S line failed';
    sleep 1.5;
    ok !-z $j, "the H line's D did not answer the S line: still owed";
    $h->redis('DEL', 'imgbill:{brk}:balance');
    $h->redis('SET', 'imgbill:{brk}:balance', 10000);
    ok wait_for(sub { $h->redis('GET', 'imgbill:{brk}:balance') == 10000 - 700 }, 5),
       'mended, the charge is applied';
    ok wait_for(sub { -z $j }, 5), '... and the journal emptied';
    is scalar @{ $h->ledger('brk') }, 1, '... once';

    # the lines of an older imgbill still replay
    my ($a5, $k5) = $h->fresh_account(units => 100000, prefix => 'old',
                                      holds => { ('5' x 32) => "9060:$exp",
                                                 ('6' x 32) => "100:$exp" });
    $append->("R ${\ ('5' x 32)} " . Imgbill::Harness::key_hash($k5),
              "S ${\ ('6' x 32)} $a5 0 metered 0 0 gemini-2.5-flash-image");
    ok $h->wait_holds($a5, 0, 5), 'R and S lines replay as before';
    ok wait_for(sub { -z $j }, 5), 'the journal emptied';

    is_deeply [ $h->crashes ], [], 'no worker crashed';
};

done_testing;
