package Imgbill::Spec;
# The spec every API the relay speaks must pass: a table of the APIs, as a
# client speaks each (where its key goes, its paths, its bodies, its error
# shape), and the scenarios t/21-spec.t runs against every row.  A new API
# gets the whole spec by adding a row here (README.md, "Adding an API").
#
#   my $api = Imgbill::Spec::api('gemini');
#   my $res = Imgbill::Spec::call($h, $api, key => $k, stream => 1);
#   Imgbill::Spec::charged_ok($h, $name, $res, $acct, units => 2465, ...);
#
# call() returns the reply as Harness::raw_reply does, its body de-chunked
# (body, trailers, complete) and a stream's events decoded (events).
use strict;
use warnings;
use Exporter 'import';
use JSON::PP;
use Test::More;
use Imgbill::Harness qw(dechunk sse_events fmt_units error_ok gerror_ok);

our @EXPORT_OK = qw(api apis call decoded charged_ok free_ok refused_ok);

my $FLASH = 'gemini-2.5-flash-image';

# Each row: how a client of the API asks (path, key, body), what its
# errors look like (error: status => [type, code] of OpenAI's shape, or
# Google's status), and what the seed's reply costs where the API's
# stream conventions make it differ (a stream cut after its image).
my @APIS = (
    {
        name  => 'openai',
        path  => sub {
            my (%o) = @_;
            return ($o{fast} ? '/fast' : '') . '/v1/chat/completions';
        },
        key   => sub { (Authorization => "Bearer $_[0]") },
        body  => sub {
            my (%o) = @_;
            return {
                model    => $o{model} // $FLASH,
                messages => [ { role => 'user', content => 'draw a cat' } ],
                ($o{stream} ? (stream => JSON::PP::true) : ()),
            };
        },
        error_ok => sub {
            my ($res, $status, $name) = @_;
            my %shape = (400 => 'invalid_request_error',
                         401 => 'invalid_request_error',
                         402 => 'insufficient_quota',
                         502 => 'upstream_error', 503 => 'server_error');
            my $code = ref $res->{json} eq 'HASH' && ref $res->{json}{error} eq 'HASH'
                     ? $res->{json}{error}{code} // '' : '';
            error_ok($res, $status, $shape{$status}, $code, $name);
        },
        # a stream's events: the role, the text, the image, the finish,
        # the usage the relay asked for; cut after the image, the usage
        # never came: imgbill_usage_fallback max_output, 4096 tokens out
        cut_before => 2, cut_after => 3,
        cut_units  => 8970, cut_pt => 0, cut_ct => 4096,
    },
    {
        name  => 'gemini',
        path  => sub {
            my (%o) = @_;
            return ($o{fast} ? '/fast' : '') . '/v1beta/models/'
                 . ($o{model} // $FLASH)
                 . ($o{stream} ? ':streamGenerateContent?alt=sse'
                               : ':generateContent');
        },
        key   => sub { ('x-goog-api-key' => $_[0]) },
        body  => sub {
            return { contents => [ { role => 'user',
                                     parts => [ { text => 'draw a cat' } ] } ] };
        },
        error_ok => sub {
            my ($res, $status, $name) = @_;
            my %google = (400 => 'INVALID_ARGUMENT', 401 => 'UNAUTHENTICATED',
                          402 => 'RESOURCE_EXHAUSTED', 502 => 'UNAVAILABLE',
                          503 => 'UNAVAILABLE');
            gerror_ok($res, $status, $google{$status}, $name);
        },
        # a stream's events: the text, the image, the finish, each with
        # the usage so far; cut after the image, the usage is the image
        # event's: 560 in, 746 out -> 0.0012 + 0.1634
        cut_before => 1, cut_after => 2,
        cut_units  => 1646, cut_pt => 560, cut_ct => 746,
    },
);

sub apis { @APIS }

sub api {
    my ($name) = @_;
    my ($row) = grep { $_->{name} eq $name } @APIS;
    $row or die "no API $name in the spec's table";
    return $row;
}

# call($h, $api, %o): key => raw key (undef: none), model, fast => 1,
# stream => 1, mock => X-Mock, headers => [...], body (replaces the API's),
# and what Harness::raw_http takes beside (close_after, upto)
sub call {
    my ($h, $api, %o) = @_;
    my @hdr = @{ delete $o{headers} || [] };
    push @hdr, $api->{key}->($o{key}) if defined $o{key};
    my %raw = (path => $api->{path}->(%o), headers => \@hdr,
               body => exists $o{body} ? $o{body} : $api->{body}->(%o),
               mock => $o{mock});
    $raw{$_} = $o{$_} for grep { exists $o{$_} } qw(close_after upto);
    my $res = decoded($h->raw_http(%raw));
    # the API spoken, as the ledger records it
    $res->{api} = $api->{name} if $res;
    return $res;
}

# decoded($res): a raw reply's body de-chunked (body, trailers, complete)
# and a stream's events decoded (events)
sub decoded {
    my ($res) = @_;
    return $res unless $res;
    @$res{qw(trailers complete)} = ({}, 1);
    if (($res->{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        @$res{qw(body trailers complete)} = dechunk($res->{body});
        $res->{json} = eval { decode_json($res->{body}) };
    }
    $res->{events} = [ map { scalar eval { decode_json($_) } } sse_events($res->{body}) ]
        if ($res->{headers}{'content-type'} // '') =~ m{^text/event-stream};
    return $res;
}

# charged_ok($h, $name, $res, $acct, %w): the reply went out whole with its
# charge (in trailers for a stream: trailers => 1), Redis has the money
# and one ledger entry saying so, no hold is left.  units, start (default
# 100000), channel (metered), model, pt, ct, images (1)
sub charged_ok {
    my ($h, $name, $res, $acct, %w) = @_;
    my $start = $w{start} // 100000;
    my $after = $start - $w{units};
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is $res->{status}, 200, 'status 200' or diag substr $res->{body} // '', 0, 300;
        my $money = $w{trailers} ? $res->{trailers} : $res->{headers};
        my $where = $w{trailers} ? 'trailer' : 'header';
        is $money->{'x-imgbill-charge'}, fmt_units($w{units}),
            "$where X-Imgbill-Charge " . fmt_units($w{units});
        is $money->{'x-imgbill-balance'}, fmt_units($after), "$where X-Imgbill-Balance";
        my $rid = $res->{headers}{'x-imgbill-request-id'} // '';
        like $rid, qr/^[0-9a-f]{32}$/, 'X-Imgbill-Request-Id';
        ok $res->{complete}, 'the reply ended properly';
        is_deeply $h->wait_holds($acct, 0), {}, 'no hold left';
        is $h->balance($acct), $after, "Redis balance $after units";
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        my %e = %{ $l->[0] || {} };
        delete @e{qw(_id ts)};
        is_deeply \%e, { type => 'charge', request_id => $rid,
                         channel => $w{channel} // 'metered',
                         model => $w{model} // $FLASH, charge => $w{units},
                         balance_after => $after,
                         prompt_tokens => $w{pt}, completion_tokens => $w{ct},
                         images => $w{images} // 1, api => $res->{api},
                         key => $h->key_id($acct) },
            'the ledger entry';
    };
}

# free_ok($h, $name, $res, $acct, %o): a generation that cost nothing:
# X-Imgbill-Charge 0.0000 (in trailers: trailers => 1; none for a reply
# cut short: cut => 1), the hold released, Redis otherwise untouched
sub free_ok {
    my ($h, $name, $res, $acct, %o) = @_;
    my $start = $o{start} // 100000;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        unless ($o{cut}) {
            my $money = $o{trailers} ? $res->{trailers} : $res->{headers};
            is $money->{'x-imgbill-charge'}, '0.0000', 'X-Imgbill-Charge 0.0000';
        }
        is_deeply $h->wait_holds($acct, 0), {}, 'hold released';
        is $h->balance($acct), $start, 'Redis balance unchanged';
        is scalar @{ $h->ledger($acct) }, 0, 'no ledger entry';
    };
}

# refused_ok($h, $api, $name, $status, $code, %call): a request the relay
# refuses in the API's error shape, with the code given (OpenAI's shape
# names it; Google's does not), before the upstream and Redis
sub refused_ok {
    my ($h, $api, $name, $status, $code, %o) = @_;
    my ($before, $hits) = ($h->snapshot, $h->upstream_hits);
    my $res = call($h, $api, %o);
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        $api->{error_ok}->($res, $status, "$status in $api->{name}'s shape");
        is $res->{json}{error}{code}, $code, "code $code"
            if $api->{name} eq 'openai';
        like $res->{headers}{'x-imgbill-request-id'} // '', qr/^[0-9a-f]{32}$/,
            'X-Imgbill-Request-Id';
        is $h->upstream_hits, $hits, 'upstream not reached';
        is $h->snapshot, $before, 'Redis unchanged';
    };
    return $res;
}

1;
