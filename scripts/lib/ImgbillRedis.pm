package ImgbillRedis;

# A tiny RESP2 Redis client in pure core Perl, for the imgbill operator CLI
# and the test harness.
#
#   my $r = ImgbillRedis->new(host => '127.0.0.1', port => 6379,
#                             timeout => 5,            # seconds, default 5
#                             password => 'pw',        # optional: AUTH
#                             db => 2);                # optional: SELECT
#   my $r = ImgbillRedis->new(path => '/run/redis/redis.sock', ...);
#                                                      # a unix socket
#   my $v = $r->cmd('GET', 'imgbill:{alice}:balance');
#
# Where Redis is, in the module's own terms (imgbill_redis's arguments):
#
#   my $c = ImgbillRedis->parse_spec('127.0.0.1:6390 password=pw db=2');
#   my $c = ImgbillRedis->parse_spec('unix:/run/redis/redis.sock');
#   my $c = ImgbillRedis->parse_spec(qw(sentinel=10.0.0.1 sentinel=10.0.0.2:26380
#                                       master=imgbill sentinel_password=spw));
#       -> { host, port } or { path } or { sentinels => [[host, port], ...],
#          master }, and password, sentinel_password, db where given.  A
#          Redis address names its port; a Sentinel without one is on
#          26379, and is never a unix socket.  Dies "imgbill-redis: ..." as
#          "nginx -t" would refuse the directive (never showing a value
#          given as NAME=VALUE: it may be a password).
#   my $r = ImgbillRedis->connect_spec($c, timeout => 5);
#       a plain address: new(); Sentinels: new_sentinel().
#   my $r = ImgbillRedis->new_sentinel(sentinels => [[host, port], ...],
#                                      master => 'imgbill',
#                                      sentinel_password => 'spw',
#                                      password => 'pw', db => 2, timeout => 5);
#       asks each Sentinel in turn (AUTH sentinel_password first if given)
#       "SENTINEL get-master-addr-by-name NAME", connects to what it names
#       (AUTH, SELECT as new()), and keeps it once ROLE says "master";
#       else the next Sentinel.  None: dies naming what each one did.
#       $r->sentinel is the Sentinel that answered ("host:port").
#   $r->addr       "host:port", "[v6]:port" or "unix:/path": where it is
#   ImgbillRedis->addr_string($host, $port) or ->addr_string(undef, undef, $path)
#   new_from_spec($string, %opt): parse_spec + connect_spec; %opt's
#       password and db fill in what the string does not give.
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
# Connection problems (refused, timeout, closed mid-reply, and AUTH or
# SELECT refused while connecting) also die, with a message starting
# "imgbill-redis: " that names the address.  Use eval { } to tell them apart:
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
use IO::Socket::IP;
use IO::Socket::UNIX;
use IO::Select;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Time::HiRes ();

our $VERSION = '1.0';

sub new {
    my ($class, %opt) = @_;

    my $timeout = defined $opt{timeout} ? $opt{timeout} : 5;
    my ($host, $port, $path, $sock);

    if (defined $opt{path}) {
        $path = $opt{path};
        $sock = IO::Socket::UNIX->new(Peer => $path, Timeout => $timeout)
            or die "imgbill-redis: cannot connect to unix:$path: "
                   . ($! || $@) . "\n";
    } else {
        $host = defined $opt{host} ? $opt{host} : '127.0.0.1';
        $port = defined $opt{port} ? $opt{port} : 6379;
        $sock = IO::Socket::IP->new(
            PeerHost => $host,
            PeerPort => $port,
            Proto    => 'tcp',
            Timeout  => $timeout,
        ) or die "imgbill-redis: cannot connect to "
                 . _addr($host, $port) . ": "
                 . ($@ || $!) . "\n";
    }

    binmode $sock;
    setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1) unless defined $path;

    my $self = bless {
        host    => $host,
        port    => $port,
        path    => $path,
        timeout => $timeout,
        sock    => $sock,
        buf     => '',
    }, $class;

    $self->_setup('AUTH', $opt{password})
        if defined $opt{password} && length $opt{password};
    $self->_setup('SELECT', $opt{db}) if defined $opt{db} && $opt{db} ne '0';
    return $self;
}

