# Redis that fails over: imgbill_redis names Sentinels and a master, and
# imgbill_redis_wait makes a settlement count only once a replica has it.
#
# First what "nginx -t" refuses.  Then a primary, a replica and three
# Sentinels on loopback, a relay of two workers under a mixed load
# (metered and fast, some generations failing, some slow), and the primary
# killed with SIGKILL: the relay follows the new primary without a restart;
# every settlement acknowledged before the kill is on the new primary (or
# still owed in the journal), while the new primary has no replica every
# settlement goes through the journal, and once the old primary is back as
# a replica the journal empties and the money is exact to the unit.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX ();
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for key_hash conf_ok conf_bad);

my $t0 = time;
my @fakes;

# ---- nginx -t -----------------------------------------------------------

my $tmp = tempdir('ib97-XXXXXXXX', TMPDIR => 1, CLEANUP => 1);
my $journal_line = "imgbill_journal $tmp/j;\n";
my $sentinels = 'sentinel=127.0.0.1:26379 sentinel=127.0.0.1:26380';

conf_ok('Sentinels, a master name, passwords, db, WAIT',
        "imgbill_redis $sentinels sentinel=127.0.0.1 master=imgbill "
        . "password=pw sentinel_password=spw db=2;\n"
        . $journal_line . "imgbill_redis_wait 1 200ms;\n");
conf_ok('WAIT on a fixed address',
        "imgbill_redis 127.0.0.1:6379;\n$journal_line"
        . "imgbill_redis_timeout 3s;\nimgbill_redis_wait 2 2s;\n");
conf_ok('WAIT off', "imgbill_redis 127.0.0.1:6379;\nimgbill_redis_wait off;\n");

conf_bad('master= without sentinel=', "imgbill_redis master=imgbill;\n",
         qr/"master=" in "imgbill_redis" needs at least one "sentinel=ADDRESS"/);
conf_bad('sentinel= without master=', "imgbill_redis $sentinels;\n",
         qr/"sentinel=" in "imgbill_redis" needs "master=NAME"/);
conf_bad('an address and sentinel=',
         "imgbill_redis 127.0.0.1:6379 $sentinels master=m;\n",
         qr/takes either the address of redis or "sentinel=" and "master=", not both/);
conf_bad('sentinel= and then an address',
         "imgbill_redis $sentinels master=m 127.0.0.1:6379;\n",
         qr/takes either the address of redis or "sentinel=" and "master=", not both/);
conf_bad('an address and master=',
         "imgbill_redis 127.0.0.1:6379 master=m;\n",
         qr/takes either the address of redis or "sentinel=" and "master=", not both/);
conf_bad('a Sentinel on port 99999',
         "imgbill_redis sentinel=127.0.0.1:99999 master=m;\n",
         qr/invalid Sentinel address "127\.0\.0\.1:99999" in "imgbill_redis"/);
conf_bad('a Sentinel without a host',
         "imgbill_redis sentinel=:26379 master=m;\n",
         qr/invalid Sentinel address ":26379"/);
conf_bad('a Sentinel on a unix socket',
         "imgbill_redis sentinel=unix:/tmp/s.sock master=m;\n",
         qr/invalid Sentinel address "unix:\/tmp\/s\.sock" in "imgbill_redis": not a unix socket/);
conf_bad('an empty master name', "imgbill_redis $sentinels master=;\n",
         qr/names one "master=NAME"/);
conf_bad('two master names', "imgbill_redis $sentinels master=a master=b;\n",
         qr/names one "master=NAME"/);
conf_bad('an unknown parameter', "imgbill_redis $sentinels master=m foo=1;\n",
         qr/invalid parameter "foo=1" in "imgbill_redis"/);
conf_bad('WAIT for 0 replicas',
         "imgbill_redis 127.0.0.1:6379;\n${journal_line}imgbill_redis_wait 0 100ms;\n",
         qr/invalid number of replicas "0" in "imgbill_redis_wait"/);
