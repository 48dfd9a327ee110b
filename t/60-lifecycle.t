# Lifecycle: holds while a generation runs, client disconnects, concurrency,
# Redis going away and coming back without restarting nginx.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok wait_for);
use POSIX ();
use Time::HiRes qw(time sleep);

my $h = Imgbill::Harness->new(workers => 2);
my $FLASH = 'gemini-2.5-flash-image';

# a request on a socket of our own, to read its reply later (raw_reply) or
# to go away in the middle of it (close)
sub raw_start {
    my (%o) = @_;
    my $model = delete $o{model} // $FLASH;
    return $h->raw_send(%o, body => { model => $model,
                                      messages => [ { role => 'user', content => 'x' } ] });
}

# --- a hold exists while the generation runs, and goes when it is settled
subtest 'hold during generation, then settled' => sub {
    $h->account('busy', 'sk-busy', 100000);
    my $s = raw_start(key => 'sk-busy', mock => 'sleep=3');
    my $holds = $h->wait_holds('busy', 1, 2.5);
    ok $holds, 'a hold appears while the upstream works';
    my ($rid, $v) = %{ $holds || {} };
    like $rid // '', qr/^[0-9a-f]{32}$/, 'hold field is the request id';
    my ($units, $exp) = ($v // '') =~ /^(\d+):(\d+)$/;
    ok defined $units && $units > 0, "hold value is <units>:<expiry> ($v)";
    ok defined $exp && $exp > time && $exp <= time + 15 * 60 + 5,
        'expiry within imgbill_hold_ttl 15m';
    my $r = $h->raw_reply($s);
    is $r->{status}, 200, 'then the reply';
    is $r->{headers}{'x-imgbill-request-id'}, $rid, 'hold was keyed by this request id';
    is_deeply $h->holds('busy'), {}, 'hold gone after settlement';
    is $h->balance('busy'), 97535, 'charged once';
};

# --- the client goes away mid-generation
for my $case ([ 'metered', '/v1/chat/completions' ],
              [ 'fast', '/fast/v1/chat/completions' ]) {
    my ($ch, $path) = @$case;
    subtest "client disconnects mid-generation ($ch): hold released, nothing charged" => sub {
        my $acct = "gone$ch";
        $h->account($acct, "sk-gone-$ch", 100000);
        my $hits = $h->upstream_hits;
        my $s = raw_start(key => "sk-gone-$ch", mock => 'sleep=3', path => $path);
        # close once the hold is there and the upstream is at work (a slow
        # machine, or valgrind, may take a while to get there)
        ok $h->wait_holds($acct, 1, 2.5, 0.02), 'hold placed';
        ok wait_for(sub { $h->upstream_hits > $hits }, 2.5, 0.02),
            'the upstream is reached';
        close $s;
        ok $h->wait_holds($acct, 0, 10), 'hold released after the disconnect';
        is $h->upstream_hits, $hits + 1, 'the upstream was reached once';
        ok $h->upstream_idle(10), 'the upstream finished its (unwanted) reply';
        is $h->balance($acct), 100000, 'balance unchanged';
        is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
        is_deeply $h->holds($acct), {}, 'still no hold';
        is scalar @{ $h->redis('KEYS', "imgbill:{$acct}:settled:*") }, 0,
            'no settled marker';
    };
}

# --- a live hold of one request lowers what the next one may spend (fast)
subtest 'a running fast request holds its price' => sub {
    $h->account('pair', 'sk-pair', 1399);    # 0.0700 + 0.0699
    my $hits0 = $h->upstream_hits;
    my $s = raw_start(key => 'sk-pair', mock => 'sleep=3',
                      path => '/fast/v1/chat/completions');
    ok $h->wait_holds('pair', 1, 2.5), 'first request holds';
    ok wait_for(sub { $h->upstream_hits == $hits0 + 1 }, 2.5),
        'first request is at the upstream';
    my $hits = $h->upstream_hits;
    my $res = $h->chat(key => 'sk-pair', path => '/fast/v1/chat/completions');
    error_ok($res, 402, 'insufficient_quota', 'insufficient_balance',
             'second request: 402 while the first is held');
    like $res->{json}{error}{message} // '', qr/available 0\.0699, required 0\.0700/,
        'available counts the hold';
    is $h->upstream_hits, $hits, 'second request did not reach the upstream';
    my $r = $h->raw_reply($s);
    is $r->{status}, 200, 'first request completes';
    is $r->{headers}{'x-imgbill-charge'}, '0.0700', 'charged 0.0700';
    is $h->balance('pair'), 699, 'balance 0.0699 left';
};

# --- many requests at once on one account add up exactly
subtest 'parallel requests settle exactly' => sub {
    $h->account('many', 'sk-many', 1000000);
    my $n = 12;
    my @pids;
    for my $i (1 .. $n) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            my $r = $h->chat(key => 'sk-many', mock => 'sleep=0.3',
                             model => $i % 2 ? $FLASH : 'gemini-3-pro-image-preview');
            POSIX::_exit($r->{status} == 200 ? 0 : 1);
        }
        push @pids, $pid;
    }
    my $fails = 0;
    for (@pids) { waitpid($_, 0); $fails++ if $? }
    is $fails, 0, "all $n requests 200";
    my $want = 1000000 - ($n / 2) * 2465 - ($n / 2) * 17232;
    is $h->balance('many'), $want, "balance = start - 6 x 0.2465 - 6 x 1.7232 ($want)";
    my $l = $h->ledger('many');
    is scalar @$l, $n, "$n ledger entries";
    my $sum = 0;
    $sum += $_->{charge} for @$l;
    is $sum, 1000000 - $want, 'ledger charges add up';
    my %ba = map { $_->{balance_after} => 1 } @$l;
    is scalar keys %ba, $n, 'every balance_after is distinct (serialised settlement)';
    is_deeply $h->holds('many'), {}, 'no holds left';
};

