# The official OpenAI SDK (npm "openai") as a real client: what a customer's
# code sees of billing, headers and errors.
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
$h->account('sdk', 'sk-sdk-customer', 100000);       # 10.0000
$h->account('sdkpoor', 'sk-sdk-poor', 49999);        # 4.9999

my $json = `node $sdk/e2e.mjs ${\ $h->url('') } sk-sdk-customer sk-sdk-poor 2>&1`;
is $?, 0, 'the SDK script ran' or diag $json;
my $r = eval { decode_json($json) } || {};

is $r->{metered}{status}, 200, 'metered: 200 through the SDK';
is $r->{metered}{charge}, '0.2465', 'metered: X-Imgbill-Charge 0.2465';
is $r->{metered}{balance}, '9.7535', 'metered: X-Imgbill-Balance 9.7535';
like $r->{metered}{request_id} // '', qr/^[0-9a-f]{32}$/, 'metered: request id';
is $r->{metered}{image}, 'data:image/png;base64,', 'metered: the SDK parsed the image';
is $r->{metered}{prompt_tokens}, 560, 'metered: usage reached the client unchanged';

is $r->{fast}{status}, 200, 'fast: 200';
is $r->{fast}{charge}, '0.2000', 'fast: 0.2000';
is $r->{fast}{balance}, '9.5535', 'fast: balance 9.5535';

is $r->{bad_key}{status}, 401, 'unknown key: the SDK sees 401';
is $r->{bad_key}{error_class}, 'AuthenticationError', '... as AuthenticationError';
is $r->{bad_key}{code}, 'invalid_api_key', '... with code invalid_api_key';

is $r->{poor}{status}, 402, 'below the gate: 402';
is $r->{poor}{code}, 'insufficient_balance', '... code insufficient_balance';
is $r->{poor}{type}, 'insufficient_quota', '... type insufficient_quota';
like $r->{poor}{message} // '', qr/available 4\.9999, required 5\.0000/, '... says why';

is $r->{unpriced}{status}, 400, 'unpriced model: 400';
is $r->{unpriced}{error_class}, 'BadRequestError', '... as BadRequestError';
is $r->{unpriced}{code}, 'model_not_supported', '... code model_not_supported';

is $h->balance('sdk'), 100000 - 2465 - 2000, 'Redis: exactly the two charges';
is $h->balance('sdkpoor'), 49999, 'Redis: the rejected account untouched';
is scalar @{ $h->ledger('sdk') }, 2, 'two ledger entries';
is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