conf_bad('WAIT with a timeout of 0',
         "imgbill_redis 127.0.0.1:6379;\n${journal_line}imgbill_redis_wait 1 0;\n",
         qr/invalid timeout "0" in "imgbill_redis_wait"/);
conf_bad('WAIT with a timeout of "abc"',
         "imgbill_redis 127.0.0.1:6379;\n${journal_line}imgbill_redis_wait 1 abc;\n",
         qr/invalid timeout "abc" in "imgbill_redis_wait"/);
conf_bad('WAIT without a timeout',
         "imgbill_redis 127.0.0.1:6379;\n${journal_line}imgbill_redis_wait 1;\n",
         qr/"imgbill_redis_wait" directive takes REPLICAS TIMEOUT, or off/);
conf_bad('WAIT as long as the redis timeout',
         "imgbill_redis 127.0.0.1:6379;\n${journal_line}imgbill_redis_wait 1 1s;\n",
         qr/the timeout of "imgbill_redis_wait" \(1000 ms\) must be shorter than "imgbill_redis_timeout" \(1000 ms\)/);
conf_bad('WAIT without a journal',
         "imgbill_redis 127.0.0.1:6379;\nimgbill_redis_wait 1 100ms;\n",
         qr/"imgbill_redis_wait" needs "imgbill_journal"/);

# ---- the failover -------------------------------------------------------

require Imgbill::Sentinel;
my $s = Imgbill::Sentinel->new(name => 'imgbill');
stage('primary, replica and Sentinels up');
my $first = $s->master;
ok $first, "the Sentinels name a master: $first";

# ---- never a replica ------------------------------------------------------

# The replica, as the relay must see it: what a Sentinel names is used only
# once ROLE says "master"; a Sentinel that cannot be reached gives way to
# the next.  A Sentinel that lies (or lags) names the replica here.
my $replica = do {
    my $info = $s->redis($first)->cmd('INFO', 'replication');
    my ($port) = $info =~ /^slave0:ip=[^,]+,port=(\d+)/m or die "no replica:\n$info";
    "127.0.0.1:$port";
};
my ($replica_port) = $replica =~ /:(\d+)$/;
$s->redis($replica)->cmd('CONFIG', 'RESETSTAT');
{
    my $r = $s->redis;
    $r->cmd('SET', 'imgbill:key:' . key_hash('sk-role'), 'role');
    $r->cmd('SET', 'imgbill:{role}:balance', 1000000);
    $r->cmd('WAIT', 1, 5000);
}

my ($fake_port, $fake_pid, $fake_log) = fake_sentinel($replica_port);
my $dead_port = Imgbill::Harness::free_port();
{
    my $hr = Imgbill::Harness->new(
        redis => 0, mock => 1,
        conf_filter => sub {
            $_[0] =~ s/^(\s*)imgbill_redis\s+[^;]*;/${1}imgbill_redis sentinel=127.0.0.1:$dead_port sentinel=127.0.0.1:$fake_port master=imgbill;/m
                or die 'no imgbill_redis line';
        });
    # twice: a worker starts with either Sentinel, and moves on from the
    # one that named a replica
    for my $try (1, 2) {
        my $res = $hr->chat(key => 'sk-role');
        is $res->{status}, 503, "a Sentinel naming a replica: no admission (503), try $try";
        is $res->{json}{error}{code}, 'billing_unavailable', '... billing_unavailable';
    }
    ok wait_for(sub { $hr->error_log =~ /says it is a "slave", not the master/ }, 10),
       'the relay asked ROLE and refused the replica';
    like $hr->error_log, qr/cannot ask Sentinel 127\.0\.0\.1:$dead_port: Connection refused, trying the next one/,
         'a Sentinel that cannot be reached gives way to the next';
    ok -s $fake_log, '... which was asked';
    my $stats = $s->redis($replica)->cmd('INFO', 'commandstats');
    # (what the primary replicates counts too: the writes of the seeding)
    unlike $stats, qr/^cmdstat_(?:eval|evalsha):/m,
           'no script was sent to the replica';
    like $stats, qr/^cmdstat_role:calls=[1-9]/m, '... and ROLE was';
}
stage('the replica refused');
kill 'KILL', $fake_pid;
waitpid $fake_pid, 0;

