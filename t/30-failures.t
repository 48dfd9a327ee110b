# Failed generations are free: no charge, no ledger entry, hold released,
# and the client sees the upstream's answer (or the module's 502 / nginx's 504).
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok priced_location free_port);
use Time::HiRes qw(time);

# an upstream nobody listens on
my $DEAD = free_port();

my $h = Imgbill::Harness->new(extra_server => join '',
    "    location = /dead/v1/chat/completions {\n"
    . "        imgbill metered;\n"
    . "        proxy_pass http://127.0.0.1:$DEAD;\n"
    . "    }\n",
    priced_location('/short/v1/chat/completions',
                    'imgbill metered;', 'proxy_read_timeout 1s;'),
    priced_location('/small/v1/chat/completions',
                    'imgbill metered;', 'imgbill_body_limit 1k;'),
    priced_location('/smallfast/v1/chat/completions',
                    'imgbill fast;', 'imgbill_body_limit 1k;'));

my $FAST = '/fast/v1/chat/completions';

# free_ok(name, mock => ..., path => ..., status => expected, check => sub)
sub free_ok {
    my ($name, %o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'fail', units => 100000);
    my $hits = $h->upstream_hits;
    my $res = $h->chat(key => $key, path => $o{path}, mock => $o{mock},
                       model => $o{model});
    subtest $name => sub {
        is $res->{status}, $o{status}, "status $o{status}"
            or diag substr($res->{body} // '', 0, 300) if defined $o{status};
        is $h->upstream_hits, $hits + 1, 'upstream reached once';
        is $res->{headers}{'x-imgbill-charge'}, '0.0000', 'X-Imgbill-Charge: 0.0000';
        # (a cut reply is answered before its hold is released: the
        # balance is not known yet)
        is $res->{headers}{'x-imgbill-balance'}, '10.0000', 'X-Imgbill-Balance: 10.0000'
            unless $o{cut};
        is $res->{header_count}{'x-imgbill-charge'}, 1, 'exactly one charge header';
        like $res->{headers}{'x-imgbill-request-id'} // '', qr/^[0-9a-f]{32}$/,
            'request id header';
        # a reply cut short ends the request after the client saw its
        # end: the release in the pool cleanup may still be on its way
        $h->wait_holds($acct, 0, 5) if $o{cut};
        is $h->balance($acct), 100000, 'Redis balance unchanged';
        is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
        is_deeply $h->holds($acct), {}, 'hold released';
        $o{check}->($res) if $o{check};
    };
    return $res;
}

sub passthrough {
    my ($code) = @_;
    my ($st) = $code =~ /(\d+)/;
    my $type = $st == 429 ? 'rate_limit_exceeded'
             : $st >= 500 ? 'server_error' : 'invalid_request_error';
    # what scripts/mock-upstream sends for status=N, byte for byte
    my $exact = qq({"error":{"code":"$code","message":"mock upstream error (status $st)",)
              . qq("param":null,"type":"$type"},"mock_seen":{"accept_encoding":null,)
              . qq("authorization":null,"imgbill_headers":[]}}\n);
    return sub {
        is $_[0]{body}, $exact, 'body passed through byte for byte';
        my $j = $_[0]{json};
        is ref $j, 'HASH', 'upstream JSON relayed';
        is $j->{error}{code}, $code, "upstream's error code $code relayed";
        ok exists $j->{mock_seen}, "it is the mock's body, unchanged";
        like $_[0]{headers}{'content-type'} // '', qr{^application/json}, 'content type';
    };
}

free_ok('upstream 500 is passed through, free', mock => 'status=500',
        status => 500, check => passthrough('mock_500'));
free_ok('upstream 429 is passed through, free', mock => 'status=429',
        status => 429, check => passthrough('mock_429'));
free_ok('upstream 400 is passed through, free', mock => 'status=400',
        status => 400, check => passthrough('mock_400'));
free_ok('upstream 503 with an image body is still free',
        mock => 'status=503 kind=ok', status => 503);
free_ok('upstream 500 non-JSON -> 502 in the API\'s shape, free',
        mock => 'status=500 kind=nonjson', status => 502,
        check => sub {
            error_ok($_[0], 502, 'upstream_error', 'bad_upstream_response', 'error body');
            unlike $_[0]{body}, qr/not json at all/, 'the HTML page not relayed';
            like $h->error_log, qr/upstream 500 reply of \d+ bytes is not a JSON object/,
                'error.log says why';
        });
free_ok('upstream 429 non-JSON keeps its 429, in JSON, free',
        mock => 'status=429 kind=nonjson', status => 429,
        check => sub {
            error_ok($_[0], 429, 'upstream_error', 'bad_upstream_response', 'error body');
        });
free_ok('upstream 401: the relay\'s own key refused -> 502, free',
        mock => 'status=401', status => 502,
        check => sub {
            error_ok($_[0], 502, 'upstream_error', 'upstream_auth_failed', 'error body');
            like $h->error_log, qr/\[error\].*the upstream refused the relay's own key \(401\)/,
                'error.log says so at error';
        });
free_ok('upstream 403 -> 502 upstream_auth_failed, free', mock => 'status=403',
        status => 502, check => sub {
            error_ok($_[0], 502, 'upstream_error', 'upstream_auth_failed', 'error body');
        });
free_ok('upstream 200 non-JSON -> 502 bad_upstream_response, free',
        mock => 'kind=nonjson', status => 502, check => sub {
            error_ok($_[0], 502, 'upstream_error', 'bad_upstream_response', 'error body');
            unlike $_[0]{body}, qr/not json at all/, 'upstream body not relayed';
        });
free_ok('2xx without an image is free (reply relayed)', mock => 'kind=noimage',
        status => 200, check => sub {
            is $_[0]{json}{usage}{prompt_tokens}, 560, 'body relayed';
        });
free_ok('2xx error JSON is free', mock => 'kind=error', status => 200);
free_ok('metered 2xx with image but no usage is free', mock => 'kind=nousage',
        status => 200, check => sub {
            ok $_[0]{json}{choices}[0]{message}{images}, 'image relayed';
        });
free_ok('metered usage with negative tokens is not valid usage -> free',
        mock => 'pt=-5 ct=-7', status => 200);
free_ok('fast: upstream 500 is free', path => $FAST, mock => 'status=500',
        status => 500, check => passthrough('mock_500'));
free_ok('fast: non-JSON -> 502, free', path => $FAST, mock => 'kind=nonjson',
        status => 502, check => sub {
            error_ok($_[0], 502, 'upstream_error', 'bad_upstream_response', 'error body');
        });
free_ok('fast: no image is free', path => $FAST, mock => 'kind=noimage',
        status => 200);

{
    my ($acct, $key) = $h->fresh_account(prefix => 'dead', units => 100000);
    my $res = $h->chat(key => $key, path => '/dead/v1/chat/completions');
    subtest 'an upstream nobody listens on: 502 in JSON, free' => sub {
        error_ok($res, 502, 'upstream_error', 'upstream_unavailable', 'error body');
        unlike $res->{body}, qr/<html>/i, "not nginx's HTML page";
        is $res->{headers}{'x-imgbill-charge'}, '0.0000', 'X-Imgbill-Charge: 0.0000';
        ok $h->wait_holds($acct, 0, 5), 'hold released';
        is $h->balance($acct), 100000, 'Redis balance unchanged';
        like $h->error_log, qr/connect\(\) failed .* while connecting to upstream/,
            'error.log has the cause';
    };
}

my $t0 = time;
free_ok('upstream timeout -> 504 in JSON, free', path => '/short/v1/chat/completions',
        mock => 'sleep=3', status => 504, check => sub {
            error_ok($_[0], 504, 'upstream_error', 'upstream_unavailable', 'error body');
            like $h->error_log, qr/upstream timed out/, 'error.log has the cause';
        });
cmp_ok time - $t0, '<', 10, 'timeout answered in bounded time';

# a reply the upstream cut short: nothing of it went out, so the client
# gets a JSON 502 in its place, free
for my $chunked (0, 1) {
    my $how = $chunked ? ' (chunked)' : '';
    free_ok("upstream closes mid-body$how: JSON 502, free",
            mock => 'drop=1 size=20000' . ($chunked ? ' chunked=1' : ''),
            status => 502, cut => 1, check => sub {
                error_ok($_[0], 502, 'upstream_error',
                         'upstream_response_incomplete', 'error body');
                unlike $_[0]{body}, qr/"choices"/, 'none of the cut reply';
                like $h->error_log,
                     qr/\[error\].*the upstream's 200 reply ended after \d+ bytes, before its end; answered 502/,
                     'error.log says so at error';
            });
}

free_ok('reply larger than imgbill_body_limit -> 502 upstream_response_too_large',
        path => '/small/v1/chat/completions', mock => 'size=2048', status => 502,
        check => sub {
            error_ok($_[0], 502, 'upstream_error', 'upstream_response_too_large',
                     'error body');
        });
free_ok('chunked reply larger than imgbill_body_limit -> 502, free',
        path => '/small/v1/chat/completions', mock => 'size=2048 chunked=1',
        status => 502, check => sub {
            error_ok($_[0], 502, 'upstream_error', 'upstream_response_too_large',
                     'error body');
        });
free_ok('fast: reply larger than imgbill_body_limit -> 502, free',
        path => '/smallfast/v1/chat/completions', mock => 'size=4096',
        status => 502, check => sub {
            error_ok($_[0], 502, 'upstream_error', 'upstream_response_too_large',
                     'error body');
        });

# the same small-limit location still charges replies that fit
{
    $h->account('fits', 'sk-fits', 100000);
    my $res = $h->chat(key => 'sk-fits', path => '/small/v1/chat/completions',
                       mock => 'size=16');
    is $res->{status}, 200, 'small reply under imgbill_body_limit 1k: 200';
    cmp_ok length $res->{body}, '<', 1024, '... it is under 1k';
    is $res->{headers}{'x-imgbill-charge'}, '0.2465', '... and charged';
    is $h->balance('fits'), 97535, '... in Redis';
}

# after all those failures, nothing is held anywhere
my @held = grep { /:holds$/ }
           @{ $h->redis('KEYS', 'imgbill:*') };
is_deeply \@held, [], 'no holds hash left in Redis';

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
