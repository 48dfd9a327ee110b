# Workers that die or are replaced mid-generation: a kill -9'd worker's hold
# expires by itself and frees the money; reload and graceful quit under load
# lose no charge and leave no hold.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for fmt_units);

my $CHARGE     = 2465;      # flash 560/1120

subtest 'kill -9 of a worker: its hold expires and frees the money' => sub {
    my $h = Imgbill::Harness->new(
        conf_filter => sub {
            $_[0] =~ s/imgbill_hold_ttl\s+15m;/imgbill_hold_ttl 3s;/ or die;
            # nginx -t wants holds to outlive a generation's read timeout
            $_[0] =~ s/proxy_read_timeout\s+600s;/proxy_read_timeout 2s;/ or die;
        });
    # 5.5000: with a live 0.9060 hold the metered gate (5.00) is not met
    $h->account('k9', 'sk-kill-nine', 55000);

    my $wait = $h->in_flight(1, key => 'sk-kill-nine', mock => 'sleep=6');
    ok $h->wait_holds('k9', 1, 5), 'a hold is placed';

    my @w = $h->workers;
    is scalar @w, 1, 'one worker';
    kill 'KILL', @w;
    my ($got) = $wait->();
    isnt((split ' ', $got)[0], 200, "the client of the killed worker got no image ($got)");

    ok wait_for(sub { my @n = $h->workers; @n == 1 && $n[0] != $w[0] }, 10),
       'the master started a new worker';
    is scalar keys %{ $h->holds('k9') }, 1, 'the dead worker\'s hold is still there';

    my ($held) = map { /^(\d+):/ } values %{ $h->holds('k9') };
    my $avail = 55000 - $held;
    my $res = $h->chat(key => 'sk-kill-nine');
    is $res->{status}, 402, "while it lives it counts: available $avail < 50000";
    like $res->{json}{error}{message} // '',
        qr/available ${\ fmt_units($avail) }/,
        '... says so';

    # the hold says until when it holds: imgbill_hold_ttl after it was placed
    my ($until) = map { /:(\d+)$/ } values %{ $h->holds('k9') };
    ok wait_for(sub { time > $until }, 10), 'the hold\'s ttl ran out';
    $res = $h->chat(key => 'sk-kill-nine');
    is $res->{status}, 200, 'after imgbill_hold_ttl the money is free again';
    is $res->{headers}{'x-imgbill-charge'}, '0.2465', 'charged normally';
    is $h->balance('k9'), 55000 - $CHARGE, 'only the completed generation was charged';
    is_deeply $h->holds('k9'), {}, 'the expired hold was swept';
    is scalar @{ $h->ledger('k9') }, 1, 'one ledger entry';
    is_deeply [ grep { !/worker process \d+ exited on signal 9/ } $h->crashes ], [],
        'no other worker died';
};

for my $signal (qw(HUP QUIT)) {
    my $what = $signal eq 'HUP' ? 'reload' : 'graceful quit';
    subtest "$what under load: no charge lost, no hold left" => sub {
        my $h = Imgbill::Harness->new(workers => 2);
        $h->account('life', 'sk-lifecycle', 1000000);

        my $wait = $h->in_flight(6, key => 'sk-lifecycle', mock => 'sleep=2');
        ok $h->wait_holds('life', 6, 5),
           'six generations in flight';

        kill $signal, $h->{nginx_pid};

        my @got = $wait->();
        is_deeply \@got, [ ('200 0.2465') x 6 ],
            "all six finished and were charged across the $what";

        is $h->balance('life'), 1000000 - 6 * $CHARGE, 'balance down by six charges exactly';
        is scalar @{ $h->ledger('life') }, 6, 'six ledger entries';
        ok $h->wait_holds('life', 0, 5), 'no hold left';

        if ($signal eq 'HUP') {
            my $res = $h->chat(key => 'sk-lifecycle');
            is $res->{status}, 200, 'the reloaded workers bill as before';
            is $h->balance('life'), 1000000 - 7 * $CHARGE, '... to the unit';
        } else {
            ok wait_for(sub { !kill 0, $h->{nginx_pid} }, 10), 'nginx has quit';
        }
        is_deeply [ $h->crashes ], [], 'no worker crashed';
    };
}

done_testing;
