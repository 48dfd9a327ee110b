# scripts/imgbill reconcile: what the relay told its clients (its access
# log, in conf.d's log_format imgbill_billing) against the ledger.  A lost
# settlement is in neither the ledger nor the balance, so audit passes; the
# relay's log line still names it.  Real relay lines from real calls; money
# to the unit.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for fmt_units);
use IO::Compress::Gzip qw(gzip $GzipError);
use POSIX qw(strftime);

# beside the harness' own access log, the shipped one: conf.d's
# imgbill_billing format, as a relay writes it
my $h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s{^(\s*)(access_log\s+(\S+)/access\.log\s+imgbill;)}
              {$1$2\n${1}access_log $3/billing.log imgbill_billing;}m
        or die 'no access_log line to put the billing log beside';
});
my $DIR = $h->dir;
my $T0 = time;
my $LOG = "$DIR/billing.log";

sub slurp {
    open my $fh, '<', $_[0] or return '';
    local $/;
    return scalar <$fh>;
}

sub spew {
    my ($name, @lines) = @_;
    my $f = "$DIR/$name";
    open my $fh, '>', $f or die "$f: $!";
    print $fh map { "$_\n" } @lines;
    close $fh or die "$f: $!";
    return $f;
}

sub log_lines { split /\n/, slurp($LOG) }

# the relay's line for a request id
sub line_of {
    my ($rid) = @_;
    my @l = grep { / req=\Q$rid\E / } log_lines();
    return $l[0];
}

