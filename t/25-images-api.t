# OpenAI's Images API, its generations (issue 19; edits: t/31-images-edits.t),
# through conf.d's own locations, against the mock that answers as OpenAI
# does:
#   - metered: gpt-image-1 by its usage, 36 / 288 yuan per 1M tokens, 72
#     for image input: 50 in, 1056 out -> 0.0018 + 0.3041 = 0.3059; n 2
#     (2112 out) -> 0.0018 + 0.6083 = 0.6101; text 40 + image 388 in ->
#     0.0014 + 0.0279 + 0.3041 = 0.3334 (without input_tokens_details,
#     all input at the text rate: 0.3195)
#   - /fast/: each image delivered at its price, never the n asked:
#     dall-e-3 0.2880, by size and quality (1792x1024 hd 0.8640, 1024x1024
#     hd and 1024x1792 0.5760); Seedream n 4 with 3 delivered 0.6000, none
#     free; a
#     moderation refusal free; 1.00 and 10 dall-e-3 calls at once: exactly
#     3 served, 0.1360 left
#   - refused, free, Redis untouched: n 0, n "2", n 11, "stream": "true",
#     no model, a model not priced here (streams: t/34-images-stream.t)
#   - the official openai SDK's images.generate(), on both channels
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for error_ok);
use JSON::PP ();

my $h = Imgbill::Harness->new;
my $GEN  = '/v1/images/generations';
my $FAST = '/fast/v1/images/generations';

sub gen {
    my ($path, $key, $body, $mock) = @_;
    return $h->post($path, $body, Authorization => "Bearer $key",
                    (defined $mock ? ('X-Mock' => $mock) : ()));
}

sub charged_ok { $h->images_charged_ok(@_) }

# ---- metered: gpt-image-1 by its usage --------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'gi');
    my $r = gen($GEN, $k, { model => 'gpt-image-1', prompt => 'a fox' }, 'size=64');
    charged_ok($r, $a, '0.3059', 1, 'gpt-image-1, 50 in, 1056 out: 0.0018 + 0.3041 = 0.3059');
    is $r->{json}{data}[0]{b64_json}, substr('iVBORw0KGgoAAAANSUhEUgAA' . 'A' x 64, 0, 64),
       '... the image as the upstream sent it';
    is_deeply $r->{json}{usage}{input_tokens_details}, { text_tokens => 50, image_tokens => 0 },
              '... and its usage untouched';

    ($a, $k) = $h->fresh_account(prefix => 'gi');
    $r = gen($GEN, $k, { model => 'gpt-image-1', prompt => 'two foxes', n => 2 }, 'size=64');
    charged_ok($r, $a, '0.6101', 2, 'gpt-image-1, n 2, 2112 out: 0.0018 + 0.6083 = 0.6101');

    # three rates: text input 36, image input 72, output 288
    ($a, $k) = $h->fresh_account(prefix => 'gi');
    $r = gen($GEN, $k, { model => 'gpt-image-1', prompt => 'a fox' }, 'size=64; pt=40; it=388');
    charged_ok($r, $a, '0.3334',
               1, 'gpt-image-1, text 40 + image 388 in, 1056 out: 0.0014 + 0.0279 + 0.3041 = 0.3334');

    ($a, $k) = $h->fresh_account(prefix => 'gi');
    $r = gen($GEN, $k, { model => 'gpt-image-1', prompt => 'a fox' },
             'size=64; pt=40; it=388; nodetails=1');
    charged_ok($r, $a, '0.3195', 1,
               'no input_tokens_details: all 428 in at the text rate, 0.0154 + 0.3041 = 0.3195');

    ($a, $k) = $h->fresh_account(prefix => 'gi');
    $r = gen($GEN, $k, { model => 'gpt-image-1', prompt => 'x', n => 2 }, 'images=0');
    is $r->{status}, 200, 'gpt-image-1, no image delivered: 200';
    is $r->{headers}{'x-imgbill-charge'}, '0.0000', '... free';
    ok $h->wait_holds($a, 0, 10), '... its hold given back';
    is $h->balance($a), 100000, '... nothing charged';
}

