# What a Redis (or a proxy in front of it) answers is not trusted: a reply
# of the wrong shape to the admit command fails closed (503, nothing held,
# a log line) and never makes a worker read past the reply.  Once, a
# one-element admit reply had its second element read before the count was
# checked.  A fake Redis speaks RESP here and answers what the test says.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok wait_for);
use Imgbill::FakeRedis;

# sk-any must stay known for the whole run (each shape below is an
# admission's reply, not a lookup's): under valgrind the run outlasts
# conf.d's 10 s key cache
my $h = Imgbill::Harness->new(redis => 0, conf_filter => sub {
    $_[0] =~ s/^imgbill_key_cache \S+;/imgbill_key_cache 1h;/m
        or die 'no imgbill_key_cache in conf.d';
});
my $answer = $h->dir . '/fake-redis.answer';

# the fake: every command in a call gets the bytes in $answer, in an array
# of as many results as the call has commands.  The relay batches: a journal
# replay's release may share a call with an admit, and a fake that always
# answered one result would make that admit a lost reply, not a malformed one.
my $fake = Imgbill::FakeRedis->start(port => $h->redis_port, answer => sub {
    my $a = do { local (@ARGV, $/) = ($answer); <> } // ":0\r\n";
    my $k = Imgbill::FakeRedis::functions(@_) || 1;
    return "*$k\r\n" . ($a x $k);
});

ok wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                        PeerPort => $h->redis_port) }, 5),
   'the fake Redis listens';

# written whole, then renamed: the fake may read the file at any moment
# (a journal replay's call comes when it comes), and a file caught empty
# answered a call "*1\r\n" and nothing more, which the relay waited for
# until its Redis timeout, and lost the admission queued behind it
sub answer {
    open my $f, '>', "$answer.new" or die $!;
    print $f $_[0];
    close $f or die $!;
    rename "$answer.new", $answer or die $!;
}

my %shapes = (
    'one element {1}'           => "*1\r\n:1\r\n",
    'held without an account'   => "*2\r\n:1\r\n:5\r\n",
    'an empty account'          => "*4\r\n:1\r\n\$0\r\n\r\n:100000\r\n:100000\r\n",
    'an account of 65 bytes'    => "*4\r\n:1\r\n\$65\r\n" . ('a' x 65)
                                   . "\r\n:100000\r\n:100000\r\n",
    'an unknown status {7, ..}' => "*4\r\n:7\r\n\$1\r\na\r\n:1\r\n:1\r\n",
    'a string, not an array'    => "\$2\r\nok\r\n",
    'a balance as a string'     => "*4\r\n:1\r\n\$1\r\na\r\n\$1\r\n1\r\n:1\r\n",
    'an error'                  => "-ERR something broke\r\n",
);

# a body is read only for a key Redis knows: a model list's lookup makes
# sk-any known, so that each shape below is the admission's reply
answer("*2\r\n:1\r\n\$5\r\nalice\r\n");
is $h->request('GET', '/v1/models', undef, Authorization => 'Bearer sk-any')->{status}, 200,
   'the key looked up: known';

# the lookup of a key not known yet fails closed alike, and places nothing
answer($shapes{'one element {1}'});
error_ok($h->chat(key => 'sk-not-looked-up'), 503, 'server_error', 'billing_unavailable',
         'a malformed reply to the lookup before the body: 503 billing_unavailable');

for my $name (sort keys %shapes) {
    answer($shapes{$name});
    my $res = $h->chat(key => 'sk-any');
    error_ok($res, 503, 'server_error', 'billing_unavailable',
             "$name: 503 billing_unavailable");
}

# a well-formed refusal still reads as one
answer("*4\r\n:0\r\n\$5\r\nalice\r\n:40000\r\n:40000\r\n");
error_ok($h->chat(key => 'sk-any'), 402, 'insufficient_quota',
         'insufficient_balance', 'a well-formed refusal: 402');

# each may have placed a hold Redis could not report: released by key
my $journal = do { local (@ARGV, $/) = ($h->dir . '/imgbill.journal'); <> } // '';
my @r = $journal =~ /^R [0-9a-f]{32} [0-9a-f]{64}$/mg;
is scalar @r, 8, 'each failed admission journals a release by key';

my $log = $h->error_log;
my $n = () = $log =~ /unexpected reply to admit/g;
is $n, 7, 'each malformed reply is logged as such'
    or diag join "\n", grep { /imgbill:/ } split /\n/, $log;
like $log, qr/unexpected reply to lookup/, '... the lookup\'s too';
like $log, qr/redis replied "ERR something broke" to admit/,
     'an error reply is logged with its text';
is $h->upstream_hits, 0, 'nothing reached the upstream';
is scalar $h->crashes, 0, 'no worker crashed';

done_testing;
