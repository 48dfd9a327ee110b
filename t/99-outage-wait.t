# imgbill_redis_outage_wait: while a worker has no Redis, an admission
# waits for it (up to the time given) instead of being refused at once;
# only so many wait per worker, the others get their 503 at once; one that
# waited its time out gets the 503, free, and nothing reaches Redis.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for error_ok conf_ok conf_bad);

my $FAST = '/fast/v1/chat/completions';

# ---- nginx -t ---------------------------------------------------------------

conf_ok('a time and max=', "imgbill_redis_outage_wait 3s max=10;\n");
conf_ok('a time alone', "imgbill_redis_outage_wait 750ms;\n");
conf_ok('off', "imgbill_redis_outage_wait off;\n");
conf_bad('a time of 0', "imgbill_redis_outage_wait 0;\n",
         qr/invalid time "0" in "imgbill_redis_outage_wait": a time above 0, or off/);
conf_bad('a time of "soon"', "imgbill_redis_outage_wait soon;\n",
         qr/invalid time "soon" in "imgbill_redis_outage_wait"/);
conf_bad('max=0', "imgbill_redis_outage_wait 2s max=0;\n",
         qr/invalid parameter "max=0" in "imgbill_redis_outage_wait": max=N, N above 0/);
conf_bad('a number without max=', "imgbill_redis_outage_wait 2s 5;\n",
         qr/invalid parameter "5" in "imgbill_redis_outage_wait"/);
conf_bad('off with max=', "imgbill_redis_outage_wait off max=3;\n",
         qr/"imgbill_redis_outage_wait" directive takes TIME \[max=N\], or off/);
conf_bad('twice', "imgbill_redis_outage_wait 2s;\nimgbill_redis_outage_wait 3s;\n",
         qr/"imgbill_redis_outage_wait" directive is duplicate/);

# ---- a Redis restarted while admissions wait ----------------------------------

# a wait far longer than the restart takes: what is checked is who waits
# and who does not, never how long
my $h = Imgbill::Harness->new(extra_http => "imgbill_redis_outage_wait 60s max=1;\n");
$h->account('ow', 'sk-outage', 100000);

my $res = $h->chat(key => 'sk-outage', path => $FAST);
is $res->{status}, 200, 'Redis up: served';
is $res->{headers}{'x-imgbill-charge'}, '0.0700', '... and charged 0.0700';

$h->redis_stop(keep => 1);

# the first admission queues, then its connection fails: it waits
my $first = $h->in_flight(1, key => 'sk-outage', path => $FAST);
ok wait_for(sub { $h->error_log =~ /redis connect to "[^"]+" failed/ }, 20),
   'an admission finds Redis gone';

# the second is one too many for max=1: refused at once, while one waits
my $second = $h->chat(key => 'sk-outage', path => $FAST);
error_ok($second, 503, 'server_error', 'billing_unavailable',
         'a second admission while one waits: 503');
like $h->error_log,
     qr/\[warn\].*imgbill: 1 requests already wait for redis, refusing another \(imgbill_redis_outage_wait max=\)/,
     'error.log says why';
is scalar(grep { -s } glob($h->dir . '/flight-*')), 0,
   'the first admission is still waiting';

# a load balancer's question is answered now, not after the wait
my $health = $h->request('GET', '/');
is $health->{status}, 503, 'GET / (health) while Redis is gone: 503 at once';
like $health->{body}, qr/"status":\s*"unavailable"/, '... "unavailable"';
is scalar(grep { -s } glob($h->dir . '/flight-*')), 0,
   '... while the admission still waits';

$h->redis_start;

my @got = $first->();
is_deeply \@got, ['200 0.0700'], 'Redis back: the waiting admission is served and charged';
is $h->balance('ow'), 100000 - 2 * 700, 'two charges in Redis, none more';
is scalar @{ $h->ledger('ow') }, 2, 'two ledger entries';
ok $h->wait_holds('ow', 0, 10), 'no hold left';
like $h->error_log, qr/\[notice\].*imgbill: redis "[^"]+" is back/,
     'the end of the outage is logged';

# ---- a Redis still loading its data -------------------------------------------

# Redis answers LOADING to the script while it reads a large dataset back:
# the admission waits for it as for a Redis that is down, and nothing of
# it was written
my $big = Imgbill::Harness->new(redis_restartable => 1,
                                extra_http => "imgbill_redis_outage_wait 60s;\n");
$big->account('ol', 'sk-loading', 100000);
is $big->chat(key => 'sk-loading', path => $FAST)->{status}, 200, 'served before';
# some 2 million keys: a second or more to load, retries of 250 ms
$big->redis_client(timeout => 120)->cmd('DEBUG', 'POPULATE', 2000000, 'filler', 64);
$big->redis_stop(keep => 1);
my $loading = $big->in_flight(1, key => 'sk-loading', path => $FAST);
ok wait_for(sub { $big->error_log =~ /redis connect to "[^"]+" failed/ }, 20),
   'the admission finds Redis gone';
$big->redis_start;
is_deeply [$loading->()], ['200 0.0700'],
    'Redis back, loading, then loaded: the waiting admission is served';
like $big->error_log,
     qr/\[error\].*imgbill: redis "[^"]+" is loading its data \("LOADING /,
     'the relay saw Redis loading, and said so';
is scalar(() = $big->error_log =~ /is loading its data/g), 1, '... once';
is $big->balance('ol'), 100000 - 2 * 700, 'two charges, none more';
$big->redis_client(timeout => 120)->cmd('FLUSHALL');

# ---- waited out: 503, free ------------------------------------------------------

my $short = Imgbill::Harness->new(extra_http => "imgbill_redis_outage_wait 300ms;\n");
$short->account('ox', 'sk-waited', 100000);
is $short->chat(key => 'sk-waited', path => $FAST)->{status}, 200, 'served before';
$short->redis_stop(keep => 1);
$res = $short->chat(key => 'sk-waited', path => $FAST);
error_ok($res, 503, 'server_error', 'billing_unavailable',
         'Redis gone longer than the wait: 503');
my $journal = $short->dir . '/imgbill.journal';
ok !-s $journal, 'an admission never sent journals nothing';
$short->redis_start;
is $short->balance('ox'), 100000 - 700, 'the refused request cost nothing';
is scalar @{ $short->ledger('ox') }, 1, 'one ledger entry: the one served';

my @crashes = ($h->crashes, $big->crashes, $short->crashes);
is scalar @crashes, 0, 'no worker crashed' or diag join "\n", @crashes;

done_testing;

