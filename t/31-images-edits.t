# OpenAI's Images API, its uploads (issue 19): edits and variations as
# multipart/form-data, through conf.d's own locations, against the mock
# that reads the form as OpenAI does:
#   - gpt-image-1 edits by their usage: text 40 + image 388 in, 1056 out
#     -> 0.0014 + 0.0279 + 0.3041 = 0.3334; two images (image[]) and n 2:
#     50 + 776 in, 2112 out -> 0.0018 + 0.0559 + 0.6083 = 0.6660
#   - dall-e-2 variations on /fast/, per image delivered, by size
#   - the body reaches the upstream byte for byte
#   - refused before the upstream, free, Redis untouched: every way a form
#     can be malformed, a file over imgbill_image_limit (413), 17 images,
#     n 0 / "02" / "two", a field twice, no image, no model, stream "yes"
#     (a stream: t/34-images-stream.t)
#   - the official openai SDK's images.edit() (one image, image[], a mask)
#     and images.createVariation() with toFile() uploads, and a browser's
#     FormData
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for error_ok form png);
use Digest::SHA qw(sha256_hex);
use JSON::PP ();

my $h = Imgbill::Harness->new;
my $EDIT = '/v1/images/edits';
my $VAR  = '/fast/v1/images/variations';
my $B    = '----imgbillFormBoundary7MA4YWxkTrZu0gW';

sub send_form {
    my ($path, $key, $body, %o) = @_;
    return $h->post($path, $body, Authorization => "Bearer $key",
                    'Content-Type' => $o{type} // "multipart/form-data; boundary=$B",
                    (defined $o{mock} ? ('X-Mock' => $o{mock}) : ()));
}

sub charged_ok { $h->images_charged_ok(@_) }

