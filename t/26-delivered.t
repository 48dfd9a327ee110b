# An image that reached the client is paid for: a stream its client leaves
# after its image is charged as if the client had stayed (the upstream read
# to its end for its usage), one left before any image is free and its
# upstream closed at once.  "Reached" is what nginx wrote, not what it
# queued.  As real clients do it (t/sdk/abort.mjs: Node's fetch with an
# AbortController, the OpenAI SDK's controller.abort()):
#   - OpenAI metered, OpenAI fast, Gemini metered: left before the first
#     byte, after the text, inside the image event, right after it, after
#     the usage chunk, or read to the end;
#   - the edges on a relay that writes 16 KB at a time: an image event
#     half written (paid), an image read from the upstream but queued
#     behind text the client never took (free, and counted as abandoned);
#   - Redis down when the drained stream ends: journaled, replayed once;
#   - an upstream cut after the image, without usage: the fallback rule;
#   - many streams left at random points: the charges are exactly the
#     streams whose client saw image data.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF pack_sockaddr_in inet_aton);
use File::Temp qw(tempdir);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for);

my $sdk = Imgbill::Harness::sdk_dir();
if (!$sdk) {
    plan skip_all => $@ if $@ =~ /not installed/;
    BAIL_OUT($@);
}

my $VALGRIND = $ENV{IMGBILL_VALGRIND_DIR};
my $h = Imgbill::Harness->new;
my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';
my $TRUE  = JSON::PP::true;

# the APIs and channels: where to send, how, and what a whole stream costs
my %API = (
    'openai metered' => { path => '/v1/chat/completions', model => $FLASH, units => 2465 },
    'openai fast'    => { path => '/fast/v1/chat/completions', model => $PRO, units => 2000 },
    'gemini metered' => { path => "/v1beta/models/$FLASH:streamGenerateContent?alt=sse",
                          gemini => 1, units => 2465 },
);

