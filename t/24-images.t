# Several images in one request: OpenAI chat's "n" and Gemini's
# generationConfig.candidateCount are held, gated and charged for every
# image, on both channels, whole and streamed:
#   - the issue's table to the unit (metered n: 8, 3-pro n: 3, fast n: 8,
#     the fast gate with n: 8 on 0.50);
#   - fast: the price times the images delivered, fewer than asked, none,
#     more than asked (capped at the hold, logged);
#   - the hold in Redis while the generation runs: n times the price;
#   - bad counts and counts past imgbill_max_images refused, free, Redis
#     untouched, the upstream never reached, in each API's error shape;
#   - the ledger, the key holder's ledger, the access log and the metrics
#     say how many images a charge was for;
#   - 30 concurrent fast n: 4 calls on 1.0000 never overspend.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for dechunk sse_events);

my $h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s/^imgbill_max_images\s+\d+;/imgbill_max_images 8;/m
        or die 'conf.d has no imgbill_max_images line';
});
my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';
my $FAST  = '/fast/v1/chat/completions';
my $TRUE  = JSON::PP::true;

sub chat_body {
    my ($model, %extra) = @_;
    return { model => $model, messages => [ { role => 'user', content => 'draw' } ],
             %extra };
}

sub gemini_path {
    my ($model, $stream, $fast) = @_;
    return ($fast ? '/fast' : '') . "/v1beta/models/$model:"
         . ($stream ? 'streamGenerateContent?alt=sse' : 'generateContent');
}

sub gemini_body {
    my ($count) = @_;
    return { contents => [ { role => 'user', parts => [ { text => 'draw' } ] } ],
             (defined $count ? (generationConfig => { candidateCount => $count }) : ()) };
}

# a streamed call on a raw socket: the de-chunked events and the trailers
sub stream_call {
    my (%o) = @_;
    my $res = $h->raw_http(%o);
    my ($data, $trailers, $complete) = dechunk($res->{body});
    return { %$res, data => $data, trailers => $trailers, complete => $complete,
             events => [ sse_events($data) ] };
}

# charged_ok($name, $res, $acct, $start, $units, $images, %o): the charge
# in the headers (trailers => 1: a stream's trailers), Redis, the ledger
sub charged_ok {
    my ($name, $res, $acct, $start, $units, $images, %o) = @_;
    subtest $name => sub {
        is $res->{status}, 200, 'status 200'
            or diag substr $res->{body} // '', 0, 300;
        my $money = $o{trailers} ? $res->{trailers} : $res->{headers};
        is $money->{'x-imgbill-charge'}, fmt_units($units),
           'X-Imgbill-Charge ' . fmt_units($units);
        is $money->{'x-imgbill-balance'}, fmt_units($start - $units),
           'X-Imgbill-Balance';
        is $h->balance($acct), $start - $units, 'Redis balance, to the unit';
        is_deeply $h->wait_holds($acct, 0), {}, 'no hold left';
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        is $l->[0]{charge}, $units, 'ledger charge';
        is $l->[0]{images}, $images, "ledger images $images";
        is $l->[0]{prompt_tokens}, $o{pt}, "ledger prompt_tokens $o{pt}"
            if defined $o{pt};
        is $l->[0]{completion_tokens}, $o{ct}, "ledger completion_tokens $o{ct}"
            if defined $o{ct};
    };
}

# ---- the issue's table -----------------------------------------------------

{
    # flash, metered, n: 8: 560 in / 8 x 1120 out
    my ($acct, $key) = $h->fresh_account(prefix => 'm8', units => 100000);
    my $res = $h->chat(key => $key, body => chat_body($FLASH, n => 8));
    charged_ok('metered flash n: 8 -> 0.0012 + 1.9622 = 1.9634', $res, $acct,
               100000, 12 + 19622, 8, pt => 560, ct => 8960);
    is scalar @{ $res->{json}{choices} || [] }, 8, '... the client got 8 choices';
}

{
    # 3-pro, metered, n: 3, 4K: 1210 in / 3 x 2000 out
    my ($acct, $key) = $h->fresh_account(prefix => 'm3', units => 200000);
    my $res = $h->chat(key => $key, mock => 'ct=2000',
                       body => chat_body($PRO, n => 3));
    charged_ok('metered 3-pro n: 3 (4K) -> 0.0172 + 5.1180 = 5.1352', $res,
               $acct, 200000, 172 + 51180, 3, pt => 1210, ct => 6000);
}

{
    my ($acct, $key) = $h->fresh_account(prefix => 'f8', units => 100000);
    my $res = $h->chat(key => $key, path => $FAST, body => chat_body($FLASH, n => 8));
    charged_ok('fast flash n: 8 -> 8 x 0.07 = 0.5600', $res, $acct, 100000,
               5600, 8);
}

