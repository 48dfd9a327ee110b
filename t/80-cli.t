# scripts/imgbill, the operator CLI, against a private Redis.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(key_hash free_port);
use POSIX qw(strftime);

# scripts/test's second pass runs the nginx of a test under memcheck:
# none starts here, and the first pass ran it all
plan skip_all => 'no nginx here: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $h = Imgbill::Harness->new(nginx => 0, mock => 0);
my $CLI = Imgbill::Harness->root . '/scripts/imgbill';

# cli([\stdin], args...) -> (exit, stdout, stderr)
sub cli {
    my $in = ref $_[0] eq 'SCALAR' ? ${ shift() } : undef;
    return $h->cli({ stdin => $in }, @_);
}

sub usage_ok {
    my ($name, @args) = @_;
    my ($rc, $out, $err) = cli(@args);
    subtest "bad arguments: $name" => sub {
        is $rc, 2, 'exit 2';
        is $out, '', 'nothing on stdout';
        like $err, qr/usage:/, 'usage on stderr';
    };
}

ok -x $CLI, 'scripts/imgbill is executable';

# --- general usage
usage_ok('no arguments');
usage_ok('unknown command', 'frobnicate');
{
    my ($rc, $out) = cli('--help');
    is $rc, 0, '--help exits 0';
    like $out, qr/usage:.*accounts.*key-new.*key-add.*key-del.*key-list.*topup.*adjust.*balance.*holds.*ledger.*audit/s,
        '--help prints usage on stdout, every command';
}

# --- key-add / key-del
my $K1 = 'sk-cli-raw-key-111111111';
my $K2 = 'sk-cli-raw-key-222222222';
{
    my ($rc, $out, $err) = cli('key-add', 'alice', $K1);
    is $rc, 0, 'key-add: exit 0';
    is $out, "ok\n", 'key-add prints ok';
    is $h->redis('GET', 'imgbill:key:' . key_hash($K1)), 'alice',
        'imgbill:key:<sha256(KEY)> = alice';
    ($rc, $out) = cli('key-add', 'alice', $K1);
    is $rc, 0, 'key-add again, same account: exit 0';
    is $out, "ok\n", '... ok';
    ($rc, $out, $err) = cli('key-add', 'bob', $K1);
    isnt $rc, 0, 'key-add to another account: refused';
    isnt $rc, 2, '... and not as a usage error';
    is $out, '', '... nothing on stdout';
    like $err, qr/\S/, '... says why on stderr';
    is $h->redis('GET', 'imgbill:key:' . key_hash($K1)), 'alice', '... mapping unchanged';

    ($rc, $out) = cli(\"$K2\n", 'key-add', 'bob', '-');
    is $rc, 0, 'key-add KEY from stdin';
    is $h->redis('GET', 'imgbill:key:' . key_hash($K2)), 'bob',
        '... stored under sha256 of the key without the newline';
    ($rc) = cli(\"$K2\r\n", 'key-add', 'carol', '-');
    isnt $rc, 0, 'stdin key with CRLF is the same key (refused for another account)';
    ($rc) = cli(\"", 'key-add', 'bob', '-');
    is $rc, 2, 'empty key on stdin: exit 2';
}
usage_ok('key-add without a key', 'key-add', 'alice');
usage_ok('key-add with an extra argument', 'key-add', 'alice', 'k', 'x');
usage_ok('key-add with a bad account', 'key-add', 'al ice', 'sk-x');
usage_ok('key-add with an empty key', 'key-add', 'alice', '');
{
    my ($rc, $out) = cli('key-del', $K2);
    is $rc, 0, 'key-del: exit 0';
    is $out, "ok\n", 'key-del prints ok';
    is $h->redis('EXISTS', 'imgbill:key:' . key_hash($K2)), 0, 'key gone';
    ($rc) = cli('key-del', $K2);
    is $rc, 1, 'key-del of an unknown key: exit 1';
    ($rc) = cli(\"$K1\n", 'key-del', '-');
    is $rc, 0, 'key-del KEY from stdin';
    is $h->redis('EXISTS', 'imgbill:key:' . key_hash($K1)), 0, 'key gone';
}
usage_ok('key-del without a key', 'key-del');

