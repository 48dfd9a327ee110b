# Admission gates: metered needs available >= 5.0000, fast needs
# available >= price, where available = balance - sum(live holds).
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(priced_location);

my $h = Imgbill::Harness->new(extra_server => priced_location(
    '/tuned/v1/chat/completions',
    'imgbill metered;', 'imgbill_min_balance 1.00;', 'imgbill_min_charge 0.05;'));
my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';
my $FAST  = '/fast/v1/chat/completions';

# the account of each case: $o{balance} units (undef: no balance key) and
# other requests' holds
sub rejected_ok {
    my ($name, $avail, $req, %o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'gate', units => $o{balance},
                                         holds => $o{holds});
    $h->rejected_ok($name, 402, 'insufficient_quota', 'insufficient_balance',
        sub { $h->chat(key => $key, model => $o{model}, path => $o{path}) },
        check => sub {
            like $_[0]{json}{error}{message} // '',
                qr/^insufficient balance: available \Q$avail\E, required \Q$req\E$/,
                "message: available $avail, required $req";
        });
}

sub admitted_ok {
    my ($name, $charge_hdr, $balance_hdr, %o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'gate', units => $o{balance},
                                         holds => $o{holds});
    my $hits = $h->upstream_hits;
    my $res = $h->chat(key => $key, model => $o{model}, path => $o{path});
    subtest $name => sub {
        is $res->{status}, 200, 'admitted' or diag $res->{body};
        is $res->{headers}{'x-imgbill-charge'}, $charge_hdr, 'charge';
        is $res->{headers}{'x-imgbill-balance'}, $balance_hdr, 'balance';
        is $h->upstream_hits, $hits + 1, 'upstream reached once';
        $o{check}->($acct) if $o{check};
    };
}

my $live = time + 600;
my $dead = time - 10;

# metered: the 5.0000 gate
rejected_ok('metered flash at 4.9999 -> 402', '4.9999', '5.0000',
            balance => 49999, model => $FLASH);
admitted_ok('metered flash at 5.0000 -> 200', '0.2465', '4.7535',
            balance => 50000, model => $FLASH,
            check => sub { is $h->balance($_[0]), 47535, 'Redis 47535' });
rejected_ok('metered 3-pro at 4.9999 -> 402', '4.9999', '5.0000',
            balance => 49999, model => $PRO);
admitted_ok('metered 3-pro at 5.0000 -> 200 (balance may not go below gate)',
            '1.7232', '3.2768', balance => 50000, model => $PRO);
rejected_ok('no balance key at all -> 402 available 0.0000', '0.0000', '5.0000',
            balance => undef, model => $FLASH);
rejected_ok('negative balance -> 402 available -1.0000', '-1.0000', '5.0000',
            balance => -10000, model => $FLASH);

# live holds count against the balance; expired ones do not
rejected_ok('5.0000 with a live hold of 0.0001 -> available 4.9999', '4.9999',
            '5.0000', balance => 50000, holds => { other1 => "1:$live" });
rejected_ok('6.0000 with live holds 0.5000 + 0.5001 -> available 4.9999',
            '4.9999', '5.0000', balance => 60000,
            holds => { o1 => "5000:$live", o2 => "5001:$live" });
admitted_ok('5.0000 with an expired hold of 1.0000 -> admitted', '0.2465',
            '4.7535', balance => 50000, holds => { stale => "10000:$dead" });
admitted_ok('6.0000 with a live hold of 1.0000 -> available 5.0000, admitted',
            '0.2465', '5.7535', balance => 60000, holds => { o => "10000:$live" },
            check => sub {
                my $hh = $h->holds($_[0]);
                is_deeply $hh, { o => "10000:$live" },
                    "the other request's hold is untouched";
            });

# fast: the price gate
rejected_ok('fast flash at 0.0699 -> 402', '0.0699', '0.0700',
            balance => 699, model => $FLASH, path => $FAST);
admitted_ok('fast flash at 0.0700 -> 200, balance 0.0000', '0.0700', '0.0000',
            balance => 700, model => $FLASH, path => $FAST,
            check => sub { is $h->balance($_[0]), 0, 'Redis 0' });
rejected_ok('fast 3-pro at 0.1999 -> 402', '0.1999', '0.2000',
            balance => 1999, model => $PRO, path => $FAST);
admitted_ok('fast 3-pro at 0.2000 -> 200, balance 0.0000', '0.2000', '0.0000',
            balance => 2000, model => $PRO, path => $FAST);
rejected_ok('fast flash 0.1000 with a live hold of 0.0301 -> available 0.0699',
            '0.0699', '0.0700', balance => 1000, model => $FLASH, path => $FAST,
            holds => { busy => "301:$live" });
admitted_ok('fast flash 0.0700 with an expired hold -> admitted', '0.0700',
            '0.0000', balance => 700, model => $FLASH, path => $FAST,
            holds => { stale => "5000:$dead" });

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

# a location with its own imgbill_min_balance and imgbill_min_charge
# (prices inherited from http{})
my $TUNED = '/tuned/v1/chat/completions';
rejected_ok('imgbill_min_balance 1.00: at 0.9999 -> 402', '0.9999', '1.0000',
            balance => 9999, path => $TUNED);
admitted_ok('imgbill_min_balance 1.00: at 1.0000 -> 200', '0.2465', '0.7535',
            balance => 10000, path => $TUNED);
{
    my ($acct, $key) = $h->fresh_account(prefix => 'gate', units => 100000);
    my $res = $h->chat(key => $key, path => $TUNED, mock => 'pt=1 ct=1');
    is $res->{headers}{'x-imgbill-charge'}, '0.0500', 'imgbill_min_charge 0.05: flash 1/1 -> 0.0500';
    is $h->balance($acct), 99500, '... in Redis';
}

done_testing;
