# imgbill_memory_trim: after a burst, a worker gives its free heap back to
# the kernel.  Requests whose bodies jansson parses into 7,500 objects
# (about as much structure as a request may have: 232 KB of 256 KiB) leave
# glibc's heap at its peak (freed chunks parked near its top keep it from
# shrinking): with the trim off the worker's RSS stays up, with a 1 s trim
# it comes back down.  The requests are charged as any other.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for);

# under valgrind the heap is valgrind's, and RSS says nothing of glibc's
plan skip_all => 'RSS is valgrind\'s under valgrind'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $parts = 7_500;
my $body = {
    model    => 'gemini-2.5-flash-image',
    messages => [{ role => 'user',
                   content => [map { { type => 'text', text => "p$_" } }
                               1 .. $parts] }],
};

# the worker's RSS (KiB), or its peak: VmHWM
sub worker_rss {
    my ($h, $field) = @_;
    $field //= 'VmRSS';
    my $m = $h->{nginx_pid};
    open my $c, '<', "/proc/$m/task/$m/children" or return;
    my ($w) = split ' ', scalar(<$c>) // '';
    open my $s, '<', "/proc/$w/status" or return;
    for (<$s>) { return $1 if /^\Q$field\E:\s+(\d+)/ }
    return;
}

# three big requests, charged 0.2465 each; the worker's RSS (KiB) before
# them and its peak (a 1 s trim may already have run when they end)
sub burst {
    my ($h, $name) = @_;
    $h->account($name, "sk-$name", 100_000);
    # idle once warm: a worker's first request maps what every later one
    # uses (its Redis connection, the script), and a worker just forked
    # may not have touched its pages yet
    $h->request('GET', '/v1/models', undef, Authorization => "Bearer sk-$name");
    my $idle = worker_rss($h);
    my @status;
    for (1 .. 3) {
        my $r = $h->post('/v1/chat/completions', $body,
                         Authorization => "Bearer sk-$name");
        push @status, $r->{status};
    }
    is "@status", '200 200 200', "$name: three requests of $parts parts";
    is fmt_units($h->redis('GET', "imgbill:{$name}:balance")), '9.2605',
       "$name: charged 3 x 0.2465 from 10.0000";
    return ($idle, worker_rss($h, 'VmHWM'));
}

# MiB the heap must grow by for the comparison to mean something
my $grow = 3 * 1024;

{
    my $h = Imgbill::Harness->new(extra_http => 'imgbill_memory_trim off;');
    my ($idle, $peak) = burst($h, 'off');
    cmp_ok $peak - $idle, '>', $grow,
           "off: the burst grew the worker by over 3 MiB "
           . "(idle $idle KiB, peak $peak KiB)";
    # given the time the next test's 1 s trim takes to give it back, it
    # does not: waited for with a deadline that must pass
    my $later;
    ok !wait_for(sub { $later = worker_rss($h); $later - $idle <= $grow }, 1.5),
       "off: 1.5 s later it has kept it (\$later KiB): glibc does not "
       . "give it back by itself, so the next test means something"
       or diag "idle $idle KiB, now $later KiB";
}

{
    my $h = Imgbill::Harness->new(extra_http => 'imgbill_memory_trim 1s;');
    my ($idle, $peak) = burst($h, 'on');
    cmp_ok $peak - $idle, '>', $grow,
           "1s: the burst grew the worker by over 3 MiB "
           . "(idle $idle KiB, peak $peak KiB)";
    my $later;
    ok wait_for(sub { $later = worker_rss($h); $later - $idle < ($peak - $idle) / 2 },
                10),
       '1s: within 10 s the worker has given back over half of what it grew by'
       or diag "idle $idle KiB, peak $peak KiB, now $later KiB";
    note "1s: idle $idle KiB, peak $peak KiB, then $later KiB";

    # still a working relay after the trim
    my $r = $h->post('/v1/chat/completions',
                     { model => 'gemini-2.5-flash-image',
                       messages => [{ role => 'user', content => 'koi' }] },
                     Authorization => 'Bearer sk-on');
    is $r->{status}, 200, '1s: a request after the trim';
    is $r->{headers}{'x-imgbill-charge'}, '0.2465', '... charged 0.2465';
    is fmt_units($h->redis('GET', 'imgbill:{on}:balance')), '9.0140',
       '... balance 10.0000 - 4 x 0.2465';
}

done_testing;