# a fixed address that turns out to be a replica: its READONLY drops the
# connection (under Sentinel, the next one asks the Sentinels again)
{
    my $hr = Imgbill::Harness->new(
        redis => 0, mock => 1,
        conf_filter => sub {
            $_[0] =~ s/^(\s*)imgbill_redis\s+[^;]*;/${1}imgbill_redis $replica;/m
                or die 'no imgbill_redis line';
        });
    my $res = $hr->chat(key => 'sk-role');
    is $res->{status}, 503, 'a replica at a fixed address: 503';
    like $hr->error_log, qr/redis \Q$replica\E is not a master that takes writes \("READONLY /,
         'READONLY is seen for what it is, and the connection dropped';
    is $s->redis->cmd('HLEN', 'imgbill:{role}:holds'), 0, 'no hold anywhere';
}

my $directive = $s->directive;
my $h = Imgbill::Harness->new(
    redis => 0, workers => 2,
    conf_filter => sub {
        $_[0] =~ s/^(\s*)imgbill_redis\s+[^;]*;/${1}imgbill_redis $directive;/m
            or die 'no imgbill_redis line';
    },
    extra_http => "imgbill_redis_wait 1 300ms;\n");
my $journal = $h->dir . '/imgbill.journal';

# accounts, seeded on the primary (the replica follows)
my $vg = $ENV{IMGBILL_VALGRIND_DIR};
my $clients = 6;
my $initial = 10_000_000;    # 1000.0000: no gate is met in this test
my @accts = map { ["fo$_", "sk-failover-$_"] } 1 .. $clients;
{
    my $r = $s->redis;
    for (@accts) {
        $r->cmd('SET', 'imgbill:key:' . key_hash($_->[1]), $_->[0]);
        $r->cmd('SET', "imgbill:{$_->[0]}:balance", $initial);
    }
    $r->cmd('WAIT', 1, 5000);
}

# Each client loops until told to stop, writing one line per request:
# "status charge request-id start end".  A quarter of its generations fail
# (no charge), a quarter are slow, so that some are in flight at the kill.
my $stop = "$tmp/stop";
my @kids;
for my $i (0 .. $#accts) {
    my ($acct, $key) = @{ $accts[$i] };
    my $file = "$tmp/client-$i";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open my $out, '>>', $file or POSIX::_exit(1);
        $out->autoflush(1);
        for (my $n = $i; !-e $stop; $n++) {
            my $kind = $n % 4;
            my $path = $n % 2 ? '/fast/v1/chat/completions' : '/v1/chat/completions';
            my $mock = $kind == 2 ? 'status=500' : $kind == 3 ? 'sleep=0.3' : '';
            my $start = time;
            my $res = $h->chat(key => $key, path => $path,
                               ($mock ? (mock => $mock) : ()));
            printf $out "%s %s %s %.3f %.3f\n", $res->{status} // 0,
                $res->{headers}{'x-imgbill-charge'} // '-',
                $res->{headers}{'x-imgbill-request-id'} // '-', $start, time;
            # a failover refuses (503) for a while: no hurry then
            sleep $res->{status} == 200 ? 0.02 : 0.2;
        }
        POSIX::_exit(0);
    }
    push @kids, $pid;
}

