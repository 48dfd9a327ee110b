# Ideogram (issue 20), through conf.d's own locations, against a mock that
# answers as Ideogram and its resellers do:
#   - 3.0 per image delivered by operation and rendering speed: generate
#     TURBO, 2 asked, one filtered -> 0.2160; remix QUALITY -> 0.6480;
#     edit TURBO -> 0.4320; reframe without a speed -> 0.4320; a 422 safety
#     refusal, a 429, a 401, everything filtered -> free
#   - the legacy API: generate (JSON, as its documentation shows it),
#     remix and upscale (image_request as a JSON field), edit (flat
#     fields), describe (per call)
#   - every case a row of the table below, sent as Cherry Studio sends it:
#     Node's FormData (Cherry Studio's V3 field set) or JSON, the key in
#     Api-Key (or Bearer); refused requests answer in Ideogram's shape
#     ({"error","code"}), free, Redis untouched, the upstream not reached
#   - the client's key never reaches the upstream; the operator's does
#   - read where Ideogram reads: a model or num_images in the place the
#     operation does not take them, a charset but UTF-8, a _charset_ field,
#     a Content-Transfer-Encoding, URL arguments (never passed on), a
#     character reference (priced apart) are refused or kept from the
#     upstream
#   - the hostile multipart bodies, against both APIs
#   - 1.00 buys exactly 4 of 10 concurrent TURBO generates: 0.1360 left
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for sdk_dir form png fmt_units);
use JSON::PP ();

my $DESCRIBE = '/t/ideogram/describe';
my $h = Imgbill::Harness->new(
    upstream_key => 'sk-operator-ideogram',
    # the seed prices no description: a location that does
    extra_server => join('', "    location = $DESCRIBE {\n",
        map({ "        $_\n" }
            'imgbill fast;', 'imgbill_api ideogram_legacy;',
            'imgbill_fast_price DESCRIBE 0.05;',
            'proxy_http_version 1.1;', 'proxy_set_header Connection "";',
            'proxy_set_header Authorization "";', 'proxy_set_header Api-Key "";',
            'proxy_pass http://imgbill_upstream/ideogram/describe;'),
        "    }\n"),
);
my $sdk = sdk_dir() or plan skip_all => "no node: $@";

my $V3 = '/ideogram/v1/ideogram-v3';
my $J = JSON::PP->new->canonical;

# Cherry Studio's Ideogram 3.0 fields
my %CHERRY = (prompt => 'a lighthouse at dusk, neon sign "OPEN"',
              aspect_ratio => '16x9', style_type => 'AUTO', seed => 1,
              negative_prompt => 'blurry', magic_prompt => 'AUTO');

# node's fetch with a FormData (or a JSON body): the reply, as the client
# read it
sub node_call {
    my ($key, %spec) = @_;
    my $out = `node $sdk/ideogram.mjs ${\ $h->url} '$key' '${\ $J->encode(\%spec) }' 2>&1`;
    my $r = eval { $J->decode($out) } or return { status => 0, text => $out };
    $r->{headers} = { 'x-imgbill-charge' => $r->{charge},
                      'x-imgbill-balance' => $r->{balance} };
    return $r;
}

