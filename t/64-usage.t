# A key holder's usage read costs Redis the days it asks for, not the
# ledger's length: an account with 300,000 ledger entries this month polls
# GET /v1/dashboard/billing/usage (as NextChat does) from 8 clients while
# another account's calls go on, every one of them answered, and the
# reads past conf.d's limit_req answered 429 in the API's shape.  Before
# `imgbill usage-backfill` such an old ledger is not summed at all (503
# usage_unavailable, not a stall); after it, the sum is exact.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok wait_for);
use POSIX qw(_exit);

my $h = Imgbill::Harness->new;
my ($big, $bkey) = $h->fresh_account(prefix => 'big', units => 10_000_000);
my ($other, $okey) = $h->fresh_account(prefix => 'other', units => 10_000_000);

# 300,000 charges of 1 unit, this month, written as an imgbill from before
# the per-day totals wrote them: in the ledger only
my $now = $h->redis('TIME')->[0];
my @g = gmtime $now;
my $month = $now - ($g[3] - 1) * 86400 - $now % 86400;
my $n = 300_000;
$h->redis('EVAL', <<'EOL', 1, "imgbill:{$big}:ledger", $month * 1000, ($now - $month) * 1000, $n);
local base, span, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
  redis.call('XADD', KEYS[1], string.format('%d-%d', base + math.floor(span * (i - 1) / n), i),
             'type', 'charge', 'charge', 1)
end
EOL
is $h->redis('XLEN', "imgbill:{$big}:ledger"), $n, "$n ledger entries this month";

my $usage = sub { $h->request('GET', '/v1/dashboard/billing/usage', undef,
                              Authorization => "Bearer $_[0]") };

my $res = $usage->($bkey);
error_ok($res, 503, 'server_error', 'usage_unavailable',
         'before the backfill: 503 usage_unavailable, nothing summed');
like $res->{json}{error}{message}, qr/imgbill usage-backfill/, '... naming the command';

my ($rc, $out) = $h->cli('usage-backfill', $big);
like "$rc|$out", qr/^0\|\Q$big\E charges=$n days=\d+\n\z/, "usage-backfill: $n charges";

# one read's Redis time, from the slow log
$h->redis('CONFIG', 'SET', 'slowlog-log-slower-than', 0);
$h->redis('SLOWLOG', 'RESET');
$res = $usage->($bkey);
my ($slow) = grep { $_->[3][0] =~ /^EVAL/i } @{ $h->redis('SLOWLOG', 'GET', 100) };
$h->redis('CONFIG', 'SET', 'slowlog-log-slower-than', 10000);
is $res->{status}, 200, 'after it: 200';
cmp_ok $res->{json}{total_usage}, '==', 3000, '... 300,000 units: 3000.00 hundredths';
ok($slow, 'the read is one script call')
    and diag "one usage read: $slow->[2] us of Redis time";

# 8 pollers while the other account makes 60 fast calls
my @kids;
my $stop = $h->dir . '/stop';
for (1 .. 8) {
    my $pid = fork // die;
    if (!$pid) {
        # conf.d's limit_req answers most of them 429, before Redis;
        # none may fail otherwise
        my %st;
        $st{ $usage->($bkey)->{status} }++ until -e $stop;
        open my $f, '>', $h->dir . "/poller-$$" or _exit(1);
        print $f join(' ', map { "$_:$st{$_}" } sort keys %st), "\n";
        close $f;
        _exit(0);
    }
    push @kids, $pid;
}
my %st;
for (1 .. 60) {
    $st{ $h->chat(key => $okey, path => '/fast/v1/chat/completions')->{status} }++;
}
open my $f, '>', $stop or die;
close $f;
my %polled;
for my $pid (@kids) {
    waitpid $pid, 0;
    my $line = do { local (@ARGV, $/) = ($h->dir . "/poller-$pid"); <> } // '';
    $polled{$1} += $2 while $line =~ /(\d+):(\d+)/g;
}
is_deeply \%st, { 200 => 60 }, "while 8 clients poll the big account's usage, "
                               . "the other's 60 calls: all 200";
cmp_ok $polled{200} // 0, '>', 0, '... the usage reads answered 200 ('
                               . join(', ', map { "$_: $polled{$_}" } sort keys %polled) . ')';
is_deeply [ grep { $_ != 200 && $_ != 429 } keys %polled ], [],
          '... or 429 past the limit, never anything else';
ok wait_for(sub { ($h->balance($other) // 0) == 10_000_000 - 60 * 700 }),
   '... each charged 0.0700';

# the limit: 5 reads a second per key, bursts of 20; another key keeps its own
{
    my ($acct, $key) = $h->fresh_account(prefix => 'rl');
    my ($acct2, $key2) = $h->fresh_account(prefix => 'rl');
    my %st;
    $st{ $h->request('GET', '/v1/imgbill/account', undef,
                     Authorization => "Bearer $key")->{status} }++ for 1 .. 40;
    cmp_ok $st{429} // 0, '>=', 10, "40 reads at once: $st{200} answered, "
                                    . ($st{429} // 0) . ' limited';
    my $r = $h->request('GET', '/v1/models', undef, Authorization => "Bearer $key");
    error_ok($r, 429, 'rate_limit_error', 'rate_limit_exceeded',
             'one more read: 429 in OpenAI\'s shape');
    $r = $h->request('GET', '/v1beta/models', undef, 'x-goog-api-key' => $key);
    is $r->{status}, 429, 'Gemini\'s model list: 429 ...';
    is $r->{json}{error}{status}, 'RESOURCE_EXHAUSTED', '... in Google\'s shape';
    is $h->request('GET', '/v1/imgbill/account', undef,
                   Authorization => "Bearer $key2")->{status}, 200,
       'another key: 200';
    is $h->chat(key => $key)->{status}, 200, 'the limited key\'s relay calls: not limited';
}

done_testing;
