# A fake Redis for the tests that must say what Redis answers, or when.
#
# Imgbill::FakeRedis->start(port => $p, answer => sub { ... }) forks a
# server on 127.0.0.1:$p that speaks RESP to any number of connections.
# A connection's setup (CLIENT ...) is answered as Redis would; every other
# call goes to answer(@args), which returns the reply's bytes, or undef to
# hold it: a held call, and the calls behind it on its connection, are
# asked again every 20 ms, while the fake goes on reading what arrives.
# seen(@args), if given, is told of each call once, as it arrives.
# stop() (or the object going away) ends the server.
#
# functions(@args) -> the script's function numbers of an EVALSHA or EVAL
# call, one per command it carries (ngx_http_imgbill_batch.c's layout:
# EVALSHA sha nkeys keys... then per command its number, key count and
# argument count before its arguments); () for any other command.
package Imgbill::FakeRedis;

use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use POSIX qw(_exit);

sub functions {
    my @args = @_;
    return () unless uc $args[0] eq 'EVALSHA' || uc $args[0] eq 'EVAL';
    my ($i, @f) = (3 + $args[2]);
    while ($i + 2 < @args) {
        push @f, $args[$i];
        $i += 3 + $args[$i + 2];
    }
    return @f;
}

# the whole RESP arrays of bulk strings at the head of $$buf, taken off it
sub calls_in {
    my ($buf) = @_;
    my @calls;
    while ($$buf =~ /^\*(\d+)\r\n/) {
        my ($n, $pos, @args) = ($1, length "*$1\r\n");
        for (1 .. $n) {
            return @calls unless substr($$buf, $pos) =~ /^\$(\d+)\r\n/;
            $pos += length("\$$1\r\n") + $1 + 2;
            return @calls if $pos > length $$buf;
            push @args, substr($$buf, $pos - $1 - 2, $1);
        }
        substr($$buf, 0, $pos, '');
        push @calls, \@args;
    }
    return @calls;
}

sub start {
    my ($class, %o) = @_;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => $o{port}, Listen => 16,
                                    ReuseAddr => 1)
        or die "fake redis: listen on $o{port}: $!";
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $srv;
        return bless { pid => $pid, parent => $$ }, $class;
    }

    my $sel = IO::Select->new($srv);
    my %conn;                          # fileno -> { sock, buf, held }
    while (1) {
        for my $s ($sel->can_read(0.02)) {
            if ($s == $srv) {
                my $c = $srv->accept or next;
                $sel->add($c);
                $conn{fileno $c} = { sock => $c, buf => '', held => [] };
                next;
            }
            my $c = $conn{fileno $s};
            my $n = sysread($s, $c->{buf}, 65536, length $c->{buf});
            if (!$n) {
                $sel->remove($s);
                delete $conn{fileno $s};
                close $s;
                next;
            }
            my @calls = calls_in(\$c->{buf});
            if ($o{seen}) { $o{seen}->(@$_) for @calls }
            push @{ $c->{held} }, @calls;
        }
        for my $c (values %conn) {
            while (my $args = $c->{held}[0]) {
                my $reply = uc $args->[0] eq 'CLIENT' ? "+OK\r\n"
                          : $o{answer}->(@$args);
                last unless defined $reply;
                shift @{ $c->{held} };
                syswrite($c->{sock}, $reply);
            }
        }
    }
    _exit(0);
}

# only by the process that started it: not by a test's forked client
sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $$ == $self->{parent};
    kill 'TERM', $self->{pid};
    waitpid($self->{pid}, 0);
    $self->{pid} = undef;
}

sub DESTROY { $_[0]->stop }

1;