# a case for abort.mjs, on an account of its own
sub case {
    my ($api, $at, %o) = @_;
    my $a = $API{$api};
    my ($acct, $key) = $h->fresh_account(prefix => $o{prefix} // 'ab');
    my %hdr = (%{ $o{headers} || {} },
               ($a->{gemini} ? ('x-goog-api-key' => $key)
                             : (Authorization => "Bearer $key")));
    $hdr{'X-Mock'} = $o{mock} if defined $o{mock};
    my $body = $a->{gemini}
        ? { contents => [ { role => 'user', parts => [ { text => 'a fox' } ] } ] }
        : { model => $a->{model}, stream => $TRUE,
            messages => [ { role => 'user', content => 'a fox' } ],
            %{ $o{body} || {} } };
    return { name => "$api $at", path => $a->{path}, key => $key, at => $at,
             body => $body, headers => \%hdr, seed => $o{seed} // 0,
             acct => $acct, units => $a->{units} };
}

# runs the cases at once; each gets what its client saw ({got})
sub run_cases {
    my (@cases) = @_;
    my $dir = tempdir(CLEANUP => 1);
    open my $f, '>', "$dir/cases.json" or die $!;
    print $f encode_json([ map { my %c = %$_; delete @c{qw(acct units)}; \%c } @cases ]);
    close $f;
    my $out = `node $sdk/abort.mjs ${\ $h->url('') } < $dir/cases.json 2>&1`;
    my $r = eval { decode_json($out) } || {};
    ok !$?, 'node abort.mjs ran' or diag $out;
    $_->{got} = $r->{ $_->{name} } || {} for @cases;
    return @cases;
}

sub settled { my ($c) = @_; $h->wait_holds($c->{acct}, 0, $VALGRIND ? 60 : 20) }

# ---- each point, each API ---------------------------------------------------

{
    my @cases;
    for my $api (sort keys %API) {
        # the events 0.5 s apart, the image 1 MB: a point is reached before
        # the next event is written
        my $mock = 'gap=0.5 size=1000000';
        push @cases, case($api, 'before', mock => 'sleep=30');
        push @cases, case($api, $_, mock => $mock) for qw(text mid-image image end);
        push @cases, case($api, 'usage', mock => $mock,
                          body => { stream_options => { include_usage => $TRUE } })
            unless $API{$api}{gemini};
    }
    push @cases, { %{ case('openai metered', 'sdk-image', mock => 'gap=0.5') },
                   path => '/v1', name => 'openai metered sdk-image' };

    for my $c (run_cases(@cases)) {
        my $paid = $c->{at} =~ /^(?:mid-image|image|usage|end|sdk-image)$/;
        my $want = $paid ? $c->{units} : 0;
        subtest "$c->{name}: " . ($paid ? 'charged ' . fmt_units($want) : 'free') => sub {
            my $g = $c->{got};
            ok !$g->{error}, 'the client did as told' or diag explain $g;
            is $g->{saw_image} ? 1 : 0, $paid ? 1 : 0,
               'image data reached the client ' . ($paid ? '' : 'not ') . 'before it left';
            ok settled($c), 'its hold settled or released';
            ok wait_for(sub { ($h->balance($c->{acct}) // 0) == 100000 - $want }, 10),
               'Redis: ' . fmt_units($want) . ', to the unit'
               or diag 'balance ' . $h->balance($c->{acct});
            my $l = $h->ledger($c->{acct});
            is scalar @$l, $paid ? 1 : 0, $paid ? 'one ledger entry' : 'no ledger entry';
            is $l->[0]{request_id}, $g->{request_id}, '... for the request the client made'
                if $paid && $g->{request_id};
            if ($c->{at} eq 'before') {
                # the upstream would have answered after 30 s: the hold went
                # with the client, not with the upstream's answer
                my ($e) = $h->access_wait(sub { ($_->{account} // '') eq $c->{acct} }, 1, 10);
                is $e && $e->{outcome}, 'client_gone', 'access log: client_gone';
            }
        };
    }
}

# ---- the access log and the metrics tell them apart -------------------------

{
    my ($c) = run_cases(case('openai fast', 'image', mock => 'gap=0.5', prefix => 'log'));
    settled($c);
    my ($e) = $h->access_wait(sub { ($_->{request_id} // '') eq ($c->{got}{request_id} // '-') });
    is $e && "$e->{outcome} $e->{reason} $e->{charge}", 'charged client_gone 0.2000',
       'access log: outcome=charged reason=client_gone charge=0.2000';
    my $m = $h->request('GET', '/imgbill/metrics')->{body};
    like $m, qr/^imgbill_requests_total\{channel="fast",model="$PRO",outcome="charged",reason="client_gone"\} [1-9]\d*$/m,
         'metrics: charged with reason client_gone';
    like $m, qr/^imgbill_requests_total\{channel="fast",model="$PRO",outcome="free",reason="client_gone"\} [1-9]\d*$/m,
         'metrics: free with reason client_gone, apart';
}

# ---- Redis down when the drained stream ends ---------------------------------

{
    my ($c) = run_cases(case('openai fast', 'image', mock => 'gap=1', prefix => 'jr'));
    # the upstream has 3 events left, a second apart: Redis goes first
    $h->redis_stop(keep => 1);
    my $journal = $h->dir . '/imgbill.journal';
    my $rid = $c->{got}{request_id} // 'none';
    ok wait_for(sub { (do { local (@ARGV, $/) = ($journal); <> } // '')
                      =~ /^S \Q$rid\E \Q$c->{acct}\E 2000 fast \d+ \d+ \Q$PRO\E 1 openai k=[0-9a-f]{12} t=\d+$/m },
                $VALGRIND ? 60 : 15),
       'Redis down at the end of the drained stream: its charge journaled';
    $h->redis_start;
    ok wait_for(sub { ($h->balance($c->{acct}) // 0) == 100000 - 2000 }, 20),
       'Redis back: the replay charges 0.2000';
    is scalar @{ $h->ledger($c->{acct}) }, 1, '... once';
    ok $h->wait_holds($c->{acct}, 0, 10), '... and its hold is gone';
}

# ---- an upstream cut after the image: the fallback rule ----------------------

{
    # events: role, text, image, then the upstream dies: no usage ever
    my ($c) = run_cases(case('openai metered', 'end', mock => 'cut=3', prefix => 'cut'));
    ok $c->{got}{saw_image}, 'the client had its image when the upstream died';
    settled($c);
    ok wait_for(sub { ($h->balance($c->{acct}) // 0) == 100000 - 8970 }, 10),
       'charged by imgbill_usage_fallback max_output: 4096 x 219 / 1e6 = 0.8970';
    my $l = $h->ledger($c->{acct});
    is "$l->[0]{prompt_tokens} $l->[0]{completion_tokens}", '0 4096',
       '... recorded as 0 in, 4096 out';
    my ($e) = $h->access_wait(sub { ($_->{request_id} // '') eq ($c->{got}{request_id} // '-') });
    is $e && "$e->{outcome} $e->{reason}", 'charged upstream_cut',
       'access log: charged, upstream_cut';
}

# ---- the edges, on a relay that writes 16 KB at a time -----------------------

{
    my $dbg = tempdir(CLEANUP => !$ENV{IMGBILL_KEEP});
    diag "debug log: $dbg" if $ENV{IMGBILL_KEEP};
    my $e2 = Imgbill::Harness->new(conf_filter => sub {
        $_[0] =~ s/^(\s*listen\s+[^;]*?);(\s*#\s*site:\s*listen)/$1 sndbuf=16k;$2/m or die;
        $_[0] =~ s{(location = /fast/v1/chat/completions \{)}
                  {$1\n        error_log $dbg/debug.log debug;} or die;
    });
    my $debug = sub { do { local (@ARGV, $/) = ("$dbg/debug.log"); <> } // '' };

    # a client that reads 4 KB at a time, and stops when told
    my $client = sub {
        my ($key, $mock) = @_;
        my $s = IO::Socket::INET->new(Proto => 'tcp') or die $!;
        setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096);
        $s->connect(pack_sockaddr_in($e2->port, inet_aton('127.0.0.1'))) or die $!;
        my $body = encode_json({ model => $FLASH, stream => $TRUE,
                                 messages => [ { role => 'user', content => 'x' } ] });
        print $s "POST /fast/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               . "Authorization: Bearer $key\r\nX-Mock: $mock\r\n"
               . "Content-Type: application/json\r\nContent-Length: "
               . length($body) . "\r\n\r\n$body";
        return $s;
    };
    my $read_until = sub {
        my ($s, $re) = @_;
        my ($buf, $sel) = ('', IO::Select->new($s));
        while ($buf !~ $re && $sel->can_read(10)) {
            sysread($s, $buf, 4096, length $buf) or last;
        }
        return $buf;
    };

    # an image event half written: its first bytes reached the client
    my ($a1, $k1) = $e2->fresh_account(prefix => 'half');
    my $s = $client->($k1, 'size=4000000');
    my $got = $read_until->($s, qr/data:image\/png;base64,iVBOR/);
    close $s;
    like $got, qr/data:image\//, 'half written: the client had the first bytes of the image';
    ok $e2->wait_holds($a1, 0, $VALGRIND ? 60 : 20), '... the stream settled';
    is $e2->balance($a1), 100000 - 700, '... charged 0.0700: an image half written is delivered';

    # an image read from the upstream, queued behind 4 MB of text the
    # client never took: not written, not delivered, free
    my ($a2, $k2) = $e2->fresh_account(prefix => 'queued');
    $s = $client->($k2, 'pad=256 gap=0 size=200000');
    $read_until->($s, qr/\r\n\r\n/);
    ok wait_for(sub { my ($n) = $debug->() =~ /\*(\d+) imgbill: admitted "\Q$a2\E"/;
                      $n && $debug->() =~ /\*$n imgbill: the stream's first image shows at its output byte/ },
                $VALGRIND ? 60 : 20),
       'queued: the relay read the image, behind the text the client did not take';
    close $s;
    ok $e2->wait_holds($a2, 0, $VALGRIND ? 60 : 20), '... the client left: the hold released';
    is $e2->balance($a2), 100000, '... free: nothing of the image was written';
    ok wait_for(sub { $debug->() =~ /the client ended the stream of request \w+ of account "\Q$a2\E" [^\n]*before its image reached the client; it would have cost 0\.0700; not charged/ }, 10),
       '... and the error log says what it would have cost';
    like $e2->request('GET', '/imgbill/metrics')->{body},
         qr/^imgbill_abandoned_units_total\{channel="fast",model="$FLASH"\} 700$/m,
         '... counted in imgbill_abandoned_units_total: truly unpaid';
    is scalar($e2->crashes), 0, 'no worker crashed on the edges';
}

# ---- many streams left at random points --------------------------------------

# One Node process runs the 100 clients: a client that leaves "before the
# image" leaves late by as long as Node is busy with the others, and an
# image the relay wrote into its socket meanwhile reached it (and is paid
# for).  The events are 0.8 s apart (1 s under valgrind) so that the point
# a client left at is the one it meant; at 0.3 s a loaded machine made one
# run in four charge a client that meant to leave at the headers.

{
    my $n = $VALGRIND ? 20 : 100;
    my @cases = map {
        my $c = case('openai fast', 'random',
                     mock => ($VALGRIND ? 'gap=1' : 'gap=0.8') . ' size=200000',
                     prefix => 'rnd', seed => int rand 600);
        $c->{name} .= " $_";
        $c;
    } 1 .. $n;
    @cases = run_cases(@cases);
    is scalar(grep { !settled($_) } @cases), 0, "all $n settled or released";
    my (@bad, $saw, $charged);
    for my $c (@cases) {
        my $paid = 100000 - ($h->balance($c->{acct}) // 0);
        $saw++ if $c->{got}{saw_image};
        $charged += $paid;
        push @bad, "$c->{name} ($c->{got}{at}): saw image "
                   . ($c->{got}{saw_image} ? 1 : 0) . ", charged $paid"
            if $paid != ($c->{got}{saw_image} ? 2000 : 0) || $c->{got}{error};
    }
    ok !@bad, "$n streams left at random points: charged exactly those whose "
              . "client saw image data ($saw)" or diag join "\n", @bad;
    is $charged, 2000 * ($saw // 0), '... ' . fmt_units(2000 * ($saw // 0)) . ' in all';
}

is scalar($h->crashes), 0, 'no worker crashed';

done_testing;
