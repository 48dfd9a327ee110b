# Gemini's native API through the relay, on the wire (conf.d's locations
# ~ ^/v1beta/models/M:(generateContent|streamGenerateContent)$, metered, and
# the same under /fast/, rewritten to /v1beta/... upstream):
#   - the key from x-goog-api-key, ?key= or Authorization: Bearer, and never
#     passed on (not in the upstream's query, headers or anywhere in what
#     the mock logged) nor written to error.log / access.log;
#   - the model from the path, the upstream target /v1beta/models/M:...;
#   - the charge from usageMetadata (thinking billed as output), in headers,
#     or for ?alt=sse in trailers from the LAST event's cumulative usage,
#     the events passing through byte for byte;
#   - refusals in Google's error shape, before the upstream and Redis;
#   - failed generations free, a stream cut short released.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(dechunk sse_events fmt_units wait_for gerror_ok);
use Imgbill::Spec qw(decoded);

my $h = Imgbill::Harness->new;
my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';
my $BODY  = { contents => [ { role => 'user', parts => [ { text => 'draw a cat' } ] } ] };
my @KEYS;    # every raw key used: none may reach a log or the upstream

# gem(%o) -> reply, its body de-chunked (body, trailers, complete) and, for
# a stream, its events decoded (events).
#   model, fast => 1, stream => 1 (adds ?alt=sse), query => 'raw query'
#   (replaces the one made), key + via => header|query|bearer, mock,
#   method, body (default $BODY; a string is sent as it is), headers => [...],
#   path (replaces the whole target)
sub gem {
    my (%o) = @_;
    my $m = $o{model} // $FLASH;
    my $path = ($o{fast} ? '/fast' : '') . "/v1beta/models/$m:"
             . ($o{stream} ? 'streamGenerateContent' : 'generateContent');
    my @q = $o{stream} ? ('alt=sse') : ();
    my @hdr = @{ $o{headers} || [] };
    my $via = $o{via} // 'header';
    if (defined $o{key}) {
        push @hdr, 'x-goog-api-key' => $o{key} if $via eq 'header';
        push @hdr, Authorization => "Bearer $o{key}" if $via eq 'bearer';
        push @q, "key=$o{key}" if $via eq 'query';
    }
    @q = ($o{query}) if defined $o{query};
    $path .= '?' . join '&', @q if @q;
    $path = $o{path} if defined $o{path};
    return decoded($h->raw_http(method => $o{method}, path => $path,
                                mock => $o{mock}, headers => \@hdr,
                                port => $o{port},
                                body => exists $o{body} ? $o{body} : $BODY));
}

sub last_upstream { (reverse $h->upstream_requests)[0] }

# the upstream request: the target exactly, and not a trace of the key
sub upstream_ok {
    my ($u, $key, $target, $name) = @_;
    subtest "upstream: $name" => sub {
        is $u->{target}, $target, "target $target";
        ok !defined $u->{query} || $u->{query} !~ /(?:^|&)key=/, 'no key= in the query';
        is $u->{goog_api_key}, undef, 'no x-goog-api-key';
        ok !defined $u->{headers}{authorization}
           || index($u->{headers}{authorization}, $key) < 0, 'no Authorization with the key';
        ok index(JSON::PP->new->canonical->encode($u), $key) < 0,
            'the key nowhere in what the upstream received';
    };
}

