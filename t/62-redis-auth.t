# imgbill_redis ... password=P db=N: the module authenticates and keeps its
# keys in the chosen database; the CLI follows with IMGBILL_REDIS_PASSWORD/_DB.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(key_hash);

my $h = Imgbill::Harness->new(redis_password => 'pw-4b9e', redis_db => 3);
$h->account('authz', 'sk-authz', 100000);

my $res = $h->chat(key => 'sk-authz');
is $res->{status}, 200, 'request through a password-protected Redis, db 3';
is $res->{headers}{'x-imgbill-charge'}, '0.2465', 'charged';
is $h->balance('authz'), 97535, 'balance in db 3';
is scalar @{ $h->ledger('authz') }, 1, 'ledger in db 3';

my $db0 = $h->redis_client(db => 0);
is_deeply $db0->cmd('KEYS', 'imgbill:*'), [], 'nothing written to db 0';

{
    my %env = (IMGBILL_REDIS_PASSWORD => 'pw-4b9e', IMGBILL_REDIS_DB => 3);
    my (undef, $out) = $h->cli({ env => \%env }, 'balance', 'authz');
    is $out, "9.7535\n", 'CLI with IMGBILL_REDIS_PASSWORD and _DB';
    my ($rc) = $h->cli({ env => { %env, IMGBILL_REDIS_PASSWORD => 'wrong' } },
                       'balance', 'authz');
    is $rc, 1, 'CLI with a wrong password: exit 1';
}

# a relay whose password is missing or wrong says so in words, not only
# in Redis's own terms ("NOAUTH", "unauthenticated multibulk length")
for my $c ([ 'no password', undef, qr/this Redis wants a password: add password=\.\.\. to imgbill_redis/ ],
           [ 'a wrong password', 'not-the-one',
             qr/the password in imgbill_redis is not this Redis's/ ]) {
    my ($name, $pw, $hint) = @$c;
    my $r2 = Imgbill::Harness->new(share_redis => $h, relay_redis_password => $pw);
    my $res = $r2->chat(key => 'sk-authz');
    is $res->{status}, 503, "$name: 503, nothing charged";
    like $r2->error_log, $hint, "$name: error.log says what to do";
    $r2->teardown;
}
is $h->balance('authz'), 97535, '... and the balance did not move';

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
