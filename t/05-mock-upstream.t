# scripts/mock-upstream: the behaviour the other tests rely on.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(free_port port_open wait_for);
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;

# scripts/test's second pass runs the nginx of a test under memcheck:
# none starts here, and the first pass ran it all
plan skip_all => 'no nginx here: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $h = Imgbill::Harness->new(nginx => 0, redis => 0);
my $base = 'http://127.0.0.1:' . $h->mock_port;
my $ua = HTTP::Tiny->new(timeout => 30, keep_alive => 0);

sub mock {
    my ($xmock, %o) = @_;
    my $body = exists $o{body} ? $o{body}
             : encode_json({ model => $o{model} // 'gemini-2.5-flash-image',
                             messages => [] });
    my %hdr = ('Content-Type' => 'application/json', %{ $o{headers} || {} });
    $hdr{'X-Mock'} = $xmock if defined $xmock;
    my $res = $ua->request('POST', "$base/v1/chat/completions",
                           { headers => \%hdr, content => $body });
    $res->{json} = eval { JSON::PP->new->decode($res->{content}) };
    return $res;
}

sub image_url {
    my ($j) = @_;
    my $m = $j->{choices}[0]{message};
    return $m->{images}[0]{image_url}{url} if $m->{images};
    if (ref $m->{content} eq 'ARRAY') {
        my ($p) = grep { $_->{type} eq 'image_url' } @{ $m->{content} };
        return $p->{image_url}{url};
    }
    return $1 if $m->{content} =~ /!\[[^\]]*\]\((data:[^)]+)\)/;
    return undef;
}

# default reply
my $r = mock(undef, headers => { Authorization => 'Bearer sk-seen',
                                 'X-Imgbill-Account' => 'evil',
                                 'Accept-Encoding' => 'gzip' });
is $r->{status}, 200, 'default status 200';
is $r->{headers}{connection}, 'close', 'Connection: close';
like $r->{headers}{'content-type'}, qr{^application/json}, 'JSON content type';
is $r->{headers}{'content-length'}, length $r->{content}, 'Content-Length';
my $j = $r->{json};
ok $j, 'JSON body';
like $j->{id}, qr/^chatcmpl-/, 'id';
is $j->{object}, 'chat.completion', 'object';
like $j->{created}, qr/^\d+$/, 'created';
is $j->{model}, 'gemini-2.5-flash-image', 'model echoed';
is $j->{choices}[0]{index}, 0, 'choices[0].index';
is $j->{choices}[0]{finish_reason}, 'stop', 'finish_reason';
is $j->{choices}[0]{message}{role}, 'assistant', 'role';
ok !ref $j->{choices}[0]{message}{content}, 'short text content';
is $j->{choices}[0]{message}{images}[0]{type}, 'image_url', 'images[0].type';
my $url = image_url($j);
like $url, qr{^data:image/png;base64,}, 'data URL';
is length($url) - length('data:image/png;base64,'), 2048, 'default payload 2048';
is_deeply $j->{usage}, { prompt_tokens => 560, completion_tokens => 1120,
                         total_tokens => 1680 }, 'flash default usage';
is_deeply $j->{mock_seen}, { authorization => 'Bearer sk-seen',
                             imgbill_headers => ['x-imgbill-account'],
                             accept_encoding => 'gzip' }, 'mock_seen';

is_deeply mock(undef, model => 'gemini-3-pro-image-preview')->{json}{usage},
    { prompt_tokens => 1210, completion_tokens => 2000, total_tokens => 3210 },
    '3-pro default usage';
is_deeply mock(undef, model => 'other')->{json}{usage},
    { prompt_tokens => 100, completion_tokens => 1000, total_tokens => 1100 },
    'other default usage';
is_deeply mock('pt=7;ct=9')->{json}{usage},
    { prompt_tokens => 7, completion_tokens => 9, total_tokens => 16 },
    'pt/ct with ";"';
is mock(' pt=7  ;  ct=9 ; size=10')->{json}{usage}{completion_tokens}, 9,
    'mixed separators';
is mock(undef)->{json}{mock_seen}{authorization}, undef, 'no Authorization -> null';

# status / kinds
$r = mock('status=500');
is $r->{status}, 500, 'status=500';
is ref $r->{json}{error}, 'HASH', 'non-2xx: OpenAI error body';
ok exists $r->{json}{mock_seen}, 'error body has mock_seen';
$r = mock('status=429; kind=error');
is $r->{status}, 429, 'status=429';
is $r->{json}{error}{code}, 'mock_429', 'error code';
$r = mock('kind=error');
is $r->{status}, 200, 'kind=error keeps the given (default) status';
ok $r->{json}{error}, '... with an error body';
$r = mock('kind=nonjson');
is $r->{status}, 200, 'nonjson 200';
ok !$r->{json}, 'nonjson body is not JSON';
$r = mock('kind=noimage');
ok $r->{json}{usage}, 'noimage has usage';
is image_url($r->{json}), undef, 'noimage has no image';
ok !exists $r->{json}{choices}[0]{message}{images}, 'noimage: no images field';
$r = mock('kind=nousage');
ok !exists $r->{json}{usage}, 'nousage: no usage';
ok image_url($r->{json}), 'nousage: has an image';

# decoy
$r = mock('kind=decoy');
my $lit = '\"usage\":{\"prompt_tokens\":999999,\"completion_tokens\":999999}';
my $di = index($r->{content}, $lit);
my $ui = index($r->{content}, '"usage":{"prompt_tokens":560');
ok $di >= 0, 'decoy text is in the raw body, escaped';
ok $ui > $di, 'decoy comes before the real usage';
is $r->{json}{usage}{prompt_tokens}, 560, 'real usage parses';
like $r->{json}{choices}[0]{message}{content},
    qr/"usage":\{"prompt_tokens":999999,"completion_tokens":999999\}/,
    'decoded content carries the literal text';
