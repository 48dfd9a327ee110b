# A client that leaves while its (whole) reply is held is not charged,
# also when the worker is too busy to see it leave before the upstream's
# reply is in: the worker is stopped (SIGSTOP) while the upstream answers
# and then the client closes, and resumed with both events waiting, the
# reply's first; the charge is decided once both are handled (a posted
# event), so the FIN ends the request before anything is settled.  One
# that leaves while the charge is being settled gets it back (a
# reversal).
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for);
use JSON::PP;

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

# Redis' queue of what it has not read yet, from /proc/net/tcp: the
# worker's settle sent to a stopped redis-server waits there
sub redis_unread {
    my ($port) = @_;
    my $n = 0;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @c = split;
            next unless @c > 4 && $c[1] =~ /:([0-9A-F]{4})$/ && hex($1) == $port
                     && $c[3] eq '01';
            my (undef, $rx) = split /:/, $c[4];
            $n += hex $rx;
        }
    }
    return $n;
}

# A client that leaves while its charge is being settled: its reply is
# never written and the charge goes back (a "reversal" ledger entry), once.
# redis-server is stopped (SIGSTOP) once the upstream has the request, so
# the settle waits in its socket; the client leaves; then
# a. Redis resumes at once: it applies the settle, then the reversal
#    (or, on a slow machine, the journal does, as in b);
# b. Redis stays away past imgbill_redis_timeout (1s): the settle and the
#    reversal go to the journal (its V line), and are replayed once it is
#    back.  Redis may still run the commands it had read: either way the
#    money comes to nothing and the ledger adds up.
for my $case ([ 'quick', 0 ], [ 'journaled', 1 ]) {
    my ($name, $journaled) = @$case;
    my ($acct, $key) = $h->fresh_account(prefix => "rev$name");
    # an opening entry: what follows must add up to the balance
    is(($h->cli('audit', $acct, '--open'))[0], 0, "reversal, $name: the account opened");
    my $tag = 'r' . int(rand 1e9);
    my $s = $h->raw_send(key => $key, mock => "sleep=0.5 tag=$tag",
                         body => { model => 'gemini-2.5-flash-image',
                                   messages => [ { role => 'user', content => 'a fox' } ] });
    ok wait_for(sub { grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests }, 10),
       "reversal, $name: the upstream has the request";
    ok $h->wait_holds($acct, 1, 10), '... a hold is placed';
    kill 'STOP', $h->{redis_pid};
    ok $h->upstream_idle(10), '... the upstream answered, Redis stopped';
    ok wait_for(sub { redis_unread($h->redis_port) > 0 }, 10),
       '... the settle waits in Redis\' socket';
    close $s;                                   # the client leaves
    my ($e) = $h->access_wait(sub { ($_->{account} // '') eq $acct }, 1, 10);
    is $e && $e->{charge}, '0.0000', '... logged with charge 0.0000';
    is $e && $e->{outcome}, 'client_gone', '... outcome client_gone';
    if ($journaled) {
        ok wait_for(sub { $h->error_log =~ m{journaled "V [0-9a-f]{32}/v \Q$acct\E \d+"}m }, 10),
           '... Redis away: the reversal is journaled';
    }
    kill 'CONT', $h->{redis_pid};

    ok $h->wait_holds($acct, 0, 15), '... no hold left';
    ok wait_for(sub { !-s $h->dir . '/imgbill.journal' }, 15),
       '... nothing left in the journal';
    # the reversal waits in the worker while the settle's call is out and
    # leaves when it returns: no hold and an empty journal come before it
    ok wait_for(sub { ($h->balance($acct) // 0) == 100000 }, 15),
       '... the balance whole'
        or diag 'balance ' . ($h->balance($acct) // 'none');
    my @l = @{ $h->ledger($acct) };
    my $types = join ' ', map { $_->{type} // 'charge' } @l;
    like $types, qr/^opening(?: charge reversal)?\z/,
         "... the ledger: a charge and its reversal, or nothing ($types)";
    if (@l == 3) {
        is $l[2]{amount}, $l[1]{charge}, '... the charge given back whole';
        is $l[2]{request_id}, $l[1]{request_id}, '... the same request';
        # what the key holder reads of it
        my $r = $h->request('GET', '/v1/imgbill/ledger', undef,
                            Authorization => "Bearer $key");
        my $d = eval { JSON::PP->new->decode($r->{body}) } || {};
        my ($rev) = grep { $_->{type} eq 'reversal' } @{ $d->{data} || [] };
        is_deeply $rev && { map { $_ => $rev->{$_} } qw(request_id amount balance) },
                  { request_id => $l[1]{request_id}, amount => '0.2465',
                    balance => '10.0000' },
                  '... the key holder reads the reversal in the ledger';
    }
    my ($rc, $out) = $h->cli('audit', $acct);
    is $rc, 0, '... imgbill audit: no drift' or diag $out;
}
like $h->error_log, qr/the client of request [0-9a-f]{32} left while it was charged, its charge 0\.2465 goes back/,
     'the log says why';

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
