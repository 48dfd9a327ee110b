package Imgbill::Sentinel;

# A replicated Redis watched by Sentinels, on loopback, for the failover
# tests: a primary, its replicas and three Sentinels (redis-server
# --sentinel: Debian's redis-server package has the mode; redis-sentinel is
# a wrapper), with short down-after and failover timeouts so that a
# failover takes a few seconds.  Everything is torn down when the object
# goes away.
#
#   use Imgbill::Sentinel;
#   my $s = Imgbill::Sentinel->new(name => 'imgbill',
#                                  replicas => 1,   # the default
#                                  min_replicas_to_write => 0);
#                            # N > 0: every server (a restarted one too)
#                            #   runs with min-replicas-to-write N and
#                            #   min-replicas-max-lag 10
#   $s->directive            # "sentinel=127.0.0.1:P1 sentinel=... master=imgbill"
#   $s->master               # "127.0.0.1:PORT", as the Sentinels say now
#   $s->redis($addr)         # an ImgbillRedis on that server (default: master)
#   $s->kill_master          # kill -9 the primary; returns its address
#   $s->kill_server($addr)   # kill -9 that server (a replica, say)
#   $s->servers              # the Redis servers running, not the Sentinels
#   $s->replicas($addr)      # the addresses of the online replicas of
#                            #   $addr (default: the master)
#   $s->clients($addr)       # its CLIENT LIST, one hash per client
#                            #   ({id, name, cmd, flags, ...}); default:
#                            #   the master
#   $s->restart($addr, $master)  # the killed server again (empty), as a
#                            #   replica of $master (without: as a master,
#                            #   which the Sentinels turn into a replica)
#   $s->wait_master($not, $timeout)  # the master's address once it is not
#                            #   $not and says ROLE master, or undef
#   $s->wait_replicas($n, $timeout)  # true once the master has $n replicas
#                            #   online
#   $s->log($addr)           # a server's log
#
# Addresses are always 127.0.0.1.