# [{acct, status, charge (units), rid, start, end}] so far
sub seen {
    my @all;
    for my $i (0 .. $#accts) {
        open my $fh, '<', "$tmp/client-$i" or next;
        while (<$fh>) {
            my ($st, $ch, $rid, $b, $e) = /^(\d+) (\S+) (\S+) (\S+) (\S+)$/ or next;
            my $units = $ch eq '-' ? 0 : do { my ($y, $f) = split /\./, $ch; $y * 10000 + $f };
            push @all, { acct => $accts[$i][0], status => $st, charge => $units,
                         rid => $rid, start => $b, end => $e };
        }
    }
    return \@all;
}
sub charged { grep { $_->{status} == 200 && $_->{charge} > 0 } @{ seen() } }

ok wait_for(sub { charged() >= 20 }, 60), 'the load runs: 20 charges before the kill';

my $killed_at = time;
my $old = $s->kill_master;
note sprintf 'killed the primary %s at %.1f s', $old, $killed_at - $t0;
my @before = grep { $_->{end} < $killed_at } charged();

my $new = $s->wait_master($old, 40);
ok $new, 'the Sentinels promoted the replica'
    or BAIL_OUT('no failover: ' . join '', map { $s->log("s:$_") } $s->sentinel_ports);
isnt $new, $old, "the master moved: $old -> $new";
note sprintf 'new master %s at %.1f s', $new // '?', time - $t0;

# the relay follows: charges completed well after the failover, which the
# new primary, alone, cannot confirm (no replica): they go to the journal
my $promoted = time;
ok wait_for(sub { (grep { $_->{start} > $promoted } charged()) >= 6 }, 40),
   'the relay serves and charges on the new master, without a restart';
like $h->error_log, qr/Sentinel names \Q$new\E as the master "imgbill", was \Q$old\E/,
     'the relay asked the Sentinels and found the new master';
like $h->error_log, qr/0 of 1 replica\(s\) confirmed \d+ settlement\(s\)/,
     'WAIT found no replica behind the lone new master';
ok scalar(grep { /^S / } journal_lines()) > 0,
   'settlements the replicas could not confirm went to the journal';
{
    # a replica gets a script's effects, not the script: the promoted one
    # answered NOSCRIPT, and the call went again as EVAL, its WAIT too
    my $stats = $s->redis($new)->cmd('INFO', 'commandstats');
    like $stats, qr/^cmdstat_eval:calls=[1-9]/m, 'the new master had to be sent the script';
    like $stats, qr/^cmdstat_wait:calls=[1-9]/m, '... and was asked to WAIT';
}

# every settlement acknowledged before the kill is on the new primary,
# unless it is owed in the journal (WAIT lost with the old primary)
{
    my $r = $s->redis($new);
    my %owed = map { /^S (\S+)/ ? ($1 => 1) : () } journal_lines();
    my %there;
    for (@accts) {
        for my $e (@{ $r->cmd('XRANGE', "imgbill:{$_->[0]}:ledger", '-', '+') || [] }) {
            my %f = @{ $e->[1] };
            $there{ $f{request_id} } = 1 if defined $f{request_id};
        }
    }
    my @missing = grep { !$there{ $_->{rid} } && !$owed{ $_->{rid} } } @before;
    is scalar @missing, 0,
       scalar(@before) . ' charges acknowledged before the kill: all on the new primary or owed'
        or diag explain \@missing;
    my $journaled = grep { $owed{ $_->{rid} } } @before;
    note "$journaled of them owed in the journal at the failover";
}

# the old primary comes back, empty, and becomes the new one's replica:
# the journal can be replayed through WAIT
$s->restart($old, $new);
stage('the old primary restarted');
ok $s->wait_replicas(1, 40), "the old primary $old is a replica again";
stage('... and a replica');
ok wait_for(sub { (grep { $_->{start} > time - 1 && $_->{status} == 200 } @{ seen() }) > 0
                  && $s->role($old) eq 'slave' }, 20),
   'the load still runs';

open my $fh, '>', $stop or die "$stop: $!";
close $fh;
waitpid $_, 0 for @kids;

