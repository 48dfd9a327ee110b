# Two script calls may be out at once: the second leaves as soon as
# something queued, so that Redis runs one while the worker hands out the
# other's answers; what queues while both are out leaves as one call when
# one returns, because each call costs Redis and the worker a wakeup.  A
# third call goes out beside them only full (128 commands), which four
# requests never make.  Before, up to four calls were out at once, a new
# one for each turn of the event loop that queued something: here each
# request's admission went alone.  Before that, one call was out at a
# time, and Redis idled while the worker handed its answers out.  A fake
# Redis holds every answer while the test sends three more requests.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);
use Imgbill::FakeRedis;

# the first call is held while the test works: longer than conf.d's 1 s
# Redis timeout under valgrind
my $h = Imgbill::Harness->new(redis => 0, conf_filter => sub {
    $_[0] =~ s/^imgbill_key_cache \S+;/imgbill_key_cache 1h;/m
        or die 'no imgbill_key_cache in conf.d';
    $_[0] =~ s/^imgbill_redis_timeout \S+;/imgbill_redis_timeout 30s;/m
        or die 'no imgbill_redis_timeout in conf.d';
});
my ($hold, $log) = ($h->dir . '/fake-redis.hold', $h->dir . '/fake-redis.log');

# admit (1), settle (2), lookup (5), anything else (a release)
my %reply = (
    1 => "*4\r\n:1\r\n\$5\r\nalice\r\n:1000000\r\n:1000000\r\n",
    2 => "*2\r\n:1\r\n:990000\r\n",
    5 => "*2\r\n:1\r\n\$5\r\nalice\r\n",
);
my $fake = Imgbill::FakeRedis->start(
    port => $h->redis_port,
    seen => sub {
        my @f = Imgbill::FakeRedis::functions(@_) or return;
        open my $l, '>>', $log or die $!;
        print $l "@f\n";
        close $l;
    },
    answer => sub {
        my @f = Imgbill::FakeRedis::functions(@_) or return "+OK\r\n";
        return undef if -e $hold;
        return join '', '*' . @f . "\r\n", map { $reply{$_} // ":1\r\n" } @f;
    });

my %chat = (key => 'sk-any', body => {
    model => 'gemini-2.5-flash-image',
    messages => [ { role => 'user', content => 'draw a cat' } ] });

sub calls { open my $l, '<', $log or return (); return map { chomp; $_ } <$l> }
sub hold { open my $f, '>', $hold or die $!; close $f }

ok wait_for(sub { $h->request('GET', '/v1/models', undef,
                              Authorization => 'Bearer sk-any')->{status}
                  == 200 }, 10),
   'the key looked up: known';
unlink $log;

hold();
my @s = ($h->raw_send(%chat));
ok wait_for(sub { (calls())[0] }, 10), 'the first admission left';

# one worker serves the test: a request it answered came after the one
# sent before it was read, and that one's admission queued
for (1 .. 3) {
    push @s, $h->raw_send(%chat);
    is $h->request('GET', '/v1/nothing-here')->{status}, 404,
       "request $_ read: a later one was answered";
}
is_deeply [calls()], ['1', '1'], 'the second admission left beside the '
                                 . 'first, the other two queued'
    or diag explain [calls()];

unlink $hold;
my @st = map { $h->raw_reply($_)->{status} } @s;
is_deeply \@st, [200, 200, 200, 200], 'all four answered, once Redis did';
is((calls())[2], '1 1', 'the two queued admissions left as one call')
    or diag explain [calls()];
my $settles = () = join(' ', calls()) =~ /\b2\b/g;
is $settles, 4, 'and each request was settled';
is scalar $h->crashes, 0, 'no worker crashed';

done_testing;