# AUTH or SELECT while connecting: its failure names the address (never
# the password)
sub _setup {
    my ($self, @cmd) = @_;
    return if eval { $self->cmd(@cmd); 1 };
    (my $e = $@) =~ s/\n\z//;
    $e =~ s/^imgbill-redis: //;
    $self->close;
    die "imgbill-redis: $cmd[0] at " . $self->addr . " failed: $e\n";
}

# "host:port", "[v6]:port" or "unix:/path"
sub _addr {
    my ($host, $port, $path) = @_;
    return "unix:$path" if defined $path;
    return ($host =~ /:/ ? "[$host]" : $host) . ":$port";
}

sub addr_string { my $class = shift; return _addr(@_) }

sub addr {
    my ($self) = @_;
    return _addr(@$self{qw(host port path)});
}

sub sentinel { $_[0]{sentinel} }

# an address as ngx_parse_url takes it: "unix:/path" (where allowed),
# "[v6]:port", "[v6]", "host:port", "host"; -> (host, port) or (undef,
# undef, path)
sub _parse_addr {
    my ($s, $default_port, $unix_ok, $what) = @_;
    if ($s =~ /^unix:/) {
        die "imgbill-redis: invalid $what \"$s\": a Sentinel is asked "
            . "over TCP, not a unix socket\n"
            unless $unix_ok;
        my ($path) = $s =~ /^unix:(.+)\z/s
            or die "imgbill-redis: invalid $what \"$s\": no socket path\n";
        return (undef, undef, $path);
    }
    my ($host, $port);
    if ($s =~ /^\[([0-9A-Fa-f:.]+)\](?::(\d+))?\z/) {
        ($host, $port) = ($1, $2);
    } elsif ($s =~ /^([^:\s\[\]\/]+)(?::(\d+))?\z/) {
        ($host, $port) = ($1, $2);
    } else {
        die "imgbill-redis: invalid $what \"$s\" (want host:port"
            . ($unix_ok ? ' or unix:/path' : '') . ")\n";
    }
    # Redis's own port is a guess that may reach another Redis (as the
    # module, "nginx -t" refuses it); a Sentinel's is 26379
    die "imgbill-redis: \"$s\" names no port: write \"$s:$default_port\" "
        . "(or \"unix:/path\")\n" if $unix_ok && !defined $port;
    $port = $default_port unless defined $port;
    die "imgbill-redis: invalid $what \"$s\": bad port\n"
        unless $port =~ /^\d{1,5}\z/ && $port >= 1 && $port <= 65535;
    return ($host, $port + 0);
}


sub parse_spec {
    my ($class, @args) = @_;
    @args = split ' ', (defined $args[0] ? $args[0] : '') if @args == 1;
    my %c;
    my $n = 0;
    for my $a (@args) {
        $n++;
        if ($a =~ /^sentinel=(.*)\z/s) {
            my ($h, $p) = _parse_addr($1, 26379, 0, 'Sentinel address');
            push @{ $c{sentinels} }, [$h, $p];
        } elsif ($a =~ /^master=(.*)\z/s) {
            die "imgbill-redis: names one \"master=NAME\"\n"
                if defined $c{master} || !length $1;
            $c{master} = $1;
        } elsif ($a =~ /^password=(.+)\z/s) {
            $c{password} = $1;
        } elsif ($a =~ /^sentinel_password=(.+)\z/s) {
            $c{sentinel_password} = $1;
        } elsif ($a =~ /^db=(.*)\z/s) {
            my $db = $1;
            die "imgbill-redis: invalid db \"$a\"\n" unless $db =~ /^\d{1,9}\z/;
            $c{db} = $db + 0;
        } elsif (!defined $c{host} && !defined $c{path} && $a !~ /=/) {
            my ($h, $p, $path) = _parse_addr($a, 6379, 1, 'address');
            if (defined $path) { $c{path} = $path } else { @c{qw(host port)} = ($h, $p) }
        } elsif ($a =~ /^([^=]*=)/) {
            # what a NAME=VALUE shows of itself: its NAME (the value may
            # be a password)
            die "imgbill-redis: invalid parameter \"$1...\"\n";
        } else {
            # nor a bare word: it may be part of a password cut at a blank
            die "imgbill-redis: word $n is neither NAME=VALUE nor the only "
                . "address (a value with blanks is quoted whole: "
                . "\"password=a b\")\n";
        }
    }
    my $addr = defined $c{host} || defined $c{path};
    die "imgbill-redis: takes either the address of redis or \"sentinel=\" "
        . "and \"master=\", not both\n" if $addr && ($c{sentinels} || defined $c{master});
    die "imgbill-redis: \"sentinel=\" needs \"master=NAME\": the name the "
        . "Sentinels monitor\n" if $c{sentinels} && !defined $c{master};
    die "imgbill-redis: \"master=\" needs at least one \"sentinel=ADDRESS\" "
        . "to ask\n" if defined $c{master} && !$c{sentinels};
    die "imgbill-redis: needs the address of redis, or \"sentinel=\" and "
        . "\"master=\"\n" unless $addr || $c{sentinels};
    return \%c;
}

