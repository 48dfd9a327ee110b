# An operator's first week (issue 23), through conf.d's own server:
#   - an HTTPS upstream must prove its name: a self-signed certificate, or
#     one for another name, is refused (JSON 502, free, logged); the same
#     upstream with its CA trusted is billed
#   - GET / is the health check: 200 with the Redis in use while it
#     answers, 503 while it does not, 200 again when it is back
#   - during an outage the journal gauge counts what is owed at once;
#     error.log says when Redis is back and when the journal drained, and
#     says a refused connect once per 10 s, not once per request; an
#     admission that never reached Redis journals no release
#   - /imgbill without its slash finds the page
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for free_port error_ok);
use File::Temp qw(tempdir);
use JSON::PP ();
use Time::HiRes qw(time);

# a private CA and a certificate from it for upstream.test
my $pki = tempdir(CLEANUP => 1);
sub openssl {
    my $out = `openssl @_ 2>&1`;
    $? == 0 or BAIL_OUT("openssl @_: $out");
}
openssl("req -x509 -newkey rsa:2048 -nodes -keyout $pki/ca.key -out $pki/ca.crt"
        . " -days 2 -subj /CN=imgbill-test-ca");
openssl("req -newkey rsa:2048 -nodes -keyout $pki/up.key -out $pki/up.csr"
        . " -subj /CN=upstream.test");
{
    open my $f, '>', "$pki/san.ext" or die $!;
    print $f "subjectAltName=DNS:upstream.test\n";
}
openssl("x509 -req -in $pki/up.csr -CA $pki/ca.crt -CAkey $pki/ca.key"
        . " -CAcreateserial -out $pki/up.crt -days 2 -extfile $pki/san.ext");

# the upstream behind TLS: a server of the same nginx in front of the mock,
# on a port of its own for each location (nginx keeps a TLS session per
# address, and would resume one location's in another that trusts other
# CAs)
my %TLS = map { $_ => free_port() } qw(system trusted wrongname);
sub tls_location {
    my ($path, $port, @more) = @_;
    return join '', "    location = $path {\n",
        map({ "        $_\n" } 'imgbill metered;', @more,
            'proxy_http_version 1.1;', 'proxy_set_header Connection "";',
            'proxy_set_header Authorization "";',
            'proxy_set_header Accept-Encoding "";',
            "proxy_pass https://127.0.0.1:$port/v1/chat/completions;"),
        "    }\n";
}

my $h = Imgbill::Harness->new(
    workers => 2,
    extra_http => "server {\n"
        . join('', map { "    listen 127.0.0.1:$_ ssl;\n" } values %TLS)
        . "    ssl_certificate $pki/up.crt;\n"
        . "    ssl_certificate_key $pki/up.key;\n"
        . "    location / { proxy_pass http://imgbill_upstream; }\n"
        . "}\n",
    extra_server => join('',
        # conf.d's own verification: Debian's CAs, which never signed it
        tls_location('/tls/system/v1/chat/completions', $TLS{system},
                     'proxy_ssl_name upstream.test;'),
        tls_location('/tls/trusted/v1/chat/completions', $TLS{trusted},
                     'proxy_ssl_name upstream.test;',
                     "proxy_ssl_trusted_certificate $pki/ca.crt;"),
        tls_location('/tls/wrongname/v1/chat/completions', $TLS{wrongname},
                     'proxy_ssl_name other.test;',
                     "proxy_ssl_trusted_certificate $pki/ca.crt;")),
);

# ---- the upstream's certificate ---------------------------------------------
for my $c ([ 'a certificate no trusted CA signed', 'system',
             qr/upstream SSL certificate verify error/ ],
           [ 'a certificate for another name', 'wrongname',
             qr/upstream SSL certificate does not match "other\.test"/ ]) {
    my ($name, $loc, $log) = @$c;
    my ($a, $k) = $h->fresh_account(prefix => "tls$loc");
    my $before = $h->upstream_hits;
    my $r = $h->chat(key => $k, path => "/tls/$loc/v1/chat/completions");
    subtest "$name: refused" => sub {
        error_ok($r, 502, 'upstream_error', 'upstream_unavailable', 'a JSON 502');
        is $r->{headers}{'x-imgbill-charge'}, '0.0000', 'free';
        is $h->upstream_hits, $before, 'the mock behind it never asked';
        like $h->error_log, $log, 'error.log names the cause';
        ok $h->wait_holds($a, 0, 5), 'hold released';
        is $h->balance($a), 100000, 'balance untouched';
    };
}
{
    my ($a, $k) = $h->fresh_account(prefix => 'tlsok');
    my $r = $h->chat(key => $k, path => '/tls/trusted/v1/chat/completions');
    is $r->{status}, 200, 'its CA trusted: 200';
    is $r->{headers}{'x-imgbill-charge'}, '0.2465', '... billed 0.2465';
}
my $shipped = do { local (@ARGV, $/) = (Imgbill::Harness->root . '/conf.d/imgbill.conf'); <> };
like $shipped, qr/^\s*proxy_ssl_verify on;/m, 'conf.d verifies the upstream';

