package ImgbillRedis;

# A tiny RESP2 Redis client in pure core Perl, for the imgbill operator CLI
# and the test harness.
#
#   my $r = ImgbillRedis->new(host => '127.0.0.1', port => 6379,
#                             timeout => 5,            # seconds, default 5
#                             password => 'pw',        # optional: AUTH
#                             db => 2);                # optional: SELECT
#   my $v = $r->cmd('GET', 'imgbill:{alice}:balance');
#
# Replies are decoded as:
#   status (+OK)        -> the status string ("OK", "PONG", ...)
#   integer (:n)        -> the integer, as a Perl scalar
#   bulk string ($n)    -> the string; a nil bulk ($-1) -> undef
#   array (*n)          -> an array ref of decoded elements; a nil array -> undef
#   error (-ERR ...)    -> cmd() DIES with the error text followed by "\n",
#                          e.g. "WRONGTYPE Operation against a key ...\n";
#                          also for an error inside an array (cmd_each()
#                          returns such an array, the error as "-TEXT").
#
# Connection problems (refused, timeout, closed mid-reply) also die, with a
# message starting "imgbill-redis: ".  Use eval { } to tell them apart:
#   my $v = eval { $r->cmd(...) };
#   if (!defined $v && $@) { ... }
#
# The client never reconnects: once an I/O error happened the object is dead
# and every later cmd() dies.  Make a new object to try again.
#
# Arguments are sent as binary-safe bulk strings (bytes; character strings
# are UTF-8 encoded first).

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Time::HiRes ();

our $VERSION = '1.0';

sub new {
    my ($class, %opt) = @_;

    my $host    = defined $opt{host} ? $opt{host} : '127.0.0.1';
    my $port    = defined $opt{port} ? $opt{port} : 6379;
    my $timeout = defined $opt{timeout} ? $opt{timeout} : 5;

    my $sock = IO::Socket::INET->new(
        PeerAddr => $host,
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => $timeout,
    ) or die "imgbill-redis: cannot connect to $host:$port: "
             . ($@ || $!) . "\n";

    binmode $sock;
    setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);

    my $self = bless {
        host    => $host,
        port    => $port,
        timeout => $timeout,
        sock    => $sock,
        buf     => '',
    }, $class;

    $self->cmd('AUTH', $opt{password})
        if defined $opt{password} && length $opt{password};
    $self->cmd('SELECT', $opt{db}) if defined $opt{db} && $opt{db} ne '0';
    return $self;
}

# new_from_spec("host:port") -- convenience for IMGBILL_REDIS style strings
sub new_from_spec {
    my ($class, $spec, %opt) = @_;
    $spec = '127.0.0.1:6379' unless defined $spec && length $spec;
    my ($host, $port) = $spec =~ /^\[?([^\]]*?)\]?:(\d+)$/
        or die "imgbill-redis: bad address \"$spec\" (want host:port)\n";
    return $class->new(host => $host, port => $port, %opt);
}

sub close {
    my ($self) = @_;
    if ($self->{sock}) {
        $self->{sock}->close;
        $self->{sock} = undef;
    }
    return;
}

sub DESTROY { $_[0]->close }

sub _fail {
    my ($self, $msg) = @_;
    $self->close;
    die "imgbill-redis: $msg\n";
}

sub _encode {
    my @args = @_;
    my $out = '*' . scalar(@args) . "\r\n";
    for my $a (@args) {
        $a = '' unless defined $a;
        if (utf8::is_utf8($a)) {
            $a = "$a";
            utf8::encode($a);
        }
        $out .= '$' . length($a) . "\r\n" . $a . "\r\n";
    }
    return $out;
}

sub _write {
    my ($self, $data) = @_;
    my $sock = $self->{sock} or $self->_fail('connection is closed');
    my $sel = IO::Select->new($sock);
    my $off = 0;
    my $deadline = Time::HiRes::time() + $self->{timeout};

    local $SIG{PIPE} = 'IGNORE';

    while ($off < length $data) {
        my $left = $deadline - Time::HiRes::time();
        $self->_fail('write timeout') if $left <= 0;
        next unless $sel->can_write($left);
        my $n = syswrite($sock, $data, length($data) - $off, $off);
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
            $self->_fail("write failed: $!");
        }
        $off += $n;
    }
    return;
}

# make sure at least $want bytes are buffered
sub _fill {
    my ($self, $want) = @_;
    my $sock = $self->{sock} or $self->_fail('connection is closed');
    my $sel = IO::Select->new($sock);
    my $deadline = Time::HiRes::time() + $self->{timeout};

    while (length($self->{buf}) < $want) {
        my $left = $deadline - Time::HiRes::time();
        $self->_fail('read timeout') if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($sock, $self->{buf}, 65536, length $self->{buf});
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
            $self->_fail("read failed: $!");
        }
        $self->_fail('connection closed by server') if $n == 0;
    }
    return;
}

sub _line {
    my ($self) = @_;
    my $i;
    while (($i = index($self->{buf}, "\r\n")) < 0) {
        $self->_fill(length($self->{buf}) + 1);
    }
    my $line = substr($self->{buf}, 0, $i);
    substr($self->{buf}, 0, $i + 2, '');
    return $line;
}

# returns (value, error-text-or-undef); errors nested in arrays die at once
sub _reply {
    my ($self) = @_;
    my $line = $self->_line;
    my $t = substr($line, 0, 1);
    my $rest = substr($line, 1);

    if ($t eq '+') {
        return ($rest, undef);
    }
    if ($t eq '-') {
        return (undef, $rest);
    }
    if ($t eq ':') {
        $self->_fail("bad integer reply \"$rest\"") unless $rest =~ /^-?\d+$/;
        return ($rest + 0, undef) if length($rest) < 16;
        return ($rest, undef);    # keep big integers exact as strings
    }
    if ($t eq '$') {
        $self->_fail("bad bulk length \"$rest\"") unless $rest =~ /^-?\d+$/;
        return (undef, undef) if $rest < 0;
        $self->_fill($rest + 2);
        my $s = substr($self->{buf}, 0, $rest);
        substr($self->{buf}, 0, $rest + 2, '');
        return ($s, undef);
    }
    if ($t eq '*') {
        $self->_fail("bad array length \"$rest\"") unless $rest =~ /^-?\d+$/;
        return (undef, undef) if $rest < 0;
        my @a;
        my $err;
        for (1 .. $rest) {
            my ($v, $e) = $self->_reply;
            $err = $e if defined $e && !defined $err;
            push @a, defined $e ? "-$e" : $v;
        }
        return (\@a, $err);
    }
    $self->_fail("protocol error: unexpected reply \"$line\"");
}

sub cmd {
    my ($self, @args) = @_;
    die "imgbill-redis: cmd() needs a command\n" unless @args;
    $self->_write(_encode(@args));
    my ($v, $err) = $self->_reply;
    die "$err\n" if defined $err;
    return $v;
}

# cmd_each(@args): as cmd(), but an array reply whose elements are errors
# (a script's batch of results) is returned whole, each error as "-TEXT";
# only an error reply of the whole command dies.
sub cmd_each {
    my ($self, @args) = @_;
    die "imgbill-redis: cmd_each() needs a command\n" unless @args;
    $self->_write(_encode(@args));
    my ($v, $err) = $self->_reply;
    die "$err\n" if defined $err && !ref $v;
    return $v;
}

1;
