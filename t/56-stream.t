# OpenAI chat completions with "stream": true, as a client on the wire sees
# them (raw sockets, the chunked body decoded here) and as Redis records them:
#   - the reply: 200 text/event-stream, chunked, X-Imgbill-Request-Id in the
#     header, the charge and balance as trailers (once each), never headers;
#   - money to the unit (metered and fast, both models), one ledger entry;
#   - usage: the relay asks the upstream for it (include_usage), hides the
#     usage-only chunk from a client that did not ask, adds "cost" (a number,
#     4 decimals) to the one a client asked for; Google's cumulative usage on
#     every chunk is billed once, from the last;
#   - image shapes (images[], a markdown data URL cut across events, parts),
#     a 16 MB image passed intact; a decoy "usage" in the text; the
#     upstream's own X-Imgbill-* headers dropped;
#   - free outcomes (no image, no usage, an error event, an upstream error
#     status), an upstream that dies mid-stream, a client that leaves;
#   - events pass as they come (an ordering check); two streams on one
#     keep-alive connection, each end delimited;
#   - gates, 30 concurrent fast streams on 1.0000, Redis down at settlement
#     (journal, replayed once), an HTTP/1.0 client, raw keys kept out of logs.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use IO::Select;
use Time::HiRes qw(time sleep);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for dechunk sse_events key_hash);

my $h = Imgbill::Harness->new;
my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';
my $FAST  = '/fast/v1/chat/completions';
my $TRUE  = JSON::PP::true;
my $JSON  = JSON::PP->new;
my (@KEYS, $TAG);

# ---- helpers --------------------------------------------------------------

sub body {
    my ($model, %extra) = @_;
    return { model => $model // $FLASH, stream => $TRUE,
             messages => [ { role => 'user', content => 'draw a cat' } ], %extra };
}

