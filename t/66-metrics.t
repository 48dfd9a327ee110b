# Metrics (imgbill_metrics; at /imgbill/metrics in conf.d): Prometheus'
# text that promtool accepts, and counters that match a known sequence of
# requests exactly: outcomes with their reasons, money in units, the
# would-be cost of a stream the client left, holds, Redis trouble.
use strict;
use warnings;
use Test::More;
use IO::Select;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);

my $promtool = `sh -c 'command -v promtool'`;
chomp $promtool;
if (!$promtool && $> == 0) {
    system('apt-get install -y -qq prometheus >/dev/null 2>&1');
    $promtool = `sh -c 'command -v promtool'`;
    chomp $promtool;
}

my $h = Imgbill::Harness->new(workers => 2);

sub scrape {
    my $r = $h->request('GET', '/imgbill/metrics');
    my %m;
    for (split /\n/, $r->{body} // '') {
        next if /^#/;
        my ($k, $v) = /^(\S+(?:\{[^}]*\})?) (\S+)$/ or next;
        $m{$k} = $v;
    }
    return ($r, \%m);
}

sub series {
    my ($name, %l) = @_;
    return $name . qq{\{api="$l{api}"\}} if exists $l{api};
    return $name . '{' . join(',', map { qq{$_="$l{$_}"} } qw(channel model outcome reason)
                                  [0 .. (exists $l{outcome} ? 3 : 1)]) . '}';
}

my $FLASH = 'gemini-2.5-flash-image';
my $PRO = 'gemini-3-pro-image-preview';

my ($acct, $key) = $h->fresh_account(prefix => 'met', units => 200000);

# a known sequence
$h->chat(key => $key) for 1 .. 3;                                       # 3 x 0.2465
$h->chat(key => $key, mock => 'kind=noimage');                          # free
$h->chat(key => $key, mock => 'kind=nousage');                          # free
$h->chat(key => $key, mock => 'status=429');                            # free
$h->chat(key => 'sk-nobody');                                           # 401
$h->chat(key => $key, model => 'nope');                                 # 400
$h->chat(key => $key, path => '/fast/v1/chat/completions', model => $PRO);   # 0.2000
$h->request('GET', '/v1/models', undef, Authorization => "Bearer $key");     # not billed
$h->post('/v1/images/generations', { model => 'gpt-image-1', prompt => 'a fox' },
         Authorization => "Bearer $key");                               # 0.3059, Images API

# a stream the client leaves after its image: charged as if it had stayed
{
    my $s = $h->raw_send(key => $key, path => '/fast/v1/chat/completions',
                         body => { model => $FLASH, stream => JSON::PP::true,
                                   messages => [ { role => 'user', content => 'x' } ] },
                         mock => 'gap=0.5');
    my ($buf, $sel) = ('', IO::Select->new($s));
    while ($buf !~ /data:image/ && $sel->can_read(10)) {
        sysread($s, $buf, 65536, length $buf) or last;
    }
    close $s;
    ok $h->wait_holds($acct, 0, 10), 'the abandoned stream settled its hold';
}