# "0.2465" -> 2465, integer arithmetic
sub units {
    my ($s) = @_;
    my ($i, $f) = ($s // '') =~ /^(\d+)\.(\d{4})\z/ or die "not money: $s";
    return $i * 10000 + $f;
}

# call($key, %chat) -> { status, rid, charge }: one call through the relay,
# back once its billing line is written and (if charged) its ledger entry
sub call {
    my ($key, %o) = @_;
    my $res = $h->chat(key => $key, %o);
    my $rid = $res->{headers}{'x-imgbill-request-id'} // '';
    my $charge = $res->{headers}{'x-imgbill-charge'};
    my $c = { status => $res->{status}, rid => $rid, charge => $charge };
    ok wait_for(sub { defined line_of($rid) }, 10),
        "the relay logged request $rid ($res->{status})"
        or diag slurp($LOG);
    return $c;
}

sub charged_call {
    my ($acct, $key, %o) = @_;
    my $c = call($key, %o);
    is $c->{status}, 200, "$acct: charged call: 200";
    like $c->{charge} // '', qr/^0\.\d{4}$/, '... with X-Imgbill-Charge';
    ok units($c->{charge} // '0.0000') > 0, '... above zero';
    ok wait_for(sub { ledger_charge($acct, $c->{rid}) }, 10),
        '... and its ledger charge';
    return $c;
}

# the ledger's charge entry of a request: [stream id, units]
sub ledger_charge {
    my ($acct, $rid) = @_;
    for my $e (@{ $h->ledger($acct) }) {
        next unless ($e->{type} // 'charge') eq 'charge'
                 && ($e->{request_id} // '') eq $rid;
        return [ $e->{_id}, $e->{charge} ];
    }
    return undef;
}

# a charge written as the module's settle script writes one
sub write_charge {
    my ($acct, $rid, $units, $ts) = @_;
    my $bal = $h->redis('DECRBY', "imgbill:{$acct}:balance", $units);
    $h->redis('XADD', "imgbill:{$acct}:ledger", '*', type => 'charge',
              request_id => $rid, ts => $ts, channel => 'metered',
              model => 'gemini-2.5-flash-image', prompt_tokens => 560,
              completion_tokens => 1120, images => 1, charge => $units,
              balance_after => $bal, api => 'openai');
}

my $nrid = 0;
sub new_rid { sprintf '%024x%08x', 0xc0ffee, ++$nrid }

sub rec { $h->cli('reconcile', @_) }

# acct($prefix) -> ($account, $key): a fresh account opened as an operator
# opens one, its 10.0000 a credit in its ledger: audit balances it
sub acct {
    my ($a, $k) = $h->fresh_account(prefix => $_[0], units => undef);
    my ($rc, $out) = $h->cli('topup', $a, '10', '--create');
    is "$rc $out", "0 10.0000\n", "$a opened with a topup";
    return ($a, $k);
}

# the summary line's fields
sub summary {
    my ($out) = @_;
    my ($s) = $out =~ /^summary (.*)$/m or return {};
    return { map { split /=/, $_, 2 } split / /, $s };
}

# every line but the summary, and the summary's last place
sub report {
    my ($out) = @_;
    my @l = split /\n/, $out;
    return 'no summary line last' unless @l && $l[-1] =~ /^summary /;
    pop @l;
    return join '', map { "$_\n" } @l;
}

sub usage_ok {
    my ($name, @args) = @_;
    my ($rc, $out, $err) = rec(@args);
    subtest "bad arguments: $name" => sub {
        is $rc, 2, 'exit 2';
        is $out, '', 'nothing on stdout';
        like $err, qr/usage:/, 'usage on stderr';
    };
}

{
    my ($rc, $out) = $h->cli('--help');
    like $out, qr/^  reconcile LOG\.\.\. \[--account ACCOUNT\] \[--since DATE\]$/m,
        '--help lists reconcile';
}

# --- (a) three charged calls: the log and the ledger agree
my ($A, $KA) = acct('rca');
my @a = map { charged_call($A, $KA, mock => "ct=$_") } 1120, 1501, 997;
my $a_units = 0;
$a_units += units($_->{charge}) for @a;
{
    my ($rc, $out, $err) = rec($LOG);
    is $rc, 0, '(a) logs and ledger agree: exit 0';
    is report($out), '', '... no finding, the summary last';
    my $s = summary($out);
    is_deeply [ @$s{qw(accounts requests charged charged_amount missing
                       missing_amount unlogged unlogged_amount differs
                       differs_logged differs_ledger reversed reversed_amount)} ],
              [ 1, 3, 3, fmt_units($a_units), 0, '0.0000', 0, '0.0000', 0,
                '0.0000', '0.0000', 0, '0.0000' ],
              "... summary: 3 charged, ${\ fmt_units($a_units) } to the unit, nothing else";
    like $s->{from} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '... from: UTC ISO time';
    ok +($s->{from} // '') le ($s->{to} // ''), '... to, not before from';
    is $err, '', '... nothing on stderr';
    my ($rc2, $out2) = $h->cli({ stdin => slurp($LOG) }, 'reconcile', '-');
    is "$rc2 $out2", "$rc $out", 'LOG "-": stdin, the same';
    gzip($LOG => "$DIR/billing.log.gz") or die $GzipError;
    my ($rc3, $out3) = rec("$DIR/billing.log.gz");
    is "$rc3 $out3", "$rc $out", 'LOG.gz: read through gzip, the same';
    my $dup = spew('a-twice.log', log_lines(), log_lines());
    my ($rc4, $out4) = rec($dup);
    is "$rc4 $out4", "$rc $out",
        'every line twice (two relays, a log read twice): counted once';
}

# --- (b) a lost settlement: in neither the ledger nor the balance
my ($B, $KB) = acct('rcb');
my @b = map { charged_call($B, $KB) } 1, 2;
{
    my ($id, $u) = @{ ledger_charge($B, $b[1]{rid}) };
    is $u, units($b[1]{charge}), '(b) the ledger charged what the header told';
    $h->redis('XDEL', "imgbill:{$B}:ledger", $id);
    $h->redis('INCRBY', "imgbill:{$B}:balance", $u);
    my ($rc, $out) = $h->cli('audit', $B);
    like "$rc $out", qr/^0 \Q$B\E balance=\S+ ledger=\S+ drift=0 ok$/,
        '(b) the charge gone from ledger and balance: audit says ok';
    my $err;
    ($rc, $out, $err) = rec($LOG, '--account', $B);
    is $rc, 1, '(b) reconcile: exit 1';
    is report($out), "missing $b[1]{rid} $B $b[1]{charge}\n",
        '... names the lost charge: missing REQID ACCOUNT CHARGE';
    my $s = summary($out);
    is "$s->{missing} $s->{missing_amount}", "1 $b[1]{charge}",
        '... summary: missing=1 and its amount';
    is "$s->{requests} $s->{charged}", '2 2', '... of 2 charged requests';
    like $err, qr/1 request\(s\) where the logs and the ledger disagree/,
        '... said on stderr';
    ($rc, $out) = rec($LOG);
    is $rc, 1, '(b) every account: exit 1';
    is report($out), "missing $b[1]{rid} $B $b[1]{charge}\n",
        '... the one missing charge, nothing of the other account';
}

# --- (c) ledger charges no line reports
my ($C, $KC) = acct('rcc');
my ($G) = $h->fresh_account(prefix => 'rcg');      # never calls
my @c = (charged_call($C, $KC));
push @c, charged_call($C, $KC);                       # its line dropped below
my ($fake, $gfake, $old, $late) = map { new_rid() } 1 .. 4;
{
    my $now = time;
    write_charge($C, $fake, 1234, $now);
    write_charge($G, $gfake, 100, $now);
    write_charge($C, $old, 5000, $now - 7200);     # before the logs
    write_charge($C, $late, 6000, $now + 7200);    # after them
}
push @c, charged_call($C, $KC);                       # the logs' last line
{
    my ($rc, $out) = rec($LOG, '--account', $C);
    is $rc, 1, '(c) a ledger charge no line reports: exit 1';
    is report($out), "unlogged $fake $C 0.1234\n",
        '... unlogged REQID ACCOUNT CHARGE; older and newer history is not';
    is summary($out)->{unlogged_amount}, '0.1234', '... summary: its amount';
    my $drop = spew('c-drop.log', grep { !/ req=\Q$c[1]{rid}\E / } log_lines());
    ($rc, $out) = rec($drop, '--account', $C);
    is $rc, 1, '(c) a real call whose line is dropped: exit 1';
    is report($out), join('', sort("unlogged $c[1]{rid} $C $c[1]{charge}\n",
                                   "unlogged $fake $C 0.1234\n")),
        '... unlogged too, sorted by request id';
    is summary($out)->{unlogged_amount},
        fmt_units(units($c[1]{charge}) + 1234), '... the summary adds them up';
    ($rc, $out) = $h->cli('audit', $C);
    is $rc, 0, '(c) audit says ok: the balance took the charges';
}

# --- (d) an amount that differs
my ($D, $KD) = acct('rcd');
my @d = map { charged_call($D, $KD, mock => "ct=$_") } 1300, 1400;
{
    my ($d0, $d1) = map { line_of($_->{rid}) } @d;
    my $more = fmt_units(units($d[0]{charge}) + 1);
    (my $d0x = $d0) =~ s/ charge=\S+ / charge=$more / or die;
    my $f = spew('d-more.log', map { $_ eq $d0 ? $d0x : $_ } log_lines());
    my ($rc, $out) = rec($f, '--account', $D);
    is $rc, 1, '(d) a line with an amount changed: exit 1';
    is report($out), "differs $d[0]{rid} $D logged=$more ledger=$d[0]{charge}\n",
        '... differs REQID ACCOUNT logged=X ledger=Y';
    my $s = summary($out);
    is "$s->{differs} $s->{differs_logged} $s->{differs_ledger}",
        "1 $more $d[0]{charge}", '... summary: differs=1, both sums';

    my $less = fmt_units(units($d[1]{charge}) - 3);
    (my $d1x = $d1) =~ s/ charge=\S+ / charge=$less / or die;
    $f = spew('d-two.log', log_lines(), $d1, $d1x);
    ($rc, $out) = rec($f, '--account', $D);
    is $rc, 1, '(d) two lines of one request, two charges: exit 1';
    is report($out), "differs $d[1]{rid} $D logged=$less,$d[1]{charge} ledger=$d[1]{charge}\n",
        '... differs, both logged charges (ascending), the other line twice is fine';
    ($rc, $out) = rec($LOG, '--account', $D);
    is "$rc " . report($out), '0 ', '(d) the true log: nothing';
}

# --- (e) free and refused calls are not expected in the ledger
my ($E, $KE) = acct('rce');
my ($E2, $KE2) = $h->fresh_account(prefix => 'rcp', units => 0);
my @e;
{
    push @e, call($KE, mock => 'status=500');
    push @e, call($KE, mock => 'kind=noimage');
    push @e, call($KE2);
    push @e, call('sk-rc-nobody-0000');
    is_deeply [ map { $_->{status} } @e ], [ 500, 200, 402, 401 ],
        '(e) free (500, no image), refused (402, 401)';
    is_deeply [ map { line_of($_->{rid}) =~ / charge=(\S+) / ? $1 : '?' } @e ],
              [ ('0.0000') x 4 ], '... logged with charge=0.0000';
    like line_of($e[3]{rid}), qr/ acct=- /, '... the 401 with acct=-';
    is_deeply [ grep { ($_->{type} // 'charge') eq 'charge' }
                @{ $h->ledger($E) }, @{ $h->ledger($E2) } ], [],
        '... none of them in a ledger';
    my ($rc, $out) = rec($LOG, '--account', $E);
    is "$rc " . report($out), '0 ', '(e) reconcile: nothing, exit 0';
    my $s = summary($out);
    is "$s->{requests} $s->{charged} $s->{charged_amount}", '2 0 0.0000',
        '... 2 requests, none charged';
    ($rc, $out) = rec($LOG, '--account', $E2);
    is "$rc " . report($out), '0 ', '(e) the 402: nothing, exit 0';

    # a charge the ledger kept for a request its line calls free
    write_charge($E, $e[0]{rid}, 2465, time);
    ($rc, $out) = rec($LOG, '--account', $E);
    is $rc, 1, '(e) a ledger charge of a request logged as free: exit 1';
    is report($out), "differs $e[0]{rid} $E logged=0.0000 ledger=0.2465\n",
        '... differs logged=0.0000';
    my ($id) = @{ ledger_charge($E, $e[0]{rid}) };
    $h->redis('XDEL', "imgbill:{$E}:ledger", $id);
    $h->redis('INCRBY', "imgbill:{$E}:balance", 2465);
}

# --- a charge given back: informational, not an error
my ($F, $KF) = acct('rcf');
my @f = (charged_call($F, $KF));
{
    my $u = units($f[0]{charge});
    my $bal = $h->redis('INCRBY', "imgbill:{$F}:balance", $u);
    $h->redis('XADD', "imgbill:{$F}:ledger", '*', type => 'reversal',
              request_id => $f[0]{rid}, ts => time, charge_ts => time,
              amount => $u, balance_after => $bal);
    my ($rc, $out) = rec($LOG, '--account', $F);
    is $rc, 0, 'a logged charge the ledger gave back: exit 0';
    is report($out), "reversed $f[0]{rid} $F $f[0]{charge}\n",
        '... listed as reversed';
    my $s = summary($out);
    is "$s->{reversed} $s->{reversed_amount}", "1 $f[0]{charge}",
        '... and summed up';
    (my $free = line_of($f[0]{rid})) =~ s/ charge=\S+ / charge=0.0000 / or die;
    my $fl = spew('f-free.log', map { / req=\Q$f[0]{rid}\E / ? $free : $_ } log_lines());
    ($rc, $out) = rec($fl, '--account', $F);
    is "$rc " . report($out), '0 ', '... logged as free (as the relay logs it): nothing';
}

# --- (f) --account, and every account
{
    my ($rc, $out) = rec($LOG);
    is $rc, 1, '(f) every account: exit 1';
    is report($out), join('',
        "missing $b[1]{rid} $B $b[1]{charge}\n",
        "unlogged $fake $C 0.1234\n",
        "unlogged $gfake $G 0.0100\n",
        "reversed $f[0]{rid} $F $f[0]{charge}\n"),
        '... missing, unlogged (an account no line names too), reversed; '
        . 'by kind, account, request id';
    my $s = summary($out);
    is $s->{accounts}, 8, '... 8 accounts checked';
    my $charged = 0;
    $charged += units($_->{charge}) for @a, @b, @c, @d, @f;
    is "$s->{requests} $s->{charged} $s->{charged_amount}",
       '14 11 ' . fmt_units($charged), '... 14 requests, 11 charged, to the unit';
    is "$s->{missing_amount} $s->{unlogged_amount} $s->{reversed_amount}",
       "$b[1]{charge} 0.1334 $f[0]{charge}", '... each kind\'s money';

    ($rc, $out) = rec($LOG, '--account', $A);
    is "$rc " . report($out), '0 ', '(f) --account A: only A, exit 0';
    $s = summary($out);
    is "$s->{accounts} $s->{requests} $s->{charged_amount}",
       '1 3 ' . fmt_units($a_units), '... its 3 requests';
    ($rc, $out) = rec('--account', $B, $LOG);
    is "$rc " . report($out), "1 missing $b[1]{rid} $B $b[1]{charge}\n",
        '(f) --account before LOG';
    ($rc, $out) = rec($LOG, '--account', 'nobody');
    is "$rc " . report($out), '0 ', '(f) an account nothing names: exit 0';
    is summary($out)->{requests}, 0, '... no request';
}

# --- --since, time zones, lines in other formats
{
    my $rid = new_rid();
    my $old = "127.0.0.1 [01/Jan/2020:08:00:00 +0800] \"POST /v1/chat/completions HTTP/1.1\" "
            . "200 req=$rid acct=$A ch=metered api=openai in=560 out=1120 images=1/1 "
            . "charge=0.5000 bal=9.5000 outcome=charged reason=- would=- rt=0.101";
    my $forged = "127.0.0.1 [01/Jan/2020:08:00:00 +0800] \"POST /x req=$rid acct=$A "
               . "charge=9.0000 HTTP/1.1\" 400 req=- acct=- ch=- api=- in=- out=- "
               . "images=- charge=- bal=- outcome=- reason=- would=- rt=0.000";
    my $f = spew('old.log', $old, $forged, 'not a billing line');
    my ($rc, $out, $err) = rec($LOG, $f, '--account', $A);
    is $rc, 1, 'an old line the ledger lacks: exit 1';
    is report($out), "missing $rid $A 0.5000\n",
        '... missing; a request line cannot forge fields';
    is summary($out)->{from}, '2020-01-01T00:00:00Z',
        '... from: its $time_local at +0800, in UTC';
    like $err, qr/old\.log: 1 line\(s\) not in the imgbill_billing log format, ignored/,
        '... the line in another format said on stderr';
    my $today = strftime('%Y-%m-%d', gmtime $T0);
    ($rc, $out) = rec($LOG, $f, '--account', $A, '--since', $today);
    is "$rc " . report($out), '0 ', '--since today: the old line is left out';
    ($rc, $out, $err) = rec($LOG, '--since', strftime('%Y-%m-%d', gmtime(time + 2 * 86400)));
    is "$rc " . report($out), '0 ', '--since after every line: nothing to reconcile, exit 0';
    like $err, qr/no log line to reconcile since/, '... said on stderr';
    is summary($out)->{from}, '-', '... from=-';

    ($rc, $out, $err) = rec($h->dir . '/access.log');
    is "$rc $out", '1 ', "the harness' own log (another format): exit 1";
    like $err, qr/no line in the imgbill_billing log format/, '... says why';
    ($rc, $out, $err) = rec("$DIR/no-such.log");
    is "$rc $out", '1 ', 'a missing file: exit 1';
    like $err, qr/cannot read .*no-such\.log/, '... says which';
    ($rc, $out) = rec(spew('empty.log'));
    is "$rc " . report($out), '0 ', 'an empty log: exit 0';
}
usage_ok('no LOG', );
usage_ok('no LOG, an account', '--account', $A);
usage_ok('a bad account', $LOG, '--account', 'a b');
usage_ok('a bad DATE', $LOG, '--since', '2026-13-01');
usage_ok('an unknown option', $LOG, '--all');

done_testing;