ok image_url($r->{json}), 'decoy has an image';

# image styles
$r = mock('image=markdown size=100');
like $r->{json}{choices}[0]{message}{content},
    qr{^.*!\[image\]\(data:image/png;base64,[A-Za-z0-9+/=]{100}\)}s, 'markdown';
ok !exists $r->{json}{choices}[0]{message}{images}, 'markdown: no images field';
$r = mock('image=parts size=100');
is ref $r->{json}{choices}[0]{message}{content}, 'ARRAY', 'parts: array content';
is length(image_url($r->{json})), 100 + length('data:image/png;base64,'), 'parts url';

# big payload
$r = mock('size=2000000');
is length(image_url($r->{json})), 2000000 + length('data:image/png;base64,'),
    'size=2000000';

# usage_first
$r = mock('usage_first=1');
ok index($r->{content}, '"usage"') < index($r->{content}, '"choices"'),
    'usage_first puts usage before choices';
ok index(mock(undef)->{content}, '"usage"') > index(mock(undef)->{content}, '"choices"'),
    'default: choices before usage';

# spoof
$r = mock('spoof=1');
is $r->{headers}{'x-imgbill-charge'}, '0.0000', 'spoof charge';
is $r->{headers}{'x-imgbill-balance'}, '999999.0000', 'spoof balance';
is $r->{headers}{'x-imgbill-request-id'}, 'spoofed', 'spoof request id';
ok !exists mock(undef)->{headers}{'x-imgbill-charge'}, 'no spoof by default';

# sleep: a client that gives up before the reply sees a timeout
{
    my $impatient = HTTP::Tiny->new(timeout => 0.5, keep_alive => 0);
    my $res = $impatient->request('POST', "$base/v1/chat/completions",
        { headers => { 'X-Mock' => 'sleep=3' }, content => '{}' });
    is $res->{status}, 599, 'sleep=3: a 0.5 s client times out first';
    is mock('sleep=0.2')->{status}, 200, 'sleep=0.2: the reply comes after the pause';
}

# raw requests for chunked and drop: the exact bytes, the reply as sent
sub raw { $h->raw_http(port => $h->mock_port, request => $_[0])->{raw} }

my $body = '{"model":"gemini-3-pro-image-preview","messages":[]}';
my $chunked_req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    . "Transfer-Encoding: chunked\r\nX-Mock: size=10\r\n\r\n"
    . sprintf('%x', 10) . "\r\n" . substr($body, 0, 10) . "\r\n"
    . sprintf('%x', length($body) - 10) . "\r\n" . substr($body, 10) . "\r\n"
    . "0\r\n\r\n";
my $resp = raw($chunked_req);
like $resp, qr/"prompt_tokens":1210/, 'chunked request body is read (model seen)';

$resp = raw("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            . "X-Mock: chunked=1 size=9000\r\n\r\n{}");
my ($hd, $bd) = split /\r\n\r\n/, $resp, 2;
like $hd, qr/^Transfer-Encoding: chunked\r?$/mi, 'chunked=1: Transfer-Encoding';
unlike $hd, qr/^Content-Length/mi, 'chunked=1: no Content-Length';
my $dechunked = '';
while ($bd =~ s/^([0-9a-f]+)\r\n//i) {
    my $n = hex $1;
    last if $n == 0;
    $dechunked .= substr($bd, 0, $n, '');
    $bd =~ s/^\r\n//;
}
ok eval { decode_json($dechunked) }, 'chunked reply decodes to JSON';

$resp = raw("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            . "X-Mock: drop=1\r\n\r\n{}");
($hd, $bd) = split /\r\n\r\n/, $resp, 2;
my ($cl) = $hd =~ /^Content-Length: (\d+)/mi;
ok $cl && length($bd) < $cl && length($bd) > 0,
    'drop=1: fewer bytes than Content-Length, then close';

# ---- streams ---------------------------------------------------------------

# stream(path =>, mock =>, body =>, headers => [k, v, ...])
#   -> { status, headers (lowercased), raw (the body as sent), body
#        (dechunked), complete (the terminating chunk came), seps (what ended
#        each event), events: [{ data => text, json => decoded, at => seconds
#        from the request to the arrival of its last byte }], big => [payloads
#        of 65000+ base64 characters, "BIG<i>" in their place in data/json] }
# One HTTP chunk is one event in the mock, so a chunk's end times its event.
sub stream {
    my (%o) = @_;
    my $body = $o{body} // encode_json({ model => 'gemini-2.5-flash-image', messages => [],
                                         stream => JSON::PP::true });
    my $req = 'POST ' . ($o{path} // '/v1/chat/completions') . " HTTP/1.1\r\nHost: x\r\n"
            . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n";
    $req .= "X-Mock: $o{mock}\r\n" if defined $o{mock};
    my @hv = @{ $o{headers} || [] };
    $req .= "$hv[$_]: $hv[$_ + 1]\r\n" for grep { !($_ % 2) } 0 .. $#hv;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $h->mock_port,
                                  Proto => 'tcp', Timeout => 5) or die "connect: $!";
    my $t0 = time;
    print $s "$req\r\n$body";
    my ($raw, @arr) = ('');
    while (1) {
        my $n = sysread $s, $raw, 1 << 20, length $raw;
        last unless $n;
        push @arr, [length $raw, time - $t0];
    }
    close $s;
    my $hend = index($raw, "\r\n\r\n");
    my $head = substr($raw, 0, $hend);
    my %hd;
    $hd{lc $1} = $2 while $head =~ /^([\w-]+):\s*(.*?)\r?$/mg;
    my ($st) = $head =~ m{^HTTP/1\.1 (\d+)};
    my $r = { status => $st, headers => \%hd, raw => substr($raw, $hend + 4) };
    my ($pos, $b, @ends) = ($hend + 4, '');
    while (substr($raw, $pos) =~ /^([0-9a-f]+)\r\n/i) {
        my ($n, $at) = (hex $1, $pos + length($1) + 2);
        if ($n == 0) { $r->{complete} = 1; last }
        last if $at + $n + 2 > length $raw;
        $b .= substr($raw, $at, $n);
        $pos = $at + $n + 2;
        my ($t) = map { $_->[1] } grep { $_->[0] >= $pos } @arr;
        push @ends, $t;
    }
    $r->{body} = $b;
    my @big;
    $b =~ s{([A-Za-z0-9+/=]{65000,})}{push @big, $1; 'BIG' . $#big}ge;
    $r->{big} = \@big;
    while ($b =~ /\G(data: [^\r\n]*)(\r\n\r\n|\n\n)/gc) {
        my ($d, $sep) = ($1, $2);
        $d =~ s/^data: //;
        push @{ $r->{seps} }, $sep;
        push @{ $r->{events} }, { data => $d, json => scalar eval { decode_json($d) },
                                  at => shift @ends };
    }
    $r->{rest} = substr($b, pos($b) // 0);
    return $r;
}

sub chunks { grep { $_->{json} } @{ $_[0]{events} } }             # the JSON events
sub choice_chunks { grep { @{ $_->{json}{choices} || [] } } chunks($_[0]) }
sub deltas { map { $_->{json}{choices}[0]{delta} } choice_chunks($_[0]) }
sub last_data { $_[0]{events} ? $_[0]{events}[-1]{data} : undef }

# the images a stream delivered, as the client would put them together,
# then its text
sub stream_image {
    my ($r) = @_;
    my ($text, @urls) = ('');
    for my $d (deltas($r)) {
        push @urls, map { $_->{image_url}{url} } @{ $d->{images} || [] };
        if (ref $d->{content} eq 'ARRAY') {
            push @urls, map { $_->{image_url}{url} } grep { $_->{type} eq 'image_url' }
                        @{ $d->{content} };
        } elsif (defined $d->{content}) {
            $text .= $d->{content};
        }
    }
    push @urls, $1 if $text =~ /!\[[^\]]*\]\((data:[^)]+)\)/;
    return (@urls, $text);
}

