# Headers: X-Imgbill-* is the module's own namespace in both directions,
# the client's Authorization never reaches the upstream.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness;
use JSON::PP;

my $h = Imgbill::Harness->new;
my $CLIENT_KEY = 'sk-client-secret-4f1c9a';
$h->account('hdr', $CLIENT_KEY, 1000000);

sub one_each {
    my ($res, $charge, $balance) = @_;
    is $res->{header_count}{'x-imgbill-charge'}, 1, 'exactly one X-Imgbill-Charge';
    is $res->{header_count}{'x-imgbill-balance'}, 1, 'exactly one X-Imgbill-Balance';
    is $res->{header_count}{'x-imgbill-request-id'}, 1, 'exactly one X-Imgbill-Request-Id';
    is $res->{headers}{'x-imgbill-charge'}, $charge, "charge $charge";
    is $res->{headers}{'x-imgbill-balance'}, $balance, "balance $balance";
    like $res->{headers}{'x-imgbill-request-id'}, qr/^[0-9a-f]{32}$/, 'request id is ours';
}

# --- response side: the upstream's X-Imgbill-* never reach the client
subtest 'spoofed response headers on a charged reply' => sub {
    my $res = $h->chat(key => $CLIENT_KEY, mock => 'spoof=1');
    is $res->{status}, 200, 'status 200';
    one_each($res, '0.2465', '99.7535');
    is $h->balance('hdr'), 997535, 'charged in Redis';
};
subtest 'spoofed response headers on a free (500) reply' => sub {
    my $res = $h->chat(key => $CLIENT_KEY, mock => 'spoof=1 status=500');
    is $res->{status}, 500, 'status 500 passed through';
    one_each($res, '0.0000', '99.7535');
};
subtest 'spoofed response headers on a non-JSON reply (502)' => sub {
    my $res = $h->chat(key => $CLIENT_KEY, mock => 'spoof=1 kind=nonjson');
    is $res->{status}, 502, 'status 502';
    one_each($res, '0.0000', '99.7535');
};
subtest 'spoofed response headers, chunked, fast' => sub {
    my $res = $h->chat(key => $CLIENT_KEY, mock => 'spoof=1 chunked=1',
                       path => '/fast/v1/chat/completions');
    is $res->{status}, 200, 'status 200';
    one_each($res, '0.0700', '99.6835');
};

# --- request side: the client's X-Imgbill-* never reach the upstream
subtest 'client X-Imgbill-* request headers are dropped' => sub {
    my $res = $h->chat(key => $CLIENT_KEY, headers => {
        'X-Imgbill-Charge'     => '0.0000',
        'X-Imgbill-Account'    => 'someone-else',
        'x-imgbill-request-id' => 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
        'X-IMGBILL-BALANCE'    => '1000000.0000',
    });
    is $res->{status}, 200, 'status 200';
    is_deeply $res->{json}{mock_seen}{imgbill_headers}, [],
        'mock_seen.imgbill_headers is empty';
    my ($last) = reverse $h->upstream_requests;
    is_deeply [ grep { /^x-imgbill-/ } keys %{ $last->{headers} } ], [],
        'mock log: no x-imgbill-* header';
    one_each($res, '0.2465', '99.4370');
    isnt $res->{headers}{'x-imgbill-request-id'}, 'a' x 32,
        'client cannot choose the request id';
    is $h->balance('hdr'), 994370, 'charged normally';
};

subtest 'a header named exactly "X-Imgbill-" is dropped too' => sub {
    my $res = $h->chat(key => $CLIENT_KEY, headers => { 'X-Imgbill-' => 'empty-suffix' });
    is $res->{status}, 200, 'status 200';
    is_deeply $res->{json}{mock_seen}{imgbill_headers}, [],
        'mock_seen.imgbill_headers is empty';
    $h->redis('INCRBY', 'imgbill:{hdr}:balance', 2465);   # keep the numbers below
};

