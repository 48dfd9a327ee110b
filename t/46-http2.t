# HTTP/2 clients: conf.d's server with two more listens that speak HTTP/2,
# cleartext (prior knowledge) and over TLS (ALPN h2, where nginx hands its
# frames to OpenSSL), and Node's own http2 client (t/sdk/h2.mjs) running
# its calls at once on one connection; everything below, over each:
#   - a stream: the request id in the header, the charge and balance as
#     HTTP/2 trailers (never headers), the events whole; a whole reply:
#     the charge in its header;
#   - a 16 MB image streamed to a client that stops reading for a second
#     after its first megabyte (HTTP/2 flow control holds the relay back,
#     with an image's bytes gathered for one write a turn): whole, charged
#     once;
#   - eight streams at once on one connection, each charged once, the
#     trailers naming the ledger's entries;
#   - as a key holder who wants images free would: a client that resets its
#     stream once the image has reached it, or drops the connection, pays
#     as if it had stayed; one that resets before any image pays nothing.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use File::Temp qw(tempdir);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(free_port fmt_units wait_for);

my $sdk = Imgbill::Harness::sdk_dir();
if (!$sdk) {
    plan skip_all => $@ if $@ =~ /not installed/;
    BAIL_OUT($@);
}

# a self-signed certificate for the TLS listen; the client trusts any
my $pki = tempdir(CLEANUP => 1);
my $ssl = `openssl req -x509 -newkey rsa:2048 -nodes -keyout $pki/h2.key -out $pki/h2.crt -days 2 -subj /CN=127.0.0.1 2>&1`;
$? == 0 or BAIL_OUT("openssl: $ssl");

my ($p2, $p3) = (free_port(), free_port());
my $h = Imgbill::Harness->new(extra_server => join "\n",
    "listen 127.0.0.1:$p2 http2;",
    "listen 127.0.0.1:$p3 ssl http2;",
    "ssl_certificate $pki/h2.crt;",
    "ssl_certificate_key $pki/h2.key;");
my $BASE;                            # the listen the calls go to
my $FLASH = 'gemini-2.5-flash-image';
my $TRUE = JSON::PP::true;
my $PRICE = 2465;                    # flash, metered: 560 in, 1120 out
my $URL_LEN = length('data:image/png;base64,') + 2048;
my $n = 0;

sub body {
    my (%x) = @_;
    return { model => $FLASH, messages => [ { role => 'user', content => 'a fox' } ],
             %x };
}

# h2(call, ...) -> name => what that client saw; all on one connection
sub h2 {
    my @calls = map { { path => '/v1/chat/completions', how => 'read', %$_ } } @_;
    my $file = $h->dir . '/h2-calls-' . ++$n . '.json';
    open my $f, '>', $file or die "$file: $!";
    print $f encode_json(\@calls);
    close $f;
    my $out = `node $sdk/h2.mjs $BASE $file 2>&1`;
    is $?, 0, 'node h2.mjs ran' or diag $out;
    my $r = eval { decode_json($out) };
    ok ref $r eq 'HASH', 'it printed one JSON object' or diag $out;
    return $r || {};
}

# the account (of $START) charged exactly $units, as one entry per request
# id given
our $START = 100000;
sub charged_ok {
    my ($acct, $units, @rids) = @_;
    my $l = $h->ledger($acct);
    is scalar @$l, scalar @rids, scalar(@rids) . ' ledger entries';
    is_deeply [ sort map { $_->{request_id} } @$l ], [ sort @rids ],
        '... for the request ids the clients were given';
    is $h->balance($acct), $START - $units, 'balance down ' . fmt_units($units);
    is_deeply $h->wait_holds($acct, 0, 10), {}, 'no hold left';
}

