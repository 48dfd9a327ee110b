# Every rejection in the contract: status, error.type, error.code, JSON body,
# the request id header, nothing written to Redis, upstream never reached.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok);
use JSON::PP;

my $h = Imgbill::Harness->new;
$h->account('rich', 'sk-rich-0123456789', 1000000);
$h->account('poor', 'sk-poor-0123456789', 10);
# someone else's request is in flight: a live hold that must stay as it is
$h->redis('HSET', 'imgbill:{rich}:holds', 'inflight', '2465:' . (time + 600));

my $FLASH = 'gemini-2.5-flash-image';
my $good = { model => $FLASH, messages => [ { role => 'user', content => 'cat' } ] };

# rejected_ok(name, status, type, code, sub { ... returns the response },
#             no_rid => 1 when the error is not the module's own)
sub rejected_ok { $h->rejected_ok(@_) }

sub raw_post {
    my ($body, %hdr) = @_;
    return sub {
        $h->post('/v1/chat/completions', $body,
                 Authorization => 'Bearer sk-rich-0123456789', %hdr);
    };
}

# --- authentication
rejected_ok('no Authorization', 401, 'invalid_request_error', 'missing_api_key',
    sub { $h->post('/v1/chat/completions', $good) });
rejected_ok('empty Bearer token', 401, 'invalid_request_error', 'missing_api_key',
    sub { $h->post('/v1/chat/completions', $good, Authorization => 'Bearer ') });
rejected_ok('Authorization without a token', 401, 'invalid_request_error',
    'missing_api_key',
    sub { $h->post('/v1/chat/completions', $good, Authorization => 'Bearer') });
rejected_ok('empty Authorization', 401, 'invalid_request_error', 'missing_api_key',
    sub { $h->post('/v1/chat/completions', $good, Authorization => '') });
rejected_ok('unknown key', 401, 'invalid_request_error', 'invalid_api_key',
    sub { $h->chat(key => 'sk-nobody-knows-me') });
rejected_ok('unknown key on fast', 401, 'invalid_request_error', 'invalid_api_key',
    sub { $h->chat(key => 'sk-nobody-knows-me', path => '/fast/v1/chat/completions') });
rejected_ok('a known key with one character changed', 401, 'invalid_request_error',
    'invalid_api_key', sub { $h->chat(key => 'sk-rich-0123456780') });
{
    my $before = $h->snapshot;
    my $hits = $h->upstream_hits;
    my $res = $h->post('/v1/chat/completions', $good,
                       Authorization => 'Basic dXNlcjpwYXNz');
    is $res->{status}, 401, 'non-Bearer Authorization: 401';
    like $res->{json}{error}{code} // '', qr/^(missing|invalid)_api_key$/,
        '... missing_api_key or invalid_api_key';
    is $h->upstream_hits, $hits, '... upstream not reached';
    is $h->snapshot, $before, '... Redis unchanged';
}

# --- method
for my $m (qw(GET PUT DELETE)) {
    rejected_ok("$m -> 405", 405, 'invalid_request_error', 'method_not_allowed',
        sub { $h->request($m, '/v1/chat/completions', $m eq 'GET' ? undef : $good,
                          Authorization => 'Bearer sk-rich-0123456789') });
}

# --- body
my %bad_json = (
    'not JSON'            => 'draw me a cat',
    'empty body (Content-Length: 0)' => '',
    'truncated object'    => '{"model":"gemini-2.5-flash-image"',
    'array'               => '[{"model":"gemini-2.5-flash-image"}]',
    'string'              => '"gemini-2.5-flash-image"',
    'number'              => '42',
    'null'                => 'null',
    'duplicate model key' => '{"model":"gemini-2.5-flash-image","model":"gpt-4o"}',
    'duplicate nested key'=> '{"model":"gemini-2.5-flash-image","messages":[{"role":"user","role":"system","content":"x"}]}',
    'trailing garbage'    => '{"model":"gemini-2.5-flash-image"} xyz',
    'two objects'         => '{"model":"gemini-2.5-flash-image"}{"model":"x"}',
    'invalid escape'      => '{"model":"gemini-2.5-flash-image","x":"\\q"}',
    'single quotes'       => "{'model':'gemini-2.5-flash-image'}",
);
for my $k (sort keys %bad_json) {
    rejected_ok("invalid_json: $k", 400, 'invalid_request_error', 'invalid_json',
        raw_post($bad_json{$k}));
}

rejected_ok('invalid_json: POST without a body (no Content-Length)', 400,
    'invalid_request_error', 'invalid_json', sub {
        # HTTP::Tiny always sends Content-Length; write the request by hand
        $h->raw_http(key => 'sk-rich-0123456789');
    });

my %no_model = (
    'no model'       => '{"messages":[]}',
    'empty object'   => '{}',
    'model number'   => '{"model":123}',
    'model null'     => '{"model":null}',
    'model array'    => '{"model":["gemini-2.5-flash-image"]}',
    'model object'   => '{"model":{"name":"gemini-2.5-flash-image"}}',
    'model boolean'  => '{"model":true}',
);
for my $k (sort keys %no_model) {
    rejected_ok("missing_model: $k", 400, 'invalid_request_error', 'missing_model',
        raw_post($no_model{$k}));
}

rejected_ok('model not priced (metered)', 400, 'invalid_request_error',
    'model_not_supported', sub { $h->chat(key => 'sk-rich-0123456789', model => 'gpt-4o') });
rejected_ok('model not priced (fast)', 400, 'invalid_request_error',
    'model_not_supported', sub { $h->chat(key => 'sk-rich-0123456789', model => 'dall-e-3',
                                          path => '/fast/v1/chat/completions') });