# --- Authorization and Accept-Encoding
subtest "the client's Authorization never reaches the upstream" => sub {
    my $res = $h->chat(key => $CLIENT_KEY,
                       headers => { 'Accept-Encoding' => 'gzip, br' });
    is $res->{status}, 200, 'status 200';
    is $res->{json}{mock_seen}{authorization}, undef, 'mock_seen.authorization is null';
    is $res->{json}{mock_seen}{accept_encoding}, undef,
        'mock_seen.accept_encoding is null (reply must come uncompressed)';
    my ($last) = reverse $h->upstream_requests;
    ok !exists $last->{headers}{authorization}, 'mock log: no Authorization';
    my $all = join '', map { JSON::PP->new->canonical->encode($_) } $h->upstream_requests;
    unlike $all, qr/\Q$CLIENT_KEY\E/, 'the client key appears nowhere in what the mock saw';
    is $last->{headers}{'x-mock'}, undef, 'no X-Mock on this request';
};
subtest 'fast location too' => sub {
    my $res = $h->chat(key => $CLIENT_KEY, path => '/fast/v1/chat/completions');
    is $res->{json}{mock_seen}{authorization}, undef, 'mock_seen.authorization is null';
};

# --- request ids
subtest 'request ids: unique, and the same in header, ledger, access log' => sub {
    $h->account('rid', 'sk-rid', 1000000);
    my @ids = map { $h->chat(key => 'sk-rid')->{headers}{'x-imgbill-request-id'} } 1 .. 3;
    my %u = map { $_ => 1 } @ids;
    is scalar keys %u, 3, 'three distinct ids';
    is_deeply [ map { $_->{request_id} } @{ $h->ledger('rid') } ], \@ids,
        'ledger request_id = X-Imgbill-Request-Id';
    # nginx logs after the reply is out
    my @log = $h->access_wait(sub { ($_->{account} // '') eq 'rid' }, 3);
    is_deeply [ map { $_->{request_id} } @log ], \@ids, 'access log $imgbill_request_id';
    is_deeply [ map { $_->{nginx_request_id} } @log ], \@ids, '... = nginx $request_id';
};

# --- an operator-configured upstream key is what the upstream sees
{
    my $h2 = Imgbill::Harness->new(upstream_key => 'sk-upstream-operator-77');
    $h2->account('op', $CLIENT_KEY, 1000000);
    my $res = $h2->chat(key => $CLIENT_KEY);
    is $res->{status}, 200, 'with a site upstream key: 200';
    is $res->{json}{mock_seen}{authorization}, 'Bearer sk-upstream-operator-77',
        'the upstream sees the operator key, not the client key';
    is_deeply [ $h2->crashes ], [], 'no nginx worker crashed (second harness)';
}

# --- a location that forgets to override Authorization still leaks nothing
{
    my $h3 = Imgbill::Harness->new(extra_server => '
        location = /bare/v1/chat/completions {
            imgbill metered;
            proxy_pass http://imgbill_upstream/v1/chat/completions;
        }');
    $h3->account('bare', $CLIENT_KEY, 1000000);
    my $res = $h3->chat(key => $CLIENT_KEY, path => '/bare/v1/chat/completions');
    is $res->{status}, 200, 'a location without proxy_set_header Authorization: 200';
    is $res->{headers}{'x-imgbill-charge'}, '0.2465', '... billed';
    is $res->{json}{mock_seen}{authorization}, undef,
        '... and the client key still never reaches the upstream';
    my $all = join '', map { JSON::PP->new->canonical->encode($_) } $h3->upstream_requests;
    unlike $all, qr/\Q$CLIENT_KEY\E/, '... anywhere in what the upstream saw';
    is_deeply [ $h3->crashes ], [], 'no nginx worker crashed (third harness)';
}

# --- the upstream is asked by its own name (conf.d: site: upstream host),
# as a name-routed HTTPS provider needs, on every relaying location
{
    my $h4 = Imgbill::Harness->new(conf_filter => sub {
        $_[0] =~ s/default 127\.0\.0\.1;(\s*# site: upstream host)/default api.example.test;$1/
            or die 'no site: upstream host line';
    });
    $h4->account('named', $CLIENT_KEY, 1000000);
    my $before = () = $h4->upstream_requests;
    for my $path ('/v1/chat/completions', '/fast/v1/chat/completions') {
        is $h4->chat(key => $CLIENT_KEY, path => $path)->{status}, 200, "$path: 200";
    }
    is $h4->request('POST', '/v1beta/models/gemini-2.5-flash-image:generateContent',
                    { contents => [ { parts => [ { text => 'x' } ] } ] },
                    'x-goog-api-key' => $CLIENT_KEY)->{status}, 200, 'generateContent: 200';
    my @up = ($h4->upstream_requests)[$before .. 2 + $before];
    is_deeply [ map { $_->{headers}{host} } @up ], [ ('api.example.test') x 3 ],
        'Host: the upstream host, never "imgbill_upstream"';
}

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