# ---- edits: gpt-image-1 by its usage ----------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'ed');
    my $body = form($B, [ model => 'gpt-image-1' ], [ prompt => 'a fox in the snow' ],
                    [ image => png(300000), 'fox.png' ]);
    my $r = send_form($EDIT, $k, $body, mock => 'pt=40; it=388');
    charged_ok($r, $a, '0.3334', 1,
               'an edit, text 40 + image 388 in, 1056 out: 0.0014 + 0.0279 + 0.3041 = 0.3334');
    my ($up) = grep { ($_->{path} // '') eq $EDIT } $h->upstream_requests;
    is $up->{body_sha256}, sha256_hex($body), '... the body reached the upstream byte for byte';
    is_deeply [ map { "$_->{name}:$_->{size}" } @{ $up->{form}{files} || [] } ], [ 'image:300000' ],
              '... its file as sent';

    ($a, $k) = $h->fresh_account(prefix => 'ed');
    $body = form($B, [ model => 'gpt-image-1' ], [ prompt => 'a fox and a hare' ], [ n => 2 ],
                 [ 'image[]' => png(200000, 1), 'fox.png' ],
                 [ 'image[]' => png(100000, 2), 'hare.png' ],
                 [ mask => png(50000, 0), 'mask.png' ]);
    $r = send_form($EDIT, $k, $body);
    charged_ok($r, $a, '0.6660', 2,
               'image[] twice, a mask, n 2: 50 + 776 in, 2112 out: 0.0018 + 0.0559 + 0.6083 = 0.6660');

    # a delimiter's bytes without their CRLF are a file's own bytes
    ($a, $k) = $h->fresh_account(prefix => 'ed');
    $body = form($B, [ model => 'gpt-image-1' ], [ prompt => 'a fox' ],
                 [ image => png(1000) . "--$B--\r\n" . png(1000), 'fox.png' ]);
    $r = send_form($EDIT, $k, $body, mock => 'pt=40; it=388');
    charged_ok($r, $a, '0.3334', 1, 'the boundary inside a file, not after a CRLF: its bytes, charged');

    # a prompt of 30 KB is counted, not kept; the hold covers it (at the
    # dearest input rate: 30,000 tokens x 72 = 2.16)
    ($a, $k) = $h->fresh_account(prefix => 'ed');
    $body = form($B, [ model => 'gpt-image-1' ], [ prompt => 'a fox ' x 5000 ],
                 [ image => png(1000), 'fox.png' ]);
    $r = send_form($EDIT, $k, $body, mock => 'pt=40; it=388');
    charged_ok($r, $a, '0.3334', 1, 'a 30 KB prompt: read, charged by the usage');

    ($a, $k) = $h->fresh_account(prefix => 'ed');
    $r = send_form($EDIT, $k, form($B, [ model => 'gpt-image-1' ], [ prompt => 'x' ],
                                   [ image => png(1000), 'a.png' ]), mock => 'kind=moderation');
    is $r->{status}, 400, 'an edit refused by moderation: the upstream\'s 400';
    ok $h->wait_holds($a, 0, 10), '... its hold given back';
    is $h->balance($a), 100000, '... free';
}

# ---- variations: dall-e-2 per image delivered ---------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'va');
    my $r = send_form($VAR, $k, form($B, [ model => 'dall-e-2' ], [ n => 2 ],
                                     [ image => png(100000), 'fox.png' ]));
    charged_ok($r, $a, '0.2880', 2, 'dall-e-2 variations, n 2: 2 x 0.1440 = 0.2880');

    ($a, $k) = $h->fresh_account(prefix => 'va');
    $r = send_form($VAR, $k, form($B, [ model => 'dall-e-2' ], [ n => 3 ], [ size => '256x256' ],
                                  [ image => png(100000), 'fox.png' ]), mock => 'images=1');
    charged_ok($r, $a, '0.1152', 1, 'n 3 at 256x256, 1 delivered: 0.1152');

    # quoted boundary, LF-only is not a delimiter but CRLF is what counts
    ($a, $k) = $h->fresh_account(prefix => 'va');
    $r = send_form($VAR, $k, form('q"b', [ model => 'dall-e-2' ], [ image => png(1000), 'f.png' ]),
                   type => 'multipart/form-data; boundary="q\"b"');
    is $r->{status}, 400, 'a boundary with a quote in it is refused (no such boundary in RFC 2046)';
    ($a, $k) = $h->fresh_account(prefix => 'va');
    $r = send_form($VAR, $k, form('a b:c', [ model => 'dall-e-2' ], [ image => png(1000), 'f.png' ]),
                   type => 'multipart/form-data; charset=utf-8; boundary="a b:c"');
    charged_ok($r, $a, '0.1440', 1, 'a quoted boundary with a space and a colon');
}

