# The spec every API passes (t/lib/Imgbill/Spec.pm has the table of APIs):
# each scenario below runs against each API's row, through conf.d's
# locations, the mock answering as that API does.
#   - charged to the unit, whole and streamed, metered and fast;
#   - free on no image, no usage, an upstream error, a stream cut before
#     its image; a stream cut after it charged;
#   - the gates: a metered balance under 5.00, a fast one under the price;
#   - no key, a bad key: 401 in the API's shape;
#   - X-Imgbill-* spoofed by the client and by the upstream, never believed;
#   - Redis down at settlement: the image goes out, the charge waits in the
#     journal and is applied once.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for);
use Imgbill::Spec qw(apis call charged_ok free_ok refused_ok);

my $h = Imgbill::Harness->new;
my $VALGRIND = $ENV{IMGBILL_VALGRIND_DIR};
my $PRO = 'gemini-3-pro-image-preview';

sub account { $h->fresh_account(prefix => $_[0], units => $_[1] // 100000) }

for my $api (apis()) {
    my $n = $api->{name};

    # ---- charged to the unit ------------------------------------------

    my ($acct, $key) = account("$n-m");
    charged_ok($h, "$n: metered flash 560/1120 -> 0.2465",
               call($h, $api, key => $key), $acct,
               units => 2465, pt => 560, ct => 1120);

    ($acct, $key) = account("$n-ms");
    charged_ok($h, "$n: metered stream -> 0.2465 in the trailers",
               call($h, $api, key => $key, stream => 1), $acct,
               units => 2465, pt => 560, ct => 1120, trailers => 1);

    ($acct, $key) = account("$n-pro");
    charged_ok($h, "$n: metered 3-pro 1210/2000 -> 1.7232",
               call($h, $api, key => $key, model => $PRO), $acct,
               units => 17232, pt => 1210, ct => 2000, model => $PRO);

    ($acct, $key) = account("$n-f");
    charged_ok($h, "$n: fast flash -> 0.0700",
               call($h, $api, key => $key, fast => 1), $acct,
               units => 700, channel => 'fast', pt => 560, ct => 1120);

    ($acct, $key) = account("$n-fs");
    charged_ok($h, "$n: fast stream -> 0.0700 in the trailers",
               call($h, $api, key => $key, fast => 1, stream => 1), $acct,
               units => 700, channel => 'fast', pt => 560, ct => 1120,
               trailers => 1);

    # ---- free -----------------------------------------------------------

    ($acct, $key) = account("$n-noimg");
    free_ok($h, "$n: no image: free",
            call($h, $api, key => $key, mock => 'kind=noimage'), $acct);

    ($acct, $key) = account("$n-noimgs");
    free_ok($h, "$n: a stream without an image: free",
            call($h, $api, key => $key, stream => 1, mock => 'kind=noimage'),
            $acct, trailers => 1);

    ($acct, $key) = account("$n-nouse");
    my $res = call($h, $api, key => $key, mock => 'kind=nousage');
    free_ok($h, "$n: metered reply without usage: free", $res, $acct);

    ($acct, $key) = account("$n-500");
    $res = call($h, $api, key => $key, mock => 'status=500');
    is $res->{status}, 500, "$n: the upstream's 500 reaches the client";
    free_ok($h, "$n: upstream error: free", $res, $acct);

    ($acct, $key) = account("$n-cutb");
    $res = call($h, $api, key => $key, stream => 1,
                mock => "cut=$api->{cut_before}");
    ok !$res->{complete}, "$n: a stream cut before its image ends cut";
    free_ok($h, "$n: a stream cut before its image: free", $res, $acct,
            cut => 1);

    ($acct, $key) = account("$n-cuta");
    $res = call($h, $api, key => $key, stream => 1,
                mock => "cut=$api->{cut_after}");
    ok !$res->{complete}, "$n: a stream cut after its image ends cut";
    ok wait_for(sub { @{ $h->ledger($acct) } == 1 }, $VALGRIND ? 60 : 20),
        "$n: ... settled as its request is freed";
    {
        local $res->{complete} = 1;
        local $res->{trailers} = {
            'x-imgbill-charge'  => fmt_units($api->{cut_units}),
            'x-imgbill-balance' => fmt_units(100000 - $api->{cut_units}),
        };
        charged_ok($h, "$n: a stream cut after its image: charged", $res,
                   $acct, units => $api->{cut_units}, pt => $api->{cut_pt},
                   ct => $api->{cut_ct}, trailers => 1);
    }

    # ---- the gates, the key ---------------------------------------------

    ($acct, $key) = account("$n-poor", 49999);
    refused_ok($h, $api, "$n: metered under 5.00: 402", 402,
               'insufficient_balance', key => $key);

    ($acct, $key) = account("$n-fpoor", 699);
    refused_ok($h, $api, "$n: fast under its price: 402", 402,
               'insufficient_balance', key => $key, fast => 1);

    ($acct, $key) = account("$n-fok", 700);
    charged_ok($h, "$n: fast at exactly its price: 0.0700",
               call($h, $api, key => $key, fast => 1), $acct,
               units => 700, start => 700, channel => 'fast',
               pt => 560, ct => 1120);

    refused_ok($h, $api, "$n: no key: 401", 401, 'missing_api_key');
    refused_ok($h, $api, "$n: a key nobody has: 401", 401, 'invalid_api_key',
               key => 'sk-nobody-has-this');

    # ---- X-Imgbill-* is the relay's, both ways ----------------------------

    ($acct, $key) = account("$n-spoof");
    $res = call($h, $api, key => $key, mock => 'spoof=1',
                headers => [ 'X-Imgbill-Charge' => '0.0000',
                             'X-Imgbill-Account' => 'someone-else' ]);
    charged_ok($h, "$n: spoofed X-Imgbill-* believed by nobody", $res, $acct,
               units => 2465, pt => 560, ct => 1120);
    is $res->{header_count}{'x-imgbill-charge'}, 1,
        "$n: one X-Imgbill-Charge, the relay's";
    my $seen = (reverse $h->upstream_requests)[0];
    is_deeply $seen->{imgbill_headers} // [], [],
        "$n: the upstream saw none of the client's X-Imgbill-*";

    # ---- Redis down at settlement ---------------------------------------

    ($acct, $key) = account("$n-jr");
    my $s = $h->raw_send(path => $api->{path}->(), mock => 'sleep=2',
                         headers => [ $api->{key}->($key) ],
                         body => $api->{body}->());
    ok $h->wait_holds($acct, 1, 10), "$n: admitted, its hold placed";
    $h->redis_stop(keep => 1);
    $res = $h->raw_reply($s);
    is $res->{status}, 200, "$n: Redis gone at settlement: the image goes out";
    is $res->{headers}{'x-imgbill-charge'}, '0.2465',
        "$n: ... with its charge";
    $h->redis_start;
    ok wait_for(sub { @{ $h->ledger($acct) } == 1 }, $VALGRIND ? 60 : 20),
        "$n: ... applied from the journal once Redis is back";
    is $h->balance($acct), 100000 - 2465, "$n: ... once, to the unit";
    is scalar @{ $h->ledger($acct) }, 1, "$n: ... one ledger entry";
    is_deeply $h->wait_holds($acct, 0), {}, "$n: ... no hold left";
}

is $h->crashes, 0, 'no worker crashed';

done_testing;