{
    my ($acct, $key) = $h->fresh_account(prefix => 'f8p', units => 5000);
    my $res = $h->rejected_ok('fast n: 8 on 0.5000: 402, 0.56 is not available',
        402, 'insufficient_quota', 'insufficient_balance',
        sub { $h->chat(key => $key, path => $FAST, body => chat_body($FLASH, n => 8)) });
    like $res->{json}{error}{message},
         qr/available 0\.5000, required 0\.5600/, '... the message says both';
    is $h->balance($acct), 5000, '... the balance untouched';
    my ($acct2, $key2) = $h->fresh_account(prefix => 'f7p', units => 5000);
    my $ok = $h->chat(key => $key2, path => $FAST, body => chat_body($FLASH, n => 7));
    charged_ok('... while n: 7 (0.49) passes the same gate', $ok, $acct2, 5000,
               4900, 7);
}

# ---- delivered, not asked ------------------------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'f42', units => 100000);
    my $res = $h->chat(key => $key, path => $FAST, mock => 'images=2',
                       body => chat_body($FLASH, n => 4));
    charged_ok('fast n: 4, 2 images came back -> 2 x 0.07 = 0.1400', $res,
               $acct, 100000, 1400, 2);
}

{
    my ($acct, $key) = $h->fresh_account(prefix => 'f40', units => 100000);
    my $res = $h->chat(key => $key, path => $FAST, mock => 'images=0',
                       body => chat_body($FLASH, n => 4));
    subtest 'fast n: 4, no image came back: free' => sub {
        is $res->{status}, 200, 'the reply passes';
        is $res->{headers}{'x-imgbill-charge'}, '0.0000', 'X-Imgbill-Charge 0.0000';
        is $h->balance($acct), 100000, 'balance untouched';
        is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
        is_deeply $h->wait_holds($acct, 0), {}, 'the hold released';
    };
}

{
    my ($acct, $key) = $h->fresh_account(prefix => 'f23', units => 100000);
    my $res = $h->chat(key => $key, path => $FAST, mock => 'images=3',
                       body => chat_body($FLASH, n => 2));
    charged_ok('fast n: 2, 3 images came back: charged the hold, 0.1400', $res,
               $acct, 100000, 1400, 3);
    ok wait_for(sub { $h->error_log =~ /a reply of 3 image\(s\) .* more than the 1400 held for 2 image\(s\); charging the hold/ }),
       '... and the error log says so';
}

{
    # the hold while the generation runs: n times the price (fast), n times
    # the largest reply (metered)
    my ($acct, $key) = $h->fresh_account(prefix => 'hold', units => 100000);
    my $wait = $h->in_flight(1, key => $key, path => $FAST, mock => 'sleep=1',
                             body => chat_body($FLASH, n => 4));
    my $holds = $h->wait_holds($acct, 1, 10);
    my ($units) = (values %{ $holds || {} })[0] =~ /^(\d+):/;
    is $units, 2800, 'fast n: 4: the hold is 4 x 0.07 = 0.2800';
    is_deeply [ $wait->() ], [ '200 0.2800' ], '... and the charge, the same';

    my ($acct2, $key2) = $h->fresh_account(prefix => 'holdm', units => 100000);
    $wait = $h->in_flight(1, key => $key2, mock => 'sleep=1',
                          body => chat_body($FLASH, n => 3));
    $holds = $h->wait_holds($acct2, 1, 10);
    ($units) = (values %{ $holds || {} })[0] =~ /^(\d+):/;
    # 3 x ceil(4096 x 219 / 1e6 yuan) = 3 x 8971 units, plus the input bound
    cmp_ok $units - 3 * 8971, '>', 0, 'metered n: 3: the hold covers 3 x 4096 tokens';
    cmp_ok $units - 3 * 8971, '<', 100, '... and the prompt bound, no more';
    is_deeply [ $wait->() ], [ '200 ' . fmt_units(12 + 7358) ],
        '... charged by usage: 0.0012 + 3360 x 219 / 1e6';
}