# ---- /fast/: per image delivered -------------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'de');
    my $r = gen($FAST, $k, { model => 'dall-e-3', prompt => 'a fox' });
    charged_ok($r, $a, '0.2880', 1, 'dall-e-3 on /fast/: 0.2880');
    like $r->{json}{data}[0]{url}, qr{^http://127\.0\.0\.1/mock-images/}, '... its url';

    # Open WebUI's own body (routers/images.py, the openai engine): n and
    # size always, response_format b64_json for the DALL-E models
    ($a, $k) = $h->fresh_account(prefix => 'owui');
    $r = gen($FAST, $k, '{"model":"dall-e-3","prompt":"a fox at dawn","n":1,'
                      . '"size":"1024x1024","response_format":"b64_json"}');
    charged_ok($r, $a, '0.2880', 1, "Open WebUI's body, dall-e-3 on /fast/: 0.2880");
    ok $r->{json}{data}[0]{b64_json}, '... its image as b64_json, as asked';
    ($a, $k) = $h->fresh_account(prefix => 'owui');
    $r = gen($GEN, $k, '{"model":"gpt-image-1","prompt":"a fox at dawn","n":1,"size":"1024x1024"}');
    charged_ok($r, $a, '0.3059', 1, "Open WebUI's body, gpt-image-1 metered: 0.3059");

    # dall-e-3 by size and quality, as OpenAI prices it
    for my $case ([ '1792x1024', 'hd', '0.8640' ], [ '1024x1024', 'hd', '0.5760' ],
                  [ '1024x1792', 'standard', '0.5760' ], [ '1024x1024', 'standard', '0.2880' ],
                  [ '1792x1024', undef, '0.5760' ]) {
        my ($size, $quality, $charge) = @$case;
        ($a, $k) = $h->fresh_account(prefix => 'de');
        $r = gen($FAST, $k, { model => 'dall-e-3', prompt => 'a fox', size => $size,
                              (defined $quality ? (quality => $quality) : ()) });
        charged_ok($r, $a, $charge, 1, "dall-e-3 $size " . ($quality // '(no quality)') . ": $charge");
    }

    # as a key holder after cheap images would ask: the case an upstream
    # may not care about, a quality without its size, gpt-image-1's auto
    for my $case ([ 'dall-e-3', '1792X1024', 'HD', '0.8640' ],
                  [ 'dall-e-3', undef, 'hd', '0.5760' ],
                  [ 'gpt-image-1', undef, undef, '1.8000' ],
                  [ 'gpt-image-1', '1024x1024', 'auto', '1.2024' ],
                  [ 'gpt-image-1', '1536x1024', 'high', '1.8000' ],
                  [ 'gpt-image-1', undef, 'medium', '0.4536' ],
                  [ 'gpt-image-1', '1024x1024', 'low', '0.0792' ]) {
        my ($model, $size, $quality, $charge) = @$case;
        ($a, $k) = $h->fresh_account(prefix => 'de');
        $r = gen($FAST, $k, { model => $model, prompt => 'a fox',
                              (defined $size ? (size => $size) : ()),
                              (defined $quality ? (quality => $quality) : ()) }, 'size=8');
        charged_ok($r, $a, $charge, 1, "/fast/ $model " . ($size // '(no size)') . ' '
                                       . ($quality // '(no quality)') . ": $charge");
    }

    ($a, $k) = $h->fresh_account(prefix => 'sd');
    $r = gen($FAST, $k, { model => 'doubao-seedream-4-0', prompt => 'four foxes', n => 4 }, 'images=3');
    charged_ok($r, $a, '0.6000', 3, 'Seedream, n 4 asked, 3 delivered: 0.6000');

    ($a, $k) = $h->fresh_account(prefix => 'sd');
    $r = gen($FAST, $k, { model => 'doubao-seedream-4-0', prompt => 'x', n => 4 }, 'images=0');
    is $r->{headers}{'x-imgbill-charge'}, '0.0000', 'Seedream, none delivered: free';
    ok $h->wait_holds($a, 0, 10), '... its hold given back';
    is $h->balance($a), 100000, '... nothing charged';

    ($a, $k) = $h->fresh_account(prefix => 'mod');
    $r = gen($FAST, $k, { model => 'dall-e-3', prompt => 'x' }, 'kind=moderation');
    is $r->{status}, 400, 'a moderation refusal: the upstream\'s 400 passed on';
    is $r->{json}{error}{code}, 'moderation_blocked', '... moderation_blocked';
    ok $h->wait_holds($a, 0, 10), '... its hold given back';
    is $h->balance($a), 100000, '... free';
    is scalar @{ $h->ledger($a) }, 0, '... no ledger entry';
}

# ---- 1.00 and ten dall-e-3 calls at once: exactly three -------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'ten', units => 10000);
    my $wait = $h->in_flight(10, key => $k, path => $FAST, mock => 'sleep=0.5',
                             body => { model => 'dall-e-3', prompt => 'a fox' });
    my @r = $wait->();
    my %st;
    $st{$_}++ for @r;
    is $st{'200 0.2880'}, 3, '1.00, ten dall-e-3 calls at once: three served, 0.2880 each'
        or diag join ', ', @r;
    is $st{'402 -'}, 7, '... seven refused 402';
    ok $h->wait_holds($a, 0, 10), '... no hold left';
    is $h->balance($a), 1360, '... 0.1360 left';
}

# ---- refused before the upstream, free ---------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'bad');
    my $snap = $h->snapshot;
    my $hits = $h->upstream_hits;
    for my $case ([ 'n 0', { model => 'dall-e-3', prompt => 'x', n => 0 }, 400, 'invalid_image_count' ],
                  [ 'n "2"', { model => 'dall-e-3', prompt => 'x', n => '2' }, 400, 'invalid_image_count' ],
                  [ 'n 11', { model => 'dall-e-3', prompt => 'x', n => 11 }, 400, 'too_many_images' ],
                  [ 'a stream of "true"', { model => 'gpt-image-1', prompt => 'x', stream => 'true' },
                    400, 'invalid_value' ],
                  [ 'no model', { prompt => 'x' }, 400, 'missing_model' ],
                  [ 'a size that is no string', { model => 'dall-e-3', prompt => 'x', size => 1024 },
                    400, 'invalid_value' ],
                  [ 'n true', { model => 'dall-e-3', prompt => 'x', n => JSON::PP::true() },
                    400, 'invalid_image_count' ],
                  [ 'n 2.0', '{"model":"dall-e-3","prompt":"x","n":2.0}', 400, 'invalid_image_count' ],
                  [ '"Quality" beside nothing', { model => 'dall-e-3', prompt => 'x', Quality => 'hd' },
                    400, 'ambiguous_key' ],
                  [ '"N" and "n"', '{"model":"dall-e-3","prompt":"x","n":1,"N":4}', 400, 'ambiguous_key' ],
                  [ 'a model not priced here', { model => 'gemini-2.5-flash-image', prompt => 'x' },
                    400, 'model_not_supported' ]) {
        my ($name, $body, $status, $code) = @$case;
        error_ok gen($FAST, $k, $body), $status, 'invalid_request_error', $code, "$name: $status $code";
    }
    is $h->snapshot, $snap, '... Redis untouched';
    is $h->upstream_hits, $hits, '... the upstream never reached';
}

# ---- the official SDK: client.images.generate() --------------------------------
SKIP: {
    my $sdk = eval { Imgbill::Harness::sdk_dir() };
    skip "the openai SDK: $@", 1 unless $sdk;
    my ($a, $k) = $h->fresh_account(prefix => 'sdk');
    my $json = `node $sdk/images-api.mjs ${\ $h->url('') } $k 2>&1`;
    is $?, 0, 'SDK: the script ran' or diag $json;
    my $r = eval { JSON::PP->new->decode($json) } || {};
    is_deeply [ @{ $r->{gpt} || {} }{qw(status images b64 charge)} ], [ 200, 1, 1, '0.3059' ],
              'SDK, images.generate gpt-image-1: one b64_json image, charged 0.3059';
    is $r->{gpt}{usage}{output_tokens}, 1056, '... the usage as the upstream sent it';
    is_deeply [ @{ $r->{dalle} || {} }{qw(status images urls charge)} ], [ 200, 1, 1, '0.2880' ],
              'SDK, dall-e-3 on /fast/: one url, 0.2880';
    is_deeply [ @{ $r->{seedream} || {} }{qw(status images charge)} ], [ 200, 2, '0.4000' ],
              'SDK, Seedream n 2: two images, 0.4000';
    is $r->{seedream}{balance}, sprintf('%.4f', (100000 - 3059 - 2880 - 4000) / 10000),
       '... and the balance told is what is left';
    ok wait_for(sub { ($h->balance($a) // 0) == 100000 - 3059 - 2880 - 4000 }),
       'SDK: Redis holds exactly the three charges';
}

done_testing;