# ---- refused before the upstream, free ----------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'bad');
    my $img = [ image => png(1000), 'fox.png' ];
    my @ok = ([ model => 'gpt-image-1' ], [ prompt => 'x' ]);
    my $head = "--$B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-image-1\r\n";
    my $snap = $h->snapshot;
    my $hits = $h->upstream_hits;
    for my $case (
        [ 'no closing boundary', substr(form($B, @ok, $img), 0, -8), 400, 'invalid_multipart' ],
        [ 'the body cut in a file', substr(form($B, @ok, $img), 0, 300), 400, 'invalid_multipart' ],
        [ 'a delimiter followed by junk', $head . "--${B}junk\r\n", 400, 'invalid_multipart' ],
        [ 'the boundary after a CRLF inside a file',
          form($B, @ok, [ image => png(100) . "\r\n--$B" . 'x' . png(100), 'f.png' ]),
          400, 'invalid_multipart' ],
        [ 'a part without a name',
          "--$B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--$B--\r\n", 400, 'invalid_multipart' ],
        [ 'a part that is no form-data',
          "--$B\r\nContent-Type: text/plain\r\n\r\nx\r\n--$B--\r\n", 400, 'invalid_multipart' ],
        [ 'a name of 200 bytes', form($B, @ok, [ 'n' x 200 => 'x' ], $img), 400, 'invalid_multipart' ],
        [ 'a header line of 2000 bytes',
          "--$B\r\nContent-Disposition: form-data; name=\"model\"\r\nX-Pad: " . ('p' x 2000)
          . "\r\n\r\ngpt-image-1\r\n--$B--\r\n", 400, 'invalid_multipart' ],
        [ '65 parts', form($B, @ok, $img, map { [ "f$_" => 'x' ] } 1 .. 62), 400, 'invalid_multipart' ],
        [ 'an empty body', '', 400, 'invalid_json' ],
        [ 'a file of 6 MB', form($B, @ok, [ image => png(6 * 1024 * 1024), 'big.png' ]),
          413, 'image_too_large' ],
        [ 'a mask of 6 MB', form($B, @ok, $img, [ mask => png(6 * 1024 * 1024), 'm.png' ]),
          413, 'image_too_large' ],
        [ '17 images', form($B, @ok, map { [ 'image[]' => png(100), "$_.png" ] } 1 .. 17),
          400, 'too_many_images' ],
        [ 'two masks', form($B, @ok, $img, [ mask => png(100), 'a.png' ], [ mask => png(100), 'b.png' ]),
          400, 'invalid_value' ],
        [ 'no image', form($B, @ok), 400, 'missing_image' ],
        [ 'an image sent as a field', form($B, @ok, [ image => 'fox.png' ]), 400, 'invalid_value' ],
        [ 'a field and a file of one name', form($B, @ok, $img, [ image => 'x' ]), 400, 'duplicate_field' ],
        [ 'model twice', form($B, @ok, [ model => 'dall-e-2' ], $img), 400, 'duplicate_field' ],
        [ 'n 0', form($B, @ok, [ n => 0 ], $img), 400, 'invalid_image_count' ],
        [ 'n "02"', form($B, @ok, [ n => '02' ], $img), 400, 'invalid_image_count' ],
        [ 'n "two"', form($B, @ok, [ n => 'two' ], $img), 400, 'invalid_image_count' ],
        [ 'n 11', form($B, @ok, [ n => 11 ], $img), 400, 'too_many_images' ],
        [ 'N beside n', form($B, @ok, [ n => 1 ], [ N => 4 ], $img), 400, 'ambiguous_key' ],
        [ 'no model', form($B, [ prompt => 'x' ], $img), 400, 'missing_model' ],
        [ 'a model of 300 bytes', form($B, [ model => 'm' x 300 ], $img), 400, 'invalid_value' ],
        [ 'a NUL in a field', form($B, @ok, [ size => "1024x\0" ], $img), 400, 'invalid_value' ],
        [ 'a field not UTF-8', form($B, @ok, [ quality => "h\xffd" ], $img), 400, 'invalid_value' ],
        [ 'stream "yes"', form($B, @ok, [ stream => 'yes' ], $img), 400, 'invalid_value' ],
        [ 'a model not priced here', form($B, [ model => 'dall-e-3' ], [ prompt => 'x' ], $img),
          400, 'model_not_supported' ],
    ) {
        my ($name, $body, $status, $code) = @$case;
        error_ok send_form($EDIT, $k, $body), $status, 'invalid_request_error', $code,
                 "$name: $status $code";
    }
    error_ok send_form($EDIT, $k, form($B, @ok, $img), type => 'multipart/form-data'),
             400, 'invalid_request_error', 'invalid_multipart', 'no boundary in the Content-Type: 400';
    error_ok send_form($EDIT, $k, form($B, @ok, $img),
                       type => 'multipart/form-data; boundary=' . ('b' x 71)),
             400, 'invalid_request_error', 'invalid_multipart', 'a boundary of 71 characters: 400';

    # what an upstream's parser may read otherwise is refused, never
    # guessed: a boundary "a\b" (imgbill would split at "a\", a Go or
    # Python upstream at "a\b": a cheap form first, the real one after),
    # boundary*, an escaped name, name*
    my $cheap = form('a\\', [ model => 'gpt-image-1' ], [ prompt => 'x' ], $img);
    my $dear = form('a\\b', [ model => 'gpt-image-1' ], [ prompt => 'x' ], [ n => 10 ], $img);
    error_ok send_form($EDIT, $k, $cheap . $dear, type => 'multipart/form-data; boundary="a\\b"'),
             400, 'invalid_request_error', 'invalid_multipart',
             'a boundary with a backslash: 400, not split where the upstream would not';
    error_ok send_form($EDIT, $k, form($B, @ok, $img),
                       type => "multipart/form-data; boundary=$B; boundary*=UTF-8''zz"),
             400, 'invalid_request_error', 'invalid_multipart', 'boundary* beside boundary: 400';
    (my $escaped = form($B, [ prompt => 'x' ], [ 'MODEL' => 'gpt-image-1' ], $img))
        =~ s/name="MODEL"/name="mo\\del"/;
    error_ok send_form($EDIT, $k, $escaped), 400, 'invalid_request_error', 'invalid_multipart',
             'a name with an escape: 400';
    (my $starred = form($B, @ok, [ zz => 'dall-e-2' ], $img))
        =~ s/name="zz"/name="zz"; name*=UTF-8''model/;
    error_ok send_form($EDIT, $k, $starred), 400, 'invalid_request_error', 'invalid_multipart',
             'name* beside name: 400';
    my $r8 = send_form($EDIT, $k, form($B, @ok, [ "\xff\xfe" => 'x' ], $img));
    error_ok $r8, 400, 'invalid_request_error', 'invalid_multipart', 'a name that is no UTF-8: 400';
    ok utf8::decode(my $copy = $r8->{body}), '... its error body is UTF-8 (the name not echoed)';
    my $r = send_form($EDIT, $k, form($B, @ok, [ image => png(6 * 1024 * 1024), 'big.png' ]));
    like $r->{json}{error}{message}, qr/reference image 1 is about 6291456 bytes; the limit is 5242880/,
         'the 413 names the file and its whole size';
    is $h->snapshot, $snap, '... Redis untouched by all of them';
    is $h->upstream_hits, $hits, '... the upstream never reached';
}