ok wait_for(sub { -z $journal }, 40), 'the journal is replayed and emptied';
stage('the journal empty');

# ---- the money, to the unit ------------------------------------------------

my $r = $s->redis($new);
my @all = @{ seen() };
my %client = map { $_->{rid} => $_ } grep { $_->{status} == 200 && $_->{charge} > 0 } @all;
my $n_free = grep { $_->{status} != 200 || $_->{charge} == 0 } @all;
my %by;
$by{ $_->{status} }++ for @all;
note scalar(@all) . ' requests: ' . scalar(keys %client) . " charged, $n_free not; by status: "
    . join ', ', map { "$_: $by{$_}" } sort keys %by;
cmp_ok scalar(keys %client), '>=', 26, 'charges made before and after the failover';
cmp_ok $n_free, '>', 5, 'and failed generations, not charged';

ok wait_for(sub {
    !grep { $r->cmd('HLEN', "imgbill:{$_->[0]}:holds") } @accts
}, 20), 'no hold left';

my ($drift, $dups, $stray, %ledger) = (0, 0, 0);
for (@accts) {
    my $acct = $_->[0];
    my $sum = 0;
    for my $e (@{ $r->cmd('XRANGE', "imgbill:{$acct}:ledger", '-', '+') || [] }) {
        my %f = @{ $e->[1] };
        $sum += $f{charge};
        $dups++ if $ledger{ $f{request_id} }++;
        $stray++ unless $client{ $f{request_id} }
                        && $client{ $f{request_id} }{charge} == $f{charge}
                        && $client{ $f{request_id} }{acct} eq $acct;
    }
    my $bal = $r->cmd('GET', "imgbill:{$acct}:balance");
    my $held = $r->cmd('HGET', "imgbill:{$acct}:held", 'units') // 0;
    $drift += abs($initial - $bal - $sum);
    is $held, 0, "$acct: no units held";
}
is $drift, 0, 'conservation: initial = balance + ledger charges, every account, to the unit';
is $dups, 0, 'no request is in the ledger twice';
is $stray, 0, 'every ledger entry is a charge a client saw, for its amount';
my @unbilled = grep { !$ledger{$_} } keys %client;
is scalar @unbilled, 0, 'every charge a client saw is in the ledger'
    or diag "@unbilled";

unlike $h->error_log, qr/\[(?:alert|emerg)\]/, 'no alert in the error log';
my @crashes = $h->crashes;
is scalar @crashes, 0, 'no worker crashed' or diag join "\n", @crashes;

note sprintf 'wall time %.1f s', time - $t0;
done_testing;

# a "Sentinel" that names 127.0.0.1:$port as the master, whatever it is
# asked, and notes each question in its log
sub fake_sentinel {
    my ($port) = @_;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                    Listen => 16, ReuseAddr => 1)
        or die "fake sentinel: $!";
    my $log = "$tmp/fake-sentinel.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        alarm 120;              # never outlives the test for long
        while (my $c = $srv->accept) {
            my $buf = '';
            while ($buf !~ /get-master-addr-by-name\r\n\$\d+\r\n[^\r]*\r\n/i) {
                sysread($c, $buf, 4096, length $buf) or last;
            }
            if (open my $l, '>>', $log) { print $l "$buf\n"; close $l }
            syswrite $c, "*2\r\n\$9\r\n127.0.0.1\r\n\$" . length($port) . "\r\n$port\r\n";
            close $c;
        }
        POSIX::_exit(0);
    }
    my $fake = $srv->sockport;
    close $srv;
    push @fakes, $pid;
    return ($fake, $pid, $log);
}
END { kill 'KILL', @fakes if @fakes }

sub stage { note sprintf '%.1f s: %s', time - $t0, $_[0] }

sub journal_lines { -e $journal ? do { local @ARGV = $journal; <> } : () }
