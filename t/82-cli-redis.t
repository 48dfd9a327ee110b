# scripts/imgbill finds the relay's Redis as the relay does (issue 23,
# finding 8): from --redis or IMGBILL_REDIS in imgbill_redis's own syntax,
# else from the imgbill_redis directive of the relay's nginx config
# (--conf, IMGBILL_CONF), on TCP, on a unix socket, or through Sentinels;
# -v says which Redis and where that came from, never a password; a
# connection that fails names the address and its source.
#
# IMGBILL_CLI=/path/to/imgbill runs another copy of the CLI (an older one,
# to see these tests fail on it): its library is the one beside it.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Time::HiRes qw(time);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for free_port);

# scripts/test's second pass runs the nginx of a test under memcheck:
# none starts here, and the first pass ran it all
plan skip_all => 'no nginx here: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $t0 = time;
my $ROOT = Imgbill::Harness->root;
my $CLI = $ENV{IMGBILL_CLI} || "$ROOT/scripts/imgbill";
my $tmp = tempdir('ib82-XXXXXXXX', TMPDIR => 1, CLEANUP => 1);
my (@pids, @printed);

my $PW = 'pw-82-Secret';          # the harness Redis' password
my $SPW = 'spw-82-Secret';        # the fake Sentinels'
my $ACCT = 'acct82';

# ---- helpers ---------------------------------------------------------------

# cli([{ env => {NAME => value}, merge => 1 }], @args) -> ($exit, $out, $err)
# with none of IMGBILL_REDIS, _PASSWORD, _DB or IMGBILL_CONF in the
# environment unless given (as under sudo); merge: stderr into stdout
my $n = 0;
sub cli {
    my %o = ref $_[0] eq 'HASH' ? %{ shift() } : ();
    my @args = @_;
    my ($out, $err) = map { "$tmp/cli-" . ++$n . ".$_" } qw(out err);
    my %env = ((map { $_ => undef } qw(IMGBILL_REDIS IMGBILL_REDIS_PASSWORD
                                       IMGBILL_REDIS_DB IMGBILL_CONF)),
               %{ $o{env} || {} });
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        for (keys %env) {
            if (defined $env{$_}) { $ENV{$_} = $env{$_} } else { delete $ENV{$_} }
        }
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        if ($o{merge}) { open STDERR, '>&', \*STDOUT } else { open STDERR, '>', $err }
        exec $^X, $CLI, @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my @r = ($? >> 8, slurp($out), slurp($err));
    push @printed, @r[1, 2];
    return @r;
}

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub spew {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh or die "$f: $!";
    return $f;
}

# balance_ok($name, $want, [\%cli_opts,] @args): the CLI prints $want
sub balance_ok {
    my ($name, $want, @rest) = @_;
    my ($rc, $out, $err) = cli(@rest, 'balance', $ACCT);
    subtest $name => sub {
        is $rc, 0, 'exit 0' or diag $err;
        is $out, "$want\n", "balance $want";
    };
}

sub spawn {
    my ($log, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        setpgrp(0, 0);
        exec @cmd or POSIX::_exit(127);
    }
    push @pids, $pid;
    return $pid;
}

sub stop_all {
    kill 'TERM', @pids;
    for my $pid (@pids) {
        wait_for(sub { waitpid($pid, POSIX::WNOHANG()) != 0 }, 5)
            or do { kill 'KILL', $pid; waitpid $pid, 0 };
    }
    @pids = ();
}
END { stop_all() if @pids }