use strict;
use warnings;
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Imgbill::Harness qw(free_port port_open wait_for);
use ImgbillRedis;

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        name  => $o{name} // 'imgbill',
        owner => $$,
        dir   => tempdir('ibs-XXXXXXXX', TMPDIR => 1, CLEANUP => 0),
        pids  => {},
        replicas => $o{replicas} // 1,
        min_replicas => $o{min_replicas_to_write} // 0,
    }, $class;

    my $primary = free_port();
    $self->_server($primary);
    my @replicas = map { free_port() } 1 .. $self->{replicas};
    $self->_server($_, "127.0.0.1 $primary") for @replicas;
    wait_for(sub { $self->_online_replicas($primary) >= @replicas }, 20)
        or die "the replicas did not sync:\n"
               . join '', map { $self->log("127.0.0.1:$_") } @replicas;

    for (1 .. 3) {
        my $port = free_port();
        push @{ $self->{sentinels} }, $port;
        $self->_sentinel($port, $primary);
    }
    # every Sentinel sees the replica and the other Sentinels: ready to
    # fail over
    wait_for(sub {
        for my $p (@{ $self->{sentinels} }) {
            my $m = eval {
                my $r = ImgbillRedis->new(port => $p, timeout => 1);
                my $a = $r->cmd('SENTINEL', 'master', $self->{name});
                +{ @$a };
            } or return 0;
            return 0 unless ($m->{'num-slaves'} // 0) >= $self->{replicas}
                         && ($m->{'num-other-sentinels'} // 0) >= 2;
        }
        1;
    }, 30) or die "the Sentinels did not settle:\n"
                  . join '', map { $self->log("sentinel:$_") } @{ $self->{sentinels} };
    return $self;
}

sub dir { $_[0]{dir} }

sub directive {
    my ($self) = @_;
    return join ' ', (map { "sentinel=127.0.0.1:$_" } @{ $self->{sentinels} }),
        "master=$self->{name}";
}

sub sentinel_ports { @{ $_[0]{sentinels} } }

# the master's address as the first Sentinel that answers says
sub master {
    my ($self) = @_;
    for my $p (@{ $self->{sentinels} }) {
        my $a = eval {
            ImgbillRedis->new(port => $p, timeout => 1)
                ->cmd('SENTINEL', 'get-master-addr-by-name', $self->{name});
        };
        return "$a->[0]:$a->[1]" if $a && @$a == 2;
    }
    return undef;
}

sub redis {
    my ($self, $addr) = @_;
    $addr //= $self->master // die "no master known to the Sentinels\n";
    my ($host, $port) = split /:/, $addr;
    return ImgbillRedis->new(host => $host, port => $port, timeout => 5);
}

sub role {
    my ($self, $addr) = @_;
    my $r = eval { $self->redis($addr)->cmd('ROLE') };
    return $r ? $r->[0] : '';
}

sub kill_master {
    my ($self) = @_;
    my $addr = $self->master // die "no master to kill\n";
    return $self->kill_server($addr);
}

sub kill_server {
    my ($self, $addr) = @_;
    my ($port) = $addr =~ /:(\d+)$/;
    die "$addr is a Sentinel\n" if grep { $_ == $port } @{ $self->{sentinels} };
    my $pid = delete $self->{pids}{$port} or die "$addr is not ours\n";
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return $addr;
}

# the Redis servers still running (not the Sentinels), as addresses
sub servers {
    my ($self) = @_;
    my %sentinel = map { $_ => 1 } @{ $self->{sentinels} || [] };
    return map { "127.0.0.1:$_" } sort grep { !$sentinel{$_} } keys %{ $self->{pids} };
}

sub replicas {
    my ($self, $addr) = @_;
    $addr //= $self->master // return ();
    my $info = eval { $self->redis($addr)->cmd('INFO', 'replication') } // '';
    return map { "127.0.0.1:$_" }
           $info =~ /^slave\d+:ip=[^,]+,port=(\d+),state=online/mg;
}

sub clients {
    my ($self, $addr) = @_;
    my $list = $self->redis($addr)->cmd('CLIENT', 'LIST') // '';
    return map { +{ /(\S+?)=(\S*)/g } } split /\r?\n/, $list;
}

sub restart {
    my ($self, $addr, $master) = @_;
    my ($port) = $addr =~ /:(\d+)$/;
    # empty, as a new machine would be; a replica of $master from the
    # start if given (the Sentinels would convert it, but only after it
    # has claimed to be a master for some 8 s)
    remove_tree("$self->{dir}/$port");
    $self->_server($port, $master ? join(' ', split /:/, $master) : undef);
}

sub wait_master {
    my ($self, $not, $timeout) = @_;
    my $m;
    wait_for(sub {
        $m = $self->master;
        $m && (!defined $not || $m ne $not) && $self->role($m) eq 'master';
    }, $timeout // 30, 0.2) or return undef;
    return $m;
}

sub wait_replicas {
    my ($self, $n, $timeout) = @_;
    return wait_for(sub {
        my $m = $self->master or return 0;
        my ($port) = $m =~ /:(\d+)$/;
        $self->_online_replicas($port) >= $n;
    }, $timeout // 30, 0.2);
}

sub log {
    my ($self, $what) = @_;
    my ($port) = $what =~ /:(\d+)$/;
    my $f = "$self->{dir}/$port.log";
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh>;
}

sub _online_replicas {
    my ($self, $port) = @_;
    my $info = eval {
        ImgbillRedis->new(port => $port, timeout => 1)->cmd('INFO', 'replication');
    } // '';
    my @online = $info =~ /^slave\d+:.*state=online/mg;
    return scalar @online;
}

sub _spawn {
    my ($self, $port, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/$port.log";
        open STDERR, '>&', \*STDOUT;
        setpgrp(0, 0);
        exec @cmd or POSIX::_exit(127);
    }
    $self->{pids}{$port} = $pid;
    wait_for(sub { port_open($port) }, 10)
        or die "@cmd did not start:\n" . $self->log(":$port");
}

sub _server {
    my ($self, $port, $replicaof) = @_;
    my $d = "$self->{dir}/$port";
    make_path($d);
    $self->_spawn($port, 'redis-server', '--port', $port,
                  '--bind', '127.0.0.1', '--dir', $d, '--save', '',
                  '--appendonly', 'no', '--daemonize', 'no',
                  # a replica syncs at once, not after the default 5 s
                  '--repl-diskless-sync-delay', '0',
                  # Sentinel must be able to send REPLICAOF, CONFIG REWRITE
                  '--protected-mode', 'no',
                  ($self->{min_replicas}
                      ? ('--min-replicas-to-write', $self->{min_replicas},
                         '--min-replicas-max-lag', 10)
                      : ()),
                  ($replicaof ? ('--replicaof', split / /, $replicaof) : ()));
}

sub _sentinel {
    my ($self, $port, $primary) = @_;
    my $conf = "$self->{dir}/sentinel-$port.conf";
    open my $fh, '>', $conf or die "$conf: $!";
    print $fh <<"EOC";
port $port
bind 127.0.0.1
protected-mode no
dir $self->{dir}
sentinel monitor $self->{name} 127.0.0.1 $primary 2
sentinel down-after-milliseconds $self->{name} 1000
sentinel failover-timeout $self->{name} 6000
sentinel parallel-syncs $self->{name} 1
EOC
    close $fh;
    $self->_spawn($port, 'redis-server', $conf, '--sentinel');
}

sub DESTROY {
    my ($self) = @_;
    return if $self->{owner} != $$;
    for my $pid (values %{ $self->{pids} }) {
        kill 'TERM', $pid;
    }
    for my $pid (values %{ $self->{pids} }) {
        my $until = time + 5;
        while (time < $until && waitpid($pid, WNOHANG) == 0) {
            sleep 0.02;
        }
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    $self->{pids} = {};
    remove_tree($self->{dir}) unless $ENV{IMGBILL_KEEP};
}

1;