my ($r, $m);
ok wait_for(sub {
    ($r, $m) = scrape();
    ($m->{series('imgbill_requests_total', channel => 'fast', model => $FLASH,
                  outcome => 'charged', reason => 'client_gone')} // 0) == 1
}, 10), 'the abandoned stream is counted, charged';

is $r->{status}, 200, 'GET /imgbill/metrics: 200';
like $r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, "Prometheus' text format";

my %want = (
    series('imgbill_requests_total', channel => 'metered', model => $FLASH, outcome => 'charged', reason => '') => 3,
    series('imgbill_requests_total', channel => 'metered', model => $FLASH, outcome => 'free', reason => 'no_image') => 1,
    series('imgbill_requests_total', channel => 'metered', model => $FLASH, outcome => 'free', reason => 'no_usage') => 1,
    series('imgbill_requests_total', channel => 'metered', model => $FLASH, outcome => 'free', reason => 'upstream_error') => 1,
    # no body is read for an unknown key: its model is not known
    series('imgbill_requests_total', channel => 'metered', model => 'other', outcome => 'rejected', reason => 'invalid_api_key') => 1,
    series('imgbill_requests_total', channel => 'metered', model => 'other', outcome => 'rejected', reason => 'model_not_supported') => 1,
    series('imgbill_requests_total', channel => 'fast', model => $PRO, outcome => 'charged', reason => '') => 1,
    series('imgbill_charged_units_total', channel => 'metered', model => $FLASH) => 3 * 2465,
    series('imgbill_charged_units_total', channel => 'fast', model => $PRO) => 2000,
    series('imgbill_charged_units_total', channel => 'fast', model => $FLASH) => 700,
    series('imgbill_requests_total', channel => 'metered', model => 'gpt-image-1', outcome => 'charged', reason => '') => 1,
    # by the API the client spoke: every table row a series, zeros too
    series('imgbill_api_requests_total', api => 'openai') => 10,
    series('imgbill_api_requests_total', api => 'openai_images') => 1,
    series('imgbill_api_requests_total', api => 'gemini') => 0,
    series('imgbill_api_charged_units_total', api => 'openai') => 3 * 2465 + 2000 + 700,
    series('imgbill_api_charged_units_total', api => 'openai_images') => 3059,
    series('imgbill_api_images_total', api => 'openai') => 5,
    series('imgbill_api_images_total', api => 'openai_images') => 1,
    'imgbill_holds_in_flight' => 0,
    'imgbill_redis_errors_total' => 0,
    'imgbill_redis_timeouts_total' => 0,
);
for my $k (sort keys %want) {
    is $m->{$k}, $want{$k}, "$k $want{$k}";
}
my $reqs = grep { /^imgbill_requests_total/ } keys %$m;
is $reqs, 9, 'no other request series (the model list is not billed)';
ok !grep({ /^imgbill_abandoned_units_total\{/ } keys %$m),
   'nothing abandoned: the stream left after its image was paid';
cmp_ok $m->{'imgbill_redis_rtt_seconds_count'}, '>=', 10, 'Redis round trips counted';
is $m->{'imgbill_redis_rtt_seconds_bucket{le="+Inf"}'}, $m->{imgbill_redis_rtt_seconds_count},
   'the +Inf bucket is the count';

SKIP: {
    skip 'promtool is not installed', 1 unless $promtool;
    open my $p, '|-', "$promtool check metrics >/tmp/imgbill-promtool.$$ 2>&1" or die;
    print $p $r->{body};
    close $p;
    my $out = do { local (@ARGV, $/) = ("/tmp/imgbill-promtool.$$"); <> };
    unlink "/tmp/imgbill-promtool.$$";
    is $?, 0, 'promtool check metrics accepts it' or diag $out;
}

# Redis gone: a rejection for want of it, and the connection's trouble
{
    $h->redis_stop;
    $h->chat(key => $key);
    $h->redis_start;
    $h->account($acct, $key, 100000);
    wait_for(sub { $h->chat(key => $key)->{status} == 200 }, 10);
    my (undef, $m2) = scrape();
    cmp_ok $m2->{series('imgbill_requests_total', channel => 'metered', model => $FLASH,
                        outcome => 'rejected', reason => 'billing_unavailable')} // 0,
           '>=', 1, 'Redis down: rejected billing_unavailable counted';
    cmp_ok $m2->{imgbill_redis_errors_total}, '>=', 1, 'Redis errors counted';
    cmp_ok $m2->{imgbill_redis_reconnects_total}, '>=', 1, 'the reconnection counted';
}

# a settlement Redis cannot take: one journal line, owed until Redis is back
{
    my ($a2, $k2) = $h->fresh_account(prefix => 'metj', units => 100000);
    my (undef, $m0) = scrape();
    my $lines = $m0->{imgbill_journal_lines_total};
    my $wait = $h->in_flight(1, key => $k2, mock => 'sleep=1');
    ok $h->wait_holds($a2, 1, 5), 'journal: admitted';
    $h->redis_stop(keep => 1);
    my ($got) = $wait->();
    is $got, '200 0.2465', 'journal: the client got its image, charged';
    my (undef, $m3) = scrape();
    is $m3->{imgbill_journal_lines_total}, $lines + 1, 'imgbill_journal_lines_total: one line more';
    $h->redis_start;
    ok wait_for(sub { ($h->balance($a2) // 0) == 100000 - 2465 }, 10), 'Redis back: applied';
    ok wait_for(sub { my (undef, $m4) = scrape(); ($m4->{imgbill_journal_lines_owed} // -1) == 0 }, 10),
       'imgbill_journal_lines_owed back to 0';
}

my $conf = do { local (@ARGV, $/) = (Imgbill::Harness->root . '/conf.d/imgbill.conf'); <> };
like $conf, qr{location = /imgbill/metrics \{\s*imgbill_metrics;\s*imgbill_cors off;[^\n]*\s*allow 127\.0\.0\.1;\s*allow ::1;\s*deny all;}s,
     'conf.d serves the metrics to the loopback only, to no page of another origin';

done_testing;
