# The harness itself: starts everything on loopback, substitutes the site
# lines, places extra_server, and leaves nothing behind.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);
use IO::Socket::INET;

my $h = Imgbill::Harness->new(
    extra_server => '    location = /harness-probe { return 200 "probe ok\n"; }',
    extra_http   => '    # extra_http marker',
);
my %ports = map { $_ => 1 } $h->port, $h->redis_port, $h->mock_port;
is scalar keys %ports, 3, 'three distinct ports';

my $conf = do { local (@ARGV, $/) = ($h->dir . '/nginx.conf'); <> };
like $conf, qr/^load_module \S+ngx_http_imgbill_module\.so;/m, 'load_module';
like $conf, qr/^worker_processes 1;/m, 'worker_processes 1';
like $conf, qr/^daemon on;/m, 'daemon on';
like $conf, qr/^error_log \S+ info;/m, 'error_log at info';
like $conf, qr/imgbill_redis 127\.0\.0\.1:${\ $h->redis_port };/, 'site: redis substituted';
like $conf, qr/server 127\.0\.0\.1:${\ $h->mock_port };/, 'site: upstream substituted';
like $conf, qr/listen 127\.0\.0\.1:${\ $h->port };/, 'site: listen substituted';
like $conf, qr/# extra_http marker/, 'extra_http placed';
for my $v (qw(account channel charge balance prompt_tokens completion_tokens request_id)) {
    like $conf, qr/\$imgbill_$v\b/, "log_format has \$imgbill_$v";
}
unlike $conf, qr/\b(?!127\.)\d+\.\d+\.\d+\.\d+:\d+/, 'no address outside 127.0.0.0/8';

my $r = $h->request('GET', '/harness-probe');
is $r->{status}, 200, 'extra_server location answers';
is $r->{body}, "probe ok\n", '... with its body';
is $h->upstream_hits, 0, 'no upstream hits yet';
is $h->snapshot, $h->snapshot, 'snapshot is stable';
$h->account('hx', 'sk-hx', 12345);
like $h->snapshot, qr/"12345"/, 'snapshot shows the seeded balance';
is $h->redis('GET', 'imgbill:{hx}:balance'), 12345, 'redis()';

my ($rc, $out) = Imgbill::Harness->nginx_t("this is not nginx;\n");
isnt $rc, 0, 'nginx_t: a broken config fails';
like $out, qr/unknown directive "this"/, 'nginx_t returns the output';

# teardown
my $dir = $h->dir;
my $port = $h->port;
my $rport = $h->redis_port;
my $mport = $h->mock_port;
undef $h;
ok !-e $dir, 'temp dir removed' unless $ENV{IMGBILL_KEEP};
for ([ nginx => $port ], [ redis => $rport ], [ mock => $mport ]) {
    my ($name, $p) = @$_;
    ok wait_for(sub { !IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $p) }, 5),
        "$name stopped";
}

# nginx, mock or redis can be left out
my $r_only = Imgbill::Harness->new(nginx => 0, mock => 0);
is $r_only->redis('PING'), 'PONG', 'Redis-only harness';

done_testing;