# ---- refused: free, nothing written, the upstream not reached -------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'bad', units => 100000);
    for my $n (0, -1, 1.5, '2', $TRUE, [2]) {
        my $show = ref $n ? JSON::PP->new->allow_nonref->encode($n) : "\"$n\"";
        $show = $n if !ref $n && $n =~ /^-?[\d.]+$/ && $n ne '2';
        $h->rejected_ok("n: $show -> 400", 400, 'invalid_request_error',
            'invalid_image_count',
            sub { $h->chat(key => $key, body => chat_body($FLASH, n => $n)) },
            check => sub { like $_[0]{json}{error}{message},
                                qr/"n" must be a positive integer/, 'the message names n' });
    }
    my $res = $h->chat(key => $key, body => chat_body($FLASH, n => undef));
    is $res->{status}, 200, 'n: null is one image';

    $h->rejected_ok('n: 9 past imgbill_max_images 8 -> 400', 400,
        'invalid_request_error', 'too_many_images',
        sub { $h->chat(key => $key, body => chat_body($FLASH, n => 9)) },
        check => sub { like $_[0]{json}{error}{message},
                            qr/at most 8 images .* "n" asks for 9/, 'the message' });
    $h->rejected_ok('n: 10^12 -> 400, said without wrapping', 400,
        'invalid_request_error', 'too_many_images',
        sub { $h->chat(key => $key, body => chat_body($FLASH, n => 10**12)) },
        check => sub { like $_[0]{json}{error}{message},
                            qr/asks for more than 64/, 'the message' });
    $h->rejected_ok('Gemini candidateCount 9 -> 400 in Google\'s shape', 400,
        'INVALID_ARGUMENT', undef,
        sub { $h->post(gemini_path($FLASH), gemini_body(9), 'x-goog-api-key' => $key) },
        google => 1,
        check => sub { like $_[0]{json}{error}{message},
                            qr/"candidateCount" asks for 9/, 'the message' });
    $h->rejected_ok('Gemini candidate_count "2" -> 400', 400, 'INVALID_ARGUMENT',
        undef,
        sub { $h->post(gemini_path($FLASH),
                       { %{ gemini_body() }, generation_config => { candidate_count => '2' } },
                       'x-goog-api-key' => $key) },
        google => 1,
        check => sub { like $_[0]{json}{error}{message},
                            qr/"candidate_count" must be a positive integer/, 'the message' });
    is $h->balance($acct), 100000 - 2465, 'only the n: null call was charged';
}

# ---- Gemini's API and streams ----------------------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'gm', units => 100000);
    my $res = $h->post(gemini_path($FLASH), gemini_body(2), 'x-goog-api-key' => $key);
    charged_ok('Gemini metered candidateCount 2 -> 0.0012 + 0.4906', $res, $acct,
               100000, 12 + 4906, 2, pt => 560, ct => 2240);
    is scalar @{ $res->{json}{candidates} || [] }, 2, '... two candidates relayed';

    ($acct, $key) = $h->fresh_account(prefix => 'gf', units => 100000);
    $res = $h->post(gemini_path($FLASH, 0, 1), gemini_body(3), 'x-goog-api-key' => $key);
    charged_ok('Gemini fast candidateCount 3 -> 0.2100', $res, $acct, 100000,
               2100, 3);

    ($acct, $key) = $h->fresh_account(prefix => 'gfs', units => 100000);
    $res = stream_call(path => gemini_path($FLASH, 1, 1), body => gemini_body(2),
                       headers => [ 'x-goog-api-key' => $key ]);
    charged_ok('Gemini fast stream, candidateCount 2 -> 0.1400 (trailers)', $res,
               $acct, 100000, 1400, 2, trailers => 1);

    ($acct, $key) = $h->fresh_account(prefix => 'gms', units => 100000);
    $res = stream_call(path => gemini_path($FLASH, 1), body => gemini_body(2),
                       headers => [ 'x-goog-api-key' => $key ]);
    charged_ok('Gemini metered stream, candidateCount 2 -> 0.4918 (trailers)',
               $res, $acct, 100000, 12 + 4906, 2, trailers => 1, pt => 560,
               ct => 2240);
}

{
    my ($acct, $key) = $h->fresh_account(prefix => 'os', units => 100000);
    my $res = stream_call(path => $FAST, key => $key,
                          body => chat_body($FLASH, n => 3, stream => $TRUE));
    charged_ok('OpenAI fast stream n: 3 -> 0.2100 (trailers)', $res, $acct,
               100000, 2100, 3, trailers => 1);
    my %idx = map { $_->{choices}[0]{index} => 1 }
              grep { ref $_->{choices} && @{ $_->{choices} } }
              map { eval { decode_json($_) } || () } grep { length $_ < 100000 }
              @{ $res->{events} };
    is_deeply [ sort keys %idx ], [ 0, 1, 2 ], '... chunks of choices 0, 1 and 2 relayed';

    ($acct, $key) = $h->fresh_account(prefix => 'ofs', units => 100000);
    $res = stream_call(path => $FAST, key => $key, mock => 'images=1',
                       body => chat_body($FLASH, n => 3, stream => $TRUE));
    charged_ok('OpenAI fast stream n: 3, 1 image came back -> 0.0700', $res,
               $acct, 100000, 700, 1, trailers => 1);

    ($acct, $key) = $h->fresh_account(prefix => 'oms', units => 100000);
    $res = stream_call(key => $key, mock => 'image=markdown split=5',
                       body => chat_body($FLASH, n => 2, stream => $TRUE));
    charged_ok('OpenAI metered stream n: 2, markdown cut across events -> 0.4918',
               $res, $acct, 100000, 12 + 4906, 2, trailers => 1, pt => 560,
               ct => 2240);
}

