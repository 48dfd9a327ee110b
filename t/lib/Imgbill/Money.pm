package Imgbill::Money;

# Money under load, for the failover tests: looping clients that note what
# every request was answered, and the checks that the ledger and the
# balances agree with what the clients saw, to the unit (0.0001 yuan).
#
#   use Imgbill::Money qw(record units money_ok ledger_ids);
#   my $load = Imgbill::Money->start(
#       dir     => $tmp,                      # the clients' notes go there
#       clients => [[$h, $acct, $key], ...],  # one looping client each, on
#                                             #   that harness's relay
#       mix     => sub { my ($n) = @_; (path => ..., mock => ...) },
#           # chat() options of a client's n-th request (n starts at the
#           # client's index); default: metered and fast in turn, a quarter
#           # of the generations failing (the mock's status=500: free), a
#           # quarter slow (sleep=0.3), so that some are in flight whenever
#           # something happens
#       pause   => sub { my ($status) = @_; seconds },
#           # between two requests (default 0.02 s after a 200, 0.2 s
#           # after anything else)
#   );
#   $load->seen     # [{client, acct, status, charge (units), rid, code,
#                   #   start, end}] so far: code is the JSON error's code
#                   #   ('-' if none), start and end epoch seconds
#   $load->charged  # those answered 200 with a charge
#   $load->stop     # each client finishes its request and exits; waited for
#
#   record($acct, $res, $start, $end) -> the same hash for a request the
#       test made itself (chat()'s answer)
#   units("1.2345") -> 12345: a charge header in units (undef, '-': 0)
#   ledger_ids($redis, \@accounts) -> { request_id => 1 } of their ledgers
#   money_ok($redis, \@accounts, $initial, \@seen, %o)
#       Test::More tests that the money is exact: no hold left (waited for,
#       $o{timeout}, default 20 s) and no unit held, for each account
#       initial = balance + the sum of its ledger's charges ($initial: a
#       number, or { account => units }), no request id twice in the
#       ledgers, every ledger entry a charge a client saw (same account,
#       same amount), every charge a client saw in the ledger.  The
#       ledgers must hold charges only (no topup during the test).
#       $o{name} prefixes the tests' names.
#
# The clients are forked processes; they exit when stopped, when the test
# process is gone, or after $o{max_seconds} (default 600).

use strict;
use warnings;
use POSIX ();
use Time::HiRes qw(sleep time);
use Test::More ();
use Imgbill::Harness qw(wait_for);

use Exporter 'import';
our @EXPORT_OK = qw(record units money_ok ledger_ids);

sub start {
    my ($class, %o) = @_;
    my $self = bless {
        dir     => $o{dir} // die('dir'),
        clients => $o{clients},
        owner   => $$,
        kids    => [],
    }, $class;
    my $mix = $o{mix} // sub {
        my ($n) = @_;
        my $kind = $n % 4;
        return (path => $n % 2 ? '/fast/v1/chat/completions' : '/v1/chat/completions',
                ($kind == 2 ? (mock => 'status=500')
                 : $kind == 3 ? (mock => 'sleep=0.3') : ()));
    };
    my $pause = $o{pause} // sub { $_[0] == 200 ? 0.02 : 0.2 };
    my $parent = $$;
    my $until = time + ($o{max_seconds} // 600);
    $self->{stop} = "$self->{dir}/stop-" . ++$self->{runs};
    for my $i (0 .. $#{ $self->{clients} }) {
        my ($h, $acct, $key) = @{ $self->{clients}[$i] };
        my $file = $self->_file($i);
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open my $out, '>>', $file or POSIX::_exit(1);
            $out->autoflush(1);
            for (my $n = $i; !-e $self->{stop} && kill(0, $parent) && time < $until; $n++) {
                my $start = time;
                my $res = $h->chat(key => $key, $mix->($n));
                printf $out "%s %s %s %s %.3f %.3f\n", $res->{status} // 0,
                    $res->{headers}{'x-imgbill-charge'} // '-',
                    $res->{headers}{'x-imgbill-request-id'} // '-',
                    _code($res), $start, time;
                sleep $pause->($res->{status} // 0);
            }
            POSIX::_exit(0);    # the servers belong to the parent
        }
        push @{ $self->{kids} }, $pid;
    }
    return $self;
}

sub _file { "$_[0]{dir}/client-$_[1]" }