sub calls {
    # ---- a stream and a whole reply --------------------------------------------

    {
        my ($as, $ks) = $h->fresh_account(prefix => 'h2s', units => 100000);
        my ($aw, $kw) = $h->fresh_account(prefix => 'h2w', units => 100000);
        my $r = h2({ name => 'stream', key => $ks, body => body(stream => $TRUE) },
                   { name => 'whole', key => $kw, body => body() });

        my $s = $r->{stream} || {};
        is $s->{status}, 200, 'stream: 200' or diag explain $s;
        like $s->{headers}{'content-type'} // '', qr{^text/event-stream}, 'stream: event-stream';
        like $s->{headers}{'x-imgbill-request-id'} // '', qr/^[0-9a-f]{32}$/,
            'stream: the request id in the header';
        ok !exists $s->{headers}{'x-imgbill-charge'}, 'stream: no charge header';
        is $s->{trailers}{'x-imgbill-charge'}, fmt_units($PRICE), 'stream: trailer X-Imgbill-Charge';
        is $s->{trailers}{'x-imgbill-balance'}, fmt_units(100000 - $PRICE),
            'stream: trailer X-Imgbill-Balance';
        ok $s->{done}, 'stream: ends with data: [DONE]';
        is $s->{image_len}, $URL_LEN, 'stream: the image whole';
        charged_ok($as, $PRICE, $s->{headers}{'x-imgbill-request-id'} // 'none');

        my $w = $r->{whole} || {};
        is $w->{status}, 200, 'whole: 200' or diag explain $w;
        is $w->{headers}{'x-imgbill-charge'}, fmt_units($PRICE), 'whole: X-Imgbill-Charge';
        is $w->{headers}{'x-imgbill-balance'}, fmt_units(100000 - $PRICE),
            'whole: X-Imgbill-Balance';
        is_deeply $w->{trailers}, {}, 'whole: no trailers';
        is $w->{image_len}, $URL_LEN, 'whole: the image whole';
        charged_ok($aw, $PRICE, $w->{headers}{'x-imgbill-request-id'} // 'none');
    }

    # ---- 16 MB to a client that stops reading ----------------------------------

    {
        my ($a, $k) = $h->fresh_account(prefix => 'h2big', units => 100000);
        my $r = h2({ name => 'big', key => $k, body => body(stream => $TRUE),
                     mock => 'size=16000000', how => 'slow', pause_ms => 1000 })->{big} || {};
        is $r->{status}, 200, '16 MB: 200' or diag explain $r;
        is $r->{image_len}, length('data:image/png;base64,') + 16000000,
            '16 MB: the image whole after the pause';
        ok $r->{done}, '16 MB: the stream ends with [DONE]';
        is $r->{trailers}{'x-imgbill-charge'}, fmt_units($PRICE), '16 MB: charged in the trailer';
        charged_ok($a, $PRICE, $r->{headers}{'x-imgbill-request-id'} // 'none');
    }

    # ---- eight streams at once on one connection -------------------------------

    {
        # 100.0000: eight holds at once fit, with the 5.0000 the gate asks
        local $START = 1000000;
        my ($a, $k) = $h->fresh_account(prefix => 'h2many', units => $START);
        my @calls = map { { name => "s$_", key => $k, body => body(stream => $TRUE),
                            mock => 'size=300000' } } 1 .. 8;
        my $r = h2(@calls);
        my @ok = grep { ($_->{status} // 0) == 200 && $_->{done}
                        && ($_->{image_len} // 0) == length('data:image/png;base64,') + 300000 }
                 map { $r->{"s$_"} || {} } 1 .. 8;
        is scalar @ok, 8, 'eight streams: each whole';
        my @charges = sort map { $_->{trailers}{'x-imgbill-charge'} // '' } @ok;
        is_deeply \@charges, [ (fmt_units($PRICE)) x 8 ], 'eight streams: 0.2465 each in its trailer';
        my %bal = map { ($_->{trailers}{'x-imgbill-balance'} // '') => 1 } @ok;
        is scalar keys %bal, 8, 'eight streams: eight balances, one after each charge';
        charged_ok($a, 8 * $PRICE, map { $_->{headers}{'x-imgbill-request-id'} // 'none' } @ok);
    }

    # ---- leaving: reset after the image, dropped, reset before it --------------
    #
    # gap: the upstream pauses between events, so the client has the image and
    # leaves well before the stream's end (its usage), and one that leaves at
    # the first event leaves before the image was read (a second apart, as
    # t/26-delivered.t has them under valgrind)

    {
        my $GAP = 'gap=1';
        my %acct;
        $acct{$_} = [ $h->fresh_account(prefix => "h2$_", units => 100000) ]
            for qw(cancel drop early);
        my $r = h2(map { { name => $_, key => $acct{$_}[1], body => body(stream => $TRUE),
                           mock => $GAP, how => $_ } } qw(cancel early));
        my $d = h2({ name => 'drop', key => $acct{drop}[1], body => body(stream => $TRUE),
                     mock => $GAP, how => 'drop' });
        $r->{drop} = $d->{drop};

        for my $how (qw(cancel drop)) {
            my $c = $r->{$how} || {};
            my $acct = $acct{$how}[0];
            subtest "$how after the image: charged as if the client stayed" => sub {
                ok $c->{reset}, 'the client left' or diag explain $c;
                is $c->{image_len}, $URL_LEN, '... with the image whole';
                ok !$c->{done}, '... before the end of the stream';
                ok wait_for(sub { @{ $h->ledger($acct) } >= 1 }, 15),
                    'the relay read the upstream to its end and settled';
                charged_ok($acct, $PRICE, $c->{headers}{'x-imgbill-request-id'} // 'none');
            };
        }

        my $e = $r->{early} || {};
        my $acct = $acct{early}[0];
        subtest 'reset before any image: free' => sub {
            ok $e->{reset}, 'the client left' or diag explain $e;
            is $e->{image_len}, -1, '... before any image';
            my ($log) = $h->access_wait(sub { ($_->{account} // '') eq $acct }, 1, 15);
            ok $log, 'the request is logged';
            is $log && $log->{charge}, '0.0000', '... charge 0.0000';
            is_deeply $h->wait_holds($acct, 0, 10), {}, 'its hold given back';
            is $h->balance($acct), 100000, 'balance untouched';
            is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
        };
    }
}

for ([ 'h2c', "http://127.0.0.1:$p2" ], [ 'TLS', "https://127.0.0.1:$p3" ]) {
    ($BASE, my $name) = ($_->[1], $_->[0]);
    subtest "HTTP/2, $name" => \&calls;
}

is_deeply [ $h->crashes ], [], 'no worker crashed';
done_testing;
