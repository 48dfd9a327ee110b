# Issue 28: a flood of large bodies must not swell the worker.  Twenty
# clients at once, each sending a 30 MB chat body (six reference images of
# about 3.75 MB decoded, under imgbill_image_limit 5m) at 20 MB/s, through
# conf.d's own /v1/chat/completions:
#   a. with a key that does not exist: all twenty get the 401
#      invalid_api_key error, Redis does not change, the upstream is never
#      reached, and the worker's peak RSS grows by under 64 MiB;
#   b. with a valid key: all twenty get 200, each charged exactly what a
#      small request of the same shape (tiny images) with the same usage is
#      charged, the upstream gets each body intact, no hold is left, and
#      the worker's peak RSS grows by under 64 MiB;
#   c. twelve 31 MB bodies that are all structure ([0,0,0,...]): 401 for
#      an unknown key, 413 for a valid one, while another account's fast
#      calls all succeed;
#   d. twenty 40 MB Images API edits (sixteen images each, multipart):
#      each charged exactly, each body intact upstream, the worker's peak
#      RSS grows by under 64 MiB.
# The growth is VmHWM after the flood (reset through clear_refs before it)
# minus VmRSS before it, of the one worker; each case has an nginx of its
# own, so that one case's heap is not the next one's.  The figures are
# printed (diag), to be quoted.
#
# The upstream is Imgbill::Flood's sink on the mock's port (the harness
# starts no mock): it answers as scripts/mock-upstream does by default,
# but hashes a body instead of decoding it (the mock's JSON::PP takes
# about 12 s for each 30 MB body).
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use HTTP::Tiny;
use POSIX ();
use Time::HiRes qw(time);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units error_ok wait_for);
use Imgbill::Flood qw(chat_body image_bytes flood flood_summary rss peak_reset);

# under valgrind the RSS is valgrind's, and the flood would crawl
plan skip_all => 'RSS is valgrind\'s under valgrind'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $CLIENTS = 20;
my $SIZE    = 30_000_000;     # bytes per body
my $RATE    = 20_000_000;     # bytes a second, per client
my $CHUNK   = 1_000_000;      # one every 50 ms
my $GROWTH  = 64 * 1024;      # KiB the worker may grow by
my $FLASH   = 'gemini-2.5-flash-image';
my $PATH    = '/v1/chat/completions';

my $t_start = time;
my $body  = chat_body(size => $SIZE, images => 6, model => $FLASH);
my $small = chat_body(b64 => 24, images => 6, model => $FLASH);
my $sha   = sha256_hex($body);
note sprintf 'body: %d bytes, 6 images of %d bytes decoded; small body: %d bytes',
    length $body, image_bytes($body), length $small;
cmp_ok image_bytes($body), '<', 5 * 1024 * 1024,
    'each image is under imgbill_image_limit (5m) decoded';

# a relay of its own: conf.d's server, one worker, the sink as upstream
sub relay {
    my $h = Imgbill::Harness->new(mock => 0);
    my $sink = Imgbill::Flood::Sink->new(port => $h->mock_port,
                                         log => $h->dir . '/sink.log');
    my @w;
    ok wait_for(sub { @w = $h->workers; @w == 1 }, 10), 'one worker'
        or diag "workers: @w";
    return ($h, $sink, $w[0]);
}

# swell($h, $worker, $name, @headers) -> (the flood, growth KiB): the
# flood, the worker's RSS before it, its peak, the growth, printed
sub swell {
    my ($h, $w, $name, @headers) = @_;
    my $before = rss($w);
    my $reset = peak_reset($w);
    ok $reset, "$name: the worker's peak RSS reset (clear_refs)";
    my $sampled = $before;
    my $r = flood(port => $h->port, path => $PATH, body => \$body,
                  headers => \@headers, clients => $CLIENTS, rate => $RATE,
                  chunk => $CHUNK, timeout => 50,
                  tick => sub {
                      my $now = rss($w) // 0;
                      $sampled = $now if $now > $sampled;
                  });
    my $hwm = rss($w, 'VmHWM') // 0;
    my $peak = $hwm > $sampled ? $hwm : $sampled;
    my $growth = $peak - $before;
    diag sprintf '%s: worker RSS before %d KiB, peak %d KiB (VmHWM %d, sampled %d), '
               . 'growth %d KiB (%.1f MiB); flood %.2f s',
        $name, $before, $peak, $hwm, $sampled, $growth, $growth / 1024, $r->{seconds};
    diag "$name: " . flood_summary($r);
    is_deeply [ $h->workers ], [ $w ], "$name: the same worker after the flood";
    is_deeply [ $h->crashes ], [], "$name: no worker crashed";
    return ($r, $growth);
}