# ---- the hold covers every image a request names ------------------------------
# On an account of exactly 5.0000, n 2 of gpt-image-1 holds about 3.60 for
# the output: admitted.  Sixteen input images more (1290 tokens each at 72
# per 1M, about 1.49) are over 5.00: refused, 402, as a key holder naming
# images the hold did not count would otherwise pay less than the usage.
{
    my $refs = [ map { { file_id => "file-$_" } } 1 .. 16 ];
    my $required = sub {
        my ($r) = @_;
        my ($req) = ($r->{json}{error}{message} // '') =~ /required (\d+\.\d{4})/;
        return $req // 0;
    };
    my ($a, $k) = $h->fresh_account(prefix => 'hold', units => 50000);
    my $snap = $h->snapshot;
    my $r = $h->post($EDIT, { model => 'gpt-image-1', prompt => 'x', n => 2, images => $refs },
                     Authorization => "Bearer $k");
    is $r->{status}, 402, 'a JSON edit naming 16 images by file_id, n 2, on 5.0000: 402';
    cmp_ok $required->($r), '>', 5, '... the hold counts them (required ' . $required->($r) . ')';
    is $h->snapshot, $snap, '... nothing written';
    $r = $h->post('/v1/images/generations', { model => 'gpt-image-1', prompt => 'x', n => 2 },
                  Authorization => "Bearer $k");
    is $r->{status}, 200, '... the same without them: admitted';

    ($a, $k) = $h->fresh_account(prefix => 'hold', units => 50000);
    $r = send_form($EDIT, $k, form($B, [ model => 'gpt-image-1' ], [ prompt => 'x' ], [ n => 2 ],
                                   [ image => png(100), 'a.png' ],
                                   map { [ "extra$_", png(100), "$_.png" ] } 1 .. 15));
    is $r->{status}, 402, 'a form of one image and 15 files under other names, n 2: 402';
    cmp_ok $required->($r), '>', 5, '... every file is held for, whatever its name';

    ($a, $k) = $h->fresh_account(prefix => 'hold');
    for my $case (
        [ '17 images by file_id', { images => [ @$refs, { file_id => 'file-17' } ] },
          400, 'too_many_images' ],
        [ 'a data URL of 6 MB', { images => [ { image_url => 'data:image/png;base64,'
                                                . ('A' x 8_000_000) } ] },
          413, 'image_too_large' ],
        [ 'images of numbers', { images => [ 42 ] }, 400, 'invalid_value' ],
        [ 'a reference without a URL or a file', { images => [ { url => 'x' } ] },
          400, 'invalid_value' ],
        [ 'a mask of true', { images => $refs, mask => JSON::PP::true() }, 400, 'invalid_value' ],
    ) {
        my ($name, $extra, $status, $code) = @$case;
        error_ok $h->post($EDIT, { model => 'gpt-image-1', prompt => 'x', %$extra },
                          Authorization => "Bearer $k"),
                 $status, 'invalid_request_error', $code, "a JSON edit, $name: $status $code";
    }
}

# ---- the official SDK and a browser's FormData ---------------------------------
SKIP: {
    my $sdk = eval { Imgbill::Harness::sdk_dir() };
    skip "the openai SDK: $@", 1 unless $sdk;
    my ($a, $k) = $h->fresh_account(prefix => 'sdk');
    my $json = `node $sdk/images-edit.mjs ${\ $h->url('') } $k 2>&1`;
    is $?, 0, 'SDK: the script ran' or diag $json;
    my $r = eval { JSON::PP->new->decode($json) } || {};
    is_deeply [ @{ $r->{one} || {} }{qw(status images charge)} ], [ 200, 1, '0.3338' ],
              'SDK, images.edit with one toFile() image: 50 + 388 in, 1056 out, 0.3338';
    is $r->{one}{usage}{input_tokens_details}{image_tokens}, 388, '... the usage as sent';
    is_deeply [ @{ $r->{two} || {} }{qw(status images charge)} ], [ 200, 2, '0.6660' ],
              'SDK, two images (image[]) and n 2: 0.6660';
    is_deeply [ @{ $r->{mask} || {} }{qw(status images charge)} ], [ 200, 1, '0.3338' ],
              'SDK, an image and a mask: 0.3338';
    is_deeply [ @{ $r->{variation} || {} }{qw(status images charge)} ], [ 200, 2, '0.2592' ],
              'SDK, images.createVariation dall-e-2 n 2 512x512: 2 x 0.1296';
    is_deeply [ @{ $r->{formdata} || {} }{qw(status images charge)} ], [ 200, 1, '0.1440' ],
              "a browser's FormData to /fast/ variations: 0.1440";
    my $spent = 3338 + 6660 + 3338 + 2592 + 1440;
    ok wait_for(sub { ($h->balance($a) // 0) == 100000 - $spent }),
       'SDK: Redis holds exactly the five charges';
    ok $h->wait_holds($a, 0, 10), '... and no hold';
}

# ---- URL arguments stay here: a Go upstream reads form fields from the query
# too (FormValue), and would make the n images nobody held for --------------
for my $path ($EDIT, $VAR) {
    my ($a, $k) = $h->fresh_account(prefix => 'qs');
    my @model = $path eq $EDIT ? ([ model => 'gpt-image-1' ]) : ([ model => 'dall-e-2' ]);
    my $r = send_form("$path?n=8&model=gpt-image-1", $k,
                      form($B, @model, [ prompt => 'x' ], [ image => png(1000), 'a.png' ]));
    is $r->{status}, 200, "$path with URL arguments: 200";
    (my $up_path = $path) =~ s{^/fast}{};
    my ($up) = grep { ($_->{path} // '') eq $up_path } reverse $h->upstream_requests;
    is $up->{target}, $up_path, '... the upstream asked without them';
}

done_testing;
