# One reading of a request for the relay and the upstream, and holds that
# cover what it allows, as a hostile key holder tries it: each row of the
# issue's table, against the project's mock and against the same mock
# reading bodies as Go's encoding/json does (X-Mock: decode=go: keys
# matched without case, the last one winning; "stream" true when truthy),
# as a one-api or new-api behind imgbill would.
#   - keys that collide without case or '_' (model/MODEL, Stream,
#     Stream_Options, INCLUDE_USAGE, Gemini's two spellings): 400, free,
#     nothing upstream, Redis untouched;
#   - "stream" not a boolean, include_usage not a boolean: 400;
#   - stream_options null: replaced, the one the upstream reads asks for
#     usage, and the stream is billed;
#   - Gemini's alt or key given twice, or ALT: 400 before the upstream;
#   - a thinking budget of 30,000 is held for and charged to the unit;
#   - a hold outlives imgbill_hold_ttl while its request lives: four
#     slow streams on 5.50 never take the balance below 0;
#   - ledger cursors 0-0 and out of range: an empty page or a 400.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use IO::Select;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for dechunk);

my $h = Imgbill::Harness->new(conf_filter => sub {
    # holds that would expire mid-request, with no refresh
    $_[0] =~ s/^imgbill_hold_ttl\s+\S+;/imgbill_hold_ttl 3s;/m or die;
    $_[0] =~ s/proxy_read_timeout 600s;/proxy_read_timeout 2s;/ or die;
});
my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';
my $FAST  = '/fast/v1/chat/completions';

# a raw body (JSON text, as sent: duplicate and odd keys survive)
sub chat_raw {
    my ($key, $json, %o) = @_;
    return $h->post($o{path} // '/v1/chat/completions', $json,
                    Authorization => "Bearer $key",
                    (defined $o{mock} ? ('X-Mock' => $o{mock}) : ()));
}

my $MSG = '"messages":[{"role":"user","content":"a fox"}]';

# ---- keys that fold alike, values of another type: refused -------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'amb');
    my @rows = (
        [ 'model and MODEL', qq({"model":"$FLASH","MODEL":"$PRO",$MSG}),
          'ambiguous_key', qr/"MODEL" is read as "another key of its object"/ ],
        [ 'model and Model, streamed',
          qq({"model":"$FLASH","Model":"$PRO","stream":true,$MSG}),
          'ambiguous_key', qr/"Model"/ ],
        [ 'Stream: true', qq({"model":"$FLASH","Stream":true,$MSG}),
          'ambiguous_key', qr/"Stream" is read as "stream"/ ],
        [ 'Stream_Options include_usage false',
          qq({"model":"$FLASH","stream":true,"Stream_Options":{"include_usage":false},$MSG}),
          'ambiguous_key', qr/"Stream_Options" is read as "stream_options"/ ],
        [ 'include_usage and INCLUDE_USAGE',
          qq({"model":"$FLASH","stream":true,"stream_options":{"include_usage":false,"INCLUDE_USAGE":false},$MSG}),
          'ambiguous_key', qr/"INCLUDE_USAGE"/ ],
        [ 'a long s (U+017F) for the s of stream',
          qq({"model":"$FLASH","\\u017ftream":true,$MSG}),
          'ambiguous_key', qr/is read as "stream"/ ],
        [ 'stream: 1', qq({"model":"$FLASH","stream":1,$MSG}),
          'invalid_value', qr/"stream" must be true or false/ ],
        [ 'stream: "true"', qq({"model":"$FLASH","stream":"true",$MSG}),
          'invalid_value', qr/"stream" must be true or false/ ],
        [ 'stream: "yes"', qq({"model":"$FLASH","stream":"yes",$MSG}),
          'invalid_value', qr/"stream" must be true or false/ ],
        [ 'include_usage: 1',
          qq({"model":"$FLASH","stream":true,"stream_options":{"include_usage":1},$MSG}),
          'invalid_stream_options', qr/include_usage/ ],
        [ 'max_tokens: "4000"', qq({"model":"$FLASH","max_tokens":"4000",$MSG}),
          'invalid_value', qr/"max_tokens" must be an integer/ ],
    );
    for my $r (@rows) {
        my ($name, $json, $code, $re) = @$r;
        for my $mock (undef, 'decode=go') {
            for my $path ('/v1/chat/completions', $FAST) {
                $h->rejected_ok("$name: 400 $code (" . ($mock // 'mock')
                                . ", $path)", 400, 'invalid_request_error', $code,
                    sub { chat_raw($key, $json, mock => $mock, path => $path) },
                    check => sub { like $_[0]{json}{error}{message}, $re, 'the message' });
            }
        }
    }
    is $h->balance($acct), 100000, 'nothing charged';
}