# charged_ok($name, $res, $acct, %want): units, pt, ct, model, channel,
# trailers => 1 (a stream: the money in trailers, not headers)
sub charged_ok {
    my ($name, $res, $acct, %w) = @_;
    subtest $name => sub {
        is $res->{status}, 200, 'status 200' or diag substr $res->{body} // '', 0, 300;
        my $money = $w{trailers} ? $res->{trailers} : $res->{headers};
        my $where = $w{trailers} ? 'trailer' : 'header';
        is $money->{'x-imgbill-charge'}, fmt_units($w{units}),
            "$where X-Imgbill-Charge " . fmt_units($w{units});
        is $money->{'x-imgbill-balance'}, fmt_units(100000 - $w{units}),
            "$where X-Imgbill-Balance";
        my $rid = $res->{headers}{'x-imgbill-request-id'} // '';
        like $rid, qr/^[0-9a-f]{32}$/, 'X-Imgbill-Request-Id';
        ok $res->{complete}, 'the reply ended properly';
        is $h->balance($acct), 100000 - $w{units}, 'Redis balance';
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        my %e = %{ $l->[0] || {} };
        delete @e{qw(_id ts)};
        is_deeply \%e, { type => 'charge', request_id => $rid, channel => $w{channel} // 'metered',
                         model => $w{model} // $FLASH, charge => $w{units},
                         balance_after => 100000 - $w{units},
                         prompt_tokens => $w{pt}, completion_tokens => $w{ct},
                         images => $w{images} // 1, api => 'gemini',
                         key => $h->key_id($acct) },
            'ledger entry' if defined $w{pt};
        is $e{charge}, $w{units}, 'ledger charge' unless defined $w{pt};
        is_deeply $h->wait_holds($acct, 0), {}, 'no hold left';
    };
}

# refused_ok($name, $status, $gstatus, $msg_re, %gem): a request refused
# in Google's shape, the upstream not reached, Redis not changed at all;
# the module's own refusals carry X-Imgbill-Request-Id (conf.d's 404s:
# no_rid => 1)
sub refused_ok {
    my ($name, $status, $gstatus, $msg_re, %o) = @_;
    my $no_rid = delete $o{no_rid};
    my ($before, $hits) = ($h->snapshot, $h->upstream_hits);
    my $res = gem(%o);
    subtest $name => sub {
        gerror_ok($res, $status, $gstatus, "$status $gstatus", $msg_re);
        like $res->{headers}{'x-imgbill-request-id'} // '', qr/^[0-9a-f]{32}$/,
            'X-Imgbill-Request-Id' unless $no_rid;
        is $h->upstream_hits, $hits, 'upstream not reached';
        is $h->snapshot, $before, 'Redis unchanged';
    };
    return $res;
}

# free_ok($name, $res, $acct, trailers => 1): a failed generation, free
sub free_ok {
    my ($name, $res, $acct, %o) = @_;
    subtest $name => sub {
        my $money = $o{trailers} ? $res->{trailers} : $res->{headers};
        is $money->{'x-imgbill-charge'}, '0.0000', 'X-Imgbill-Charge 0.0000'
            unless $o{cut};
        is_deeply $h->wait_holds($acct, 0), {}, 'hold released';
        is $h->balance($acct), 100000, 'Redis balance unchanged';
        is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
        $o{check}->() if $o{check};
    };
}