sub last_upstream {
    my ($path) = @_;
    return (grep { ($_->{path} // '') eq $path } $h->upstream_requests)[-1];
}

# ---- charged: a row per case ------------------------------------------------
# [name, spec, charge, images delivered, data[] entries, model, api]
my @charged = (
    [ '3.0 generate TURBO, 2 asked, one filtered: 0.2160',
      { path => "$V3/generate", mock => 'filtered=1',
        fields => { %CHERRY, rendering_speed => 'TURBO', num_images => 2 } },
      '0.2160', 1, 2 ],
    [ '3.0 remix QUALITY, Cherry Studio\'s fields and an image: 0.6480',
      { path => "$V3/remix",
        fields => { %CHERRY, rendering_speed => 'QUALITY', num_images => 1,
                    image_weight => 60 },
        files => [ [ image => 200000, 'source.png' ] ] },
      '0.6480', 1, 1 ],
    [ '3.0 edit TURBO, an image and a mask: 0.4320',
      { path => "$V3/edit",
        fields => { prompt => 'remove the text', rendering_speed => 'TURBO' },
        files => [ [ image => 100000, 'a.png' ], [ mask => 20000, 'mask.png' ] ] },
      '0.4320', 1, 1 ],
    [ '3.0 reframe without rendering_speed (DEFAULT): 0.4320',
      { path => "$V3/reframe", fields => { resolution => '1536x640' },
        files => [ [ image => 50000, 'a.png' ] ] },
      '0.4320', 1, 1 ],
    [ '3.0 replace-background FLASH, a style reference: 0.4320',
      { path => "$V3/replace-background",
        fields => { prompt => 'a beach', rendering_speed => 'FLASH' },
        files => [ [ image => 50000, 'a.png' ],
                   [ style_reference_images => 30000, 's.png' ] ] },
      '0.4320', 1, 1 ],
    [ '3.0 remix TURBO with an image of 6 MB (Ideogram takes 10): 0.2160',
      { path => "$V3/remix", fields => { prompt => 'x', rendering_speed => 'TURBO' },
        files => [ [ image => 6 * 1024 * 1024, 'big.png' ] ] },
      '0.2160', 1, 1 ],
    [ '3.0 on /fast/, FLASH, 3 asked: 0.6480',
      { path => "/fast$V3/generate",
        fields => { prompt => 'three cats', rendering_speed => 'FLASH', num_images => 3 } },
      '0.6480', 3, 3 ],
    [ '3.0 with the key as a Bearer token: 0.2160',
      { path => "$V3/generate", bearer => 1,
        fields => { prompt => 'a cat', rendering_speed => 'TURBO' } },
      '0.2160', 1, 1 ],
    [ '3.0 delivering 1 of 4 asked: 0.6480',
      { path => "$V3/generate", mock => 'images=1',
        fields => { prompt => 'a cat', rendering_speed => 'QUALITY', num_images => 4 } },
      '0.6480', 1, 1 ],
    [ 'legacy generate, its documentation\'s body, V_2, 2 images: 1.1520',
      { path => '/ideogram/generate',
        json => { image_request => {
            prompt => '3D cartoon, an adorable white owl baby',
            negative_prompt => 'blurry, bad anatomy, watermark',
            aspect_ratio => 'ASPECT_3_2', model => 'V_2', num_images => 2,
            magic_prompt_option => 'AUTO', style_type => 'RENDER_3D' } } },
      '1.1520', 2, 2, 'V_2', 'ideogram_legacy' ],
    [ 'legacy generate without a model: V_2, Ideogram\'s default, 0.5760',
      { path => '/ideogram/generate', json => { image_request => { prompt => 'a cat' } } },
      '0.5760', 1, 1, 'V_2', 'ideogram_legacy' ],
    [ 'legacy generate V_2A_TURBO, 2 asked, one filtered: 0.1800',
      { path => '/fast/ideogram/generate', mock => 'filtered=1',
        json => { image_request => { prompt => 'a cat', model => 'V_2A_TURBO',
                                     num_images => 2 } } },
      '0.1800', 1, 2, 'V_2A_TURBO', 'ideogram_legacy' ],
    [ 'legacy remix, image_request a JSON field, V_2: 0.5760',
      { path => '/ideogram/remix',
        fields => { image_request => '{"prompt": "watercolor", "aspect_ratio": '
                    . '"ASPECT_10_16", "image_weight": 50, "magic_prompt_option": '
                    . '"ON", "model": "V_2"}' },
        files => [ [ image_file => 80000, 'a.png' ] ] },
      '0.5760', 1, 1, 'V_2', 'ideogram_legacy' ],
    [ 'legacy edit, flat fields, V_2_TURBO: 0.3600',
      { path => '/ideogram/edit',
        fields => { prompt => 'a hat', model => 'V_2_TURBO', num_images => 1 },
        files => [ [ image_file => 80000, 'a.png' ], [ mask => 9000, 'm.png' ] ] },
      '0.3600', 1, 1, 'V_2_TURBO', 'ideogram_legacy' ],
    [ 'legacy upscale, image_request "{}": 0.4320',
      { path => '/ideogram/upscale', fields => { image_request => '{}' },
        files => [ [ image_file => 80000, 'a.png' ] ] },
      '0.4320', 1, 1, 'UPSCALE', 'ideogram_legacy' ],
);

for my $c (@charged) {
    my ($name, $spec, $charge, $images, $entries, $model, $api) = @$c;
    my ($a, $k) = $h->fresh_account(prefix => 'ig');
    my $r = node_call($k, %$spec);
    $h->images_charged_ok($r, $a, $charge, $images, $name, entries => $entries,
                          api => $api // 'ideogram', model => $model // 'V_3');
}

# a description is one price for the call, however many it gives
{
    my ($a, $k) = $h->fresh_account(prefix => 'igd');
    my $r = node_call($k, path => $DESCRIBE, files => [ [ image_file => 5000, 'a.png' ] ]);
    is scalar @{ $r->{json}{descriptions} || [] }, 2, 'describe: two descriptions';
    $h->images_charged_ok($r, $a, '0.0500', 1, 'describe: 0.0500 for the call',
                          no_data => 1, api => 'ideogram_legacy', model => 'DESCRIBE');
    unlike $h->error_log, qr/would cost .* more than the/,
        'describe: no "more than held" complaint';
}

# ---- the keys: the client's stays here, the operator's goes up -------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'igk');
    my $r = node_call($k, path => "$V3/generate?num_images=8&rendering_speed=QUALITY",
                      fields => { prompt => 'a cat', rendering_speed => 'TURBO' });
    is $r->{charge}, '0.2160', 'a generation for the key check, with URL arguments';
    my $up = last_upstream("$V3/generate");
    is $up->{target}, "$V3/generate",
        '... which never reach an upstream that might read them for fields';
    is $up->{headers}{'api-key'}, 'sk-operator-ideogram', 'the upstream gets the operator\'s Api-Key';
    ok !grep({ defined && /\Q$k\E/ } values %{ $up->{headers} || {} }),
        'the client\'s key reaches the upstream in no header';
    unlike $h->error_log . $h->access_log, qr/\Q$k\E/, 'nor any log';
}

# ---- free: the upstream refuses, or filters everything -----------------------
for my $c (
    [ 'a 422 safety refusal', 'kind=safety', 422 ],
    [ 'a 429', 'status=429', 429 ],
    [ 'the upstream\'s 401 (the relay\'s key refused): 502', 'status=401', 502 ],
    [ 'a 400', 'status=400', 400 ],
    [ 'both images filtered', 'filtered=2', 200 ],
    [ 'an empty data[]', 'kind=noimage', 200 ],
) {
    my ($name, $mock, $status) = @$c;
    my ($a, $k) = $h->fresh_account(prefix => 'igf');
    my $r = node_call($k, path => "$V3/generate", mock => $mock,
                      fields => { prompt => 'x', rendering_speed => 'TURBO', num_images => 2 });
    subtest "$name: free" => sub {
        is $r->{status}, $status, "status $status";
        is $r->{charge}, '0.0000', 'X-Imgbill-Charge 0.0000';
        like $r->{json}{error}, qr/safety/, 'Ideogram\'s own error reaches the client'
            if $mock eq 'kind=safety';
        ok $h->wait_holds($a, 0, 10), 'hold released';
        is $h->balance($a), 100000, 'balance untouched';
        is scalar @{ $h->ledger($a) }, 0, 'no ledger entry';
    };
}

# ---- refused before the upstream, in Ideogram's shape -------------------------
my $B = '----imgbillIdeogram7MA4YWxkTrZu0gW';
my $img = [ image => png(1000), 'a.png' ];
my $file = [ image_file => png(1000), 'a.png' ];

sub send_form {
    my ($path, $key, $body, %o) = @_;
    return $h->post($path, $body, 'Api-Key' => $key,
                    'Content-Type' => $o{type} // "multipart/form-data; boundary=$B");
}

sub refused_ok {
    my ($name, $r, $status, $code, $before, $hits) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is $r->{status}, $status, "status $status" or diag $r->{body};
        my $j = eval { JSON::PP->new->decode($r->{body}) } || {};
        is_deeply [ sort keys %$j ], [ qw(code error) ], 'Ideogram\'s shape: error, code';
        ok !ref $j->{error} && length($j->{error} // ''), '... its message a string';
        is $j->{code}, $code, "code $code";
        is $h->upstream_hits, $hits, 'upstream not reached';
        is $h->snapshot, $before, 'Redis unchanged';
    };
}

{
    my ($a, $k) = $h->fresh_account(prefix => 'igr');
    my $rq = sub { form($B, [ image_request => $_[0] ], $file) };
    my $before = $h->snapshot;
    my $hits = $h->upstream_hits;
    for my $c (
        # [name, path, body, status, code, content type]
        [ 'speed "turbo" (Ideogram spells it TURBO)', "$V3/generate",
          form($B, [ prompt => 'x' ], [ rendering_speed => 'turbo' ]), 400, 'invalid_value' ],
        [ 'speed "ULTRA"', "$V3/generate",
          form($B, [ prompt => 'x' ], [ rendering_speed => 'ULTRA' ]), 400, 'invalid_value' ],
        [ 'num_images 9', "$V3/generate", form($B, [ prompt => 'x' ], [ num_images => 9 ]),
          400, 'too_many_images' ],
        [ 'num_images 0', "$V3/generate", form($B, [ prompt => 'x' ], [ num_images => 0 ]),
          400, 'invalid_image_count' ],
        [ 'num_images "two"', "$V3/generate", form($B, [ num_images => 'two' ]),
          400, 'invalid_image_count' ],
        [ 'num_images twice', "$V3/generate",
          form($B, [ num_images => 1 ], [ num_images => 8 ]), 400, 'duplicate_field' ],
        [ 'Num_Images beside num_images', "$V3/generate",
          form($B, [ num_images => 1 ], [ Num_Images => 8 ]), 400, 'ambiguous_key' ],
        [ 'a 3.0 request as JSON', "$V3/generate", '{"prompt":"x"}', 400,
          'invalid_content_type', 'application/json' ],
        [ 'remix without its image', "$V3/remix", form($B, [ prompt => 'x' ]),
          400, 'missing_image' ],
        [ 'edit without its mask', "$V3/edit", form($B, [ prompt => 'x' ], $img),
          400, 'missing_mask' ],
        [ 'an image sent as a field', "$V3/remix", form($B, [ image => 'a.png' ]),
          400, 'invalid_value' ],
        [ 'an image of 11 MB (Ideogram takes 10)', "$V3/remix",
          form($B, [ prompt => 'x' ], [ image => png(11 * 1024 * 1024), 'big.png' ]),
          413, 'image_too_large' ],
        [ 'a character reference, priced apart by Ideogram, unpriced here', "$V3/generate",
          form($B, [ prompt => 'x' ], [ character_reference_images => png(1000), 'c.png' ]),
          400, 'model_not_supported' ],
        [ 'a Content-Type charset of UTF-7', "$V3/generate",
          form($B, [ '+AG4-um_images' => 8 ]), 400, 'invalid_multipart',
          "multipart/form-data; boundary=$B; charset=utf-7" ],
        [ 'a _charset_ field', "$V3/generate",
          form($B, [ _charset_ => 'utf-7' ], [ prompt => 'x' ]), 400, 'invalid_value' ],
        [ 'a part with a Content-Transfer-Encoding', "$V3/generate",
          "--$B\r\nContent-Disposition: form-data; name=\"num_images\"\r\n"
          . "Content-Transfer-Encoding: base64\r\n\r\nOA==\r\n--$B--\r\n",
          400, 'invalid_multipart' ],
        [ 'legacy generate, num_images beside image_request', '/ideogram/generate',
          '{"num_images":4,"image_request":{"model":"V_1_TURBO"}}', 400, 'misplaced_member',
          'application/json' ],
        [ 'legacy generate, model beside image_request', '/ideogram/generate',
          '{"model":"V_2","image_request":{"model":"V_1_TURBO"}}', 400, 'misplaced_member',
          'application/json' ],
        [ 'legacy remix, a flat num_images', '/ideogram/remix',
          form($B, [ image_request => '{}' ], [ num_images => 4 ], $file), 400,
          'misplaced_member' ],
        [ 'legacy upscale, a flat model', '/ideogram/upscale',
          form($B, [ image_request => '{}' ], [ model => 'V_2' ], $file), 400,
          'misplaced_member' ],
        [ 'legacy edit, an image_request', '/ideogram/edit',
          form($B, [ model => 'V_2_TURBO' ], [ image_request => '{"num_images":4}' ], $file,
               [ mask => png(100), 'm.png' ]), 400, 'misplaced_member' ],
        [ 'legacy generate as a form', '/ideogram/generate',
          form($B, [ image_request => '{"model":"V_2"}' ]), 400, 'invalid_content_type' ],
        [ 'legacy remix as JSON', '/ideogram/remix', '{"image_request":{}}', 400,
          'invalid_content_type', 'application/json' ],
        [ 'legacy remix, image_request not JSON', '/ideogram/remix',
          $rq->('{model: V_2}'), 400, 'invalid_value' ],
        [ 'legacy remix, image_request an array', '/ideogram/remix',
          $rq->('[]'), 400, 'invalid_value' ],
        [ 'legacy remix, "model" twice in image_request', '/ideogram/remix',
          $rq->('{"model":"V_1_TURBO","model":"V_2"}'), 400, 'invalid_value' ],
        [ 'legacy remix, "Model" beside "model"', '/ideogram/remix',
          $rq->('{"model":"V_1_TURBO","Model":"V_2"}'), 400, 'ambiguous_key' ],
        [ 'legacy remix, num_images "2"', '/ideogram/remix',
          $rq->('{"num_images":"2"}'), 400, 'invalid_image_count' ],
        [ 'legacy remix without image_file', '/ideogram/remix',
          form($B, [ image_request => '{}' ]), 400, 'missing_image' ],
        [ 'legacy remix without image_request', '/ideogram/remix', form($B, $file),
          400, 'missing_image_request' ],
        [ 'legacy edit without its mask', '/ideogram/edit',
          form($B, [ model => 'V_2' ], $file), 400, 'missing_mask' ],
        [ 'legacy generate V_9', '/ideogram/generate',
          '{"image_request":{"model":"V_9"}}', 400, 'model_not_supported', 'application/json' ],
        [ 'legacy generate num_images 2.0', '/ideogram/generate',
          '{"image_request":{"num_images":2.0}}', 400, 'invalid_image_count', 'application/json' ],
        [ 'legacy generate num_images 9', '/ideogram/generate',
          '{"image_request":{"num_images":9}}', 400, 'too_many_images', 'application/json' ],
        [ 'legacy describe where nobody priced it', '/ideogram/describe', form($B, $file),
          400, 'model_not_supported' ],
    ) {
        my ($name, $path, $body, $status, $code, $type) = @$c;
        refused_ok("$name: $status $code",
                   send_form($path, $k, $body, type => $type), $status, $code, $before, $hits);
    }

    refused_ok('an unknown Ideogram path: 404 in its shape',
               send_form('/ideogram/v1/ideogram-v3/upscale', $k, form($B, [ prompt => 'x' ])),
               404, 'not_found', $before, $hits);
    refused_ok('a body over client_max_body_size: 413 in its shape',
               send_form("$V3/generate", $k, form($B, [ prompt => 'x' ],
                                                  [ image => 'x' x (65 * 1024 * 1024), 'a.png' ])),
               413, 'request_too_large', $before, $hits);
    refused_ok('no key: 401', $h->post("$V3/generate", form($B, [ prompt => 'x' ]),
                                       'Content-Type' => "multipart/form-data; boundary=$B"),
               401, 'missing_api_key', $before, $hits);
    refused_ok('a key nobody has: 401',
               send_form("$V3/generate", 'sk-nobody-has-this', form($B, [ prompt => 'x' ])),
               401, 'invalid_api_key', $before, $hits);
    my ($pa, $pk) = $h->fresh_account(prefix => 'igp', units => 2159);
    $before = $h->snapshot;
    refused_ok('0.2159 under one TURBO generate: 402',
               send_form("$V3/generate", $pk, form($B, [ rendering_speed => 'TURBO' ])),
               402, 'insufficient_balance', $before, $hits);
}

# ---- the hostile multipart bodies, against both APIs ---------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'igh');
    for my $api ([ $V3 . '/remix', [ prompt => 'x' ], $img ],
                 [ '/ideogram/remix', [ image_request => '{}' ], $file ]) {
        my ($path, $ok, $f) = @$api;
        my $head = "--$B\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n";
        my $before = $h->snapshot;
        my $hits = $h->upstream_hits;
        for my $c (
            [ 'no closing boundary', substr(form($B, $ok, $f), 0, -8) ],
            [ 'the body cut in a file', substr(form($B, $ok, $f), 0, 300) ],
            [ 'a delimiter followed by junk', $head . "--${B}junk\r\n" ],
            [ 'the boundary after a CRLF inside a file',
              form($B, $ok, [ $f->[0] => png(100) . "\r\n--$B" . 'x' . png(100), 'f.png' ]) ],
            [ 'a part without a name', "--$B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--$B--\r\n" ],
            [ 'a part that is no form-data', "--$B\r\nContent-Type: text/plain\r\n\r\nx\r\n--$B--\r\n" ],
            [ 'a name of 200 bytes', form($B, $ok, [ 'n' x 200 => 'x' ], $f) ],
            [ 'a header line of 2000 bytes',
              "--$B\r\nContent-Disposition: form-data; name=\"prompt\"\r\nX-Pad: " . ('p' x 2000)
              . "\r\n\r\nx\r\n--$B--\r\n" ],
            [ '65 parts', form($B, $ok, $f, map { [ "f$_" => 'x' ] } 1 .. 63) ],
        ) {
            my ($name, $body) = @$c;
            refused_ok("$path, $name: 400", send_form($path, $k, $body), 400,
                       'invalid_multipart', $before, $hits);
        }
    }
}

# ---- 1.00 buys exactly 4 of 10 concurrent TURBO generates ------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'igc', units => 10000);
    my $body = form($B, [ prompt => 'a cat' ], [ rendering_speed => 'TURBO' ]);
    my @s = map {
        $h->raw_send(path => "$V3/generate", mock => 'sleep=1', body => $body,
                     headers => [ 'Api-Key' => $k,
                                  'Content-Type' => "multipart/form-data; boundary=$B" ])
    } 1 .. 10;
    my @r = map { $h->raw_reply($_) } @s;
    is scalar(grep { $_->{status} == 200 } @r), 4, '4 of 10 admitted and delivered';
    is scalar(grep { $_->{status} == 402 } @r), 6, '6 refused 402';
    ok $h->wait_holds($a, 0, 10), 'no hold left';
    is $h->balance($a), 1360, 'balance 0.1360';
    is scalar @{ $h->ledger($a) }, 4, 'four ledger entries';
}

# ---- records: the ledger read by the key holder, the log, the metrics --------
{
    my ($a, $k) = $h->fresh_account(prefix => 'igl');
    my $r = node_call($k, path => "$V3/generate", mock => 'filtered=1',
                      fields => { prompt => 'x', rendering_speed => 'TURBO', num_images => 2 });
    is $r->{charge}, '0.2160', 'a generation to read back';
    my $l = $h->request('GET', '/v1/imgbill/ledger', undef, Authorization => "Bearer $k");
    my $e = (JSON::PP->new->decode($l->{body})->{data} || [])->[0] || {};
    is_deeply [ @$e{qw(api model channel amount images)} ],
              [ 'ideogram', 'V_3', 'fast', '-0.2160', 1 ],
              'the key holder reads it: api, model, channel, amount, images';
    my ($log) = grep { ($_->{request_id} // '') eq $r->{request_id} } $h->access_entries;
    is_deeply [ @{ $log || {} }{qw(api channel charge images outcome)} ],
              [ 'ideogram', 'fast', '0.2160', '1/2', 'charged' ],
              'the access log: api, channel, charge, images (delivered/asked), outcome';
    my %m = map { /^(\S+) (\S+)$/ ? ($1 => $2) : () }
            split /\n/, $h->request('GET', '/imgbill/metrics')->{body} // '';
    ok $m{'imgbill_api_requests_total{api="ideogram"}'} > 0, 'metrics: requests by Ideogram 3.0';
    ok $m{'imgbill_api_requests_total{api="ideogram_legacy"}'} > 0,
        '... and by its legacy API';
    ok $m{'imgbill_api_charged_units_total{api="ideogram"}'} >= 2160, '... their charges';
}

is $h->crashes, 0, 'no worker crashed';

done_testing;