# --- Redis down: fail closed, quickly; Redis back: serve again
subtest 'Redis down -> 503 billing_unavailable, quickly' => sub {
    $h->account('rd', 'sk-rd', 100000);
    is $h->chat(key => 'sk-rd')->{status}, 200, 'works while Redis is up';
    $h->redis_stop;
    my $hits = $h->upstream_hits;
    for my $path ('/v1/chat/completions', '/fast/v1/chat/completions') {
        my $t0 = time;
        my $res = $h->chat(key => 'sk-rd', path => $path);
        my $dt = time - $t0;
        error_ok($res, 503, 'server_error', 'billing_unavailable', "$path: 503");
        like $res->{headers}{'x-imgbill-request-id'} // '', qr/^[0-9a-f]{32}$/,
            'request id on the 503';
        cmp_ok $dt, '<', 5, "answered within 5 s";
    }
    my $res = $h->chat(key => 'sk-unknown-while-down');
    is $res->{status}, 503, 'an unknown key is also 503 (cannot be checked)';
    is $h->upstream_hits, $hits, 'upstream never reached while Redis is down';

    $h->redis_start;
    $h->account('rd', 'sk-rd', 100000);    # the new redis-server is empty
    my $ok = wait_for(sub {
        my $r = $h->chat(key => 'sk-rd');
        $r->{status} == 200 ? $r : undef;
    }, 15, 0.3);
    ok $ok, 'Redis back: 200 again without restarting nginx';
    is $ok && $ok->{headers}{'x-imgbill-charge'}, '0.2465', 'charged';
    my @st = map { $h->chat(key => 'sk-rd')->{status} } 1 .. 6;
    is_deeply \@st, [ (200) x 6 ], 'and keeps working (both workers)';
    is $h->balance('rd'), 100000 - 7 * 2465, 'balance after 7 charges';
};

subtest 'Redis stalls -> 503 within the redis timeout, then recovers' => sub {
    $h->account('st', 'sk-st', 100000);
    my $pid = $h->{redis_pid};
    kill 'STOP', $pid;
    my $t0 = time;
    my $res = eval { $h->chat(key => 'sk-st') };
    my $dt = time - $t0;
    kill 'CONT', $pid;
    error_ok($res, 503, 'server_error', 'billing_unavailable', 'stalled Redis: 503');
    cmp_ok $dt, '<', 5, 'answered within 5 s (imgbill_redis_timeout 1s)';
    my $ok = wait_for(sub { $h->chat(key => 'sk-st')->{status} == 200 }, 15, 0.3);
    ok $ok, 'Redis answering again: 200';
    my @st = map { $h->chat(key => 'sk-st')->{status} } 1 .. 4;
    is_deeply \@st, [ (200) x 4 ], 'and keeps working';
};

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
