# A client that leaves while its (whole) reply is held is not charged,
# also when the worker is too busy to see it leave before the upstream's
# reply is in: the worker is stopped (SIGSTOP) while the upstream answers
# and then the client closes, and resumed with both events waiting, the
# reply's first; the charge is decided with the socket asked.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);

my $h = Imgbill::Harness->new;
my ($worker) = $h->workers;
ok $worker, 'one worker';

for my $path ('/v1/chat/completions', '/fast/v1/chat/completions') {
    my ($acct, $key) = $h->fresh_account(prefix => 'gone');
    my $tag = 'g' . int(rand 1e9);
    my $s = $h->raw_send(key => $key, path => $path, mock => "sleep=1 tag=$tag",
                         body => { model => 'gemini-2.5-flash-image',
                                   messages => [ { role => 'user', content => 'a fox' } ] });
    ok wait_for(sub { grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests }, 10),
       "$path: the upstream has the request";
    ok $h->wait_holds($acct, 1, 10), '... and a hold is placed';

    # the upstream's reply first, then the client's FIN: a resumed worker
    # reads them in that order, and sees the reply whole first
    kill 'STOP', $worker;
    ok $h->upstream_idle(10), '... the upstream answered while the worker was stopped';
    close $s;                                   # the client leaves
    kill 'CONT', $worker;

    my ($e) = $h->access_wait(sub { ($_->{account} // '') eq $acct }, 1, 10);
    ok $e, '... the request is logged';
    is $e && $e->{charge}, '0.0000', '... charge 0.0000';
    ok $h->wait_holds($acct, 0, 10), '... its hold given back';
    is $h->balance($acct), 100000, '... nothing charged';
    is scalar @{ $h->ledger($acct) }, 0, '... no ledger entry';
}

# a client that only shuts its sending side is as gone to the relay as to
# nginx's own check: free, and it reads nothing of the image, even with
# proxy_ignore_client_abort on.  (nginx also marks the connection broken
# while the charge's round trip is awaited, so this holds on the build
# before the relay marked it too; it guards the path, the marking does not
# rely on that order.)
{
    my $h = Imgbill::Harness->new(extra_server => '    proxy_ignore_client_abort on;');
    my ($worker) = $h->workers;
    my ($acct, $key) = $h->fresh_account(prefix => 'half');
    my $tag = 'h' . int(rand 1e9);
    my $s = $h->raw_send(key => $key, mock => "sleep=1 tag=$tag",
                         body => { model => 'gemini-2.5-flash-image',
                                   messages => [ { role => 'user', content => 'a fox' } ] });
    ok wait_for(sub { grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests }, 10),
       'half-closed: the upstream has the request';
    kill 'STOP', $worker;
    ok $h->upstream_idle(10), '... the upstream answered while the worker was stopped';
    shutdown $s, 1;                             # SHUT_WR: it still reads
    kill 'CONT', $worker;
    my $res = $h->raw_reply($s);
    unlike $res->{raw}, qr/data:image|"images"/, '... it read no image';
    ok $h->wait_holds($acct, 0, 10), '... its hold given back';
    is $h->balance($acct), 100000, '... nothing charged';
}

# a client that stays is charged as ever
{
    my ($acct, $key) = $h->fresh_account(prefix => 'stay');
    my $r = $h->chat(key => $key, mock => 'sleep=0.2');
    is $r->{headers}{'x-imgbill-charge'}, '0.2465', 'a client that stays: charged 0.2465';
    ok wait_for(sub { ($h->balance($acct) // 0) == 100000 - 2465 }), '... in Redis';
}

like $h->error_log, qr/the client of request [0-9a-f]{32} left before its reply, not charged/,
     'the log says why';

done_testing;
