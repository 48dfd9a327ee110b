# Streamed image generation through the official SDKs, as real clients:
#   t/sdk/stream.mjs  OpenAI's SDK (npm "openai"), chat.completions.create
#                     with stream: true, iterated; with and without
#                     stream_options.include_usage; metered and fast
#   t/sdk/gemini.mjs  Google's GenAI SDK (npm "@google/genai"),
#                     ai.models.generateContent and generateContentStream
#                     with only httpOptions.baseUrl set
# Each script prints what its client saw as one JSON object; this file
# checks it, then the money in Redis (charged once, to the unit) and that
# no client key reached the upstream.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness;

my $sdk = Imgbill::Harness::sdk_dir();
if (!$sdk) {
    plan skip_all => $@ if $@ =~ /not installed/;
    BAIL_OUT($@);
}

my $h = Imgbill::Harness->new;
my $FLASH = 'gemini-2.5-flash-image';
my %acct;    # case => [account, key], each 10.0000
$acct{$_} = [ $h->fresh_account(prefix => "sdk$_") ] for qw(plain usage fast one stream);
my $key = sub { $acct{$_[0]}[1] };

# run(script, keys...) -> the decoded JSON it printed
sub run {
    my ($script, @keys) = @_;
    my $out = `node $sdk/$script ${\ $h->url('') } @keys 2>&1`;
    is $?, 0, "node $script ran" or diag $out;
    my $r = eval { decode_json($out) };
    ok ref $r eq 'HASH', "$script printed one JSON object" or diag $out;
    return $r || {};
}

# money_ok($case, $units, $channel, $rid): charged exactly once, to the unit
sub money_ok {
    my ($case, $units, $channel, $rid) = @_;
    my $a = $acct{$case}[0];
    subtest "$case: Redis charged " . Imgbill::Harness::fmt_units($units) . ' once' => sub {
        is $h->balance($a), 100000 - $units, 'balance';
        my $l = $h->ledger($a);
        is scalar @$l, 1, 'one ledger entry';
        is $l->[0]{charge}, $units, 'ledger charge';
        is $l->[0]{channel}, $channel, "channel $channel";
        is $l->[0]{model}, $FLASH, 'model';
        is $l->[0]{request_id}, $rid, 'the request id the client was given' if defined $rid;
        is_deeply $h->wait_holds($a, 0), {}, 'no hold left';
    };
}

# ---- OpenAI SDK, stream: true ----------------------------------------------

my $o = run('stream.mjs', map { $key->($_) } qw(plain usage fast));
my @up = $h->upstream_requests;

for my $case (qw(plain usage fast)) {
    my $r = $o->{$case} || {};
    subtest "openai $case: the stream as the SDK iterated it" => sub {
        is $r->{status}, 200, 'status 200' or diag explain $r;
        like $r->{content_type} // '', qr{^text/event-stream}, 'text/event-stream';
        like $r->{request_id} // '', qr/^[0-9a-f]{32}$/, 'X-Imgbill-Request-Id (withResponse)';
        is_deeply $r->{images}, [ { prefix => 'data:image/png;base64,', length => 2070 } ],
            'one image in delta.images, whole';
        is $r->{text}, 'Here is your image.', 'the text in delta.content';
        is $r->{finish_reason}, 'stop', 'finish_reason stop';
    };
}
is $o->{plain}{usage_chunks}, 0, 'openai plain: no usage chunk (the client did not ask)';
is $o->{plain}{last}{choices}, 1, '... the last chunk is a choice, not a usage chunk';
is $o->{fast}{usage_chunks}, 0, 'openai fast: no usage chunk';
note "chunks with \"usage\": null the client did not ask for: plain $o->{plain}{null_usage_chunks}"
    if $o->{plain}{null_usage_chunks};

is $o->{usage}{usage_chunks}, 1, 'openai include_usage: exactly one usage chunk';
is $o->{usage}{last}{choices}, 0, '... the last chunk, with "choices": []';
my $u = $o->{usage}{last}{usage} || {};
is $o->{usage}{last}{cost_type}, 'number', '... usage.cost is a JSON number';
ok defined $u->{cost} && $u->{cost} == 0.2465, '... usage.cost 0.2465'
    or diag explain $u;
