# The operator CLI and the module agree: keys and balances set with the CLI
# work through nginx, and the CLI reads back what the module wrote.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);
use IO::Socket::INET;
use JSON::PP;

my $h = Imgbill::Harness->new;
my $CLI = Imgbill::Harness->root . '/scripts/imgbill';
my $KEY = 'sk-e2e-raw-key-0f0f0f0f0f';

sub cli {
    local $ENV{IMGBILL_REDIS} = $h->redis_addr;
    my $out = `$^X $CLI @_ 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = cli('key-add', 'shop', $KEY);
is "$rc $out", "0 ok\n", 'key-add via the CLI';
($rc, $out) = cli('topup', 'shop', '10');
is $out, "10.0000\n", 'topup 10 via the CLI';

my $res = $h->chat(key => $KEY);
is $res->{status}, 200, 'request with the CLI-added key: 200';
is $res->{headers}{'x-imgbill-charge'}, '0.2465', 'charged 0.2465';
my $rid = $res->{headers}{'x-imgbill-request-id'};

($rc, $out) = cli('balance', 'shop');
is $out, "9.7535\n", 'CLI balance after the request: 9.7535';

($rc, $out) = cli('ledger', 'shop');
my @l = split /\n/, $out;
is scalar @l, 1, 'one ledger line';
like $l[0] // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ /, 'starts with UTC ISO time';
like $l[0] // '', qr/\b\Q$rid\E\b/, 'request id';
like $l[0] // '', qr/\bmetered\b/, 'channel';
like $l[0] // '', qr/\bgemini-2\.5-flash-image\b/, 'model';
like $l[0] // '', qr/\b560\b.*\b1120\b/, 'tokens in/out';
like $l[0] // '', qr/(?<![\d.])0\.2465\b.*(?<![\d.])9\.7535\b/, 'charge, then balance after';

# holds while a generation runs
{
    my $body = encode_json({ model => 'gemini-2.5-flash-image', messages => [] });
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $h->port) or die $!;
    local $SIG{PIPE} = 'IGNORE';
    print $s "POST /fast/v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           . "Authorization: Bearer $KEY\r\nX-Mock: sleep=3\r\n"
           . "Content-Length: " . length($body) . "\r\n\r\n$body";
    ok wait_for(sub { %{ $h->holds('shop') } }, 2.5), 'a hold is placed';
    ($rc, $out) = cli('holds', 'shop');
    my @hl = split /\n/, $out;
    is scalar @hl, 1, 'CLI holds: one line while the request runs';
    like $hl[0] // '', qr/^[0-9a-f]{32}\b/, '... starting with the request id';
    local $/;
    my $resp = <$s>;
    like $resp, qr/X-Imgbill-Charge: 0\.0700/, 'fast request charged 0.0700';
    ($rc, $out) = cli('holds', 'shop');
    is $out, '', 'CLI holds: none afterwards';
    ($rc, $out) = cli('balance', 'shop');
    is $out, "9.6835\n", 'balance 9.6835';
}

# a gate decided by a CLI topup
$h->redis('SET', 'imgbill:{shop}:balance', 49999);
is $h->chat(key => $KEY)->{status}, 402, 'at 4.9999: 402';
($rc, $out) = cli('topup', 'shop', '0.0001');
is $out, "5.0000\n", 'topup 0.0001 -> 5.0000';
is $h->chat(key => $KEY)->{status}, 200, 'at 5.0000: 200';

# key-del revokes
($rc, $out) = cli('key-del', $KEY);
is "$rc $out", "0 ok\n", 'key-del';
$res = $h->chat(key => $KEY);
is $res->{status}, 401, 'deleted key: 401';
is $res->{json}{error}{code}, 'invalid_api_key', '... invalid_api_key';

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
