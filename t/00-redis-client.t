# ImgbillRedis: the tiny RESP2 client used by the CLI and the harness.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(free_port);
use ImgbillRedis;
use IO::Socket::INET;
use Time::HiRes qw(time);

# scripts/test's second pass runs the nginx of a test under memcheck:
# none starts here, and the first pass ran it all
plan skip_all => 'no nginx here: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $h = Imgbill::Harness->new(nginx => 0, mock => 0);
my $r = ImgbillRedis->new(host => '127.0.0.1', port => $h->redis_port, timeout => 2);

is $r->cmd('PING'), 'PONG', 'status reply';
is $r->cmd('SET', 't:a', 'hello'), 'OK', 'SET -> OK';
is $r->cmd('GET', 't:a'), 'hello', 'bulk reply';
is $r->cmd('GET', 't:missing'), undef, 'nil bulk -> undef';
is $r->cmd('INCRBY', 't:n', 42), 42, 'integer reply';
is $r->cmd('INCRBY', 't:n', -100), -58, 'negative integer reply';
is $r->cmd('INCRBY', 't:big', '9000000000000000000'), '9000000000000000000',
    'big integer kept exact';

my $bin = "a\r\nb\0c\$3\r\n*1\r\n" . ('x' x 70000);
$r->cmd('SET', 't:bin', $bin);
is $r->cmd('GET', 't:bin'), $bin, 'binary-safe bulk strings (CRLF, NUL, 70 KB)';

my $mb = 'y' x (2 * 1024 * 1024);
$r->cmd('SET', 't:mb', $mb);
is length($r->cmd('GET', 't:mb')), length($mb), '2 MB value round trip';

$r->cmd('HSET', 't:h', 'f1', 'v1', 'f2', 'v2');
my %hh = @{ $r->cmd('HGETALL', 't:h') };
is_deeply \%hh, { f1 => 'v1', f2 => 'v2' }, 'array reply';
is_deeply $r->cmd('HGETALL', 't:nohash'), [], 'empty array';

my $id = $r->cmd('XADD', 't:s', '*', 'a', '1', 'b', '2');
like $id, qr/^\d+-\d+$/, 'XADD id';
my $x = $r->cmd('XRANGE', 't:s', '-', '+');
is_deeply $x, [[ $id, [ 'a', '1', 'b', '2' ] ]], 'nested array reply (stream)';

my $v = eval { $r->cmd('INCRBY', 't:a', 1); 1 };
ok !$v, 'error reply dies';
like $@, qr/^ERR value is not an integer/, 'die message is the Redis error text';
like $@, qr/\n\z/, '... ending in a newline';
is $r->cmd('PING'), 'PONG', 'connection still usable after an error reply';

eval { $r->cmd('HGET', 't:a', 'x') };
like $@, qr/^WRONGTYPE/, 'WRONGTYPE error text';

my $u = "\x{4e2d}\x{6587}";
$r->cmd('SET', 't:utf8', $u);
my $back = $r->cmd('GET', 't:utf8');
is $back, "\xe4\xb8\xad\xe6\x96\x87", 'character strings are sent UTF-8 encoded';

# new_from_spec
my $r2 = ImgbillRedis->new_from_spec('127.0.0.1:' . $h->redis_port);
is $r2->cmd('GET', 't:a'), 'hello', 'new_from_spec host:port';
ok !eval { ImgbillRedis->new_from_spec('nonsense'); 1 }, 'bad spec dies';

# connection refused
my $dead = free_port();
ok !eval { ImgbillRedis->new(port => $dead, timeout => 1); 1 }, 'refused dies';
like $@, qr/^imgbill-redis: cannot connect/, '... with a clear message';

# a server that accepts but never answers: the timeout applies
my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                   Listen => 5, Proto => 'tcp') or die $!;
my $s = ImgbillRedis->new(port => $silent->sockport, timeout => 0.5);
my $t0 = time;
ok !eval { $s->cmd('PING'); 1 }, 'silent server: cmd dies';
like $@, qr/^imgbill-redis: read timeout/, '... with a read timeout';
cmp_ok time - $t0, '<', 3, '... within a bounded time';
ok !eval { $s->cmd('PING'); 1 }, 'no reconnect: the dead client keeps failing';
like $@, qr/connection is closed/, '... saying so';

# server closes the connection
my $c = ImgbillRedis->new(port => $h->redis_port, timeout => 2);
my $cid = $c->cmd('CLIENT', 'ID');
$r->cmd('CLIENT', 'KILL', 'ID', $cid);
ok !eval { $c->cmd('PING'); 1 }, 'killed connection: cmd dies';
like $@, qr/^imgbill-redis: /, '... with an imgbill-redis message';

done_testing;
