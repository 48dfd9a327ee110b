# The operator CLI and the module agree: keys and balances set with the CLI
# work through nginx, and the CLI reads back what the module wrote.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(key_hash fmt_units);
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
is scalar @l, 2, 'two ledger lines: the credit, the charge';
like $l[0] // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ credit amount=\+10\.0000 balance=10\.0000 reason=topup$/,
    'the credit';
like $l[1] // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ /, 'starts with UTC ISO time';
like $l[1] // '', qr/\b\Q$rid\E\b/, 'request id';
like $l[1] // '', qr/\bmetered\b/, 'channel';
like $l[1] // '', qr/\bgemini-2\.5-flash-image\b/, 'model';
like $l[1] // '', qr/\b560\b.*\b1120\b/, 'tokens in/out';
like $l[1] // '', qr/(?<![\d.])0\.2465\b.*(?<![\d.])9\.7535\b/, 'charge, then balance after';

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

# a gate decided by a CLI adjust and topup
($rc, $out) = cli('adjust', 'shop', '-4.6836', '--reason', 'test the gate');
is $out, "4.9999\n", 'adjust -4.6836 -> 4.9999';
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

($rc, $out) = cli('audit', 'shop');
is "$rc $out", "0 shop balance=4.7535 ledger=4.7535 drift=0 ok\n",
    'audit: the CLI\'s credits and adjustment and the module\'s charges add up';

