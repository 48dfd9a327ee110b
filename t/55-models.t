# The model lists imgbill serves itself: the priced models of each
# channel, in OpenAI's shape (/v1/models, /fast/v1/models: chat
# completions' and the Images API's) or Gemini's (/v1beta/models, Gemini's
# only), to a valid key only, with nothing written to Redis and
# nothing sent upstream; and a JSON 404, in the API's shape, for any other
# path under the APIs.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok);

# $request as nginx's own "combined" format logs it, to look for keys
my $logdir = File::Temp::tempdir(CLEANUP => 1);
my $h = Imgbill::Harness->new(
    extra_server => "    access_log $logdir/combined.log combined;\n",
    # a model priced only on the fast channel
    conf_filter => sub {
        $_[0] =~ s{^(imgbill_fast_price gemini-3-pro-image-preview[^\n]*\n)}
                  {${1}imgbill_fast_price fast-only 0.05;\n}m
            or die 'no fast price line';
    },
);
my ($acct, $key) = $h->fresh_account(prefix => 'lists');

my $before = $h->snapshot;
my $hits = $h->upstream_hits;

sub get { my ($path, %hdr) = @_; return $h->request('GET', $path, undef, %hdr) }

# --- OpenAI's shape: chat completions' models, then the Images API's (its
# locations price them, one list serves both: issue 19)
for my $case (['/v1/models', [qw(gemini-2.5-flash-image gemini-3-pro-image-preview
                                 gpt-image-1)]],
              ['/fast/v1/models', [qw(gemini-2.5-flash-image gemini-3-pro-image-preview
                                      fast-only gpt-image-1 dall-e-3 doubao-seedream-4-0
                                      dall-e-2)]])
{
    my ($path, $models) = @$case;
    my $res = get($path, Authorization => "Bearer $key");
    is $res->{status}, 200, "$path: 200";
    like $res->{headers}{'content-type'}, qr{^application/json}, "$path: JSON";
    is $res->{json}{object}, 'list', "$path: a list";
    is_deeply [ map { $_->{id} } @{ $res->{json}{data} } ], $models,
        "$path: the channel's priced models, in the configuration's order";
    is_deeply [ map { "$_->{object}/$_->{owned_by}" } @{ $res->{json}{data} } ],
        [ map { 'model/imgbill' } @$models ], "$path: each a model object";

    error_ok(get($path), 401, 'invalid_request_error', 'missing_api_key',
             "$path: no key, 401");
    error_ok(get($path, Authorization => 'Bearer sk-nobody'), 401,
             'invalid_request_error', 'invalid_api_key', "$path: a wrong key, 401");
    error_ok($h->post($path, {}, Authorization => "Bearer $key"), 405,
             'invalid_request_error', 'method_not_allowed', "$path: POST, 405");
}

{
    my $res = $h->request('HEAD', '/v1/models', undef, Authorization => "Bearer $key");
    is $res->{status}, 200, 'HEAD /v1/models: 200';
    is $res->{body} // '', '', '... without a body';
}

# --- Gemini's shape, with each place Google's clients put the key
sub gemini_ok {
    my ($res, $name) = @_;
    subtest $name => sub {
        is $res->{status}, 200, 'status 200';
        is_deeply [ map { $_->{name} } @{ $res->{json}{models} || [] } ],
            [ 'models/gemini-2.5-flash-image', 'models/gemini-3-pro-image-preview' ],
            'the metered models, as "models/NAME"';
        is_deeply $res->{json}{models}[0]{supportedGenerationMethods},
            [ 'generateContent', 'streamGenerateContent' ], 'their methods';
    };
}

gemini_ok(get('/v1beta/models', 'x-goog-api-key' => $key), 'x-goog-api-key');
gemini_ok(get("/v1beta/models?key=$key"), '?key=');
gemini_ok(get('/v1beta/models', Authorization => "Bearer $key"), 'Bearer');

sub google_error_ok {
    my ($res, $status, $rpc, $name) = @_;
    subtest $name => sub {
        is $res->{status}, $status, "status $status";
        is_deeply [ sort keys %{ $res->{json}{error} || {} } ],
            [ qw(code message status) ], "Google's error shape";
        is $res->{json}{error}{code}, $status, 'error.code is the status';
        is $res->{json}{error}{status}, $rpc, "error.status $rpc";
    };
}

google_error_ok(get('/v1beta/models'), 401, 'UNAUTHENTICATED', 'Gemini: no key');
google_error_ok(get('/v1beta/models', 'x-goog-api-key' => 'sk-nobody'), 401,
                'UNAUTHENTICATED', 'Gemini: a wrong key');
google_error_ok(get('/v1beta/models?key=sk-nobody'), 401, 'UNAUTHENTICATED',
                'Gemini: a wrong ?key=');

# --- nothing written, nothing sent, no raw key in the logs
is $h->snapshot, $before, 'Redis is untouched by the lists';
is $h->upstream_hits, $hits, 'nothing reached the upstream';
# (this server logs in nginx's "combined" format, $request included)
sub combined {
    my ($until) = @_;
    my $text = '';
    Imgbill::Harness::wait_for(sub {
        $text = do { local (@ARGV, $/) = ("$logdir/combined.log"); <> } // '';
        $text =~ $until;
    }, 5);
    return $text;
}
unlike combined(qr{GET /v1beta/models\?key=x+ }) . $h->error_log, qr/\Q$key\E/,
       'the raw key is in no log';
# the rejection of ?key=sk-nobody is logged with its request line, masked
like $h->error_log, qr{request: "GET /v1beta/models\?key=x{9} HTTP/1\.1"},
     'a ?key= is masked in the request line nginx logs';
unlike $h->error_log, qr/sk-nobody/, '... and appears nowhere';

# --- unknown paths: JSON 404s in the API's shape
error_ok($h->post('/v1/audio/speech', {}, Authorization => "Bearer $key"),
         404, 'invalid_request_error', 'not_found', '/v1/audio/speech: JSON 404');
error_ok(get('/fast/v1/nothing'), 404, 'invalid_request_error', 'not_found',
         '/fast/v1/nothing: JSON 404');
google_error_ok(get('/v1beta/nothing'), 404, 'NOT_FOUND', '/v1beta/nothing: JSON 404');

# --- a ?key= is masked wherever nginx would log it, whatever became of it
{
    my $secret = 'sk-' . 'q' x 20;
    my $tell = 'sk-' . 'z' x 20;
    get("/v1beta/nothing?key=$secret");
    $h->post("/v1beta/models?KEY=$secret", {});
    get("/v1beta/models?key=$tell&key=$secret", 'x-goog-api-key' => $key);
    get("/v1beta/models?alt=json&Key=$secret");
    my $combined = combined(qr{alt=json&Key=x+ });
    unlike $combined . $h->error_log, qr/sk-q|sk-z/,
        'no ?key= in $request: a JSON 404, a 405, a header key beside it, any case';
    like $combined, qr{GET /v1beta/nothing\?key=x{23} }, '... masked in place';
    like $combined, qr{\?key=x{23}&key=x{23} }, '... every one of them';
}

is scalar $h->crashes, 0, 'no worker crashed';
done_testing;