# ---- what the records say --------------------------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'rec', units => 100000);
    my $res = $h->chat(key => $key, path => $FAST, mock => 'images=3',
                       body => chat_body($FLASH, n => 4));
    my $rid = $res->{headers}{'x-imgbill-request-id'};
    my $page = $h->request('GET', '/v1/imgbill/ledger', undef,
                           Authorization => "Bearer $key");
    is $page->{json}{data}[0]{images}, 3, 'the key holder\'s ledger: images 3';
    is $page->{json}{data}[0]{amount}, '-0.2100', '... for -0.2100';
    my ($e) = $h->access_wait(sub { ($_->{request_id} // '') eq $rid });
    is $e->{images}, '3/4', 'access log: $imgbill_images 3/4 (delivered/asked)';
    my $m = $h->request('GET', '/imgbill/metrics');
    like $m->{body}, qr/^imgbill_images_total\{channel="fast",model="$FLASH"\} \d+$/m,
         'metrics: imgbill_images_total per channel and model';
}

# ---- 30 concurrent n: 4 fast calls on 1.0000 -------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'race', units => 10000);
    my $wait = $h->in_flight(30, key => $key, path => $FAST, mock => 'sleep=0.3',
                             body => chat_body($FLASH, n => 4));
    my @got = $wait->();
    my @ok = grep { /^200 / } @got;
    my @refused = grep { /^402 / } @got;
    my $sum = 0;
    for (@ok) { my ($u) = /^200 (\d+\.\d{4})$/; (my $x = $u) =~ s/\.//; $sum += $x }
    is scalar(@ok) + scalar(@refused), 30, '30 answers: 200 or 402'
        or diag "@got";
    cmp_ok scalar @ok, '<=', 3, 'at most 3 admitted: 3 x 0.28 fit in 1.00, 4 do not';
    is $sum, 2800 * @ok, 'each charged 4 x 0.07';
    is $h->balance($acct), 10000 - $sum, 'balance decrease = the charges in the headers';
    cmp_ok $h->balance($acct), '>=', 0, 'never below 0';
    is scalar @{ $h->ledger($acct) }, scalar @ok, 'a ledger entry per charge';
    is_deeply $h->wait_holds($acct, 0), {}, 'no hold left';
}

# ---- the official SDKs ------------------------------------------------------

SKIP: {
    my $sdk = Imgbill::Harness::sdk_dir();
    skip "SDKs: $@", 6 if !$sdk && $@ =~ /not installed/;
    BAIL_OUT($@) unless $sdk;

    my @acct = map { [ $h->fresh_account(prefix => "sdk$_") ] } 1 .. 4;
    my $out = `node $sdk/images.mjs ${\ $h->url('') } @{[ map { $_->[1] } @acct ]} 2>&1`;
    my $r = eval { decode_json($out) } || {};
    ok !$?, 'node images.mjs ran' or diag $out;

    is_deeply $r->{openai}, { choices => [1, 1, 1], charge => '0.2100' },
        'openai SDK, fast, n: 3: three choices with an image, charged 0.2100'
        or diag explain $r->{openai};
    is_deeply $r->{openai_stream}{images}, { 0 => 1, 1 => 1 },
        'openai SDK stream, n: 2: an image for choice 0 and for choice 1'
        or diag explain $r->{openai_stream};
    is $r->{openai_stream}{usage}{cost}, 0.4918, '... usage.cost 0.4918 (2 x 1120 tokens)';
    is_deeply $r->{gemini}{candidates}, [ { index => 0, images => 1 },
                                          { index => 1, images => 1 } ],
        'google SDK, candidateCount 2: two candidates with an image';
    is $r->{gemini}{charge}, '0.4918', '... charged 0.0012 + 0.4906';
    is_deeply $r->{gemini_stream}{images}, { 0 => 1, 1 => 1 },
        'google SDK stream (fast), candidateCount 2: both candidates\' images';
    is_deeply [ map { $h->balance($_->[0]) } @acct ],
              [ 100000 - 2100, 100000 - 4918, 100000 - 4918, 100000 - 1400 ],
              'Redis: 0.2100, 0.4918, 0.4918, 0.1400, to the unit';
}

is scalar($h->crashes), 0, 'no worker crashed';

done_testing;