# ---- a. a key that does not exist --------------------------------------
{
    my ($h, $sink, $w) = relay();
    # the worker's Redis connection opened, its lazy allocations made
    my $warm = $h->post($PATH, $small, Authorization => 'Bearer sk-does-not-exist');
    error_ok $warm, 401, 'invalid_request_error', 'invalid_api_key',
        'unknown key: a small request gets 401';
    my $snap = $h->snapshot;
    my ($r, $growth) = swell($h, $w, 'unknown key',
                             Authorization => 'Bearer sk-does-not-exist');
    my @c = @{ $r->{clients} };
    subtest "unknown key: all $CLIENTS get 401 invalid_api_key" => sub {
        for my $i (0 .. $#c) {
            error_ok $c[$i], 401, 'invalid_request_error', 'invalid_api_key',
                "client $i";
        }
    };
    is scalar(grep { ($_->{headers}{'x-imgbill-request-id'} // '') =~ /^[0-9a-f]{32}$/ } @c),
       $CLIENTS, 'unknown key: each reply has its X-Imgbill-Request-Id';
    cmp_ok $growth, '<', $GROWTH,
        "unknown key: the worker grew by under 64 MiB ($growth KiB)";
    is $h->snapshot, $snap, 'unknown key: Redis unchanged';
    is scalar @{ $sink->requests }, 0, 'unknown key: the upstream was not reached';
    $sink->stop;
}

# ---- b. a valid key ------------------------------------------------------
{
    my ($h, $sink, $w) = relay();
    # the charge of the same shape with tiny images, on an account of its own
    my ($sa, $sk) = $h->fresh_account(prefix => 'small', units => 200_000);
    my $one = $h->post($PATH, $small, Authorization => "Bearer $sk");
    is $one->{status}, 200, 'small: 200' or diag substr $one->{body} // '', 0, 300;
    ok $h->wait_holds($sa, 0), 'small: no hold left';
    my ($unit) = @{ $h->ledger($sa) };
    my $charge = $unit->{charge} // 0;
    cmp_ok $charge, '>', 0, 'small: charged';
    is $one->{headers}{'x-imgbill-charge'}, fmt_units($charge),
        'small: X-Imgbill-Charge is the ledger\'s charge';
    note "small: charged $charge units, prompt_tokens $unit->{prompt_tokens}, "
       . "completion_tokens $unit->{completion_tokens}";

    # the twenty holds may all be on the balance at once, each 0.9150 (the
    # text, 6 x 1290 tokens of reference images, 4096 of output), and an
    # admission needs 5.00 available besides the holds already placed:
    # 20.0000 would admit at most 17 at once (402 for the others)
    my $start = 1_000_000;
    my ($acct, $key) = $h->fresh_account(prefix => 'swell', units => $start);
    my ($r, $growth) = swell($h, $w, 'valid key', Authorization => "Bearer $key");
    my @c = @{ $r->{clients} };
    is join(' ', map { $_->{status} } @c), join(' ', (200) x $CLIENTS),
        "valid key: all $CLIENTS get 200"
        or diag join "\n", map { "$_->{status} " . substr($_->{body} // '', 0, 200) }
                           grep { $_->{status} != 200 } @c;
    is join(' ', map { $_->{headers}{'x-imgbill-charge'} // '-' } @c),
       join(' ', (fmt_units($charge)) x $CLIENTS),
       'valid key: each X-Imgbill-Charge is the small request\'s';
    cmp_ok $growth, '<', $GROWTH,
        "valid key: the worker grew by under 64 MiB ($growth KiB)";
    ok $h->wait_holds($acct, 0, 10), 'valid key: no hold left';
    my $l = $h->ledger($acct);
    is scalar @$l, $CLIENTS, "valid key: $CLIENTS ledger entries";
    is_deeply [ map { [ @$_{qw(charge prompt_tokens completion_tokens images)} ] } @$l ],
              [ ([ @$unit{qw(charge prompt_tokens completion_tokens images)} ]) x $CLIENTS ],
              'valid key: each charged as the small request, to the unit';
    is $h->balance($acct), $start - $CLIENTS * $charge,
        'valid key: balance less exactly the twenty charges';
    my @b = grep { $_->{length} == length $body } @{ $sink->bodies };
    is scalar @b, $CLIENTS, "valid key: the upstream read $CLIENTS bodies of "
                          . length($body) . ' bytes';
    is join(' ', map { $_->{sha256} } @b), join(' ', ($sha) x $CLIENTS),
        'valid key: each body reached the upstream intact';
    $sink->stop;
}

# ---- c. bodies all structure, while another account calls --------------
# Twelve 31 MB bodies of [0,0,0,...] (issue 29: once parsed whole before
# the key was looked up, 1.87 s of the worker's loop each): with a key that
# does not exist, 401 unread; with a valid key, 413 past 256 KiB of
# structure, read to the end but walked no further.  Meanwhile another
# account's fast calls, one after another, all succeed (their latency is
# printed: scripts/bench's stall case measures it).
{
    my ($h, $sink, $w) = relay();
    my ($pa, $pk) = $h->fresh_account(prefix => 'probe', units => 10_000_000);
    my ($va, $vk) = $h->fresh_account(prefix => 'zeros');
    my $zeros = qq({"model":"$FLASH","messages":[],"a":[) . join(',', (0) x 15_500_000) . ']}';
    my $calls = 0;
    for my $case ([ 'unknown key', 'sk-does-not-exist', 401, 'invalid_api_key' ],
                  [ 'valid key', $vk, 413, 'request_too_large' ]) {
        my ($name, $key, $status, $code) = @$case;
        my $stop = $h->dir . "/stop-$status";
        my $out = $h->dir . "/probe-$status";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $http = HTTP::Tiny->new(keep_alive => 0, timeout => 30);
            open my $f, '>', $out or POSIX::_exit(1);
            until (-e $stop) {
                my $t = time;
                my $r = $http->post($h->url('/fast/v1/chat/completions'), {
                    headers => { Authorization => "Bearer $pk",
                                 'Content-Type' => 'application/json' },
                    content => qq({"model":"$FLASH","messages":[{"role":"user","content":"x"}]}) });
                printf $f "%d %.6f\n", $r->{status}, time - $t;
            }
            close $f;
            POSIX::_exit(0);
        }
        my $r = flood(port => $h->port, path => $PATH, body => \$zeros,
                      headers => [ Authorization => "Bearer $key" ], clients => 12,
                      rate => $RATE, chunk => $CHUNK, timeout => 50);
        open my $sf, '>', $stop or die;
        close $sf;
        waitpid $pid, 0;
        my @l = map { [ split ] } do { open my $f, '<', $out or die; <$f> };
        my @ms = sort { $a <=> $b } map { $_->[1] * 1000 } @l;
        my %st;
        $st{ $_->[0] }++ for @l;
        diag sprintf "zeros, %s: %s; another account's %d fast calls meanwhile: "
                   . "p50 %.1f ms, p99 %.1f ms, max %.1f ms", $name, flood_summary($r),
            scalar @ms, @ms ? ($ms[@ms / 2], $ms[int(@ms * 0.99)], $ms[-1]) : (0, 0, 0);
        is join(' ', map { $_->{json}{error}{code} // $_->{status} } @{ $r->{clients} }),
           join(' ', ($code) x 12), "zeros, $name: all 12 get $status $code";
        cmp_ok scalar @ms, '>', 0, "zeros, $name: another account called meanwhile";
        is_deeply \%st, { 200 => scalar @ms }, '... every call answered 200';
        $calls += @ms;
    }
    is $h->balance($va), 100000, 'zeros: the valid key paid nothing';
    is scalar @{ $sink->requests }, $calls,
       '... only the other account\'s calls reached the upstream';
    ok wait_for(sub { ($h->balance($pa) // 0) == 10_000_000 - $calls * 700 }),
       "... each of its $calls calls charged 0.0700";
    $sink->stop;
}

# ---- d. twenty Images API edits of 40 MB each -----------------------------
# Issue 19: sixteen 2.5 MB images and a prompt as multipart/form-data, read
# by the form reader as they stream by, to nginx's temporary file, never
# gathered; each charged by the sink's usage (50 text + 6208 image in, 1056
# out: 0.0018 + 0.4470 + 0.3041 = 0.7529), each body intact upstream.
{
    my ($h, $sink, $w) = relay();
    my $B = 'imgbillSwell0123456789';
    my $form = '';
    $form .= "--$B\r\nContent-Disposition: form-data; name=\"$_->[0]\"\r\n\r\n$_->[1]\r\n"
        for [ model => 'gpt-image-1' ], [ prompt => 'sixteen foxes in one picture' ];
    for my $i (1 .. 16) {
        $form .= "--$B\r\nContent-Disposition: form-data; name=\"image[]\"; "
               . "filename=\"fox$i.png\"\r\nContent-Type: image/png\r\n\r\n"
               . "\x89PNG\r\n\x1a\n" . (chr(32 + $i) x 2_499_992) . "\r\n";
    }
    $form .= "--$B--\r\n";
    my $fsha = sha256_hex($form);
    # each hold 3.2888 (the text, 16 x 1290 tokens at 72, 6240 out at 288)
    my ($acct, $key) = $h->fresh_account(prefix => 'edits', units => 1_000_000);
    my $before = rss($w);
    peak_reset($w);
    my $sampled = $before;
    my $r = flood(port => $h->port, path => '/v1/images/edits', body => \$form,
                  headers => [ Authorization => "Bearer $key",
                               'Content-Type' => "multipart/form-data; boundary=$B" ],
                  clients => $CLIENTS, rate => $RATE, chunk => $CHUNK, timeout => 60,
                  tick => sub { my $n = rss($w) // 0; $sampled = $n if $n > $sampled });
    my $hwm = rss($w, 'VmHWM') // 0;
    my $growth = ($hwm > $sampled ? $hwm : $sampled) - $before;
    diag sprintf 'edits: %d x %d bytes, worker RSS before %d KiB, growth %d KiB (%.1f MiB); %s',
        $CLIENTS, length $form, $before, $growth, $growth / 1024, flood_summary($r);
    my @c = @{ $r->{clients} };
    is join(' ', map { $_->{headers}{'x-imgbill-charge'} // $_->{status} } @c),
       join(' ', ('0.7529') x $CLIENTS), "edits: all $CLIENTS charged 0.7529"
        or diag join "\n", map { "$_->{status} " . substr($_->{body} // '', 0, 200) } @c;
    cmp_ok $growth, '<', $GROWTH, "edits: the worker grew by under 64 MiB ($growth KiB)";
    ok $h->wait_holds($acct, 0, 10), 'edits: no hold left';
    is $h->balance($acct), 1_000_000 - $CLIENTS * 7529, 'edits: exactly twenty charges';
    my @b = grep { $_->{length} == length $form } @{ $sink->bodies };
    is join(' ', map { $_->{sha256} } @b), join(' ', ($fsha) x $CLIENTS),
        'edits: each body reached the upstream byte for byte';
    is_deeply [ $h->crashes ], [], 'edits: no worker crashed';
    $sink->stop;
}

note sprintf 'took %.1f s', time - $t_start;
done_testing;