# --- topup / balance
{
    # alice's only key is gone: nothing in Redis names her any more
    my $before = $h->snapshot;
    my ($rc, $out, $err) = cli('topup', 'alice', '10');
    is $rc, 1, 'topup of an unknown account: exit 1';
    is $out, '', '... nothing on stdout';
    like $err, qr/unknown account alice\b.*--create/, '... says why, and how to create it';
    is $h->snapshot, $before, '... and wrote nothing';
    ($rc, $out) = cli('topup', 'alice', '10', '--create');
    is $rc, 0, 'topup --create: exit 0';
    is $out, "10.0000\n", 'topup 10 prints 10.0000';
    ($rc, $out) = cli('topup', 'alice', '0.2465');
    is $out, "10.2465\n", 'topup 0.2465 prints 10.2465';
    ($rc, $out) = cli('topup', 'alice', '0.5');
    is $out, "10.7465\n", 'topup 0.5';
    ($rc, $out) = cli('topup', 'alice', '0.0001');
    is $out, "10.7466\n", 'topup 0.0001';
    ($rc, $out) = cli('topup', 'alice', '007.10');
    is $out, "17.8466\n", 'topup 007.10';
    is $h->balance('alice'), 178466, 'Redis holds integer units';
    ($rc, $out) = cli('balance', 'alice');
    is $out, "17.8466\n", 'balance';
    ($rc, $out) = cli('topup', '--create', 'big', '99999999.9999');
    is $out, "99999999.9999\n", 'large topup is exact';
    is $h->balance('big'), '999999999999', '... in Redis';
}
my $snap = $h->snapshot;
for my $amt ('0', '0.0', '0.0000', '-1', '1.23456', 'abc', '1.', '.5', '1,5',
             ' 1', '1e3', '+1', '0x10', '') {
    usage_ok("topup \"$amt\"", 'topup', 'alice', $amt);
}
usage_ok('topup without an amount', 'topup', 'alice');
usage_ok('topup with a bad account', 'topup', 'a/b', '1');
is $h->snapshot, $snap, 'bad topups changed nothing';

my %bal = (
    0 => '0.0000', 5 => '0.0005', 10000 => '1.0000', 97535 => '9.7535',
    -1 => '-0.0001', -1234 => '-0.1234', -10000 => '-1.0000',
    -12345678 => '-1234.5678', '9223372036854775807' => '922337203685477.5807',
    '-9223372036854775808' => '-922337203685477.5808',
);
for my $u (sort keys %bal) {
    $h->redis('SET', 'imgbill:{fmt}:balance', $u);
    my ($rc, $out) = cli('balance', 'fmt');
    is $out, "$bal{$u}\n", "balance of $u units prints $bal{$u}";
}
{
    my ($rc, $out) = cli('balance', 'nobody');
    is $rc, 0, 'missing balance: exit 0';
    is $out, "0.0000\n", 'missing balance prints 0.0000';
    $h->redis('SET', 'imgbill:{neg}:balance', -500);
    ($rc, $out) = cli('topup', 'neg', '0.01');
    is $out, "-0.0400\n", 'topup of a negative balance';
}
usage_ok('balance without an account', 'balance');
my $max = 'a' x 64;
{
    my ($rc, $out) = cli('balance', $max);
    is $rc, 0, '64-character account id is fine';
    ($rc, $out) = cli('balance', 'A-z_0.9');
    is $rc, 0, 'account id with [A-Za-z0-9_.-]';
}
usage_ok('65-character account', 'balance', 'a' x 65);
usage_ok("account with ':'", 'balance', 'a:b');
usage_ok("account with '{'", 'balance', 'a{b}');
usage_ok("account with a newline", 'balance', "a\n");
usage_ok("empty account", 'balance', '');

# --- holds
{
    my $now = time;
    $h->redis('HSET', 'imgbill:{hh}:holds',
              'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1', '2465:' . ($now + 600),
              'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2', '90600:' . ($now + 900),
              'ccccccccccccccccccccccccccccccc3', '700:' . ($now - 5));
    my ($rc, $out) = cli('holds', 'hh');
    is $rc, 0, 'holds: exit 0';
    my @l = split /\n/, $out;
    is scalar @l, 2, 'one line per live hold (the expired one is not listed)';
    my ($a) = grep { /aaaaaaaa/ } @l;
    my ($b) = grep { /bbbbbbbb/ } @l;
    like $a // '', qr/\b0\.2465\b/, 'hold amount with 4 decimals';
    like $b // '', qr/\b9\.0600\b/, 'second hold amount';
    like $a // '', qr/\Q${\ strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($now + 600)) }\E/,
        'expiry as UTC ISO time';
    unlike $out, qr/ccccccc/, 'expired hold not listed';
    ($rc, $out) = cli('holds', 'idle');
    is $rc, 0, 'no holds: exit 0';
    is $out, '', 'no holds: no output';
}
usage_ok('holds without an account', 'holds');