my $DATA = 'data:image/png;base64,';
my $stream_body = sub {
    my (%x) = @_;
    encode_json({ model => 'gemini-2.5-flash-image', messages => [],
                  stream => JSON::PP::true, %x });
};
my $with_usage = $stream_body->(stream_options => { include_usage => JSON::PP::true });

# default: OpenRouter's images[], no usage unless asked
my $s = stream();
is $s->{status}, 200, 'stream: 200';
like $s->{headers}{'content-type'}, qr{^text/event-stream\b}, 'stream: text/event-stream';
is $s->{headers}{'transfer-encoding'}, 'chunked', 'stream: chunked';
ok !exists $s->{headers}{'content-length'}, 'stream: no Content-Length';
ok $s->{complete}, 'stream: ends with the terminating chunk';
like $s->{body}, qr/\A(?:data: [^\n]*\n\n)+\z/, 'stream: "data: ...\n\n" events only';
is last_data($s), '[DONE]', 'stream: data: [DONE] last';
my @c = chunks($s);
is scalar(@c), @{ $s->{events} } - 1, 'stream: every other event is JSON';
is_deeply [ map { $_->{json}{object} } @c ], [ ('chat.completion.chunk') x @c ],
    'stream: chat.completion.chunk objects';
is scalar(keys %{ { map { $_->{json}{id} => 1 } @c } }), 1, 'stream: one id';
like $c[0]{json}{id}, qr/^chatcmpl-/, 'stream: id';
like $c[0]{json}{created}, qr/^\d+$/, 'stream: created';
is $c[0]{json}{model}, 'gemini-2.5-flash-image', 'stream: model';
is $c[0]{json}{choices}[0]{index}, 0, 'stream: choices[0].index';
is $c[0]{json}{choices}[0]{delta}{role}, 'assistant', 'stream: role in the first delta';
is_deeply [ map { $_->{json}{choices}[0]{finish_reason} } @c ],
    [ (undef) x (@c - 1), 'stop' ], 'stream: finish_reason null, then stop';
is_deeply $c[0]{json}{mock_seen},
    { authorization => undef, imgbill_headers => [], accept_encoding => undef },
    'stream: mock_seen in the first chunk';
