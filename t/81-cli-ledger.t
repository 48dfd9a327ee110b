# scripts/imgbill's audit trail against a private Redis: every topup and
# adjust is a ledger entry, `audit` reconciles balances with their ledgers,
# accounts and keys are listed and made, the ledger is exported.  Money is
# checked to the unit.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(key_hash);
use File::Temp qw(tempdir);
use JSON::PP;
use POSIX qw(strftime);

# scripts/test's second pass runs the nginx of a test under memcheck:
# none starts here, and the first pass ran it all
plan skip_all => 'no nginx here: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $h = Imgbill::Harness->new(nginx => 0, mock => 0);
my $CLI = Imgbill::Harness->root . '/scripts/imgbill';

sub cli { $h->cli(@_) }

sub usage_ok {
    my ($name, @args) = @_;
    my $before = $h->snapshot;
    my ($rc, $out, $err) = cli(@args);
    subtest "bad arguments: $name" => sub {
        is $rc, 2, 'exit 2';
        is $out, '', 'nothing on stdout';
        like $err, qr/usage:/, 'usage on stderr';
        is $h->snapshot, $before, 'nothing written';
    };
}

# the ledger as [type-or-'-', {fields}] and the fields' order
sub entries {
    my ($acct) = @_;
    my $a = $h->redis('XRANGE', "imgbill:{$acct}:ledger", '-', '+') || [];
    return map { { id => $_->[0], order => [ @{ $_->[1] }[ grep { !($_ % 2) } 0 .. $#{ $_->[1] } ] ],
                   f => { @{ $_->[1] } } } } @$a;
}

sub iso { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) }

my @ENTRY_FIELDS = qw(type amount reason ts balance_after);

# --- topup writes a credit entry
{
    my $t0 = time;
    my ($rc, $out, $err) = cli('topup', 'acme', '10', '--create',
                               '--reason', 'bank transfer 0042');
    my $t1 = time;
    is "$rc $out", "0 10.0000\n", 'topup --create acme 10: prints 10.0000';
    is $err, '', '... nothing on stderr (no opening for a new account)';
    is $h->balance('acme'), 100000, 'balance 100000 units';
    my @e = entries('acme');
    is scalar @e, 1, 'one ledger entry';
    is_deeply $e[0]{order}, \@ENTRY_FIELDS, 'fields: type amount reason ts balance_after';
    is_deeply [ @{ $e[0]{f} }{qw(type amount reason balance_after)} ],
              [ 'credit', 100000, 'bank transfer 0042', 100000 ],
              'credit of 100000 units, the reason, balance after 100000';
    ok $e[0]{f}{ts} >= $t0 && $e[0]{f}{ts} <= $t1, 'ts: unix seconds, now';
    like $e[0]{id}, qr/^\d+-\d+$/, 'an auto stream id';

    ($rc, $out) = cli('topup', 'acme', '0.2465');
    is "$rc $out", "0 10.2465\n", 'topup without --reason';
    ($rc, $out) = cli('topup', 'acme', '0.0001', '--reason=银行转账 0043');
    is "$rc $out", "0 10.2466\n", 'topup --reason=UTF-8 text';
    @e = entries('acme');
    is scalar @e, 3, 'three entries';
    is_deeply [ map { [ @{ $_->{f} }{qw(type amount reason balance_after)} ] } @e[1, 2] ],
              [ [ 'credit', 2465, 'topup', 102465 ], [ 'credit', 1, '银行转账 0043', 102466 ] ],
              'default reason "topup"; UTF-8 reason stored as given; balance after to the unit';
}

# --- unknown accounts
{
    my $before = $h->snapshot;
    my ($rc, $out, $err) = cli('topup', 'nobody', '1', '--reason', 'x');
    is $rc, 1, 'topup of an unknown account: exit 1';
    is $out, '', '... nothing on stdout';
    like $err, qr/unknown account nobody\b/, '... says so';
    is $h->snapshot, $before, '... nothing written';
    ($rc) = cli('adjust', 'nobody', '+1', '--reason', 'x');
    is $rc, 1, 'adjust of an unknown account: exit 1';
    is $h->snapshot, $before, '... nothing written';

    cli('key-add', 'keyonly', 'sk-81-keyonly');
    ($rc, $out) = cli('topup', 'keyonly', '2');
    is "$rc $out", "0 2.0000\n", 'an account a key maps to is known';
    $h->redis('SET', 'imgbill:{balonly}:balance', 0);
    ($rc, $out) = cli('topup', 'balonly', '2');
    is "$rc $out", "0 2.0000\n", 'an account with a balance (even 0) is known';
    $h->redis('XADD', 'imgbill:{ledonly}:ledger', '*', request_id => 'r', ts => 1,
              channel => 'fast', model => 'm', prompt_tokens => 1,
              completion_tokens => 1, charge => 700, balance_after => -700);
    ($rc, $out, $err) = cli('topup', 'ledonly', '1');
    is "$rc $out", "0 1.0000\n", 'an account with only a ledger is known';
    like $err, qr/opening balance entry of 0\.0700\b/,
        '... and gets an opening entry (0 - (-0.0700)) first, said on stderr';
    is_deeply [ map { [ @{ $_->{f} }{qw(type amount balance_after)} ] } (entries('ledonly'))[1, 2] ],
              [ [ 'opening', 700, 0 ], [ 'credit', 10000, 10000 ] ],
              '... opening 700 at balance 0, then the credit';
    ($rc, $out) = cli('topup', 'newbie', '--create', '3');
    is "$rc $out", "0 3.0000\n", '--create before the arguments';
}

# --- adjust
{
    my ($rc, $out, $err) = cli('adjust', 'acme', '-0.2466', '--reason', 'duplicate credit');
    is "$rc $out", "0 10.0000\n", 'adjust -0.2466 -> 10.0000';
    ($rc, $out) = cli('adjust', 'acme', '+1.5', '--reason', 'goodwill');
    is "$rc $out", "0 11.5000\n", 'adjust +1.5 -> 11.5000';
    ($rc, $out) = cli('adjust', '--reason', 'plain', 'acme', '0.5');
    is "$rc $out", "0 12.0000\n", 'adjust 0.5 (no sign: added), --reason first';
    my @e = (entries('acme'))[3 .. 5];
    is_deeply [ map { $_->{order} } @e ], [ (\@ENTRY_FIELDS) x 3 ], 'the same fields as a credit';
    is_deeply [ map { [ @{ $_->{f} }{qw(type amount reason balance_after)} ] } @e ],
              [ [ 'adjustment', -2466, 'duplicate credit', 100000 ],
                [ 'adjustment', 15000, 'goodwill', 115000 ],
                [ 'adjustment', 5000, 'plain', 120000 ] ],
              'adjustment entries: signed amount, reason, balance after';

    my $before = $h->snapshot;
    ($rc, $out, $err) = cli('adjust', 'acme', '-12.0001', '--reason', 'too much');
    is $rc, 1, 'adjust below zero: exit 1';
    is $out, '', '... nothing on stdout';
    like $err, qr/below zero/, '... says why';
    like $err, qr/(?<![\d.])-0\.0001\b/, '... and where it would have left the balance';
    is $h->snapshot, $before, '... nothing written';
    ($rc, $out) = cli('adjust', 'acme', '-12', '--reason', 'to zero');
    is "$rc $out", "0 0.0000\n", 'adjust to exactly zero is fine';
    ($rc, $out) = cli('adjust', 'acme', '+12', '--reason', 'back');
    is "$rc $out", "0 12.0000\n", 'and back';

    $h->redis('SET', 'imgbill:{owing}:balance', -500);
    ($rc, $out) = cli('adjust', 'owing', '+0.0100', '--reason', 'partly settled');
    is "$rc $out", "0 -0.0400\n", 'a positive adjustment of a negative balance is not refused';
    ($rc) = cli('adjust', 'owing', '-0.0001', '--reason', 'x');
    is $rc, 1, 'a negative one is';
}
usage_ok('adjust without --reason', 'adjust', 'acme', '+1');
usage_ok('adjust with an empty reason', 'adjust', 'acme', '+1', '--reason', '');
usage_ok('adjust --reason without a value', 'adjust', 'acme', '+1', '--reason');
usage_ok('adjust by zero', 'adjust', 'acme', '-0.0000', '--reason', 'x');
usage_ok("adjust by '--1'", 'adjust', 'acme', '--1', '--reason', 'x');
usage_ok("adjust by '+-1'", 'adjust', 'acme', '+-1', '--reason', 'x');
usage_ok("adjust by '1.00001'", 'adjust', 'acme', '1.00001', '--reason', 'x');
usage_ok('adjust without an amount', 'adjust', 'acme', '--reason', 'x');
usage_ok('adjust with --create', 'adjust', 'acme', '+1', '--reason', 'x', '--create');
usage_ok('topup with a newline in the reason', 'topup', 'acme', '1', '--reason', "a\nb");
usage_ok('topup with a 201-byte reason', 'topup', 'acme', '1', '--reason', 'x' x 201);
usage_ok('topup with a reason that is not UTF-8', 'topup', 'acme', '1', '--reason', "\xff\xfe");
usage_ok('topup with an unknown option', 'topup', 'acme', '1', '--force');
usage_ok('topup --create=1', 'topup', 'acme', '1', '--create=1');
usage_ok('topup --reason twice', 'topup', 'acme', '1', '--reason', 'a', '--reason', 'b');
{
    my ($rc) = cli('topup', 'acme', '1', '--reason', 'x' x 200);
    is $rc, 0, 'a 200-byte reason is fine';
    cli('adjust', 'acme', '-1', '--reason', 'undo');
}

# --- audit
{
    my ($rc, $out, $err) = cli('audit');
    is $rc, 0, 'audit of every account: exit 0';
    is $out, join('', map { "$_\n" }
        'acme balance=12.0000 ledger=12.0000 drift=0 ok',
        'balonly balance=2.0000 ledger=2.0000 drift=0 ok',
        'keyonly balance=2.0000 ledger=2.0000 drift=0 ok',
        'ledonly balance=1.0000 ledger=1.0000 drift=0 ok',
        'newbie balance=3.0000 ledger=3.0000 drift=0 ok',
        'owing balance=-0.0400 ledger=-0.0400 drift=0 ok'),
        'one line per account, sorted: balance, ledger sum, drift, ok';
    is $err, '', 'nothing on stderr';

    $h->redis('INCRBY', 'imgbill:{acme}:balance', 1);
    ($rc, $out, $err) = cli('audit');
    is $rc, 1, 'a unit added behind the ledger: exit 1';
    like $out, qr/^acme balance=12\.0001 ledger=12\.0000 drift=1 DRIFT$/m, '... drift=1 DRIFT';
    is scalar(() = $out =~ /DRIFT/g), 1, '... only acme drifts';
    like $err, qr/1 account\(s\) drift/, '... summed up on stderr';
    unlike $err, qr/--open/, '... no --open hint: acme has credits';
    ($rc, $out) = cli('audit', 'acme');
    is "$rc $out", "1 acme balance=12.0001 ledger=12.0000 drift=1 DRIFT\n", 'audit ACCOUNT';
    $h->redis('DECRBY', 'imgbill:{acme}:balance', 3);
    ($rc, $out) = cli('audit', 'acme');
    is "$rc $out", "1 acme balance=11.9998 ledger=12.0000 drift=-2 DRIFT\n", 'drift=-2';

    my $before = $h->snapshot;
    ($rc, $out) = cli('audit', '--open', 'acme');
    is "$rc $out", "1 acme balance=11.9998 ledger=12.0000 drift=-2 DRIFT\n",
        '--open does not paper over drift on an account that has credits';
    is $h->snapshot, $before, '... nothing written';
    $h->redis('INCRBY', 'imgbill:{acme}:balance', 2);
    ($rc, $out) = cli('audit', 'acme');
    is "$rc $out", "0 acme balance=12.0000 ledger=12.0000 drift=0 ok\n", 'restored: ok';

    # an account from before the ledger had credits: a balance and charges
    $h->redis('SET', 'imgbill:{old}:balance', 97535);
    $h->redis('XADD', 'imgbill:{old}:ledger', '*', request_id => 'a' x 32, ts => 1767225600,
              channel => 'metered', model => 'gemini-2.5-flash-image',
              prompt_tokens => 560, completion_tokens => 1120, charge => 2465,
              balance_after => 97535);
    ($rc, $out, $err) = cli('audit', 'old');
    is "$rc $out", "1 old balance=9.7535 ledger=-0.2465 drift=100000 DRIFT\n",
        'an old account drifts by its balance before the ledger';
    like $err, qr/audit --open old/, '... and audit says to run --open';
    is scalar(entries('old')), 1, '... audit alone writes nothing';

    ($rc, $out, $err) = cli('audit', '--open', 'old');
    is $rc, 0, 'audit --open old: exit 0';
    is $out, "old opening amount=10.0000 balance=9.7535\n"
           . "old balance=9.7535 ledger=9.7535 drift=0 ok\n",
        '... writes the opening (balance - ledger sum), then audits ok';
    my @e = entries('old');
    is scalar @e, 2, '... one entry more';
    is_deeply $e[1]{order}, \@ENTRY_FIELDS, '... with the fields of a credit';
    is_deeply [ @{ $e[1]{f} }{qw(type amount reason balance_after)} ],
              [ 'opening', 100000, 'opening balance', 97535 ], '... opening 100000 units';
    $before = $h->snapshot;
    ($rc, $out) = cli('audit', 'old', '--open');
    is "$rc $out", "0 old balance=9.7535 ledger=9.7535 drift=0 ok\n",
        'a second --open writes nothing';
    is $h->snapshot, $before, '... Redis unchanged';

    # --open for every account: only those without an opening or credit
    $h->redis('SET', 'imgbill:{old2}:balance', 50000);
    $h->redis('XADD', 'imgbill:{old2}:ledger', '*', request_id => 'b' x 32, ts => 1767225601,
              channel => 'fast', model => 'gemini-2.5-flash-image',
              prompt_tokens => 0, completion_tokens => 0, charge => 700, balance_after => 50000);
    $h->redis('SET', 'imgbill:{old3}:balance', 1234);     # no ledger at all
    $h->redis('INCRBY', 'imgbill:{newbie}:balance', 5);   # tampered, has a credit
    ($rc, $out, $err) = cli('audit');
    is $rc, 1, 'audit: old2, old3 and newbie drift';
    like $out, qr/^old2 balance=5\.0000 ledger=-0\.0700 drift=50700 DRIFT$/m, 'old2';
    like $out, qr/^old3 balance=0\.1234 ledger=0\.0000 drift=1234 DRIFT$/m, 'old3';
    like $out, qr/^newbie balance=3\.0005 ledger=3\.0000 drift=5 DRIFT$/m, 'newbie';
    like $err, qr/3 account\(s\) drift.*\n.*2 of them .*audit --open'/, '2 of them could be opened';
    ($rc, $out) = cli('audit', '--open');
    is $rc, 1, 'audit --open: newbie still drifts';
    like $out, qr/^old2 opening amount=5\.0700 balance=5\.0000$/m, 'old2 opened';
    like $out, qr/^old3 opening amount=0\.1234 balance=0\.1234$/m, 'old3 opened';
    is scalar(() = $out =~ /opening/g), 2, 'nothing else opened';
    like $out, qr/^old2 balance=5\.0000 ledger=5\.0000 drift=0 ok$/m, 'old2 ok';
    like $out, qr/^old3 balance=0\.1234 ledger=0\.1234 drift=0 ok$/m, 'old3 ok';
    like $out, qr/^newbie .* drift=5 DRIFT$/m, 'newbie still drifts';
    $h->redis('DECRBY', 'imgbill:{newbie}:balance', 5);
    ($rc) = cli('audit');
    is $rc, 0, 'all ok again';

    # an entry audit cannot count
    $h->redis('XADD', 'imgbill:{odd}:ledger', '*', type => 'refund', amount => 5, ts => 1);
    ($rc, $out, $err) = cli('audit', 'odd');
    is $rc, 1, 'an unknown entry type: exit 1';
    like $out, qr/^odd ERROR .*unknown type "refund"/m, '... reported';
    ($rc, $out, $err) = cli('topup', 'odd', '1');
    is $rc, 1, '... and topup refuses to open its ledger';
    like $err, qr/unknown type/, '... says why';
    $h->redis('DEL', 'imgbill:{odd}:ledger');
}
usage_ok('audit with two accounts', 'audit', 'a', 'b');
usage_ok('audit with a bad account', 'audit', 'a/b');
usage_ok('audit --open=x', 'audit', '--open=x');

# --- an old account's first topup and adjust write its opening entry
{
    $h->redis('SET', 'imgbill:{legacy}:balance', 20000);
    for my $c (2465, 17232) {
        $h->redis('XADD', 'imgbill:{legacy}:ledger', '*', request_id => "r$c", ts => 1767225600,
                  channel => 'metered', model => 'm', prompt_tokens => 1,
                  completion_tokens => 1, charge => $c, balance_after => 0);
    }
    my ($rc, $out, $err) = cli('adjust', 'legacy', '-0.0001', '--reason', 'fee');
    is "$rc $out", "0 1.9999\n", 'adjust of an old account';
    like $err, qr/opening balance entry of 3\.9697\b/, '... opening 2.0000 + 0.2465 + 1.7232';
    my @e = entries('legacy');
    is_deeply [ map { [ @{ $_->{f} }{qw(type amount reason balance_after)} ] } @e[2, 3] ],
              [ [ 'opening', 39697, 'opening balance', 20000 ],
                [ 'adjustment', -1, 'fee', 19999 ] ],
              '... opening (balance before), then the adjustment';
    is $e[2]{f}{ts}, $e[3]{f}{ts}, '... at the same time';
    ($rc, $out) = cli('topup', 'legacy', '1');
    is "$rc $out", "0 2.9999\n", 'next topup';
    is scalar(entries('legacy')), 5, '... no second opening';
    ($rc, $out) = cli('audit', 'legacy');
    is "$rc $out", "0 legacy balance=2.9999 ledger=2.9999 drift=0 ok\n", 'audit ok';

    # a refused adjust writes no opening either
    $h->redis('SET', 'imgbill:{legacy2}:balance', 100);
    my $before = $h->snapshot;
    ($rc) = cli('adjust', 'legacy2', '-1', '--reason', 'x');
    is $rc, 1, 'refused adjust of an old account';
    is $h->snapshot, $before, '... wrote no opening';
    $h->redis('DEL', 'imgbill:{legacy2}:balance');
}

# --- money past 2^53 (where Lua's doubles stop being exact) stays exact
{
    $h->redis('SET', 'imgbill:{huge}:balance', '9007199254740993');
    $h->redis('XADD', 'imgbill:{huge}:ledger', '*', request_id => 'h', ts => 1, channel => 'fast',
              model => 'm', prompt_tokens => 0, completion_tokens => 0, charge => 3,
              balance_after => '9007199254740993');
    my ($rc, $out) = cli('topup', 'huge', '0.0001');
    is "$rc $out", "0 900719925474.0994\n", 'topup past 2^53 units';
    is_deeply [ map { [ @{ $_->{f} }{qw(type amount balance_after)} ] } (entries('huge'))[1, 2] ],
              [ [ 'opening', '9007199254740996', '9007199254740993' ],
                [ 'credit', 1, '9007199254740994' ] ], '... opening and credit to the unit';
    cli('topup', 'huge', '999999999999.9999') for 1 .. 3;
    ($rc, $out) = cli('adjust', 'huge', '-0.0001', '--reason', 'x');
    is "$rc $out", "0 3900719925474.0990\n", 'three topups of 999999999999.9999, an adjust';
    is $h->balance('huge'), '39007199254740990', '... in Redis';
    is((entries('huge'))[-1]{f}{balance_after}, '39007199254740990', '... and in the ledger');
    ($rc, $out) = cli('audit', 'huge');
    is "$rc $out", "0 huge balance=3900719925474.0990 ledger=3900719925474.0990 drift=0 ok\n",
        'audit ok';
    $h->redis('INCRBY', 'imgbill:{huge}:balance', 1);
    ($rc, $out) = cli('audit', 'huge');
    like $out, qr/ drift=1 DRIFT$/, 'one unit of drift on a huge balance';
    $h->redis('DEL', map { "imgbill:{huge}:$_" } qw(balance ledger));

    $h->redis('SET', 'imgbill:{full}:balance', '9223372036854775000');
    my $before = $h->snapshot;
    ($rc, $out, my $err) = cli('topup', 'full', '1');
    is $rc, 1, 'a topup past int64: exit 1';
    like $err, qr/overflow/, '... says why';
    is $h->snapshot, $before, '... nothing written (no opening either)';
    $h->redis('DEL', 'imgbill:{full}:balance');
}

# --- accounts
{
    my $now = time;
    $h->redis('HSET', 'imgbill:{acme}:holds',
              'h1' => '2465:' . ($now + 600), 'h2' => '700:' . ($now + 60),
              'h3' => '90000:' . ($now - 1));
    $h->redis('HSET', 'imgbill:{acme}:held', units => 93165, sweep => $now - 1);
    cli('key-add', 'acme', 'sk-81-acme-1');
    cli('key-add', 'acme', 'sk-81-acme-2');
    cli('key-add', 'ghost', 'sk-81-ghost');
    my ($rc, $out, $err) = cli('accounts');
    is $rc, 0, 'accounts: exit 0';
    is $out, join('', map { "$_\n" }
        'acme balance=12.0000 held=0.3165 keys=2',
        'balonly balance=2.0000 held=0.0000 keys=0',
        'ghost balance=0.0000 held=0.0000 keys=1',
        'keyonly balance=2.0000 held=0.0000 keys=1',
        'ledonly balance=1.0000 held=0.0000 keys=0',
        'legacy balance=2.9999 held=0.0000 keys=0',
        'newbie balance=3.0000 held=0.0000 keys=0',
        'old balance=9.7535 held=0.0000 keys=0',
        'old2 balance=5.0000 held=0.0000 keys=0',
        'old3 balance=0.1234 held=0.0000 keys=0',
        'owing balance=-0.0400 held=0.0000 keys=0'),
        'every account, sorted: balance, live holds only, key count';
    is $err, '', 'nothing on stderr';
    $h->redis('DEL', 'imgbill:{acme}:holds', 'imgbill:{acme}:held');
}
usage_ok('accounts with an argument', 'accounts', 'acme');

# --- key-new / key-list
my @new_keys;
{
    my $before = $h->redis('DBSIZE');
    my ($rc, $out, $err) = cli('key-new', 'acme');
    is $rc, 0, 'key-new: exit 0';
    like $out, qr/^sk-[0-9A-Za-z]{48}\n\z/, 'prints "sk-" and 48 base62 characters (285 bits)';
    is $err, '', 'nothing on stderr';
    chomp(my $k = $out);
    push @new_keys, $k;
    is $h->redis('GET', 'imgbill:key:' . key_hash($k)), 'acme', 'imgbill:key:<sha256> = acme';
    is $h->redis('DBSIZE'), $before + 2, 'two keys more in Redis: the key and its limits';
    is_deeply [ keys %{ { @{ $h->redis('HGETALL', 'imgbill:{acme}:key:' . substr(key_hash($k), 0, 12)) } } } ],
              [ 'since' ], '... which are none: it counts its spend since now';
    my $dump = $h->redis_dump;
    unlike $dump, qr/\Q$k\E/, 'the raw key is nowhere in Redis';
    unlike $dump, qr/\Q${\ substr($k, 3) }\E/, '... not even without its "sk-"';

    my %seen;
    for (1 .. 20) {
        my (undef, $o) = cli('key-new', 'ghost');
        chomp $o;
        $seen{$o}++;
        push @new_keys, $o;
    }
    is scalar keys %seen, 20, '20 more keys, all different';
    my %chars;
    $chars{$_}++ for map { split //, substr($_, 3) } keys %seen;
    cmp_ok scalar keys %chars, '>', 50, 'drawn from all of base62 (' . scalar(keys %chars) . ' characters seen)';

    ($rc, $out) = cli('key-list', 'acme');
    is $rc, 0, 'key-list: exit 0';
    my @want = sort map { substr(key_hash($_), 0, 12) } 'sk-81-acme-1', 'sk-81-acme-2', $k;
    is join('', map { "$_\n" } $out =~ /^([0-9a-f]{12}) /mg), join('', map { "$_\n" } @want),
        'the three hash prefixes (12 hex), sorted';
    ($rc, $out) = cli('key-list', 'ghost');
    is scalar(split /\n/, $out), 21, "ghost's 21 keys";
    ($rc, $out) = cli('key-list', 'balonly');
    is "$rc $out", '0 ', 'an account without keys: nothing';
    ($rc) = cli('key-del', $k);
    is $rc, 0, 'key-del of a key-new key';
    ($rc, $out) = cli('key-list', 'acme');
    is scalar(split /\n/, $out), 2, '... gone from key-list';
}
usage_ok('key-new without an account', 'key-new');
usage_ok('key-new with two', 'key-new', 'a', 'b');
usage_ok('key-new with a bad account', 'key-new', 'a b');
usage_ok('key-list without an account', 'key-list');

# --- ledger: the human lines, the exports
{
    # charges from the module (with and without "type"), an opening and
    # credits from the CLI; explicit stream ids for the module's entries:
    # the second stored 12 hours before its ts (a relay clock ahead), the
    # fourth a charge of 2025 replayed from a journal in 2026
    my $T = 1767225600;    # 2026-01-01T00:00:00Z
    my ($RA, $RB, $RC, $RD) = map { 'r' . $_ x 31 } qw(a b c d);
    my @raw = (
        [ ($T - 86400) * 1000 . '-0', request_id => $RA, ts => $T - 1,
          channel => 'fast', model => 'gemini-2.5-flash-image', prompt_tokens => 0,
          completion_tokens => 0, charge => 700, balance_after => 119097 ],
        [ ($T - 43200) * 1000 . '-0', type => 'charge', request_id => $RB,
          ts => $T, channel => 'metered', model => 'gemini-2.5-flash-image',
          prompt_tokens => 560, completion_tokens => 1120, charge => 2465,
          balance_after => 116632 ],
        [ ($T + 129600) * 1000 . '-0', request_id => $RC, ts => $T + 129600,
          channel => 'metered', model => 'gemini-3-pro-image-preview', prompt_tokens => 1210,
          completion_tokens => 2000, charge => 17232, balance_after => 99400 ],
        [ ($T + 129601) * 1000 . '-0', type => 'charge', request_id => $RD, ts => $T - 3600,
          channel => 'fast', model => 'gemini-2.5-flash-image', prompt_tokens => 0,
          completion_tokens => 0, charge => 700, balance_after => 98700 ],
    );
    $h->redis('XADD', 'imgbill:{exp}:ledger', @$_) for @raw;
    $h->redis('SET', 'imgbill:{exp}:balance', 98700);
    my ($rc, $out) = cli('topup', 'exp', '10', '--reason', 'bank transfer 0042');
    is "$rc $out", "0 19.8700\n", 'topup of the export account';
    ($rc, $out) = cli('adjust', 'exp', '-0.2465', '--reason', 'refund, "duplicate" #7');
    is "$rc $out", "0 19.6235\n", 'adjust with a comma and quotes in the reason';
    ($rc, $out) = cli('adjust', 'exp', '+1', '--reason', '赔偿 goodwill');
    is "$rc $out", "0 20.6235\n", 'adjust with UTF-8 in the reason';
    my @e = entries('exp');
    is scalar @e, 8, '4 charges, opening, credit, 2 adjustments';
    is_deeply [ map { $_->{f}{type} // '-' } @e ],
              [ qw(- charge - charge opening credit adjustment adjustment) ], 'types';
    is $e[4]{f}{amount}, 119797, 'opening: 98700 + 700 + 2465 + 17232 + 700';
    my @id = map { $_->{id} } @e;
    my @ts = map { $_->{f}{ts} } @e;
    my @N = map { iso($_) } @ts;
    is $ts[4], $ts[5], 'the opening has the time of the credit it came with';

    # human
    my @human = (
        "2025-12-31T23:59:59Z $RA fast gemini-2.5-flash-image in=0 out=0 charge=0.0700 balance=11.9097\n",
        "2026-01-01T00:00:00Z $RB metered gemini-2.5-flash-image in=560 out=1120 charge=0.2465 balance=11.6632\n",
        "2026-01-02T12:00:00Z $RC metered gemini-3-pro-image-preview in=1210 out=2000 charge=1.7232 balance=9.9400\n",
        "2025-12-31T23:00:00Z $RD fast gemini-2.5-flash-image in=0 out=0 charge=0.0700 balance=9.8700\n",
        "$N[4] opening amount=+11.9797 balance=9.8700 reason=opening balance\n",
        "$N[5] credit amount=+10.0000 balance=19.8700 reason=bank transfer 0042\n",
        "$N[6] adjustment amount=-0.2465 balance=19.6235 reason=refund, \"duplicate\" #7\n",
        "$N[7] adjustment amount=+1.0000 balance=20.6235 reason=赔偿 goodwill\n",
    );
    ($rc, $out) = cli('ledger', 'exp');
    is $out, join('', @human), 'ledger: every type, one line each, in stream order';
    ($rc, $out) = cli('ledger', 'exp', '2');
    is $out, join('', @human[6, 7]), 'ledger N=2: the last two';
    ($rc, $out) = cli('ledger', 'exp', '--since', '2026-01-02');
    is $out, join('', @human[2, 4 .. 7]), 'ledger --since 2026-01-02: by ts';
    ($rc, $out) = cli('ledger', 'exp', '1', '--since', '2026-01-01');
    is $out, $human[7], 'N and --since: the last one';

    # JSON
    my @all = (
        { id => $id[0], ts => $T - 1, time => '2025-12-31T23:59:59Z', type => 'charge',
          amount => '-0.0700', balance_after => '11.9097', request_id => $RA,
          channel => 'fast', model => 'gemini-2.5-flash-image', prompt_tokens => 0,
          completion_tokens => 0, images => 1 },
        { id => $id[1], ts => $T, time => '2026-01-01T00:00:00Z', type => 'charge',
          amount => '-0.2465', balance_after => '11.6632', request_id => $RB,
          channel => 'metered', model => 'gemini-2.5-flash-image', prompt_tokens => 560,
          completion_tokens => 1120, images => 1 },
        { id => $id[2], ts => $T + 129600, time => '2026-01-02T12:00:00Z', type => 'charge',
          amount => '-1.7232', balance_after => '9.9400', request_id => $RC,
          channel => 'metered', model => 'gemini-3-pro-image-preview', prompt_tokens => 1210,
          completion_tokens => 2000, images => 1 },
        { id => $id[3], ts => $T - 3600, time => '2025-12-31T23:00:00Z', type => 'charge',
          amount => '-0.0700', balance_after => '9.8700', request_id => $RD,
          channel => 'fast', model => 'gemini-2.5-flash-image', prompt_tokens => 0,
          completion_tokens => 0, images => 1 },
        { id => $id[4], ts => $ts[4], time => $N[4], type => 'opening', amount => '11.9797',
          balance_after => '9.8700', reason => 'opening balance' },
        { id => $id[5], ts => $ts[5], time => $N[5], type => 'credit', amount => '10.0000',
          balance_after => '19.8700', reason => 'bank transfer 0042' },
        { id => $id[6], ts => $ts[6], time => $N[6], type => 'adjustment', amount => '-0.2465',
          balance_after => '19.6235', reason => 'refund, "duplicate" #7' },
        { id => $id[7], ts => $ts[7], time => $N[7], type => 'adjustment', amount => '1.0000',
          balance_after => '20.6235', reason => "\x{8d54}\x{507f} goodwill" },
    );
    ($rc, $out) = cli('ledger', 'exp', '--json');
    is $rc, 0, 'ledger --json: exit 0';
    my $j = eval { JSON::PP->new->utf8->decode($out) };
    is_deeply $j, \@all, 'every entry, in stream order, money as decimal strings, tokens as numbers'
        or diag $out;
    like $out, qr/"prompt_tokens":560,/, 'numbers unquoted';
    like $out, qr/"amount":"-0\.2465"/, 'amounts quoted';
    my $sum = 0;
    for (@$j) { (my $u = $_->{amount}) =~ s/\.//; $sum += $u }
    is $sum, 206235, 'the amounts add up to the balance';

    ($rc, $out) = cli('ledger', 'exp', '--json', '--since', '2026-01-01');
    $j = eval { JSON::PP->new->utf8->decode($out) };
    is_deeply $j, [ @all[1, 2, 4 .. 7] ],
        '--since 2026-01-01, by ts: from 00:00:00 on (stored 12 hours before), '
        . 'not the replayed charge of 2025 (stored after)';
    ($rc, $out) = cli('ledger', 'exp', '--since=2026-01-02', '--json');
    $j = eval { JSON::PP->new->utf8->decode($out) };
    is_deeply $j, [ @all[2, 4 .. 7] ], '--since 2026-01-02';
    ($rc, $out) = cli('ledger', 'exp', '--json', '--since', '2099-01-01');
    is "$rc $out", "0 []\n", '--since the future: an empty array';
    ($rc, $out) = cli('ledger', 'nothing', '--json');
    is "$rc $out", "0 []\n", 'an empty ledger: []';

    # CSV
    my $hdr = "id,time,ts,type,amount,balance_after,request_id,channel,model,"
            . "prompt_tokens,completion_tokens,reason,images,api\r\n";
    my @csv = (
        "$id[0],2025-12-31T23:59:59Z,${\ ($T - 1)},charge,-0.0700,11.9097,$RA,fast,gemini-2.5-flash-image,0,0,,1,\r\n",
        "$id[1],2026-01-01T00:00:00Z,$T,charge,-0.2465,11.6632,$RB,metered,gemini-2.5-flash-image,560,1120,,1,\r\n",
        "$id[2],2026-01-02T12:00:00Z,${\ ($T + 129600)},charge,-1.7232,9.9400,$RC,metered,gemini-3-pro-image-preview,1210,2000,,1,\r\n",
        "$id[3],2025-12-31T23:00:00Z,${\ ($T - 3600)},charge,-0.0700,9.8700,$RD,fast,gemini-2.5-flash-image,0,0,,1,\r\n",
        "$id[4],$N[4],$ts[4],opening,11.9797,9.8700,,,,,,opening balance,,\r\n",
        "$id[5],$N[5],$ts[5],credit,10.0000,19.8700,,,,,,bank transfer 0042,,\r\n",
        "$id[6],$N[6],$ts[6],adjustment,-0.2465,19.6235,,,,,,\"refund, \"\"duplicate\"\" #7\",,\r\n",
        "$id[7],$N[7],$ts[7],adjustment,1.0000,20.6235,,,,,,赔偿 goodwill,,\r\n",
    );
    ($rc, $out) = cli('ledger', 'exp', '--csv');
    is $rc, 0, 'ledger --csv: exit 0';
    is $out, join('', $hdr, @csv), 'CSV (RFC 4180): a header, every entry, quotes where needed';
    ($rc, $out) = cli('ledger', 'exp', '--csv', '--since', '2026-01-02');
    is $out, join('', $hdr, @csv[2, 4 .. 7]), 'CSV --since 2026-01-02';
    ($rc, $out) = cli('ledger', 'nothing', '--csv');
    is $out, $hdr, 'an empty ledger: the header';

    # a charge for several images says so, in every form
    $h->redis('XADD', 'imgbill:{imgs}:ledger', '1767225600000-0',
              type => 'charge', request_id => $RA, ts => $T, channel => 'fast',
              model => 'gemini-2.5-flash-image', prompt_tokens => 560,
              completion_tokens => 4480, images => 4, charge => 2800,
              balance_after => 7200);
    ($rc, $out) = cli('ledger', 'imgs');
    is $out, "2026-01-01T00:00:00Z $RA fast gemini-2.5-flash-image in=560 "
           . "out=4480 images=4 charge=0.2800 balance=0.7200\n",
       'ledger: a charge for 4 images says images=4';
    ($rc, $out) = cli('ledger', 'imgs', '--json');
    like $out, qr/"images":4,/, '--json: images, a number';
    ($rc, $out) = cli('ledger', 'imgs', '--csv');
    like $out, qr/,560,4480,,4,\r\n\z/, '--csv: the images column';

    # the API the client spoke, where the entry names it, in every form
    $h->redis('XADD', 'imgbill:{apis}:ledger', '1767225600000-0',
              type => 'charge', request_id => $RA, ts => $T, channel => 'metered',
              model => 'gpt-image-1', prompt_tokens => 50, completion_tokens => 1056,
              images => 1, charge => 3059, balance_after => 6941, api => 'openai_images');
    ($rc, $out) = cli('ledger', 'apis');
    is $out, "2026-01-01T00:00:00Z $RA metered gpt-image-1 in=50 out=1056 "
           . "api=openai_images charge=0.3059 balance=0.6941\n",
       'ledger: the API named, api=openai_images';
    ($rc, $out) = cli('ledger', 'apis', '--json');
    like $out, qr/"api":"openai_images"/, '--json: the API';
    ($rc, $out) = cli('ledger', 'apis', '--csv');
    like $out, qr/,50,1056,,1,openai_images\r\n\z/, '--csv: the api column';

    # an export never leaves half a file
    $h->redis('XADD', 'imgbill:{exp}:ledger', '*', type => 'charge', charge => 'x');
    ($rc, $out, my $err) = cli('ledger', 'exp', '--csv');
    is "$rc $out", '1 ', 'a bad entry: exit 1, no output';
    like $err, qr/charge is not an integer/, '... says which';
    ($rc, $out) = cli('ledger', 'exp', '1');
    like $out, qr/ charge=\? /, 'the human listing shows it as "?"';
}
usage_ok('ledger --json --csv', 'ledger', 'exp', '--json', '--csv');
usage_ok('ledger --json with N', 'ledger', 'exp', '5', '--json');
usage_ok('ledger --since without a date', 'ledger', 'exp', '--since');
usage_ok('ledger --since 2026-1-1', 'ledger', 'exp', '--since', '2026-1-1');
usage_ok('ledger --since 2026-02-30', 'ledger', 'exp', '--since', '2026-02-30');
usage_ok('ledger --since yesterday', 'ledger', 'exp', '--json', '--since', 'yesterday');
usage_ok('ledger --xml', 'ledger', 'exp', '--xml');

# --- concurrent topups and adjustments: every one a ledger entry, in order
{
    cli('topup', 'busy', '--create', '100');
    my @pids;
    for my $p (1 .. 6) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            $ENV{IMGBILL_REDIS} = $h->redis_addr;
            open STDOUT, '>', '/dev/null';
            open STDERR, '>', '/dev/null';
            for my $i (1 .. 5) {
                system $^X, $CLI, 'topup', 'busy', "0.000$i", '--reason', "p$p";
                system $^X, $CLI, 'adjust', 'busy', '-0.0001', '--reason', "p$p";
            }
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    waitpid $_, 0 for @pids;
    # 6 x (1+2+3+4+5 - 5) units
    is $h->balance('busy'), 1000000 + 6 * 10, 'balance after 60 concurrent writes';
    my @e = entries('busy');
    is scalar @e, 61, 'one entry each';
    my ($bal, $chain) = (0, 1);
    for (@e) {
        $bal += $_->{f}{amount};
        $chain = 0 unless $_->{f}{balance_after} == $bal;
    }
    ok $chain, 'each balance_after is the previous one plus its amount';
    my ($rc, $out) = cli('audit', 'busy');
    is "$rc $out", "0 busy balance=100.0060 ledger=100.0060 drift=0 ok\n", 'audit ok';
}

# --- installed: a symlink in another directory, run from elsewhere
{
    my $dir = tempdir(CLEANUP => 1);
    mkdir "$dir/bin" or die;
    symlink $CLI, "$dir/bin/imgbill" or die "symlink: $!";
    symlink "$dir/bin/imgbill", "$dir/bin/ib" or die "symlink: $!";
    mkdir "$dir/work" or die;
    my $perl_dir = $^X =~ m{^(.*)/[^/]+$} ? $1 : '/usr/bin';
    my $path = "$dir/bin:$perl_dir:/usr/bin:/bin";
    for my $name ('imgbill', 'ib') {
        my $sh = "cd '$dir/work' && $name topup acme 0.0001 --reason 'via $name' && "
               . "$name balance acme && pwd";
        my $o = `env -i PATH='$path' HOME='$dir' IMGBILL_REDIS=${\ $h->redis_addr } sh -c "$sh" 2>&1`;
        is $?, 0, "the CLI through a symlink ($name), cwd elsewhere, no PERL5LIB: exit 0";
        is $o, sprintf("%s\n%s\n%s/work\n", ($name eq 'ib' ? ('12.0002') x 2 : ('12.0001') x 2), $dir),
            '... topup and balance work';
    }
    is((entries('acme'))[-1]{f}{reason}, 'via ib', 'the last entry is the symlink\'s');
}

unlike $h->cli_printed, qr/\Qsk-81-\E/, 'the CLI never printed a raw key it was given';

done_testing;