# ledger entries of an account, oldest first (type '-' when it has none)
sub types { [ map { $_->{type} // '-' } @{ $h->ledger($_[0]) } ] }
sub json_ledger {
    my ($acct, @opt) = @_;
    my ($rc, $out) = cli('ledger', $acct, '--json', @opt);
    return eval { JSON::PP->new->utf8->decode($out) } || [];
}

# key-new: a key made by the CLI, printed once, works through nginx
{
    my ($rc, $key, $err) = $h->cli('key-new', 'minted');
    is $rc, 0, 'key-new minted: exit 0';
    chomp $key;
    like $key, qr/^sk-[0-9A-Za-z]{48}$/, '... prints the key';
    ($rc, $out) = cli('topup', 'minted', '1', '--reason', 'first money');
    is "$rc $out", "0 1.0000\n", 'topup of an account known by its new key alone';
    my $res = $h->chat(key => $key, path => '/fast/v1/chat/completions');
    is $res->{status}, 200, 'a request with the new key: 200';
    is $res->{headers}{'x-imgbill-charge'}, '0.0700', '... charged 0.0700';
    is $res->{headers}{'x-imgbill-balance'}, '0.9300', '... to minted: 0.9300';
    my $dump = $h->redis_dump;
    unlike $dump, qr/\Q$key\E/, 'the raw key is nowhere in Redis';
    like $dump, qr/^imgbill:key:\Q${\ key_hash($key) }\E\tstring\t\["minted"\]$/m,
        'only its SHA-256, mapped to minted';
    ($rc, $out) = cli('key-list', 'minted');
    is $out, substr(key_hash($key), 0, 12) . ' name=- limit=none spent=0.0700 daily_limit=none '
        . "today=0.0700 expires=never models=any ips=any last_used=$1\n",
        'key-list: its hash prefix, and its spend' if $out =~ /last_used=(\S+)$/;
    like $out, qr/ last_used=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '... and when it was used';
    unlike $h->cli_printed =~ s/\Q$key\E//r, qr/\Q$key\E/, 'the key was printed once';

    my $j = json_ledger('minted');
    my $ts = $j->[1]{ts};
    is_deeply [ map { { %$_, id => 'ID', ts => 'TS', time => 'TIME' } } @$j ], [
        { id => 'ID', ts => 'TS', time => 'TIME', type => 'credit', amount => '1.0000',
          balance_after => '1.0000', reason => 'first money' },
        { id => 'ID', ts => 'TS', time => 'TIME', type => 'charge', amount => '-0.0700',
          balance_after => '0.9300', request_id => $res->{headers}{'x-imgbill-request-id'},
          channel => 'fast', model => 'gemini-2.5-flash-image', prompt_tokens => 560,
          completion_tokens => 1120, images => 1, api => 'openai' },
    ], 'ledger --json: the credit, then the module\'s charge, to the unit (and its API)';
    ok abs($ts - time) < 60, '... the charge\'s ts is now';
    ($rc, $out) = cli('audit', 'minted');
    is "$rc $out", "0 minted balance=0.9300 ledger=0.9300 drift=0 ok\n", 'audit ok';
}

# topups, adjustments and charges at once: the ledger explains the balance
{
    my ($rc, $key) = $h->cli('key-new', 'mix');
    chomp $key;
    ($rc, $out) = cli('topup', 'mix', '500', '--reason', 'deposit');
    is "$rc $out", "0 500.0000\n", 'mix: 500.0000';
    my $wait = $h->in_flight(8, key => $key, mock => 'sleep=0.3');
    my $wait_fast = $h->in_flight(4, key => $key, path => '/fast/v1/chat/completions',
                                  model => 'gemini-3-pro-image-preview', mock => 'sleep=0.2');
    my @cli;
    for my $i (1 .. 4) {
        push @cli, join ' ', cli('topup', 'mix', "0.000$i", '--reason', "t$i");
        push @cli, join ' ', cli('adjust', 'mix', '-0.0002', '--reason', "a$i");
    }
    my @st = ($wait->(), $wait_fast->());
    is_deeply \@st, [ ('200 0.2465') x 8, ('200 0.2000') x 4 ],
        '8 metered and 4 fast generations, each charged';
    my $free = $h->chat(key => $key, mock => 'status=500 kind=error');
    is $free->{status}, 500, 'a failed generation';
    is $free->{headers}{'x-imgbill-charge'} // '0.0000', '0.0000', '... free';
    is scalar(grep { /^0 \d/ } @cli), 8, 'the CLI\'s 8 writes all went through';
    # 500 + (1+2+3+4 - 4*2) units - 8 x 2465 - 4 x 2000
    my $want = 5000000 + 2 - 8 * 2465 - 4 * 2000;
    is $h->balance('mix'), $want, "balance $want units";
    is_deeply [ sort { $a cmp $b } @{ types('mix') } ],
              [ ('adjustment') x 4, ('charge') x 12, ('credit') x 5 ],
              'one entry per write and per charge (none for the failure)';
    ($rc, $out) = cli('audit', 'mix');
    is "$rc $out", "0 mix balance=${\ fmt_units($want) } ledger=${\ fmt_units($want) } drift=0 ok\n",
        'audit ok';

    # what the module does behind the ledger's back is caught to the unit
    $h->redis('INCRBY', 'imgbill:{mix}:balance', 1);
    ($rc, $out, my $err) = $h->cli('audit');
    is $rc, 1, 'a unit slipped in by hand: audit exits 1';
    like $out, qr/^mix balance=\Q${\ fmt_units($want + 1) }\E ledger=\Q${\ fmt_units($want) }\E drift=1 DRIFT$/m,
        '... mix drifts by 1 unit';
    is scalar(() = $out =~ / ok$/mg), scalar(() = $out =~ /\n/g) - 1, '... every other account is ok';
    $h->redis('DECRBY', 'imgbill:{mix}:balance', 1);

    # the CSV agrees with the JSON
    my $j = json_ledger('mix');
    ($rc, $out) = cli('ledger', 'mix', '--csv');
    my @rows = split /\r\n/, $out;
    is scalar @rows, 1 + @$j, 'CSV: a header and a row per entry';
    is_deeply [ map { (split /,/)[4] } @rows[1 .. $#rows] ], [ map { $_->{amount} } @$j ],
        'CSV amounts = JSON amounts';
    my $day = POSIX::strftime('%Y-%m-%d', gmtime $j->[0]{ts});
    is_deeply json_ledger('mix', '--since', $day), $j, '--since the day of the first entry: all of it';
}

# an account from before the ledger had credits
{
    my $LKEY = 'sk-e2e-legacy-key';
    $h->redis('SET', 'imgbill:{legacy}:balance', 100000);
    $h->redis('XADD', 'imgbill:{legacy}:ledger', '*', request_id => 'f' x 32,
              ts => 1767225600, channel => 'metered', model => 'gemini-2.5-flash-image',
              prompt_tokens => 560, completion_tokens => 1120, charge => 2465,
              balance_after => 100000);
    cli('key-add', 'legacy', $LKEY);
    my $res = $h->chat(key => $LKEY);
    is $res->{headers}{'x-imgbill-balance'}, '9.7535', 'legacy: a request, 9.7535 left';
    is_deeply types('legacy'), [ '-', 'charge' ], 'an old charge without type, the module\'s with';
    ($rc, $out, my $err) = $h->cli('audit', 'legacy');
    is "$rc $out", "1 legacy balance=9.7535 ledger=-0.4930 drift=102465 DRIFT\n",
        'audit: drift by the balance before the ledger';
    like $err, qr/audit --open legacy/, '... suggests --open';
    ($rc, $out) = cli('audit', '--open', 'legacy');
    is "$rc $out", "0 legacy opening amount=10.2465 balance=9.7535\n"
                 . "legacy balance=9.7535 ledger=9.7535 drift=0 ok\n", 'audit --open: ok';
    $h->chat(key => $LKEY);
    ($rc, $out) = cli('topup', 'legacy', '1');
    is $out, "10.5070\n", 'another charge, a topup';
    is_deeply types('legacy'), [ '-', qw(charge opening charge credit) ], 'one opening only';
    ($rc, $out) = cli('audit', 'legacy');
    is "$rc $out", "0 legacy balance=10.5070 ledger=10.5070 drift=0 ok\n", 'still ok';
}

# accounts: a request in flight shows as held
{
    my $body = encode_json({ model => 'gemini-3-pro-image-preview', messages => [] });
    my ($rc, $key) = $h->cli('key-new', 'waiting');
    chomp $key;
    cli('topup', 'waiting', '2');
    my $s = $h->raw_send(path => '/fast/v1/chat/completions', key => $key,
                         mock => 'sleep=3', body => $body);
    my $holds = $h->wait_holds('waiting', 1, 2.5);
    ok $holds, 'a hold is placed';
    my ($held) = map { /^(\d+):/ } values %{ $holds || {} };
    $held = fmt_units($held // 0);
    ($rc, $out) = cli('accounts');
    like $out, qr/^waiting balance=2\.0000 held=\Q$held\E keys=1$/m,
        "accounts: the live hold ($held) as held";
    like $out, qr/^minted balance=0\.9300 held=0\.0000 keys=1$/m, 'minted';
    like $out, qr/^legacy balance=10\.5070 held=0\.0000 keys=1$/m, 'legacy';
    like $out, qr/^shop balance=4\.7535 held=0\.0000 keys=0$/m, 'shop (its key deleted)';
    $h->raw_reply($s);
    ($rc, $out) = cli('accounts');
    like $out, qr/^waiting balance=1\.8000 held=0\.0000 keys=1$/m, 'settled: charged, nothing held';
    ($rc, $out) = $h->cli('audit');
    is $rc, 0, 'audit of every account: ok' or diag $out;
}

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