# the mock's image payload (scripts/mock-upstream payload())
sub payload {
    my ($n) = @_;
    my $p = 'iVBORw0KGgoAAAANSUhEUgAA';
    return $n <= length $p ? substr($p, 0, $n) : $p . ('A' x ($n - length $p));
}
sub data_url { 'data:image/png;base64,' . payload($_[0] // 2048) }

sub account {
    my ($units) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'st', units => $units // 100000);
    push @KEYS, $key;
    return ($acct, $key);
}

# the trailer lines after a chunked body's 0-size chunk, as sent
sub trailer_lines {
    my ($wire) = @_;
    while ($wire =~ /\G([0-9a-fA-F]+)[^\r\n]*\r\n/gc) {
        my $n = hex $1;
        if (!$n) {
            my @l;
            push @l, $1 while $wire =~ /\G([^\r\n]+)\r\n/gc;
            return @l;
        }
        my $next = pos($wire) + $n + 2;
        return if $next > length $wire;
        pos($wire) = $next;
    }
    return;
}

# a whole reply as read from the socket: status, headers (first value, and
# a count), the body de-chunked if chunked, its trailers (values, counts),
# its SSE events (raw data, and decoded JSON where short enough)
sub parse {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    $head //= '';
    my %r = (raw => $raw, wire => $body // '', headers => {}, count => {},
             tval => {}, tcount => {});
    ($r{status}) = $head =~ m{^HTTP/1\.[01] (\d+)};
    $r{status} //= 599;
    while ($head =~ /^([\w-]+):[ \t]*(.*?)\r?$/mg) {
        $r{headers}{lc $1} //= $2;
        $r{count}{lc $1}++;
    }
    $r{rid} = $r{headers}{'x-imgbill-request-id'} // '';
    if (lc($r{headers}{'transfer-encoding'} // '') eq 'chunked') {
        my ($data, undef, $complete) = dechunk($r{wire});
        @r{qw(data complete)} = ($data, $complete);
        for (trailer_lines($r{wire})) {
            my ($k, $v) = /^([\w-]+):[ \t]*(.*)$/ or next;
            $r{tval}{lc $k} //= $v;
            $r{tcount}{lc $k}++;
        }
    } else {
        $r{data} = $r{wire};
    }
    $r{json} = eval { $JSON->decode($r{data}) };
    $r{events} = [ sse_events($r{data}) ];
    $r{jev} = [ map { length $_ < 200_000 && /^\{/ ? (eval { $JSON->decode($_) } // ()) : () }
                @{ $r{events} } ];
    return \%r;
}

# one streamed call on a raw socket; $r->{up}: what the upstream received
sub stream {
    my (%o) = @_;
    my $tag = ++$TAG;
    my $s = $h->raw_send(key => $o{key}, path => $o{path} // '/v1/chat/completions',
                         body => $o{body} // body($o{model}),
                         mock => join(' ', grep { defined } $o{mock}, "tag=$tag"));
    my $r = parse($h->raw_reply($s)->{raw});
    $r->{up} = [ grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests ];
    return $r;
}

# read from $s until $cond->($buf) holds (or 10 s pass): what was read
sub read_until {
    my ($s, $cond) = @_;
    my $sel = IO::Select->new($s);
    my ($buf, $until) = ('', time + 10);
    while (!$cond->($buf) && (my $left = $until - time) > 0) {
        last unless $sel->can_read($left);
        sysread($s, $buf, 65536, length $buf) or last;
    }
    return $buf;
}
my $FIRST_EVENT = sub { $_[0] =~ /\r\n\r\n[0-9a-fA-F]+\r\ndata: [^\n]*\n\n/ };

sub usage_chunks { grep { ref $_->{choices} eq 'ARRAY' && !@{ $_->{choices} } } @{ $_[0]{jev} } }
sub cost_chunks  { grep { ref $_->{usage} eq 'HASH' && exists $_->{usage}{cost} } @{ $_[0]{jev} } }
sub image_url {
    for (@{ $_[0]{events} }) { return $1 if /"url":"(data:image\/[^"]*)"/ }
    return '';
}

# stream_ok($name, model =>, path =>, mock =>, body =>, start => units,
#   charge => units, channel =>, pt =>, ct =>, usage_asked => 'chunk' (a
#   choices [] chunk) | 'final' (the finish chunk), done => 0 (no [DONE]),
#   check => sub { ($r, $acct) }): a stream, charged (or free if charge 0)
sub stream_ok {
    my ($name, %o) = @_;
    my $start = $o{start} // 100000;
    my ($acct, $key) = account($start);
    my $r = stream(key => $key, %o);
    my ($charge, $after) = ($o{charge}, $start - $o{charge});
    subtest $name => sub {
        is $r->{status}, 200, 'status 200' or diag substr $r->{raw}, 0, 600;
        like $r->{headers}{'content-type'} // '', qr{^text/event-stream}, 'Content-Type: text/event-stream';
        is lc($r->{headers}{'transfer-encoding'} // ''), 'chunked', 'Transfer-Encoding: chunked';
        like $r->{rid}, qr/^[0-9a-f]{32}$/, 'X-Imgbill-Request-Id: 32 hex';
        is $r->{count}{'x-imgbill-charge'} // 0, 0, 'no X-Imgbill-Charge header';
        is $r->{count}{'x-imgbill-balance'} // 0, 0, 'no X-Imgbill-Balance header';
        ok $r->{complete}, 'the chunked body is complete (terminating chunk)';
        is scalar @{ $r->{jev} },
           scalar(grep { $_ ne '[DONE]' && length $_ < 200_000 } @{ $r->{events} }),
           'every event but [DONE] is JSON';
        is $r->{tval}{'x-imgbill-charge'}, fmt_units($charge), 'trailer X-Imgbill-Charge';
        is $r->{tval}{'x-imgbill-balance'}, fmt_units($after), 'trailer X-Imgbill-Balance';
        is $r->{tcount}{'x-imgbill-charge'}, 1, 'one X-Imgbill-Charge trailer';
        is $r->{tcount}{'x-imgbill-balance'}, 1, 'one X-Imgbill-Balance trailer';
        if ($o{done} // 1) {
            is $r->{events}[-1], '[DONE]', 'the stream ends with data: [DONE]';
            is scalar(grep { $_ eq '[DONE]' } @{ $r->{events} }), 1, '... once';
        }
        is $h->balance($acct), $after, "Redis balance $after units";
        is_deeply $h->holds($acct), {}, 'no hold left';
        my $l = $h->ledger($acct);
        if ($charge) {
            is scalar @$l, 1, 'one ledger entry';
            my $e = $l->[0] || {};
            is $e->{request_id}, $r->{rid}, 'ledger request_id = header';
            is $e->{channel}, $o{channel}, "ledger channel $o{channel}";
            is $e->{model}, $o{model} // $FLASH, 'ledger model';
            is $e->{prompt_tokens}, $o{pt}, "ledger prompt_tokens $o{pt}";
            is $e->{completion_tokens}, $o{ct}, "ledger completion_tokens $o{ct}";
            is $e->{charge}, $charge, "ledger charge $charge";
            is $e->{balance_after}, $after, "ledger balance_after $after";
        } else {
            is scalar @$l, 0, 'no ledger entry';
        }
        is scalar @{ $r->{up} }, 1, 'one upstream call';
        ok $r->{up}[0] && $r->{up}[0]{include_usage}, 'the upstream was asked for usage';
        if (my $how = $o{usage_asked}) {
            my @c = cost_chunks($r);
            is scalar @c, 1, 'one chunk carries usage.cost';
            my $u = $c[0] ? $c[0]{usage} : {};
            is_deeply $c[0], $r->{jev}[-1], '... the last chunk';
            if ($how eq 'chunk') {
                is_deeply $c[0] && $c[0]{choices}, [], '... the usage chunk (choices [])';
            } else {
                is $c[0] && $c[0]{choices}[0]{finish_reason}, 'stop', '... the finish chunk';
            }
            my $cost = fmt_units($charge);
            like $r->{data}, qr/"cost":\Q$cost\E[,}]/, "\"cost\":$cost in the text";
            is $u->{cost}, $charge / 10000, "usage.cost decodes to $cost";
            is $u->{prompt_tokens}, $o{pt}, 'usage.prompt_tokens unchanged';
            is $u->{completion_tokens}, $o{ct}, 'usage.completion_tokens unchanged';
        } else {
            is scalar(usage_chunks($r)), 0, 'no usage-only chunk (choices [])';
            unlike $r->{data}, qr/"cost"/, 'no "cost" anywhere';
        }
        $o{check}->($r, $acct) if $o{check};
    };
    return wantarray ? ($r, $acct) : $r;
}

my %FL = (channel => 'metered', pt => 560, ct => 1120);
my %PR = (model => $PRO, channel => 'metered', pt => 1210, ct => 2000);

# ---- money --------------------------------------------------------------

stream_ok('flash metered: 0.2465 in the trailers', %FL, charge => 2465, check => sub {
    is image_url($_[0]), data_url(), 'the image came through intact';
    is $_[0]{up}[0]{stream} ? 1 : 0, 1, 'the upstream was asked to stream';
});
stream_ok('3-pro metered: 1.7232', %PR, charge => 17232);
stream_ok('fast flash: 0.0700', %FL, path => $FAST, channel => 'fast', charge => 700);
stream_ok('fast 3-pro: 0.2000', %PR, path => $FAST, channel => 'fast', charge => 2000);

# ---- usage: asked for the relay, shown only to a client that asked --------

stream_ok('include_usage asked: the usage chunk carries cost 0.2465', %FL, charge => 2465,
          usage_asked => 'chunk',
          body => body($FLASH, stream_options => { include_usage => $TRUE }));
stream_ok('include_usage asked, 3-pro: cost 1.7232', %PR, charge => 17232,
          usage_asked => 'chunk',
          body => body($PRO, stream_options => { include_usage => $TRUE }));
stream_ok('include_usage asked, fast: cost 0.0700 (4 decimals)', %FL, path => $FAST,
          channel => 'fast', charge => 700, usage_asked => 'chunk',
          body => body($FLASH, stream_options => { include_usage => $TRUE }));
stream_ok('include_usage false: treated as not asked', %FL, charge => 2465,
          body => body($FLASH, stream_options => { include_usage => JSON::PP::false }));
stream_ok('include_usage asked, no image: cost 0.0000', %FL, charge => 0,
          mock => 'kind=noimage', usage_asked => 'chunk',
          body => body($FLASH, stream_options => { include_usage => $TRUE }));
{
    my ($acct, $key) = account();
    $h->rejected_ok('stream_options "x" -> 400 invalid_stream_options', 400,
        'invalid_request_error', 'invalid_stream_options',
        sub { $h->chat(key => $key, body => body($FLASH, stream_options => 'x')) });
}

# ---- image shapes; Google's usage on every chunk ----------------------------

stream_ok('image=markdown split=3: a data URL across events', %FL, charge => 2465,
          mock => 'image=markdown split=3', check => sub {
    my @content = map { $_->{choices}[0]{delta}{content} // () } @{ $_[0]{jev} };
    cmp_ok scalar(@content), '>=', 3, 'the content came in pieces';
    is join('', @content), "Here is your image:\n\n![image](" . data_url() . ')',
        'joined, they are the whole markdown image';
});
stream_ok('image=parts', %FL, charge => 2465, mock => 'image=parts',
          check => sub { is image_url($_[0]), data_url(), 'the image part came through' });
stream_ok('usage_every=1: billed by the last usage, not the sum', %FL, charge => 2465,
          mock => 'usage_every=1', check => sub {
    cmp_ok scalar(grep { ref $_->{usage} eq 'HASH' } @{ $_[0]{jev} }), '>', 1,
        'the client saw the cumulative usage chunks';
});
stream_ok('usage_every=1, include_usage asked: the finish chunk carries the cost', %FL,
          charge => 2465, mock => 'usage_every=1', usage_asked => 'final',
          body => body($FLASH, stream_options => { include_usage => $TRUE }));
stream_ok('4K image: a 16 MB data URL in one event', %FL, charge => 2465,
          mock => 'size=16000000', check => sub {
    my $url = image_url($_[0]);
    is length $url, length data_url(16000000), 'the whole 16 MB data URL arrived';
    ok $url eq data_url(16000000), '... byte for byte';
});

stream_ok('kind=decoy: a "usage" inside the text is not billed', %FL, charge => 2465,
          mock => 'kind=decoy');
stream_ok("spoof=1: the upstream's X-Imgbill-* headers are dropped", %FL, charge => 2465,
          mock => 'spoof=1', check => sub {
    is $_[0]{count}{'x-imgbill-request-id'}, 1, 'one X-Imgbill-Request-Id, ours';
});

# ---- free outcomes ----------------------------------------------------------

stream_ok('kind=noimage: free', %FL, charge => 0, mock => 'kind=noimage');
# the image reached the client: paid, by imgbill_usage_fallback (max_output:
# 4096 x 219 / 1e6 = 0.8970), the prompt taken as nothing
stream_ok('metered kind=nousage: charged by the fallback, 0.8970', %FL, charge => 8970,
          pt => 0, ct => 4096, mock => 'kind=nousage', check => sub {
    my $rid = $_[0]{rid};
    ok wait_for(sub { $h->error_log =~ /metered stream of request \Q$rid\E without a usable usage after its image: charged 8970 units by imgbill_usage_fallback max_output/ }),
       'error.log says which rule charged it';
});
stream_ok('fast kind=nousage: charged 0.0700, tokens 0', %FL, path => $FAST,
          channel => 'fast', charge => 700, pt => 0, ct => 0, mock => 'kind=nousage');
stream_ok('stream_error=1: an error event mid-stream is free', %FL, charge => 0,
          mock => 'stream_error=1', done => 0, check => sub {
    is scalar(grep { ($_->{error}{code} // '') eq 'mock_stream_error' } @{ $_[0]{jev} }), 1,
        'the error event passed through';
});
{
    my ($acct, $key) = account();
    my $r = stream(key => $key, mock => 'status=429');
    subtest 'upstream 429 to a stream: its JSON error, free' => sub {
        is $r->{status}, 429, 'status 429';
        is $r->{json} && $r->{json}{error}{code}, 'mock_429', "the upstream's error passed through";
        is $r->{headers}{'x-imgbill-charge'}, '0.0000', 'X-Imgbill-Charge header 0.0000';
        is $r->{count}{'x-imgbill-charge'}, 1, '... once';
        is $r->{headers}{'x-imgbill-balance'}, '10.0000', 'X-Imgbill-Balance header 10.0000';
        like $r->{rid}, qr/^[0-9a-f]{32}$/, 'X-Imgbill-Request-Id';
        is $h->balance($acct), 100000, 'balance unchanged';
        is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
        ok $h->wait_holds($acct, 0), 'hold released';
    };
}

# ---- the upstream dies, the client leaves -----------------------------------

{
    my ($acct, $key) = account();
    my $r = stream(key => $key, mock => 'drop=1');
    # the first half of the events went whole, the image among them: it
    # reached the client, and no usage came after it
    subtest 'drop=1: the upstream dies mid-stream, after the image' => sub {
        is $r->{status}, 200, 'the stream had begun: 200';
        ok !$r->{complete}, 'no terminating chunk: the client sees the stream cut';
        ok !grep({ $_ eq '[DONE]' } @{ $r->{events} }), 'no [DONE]';
        ok !exists $r->{tval}{'x-imgbill-charge'}, 'no charge trailer';
        ok image_url($r), 'the image had reached the client';
        ok $h->wait_holds($acct, 0), 'hold settled';
        ok wait_for(sub { ($h->balance($acct) // 0) == 100000 - 8970 }),
           'charged by the fallback: 0.8970';
        is scalar @{ $h->ledger($acct) }, 1, 'one ledger entry';
        my $rid = $r->{rid};
        ok wait_for(sub { $h->error_log =~ /the upstream ended the stream of request \Q$rid\E\b[^\n]*its image among them: charged 0\.8970/ }, 10),
            'error.log: the upstream ended the stream ..., its image among them: charged'
            or diag join "\n", grep { /\Q$rid\E/ } split /\n/, $h->error_log;
    };
}
{
    my ($acct, $key) = account();
    my $s = $h->raw_send(key => $key, body => body(), mock => 'gap=0.5');
    my $got = read_until($s, $FIRST_EVENT);
    close $s;
    my ($rid) = $got =~ /^X-Imgbill-Request-Id: ([0-9a-f]{32})\r$/mi;
    subtest 'the client leaves after the first event' => sub {
        ok $FIRST_EVENT->($got), 'the first event arrived' or diag $got;
        ok $h->wait_holds($acct, 0, 10), 'hold released';
        is $h->balance($acct), 100000, 'nothing charged';
        is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
        $rid //= 'none';
        my $re = qr/the client ended the stream of request \Q$rid\E of account "\Q$acct\E" after \d+ bytes\b[^\n]*would have cost (?:\d+\.\d{4}|unknown); not charged, hold released/;
        ok wait_for(sub { $h->error_log =~ $re }, 10), "error.log: the client ended the stream of request $rid ..."
            or diag join "\n", grep { /\Q$rid\E/ } split /\n/, $h->error_log;
    };
}

{
    # the image reached the client: it pays as if it had stayed, the
    # upstream read to its end
    my ($acct, $key) = account();
    my $s = $h->raw_send(key => $key, body => body(), mock => 'gap=0.5',
                         path => '/fast/v1/chat/completions');
    my $got = read_until($s, sub { $_[0] =~ /data:image\/png;base64,/ });
    close $s;
    my ($rid) = $got =~ /^X-Imgbill-Request-Id: ([0-9a-f]{32})\r$/mi;
    $rid //= 'none';
    subtest 'the client leaves after the image: charged as if it had stayed' => sub {
        like $got, qr/data:image\/png;base64,/, 'the image event arrived';
        ok $h->wait_holds($acct, 0, 10), 'hold settled';
        is $h->balance($acct), 100000 - 700, 'charged 0.0700';
        is scalar @{ $h->ledger($acct) }, 1, 'one ledger entry';
        ok wait_for(sub { $h->error_log =~ /the client of request \Q$rid\E left after \d+ of \d+ bytes, its image among them/ }, 10),
            'error.log: the client left after its image, the upstream read on'
            or diag join "\n", grep { /\Q$rid\E/ } split /\n/, $h->error_log;
        my ($e) = $h->access_wait(sub { ($_[0]{request_id} // '') eq $rid }, 1, 10);
        is $e && $e->{outcome}, 'charged', 'access log: outcome=charged';
        is $e && $e->{reason}, 'client_gone', '... reason=client_gone';
        is $e && $e->{would_charge}, '-', '... no would_charge';
        is $e && $e->{charge}, '0.0700', '... charge=0.0700';
    };
}
{
    my ($acct, $key) = account();
    my $r = stream(key => $key, mock => 'cut=2');
    my ($e) = $h->access_wait(sub { ($_[0]{request_id} // '') eq $r->{rid} }, 1, 10);
    is $e && $e->{outcome}, 'upstream_cut',
       'access log: a stream the upstream cut before its image is outcome=upstream_cut';
    is $h->balance($acct), 100000, '... and free';
    $r = stream(key => $key, mock => 'drop=1');
    ($e) = $h->access_wait(sub { ($_[0]{request_id} // '') eq $r->{rid} }, 1, 10);
    is $e && "$e->{outcome} $e->{reason}", 'charged upstream_cut',
       '... after its image, outcome=charged reason=upstream_cut';
    my $ok = stream(key => $key);
    ($e) = $h->access_wait(sub { ($_[0]{request_id} // '') eq $ok->{rid} }, 1, 10);
    is $e && $e->{outcome}, 'charged', 'access log: a billed stream is outcome=charged';
    is $e && $e->{would_charge}, '-', '... and has no would_charge';
}

# ---- events pass as they come -------------------------------------------------

{
    my ($acct, $key) = account();
    my $s = $h->raw_send(key => $key, body => body(), mock => 'gap=1');
    my $first = read_until($s, $FIRST_EVENT);
    my $r = parse($first . $h->raw_reply($s)->{raw});
    subtest 'gap=1: the first event arrives before the stream is over' => sub {
        ok $FIRST_EVENT->($first), 'the first event was read';
        unlike $first, qr/\[DONE\]/, '... before [DONE] was sent';
        unlike $first, qr/\r\n0\r\n/, '... before the terminating chunk';
        ok $r->{complete}, 'then the stream completed';
        is $r->{events}[-1], '[DONE]', '... with [DONE]';
        is $r->{tval}{'x-imgbill-charge'}, '0.2465', '... charged 0.2465';
        is $h->balance($acct), 100000 - 2465, 'Redis charged 0.2465';
    };
}

# ---- gates ------------------------------------------------------------------

{
    my ($a1, $k1) = account(49999);
    $h->rejected_ok('metered stream at 4.9999 -> 402', 402, 'insufficient_quota',
        'insufficient_balance', sub { $h->chat(key => $k1, body => body()) });
    my ($a2, $k2) = account(699);
    $h->rejected_ok('fast stream at 0.0699 -> 402', 402, 'insufficient_quota',
        'insufficient_balance', sub { $h->chat(key => $k2, path => $FAST, body => body()) });
}
stream_ok('fast stream at exactly 0.0700: charged, balance 0', %FL, path => $FAST,
          channel => 'fast', start => 700, charge => 700);

# ---- concurrency: 1.0000 buys exactly 14 fast streams ------------------------

{
    my ($acct, $key) = account(10000);
    my @s = map { $h->raw_send(key => $key, path => $FAST, body => body(), mock => 'sleep=0.5') } 1 .. 30;
    my @r = map { parse($h->raw_reply($_)->{raw}) } @s;
    my @ok = grep { $_->{status} == 200 && ($_->{tval}{'x-imgbill-charge'} // '') eq '0.0700'
                    && $_->{complete} } @r;
    my @poor = grep { $_->{status} == 402 } @r;
    is scalar @ok, 14, '30 fast streams at once on 1.0000: 14 complete with trailer 0.0700';
    is scalar @poor, 16, '... 16 refused with 402';
    is $h->balance($acct), 200, '... balance exactly 0.0200';
    is scalar @{ $h->ledger($acct) }, 14, '... 14 ledger entries';
    ok $h->wait_holds($acct, 0), '... no hold left';
}

# ---- an HTTP/1.0 client: no chunks, no trailers, charged all the same ---------

{
    my ($acct, $key) = account();
    my $json = JSON::PP->new->canonical->encode(body());
    my $s = $h->raw_send(request => "POST /v1/chat/completions HTTP/1.0\r\n"
        . "Host: 127.0.0.1\r\nAuthorization: Bearer $key\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($json)
        . "\r\n\r\n$json");
    my $r = parse($h->raw_reply($s)->{raw});
    subtest 'HTTP/1.0 client: a close-delimited stream, charged in Redis' => sub {
        is $r->{status}, 200, 'status 200' or diag substr $r->{raw}, 0, 600;
        ok !exists $r->{headers}{'transfer-encoding'}, 'not chunked';
        like $r->{headers}{'content-type'} // '', qr{^text/event-stream}, 'text/event-stream';
        is $r->{events}[-1], '[DONE]', 'the whole stream, [DONE] last';
        is image_url($r), data_url(), 'the image intact';
        ok $h->wait_holds($acct, 0), 'no hold left';
        is $h->balance($acct), 100000 - 2465, 'Redis charged 0.2465';
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        is $l->[0] && $l->[0]{request_id}, $r->{rid}, '... for this request';
    };
}

# ---- two streams on one keep-alive connection: each end is delimited --------

{
    my ($acct, $key) = account();
    my $json = JSON::PP->new->canonical->encode(body());
    my $req = sub {
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Authorization: Bearer $key\r\nContent-Type: application/json\r\n"
        . "Connection: $_[0]\r\nContent-Length: " . length($json) . "\r\n\r\n$json";
    };
    my $s = $h->raw_send(request => $req->('keep-alive'));
    my $END = qr/\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n\z/;
    my $r1 = parse(read_until($s, sub { $_[0] =~ $END }));
    print $s $req->('close');
    my $r2 = parse($h->raw_reply($s)->{raw});
    subtest 'keep-alive: two streams, one connection' => sub {
        ok $r1->{complete} && $r1->{raw} =~ $END, 'the first ends with its trailers';
        is $r1->{tval}{'x-imgbill-charge'}, '0.2465', '... charge 0.2465';
        is $r1->{tval}{'x-imgbill-balance'}, '9.7535', '... balance 9.7535';
        is $r2->{status}, 200, 'the second on the same connection: 200';
        ok $r2->{complete}, '... complete';
        is $r2->{tval}{'x-imgbill-balance'}, '9.5070', '... balance 9.5070';
        is $h->balance($acct), 100000 - 2 * 2465, 'Redis charged twice';
    };
}

# ---- Redis down at settlement: the stream completes, the journal pays ---------

{
    my ($acct, $key) = account();
    my $s = $h->raw_send(key => $key, body => body(), mock => 'sleep=2');
    ok $h->wait_holds($acct, 1), 'Redis down: admitted, hold placed';
    $h->redis_stop(keep => 1);    # its data comes back, as persistence would
    my $r = parse($h->raw_reply($s)->{raw});
    my $rid = $r->{rid};
    subtest 'Redis down at settlement: the client still gets its stream' => sub {
        is $r->{status}, 200, 'status 200';
        ok $r->{complete}, 'the chunked body is complete';
        is $r->{events}[-1], '[DONE]', '[DONE] last';
        is image_url($r), data_url(), 'the image intact';
        is $r->{tval}{'x-imgbill-charge'}, '0.2465', 'trailer X-Imgbill-Charge 0.2465';
        is $r->{tcount}{'x-imgbill-charge'}, 1, '... once';
        ok !exists $r->{tval}{'x-imgbill-balance'}, 'no X-Imgbill-Balance trailer (unknown)';
        like $h->error_log, qr/journaled "S \Q$rid\E [^"\n]*" until redis is back|settle of request \Q$rid\E failed/,
            'error.log: the settlement was journaled';
    };
    $h->redis_start;
    ok wait_for(sub { ($h->balance($acct) // 0) == 100000 - 2465 }, 10),
        'Redis back: the journaled charge is applied';
    # the replay that applied it empties the journal: none can apply it again
    my $journal = $h->dir . '/imgbill.journal';
    ok wait_for(sub { -z $journal }, 10), '... and the journal is emptied';
    is $h->balance($acct), 100000 - 2465, '... once';
    my $l = $h->ledger($acct);
    is scalar @$l, 1, '... one ledger entry';
    is $l->[0] && $l->[0]{request_id}, $rid, '... with the request id of the stream';
}

# ---- logs ---------------------------------------------------------------------

{
    my $logs = $h->error_log . $h->access_log;
    is scalar(grep { index($logs, $_) >= 0 } @KEYS), 0,
        'no raw API key (' . scalar(@KEYS) . ' used) in error.log or access.log';
    is_deeply [ $h->crashes ], [], 'no nginx worker crashed';
}

done_testing;
