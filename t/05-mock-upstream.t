# scripts/mock-upstream: the behaviour the other tests rely on.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(free_port port_open wait_for);
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);

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

# the log
my @log = $h->upstream_requests;
ok @log > 20, 'log has one line per request';
my ($first) = @log;
is $first->{path}, '/v1/chat/completions', 'log: path';
is $first->{model}, 'gemini-2.5-flash-image', 'log: model';
is $first->{headers}{authorization}, 'Bearer sk-seen', 'log: headers';
ok $first->{time} > 1e9, 'log: time';
is $h->upstream_hits, scalar @log, 'upstream_hits counts log lines';

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
