package Imgbill::Loadcheck;

# scripts/loadcheck run from a test, and its accounts read back from Redis
# independently of its verdict (t/90-loadcheck.t, t/91-relays.t).
#
#   use Imgbill::Loadcheck qw(loadcheck redis_agrees);
#   my $r = loadcheck($h, '--relay', $h->url, '--redis', $h->redis_addr, ...);
#   $r->{rc}, $r->{ok}, $r->{line}, $r->{f}{drift_units}, $r->{err}
#   my @rids = redis_agrees($h, $r, [100000000, ...], 'mixed');
#
# loadcheck($h, @args) -> { rc, ok, line, f => {field => value}, err }: the
#   verdict line's fields in f, stderr (the problems) in err, through a
#   file in $h->dir.
# redis_agrees($h, $r, \@initial, $name): two tests: per account
#   "<prefix>-<i>", initial - final balance == the sum of its ledger's
#   charges less their reversals (a client that left while its charge
#   settled) with no hold and no held unit left; and the ledger entries
#   add up to the verdict's ledger=.  Returns the request ids of the
#   charges that stand.
# verdict_ok($r, $n, $name): exit 0, verdict OK, requests=$n, and
#   drift_units, duplicates and holds_left all 0.

use strict;
use warnings;
use Test::More ();
use Imgbill::Harness;

use Exporter 'import';
our @EXPORT_OK = qw(loadcheck verdict_ok redis_agrees);

sub loadcheck {
    my ($h, @args) = @_;
    my $errf = $h->dir . '/loadcheck.err';
    my $root = Imgbill::Harness->root;
    open my $saved, '>&', \*STDERR or die "dup STDERR: $!";
    open STDERR, '>', $errf or die "$errf: $!";
    my $ok = open my $fh, '-|', "$root/scripts/loadcheck", @args;
    my @out = $ok ? <$fh> : ();
    close $fh if $ok;
    my $rc = $ok ? $? >> 8 : -1;
    open STDERR, '>&', $saved or die "restore STDERR: $!";
    my $err = do { local (@ARGV, $/) = ($errf); <> } // '';

    my ($line) = grep { /^loadcheck: (?:OK|FAIL) / } @out;
    $line //= '';
    chomp $line;
    my %f = $line =~ /(\w+)=(\S+)/g;
    Test::More::note($line);
    return { rc => $rc, ok => scalar($line =~ /^loadcheck: OK /),
             line => $line, f => \%f, err => $err };
}

sub verdict_ok {
    my ($r, $n, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::is($r->{rc}, 0, "$name: exit 0") or Test::More::diag($r->{err});
    Test::More::ok($r->{ok}, "$name: verdict OK") or Test::More::diag($r->{line});
    my $f = $r->{f};
    Test::More::is($f->{requests}, $n, "$name: requests=$n");
    Test::More::is($f->{$_}, 0, "$name: $_=0")
        for qw(drift_units duplicates holds_left);
}

sub redis_agrees {
    my ($h, $r, $initial, $name) = @_;
    my $prefix = $r->{f}{prefix} // 'none';
    my ($bad, $entries, @rids) = (0, 0);
    for my $i (0 .. $#$initial) {
        my $acct = "$prefix-$i";
        my $ledger = $h->ledger($acct);
        my $sum = 0;
        $sum += $_->{charge} for grep { ($_->{type} // 'charge') eq 'charge' } @$ledger;
        # a charge given back (its client left while it settled) is no charge
        my %back = map { $_->{request_id} => 1 }
                   grep { ($_->{type} // '') eq 'reversal' } @$ledger;
        $sum -= $_->{amount} for grep { ($_->{type} // '') eq 'reversal' } @$ledger;
        $entries += @$ledger;
        push @rids, map { $_->{request_id} }
                    grep { ($_->{type} // 'charge') eq 'charge'
                           && !$back{ $_->{request_id} } } @$ledger;
        my $bal = $h->balance($acct) // 'none';
        # no hold left, and their sum back to 0
        my $left = keys(%{ $h->holds($acct) })
                   + ($h->redis('HGET', "imgbill:{$acct}:held", 'units') // 0);
        if ($bal ne $initial->[$i] - $sum || $left) {
            $bad++;
            Test::More::diag("$acct: $initial->[$i] -> $bal, ledger $sum, "
                             . "holds and held units left: $left");
        }
    }
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::is($bad, 0, "$name: Redis agrees, account by account");
    Test::More::is($entries, $r->{f}{ledger} // -1,
                   "$name: ledger entries as reported");
    return @rids;
}

1;