ok !grep({ exists $_->{json}{mock_seen} } @c[1 .. $#c]), 'stream: ... only there';
ok !grep({ exists $_->{json}{usage} } @c), 'stream: no usage when not asked';
my ($img) = grep { $_->{images} } deltas($s);
is $img->{images}[0]{type}, 'image_url', 'stream: delta.images[0].type';
is length($img->{images}[0]{image_url}{url}), length($DATA) + 2048,
    'stream: delta.images[0].image_url.url, 2048 long';
is scalar(grep { $_->{images} } deltas($s)), 1, 'stream: the image in one chunk';

# "stream": false is not a stream
$r = mock(undef, body => '{"model":"x","stream":false}');
like $r->{headers}{'content-type'}, qr{^application/json}, '"stream": false: one JSON reply';

# include_usage: "usage":null on every chunk, then one choices:[] chunk (OpenAI)
$s = stream(body => $with_usage);
@c = chunks($s);
is last_data($s), '[DONE]', 'include_usage: [DONE] last';
is_deeply $c[-1]{json}{choices}, [], 'include_usage: the usage chunk has "choices": []';
is_deeply $c[-1]{json}{usage}, { prompt_tokens => 560, completion_tokens => 1120,
                                 total_tokens => 1680 }, '... and the usage';
ok !grep({ !exists $_->{json}{usage} || defined $_->{json}{usage} } @c[0 .. $#c - 1]),
    'include_usage: "usage": null on every other chunk';
is $c[-2]{json}{choices}[0]{finish_reason}, 'stop', 'include_usage: after the stop chunk';
$s = stream(body => $stream_body->(stream_options => { include_usage => JSON::PP::false }));
ok !grep({ exists $_->{json}{usage} } chunks($s)), 'include_usage false: no usage';

# usage_every: cumulative on every chunk, the last one final (Google)
$s = stream(mock => 'usage_every=1 pt=10 ct=100', body => $with_usage);
@c = chunks($s);
ok !grep({ ref $_->{json}{usage} ne 'HASH' } @c), 'usage_every: usage on every chunk';
ok !grep({ !@{ $_->{json}{choices} } } @c), 'usage_every: no choices:[] chunk';
my @ct = map { $_->{json}{usage}{completion_tokens} } @c;
is_deeply $c[-1]{json}{usage}, { prompt_tokens => 10, completion_tokens => 100,
                                 total_tokens => 110 }, 'usage_every: the last is pt/ct';
ok !grep({ $ct[$_] >= $ct[$_ + 1] } 0 .. $#ct - 1), 'usage_every: completion_tokens grow';
ok !grep({ $_->{json}{usage}{prompt_tokens} != 10 } @c), 'usage_every: prompt_tokens constant';
my $sum = 0;
$sum += $_ for @ct;
ok $sum > 100, 'usage_every: adding them up is not the answer';
is last_data($s), '[DONE]', 'usage_every: [DONE]';

# the three image shapes
$s = stream(mock => 'image=markdown size=100');
my ($u, $text) = stream_image($s);
like $u, qr{^\Q$DATA\EiVBORw0KGgo[A-Za-z0-9+/]+$}, 'markdown: a data URL';
is length($u), length($DATA) + 100, 'markdown: size=100';
like $text, qr/^Here is your image:\n\n!\[image\]\(data:/, 'markdown: in delta.content';
ok !grep({ $_->{images} } deltas($s)), 'markdown: no delta.images';
$s = stream(mock => 'image=markdown split=5 size=300');
my @pieces = grep { defined $_->{content} && length $_->{content} } deltas($s);
is scalar(@pieces), 5, 'split=5: the content in 5 chunks';
ok !grep({ $_->{content} =~ m{data:image/png;base64,[A-Za-z0-9+/=]{300}\)} } @pieces),
    'split=5: no chunk holds the whole data URL';
($u) = stream_image($s);
is length($u), length($DATA) + 300, 'split=5: put together, the data URL is whole';
$s = stream(mock => 'image=parts size=100');
my ($pd) = grep { ref $_->{content} eq 'ARRAY' } deltas($s);
ok $pd, 'parts: delta.content is an array';
my ($ip) = grep { $_->{type} eq 'image_url' } @{ $pd->{content} || [] };
is length($ip->{image_url}{url}), length($DATA) + 100, 'parts: an image_url part';

# the kinds in a stream
$s = stream(mock => 'kind=noimage', body => $with_usage);
my @got = stream_image($s);
ok @got == 1 && $got[0] !~ /data:/, 'noimage stream: no image, only text';
ok chunks($s) && (chunks($s))[-1]{json}{usage}, 'noimage stream: usage chunk';
$s = stream(mock => 'kind=nousage usage_every=1', body => $with_usage);
ok !grep({ exists $_->{json}{usage} } chunks($s)), 'nousage stream: no usage anywhere';
($u) = stream_image($s);
ok $u, 'nousage stream: has an image';
is last_data($s), '[DONE]', 'nousage stream: [DONE]';
$s = stream(mock => 'kind=decoy', body => $with_usage);
($u, $text) = stream_image($s);
like $text, qr/"usage":\{"prompt_tokens":999999/, 'decoy stream: the text';
is +(chunks($s))[-1]{json}{usage}{prompt_tokens}, 560, 'decoy stream: the real usage';
$r = mock('status=500', body => $stream_body->());
is $r->{status}, 500, 'error with stream:true: the status';
like $r->{headers}{'content-type'}, qr{^application/json}, '... a JSON body, not a stream';
is $r->{json}{error}{code}, 'mock_500', '... the OpenAI error';
$s = stream(mock => 'spoof=1');
is $s->{headers}{'x-imgbill-charge'}, '0.0000', 'spoof=1 in a stream';

# a 4K image: 16 MB of base64 in one event, whole
{
    my $t = time;
    $s = stream(mock => 'size=16000000');
    my $took = time - $t;
    ok $s->{complete}, '16 MB stream: complete';
    is scalar(@{ $s->{big} }), 1, '16 MB stream: one payload';
    my ($e) = grep { $_->{data} =~ /BIG0/ } @{ $s->{events} };
    is $e->{json}{choices}[0]{delta}{images}[0]{image_url}{url}, "${DATA}BIG0",
        '16 MB stream: the payload is in one event, in delta.images';
    my $want = 'iVBORw0KGgoAAAANSUhEUgAA' . ('A' x (16000000 - 24));
    ok $s->{big}[0] eq $want, '16 MB stream: the payload intact, 16000000 characters';
    is last_data($s), '[DONE]', '16 MB stream: [DONE]';
    cmp_ok $took, '<', 10, "16 MB stream: fast enough (${\ sprintf '%.2f', $took} s)";
}

# drop: cut in the middle, no [DONE]
$s = stream(mock => 'drop=1', body => $with_usage);
ok !$s->{complete}, 'drop stream: no terminating chunk';
ok @{ $s->{events} || [] } >= 1, 'drop stream: some events came';
ok !grep({ $_->{data} eq '[DONE]' } @{ $s->{events} }), 'drop stream: no [DONE]';
ok !grep({ @{ $_->{json}{choices} } && $_->{json}{choices}[0]{finish_reason} } chunks($s)),
    'drop stream: no finish_reason';

# stream_error: a few chunks, then an error event, then the end
$s = stream(mock => 'stream_error=1', body => $with_usage);
@c = chunks($s);
ok @c >= 2, 'stream_error: chunks before the error';
is_deeply [ @{ $c[-1]{json}{error} }{qw(type code)} ], ['server_error', 'mock_stream_error'],
    'stream_error: the error event last';
ok $c[-1]{json}{error}{message}, 'stream_error: a message';
ok !grep({ $_->{data} eq '[DONE]' } @{ $s->{events} }), 'stream_error: no [DONE]';
ok $s->{complete}, 'stream_error: the stream is ended, not cut';

# sleep before the first byte, gap between events
$s = stream(mock => 'sleep=0.3 gap=0.25');
my @at = map { $_->{at} } @{ $s->{events} };
cmp_ok $at[0], '>=', 0.3, 'sleep=0.3: the first event after the pause';
cmp_ok $at[0], '<', 0.5, 'gap: the first event comes at once after it';
ok !grep({ $at[$_ + 1] - $at[$_] < 0.2 } 0 .. $#at - 1),
    'gap=0.25: each event apart' or diag "@at";

# ---- Gemini's native API ----------------------------------------------------

my $GPRO = '/v1beta/models/gemini-3-pro-image-preview';
sub gem {
    my ($xmock, %o) = @_;
    my %hdr = ('Content-Type' => 'application/json', %{ $o{headers} || {} });
    $hdr{'X-Mock'} = $xmock if defined $xmock;
    my $res = $ua->request('POST', $base . ($o{path} // "$GPRO:generateContent"),
        { headers => \%hdr,
          content => $o{body} // '{"contents":[{"role":"user","parts":[{"text":"a cat"}]}]}' });
    $res->{json} = eval { JSON::PP->new->decode($res->{content}) };
    return $res;
}

$r = gem(undef, headers => { 'x-goog-api-key' => 'AIza-seen' });
is $r->{status}, 200, 'gemini: 200';
like $r->{headers}{'content-type'}, qr{^application/json}, 'gemini: JSON';
$j = $r->{json};
my $cand = $j->{candidates}[0];
is $cand->{content}{role}, 'model', 'gemini: role model';
is $cand->{finishReason}, 'STOP', 'gemini: finishReason';
is $cand->{index}, 0, 'gemini: index';
is $cand->{content}{parts}[0]{text}, 'Here is your image.', 'gemini: a text part';
is $cand->{content}{parts}[1]{inlineData}{mimeType}, 'image/png', 'gemini: inlineData';
is length($cand->{content}{parts}[1]{inlineData}{data}), 2048, 'gemini: 2048 of base64';
is_deeply $j->{usageMetadata}, { promptTokenCount => 1210, candidatesTokenCount => 2000,
                                 thoughtsTokenCount => 0, totalTokenCount => 3210 },
    'gemini: usageMetadata, the model from the path';
is $j->{modelVersion}, 'gemini-3-pro-image-preview', 'gemini: modelVersion';
is $j->{mock_seen}{goog_api_key}, 'AIza-seen', 'gemini: mock_seen.goog_api_key';
ok !exists $j->{choices} && !exists $j->{usage}, 'gemini: nothing of OpenAI';
is_deeply gem('pt=7 ct=9 tt=5 size=10')->{json}{usageMetadata},
    { promptTokenCount => 7, candidatesTokenCount => 9, thoughtsTokenCount => 5,
      totalTokenCount => 21 }, 'gemini: pt/ct/tt';
$j = gem('kind=noimage')->{json};
ok !grep({ $_->{inlineData} } @{ $j->{candidates}[0]{content}{parts} }), 'gemini noimage';
ok $j->{usageMetadata}, 'gemini noimage: usageMetadata';
$j = gem('kind=nousage')->{json};
ok !exists $j->{usageMetadata}, 'gemini nousage';
ok $j->{candidates}[0]{content}{parts}[1]{inlineData}, 'gemini nousage: the image';
$r = gem('usage_first=1');
ok index($r->{content}, '"usageMetadata"') < index($r->{content}, '"candidates"'),
    'gemini usage_first';
$r = gem('kind=decoy');
like $r->{json}{candidates}[0]{content}{parts}[0]{text}, qr/"usageMetadata":\{"promptTokenCount":999999/,
    'gemini decoy: the text';
is $r->{json}{usageMetadata}{promptTokenCount}, 1210, 'gemini decoy: the real usage';

# Google's errors
my %gst = (400 => 'INVALID_ARGUMENT', 401 => 'UNAUTHENTICATED', 403 => 'PERMISSION_DENIED',
           404 => 'NOT_FOUND', 429 => 'RESOURCE_EXHAUSTED', 500 => 'INTERNAL',
           503 => 'UNAVAILABLE');
my @bad;
for my $st (sort keys %gst) {
    for my $p (":generateContent", ":streamGenerateContent?alt=sse") {
        my $e = gem("status=$st", path => "$GPRO$p");
        push @bad, "$st $p" unless $e->{status} == $st
            && ($e->{headers}{'content-type'} // '') =~ m{^application/json}
            && ref $e->{json}{error} eq 'HASH'
            && $e->{json}{error}{code} == $st
            && $e->{json}{error}{status} eq $gst{$st}
            && length $e->{json}{error}{message};
    }
}
ok !@bad, 'gemini errors: {"error":{code,message,status}} for each status' or diag "@bad";

# streamGenerateContent?alt=sse
my $gbody = '{"contents":[{"role":"user","parts":[{"text":"a cat"}]}]}';
$s = stream(path => "$GPRO:streamGenerateContent?alt=sse", body => $gbody,
            mock => 'pt=11 ct=300 tt=30');
is $s->{status}, 200, 'gemini sse: 200';
like $s->{headers}{'content-type'}, qr{^text/event-stream\b}, 'gemini sse: text/event-stream';
is $s->{headers}{'transfer-encoding'}, 'chunked', 'gemini sse: chunked';
ok $s->{complete}, 'gemini sse: complete';
is $s->{rest}, '', 'gemini sse: nothing but events';
is_deeply $s->{seps}, [ ("\r\n\r\n") x @{ $s->{seps} } ], 'gemini sse: CRLF CRLF after each, as Google';
@c = chunks($s);
is scalar(@c), scalar @{ $s->{events} }, 'gemini sse: every event JSON, no [DONE]';
ok @c >= 2, 'gemini sse: more than one event';
is scalar(grep { grep { $_->{inlineData} } @{ $_->{json}{candidates}[0]{content}{parts} } } @c), 1,
    'gemini sse: the image in one event';
my ($gi) = map { grep { $_->{inlineData} } @{ $_->{json}{candidates}[0]{content}{parts} } } @c;
is length($gi->{inlineData}{data}), 2048, 'gemini sse: the image whole';
ok !grep({ ref $_->{json}{usageMetadata} ne 'HASH' } @c), 'gemini sse: usageMetadata on each';
is_deeply $c[-1]{json}{usageMetadata}, { promptTokenCount => 11, candidatesTokenCount => 300,
                                         thoughtsTokenCount => 30, totalTokenCount => 341 },
    'gemini sse: the last usageMetadata is final';
ok !grep({ $_->{json}{usageMetadata}{candidatesTokenCount} >= 300 } @c[0 .. $#c - 1]),
    'gemini sse: the earlier ones smaller';
my @tot = map { $_->{json}{usageMetadata}{totalTokenCount} } @c;
ok !grep({ $tot[$_] > $tot[$_ + 1] } 0 .. $#tot - 1), 'gemini sse: cumulative';
is_deeply [ map { $_->{json}{candidates}[0]{finishReason} } @c ],
    [ (undef) x (@c - 1), 'STOP' ], 'gemini sse: finishReason STOP on the last';
ok exists $c[0]{json}{mock_seen}, 'gemini sse: mock_seen in the first event';
$s = stream(path => "$GPRO:streamGenerateContent?alt=sse", body => $gbody, mock => 'eol=lf');
is_deeply $s->{seps}, [ ("\n\n") x @{ $s->{seps} } ], 'gemini sse eol=lf';
$s = stream(path => "$GPRO:streamGenerateContent?alt=sse", body => $gbody, mock => 'kind=nousage');
ok !grep({ exists $_->{json}{usageMetadata} } chunks($s)), 'gemini sse nousage';
$s = stream(path => "$GPRO:streamGenerateContent?alt=sse", body => $gbody, mock => 'stream_error=1');
@c = chunks($s);
is_deeply [ @{ $c[-1]{json}{error} || {} }{qw(code status)} ], [500, 'INTERNAL'],
    'gemini sse stream_error: Google\'s error event last';
ok @c >= 2 && $c[0]{json}{candidates}, 'gemini sse stream_error: after a candidate';
$s = stream(path => "$GPRO:streamGenerateContent?alt=sse", body => $gbody, mock => 'drop=1');
ok !$s->{complete}, 'gemini sse drop: cut';
ok !grep({ ($_->{json}{candidates}[0]{finishReason} // '') eq 'STOP' } chunks($s)),
    'gemini sse drop: no finishReason';
$s = stream(path => "$GPRO:streamGenerateContent?alt=sse", body => $gbody,
            mock => 'size=16000000');
ok $s->{complete} && @{ $s->{big} } == 1
   && $s->{big}[0] eq 'iVBORw0KGgoAAAANSUhEUgAA' . ('A' x (16000000 - 24)),
    'gemini sse: 16 MB inlineData whole in one event';

# streamGenerateContent without alt=sse: one JSON array, sent in pieces
$s = stream(path => "$GPRO:streamGenerateContent", body => $gbody);
like $s->{headers}{'content-type'}, qr{^application/json}, 'gemini array stream: JSON';
my $arr = eval { decode_json($s->{body}) };
is ref $arr, 'ARRAY', 'gemini array stream: an array';
is $arr->[-1]{candidates}[0]{finishReason}, 'STOP', 'gemini array stream: of the same events';

# GET of a Gemini path is answered as any other GET: a chat completion
$r = $ua->request('GET', "$base$GPRO:generateContent");
is $r->{status}, 200, 'GET: 200';
is eval { decode_json($r->{content})->{object} }, 'chat.completion', 'GET: a chat completion';

# the log
my @log = $h->upstream_requests;
ok @log > 20, 'log has one line per request';
my ($first) = @log;
is $first->{path}, '/v1/chat/completions', 'log: path';
is $first->{model}, 'gemini-2.5-flash-image', 'log: model';
is $first->{headers}{authorization}, 'Bearer sk-seen', 'log: headers';
ok $first->{time} > 1e9, 'log: time';
is $h->upstream_hits, scalar @log, 'upstream_hits counts log lines';
gem(undef, path => "$GPRO:streamGenerateContent?alt=sse&key=AIza-in-query",
    headers => { 'x-goog-api-key' => 'AIza-logged' });
my ($gl) = reverse $h->upstream_requests;
is $gl->{path}, "$GPRO:streamGenerateContent", 'log: a Gemini path, without the query';
is $gl->{query}, 'alt=sse&key=AIza-in-query', 'log: the query string';
is $gl->{goog_api_key}, 'AIza-logged', 'log: x-goog-api-key';
is $gl->{headers}{'x-goog-api-key'}, 'AIza-logged', 'log: ... among the headers';
is $gl->{model}, 'gemini-3-pro-image-preview', 'log: the model from the path';
is $first->{query}, undef, 'log: no query, null';

# ---- several images: "n", candidateCount, images=K -------------------------

{
    my $n3 = mock(undef, body => encode_json({ model => 'gemini-2.5-flash-image',
                                              messages => [], n => 3 }))->{json};
    is scalar @{ $n3->{choices} }, 3, 'n: 3: three choices';
    is_deeply [ map { $_->{index} } @{ $n3->{choices} } ], [0, 1, 2], '... indexed 0, 1, 2';
    is_deeply [ map { scalar @{ $_->{message}{images} || [] } } @{ $n3->{choices} } ],
        [1, 1, 1], '... each with an image';
    is $n3->{usage}{completion_tokens}, 3 * 1120, '... ct is per image: 3360';

    my $k1 = mock('images=1', body => encode_json({ model => 'gemini-2.5-flash-image',
                                                     messages => [], n => 3 }))->{json};
    is_deeply [ map { scalar @{ $_->{message}{images} || [] } } @{ $k1->{choices} } ],
        [1, 0, 0], 'images=1 of n: 3: the first choice only';
    is $k1->{usage}{completion_tokens}, 1120, '... and its tokens';

    my $go = gem(undef, body => encode_json({ contents => [],
                                             generationConfig => { candidateCount => 2 } }))->{json};
    is_deeply [ map { $_->{index} } @{ $go->{candidates} } ], [0, 1],
        'Gemini candidateCount 2: two candidates';
    is scalar(grep { $_->{inlineData} } map { @{ $_->{content}{parts} } } @{ $go->{candidates} }),
        2, '... each with an inlineData part';
    is $go->{usageMetadata}{candidatesTokenCount}, 2 * 2000, '... 2 x 2000 tokens';

    my $st = stream(body => encode_json({ model => 'gemini-2.5-flash-image', messages => [],
                                          stream => JSON::PP::true, n => 2 }));
    my %img;
    for my $c (choice_chunks($st)) {
        my $ch = $c->{json}{choices}[0];
        $img{$ch->{index}} += @{ $ch->{delta}{images} || [] };
    }
    is_deeply \%img, { 0 => 1, 1 => 1 }, 'stream n: 2: a chunk of each choice has its image';

    my $gs = stream(path => "$GPRO:streamGenerateContent?alt=sse",
                    body => encode_json({ contents => [],
                                          generation_config => { candidate_count => 2 } }));
    my @idx = map { $_->{json}{candidates}[0]{index} } grep { $_->{json} } @{ $gs->{events} };
    ok !defined $idx[0], 'Gemini stream: index 0 left out, as proto3 leaves a default out';
    ok grep({ defined $_ && $_ == 1 } @idx), '... and index 1 in the second candidate\'s events';
}

# ---- decode=go: read as a Go relay reads it --------------------------------

{
    # keys matched without case, the last one winning
    my $raw = '{"model":"gemini-2.5-flash-image","MODEL":"gemini-3-pro-image-preview",'
            . '"messages":[]}';
    my $r = mock('decode=go', body => $raw)->{json};
    is $r->{model}, 'gemini-3-pro-image-preview', 'decode=go: MODEL, the last, wins';
    is $r->{usage}{completion_tokens}, 2000, '... and generates as it';
    $r = mock(undef, body => $raw)->{json};
    is $r->{model}, 'gemini-2.5-flash-image', 'without it: JSON::PP keeps "model"';
    my $st = stream(mock => 'decode=go',
                    body => '{"model":"gemini-2.5-flash-image","stream":1,'
                          . '"stream_options":{"include_usage":true},'
                          . '"STREAM_OPTIONS":{"include_usage":false},"messages":[]}');
    ok scalar(choice_chunks($st)), 'decode=go: "stream": 1 streams';
    ok !grep({ ref $_->{json}{usage} eq 'HASH' } chunks($st)),
       '... and the last STREAM_OPTIONS, without usage, wins';
    $r = mock('decode=go', body => "{\"model\":\"gemini-2.5-flash-image\","
                                 . "\"\xc5\xbftream\":true,\"messages\":[]}");
    ok !$r->{json}, 'decode=go: a long s folds to s: it streams (no JSON reply)';
}

# ---- OpenAI's Images API ----------------------------------------------------
{
    sub images {
        my ($op, $xmock, %o) = @_;
        my ($ctype, $body);
        if ($o{form}) {
            my $b = 'mockFormBoundary7';
            $body = '';
            for my $f (@{ $o{form} }) {
                my ($name, $value, $file) = @$f;
                $body .= "--$b\r\nContent-Disposition: form-data; name=\"$name\""
                       . (defined $file ? "; filename=\"$file\"\r\nContent-Type: image/png" : '')
                       . "\r\n\r\n$value\r\n";
            }
            $body .= "--$b--\r\n";
            $ctype = "multipart/form-data; boundary=$b";
        } else {
            $body = encode_json($o{json});
            $ctype = 'application/json';
        }
        my %hdr = ('Content-Type' => $ctype);
        $hdr{'X-Mock'} = $xmock if defined $xmock;
        my $res = $ua->request('POST', "$base/v1/images/$op", { headers => \%hdr, content => $body });
        $res->{json} = eval { JSON::PP->new->decode($res->{content}) };
        return $res;
    }

    my $r = images('generations', 'size=8', json => { model => 'gpt-image-1', prompt => 'a fox', n => 2 });
    is $r->{status}, 200, 'images: gpt-image-1 generations 200';
    is scalar @{ $r->{json}{data} }, 2, '... two images, as n asks';
    is $r->{json}{data}[0]{b64_json}, 'iVBORw0K', '... each a b64_json';
    is_deeply $r->{json}{usage}, { input_tokens => 50, output_tokens => 2112, total_tokens => 2162,
                                   input_tokens_details => { text_tokens => 50, image_tokens => 0 } },
              '... usage: 50 text in, 1056 out per image';
    like $r->{content}, qr/"input_tokens":50,"input_tokens_details":\{"image_tokens":0,"text_tokens":50\},"output_tokens":2112/,
         '... in the order OpenAI writes it';

    $r = images('generations', 'nodetails=1', json => { model => 'gpt-image-1', prompt => 'x' });
    ok !exists $r->{json}{usage}{input_tokens_details}, 'nodetails=1: no input_tokens_details';

    $r = images('generations', undef, json => { model => 'dall-e-3', prompt => 'a fox' });
    like $r->{json}{data}[0]{url}, qr{^http://127\.0\.0\.1/mock-images/}, 'dall-e-3: a url';
    is $r->{json}{data}[0]{revised_prompt}, 'A fox, as asked.', '... and a revised_prompt';
    ok !exists $r->{json}{usage}, '... no usage';
    $r = images('generations', 'size=8', json => { model => 'dall-e-3', prompt => 'x',
                                                   response_format => 'b64_json' });
    is $r->{json}{data}[0]{b64_json}, 'iVBORw0K', '... b64_json when asked';
    $r = images('generations', undef, json => { model => 'dall-e-3', prompt => 'x', n => 2 });
    is $r->{status}, 400, 'dall-e-3, n 2: 400';
    is $r->{json}{error}{type}, 'invalid_request_error', '... invalid_request_error';

    $r = images('generations', 'images=3', json => { model => 'doubao-seedream-4-0', prompt => 'x', n => 4 });
    is scalar @{ $r->{json}{data} }, 3, 'seedream, n 4, images=3: three urls';
    is $r->{json}{usage}{generated_images}, 3, '... usage.generated_images 3';

    $r = images('generations', 'kind=moderation', json => { model => 'gpt-image-1', prompt => 'x' });
    is $r->{status}, 400, 'kind=moderation: 400';
    is_deeply [ @{ $r->{json}{error} }{qw(code type)} ],
              [ 'moderation_blocked', 'image_generation_user_error' ], '... moderation_blocked';

    $r = images('edits', 'size=8; pt=40', form => [ [ model => 'gpt-image-1' ], [ prompt => 'fox' ],
                                                    [ 'image[]' => 'x' x 100, 'a.png' ],
                                                    [ 'image[]' => 'y' x 50, 'b.png' ],
                                                    [ mask => 'z' x 10, 'm.png' ] ]);
    is $r->{status}, 200, 'edits, a form: 200';
    is_deeply $r->{json}{usage}{input_tokens_details}, { text_tokens => 40, image_tokens => 776 },
              '... 388 image tokens per image[] file, none for the mask';
    my ($logged) = grep { ($_->{images_api} // '') eq 'edits' } $h->upstream_requests;
    is_deeply $logged && [ map { "$_->{name} $_->{filename} $_->{size}" } @{ $logged->{form}{files} } ],
              [ 'image[] a.png 100', 'image[] b.png 50', 'mask m.png 10' ], '... the log has its files';
    is $logged && $logged->{form}{fields}{model}, 'gpt-image-1', '... and its fields';

    $r = images('edits', 'size=8', form => [ [ model => 'gpt-image-1' ], [ prompt => 'fox' ],
                                             [ stream => 'true' ], [ partial_images => 2 ], [ n => 2 ],
                                             [ image => 'x', 'a.png' ] ]);
    like $r->{headers}{'content-type'}, qr{^text/event-stream}, 'edits, stream=true: an event stream';
    my @ev = map { [ /^event: (\S+)\ndata: (.*)$/s ] } split /\n\n/, $r->{content};
    is join(' ', map { $_->[0] } @ev),
       'image_edit.partial_image image_edit.partial_image image_edit.completed '
       . 'image_edit.partial_image image_edit.partial_image image_edit.completed',
       '... per image two partial events and a completed one';
    my @d = map { JSON::PP->new->decode($_->[1]) } @ev;
    is_deeply [ map { $_->{type} } @d ], [ map { $_->[0] } @ev ], '... each type as its event: line';
    is_deeply [ map { exists $_->{usage} ? 1 : 0 } @d ], [ 0, 0, 1, 0, 0, 1 ], '... usage in the completed ones only';
    is $d[2]{usage}{input_tokens} + $d[5]{usage}{input_tokens}, 438, '... the input counted once';
    is $d[2]{usage}{output_tokens} + $d[5]{usage}{output_tokens}, 2112, '... the output per image';
}

# SIGTERM stops it (and its children)
my $port = free_port();
my $pid = fork;
if (!$pid) {
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', '/dev/null';
    exec $^X, 'scripts/mock-upstream', '--listen', "127.0.0.1:$port";
}
ok wait_for(sub { port_open($port) }, 10),
    'second mock is up';
kill 'TERM', $pid;
my $gone = wait_for(sub { waitpid($pid, 1) == $pid }, 10);
ok $gone, 'SIGTERM stops the mock';
if (!$gone) { kill 'KILL', $pid; waitpid $pid, 0 }

is system("$^X scripts/mock-upstream 2>/dev/null") >> 8, 2, 'no --listen: usage, exit 2';

done_testing;
