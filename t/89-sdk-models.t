# The model lists through the official SDKs, as their users call them:
# OpenAI's client.models.list() on both channels and Google's
# ai.models.list() (npm "@google/genai"), with a good key and a bad one.
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
my ($acct, $key) = $h->fresh_account(prefix => 'sdklist');
my $before = $h->snapshot;

my $json = `node $sdk/models.mjs ${\ $h->url('') } $key 2>&1`;
is $?, 0, 'the SDK script ran' or diag $json;
my $r = eval { decode_json($json) } || {};

# chat completions' models, then the Images API's (conf.d prices them in
# the Images API's locations)
my @priced = qw(gemini-2.5-flash-image gemini-3-pro-image-preview);
is_deeply $r->{openai}{ids}, [ @priced, 'gpt-image-1' ],
    'OpenAI SDK: /v1 lists the metered models, the Images API\'s too';
is_deeply $r->{openai_fast}{ids},
    [ @priced, qw(gpt-image-1 dall-e-3 doubao-seedream-4-0 dall-e-2) ],
    'OpenAI SDK: /fast/v1 lists the fast models, the Images API\'s too';
is $r->{openai_bad}{status}, 401, 'OpenAI SDK: a bad key gets 401';
is $r->{openai_bad}{code}, 'invalid_api_key', '... with the error code parsed';

is_deeply $r->{gemini}{names}, [ map { "models/$_" } @priced ],
    'Google GenAI SDK: /v1beta/models, in Gemini\'s shape';
is $r->{gemini_bad}{status}, 401, 'Google GenAI SDK: a bad key gets 401';
like $r->{gemini_bad}{message} // '', qr/incorrect API key/,
    '... with the message of Google\'s error shape';

is $h->snapshot, $before, 'listing wrote nothing to Redis';
is $h->upstream_hits, 0, 'nothing reached the upstream';
done_testing;