sub _code {
    my ($res) = @_;
    my $c = ref $res->{json} eq 'HASH' && ref $res->{json}{error} eq 'HASH'
          ? $res->{json}{error}{code} : undef;
    return defined $c && $c =~ /^\S+$/ ? $c : '-';
}

sub units {
    my ($ch) = @_;
    return 0 if !defined $ch || $ch eq '-';
    my ($y, $f) = $ch =~ /^(\d+)\.(\d{4})$/ or die "not an amount: $ch\n";
    return $y * 10000 + $f;
}

sub record {
    my ($acct, $res, $start, $end) = @_;
    return { acct => $acct, status => $res->{status} // 0,
             charge => units($res->{headers}{'x-imgbill-charge'}),
             rid => $res->{headers}{'x-imgbill-request-id'} // '-',
             code => _code($res), start => $start // 0, end => $end // 0 };
}

sub seen {
    my ($self) = @_;
    my @all;
    for my $i (0 .. $#{ $self->{clients} }) {
        open my $fh, '<', $self->_file($i) or next;
        while (<$fh>) {
            my ($st, $ch, $rid, $code, $b, $e) =
                /^(\d+) (\S+) (\S+) (\S+) (\S+) (\S+)$/ or next;
            push @all, { client => $i, acct => $self->{clients}[$i][1],
                         status => $st, charge => units($ch), rid => $rid,
                         code => $code, start => $b, end => $e };
        }
    }
    return \@all;
}

sub charged { grep { $_->{status} == 200 && $_->{charge} > 0 } @{ $_[0]->seen } }

sub stop {
    my ($self) = @_;
    return unless $self->{owner} == $$ && @{ $self->{kids} };
    open my $fh, '>', $self->{stop} or die "$self->{stop}: $!";
    close $fh;
    waitpid $_, 0 for @{ $self->{kids} };
    $self->{kids} = [];
}

sub DESTROY {
    my ($self) = @_;
    return unless $self->{owner} == $$;
    kill 'KILL', @{ $self->{kids} } if @{ $self->{kids} };
    waitpid $_, 0 for @{ $self->{kids} };
}

sub _entries {
    my ($r, $acct) = @_;
    return map { +{ @{ $_->[1] } } }
           @{ $r->cmd('XRANGE', "imgbill:{$acct}:ledger", '-', '+') || [] };
}

sub ledger_ids {
    my ($r, $accts) = @_;
    my %ids;
    for my $acct (@$accts) {
        $ids{ $_->{request_id} } = 1
            for grep { defined $_->{request_id} } _entries($r, $acct);
    }
    return \%ids;
}

sub money_ok {
    my ($r, $accts, $initial, $seen, %o) = @_;
    my $name = defined $o{name} ? "$o{name}: " : '';
    my %client = map { $_->{rid} => $_ }
                 grep { $_->{status} == 200 && $_->{charge} > 0 } @$seen;

    Test::More::ok(wait_for(sub {
        !grep { $r->cmd('HLEN', "imgbill:{$_}:holds") } @$accts
    }, $o{timeout} // 20), "${name}no hold left");

    my ($drift, $dups, $held, %ledger, @stray) = (0, 0, 0);
    for my $acct (@$accts) {
        my $sum = 0;
        for my $f (_entries($r, $acct)) {
            $sum += $f->{charge};
            my $rid = $f->{request_id} // '?';
            $dups++ if $ledger{$rid}++;
            my $c = $client{$rid};
            push @stray, "$acct $rid $f->{charge}"
                unless $c && $c->{charge} == $f->{charge} && $c->{acct} eq $acct;
        }
        my $bal = $r->cmd('GET', "imgbill:{$acct}:balance");
        my $init = ref $initial ? $initial->{$acct} : $initial;
        $drift += abs($init - $bal - $sum);
        $held += $r->cmd('HGET', "imgbill:{$acct}:held", 'units') // 0;
    }
    Test::More::is($held, 0, "${name}no unit held, any account");
    Test::More::is($drift, 0,
        "${name}conservation: initial = balance + ledger charges, every account, to the unit");
    Test::More::is($dups, 0, "${name}no request is in the ledger twice");
    Test::More::is(scalar @stray, 0,
        "${name}every ledger entry is a charge a client saw, for its amount")
        or Test::More::diag("@stray");
    my @unbilled = grep { !$ledger{$_} } sort keys %client;
    Test::More::is(scalar @unbilled, 0, "${name}every charge a client saw is in the ledger")
        or Test::More::diag("@unbilled");
    return \%ledger;
}

1;