# ---- stream_options null: replaced, one for the upstream to read -------------

for my $mock ('tag=snull', 'tag=snullgo decode=go') {
    my ($acct, $key) = $h->fresh_account(prefix => 'sn');
    my $res = chat_raw($key, qq({"model":"$FLASH","stream":true,"stream_options":null,$MSG}),
                       mock => $mock);
    my ($tag) = $mock =~ /tag=(\w+)/;
    my ($up) = grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests;
    my (undef, $trailers) = dechunk($h->raw_http(
        key => $key, mock => "$mock x=1",
        body => qq({"model":"$FLASH","stream":true,"stream_options":null,$MSG}))->{body});
    subtest "stream_options null ($mock): replaced, billed 0.2465" => sub {
        is $res->{status}, 200, 'status 200';
        ok $up && $up->{include_usage}, 'the upstream read include_usage true';
        is $trailers->{'x-imgbill-charge'}, '0.2465', 'trailer X-Imgbill-Charge 0.2465';
        ok wait_for(sub { ($h->balance($acct) // 0) == 100000 - 2 * 2465 }),
           'Redis: 2 x 0.2465';
    };
}

# ---- Gemini's query: alt and key once, spelled so ------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'gq');
    my $body = { contents => [ { role => 'user', parts => [ { text => 'a fox' } ] } ] };
    my $path = "/v1beta/models/$FLASH:streamGenerateContent";
    for my $q ('alt=sse&alt=json', 'alt=sse&ALT=json', 'ALT=sse', 'alt=sse&%61lt=json',
               "alt=sse&key=$key&key=other") {
        $h->rejected_ok("Gemini ?$q: 400 before the upstream", 400, 'INVALID_ARGUMENT',
            undef, sub { $h->post("$path?$q", $body, 'x-goog-api-key' => $key) },
            google => 1,
            check => sub { like $_[0]{json}{error}{message}, qr/must be given once, spelled so/,
                                'the message' });
    }
    my $res = $h->post("$path?alt=sse&key=$key", $body);
    is $res->{status}, 200, 'Gemini ?alt=sse&key=...: once each, relayed';
    $h->rejected_ok('Gemini: generationConfig and generation_config: 400', 400,
        'INVALID_ARGUMENT', undef,
        sub { $h->post("/v1beta/models/$FLASH:generateContent",
                       '{"contents":[],"generationConfig":{"candidateCount":1},'
                       . '"generation_config":{"candidate_count":4}}',
                       'x-goog-api-key' => $key) },
        google => 1);
}

# ---- a thinking budget is held for, and charged to the unit -------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'think', units => 400000);
    my $body = { contents => [ { role => 'user', parts => [ { text => 'a fox' } ] } ],
                 generationConfig => { thinkingConfig => { thinkingBudget => 30000 } } };
    my $wait = $h->in_flight(1, path => "/v1beta/models/$PRO:generateContent",
                             body => $body, headers => { 'x-goog-api-key' => $key },
                             mock => 'tt=30000 sleep=1');
    my $holds = $h->wait_holds($acct, 1, 10);
    my ($units) = (values %{ $holds || {} })[0] =~ /^(\d+):/;
    # (4096 + 30000) x 853 / 1e6 = 29.0839 yuan, and the prompt's bound
    cmp_ok $units // 0, '>=', 290839, 'the hold covers 4096 + 30000 output tokens';
    my ($got) = $wait->();
    is $got, '200 27.3132',
       '3-pro, thinkingBudget 30000: 0.0172 + (2000 + 30000) x 853 / 1e6 = 27.3132';
    is $h->balance($acct), 400000 - 273132, 'Redis: 27.3132, not capped';
    unlike $h->error_log, qr/more than the \d+ held/, 'no charge capped at its hold';

    my ($a2, $k2) = $h->fresh_account(prefix => 'thinkp', units => 250000);
    $h->rejected_ok('the same on 25.0000: 402, the hold is not available', 402,
        'RESOURCE_EXHAUSTED', undef,
        sub { $h->post("/v1beta/models/$PRO:generateContent", $body, 'x-goog-api-key' => $k2) },
        google => 1);
}

# ---- a hold lives as long as its request ------------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'slow', units => 55000);
    my $body = { model => $PRO, stream => JSON::PP::true,
                 messages => [ { role => 'user', content => 'a fox' } ] };
    # a stream of an 8 MB image its client does not read yet
    my $s = $h->raw_send(key => $key, body => $body, mock => 'size=40000000');
    my $holds = $h->wait_holds($acct, 1, 10);
    my ($exp0) = (values %{ $holds || {} })[0] =~ /:(\d+)$/;
    ok $exp0, 'a slow stream holds money';
    ok wait_for(sub { my ($e) = (values %{ $h->holds($acct) })[0] =~ /:(\d+)$/;
                      ($e // 0) > $exp0 && time > $exp0 + 1 }, 20),
       'past its first expiry, the hold lives on, refreshed';
    my @later;
    for my $i (1 .. 3) {
        my $r = $h->post('/v1/chat/completions', $body, Authorization => "Bearer $key");
        push @later, $r->{status};
    }
    is_deeply \@later, [402, 402, 402],
        'three more streams on 5.50 while the first lives: refused (about 2.00 available)';
    # now the first is read to its end
    my $sel = IO::Select->new($s);
    my $raw = '';
    while ($sel->can_read(30)) {
        sysread($s, $raw, 1 << 20, length $raw) or last;
    }
    close $s;
    # (the trailers, from the end of 40 MB: de-chunking it all is slow)
    my ($charge) = substr($raw, -4096) =~ /\r\n0\r\n(?:.*\r\n)?X-Imgbill-Charge: ([\d.]+)\r\n/s;
    is $charge, '1.7232', 'the slow stream, read at last: 1.7232';
    ok $h->wait_holds($acct, 0, 10), '... its hold settled';
    is $h->balance($acct), 55000 - 17232, 'the balance never went below 0: 3.7768';
    is scalar @{ $h->ledger($acct) }, 1, 'one charge for the one image delivered';
}

# ---- ledger cursors -----------------------------------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'cur');
    $h->chat(key => $key);
    my $get = sub { $h->request('GET', "/v1/imgbill/ledger?after=$_[0]", undef,
                                Authorization => "Bearer $key") };
    my $r = $get->('0-0');
    is $r->{status}, 200, 'after=0-0: 200';
    is_deeply $r->{json}{data}, [], '... an empty page: nothing comes before it';
    $r = $get->('18446744073709551615-18446744073709551615');
    is scalar @{ $r->{json}{data} || [] }, 1, 'after the largest id: every entry';
    for my $c ('18446744073709551616-0', '0-18446744073709551616', '00-1', '1-', '-1') {
        $r = $get->($c);
        is "$r->{status} " . ($r->{json}{error}{code} // ''), '400 invalid_cursor',
           "after=$c: 400 invalid_cursor";
    }
}

is scalar($h->crashes), 0, 'no worker crashed';

done_testing;
