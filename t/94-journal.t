# Redis gone at settlement, after the upstream produced the image: the client
# still gets its image, the charge waits in the journal and is applied exactly
# once when Redis is back; an admission lost in flight leaves no hold behind.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);

my $h = Imgbill::Harness->new;
my $journal = $h->dir . '/imgbill.journal';


# lines appended to the journal as a worker would, then a reload: each new
# worker replays what is owed
sub replay {
    open my $j, '>>', $journal or die "$journal: $!";
    print $j @_;
    close $j;
    kill 'HUP', $h->{nginx_pid};
}
$h->account('jr', 'sk-journal', 1000000);

sub lines { -e $journal ? do { local @ARGV = $journal; <> } : () }

my $rp = $h->{redis_pid};
ok $rp, 'found the test redis-server';

# a generation of 2 s; Redis freezes 0.5 s in, so the settle times out (1 s)
my $wait = $h->in_flight(1, key => 'sk-journal', mock => 'sleep=2');
ok $h->wait_holds('jr', 1, 5), 'admitted, hold placed';
sleep 0.5;
kill 'STOP', $rp;

# an admission sent on the connection to the frozen Redis: its reply never
# comes (imgbill_redis_timeout), so it may have held: 503, and journaled
# as lost in flight
my $res = $h->chat(key => 'sk-journal');
is $res->{status}, 503, 'admission while frozen: 503';
is $res->{json}{error}{code}, 'billing_unavailable', '... billing_unavailable';
my @r = grep { /^R / } lines();
is scalar @r, 1, 'the lost admission is journaled';

my ($got) = $wait->();
is $got, '200 0.2465', 'the client got its image and its charge while Redis was frozen';

my @s = grep { /^S / } lines();
is scalar @s, 1, 'one settlement journaled';
like $s[0] // '', qr/^S [0-9a-f]{32} jr 2465 metered 560 1120 gemini-2\.5-flash-image 1 openai k=[0-9a-f]{12} t=\d+$/,
    '... with request id, account, charge, channel, tokens, model, images, API, key and the time decided';

kill 'CONT', $rp;

# Whether Redis still runs the commands sent before their connections were
# dropped is up to TCP and Redis; either way is fine, and both are covered:
# a late settle makes the replay a no-op, a lost one makes it the charge.
sleep 0.5;
my $late = $h->balance('jr') == 1000000 - 2465;
note $late ? 'the frozen settle ran late in Redis; the replay must not repeat it'
           : 'the frozen settle never ran; the replay must apply it';
ok $h->balance('jr') == 1000000 || $late, 'before replay: charged once or not yet';
# the once-a-second replay may have run already: then the hold is gone
ok scalar(keys %{ $h->holds('jr') }) >= 1 || -z $journal,
   'a stray hold waits for the replay (unless the idle replay took it)';

# the next request reconnects; the worker replays the journal
$res = $h->chat(key => 'sk-journal');
is $res->{status}, 200, 'next request after Redis is back: 200';
ok wait_for(sub { -z $journal }, 5),
   'both journal lines replayed, then the journal emptied';
like $h->error_log, qr/replaying 2 of 2 owed journal line/, '... as the log says';

is $h->balance('jr'), 1000000 - 2 * 2465,
    'the journaled charge was not applied a second time: two charges in all';
is scalar @{ $h->ledger('jr') }, 2, 'two ledger entries';
my %ids; $ids{ $_->{request_id} }++ for @{ $h->ledger('jr') };
is scalar(grep { $_ > 1 } values %ids), 0, 'no request id twice in the ledger';
ok $h->wait_holds('jr', 0, 5), 'the stray hold was released by the replay';

# Redis really down at settlement (not frozen): the charge is applied from
# the journal alone
my $before = $h->balance('jr');
$wait = $h->in_flight(1, key => 'sk-journal', mock => 'sleep=1.5');
ok $h->wait_holds('jr', 1, 5), 'admitted';
$h->redis_stop(keep => 1);    # its data comes back, as persistence would
($got) = $wait->();
is $got, '200 0.2465', 'Redis down at settlement: the client still got its image';
$h->redis_start;
$res = $h->chat(key => 'sk-journal');
is $res->{status}, 200, 'Redis back: 200';
ok wait_for(sub { $h->balance('jr') == $before - 2 * 2465 }, 5),
   'the journaled charge was applied, once, besides the new one';