# A Sentinel that knows one answer: AUTH with $SPW, then "SENTINEL
# get-master-addr-by-name" names $addr; NOAUTH before AUTH.  What it was
# sent goes to $log.
sub fake_sentinel {
    my ($addr, $log) = @_;
    my ($host, $port) = split /:/, $addr;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                    Listen => 16, ReuseAddr => 1)
        or die "fake sentinel: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        alarm 120;    # never outlives the test for long
        while (my $c = $srv->accept) {
            my ($buf, $authed) = ('', 0);
            while (1) {
                my @cmd = resp_command(\$buf);
                if (!@cmd) {
                    sysread($c, $buf, 4096, length $buf) or last;
                    next;
                }
                if (open my $l, '>>', $log) { print $l "@cmd\n"; close $l }
                my $reply;
                if (uc $cmd[0] eq 'AUTH') {
                    $authed = ($cmd[-1] // '') eq $SPW;
                    $reply = $authed ? "+OK\r\n" : "-WRONGPASS bad\r\n";
                } elsif (!$authed) {
                    $reply = "-NOAUTH Authentication required.\r\n";
                } else {
                    $reply = "*2\r\n\$" . length($host) . "\r\n$host\r\n\$"
                           . length($port) . "\r\n$port\r\n";
                }
                syswrite $c, $reply;
            }
            close $c;
        }
        POSIX::_exit(0);
    }
    push @pids, $pid;
    my $p = $srv->sockport;
    close $srv;
    return "127.0.0.1:$p";
}

# one RESP command off the front of $$buf, or () if it is not all there
sub resp_command {
    my ($buf) = @_;
    return () unless $$buf =~ /\A\*(\d+)\r\n/;
    my ($argc, $off, @a) = ($1, length "*$1\r\n");
    for (1 .. $argc) {
        return () unless substr($$buf, $off) =~ /\A\$(\d+)\r\n/;
        my $len = $1;
        $off += length("\$$len\r\n");
        return () if length($$buf) < $off + $len + 2;
        push @a, substr($$buf, $off, $len);
        $off += $len + 2;
    }
    substr($$buf, 0, $off, '');
    return @a;
}

sub stage { note sprintf '%.1f s: %s', time - $t0, $_[0] }

# ---- a Redis with a password and db=2, and the relay's config ----------------

my $h = Imgbill::Harness->new(nginx => 0, mock => 0,
                              redis_password => $PW, redis_db => 2);
my $TCP = $h->redis_addr;
$h->redis('SET', "imgbill:{$ACCT}:balance", 123456);    # db 2: 12.3456

# the shipped config, its "site: redis" line as an operator writes one
# with a password and a db, over two lines, a decoy in a comment before it
my $shipped = slurp("$ROOT/conf.d/imgbill.conf");
my $site = "# was: imgbill_redis 127.0.0.1:1;\n"
         . "imgbill_redis $TCP    # site: redis\n"
         . "              password=$PW db=2;   # the relay's own Redis\n";
$shipped =~ s/^imgbill_redis [^\n]*# site: redis\n/$site/m
    or BAIL_OUT('conf.d/imgbill.conf has no "site: redis" line');
my $conf = spew("$tmp/imgbill.conf", $shipped);
my $line = do {
    my @l = split /\n/, $shipped;
    my ($i) = grep { $l[$_] =~ /^imgbill_redis / } 0 .. $#l;
    $i + 1;
};

# ---- (a) the directive of the relay's config ---------------------------------

stage('config file');
balance_ok('IMGBILL_CONF: imgbill_redis over two lines, password and db, '
           . 'no IMGBILL_REDIS', '12.3456', { env => { IMGBILL_CONF => $conf } });
balance_ok('--conf FILE before the command', '12.3456', '--conf', $conf);
{
    my ($rc, $out, $err) = cli('balance', $ACCT, "--conf=$conf");
    is "$rc $out", "0 12.3456\n", '--conf=FILE after the command' or diag $err;
}
{
    # quotes, and the directive on one line after another directive's end
    my $f = spew("$tmp/quoted.conf", "imgbill_redis_timeout 1s; imgbill_redis\n"
                 . "  \"$TCP\" 'password=$PW'\n  db=2 ;\n");
    balance_ok('a quoted address and password', '12.3456', '--conf', $f);
}
subtest 'a --conf without imgbill_redis' => sub {
    my $f = spew("$tmp/none.conf", "# imgbill_redis $TCP;\nimgbill_hold_ttl 15m;\n");
    my ($rc, $out, $err) = cli('--conf', $f, 'balance', $ACCT);
    is $rc, 1, 'exit 1';
    like $err, qr/no imgbill_redis in \Q$f\E/, 'saying so';
};
subtest 'a bad imgbill_redis' => sub {
    my $f = spew("$tmp/bad.conf", "imgbill_redis $TCP master=m;\n");
    my ($rc, $out, $err) = cli({ env => { IMGBILL_CONF => $f } }, 'balance', $ACCT);
    is $rc, 1, 'exit 1';
    like $err, qr/\Q$f\E line 1: imgbill_redis: .*not both/, 'saying where and why';
};
subtest 'an IMGBILL_CONF that does not exist' => sub {
    my ($rc, $out, $err) = cli({ env => { IMGBILL_CONF => "$tmp/missing.conf" } },
                               'balance', $ACCT);
    is $rc, 1, 'exit 1';
    like $err, qr/\Q$tmp\E\/missing\.conf \(from IMGBILL_CONF\)/, 'naming it';
};

