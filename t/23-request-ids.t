# Request ids come from a worker's batch of random ids (one RAND_bytes()
# for NGX_HTTP_IMGBILL_ID_BATCH of them, 64) rather than one RAND_bytes()
# per request: across batches and workers every id is new, and it is
# still nginx's $request_id, in the header, the ledger and the log; where
# the configuration read $request_id before imgbill ran, imgbill uses
# that value.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness;

my $N = 150;    # more than two batches, whichever worker serves them

my $h = Imgbill::Harness->new(
    workers     => 2,
    conf_filter => sub {
        # the fast channel reads $request_id in the rewrite phase, before
        # imgbill's access handler, and sends it to the upstream
        $_[0] =~ s{(location = /fast/v1/chat/completions \{)}
                  {$1\n        set \$early_id \$request_id;\n        proxy_set_header X-Early-Id \$early_id;}
            or die 'no fast location';
    });
$h->account('ids', 'sk-ids', 100_000_000);

my @ids;
for (1 .. $N) {
    my $r = $h->chat(key => 'sk-ids');
    if ($r->{status} != 200) {
        fail("request $_: $r->{status}");
        last;
    }
    push @ids, $r->{headers}{'x-imgbill-request-id'};
}
is scalar @ids, $N, "$N charged requests";
is scalar(grep { /^[0-9a-f]{32}$/ } @ids), $N, '32 hex digits each, as $request_id';
my %u = map { $_ => 1 } @ids;
is scalar keys %u, $N, 'no id twice';
is_deeply [ map { $_->{request_id} } @{ $h->ledger('ids') } ], \@ids,
          'the ledger has the same ids';

my %seen = map { $_ => 1 } @ids;
my @log = $h->access_wait(sub { $seen{ $_->{request_id} // '' } }, $N);
is scalar @log, $N, 'each in the access log';
is scalar(grep { $_->{request_id} eq ($_->{nginx_request_id} // '') } @log), $N,
   '$imgbill_request_id = $request_id';

# read before imgbill: that value is the id
{
    my $r = $h->chat(key => 'sk-ids', path => '/fast/v1/chat/completions');
    is $r->{status}, 200, 'a fast request';
    my $id = $r->{headers}{'x-imgbill-request-id'};
    like $id, qr/^[0-9a-f]{32}$/, 'it has an id';
    my ($up) = grep { ($_->{headers}{'x-early-id'} // '') eq $id }
               $h->upstream_requests;
    ok $up, 'the upstream got $request_id as read in the rewrite phase: the same id';
    ok !$seen{$id}, 'and it is new';
}

done_testing;