# --- ledger
{
    my $t = 1767225600;    # 2026-01-01T00:00:00Z
    for my $i (1 .. 25) {
        $h->redis('XADD', 'imgbill:{led}:ledger', '*',
                  request_id => sprintf('%032x', $i), ts => $t + $i,
                  channel => $i % 2 ? 'metered' : 'fast',
                  model => 'gemini-2.5-flash-image',
                  prompt_tokens => 560, completion_tokens => 1120 + $i,
                  charge => 2465, balance_after => 100000 - $i * 2465);
    }
    my ($rc, $out) = cli('ledger', 'led');
    is $rc, 0, 'ledger: exit 0';
    my @l = split /\n/, $out;
    is scalar @l, 20, 'default: 20 lines';
    like $l[0], qr/^2026-01-01T00:00:06Z\b/, 'oldest of the last 20 first (entry 6)';
    like $l[-1], qr/^2026-01-01T00:00:25Z\b/, 'newest last (entry 25)';
    my $e6 = $l[0];
    like $e6, qr/\b${\ sprintf('%032x', 6) }\b/, 'request id';
    like $e6, qr/\bfast\b/, 'channel';
    like $e6, qr/\bgemini-2\.5-flash-image\b/, 'model';
    like $e6, qr/\b560\b/, 'tokens in';
    like $e6, qr/\b1126\b/, 'tokens out';
    like $e6, qr/\b0\.2465\b/, 'charge with 4 decimals';
    like $e6, qr/\b8\.5210\b/, 'balance after with 4 decimals (100000 - 6 x 2465)';
    like $l[-1], qr/(?<![\d.])3\.8375\b/, 'entry 25 balance';

    ($rc, $out) = cli('ledger', 'led', '3');
    @l = split /\n/, $out;
    is scalar @l, 3, 'ledger N=3: 3 lines';
    like $l[0], qr/00:00:23Z/, '... entries 23,';
    like $l[2], qr/00:00:25Z/, '... to 25';

    ($rc, $out) = cli('ledger', 'led', '100');
    is scalar(() = $out =~ /\n/g), 25, 'N larger than the ledger: all 25';

    $h->redis('XADD', 'imgbill:{neg2}:ledger', '*', request_id => 'r' x 32, ts => $t,
              channel => 'metered', model => 'm', prompt_tokens => 1,
              completion_tokens => 2, charge => 867200, balance_after => -817200);
    ($rc, $out) = cli('ledger', 'neg2');
    like $out, qr/(?<![\d.])86\.7200\b/, 'big charge';
    like $out, qr/(?<![\d.])-81\.7200\b/, 'negative balance after';

    ($rc, $out) = cli('ledger', 'empty');
    is $rc, 0, 'empty ledger: exit 0';
    is $out, '', 'empty ledger: no output';
}
usage_ok('ledger N=0', 'ledger', 'led', '0');
usage_ok('ledger N=abc', 'ledger', 'led', 'abc');
usage_ok('ledger N=-1', 'ledger', 'led', '-1');
usage_ok('ledger with a bad account', 'ledger', '../x');
usage_ok('ledger with too many arguments', 'ledger', 'led', 1, 2);

# --- Redis trouble
{
    my ($rc, $out, $err) = $h->cli({ env => { IMGBILL_REDIS => '127.0.0.1:' . free_port() } },
                                   'balance', 'alice');
    is $rc, 1, 'Redis unreachable: exit 1';
    like $err, qr/\S/, '... with a message on stderr';
    is $out, '', '... nothing on stdout';
}
{
    $h->redis('SET', 'imgbill:{junk}:balance', 'not-a-number');
    my ($rc, $out, $err) = cli('topup', 'junk', '1');
    is $rc, 1, 'topup of a non-integer balance: exit 1 (Redis error)';
    ($rc) = cli('balance', 'junk');
    is $rc, 1, 'balance of a non-integer: exit 1';
}

# --- raw keys are never printed
my $all = $h->cli_printed;
unlike $all, qr/\Q$_\E/, 'the CLI never printed a raw key' for $K1, $K2;

done_testing;