# ---- (b) a unix socket ---------------------------------------------------------

stage('unix socket');
my $sock = "$tmp/r.sock";
spawn("$tmp/unix-redis.log", 'redis-server', '--port', '0', '--unixsocket', $sock,
      '--save', '', '--appendonly', 'no', '--dir', $tmp, '--daemonize', 'no');
my $ux = wait_for(sub {
    my $r = eval { ImgbillRedis->new(path => $sock, timeout => 1) } or return;
    (eval { $r->cmd('PING') } // '') eq 'PONG' ? $r : undef;
}, 10) or BAIL_OUT("redis-server on $sock did not start: " . slurp("$tmp/unix-redis.log"));
$ux->cmd('SET', "imgbill:{$ACCT}:balance", 70000);    # 7.0000
balance_ok('IMGBILL_REDIS=unix:/path', '7.0000',
           { env => { IMGBILL_REDIS => "unix:$sock" } });
balance_ok('--redis unix:/path', '7.0000', '--redis', "unix:$sock");
balance_ok('imgbill_redis unix:/path; in IMGBILL_CONF', '7.0000',
           { env => { IMGBILL_CONF => spew("$tmp/unix.conf",
                                           "imgbill_redis unix:$sock;\n") } });
{
    my ($rc, $out) = cli('--redis', "unix:$sock", 'topup', $ACCT, '1');
    is "$rc $out", "0 8.0000\n", 'a topup through the unix socket';
    is $ux->cmd('GET', "imgbill:{$ACCT}:balance"), 80000, '... in that Redis';
    ($rc, $out) = cli('--redis', "unix:$sock", 'topup', $ACCT, '1', '--reason', '-v');
    is "$rc $out", "0 9.0000\n", '"--reason -v": -v is the reason, not the option';
    my $l = $ux->cmd('XREVRANGE', "imgbill:{$ACCT}:ledger", '+', '-', 'COUNT', 1);
    is +(ref $l && $l->[0] ? {@{ $l->[0][1] }}->{reason} : undef), '-v',
        '... in the ledger';
}

# ---- (d) -v ---------------------------------------------------------------------

stage('-v');
subtest '-v with a config file' => sub {
    my ($rc, $out) = cli({ env => { IMGBILL_CONF => $conf }, merge => 1 },
                         '-v', 'balance', $ACCT);
    is $rc, 0, 'exit 0';
    like $out, qr/\Aimgbill: Redis \Q$TCP\E \(db 2\b[^\n]*\), from imgbill_redis in \Q$conf\E line $line\n12\.3456\n\z/,
        'the address, db and the file and line it came from, on stderr, '
        . 'before the output';
    unlike $out, qr/\Q$PW\E/, 'not the password';
};
subtest '-v after the command' => sub {
    my ($rc, $out, $err) = cli('balance', $ACCT, '-v', '--redis', "unix:$sock");
    is "$rc $out", "0 9.0000\n", 'the balance';
    like $err, qr/^imgbill: Redis unix:\Q$sock\E \(db 0\), from --redis$/m,
        'names the unix socket and --redis';
};
subtest '-v with IMGBILL_REDIS, IMGBILL_REDIS_PASSWORD and _DB (as before)' => sub {
    my ($rc, $out, $err) = cli({ env => { IMGBILL_REDIS => $TCP,
                                          IMGBILL_REDIS_PASSWORD => $PW,
                                          IMGBILL_REDIS_DB => 2 } },
                               '-v', 'balance', $ACCT);
    is "$rc $out", "0 12.3456\n", 'the balance';
    like $err, qr/Redis \Q$TCP\E \(db 2\b.*from IMGBILL_REDIS\b.*IMGBILL_REDIS_PASSWORD.*IMGBILL_REDIS_DB/,
        'says where each came from';
    unlike $err, qr/\Q$PW\E/, 'not the password';
};
subtest 'a wrong password' => sub {
    my ($rc, $out, $err) = cli('--redis', "$TCP password=wrong-$PW db=2",
                               'balance', $ACCT);
    is $rc, 1, 'exit 1';
    like $err, qr/AUTH at \Q$TCP\E.*--redis/, 'AUTH at the address, from --redis';
    unlike $err, qr/wrong-/, 'not the password given';
};

# ---- (e) precedence ---------------------------------------------------------

stage('precedence');
balance_ok('IMGBILL_REDIS beats IMGBILL_CONF', '9.0000',
           { env => { IMGBILL_REDIS => "unix:$sock", IMGBILL_CONF => $conf } });
balance_ok('--redis beats IMGBILL_REDIS', '12.3456',
           { env => { IMGBILL_REDIS => "unix:$sock" } },
           '--redis', "$TCP password=$PW db=2");
balance_ok('--conf beats IMGBILL_REDIS', '12.3456',
           { env => { IMGBILL_REDIS => "unix:$sock" } }, '--conf', $conf);
balance_ok('--redis beats IMGBILL_CONF', '9.0000',
           { env => { IMGBILL_CONF => $conf } }, '--redis', "unix:$sock");
balance_ok("a SPEC's own password and db beat IMGBILL_REDIS_PASSWORD and _DB",
           '12.3456', { env => { IMGBILL_REDIS => "$TCP password=$PW db=2",
                                 IMGBILL_REDIS_PASSWORD => 'other',
                                 IMGBILL_REDIS_DB => 5 } });
subtest '--redis and --conf together' => sub {
    my ($rc, $out, $err) = cli('--redis', $TCP, '--conf', $conf, 'balance', $ACCT);
    is $rc, 2, 'exit 2';
    like $err, qr/--redis and --conf exclude each other/, 'saying so';
};
subtest 'a bad --redis' => sub {
    my ($rc, $out, $err) = cli('--redis', "$TCP pasword=x", 'balance', $ACCT);
    is $rc, 2, 'exit 2';
    like $err, qr/invalid parameter "pasword=\.\.\."/, 'naming the parameter, not its value';
    ($rc, $out, $err) = cli('--redis', '127.0.0.1', 'balance', $ACCT);
    is $rc, 2, 'no port: exit 2';
    like $err, qr/names no port: write "127\.0\.0\.1:6379"/, 'as nginx -t says it';
    ($rc, $out, $err) = cli('balance', $ACCT, '--redis');
    is $rc, 2, 'no SPEC: exit 2';
    like $err, qr/--redis needs a value/, 'saying so';
};

# ---- (f) an address where no Redis is ------------------------------------------

stage('wrong addresses');
my $dead = '127.0.0.1:' . free_port();
subtest 'IMGBILL_REDIS where no Redis is' => sub {
    my ($rc, $out, $err) = cli({ env => { IMGBILL_REDIS => $dead } }, 'balance', $ACCT);
    is $rc, 1, 'exit 1';
    is $out, '', 'nothing on stdout';
    like $err, qr/cannot connect to \Q$dead\E\b.*IMGBILL_REDIS/,
        'naming the address and IMGBILL_REDIS';
};
subtest 'a config file naming an address where no Redis is' => sub {
    my $f = spew("$tmp/dead.conf", "http {\n    imgbill_redis $dead\n        password=$PW;\n}\n");
    my ($rc, $out, $err) = cli('--conf', $f, 'balance', $ACCT);
    is $rc, 1, 'exit 1';
    like $err, qr/cannot connect to \Q$dead\E\b.*imgbill_redis in \Q$f\E line 2\b/,
        'naming the address, the file and the line';
    unlike $err, qr/\Q$PW\E/, 'not the password';
};
subtest 'a unix socket that is not there' => sub {
    my ($rc, $out, $err) = cli('--redis', "unix:$tmp/nothing.sock", 'balance', $ACCT);
    is $rc, 1, 'exit 1';
    like $err, qr/unix:\Q$tmp\E\/nothing\.sock\b.*--redis/, 'naming it and --redis';
};

# ---- (c) Sentinels -------------------------------------------------------------

stage('Sentinels');
require Imgbill::Sentinel;
my $s = Imgbill::Sentinel->new(name => 'imgbill82');
my $master = $s->master;
my @sp = $s->sentinel_ports;
$s->redis->cmd('SET', "imgbill:{$ACCT}:balance", 55000);    # 5.5000
my $replica = do {
    my $info = $s->redis($master)->cmd('INFO', 'replication');
    my ($port) = $info =~ /^slave0:ip=[^,]+,port=(\d+)/m or die "no replica:\n$info";
    "127.0.0.1:$port";
};
stage("Sentinels up: master $master, replica $replica");
{
    my $dead = free_port();
    my $f = spew("$tmp/sentinel.conf",
                 "# Redis that fails over\n"
                 . "imgbill_redis sentinel=127.0.0.1:$dead    # down\n"
                 . join('', map { "              sentinel=127.0.0.1:$_\n" } @sp)
                 . "              master=imgbill82;\n");
    my ($rc, $out, $err) = cli({ env => { IMGBILL_CONF => $f } }, '-v', 'balance', $ACCT);
    is "$rc $out", "0 5.5000\n", 'Sentinels and master= in IMGBILL_CONF, the first '
        . 'Sentinel down' or diag $err;
    like $err, qr/^imgbill: Redis master imgbill82 at \Q$master\E \(db 0\) via Sentinel 127\.0\.0\.1:$sp[0], from imgbill_redis in \Q$f\E line 2$/m,
        '-v: the master, its address, the Sentinel that named it, the file and line';
    ($rc, $out) = cli('--redis', "sentinel=127.0.0.1:$sp[1] master=imgbill82",
                      'topup', $ACCT, '0.5');
    is "$rc $out", "0 6.0000\n", 'a topup through --redis sentinel=... master=...';
    is $s->redis($master)->cmd('GET', "imgbill:{$ACCT}:balance"), 60000, '... on the master';

    # a Sentinel that names the replica is passed over (ROLE is not
    # master); sentinel_password is what the Sentinels are sent
    my $liar = fake_sentinel($replica, "$tmp/liar.log");
    my $honest = fake_sentinel($master, "$tmp/honest.log");
    ($rc, $out, $err) = cli({ env => { IMGBILL_REDIS =>
                                "sentinel=$liar sentinel=$honest master=imgbill82 "
                                . "sentinel_password=$SPW" } },
                            '-v', 'topup', $ACCT, '0.5');
    is "$rc $out", "0 6.5000\n", 'a Sentinel naming the replica is passed over for the next'
        or diag $err;
    ok $err =~ /at \Q$master\E \(db 0\) via Sentinel \Q$honest\E, from IMGBILL_REDIS$/m
       && $err !~ /\Q$SPW\E/,
        '... -v names the master and the Sentinel that named it, not the Sentinel password'
        or diag $err;
    like slurp("$tmp/liar.log"), qr/^AUTH \Q$SPW\E\nSENTINEL get-master-addr-by-name imgbill82$/m,
        'the Sentinel was sent AUTH sentinel_password, then asked for the master';

    ($rc, $out, $err) = cli('--redis', "sentinel=$liar master=imgbill82 "
                            . "sentinel_password=$SPW", 'balance', $ACCT);
    is $rc, 1, 'only a Sentinel naming a replica: exit 1';
    like $err, qr/\Q$liar\E named \Q$replica\E, whose ROLE is slave, not master.*--redis/,
        '... saying what it named and why that was refused';
    ($rc, $out, $err) = cli('--redis', "sentinel=127.0.0.1:$sp[0] master=nosuch",
                            'balance', $ACCT);
    is $rc, 1, 'a master name the Sentinels do not know: exit 1';
    like $err, qr/127\.0\.0\.1:$sp[0]\b.*does not know the master "nosuch".*--redis/,
        '... saying so';
}

unlike join('', @printed), qr/\Q$PW\E|\Q$SPW\E/, 'the CLI never printed a password';

undef $s;
stop_all();
stage('done');
done_testing;
