package ImgbillPort;

# free_port() -> a TCP port nothing listens on at 127.0.0.1, for a server
# started next.  A port the kernel hands out for "port 0" lies in the
# ephemeral range, which every outgoing connection on this machine draws
# from as well: between our close and the server's bind(), a connection to
# Redis or an upstream can take it, and the server dies with "Address
# already in use".  So the port comes from below that range, where only
# listeners are, and a process never hands out the same port twice.

use strict;
use warnings;
use IO::Socket::INET;
use Exporter 'import';

our @EXPORT_OK = qw(free_port);

my %given;

sub _ephemeral {
    my ($lo, $hi) = (32768, 60999);
    if (open my $f, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        ($lo, $hi) = split ' ', scalar <$f>;
    }
    return ($lo, $hi);
}

sub free_port {
    my ($lo, $hi) = _ephemeral();
    # 10000 up to the ephemeral range; above it when that leaves too few
    my ($from, $to) = $lo > 12000 ? (10000, $lo - 1) : ($hi + 1, 65535);
    ($from, $to) = (1024, 65535) if $to - $from < 1000;

    for (1 .. 200) {
        my $p = $from + int rand($to - $from + 1);
        next if $given{$p};
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $p, Proto => 'tcp',
                                      Listen => 1, ReuseAddr => 1)
            or next;
        close $s;
        $given{$p} = 1;
        return $p;
    }
    die "no free loopback port in $from-$to\n";
}

1;