is scalar(grep { $_->{request_id} eq '' } @{ $h->ledger('jr') }), 0, 'ledger entries carry ids';
# replaying a settlement Redis already has is a no-op: a journal line for a
# request that was charged and marked, then a reconnection
{
    my ($old) = @{ $h->ledger('jr') };
    my $bal = $h->balance('jr');
    open my $j, '>>', $journal or die;
    print $j "S $old->{request_id} jr 2465 metered 560 1120 gemini-2.5-flash-image\n";
    close $j;
    $h->redis('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    $res = $h->chat(key => 'sk-journal');
    is $res->{status}, 200, 'after a dropped connection: 200, and a replay';
    ok wait_for(sub { -z $journal }, 5),
       'the already-settled line was replayed, the journal emptied';
    is $h->balance('jr'), $bal - 2465, 'only the new request was charged';
    my %ids; $ids{ $_->{request_id} }++ for @{ $h->ledger('jr') };
    is scalar(grep { $_ > 1 } values %ids), 0, 'still no request id twice in the ledger';
}

# a charge replayed after midnight keeps the time it was decided at: its
# ledger entry and its day's usage are the day before's
{
    my $midnight = int(time / 86400) * 86400;
    my $decided = $midnight - 1;
    my @d = gmtime $decided;
    my $day = sprintf '%04d-%02d-%02d', $d[5] + 1900, $d[4] + 1, $d[3];
    my $rid = 'd' x 32;
    open my $j, '>>', $journal or die;
    print $j "S $rid jr 1234 metered 1 1 gemini-2.5-flash-image 1 openai t=$decided\n";
    close $j;
    $h->redis('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    $h->chat(key => 'sk-journal');
    ok wait_for(sub { grep { $_->{request_id} eq $rid } @{ $h->ledger('jr') } }, 5),
       'a charge decided at 23:59:59 the day before, replayed now';
    my ($e) = grep { $_->{request_id} eq $rid } @{ $h->ledger('jr') };
    is $e->{ts}, $decided, '... its ledger entry has the time it was decided at';
    is $h->redis('HGET', '{jr}' =~ s/^/imgbill:/r . ':daily', $day), 1234,
       "... and it counts in ${day}'s usage, not today's";
}

# Redis comes back and nobody calls: the worker retries by itself, the
# charge lands without waiting for traffic
{
    my $bal = $h->balance('jr');
    my $entries = @{ $h->ledger('jr') };
    my $wait = $h->in_flight(1, key => 'sk-journal', mock => 'sleep=1');
    ok $h->wait_holds('jr', 1, 5), 'idle replay: admitted';
    $h->redis_stop(keep => 1);
    my ($got) = $wait->();
    is $got, '200 0.2465', 'idle replay: the client got its image';
    ok !-z $journal, '... and the charge is in the journal';
    $h->redis_start;
    ok wait_for(sub { $h->balance('jr') == $bal - 2465 }, 5),
       'with no request at all, the charge is applied once Redis is back';
    ok wait_for(sub { -z $journal }, 5), '... and the journal emptied';
    is scalar @{ $h->ledger('jr') }, $entries + 1, '... with its ledger entry';
}

# A long outage leaves a long journal: 60,000 settled pairs (over 5 MB)
# before the one line still owed, which must not be lost behind them
{
    my $bal = $h->balance('jr');
    open my $j, '>>', $journal or die;
    for my $n (1 .. 60000) {
        my $id = sprintf 'f%031x', $n;
        print $j "S $id ghost 100 metered 1 1 gemini-2.5-flash-image\n";
        print $j "D $id\n";
    }
    print $j "S " . ('e' x 32) . " jr 777 fast 0 0 gemini-2.5-flash-image\n";
    close $j;
    cmp_ok -s $journal, '>', 5 * 1024 * 1024, 'a journal of over 5 MB';
    $h->redis('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    my $res = $h->chat(key => 'sk-journal', path => '/fast/v1/chat/completions');
    is $res->{status}, 200, 'a request reconnects';
    ok wait_for(sub { $h->balance('jr') == $bal - 700 - 777 }, 10),
       'the owed line at the end of a long journal was applied';
    ok wait_for(sub { -z $journal }, 10), '... and the journal emptied';
    is $h->redis('EXISTS', 'imgbill:{ghost}:balance'), 0,
       'settled lines were not replayed';
}

# lines left by workers that are gone: new workers take them up by
# themselves after a reload
{
    my $bal = $h->balance('jr');
    replay("S " . ('a' x 32) . " jr 333 fast 0 0 gemini-2.5-flash-image\n");
    ok wait_for(sub { $h->balance('jr') == $bal - 333 }, 10),
       'after a reload, new workers replay what old ones left, unasked';
    ok wait_for(sub { -z $journal }, 5), '... and the journal emptied';
}

# V lines (a charge given back: its reply was never written), replayed
# with the S lines they answer, in either order: a settle then its
# reversal comes to a charge and a reversal entry; a reversal first marks
# the request, and its settle then charges nothing.  Each once, however
# often the lines are replayed.
{
    my $bal = $h->balance('jr');
    my ($first, $later) = ('f' x 32, '9' x 32);
    my $now = int time;
    replay("S $first jr 2465 metered 560 1120 gemini-2.5-flash-image 1\n",
           "V $first/v jr $now\n",
           "V $later/v jr $now\n",
           "S $later jr 700 fast 0 0 gemini-2.5-flash-image 1\n");
    ok wait_for(sub { -z $journal }, 10), 'V lines: replayed, the journal emptied';
    is $h->balance('jr'), $bal, '... and the balance is what it was';
    my @e = grep { $_->{request_id} && ($_->{request_id} eq $first
                                        || $_->{request_id} eq $later) }
            @{ $h->ledger('jr') };
    is join(' ', map { ($_->{type} // 'charge') . ':' . ($_->{charge} // $_->{amount})
                       . ':' . substr($_->{request_id}, 0, 1) } @e),
       'charge:2465:f reversal:2465:f',
       '... a settle then its reversal: both entries; a reversal first: none';
    is $h->redis('GET', "imgbill:{jr}:settled:$later"), 'reversed',
       '... that request marked reversed';
    like $h->error_log, qr{journaled|replaying}, '... as the log says';
}

# The API an S line names goes into the ledger entry; a line of an older
# imgbill names none, and its entry has no api; a name that no API table
# could have written makes the line unreadable
{
    my $bal = $h->balance('jr');
    my ($named, $old, $bad) = ('1' x 32, '2' x 32, '3' x 32);
    replay("S $named jr 3059 metered 50 1056 gpt-image-1 3 openai_images\n",
           "S $old jr 100 fast 0 0 gemini-2.5-flash-image 1\n",
           "S $bad jr 100 fast 0 0 gemini-2.5-flash-image 1 Open-AI\n");
    ok wait_for(sub { -z $journal }, 10), 'API names: replayed, the journal emptied';
    is $h->balance('jr'), $bal - 3159, '... the two readable lines applied';
    my %e = map { $_->{request_id} => $_ } grep { $_->{request_id} } @{ $h->ledger('jr') };
    is $e{$named}{api}, 'openai_images', '... the API named in its entry';
    is $e{$named}{images}, 3, '... beside its images';
    ok $e{$old} && !exists $e{$old}{api}, '... an older line\'s entry without one';
    ok !$e{$bad}, '... and the line with a bad name not applied';
    like $h->error_log, qr/\[alert\][^\n]*the journal line "S \Q$bad\E [^"]*Open-AI" cannot be read/,
         '... but named at alert';
}

# A journal written before lines were whole: a partial line with the next
# one appended onto it, and one cut short at the end.  The replay applies
# what it can read, names what it cannot (once, at alert), and still
# empties the journal.
{
    my $bal = $h->balance('jr');
    my ($lost, $merged, $good) = ('7' x 32, '8' x 32, '6' x 32);
    replay("S $lost jrS $merged jr 999 fast 0 0 gemini-2.5-flash-image 1\n",
           "S $good jr 321 fast 0 0 gemini-2.5-flash-image 1\n",
           "S ${good}x jr 12");
    ok wait_for(sub { $h->balance('jr') == $bal - 321 }, 10),
       'a corrupted journal: the line it can read is applied';
    ok wait_for(sub { -z $journal }, 10), '... and the journal emptied all the same';
    my @alerts = $h->error_log =~ /\[alert\][^\n]*the journal line "S \Q$lost\E jrS \Q$merged\E [^"]*" cannot be read: skipped/g;
    is scalar @alerts, 1, '... the merged line named once, at alert';
    is $h->balance('jr'), $bal - 321, '... nothing else applied';
}

# Lines replayed together go to Redis in one script call; a command that
# fails there (an operator broke an account's balance key) fails alone: the
# other line is applied, the broken one stays owed, nothing of it is
# marked, and once the key is mended the retry applies it, once.
{
    my $bal = $h->balance('jr');
    my ($bad, $good) = ('b' x 32, 'c' x 32);
    $h->redis('HSET', 'imgbill:{broken}:balance', 'oops', 1);
    open my $j, '>>', $journal or die;
    print $j "S $bad broken 444 fast 0 0 gemini-2.5-flash-image\n";
    print $j "S $good jr 555 fast 0 0 gemini-2.5-flash-image\n";
    close $j;
    $h->redis('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    my $res = $h->chat(key => 'sk-journal', path => '/fast/v1/chat/completions');
    is $res->{status}, 200, 'a request reconnects and starts the replay';
    ok wait_for(sub { $h->balance('jr') == $bal - 700 - 555 }, 10),
       'the good line of the call was applied';
    ok wait_for(sub { $h->error_log =~ /WRONGTYPE[^\n]* to settle/ }, 5),
       'the broken one failed alone, as the log says';
    ok !-z $journal, '... and is still owed';
    is $h->redis('EXISTS', "imgbill:{broken}:settled:$bad"), 0,
       '... with no settled marker left behind';
    $h->redis('DEL', 'imgbill:{broken}:balance');
    $h->redis('SET', 'imgbill:{broken}:balance', 10000);
    ok wait_for(sub { $h->redis('GET', 'imgbill:{broken}:balance') == 10000 - 444 }, 10),
       'mended, the retry applied it';
    ok wait_for(sub { -z $journal }, 5), '... and the journal emptied';
    is $h->balance('jr'), $bal - 700 - 555, 'the good line was not applied twice';
    is scalar(grep { $_->{request_id} eq $good } @{ $h->ledger('jr') }), 1,
       '... and has one ledger entry';
}

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