# ---- the upstream key: one file, sent as each API's upstream takes it --------
{
    my @site = $shipped =~ /^(.*#\s*site:\s*upstream key.*)$/mg;
    is scalar @site, 1, 'conf.d names the upstream key in one place';
    like $site[0] // '', qr{^include /etc/nginx/imgbill-upstream-key\.conf;}, '... an include';
    unlike $shipped, qr/proxy_set_header\s+(?:Authorization|x-goog-api-key|Api-Key)\s+"[^"\$]/i,
        '... and no location writes a key of its own';
    my $k = Imgbill::Harness->new(share_redis => $h, upstream_key => 'sk-op-1');
    my ($a, $key) = $k->fresh_account(prefix => 'upkey');
    my $r = $k->chat(key => $key);
    is $r->{json}{mock_seen}{authorization}, 'Bearer sk-op-1',
        'chat completions: the file\'s key as a Bearer token';
    $r = $k->request('POST', '/v1beta/models/gemini-2.5-flash-image:generateContent',
                     '{"contents":[{"role":"user","parts":[{"text":"a cat"}]}]}',
                     'x-goog-api-key' => $key, 'Content-Type' => 'application/json');
    is $r->{json}{mock_seen}{goog_api_key}, 'sk-op-1', 'Gemini: in x-goog-api-key';
    is $r->{json}{mock_seen}{authorization}, undef, '... and no Authorization';
    $k->teardown;
}

# ---- /imgbill without its slash ------------------------------------------------
{
    my $r = $h->request('GET', '/imgbill');
    is $r->{status}, 301, 'GET /imgbill: 301';
    like $r->{headers}{location} // '', qr{/imgbill/$}, '... to /imgbill/';
}

# ---- health, and an outage as the operator sees it ------------------------------
my $J = JSON::PP->new;
sub health {
    my $r = $h->request('GET', '/');
    return ($r->{status}, eval { $J->decode($r->{body}) } || {});
}
sub owed {
    my $m = $h->request('GET', '/imgbill/metrics')->{body} // '';
    return $m =~ /^imgbill_journal_lines_owed (\d+)$/m ? $1 : undef;
}

my ($st, $body) = health();
is $st, 200, 'GET / with Redis up: 200';
is_deeply $body, { status => 'ready', redis => $h->redis_addr },
    '... ready, and which Redis';

{
    # a charge whose settlement finds Redis gone: journaled
    my ($a, $k) = $h->fresh_account(prefix => 'outage');
    my $s = $h->raw_send(path => '/v1/chat/completions', mock => 'sleep=2',
                         key => $k, body => { model => 'gemini-2.5-flash-image',
                                              messages => [ { role => 'user',
                                                              content => 'x' } ] });
    ok $h->wait_holds($a, 1, 10), 'admitted, its hold placed';
    $h->redis_stop(keep => 1);
    my $t0 = time;
    my $r = $h->raw_reply($s);
    is $r->{headers}{'x-imgbill-charge'}, '0.2465', 'Redis gone at settlement: charged';
    ok wait_for(sub { (owed() // 0) >= 1 }, 10),
        'the journal gauge counts it during the outage';

    ($st, $body) = health();
    is $st, 503, 'GET / with Redis down: 503';
    is $body->{status}, 'unavailable', '... unavailable';

    # requests during the outage: each is a 503, the log stays short
    for (1 .. 20) {
        is $h->chat(key => $k)->{status}, 503, "during the outage: 503 ($_)"
            if $_ == 1;
        $h->chat(key => $k) if $_ > 1;
    }
    my $elapsed = time - $t0;
    my @released = grep { /^R / } split /\n/,
        do { local (@ARGV, $/) = ($h->dir . '/imgbill.journal'); <> } // '';
    is scalar @released, 0,
        'admissions never sent to Redis held nothing: no release lines journaled';
    my @refused = grep { /\[error\].*redis connect to .* failed/ } split /\n/, $h->error_log;
    cmp_ok scalar @refused, '<=', 2 * (1 + int($elapsed / 10) + 1),
        sprintf 'connect failures logged at most once per worker per 10 s (%d in %.1f s)',
                scalar @refused, $elapsed;

    $h->redis_start;
    ok wait_for(sub { (health())[0] == 200 }, 20), 'GET / is 200 again when Redis is back';
    ok wait_for(sub { @{ $h->ledger($a) } == 1 }, 20), 'the journaled charge applied';
    ok wait_for(sub { defined owed() && owed() == 0 }, 20), '... the gauge back to 0';
    ok wait_for(sub { $h->error_log =~ /\[notice\].*redis "[^"]+" is back, \d+ ms after it was lost/ }, 10),
        'error.log: Redis is back, after how long';
    ok wait_for(sub { $h->error_log =~ /\[notice\].*the journal is drained: \d+ line\(s\) applied/ }, 10),
        'error.log: the journal drained, how many';
}

is $h->crashes, 0, 'no worker crashed';

done_testing;
