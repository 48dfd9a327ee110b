# imgbill_reply_memory: whole replies stay in memory while the worker's
# budget allows, and wait in temporary files once it is spent, so that a
# worker with memory to spare sends an image from memory, and slow readers
# of many large replies cannot swell it: 24 replies of 4 MB (a budget of
# 8 MB: two fit) whose clients read nothing until every one is settled
# keep the worker's memory within the budget and a few MB, and every reply
# still arrives byte for byte.  Replies one after another reuse one buffer
# (the worker's spare), which an idle worker gives back.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use POSIX ();
use Digest::SHA qw(sha256_hex);
use Socket qw(SOL_SOCKET SO_RCVBUF);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for);
use Imgbill::Fixture qw(reply_json write_fixture fixture_location relay_location
                        worker_pid);

my $BUDGET_MB = 8;
my $REPLY_MB = 4;
my $N = $ENV{IMGBILL_VALGRIND_DIR} ? 8 : 24;

my $fx = tempdir(CLEANUP => !$ENV{IMGBILL_KEEP});
my $json = reply_json($REPLY_MB * 1_000_000);
my $sha = write_fixture($fx, 'big', $json);

my $h = Imgbill::Harness->new(
    extra_http => "imgbill_reply_memory ${BUDGET_MB}m;\nimgbill_memory_trim 1s;\n",
    # the clients wait on purpose, past nginx's 60 s if the machine is busy
    extra_server => fixture_location($fx)
        . relay_location('/mem/v1/chat/completions', 'big.json', 'imgbill fast;',
                         'send_timeout 10m;'));

my $body = '{"model":"gemini-2.5-flash-image","messages":[{"role":"user","content":"koi"}]}';
sub post {
    my ($key) = @_;
    return $h->raw_send(path => '/mem/v1/chat/completions', body => $body, key => $key,
                        headers => ['Content-Type' => 'application/json']);
}
# a reply read raw, to its end: its status and body.  The harness's reader
# also decodes the JSON, a second a MB, and replies read through it would
# come further apart than a trim tick
sub read_raw {
    my ($s) = @_;
    my $raw = '';
    1 while sysread $s, $raw, 1 << 20, length $raw;
    my ($head, $got) = split /\r\n\r\n/, $raw, 2;
    my ($st) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
    return ($st // 0, $got // '');
}
sub read_whole {
    my ($st, $got) = read_raw($_[0]);
    return $st == 200 && sha256_hex($got) eq $sha;
}
sub spilled {
    my @l = $h->error_log =~ /an upstream reply waits in a temporary file/g;
    return scalar @l;
}
my $master = $h->{nginx_pid};
sub rss_kb {
    my $w = worker_pid($master) or return 0;
    open my $f, '<', "/proc/$w/status" or return 0;
    local $/;
    my ($kb) = <$f> =~ /^VmRSS:\s+(\d+) kB/m;
    return $kb // 0;
}

# ---- one reply, a worker with memory to spare: no file ------------------------
my ($acct, $key) = $h->fresh_account(prefix => 'mem', units => 1000000);
{
    my $before = spilled();
    my $res = $h->raw_reply(post($key));
    is $res->{status}, 200, "a $REPLY_MB MB reply within the budget: 200";
    ok sha256_hex($res->{body} // '') eq $sha, '... byte for byte';
    is $res->{headers}{'x-imgbill-charge'}, '0.0700', '... charged';
    is spilled() - $before, 0, '... sent from memory, no temporary file';
}

# ---- one after another: the same buffer, its pages mapped once ----------------
# glibc maps a 4 MB buffer afresh for each reply and unmaps it after; the
# worker keeps it as a spare instead, so ten replies fault in about one
# buffer's pages (1,000), not ten (10,000)
sub minflt {
    my $w = worker_pid($master) or return 0;
    open my $f, '<', "/proc/$w/stat" or return 0;
    my $stat = <$f>;
    $stat =~ s/^.*\) //s;
    return (split ' ', $stat)[7];
}
my $in_turn = 0;
unless ($ENV{IMGBILL_VALGRIND_DIR}) {
    my $pages = int($REPLY_MB * 1_000_000 / 4096);
    my $f0 = minflt();
    my $ok = 0;
    for (1 .. 10) {
        $in_turn++;
        $ok++ if read_whole(post($key));
    }
    my $faults = minflt() - $f0;
    is $ok, 10, "ten $REPLY_MB MB replies one after another: whole";
    note "worker page faults for them: $faults ($pages pages a reply)";
    cmp_ok $faults, '<', 2 * $pages, '... their buffer\'s pages faulted in about once, not ten times';

    # once it waited a whole trim tick (1 s here) for a reply, it is freed
    my $held = rss_kb();
    ok wait_for(sub { rss_kb() < $held - 3 * 1024 }, 15),
        '... and an idle worker gives the spare back at a trim tick'
        or diag "RSS $held KiB, now " . rss_kb();
}

# ---- many slow readers: the budget holds ---------------------------------------
my $idle = rss_kb();
my $spilled0 = spilled();
my @socks = map {
    my $s = post($key);
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 65536);
    $s;
} 1 .. $N;
ok wait_for(sub { $h->balance($acct) == 1000000 - (1 + $in_turn + $N) * 700 }, 60),
   "$N slow readers of $REPLY_MB MB replies: all settled while none reads";
my $peak = 0;
for (1 .. 10) {
    my $kb = rss_kb();
    $peak = $kb if $kb > $peak;
    select undef, undef, undef, 0.05;
}
my $files = spilled() - $spilled0;
note sprintf 'worker RSS idle %d KiB, with %d replies held %d KiB: +%.1f MiB (budget %d MiB); '
    . '%d of them in temporary files', $idle, $N, $peak, ($peak - $idle) / 1024, $BUDGET_MB, $files;
cmp_ok $peak - $idle, '<=', ($BUDGET_MB + 8) * 1024,
    'worker memory grew by at most the budget and 8 MiB';
cmp_ok $files, '>=', $N - int($BUDGET_MB / $REPLY_MB),
    'the replies past the budget waited in temporary files';
cmp_ok $files, '<', $N, '... and those within it in memory';

# read at once, each in a process of its own (a 64 KiB window read in turn
# takes seconds a reply), and raw: the harness would decode 4 MB of JSON
my @kids;
for my $i (0 .. $#socks) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my ($st, $got) = read_raw($socks[$i]);
        open my $f, '>', "$fx/read-$i" or POSIX::_exit(1);
        printf $f "%s %d %s\n", $st, length $got, sha256_hex($got);
        close $f;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid $_, 0 for @kids;
close $_ for @socks;
my $bad = 0;
for my $i (0 .. $#socks) {
    open my $f, '<', "$fx/read-$i" or do { $bad++; next };
    my ($st, $len, $got) = split ' ', scalar <$f>;
    next if $st == 200 && $got eq $sha;
    $bad++;
    diag sprintf 'status %s, %d bytes of %d', $st, $len, length $json;
}
is $bad, 0, "all $N replies arrive whole, byte for byte";
is scalar @{ $h->ledger($acct) }, 1 + $in_turn + $N, 'one ledger entry each';
ok $h->wait_holds($acct, 0, 10), 'no hold left';

# ---- the budget is the worker's again once the replies are gone ------------
{
    my $before = spilled();
    ok read_whole(post($key)), 'afterwards, a reply: whole';
    is spilled() - $before, 0, '... and in memory again: the budget was given back';
}

my @crashes = $h->crashes;
is scalar @crashes, 0, 'no worker crashed' or diag join "\n", @crashes;

done_testing;