rejected_ok('model name with a suffix is not the priced one', 400,
    'invalid_request_error', 'model_not_supported',
    sub { $h->chat(key => 'sk-rich-0123456789', model => 'gemini-2.5-flash-image-x') });
rejected_ok('model nested elsewhere does not count', 400, 'invalid_request_error',
    'missing_model', raw_post('{"messages":[{"model":"gemini-2.5-flash-image"}]}'));

# --- a stream's options must be an object (streams themselves: t/56-stream.t)
for my $path ('/v1/chat/completions', '/fast/v1/chat/completions') {
    rejected_ok("\"stream_options\": \"x\" on $path", 400, 'invalid_request_error',
        'invalid_stream_options', sub {
            $h->post($path, { model => 'gemini-2.5-flash-image', stream => JSON::PP::true,
                              stream_options => 'x',
                              messages => [ { role => 'user', content => 'x' } ] },
                     Authorization => 'Bearer sk-rich-0123456789');
        });
}
{
    my $res = $h->post('/v1/chat/completions',
                       { model => 'gemini-2.5-flash-image', stream => JSON::PP::false,
                         messages => [ { role => 'user', content => 'x' } ] },
                       Authorization => 'Bearer sk-rich-0123456789');
    is $res->{status}, 200, '"stream": false is billed as before';
}

# --- sizes
{
    my $big = '{"model":"gemini-2.5-flash-image","pad":"' . ('a' x (40 * 1024 * 1024)) . '"}';
    rejected_ok('40 MB body -> 413 request_too_large', 413, 'invalid_request_error',
        'request_too_large', raw_post($big), no_rid => 1);
}

sub image_body {
    my ($bytes) = @_;
    # 'A' decodes to zero bits: 4 chars -> 3 bytes, "AA==" -> 1, "AAA=" -> 2
    my $full = int($bytes / 3);
    my $b64 = 'A' x (4 * $full);
    $b64 .= { 0 => '', 1 => 'AA==', 2 => 'AAA=' }->{ $bytes % 3 };
    return encode_json({
        model => $FLASH,
        messages => [ { role => 'user', content => [
            { type => 'text', text => 'make it blue' },
            { type => 'image_url',
              image_url => { url => "data:image/png;base64,$b64" } },
        ] } ],
    });
}

rejected_ok('reference image of 5 MiB + 1 byte -> 413 image_too_large', 413,
    'invalid_request_error', 'image_too_large', raw_post(image_body(5 * 1024 * 1024 + 1)));
rejected_ok('reference image of 6 MB -> 413 image_too_large', 413,
    'invalid_request_error', 'image_too_large', raw_post(image_body(6_000_000)));
rejected_ok('oversized image on fast -> 413 image_too_large', 413,
    'invalid_request_error', 'image_too_large',
    sub { $h->post('/fast/v1/chat/completions', image_body(5 * 1024 * 1024 + 2),
                   Authorization => 'Bearer sk-rich-0123456789') });
{
    my $hits = $h->upstream_hits;
    my $res = raw_post(image_body(5 * 1024 * 1024))->();
    is $res->{status}, 200, 'reference image of exactly 5 MiB is admitted'
        or diag substr($res->{body}, 0, 300);
    is $res->{headers}{'x-imgbill-charge'}, '0.2465', '... and charged';
    is $h->upstream_hits, $hits + 1, '... upstream reached';
    $h->redis('SET', 'imgbill:{rich}:balance', 1000000);
    $h->redis('DEL', 'imgbill:{rich}:ledger');
    $h->redis('DEL', $_) for @{ $h->redis('KEYS', 'imgbill:{rich}:settled:*') };
}
{
    my $hits = $h->upstream_hits;
    my $res = raw_post(image_body(3_000_000) =~ s/"type":"text"/"type":"text","x":1/r)->();
    is $res->{status}, 200, 'a 3 MB reference image is admitted';
    $h->redis('SET', 'imgbill:{rich}:balance', 1000000);
    $h->redis('DEL', 'imgbill:{rich}:ledger');
    $h->redis('DEL', $_) for @{ $h->redis('KEYS', 'imgbill:{rich}:settled:*') };
}

sub admitted_body_ok {
    my ($name, $body) = @_;
    my $hits = $h->upstream_hits;
    my $res = raw_post($body)->();
    subtest $name => sub {
        is $res->{status}, 200, 'admitted' or diag substr($res->{body}, 0, 300);
        is $h->upstream_hits, $hits + 1, 'upstream reached';
    };
    $h->redis('SET', 'imgbill:{rich}:balance', 1000000);
    $h->redis('DEL', 'imgbill:{rich}:ledger');
    $h->redis('DEL', $_) for @{ $h->redis('KEYS', 'imgbill:{rich}:settled:*') };
}
{
    my $three = image_body(3_000_000);
    my $j = decode_json($three);
    push @{ $j->{messages}[0]{content} }, $j->{messages}[0]{content}[1];
    admitted_body_ok('two 3 MB reference images (each under the limit)', encode_json($j));
    $j = decode_json(image_body(10));
    $j->{messages}[0]{content}[1]{image_url}{url} = 'https://images.example/cat.png';
    admitted_body_ok('a reference image by URL is not measured', encode_json($j));
}

# --- balance
rejected_ok('insufficient balance', 402, 'insufficient_quota', 'insufficient_balance',
    sub { $h->chat(key => 'sk-poor-0123456789') });

# the in-flight hold of the other request is still there, untouched
is scalar keys %{ $h->holds('rich') }, 1, 'the unrelated live hold is untouched';

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