sub connect_spec {
    my ($class, $c, %opt) = @_;
    my %common = (timeout => $opt{timeout}, password => $c->{password},
                  db => $c->{db});
    if ($c->{sentinels}) {
        return $class->new_sentinel(%common, sentinels => $c->{sentinels},
                                    master => $c->{master},
                                    sentinel_password => $c->{sentinel_password});
    }
    return $class->new(%common, path => $c->{path}) if defined $c->{path};
    return $class->new(%common, host => $c->{host}, port => $c->{port});
}

sub new_sentinel {
    my ($class, %opt) = @_;
    my $name = $opt{master};
    my @why;
    for my $s (@{ $opt{sentinels} }) {
        my $sa = _addr(@$s);
        my $m = eval {
            my $sr = $class->new(host => $s->[0], port => $s->[1],
                                 timeout => $opt{timeout},
                                 password => $opt{sentinel_password});
            my $a = $sr->cmd('SENTINEL', 'get-master-addr-by-name', $name);
            $sr->close;
            die "does not know the master \"$name\"\n"
                unless ref $a eq 'ARRAY' && @$a == 2
                       && defined $a->[0] && defined $a->[1]
                       && $a->[1] =~ /^\d+\z/;
            $a;
        };
        if (!$m) {
            (my $e = $@) =~ s/\n\z//;
            $e =~ s/^imgbill-redis: //;
            push @why, "Sentinel $sa: $e";
            next;
        }
        my $ma = _addr(@$m);
        my $r = eval {
            $class->new(host => $m->[0], port => $m->[1],
                        timeout => $opt{timeout}, password => $opt{password},
                        db => $opt{db});
        };
        my $role = $r && eval { $r->cmd('ROLE') };
        if (!$role) {
            (my $e = $@) =~ s/\n\z//;
            $e =~ s/^imgbill-redis: //;
            push @why, "Sentinel $sa named $ma: $e";
            next;
        }
        if (ref $role ne 'ARRAY' || ($role->[0] // '') ne 'master') {
            push @why, "Sentinel $sa named $ma, whose ROLE is "
                . (ref $role eq 'ARRAY' ? $role->[0] // '?' : $role)
                . ', not master';
            $r->close;
            next;
        }
        $r->{sentinel} = $sa;
        $r->{master_name} = $name;
        return $r;
    }
    die "imgbill-redis: no master \"$name\" found through "
        . (@why == 1 ? 'its Sentinel' : 'its ' . @why . ' Sentinels')
        . ': ' . join('; ', @why) . "\n";
}

# new_from_spec("host:port"), ("unix:/path"), or the whole of imgbill_redis's
# arguments; password and db in %opt fill in what the string leaves out
sub new_from_spec {
    my ($class, $spec, %opt) = @_;
    $spec = '127.0.0.1:6379' unless defined $spec && length $spec;
    my $c = $class->parse_spec($spec);
    for (qw(password db)) {
        $c->{$_} = $opt{$_} if !defined $c->{$_} && defined $opt{$_};
    }
    return $class->connect_spec($c, timeout => $opt{timeout});
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