is_deeply [ @$u{qw(prompt_tokens completion_tokens)} ], [560, 1120], '... tokens';

money_ok('plain', 2465, 'metered', $o->{plain}{request_id});
money_ok('usage', 2465, 'metered', $o->{usage}{request_id});
money_ok('fast', 700, 'fast', $o->{fast}{request_id});

is scalar @up, 3, 'three calls reached the upstream (not the bad key)';
ok !(grep { !$_->{stream} || !$_->{include_usage} } @up),
    'the relay asked the upstream for usage on every stream';

is $o->{bad_key}{status}, 401, 'openai stream, unknown key: 401';
is $o->{bad_key}{error_class}, 'AuthenticationError', '... AuthenticationError';
is $o->{bad_key}{code}, 'invalid_api_key', '... invalid_api_key';

# ---- Google GenAI SDK ------------------------------------------------------

my $g = run('gemini.mjs', map { $key->($_) } qw(one stream));
my @gup = ($h->upstream_requests)[3 .. $h->upstream_hits - 1];

is_deeply $g->{sent}, [
    { method => 'POST', path => "/v1beta/models/$FLASH:generateContent", query => '',
      key_headers => ['x-goog-api-key'] },
    ({ method => 'POST', path => "/v1beta/models/$FLASH:streamGenerateContent",
       query => '?alt=sse', key_headers => ['x-goog-api-key'] }) x 2,
], 'the SDK calls /v1beta/models/M:..., ?alt=sse to stream, the key in x-goog-api-key only'
    or diag explain $g->{sent};

my $one = $g->{one} || {};
subtest 'genai generateContent' => sub {
    is_deeply $one->{images}, [ { mime => 'image/png', prefix => 'iVBORw0KGgo', length => 2048 } ],
        'an inlineData image part' or diag explain $one;
    is $one->{charge}, '0.2465', 'X-Imgbill-Charge 0.2465 (sdkHttpResponse.headers)';
    is $one->{balance}, '9.7535', 'X-Imgbill-Balance 9.7535';
    is $one->{usage}{candidatesTokenCount}, 1120, 'usageMetadata reached the client';
};
money_ok('one', 2465, 'metered', $one->{request_id});

my $st = $g->{stream} || {};
subtest 'genai generateContentStream' => sub {
    is $st->{chunks}, 3, 'three chunks' or diag explain $st;
    is_deeply $st->{images}, [ { mime => 'image/png', prefix => 'iVBORw0KGgo', length => 2048 } ],
        'the image part, once';
    is $st->{text}, 'Here is your image.', 'the text';
    is_deeply $st->{usage}, [373, 746, 1120], 'cumulative usageMetadata on each chunk';
};
money_ok('stream', 2465, 'metered', $st->{request_id});

is $g->{stream_bad_key}{status}, 401, 'genai stream, unknown key: 401';
like $g->{stream_bad_key}{error} // '', qr/UNAUTHENTICATED/, "... Google's error shape";

is scalar @gup, 2, 'two Gemini calls reached the upstream (not the bad key)';
is_deeply [ map { $_->{target} } @gup ],
    [ "/v1beta/models/$FLASH:generateContent",
      "/v1beta/models/$FLASH:streamGenerateContent?alt=sse" ], '... at these targets';

# ---- no key beyond the relay -------------------------------------------------

my @keys = ((map { $key->($_) } keys %acct), 'sk-nobody');
my $seen = join "\n", map { JSON::PP->new->canonical->encode($_) } $h->upstream_requests;
is_deeply [ grep { index($seen, $_) >= 0 } @keys ], [], 'no client key reached the upstream';
ok !(grep { defined $_->{goog_api_key} || defined $_->{headers}{authorization} }
     $h->upstream_requests), 'no x-goog-api-key or Authorization upstream';
is_deeply [ grep { index($h->error_log . $h->access_log, $_) >= 0 } @keys ], [],
    'no client key in the logs';
is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
