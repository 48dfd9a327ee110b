# Inherited configuration bills by each location's own rules.  Locations
# share their parent's price arrays; a location's imgbill_min_charge,
# imgbill_min_balance or hold= must never leak into another location that
# shares them (it did: a fast location with imgbill_min_charge 0.50 was
# charged 0.0700, the hold another location's merge had written).
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(free_port);

my $port2 = free_port();

my $proxy = <<'EOC';
        proxy_pass http://imgbill_upstream/v1/chat/completions;
        proxy_set_header Accept-Encoding "";
EOC

# in the shipped server, ahead of its own locations (so merged first)
my $extra_server = <<"EOC";
    location = /fast-min/v1/chat/completions {
        imgbill fast;
        imgbill_min_charge 0.50;
$proxy    }
    location = /metered-min/v1/chat/completions {
        imgbill metered;
        imgbill_min_charge 6.00;
$proxy    }
    location = /metered-hold/v1/chat/completions {
        imgbill metered;
        imgbill_metered_price gemini-2.5-flash-image 2.2 219 hold=0.30;
$proxy    }
EOC

# a second server: overrides at server level, and a location overriding it
my $extra_http = <<"EOC";
server {
    listen 127.0.0.1:$port2;
    client_max_body_size 32m;
    client_body_buffer_size 32m;
    imgbill_min_charge 0.50;
    imgbill_min_balance 1.00;
    imgbill_metered_price gemini-2.5-flash-image 2.2 219 hold=0.40;

    location = /fast/v1/chat/completions {
        imgbill fast;
$proxy    }
    location = /fast-cheap/v1/chat/completions {
        imgbill fast;
        imgbill_min_charge 0.01;
$proxy    }
    location = /v1/chat/completions {
        imgbill metered;
        imgbill_min_charge 0.01;
$proxy    }
}
EOC

my $h = Imgbill::Harness->new(
    extra_server => $extra_server,
    extra_http   => $extra_http,
    # a model with a configured hold, listed at http level beside the seed's
    conf_filter  => sub {
        $_[0] =~ s{^(imgbill_metered_price gemini-3-pro-image-preview[^\n]*\n)}
                  {$1imgbill_metered_price gemini-held 2.2 219 hold=1.00;\n}m
            or die 'no 3-pro price line';
    },
);

my $n = 0;

# call($port, $path, $balance_units, %o) -> [status, charge, balance after,
# error code]; each call on a fresh account
sub call {
    my ($port, $path, $units, %o) = @_;
    my $acct = 'inh' . ++$n;
    my $key = $h->account($acct, "sk-$acct", $units);
    my $res = HTTP::Tiny->new(timeout => 30)->post(
        "http://127.0.0.1:$port$path", {
            headers => {
                'Content-Type'  => 'application/json',
                Authorization   => "Bearer $key",
                ($o{mock} ? ('X-Mock' => $o{mock}) : ()),
            },
            content => encode_json({
                model    => $o{model} // 'gemini-2.5-flash-image',
                messages => [ { role => 'user', content => 'draw a cat' } ],
            }),
        });
    my $json = eval { decode_json($res->{content}) } || {};
    return [$res->{status}, $res->{headers}{'x-imgbill-charge'} // '-',
            $h->balance($acct), $json->{error}{code} // '-'];
}

my $p1 = $h->port;

# --- location level
is_deeply call($p1, '/fast/v1/chat/completions', 100000),
          [200, '0.0700', 99300, '-'], 'shipped fast location: 0.0700';
is_deeply call($p1, '/fast-min/v1/chat/completions', 100000),
          [200, '0.5000', 95000, '-'],
          'fast location with imgbill_min_charge 0.50: 0.5000';
is_deeply call($p1, '/metered-min/v1/chat/completions', 100000),
          [200, '6.0000', 40000, '-'],
          'metered location with imgbill_min_charge 6.00: 6.0000';
is_deeply call($p1, '/metered-min/v1/chat/completions', 100000,
               model => 'gemini-held'),
          [200, '6.0000', 40000, '-'],
          'its minimum charge over an inherited hold=1.00: 6.0000';

# the hold=1.00 the http level set stays 1.00 where min charge is 0.01:
# the gate is max(5.00, 1.00), so 5.50 is admitted (it was refused with
# "required 6.0000" once the location above had raised the shared hold)
is_deeply call($p1, '/v1/chat/completions', 55000, model => 'gemini-held'),
          [200, '0.2192', 55000 - 2192, '-'],
          'shipped metered location keeps hold=1.00: 5.50 admitted, 0.2192';
is_deeply call($p1, '/v1/chat/completions', 55000, model => 'gemini-held',
               mock => 'pt=100 ct=50000'),
          [200, '1.0000', 45000, '-'],
          'a reply past hold=1.00 is charged 1.0000, not another location\'s';

# a location's own price list with hold=
is_deeply call($p1, '/metered-hold/v1/chat/completions', 100000),
          [200, '0.2465', 97535, '-'], 'location hold=0.30: 0.2465 charged';
is_deeply call($p1, '/metered-hold/v1/chat/completions', 100000,
               mock => 'pt=1 ct=3000'),
          [200, '0.3000', 97000, '-'],
          'location hold=0.30: a larger reply is charged the hold';
is_deeply call($p1, '/v1/chat/completions', 100000, mock => 'pt=1 ct=3000'),
          [200, '0.6570', 93430, '-'],
          'the shipped location does not see that hold';

# --- server level
is_deeply call($port2, '/fast/v1/chat/completions', 100000),
          [200, '0.5000', 95000, '-'],
          'server imgbill_min_charge 0.50 inherited: 0.5000';
is_deeply call($port2, '/fast-cheap/v1/chat/completions', 100000),
          [200, '0.0700', 99300, '-'],
          'a location overriding it with 0.01: 0.0700';
is_deeply call($port2, '/v1/chat/completions', 20000),
          [200, '0.2465', 17535, '-'],
          'server imgbill_min_balance 1.00: 2.00 admitted';
is_deeply call($p1, '/v1/chat/completions', 20000),
          [402, '-', 20000, 'insufficient_balance'],
          'the shipped server keeps 5.00: 2.00 refused';
is_deeply call($port2, '/v1/chat/completions', 100000,
               mock => 'pt=1 ct=3000'),
          [200, '0.4000', 96000, '-'],
          'server hold=0.40 inherited: a larger reply is charged 0.4000';

is $h->crashes, 0, 'no worker crashed';
done_testing;
