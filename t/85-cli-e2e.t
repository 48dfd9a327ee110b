# The operator CLI and the module agree: keys and balances set with the CLI
# work through nginx, and the CLI reads back what the module wrote.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness;
use JSON::PP;

my $h = Imgbill::Harness->new;
my $KEY = 'sk-e2e-raw-key-0f0f0f0f0f';

# (exit, what it printed on stdout and stderr)
sub cli {
    my ($rc, $out, $err) = $h->cli(@_);
    return ($rc, $out . $err);
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
    my $s = $h->raw_send(path => '/fast/v1/chat/completions', key => $KEY,
                         mock => 'sleep=3', body => $body);
    ok $h->wait_holds('shop', 1, 2.5), 'a hold is placed';
    ($rc, $out) = cli('holds', 'shop');
    my @hl = split /\n/, $out;
    is scalar @hl, 1, 'CLI holds: one line while the request runs';
    like $hl[0] // '', qr/^[0-9a-f]{32}\b/, '... starting with the request id';
    my $resp = $h->raw_reply($s)->{raw};
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