sub account { my @a = $h->fresh_account(prefix => $_[0] // 'gem'); push @KEYS, $a[1]; @a }

my $GEN = "/v1beta/models/$FLASH:generateContent";

# ---- the key, wherever a Gemini client puts it ---------------------------

for my $via (qw(header query bearer)) {
    my ($acct, $key) = account("via$via");
    my $res = gem(key => $key, via => $via);
    charged_ok("key in $via: flash 560/1120 -> 0.2465", $res, $acct,
               units => 2465, pt => 560, ct => 1120);
    upstream_ok(last_upstream(), $key, $GEN, "key in $via");
}
{
    my ($acct, $key) = account('qfirst');
    my $res = gem(key => $key, stream => 1, query => "key=$key&alt=sse");
    is $res->{status}, 200, '?key=K&alt=sse: 200';
    upstream_ok(last_upstream(), $key, "/v1beta/models/$FLASH:streamGenerateContent?alt=sse",
                'key before alt=sse');
    ($acct, $key) = account('fastq');
    $res = gem(key => $key, via => 'query', fast => 1, model => $PRO);
    charged_ok('fast 3-pro, key in the query -> 0.2000', $res, $acct,
               units => 2000, channel => 'fast', model => $PRO, pt => 1210, ct => 2000);
    upstream_ok(last_upstream(), $key, "/v1beta/models/$PRO:generateContent",
                'fast: /fast/ taken off, key taken out');
}

# ---- metered and fast charges --------------------------------------------

{
    my ($acct, $key) = account();
    charged_ok('thinking is output: pt=560 ct=1000 tt=120 -> 1120 -> 0.2465',
               gem(key => $key, mock => 'pt=560 ct=1000 tt=120'), $acct,
               units => 2465, pt => 560, ct => 1120);
    ($acct, $key) = account();
    charged_ok('3-pro 1210/2000 -> 1.7232', gem(key => $key, model => $PRO), $acct,
               units => 17232, pt => 1210, ct => 2000, model => $PRO);
    upstream_ok(last_upstream(), $key, "/v1beta/models/$PRO:generateContent",
                'model from the path');
    ($acct, $key) = account();
    my $res = gem(key => $key, fast => 1);
    charged_ok('fast flash -> 0.0700', $res, $acct, units => 700, channel => 'fast',
               pt => 560, ct => 1120);
    upstream_ok(last_upstream(), $key, $GEN, 'fast flash');
    like $res->{json}{candidates}[0]{content}{parts}[1]{inlineData}{data} // '',
        qr/^iVBORw0KGgo/, 'the image reached the client';
}

# ---- streamGenerateContent?alt=sse ---------------------------------------

# the reply's body with the one thing that differs per upstream call evened out
sub same_id { my ($b) = @_; $b =~ s/"responseId":"mock\d+"/"responseId":"ID"/g; $b }

for my $eol ('', 'eol=lf') {
    my ($acct, $key) = account('sse');
    my $res = gem(key => $key, stream => 1, mock => $eol);
    my $label = $eol ? 'stream, LF LF events' : 'stream';
    charged_ok("$label: trailers 0.2465 from the last usage", $res, $acct,
               units => 2465, pt => 560, ct => 1120, trailers => 1);
    upstream_ok(last_upstream(), $key, "/v1beta/models/$FLASH:streamGenerateContent?alt=sse",
                $label);
    like $res->{headers}{'content-type'} // '', qr{^text/event-stream}, "$label: text/event-stream";
    is $res->{headers}{'x-imgbill-charge'}, undef, "$label: no charge header (trailer only)";
    my @ev = @{ $res->{events} };
    is scalar @ev, 3, "$label: 3 events";
    is_deeply [ map { $_->{usageMetadata}{candidatesTokenCount} } @ev ], [373, 746, 1120],
        "$label: usageMetadata cumulative (a sum would be 2239)";
    is $ev[1]{candidates}[0]{content}{parts}[0]{inlineData}{mimeType}, 'image/png',
        "$label: the image event";
    # the same request straight to the mock: the relay changed nothing
    my $direct = gem(port => $h->mock_port, stream => 1, mock => $eol);
    ok length $direct->{body} > 2048, "$label: the mock's own stream read";
    ok same_id($res->{body}) eq same_id($direct->{body}),
        "$label: events byte for byte as the upstream sent them";
}
{
    my ($acct, $key) = account('ssett');
    charged_ok('stream with thinking: last usage 1000+120 -> 0.2465',
               gem(key => $key, stream => 1, mock => 'pt=560 ct=1000 tt=120'), $acct,
               units => 2465, pt => 560, ct => 1120, trailers => 1);
    ($acct, $key) = account('ssepro');
    charged_ok('3-pro stream -> 1.7232', gem(key => $key, stream => 1, model => $PRO),
               $acct, units => 17232, pt => 1210, ct => 2000, model => $PRO, trailers => 1);
    ($acct, $key) = account('ssefast');
    charged_ok('fast stream -> 0.0700', gem(key => $key, stream => 1, fast => 1), $acct,
               units => 700, channel => 'fast', pt => 560, ct => 1120, trailers => 1);
    upstream_ok(last_upstream(), $key, "/v1beta/models/$FLASH:streamGenerateContent?alt=sse",
                'fast stream');
}

# ---- refusals, in Google's shape ------------------------------------------

{
    my ($acct, $key) = account('refuse');
    refused_ok('streamGenerateContent without alt=sse', 400, 'INVALID_ARGUMENT', qr/alt=sse/,
               key => $key, stream => 1, query => '');
    refused_ok('streamGenerateContent?alt=json', 400, 'INVALID_ARGUMENT', undef,
               key => $key, stream => 1, query => 'alt=json');
    refused_ok('no key', 401, 'UNAUTHENTICATED', undef);
    push @KEYS, 'sk-nobody-at-all';
    refused_ok('unknown key in x-goog-api-key', 401, 'UNAUTHENTICATED', undef,
               key => 'sk-nobody-at-all');
    refused_ok('unknown key in ?key=', 401, 'UNAUTHENTICATED', undef,
               key => 'sk-nobody-at-all', via => 'query', stream => 1);
    refused_ok('unknown model in the path', 400, 'INVALID_ARGUMENT', undef,
               key => $key, model => 'dall-e-3');
    refused_ok('body not JSON', 400, 'INVALID_ARGUMENT', undef,
               key => $key, body => 'draw a cat');
    refused_ok('body without "contents"', 400, 'INVALID_ARGUMENT', qr/contents/,
               key => $key, body => { generationConfig => { temperature => 1 } });
    refused_ok('GET', 405, 'INVALID_ARGUMENT', undef, key => $key, method => 'GET', body => undef);

    # a reference image of $n bytes decoded (the JSON made by hand: quicker)
    my $edit = sub {
        my $b64 = encode_base64('x' x $_[0], '');
        return (body => qq({"contents":[{"role":"user","parts":[{"text":"make it blue"},)
                      . qq({"inlineData":{"mimeType":"image/png","data":"$b64"}}]}]}),
                headers => [ 'Content-Type' => 'application/json' ]);
    };
    refused_ok('inline reference image of 5 MB + 1 byte', 413, 'INVALID_ARGUMENT', undef,
               key => $key, $edit->(5 * 1024 * 1024 + 1));
    ($acct, $key) = account('exact');
    charged_ok('inline reference image of exactly 5 MB is taken',
               gem(key => $key, $edit->(5 * 1024 * 1024)), $acct,
               units => 2465, pt => 560, ct => 1120);

    $h->account('gpoor', 'sk-gem-poor', 49999);
    push @KEYS, 'sk-gem-poor';
    refused_ok('metered at 4.9999', 402, 'RESOURCE_EXHAUSTED', qr/4\.9999/, key => 'sk-gem-poor');
    refused_ok('metered stream at 4.9999', 402, 'RESOURCE_EXHAUSTED', undef,
               key => 'sk-gem-poor', stream => 1);
    $h->account('gpoorfast', 'sk-gem-poorfast', 699);
    push @KEYS, 'sk-gem-poorfast';
    refused_ok('fast at 0.0699', 402, 'RESOURCE_EXHAUSTED', undef,
               key => 'sk-gem-poorfast', fast => 1);

    refused_ok(':countTokens -> 404', 404, 'NOT_FOUND', undef, no_rid => 1,
               key => $key, path => "/v1beta/models/$FLASH:countTokens");
    refused_ok('/v1beta/foo -> 404', 404, 'NOT_FOUND', undef, no_rid => 1,
               key => $key, path => '/v1beta/foo');
    refused_ok('/fast/v1beta/models/M:countTokens -> 404', 404, 'NOT_FOUND', undef,
               no_rid => 1, path => "/fast/v1beta/models/$FLASH:countTokens?key=$key");
}

# ---- failed generations are free -----------------------------------------

{
    my ($acct, $key) = account('free');
    free_ok('kind=noimage', gem(key => $key, mock => 'kind=noimage'), $acct);
    ($acct, $key) = account('free');
    free_ok('kind=nousage, metered', gem(key => $key, mock => 'kind=nousage'), $acct);
    ($acct, $key) = account('free');
    my $res = gem(key => $key, mock => 'status=429');
    free_ok('upstream 429', $res, $acct, check => sub {
        is $res->{status}, 429, "429 passed on";
        my $e = $res->{json}{error} || {};
        is_deeply [ @$e{qw(code status message)} ],
                  [ 429, 'RESOURCE_EXHAUSTED', 'mock upstream error (status 429)' ],
            "the upstream's own Google error";
        ok exists $res->{json}{mock_seen}, "it is the mock's body";
    });
    ($acct, $key) = account('free');
    free_ok('stream, kind=noimage', gem(key => $key, stream => 1, mock => 'kind=noimage'),
            $acct, trailers => 1);
    ($acct, $key) = account('free');
    $res = gem(key => $key, stream => 1, mock => 'stream_error=1');
    free_ok('stream_error=1: an error event mid-stream', $res, $acct, trailers => 1, check => sub {
        is $res->{events}[-1]{error}{status}, 'INTERNAL', "the upstream's error event passed on";
        ok $res->{complete}, 'the stream ended properly';
    });
    ($acct, $key) = account('free');
    $res = gem(key => $key, stream => 1, mock => 'status=429');
    # not an event stream: the money in headers, as for generateContent
    free_ok('stream, upstream 429', $res, $acct, check => sub {
        is $res->{status}, 429, '429 passed on';
        is $res->{json}{error}{status}, 'RESOURCE_EXHAUSTED', "the upstream's own error";
    });
    ($acct, $key) = account('drop');
    $res = gem(key => $key, via => 'query', stream => 1, mock => 'cut=1');
    free_ok('stream cut short by the upstream before its image (cut=1)', $res, $acct,
            cut => 1, check => sub {
        ok !$res->{complete}, 'no terminating chunk: the client sees the cut';
        is $res->{trailers}{'x-imgbill-charge'}, undef, 'no charge trailer';
        ok $h->wait_holds($acct, 0), 'hold released';
        ok wait_for(sub { $h->error_log =~ /\[warn\].*the upstream ended the stream/ }),
            'warn: the upstream ended the stream';
        my $masked = 'x' x length $key;
        like $h->error_log, qr/request: "POST \S+:streamGenerateContent\?alt=sse&key=$masked /,
            'the logged request line has the key masked in place';
    });
    # half of the image event went out, then the upstream died: the image
    # reached the client, charged by the last usage the stream carried (the
    # text event's: 560 in, 373 out)
    ($acct, $key) = account('drop');
    $res = gem(key => $key, stream => 1, mock => 'drop=1');
    ok !$res->{complete}, 'drop=1: the stream cut in its image event';
    ok wait_for(sub { ($h->balance($acct) // 0) == 100000 - 12 - 817 }),
       '... charged 0.0829, its usage so far: the image reached the client';
    is_deeply $h->wait_holds($acct, 0), {}, '... no hold left';
    ($acct, $key) = account('free');
    charged_ok('fast nousage is charged its price', gem(key => $key, fast => 1,
               mock => 'kind=nousage'), $acct, units => 700, channel => 'fast');
}

# ---- what nobody may see ---------------------------------------------------

my ($elog, $alog) = ($h->error_log, $h->access_log);
is_deeply [ grep { index($elog, $_) >= 0 } @KEYS ], [], 'no raw key in error.log';
is_deeply [ grep { index($alog, $_) >= 0 } @KEYS ], [], 'no raw key in access.log';
my $up = join "\n", map { JSON::PP->new->canonical->encode($_) } $h->upstream_requests;
is_deeply [ grep { index($up, $_) >= 0 } @KEYS ], [], 'no raw key ever reached the upstream';
is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
