package ImgbillLedger;

# Money, ledger entries, the operator's writes, accounts and keys, the
# ledger's listings and exports, and the relays' access-log lines (to
# reconcile with the ledger), for scripts/imgbill.
#
# Money is an integer count of units of 0.0001 yuan.  Amounts typed by an
# operator are parsed as strings; sums are Perl integers (exact to 2^63,
# checked); Redis does the writes' arithmetic in one Lua script per
# operation, on decimal strings split in two limbs (Lua's numbers are
# doubles, exact only to 2^53).
#
# The ledger, imgbill:{ACCOUNT}:ledger, is a stream with one entry per
# change of the balance (XADD '*', so ids grow with time):
#   type charge request_id R ts T channel C model M prompt_tokens P
#        completion_tokens Q images N charge U balance_after B   (the module;
#        N, the images delivered, is missing from older entries: 1)
#   type credit amount U reason TEXT ts T balance_after B (topup, U > 0)
#   type adjustment amount U reason TEXT ts T balance_after B (adjust, U != 0)
#   type opening amount U reason "opening balance" ts T balance_after B
#   type reversal request_id R ts T charge_ts T0 amount U balance_after B
#        (the module: request R's charge of U, made at T0, given back because
#        its reply was never written; at most one per request)
# An entry without `type` is a charge (written before types existed).  The
# balance equals Σ amount (credit, adjustment, opening, reversal) − Σ charge.
# The
# opening entry, written once, before an account's first credit or
# adjustment (or by `audit --open`), accounts for what the balance held
# before the ledger recorded it: U = balance − the entries' sum so far.
#
# Functions die with a one-line message on Redis errors and bad data.

use strict;
use warnings;
use Exporter 'import';
use JSON::PP ();
use POSIX qw(strftime);
use Time::Local qw(timegm);

our @EXPORT_OK = qw(
    parse_amount parse_signed_amount format_units
    entry_type entry_delta entry_ts
    each_entry each_entry_back ledger_state audit_account write_entry
    parse_billing_line ledger_requests reconcile_requests
    scan_keys key_accounts find_accounts account_known live_held
    random_key acct_key valid_account
    iso_time entry_view human_line export_record export_json export_csv
);

my $ACCOUNT_RE = qr/^[A-Za-z0-9_.-]{1,64}\z/;
my $CHUNK = 1000;               # stream entries per XRANGE
my $MAX_UNITS = 4e18;           # sums stay well inside int64

sub valid_account { defined $_[0] && $_[0] =~ $ACCOUNT_RE }
sub acct_key      { "imgbill:{$_[0]}:$_[1]" }

# ---- money ---------------------------------------------------------------

# "12.34" -> "123400"; undef when not a valid amount (unsigned)
sub parse_amount {
    my ($s) = @_;
    return undef unless defined $s && $s =~ /^(\d+)(?:\.(\d{1,4}))?\z/;
    my ($int, $frac) = ($1, defined $2 ? $2 : '');
    $int =~ s/^0+(?=\d)//;
    return undef if length($int) > 12;    # keeps units well inside int64
    $frac .= '0' x (4 - length $frac);
    my $units = "$int$frac";
    $units =~ s/^0+(?=\d)//;
    return $units;
}

# "-1.5" -> "-15000", "+2" or "2" -> "20000"; undef when not valid
sub parse_signed_amount {
    my ($s) = @_;
    return undef unless defined $s && $s =~ /^([+-]?)(.*)\z/s;
    my ($sign, $u) = ($1, parse_amount($2));
    return undef unless defined $u;
    return $sign eq '-' && $u ne '0' ? "-$u" : $u;
}

# "-1234" -> "-0.1234", "97535" -> "9.7535", undef/"" -> "0.0000"
sub format_units {
    my ($u) = @_;
    $u = '0' unless defined $u && length $u;
    die "not an integer amount: \"$u\"\n" unless $u =~ /^([+-]?)(\d+)\z/;
    my ($sign, $digits) = ($1, $2);
    $digits =~ s/^0+(?=\d)//;
    $sign = '' if $sign eq '+' || $digits eq '0';
    $digits = ('0' x (5 - length $digits)) . $digits if length($digits) < 5;
    return $sign . substr($digits, 0, -4) . '.' . substr($digits, -4);
}

# ---- entries -----------------------------------------------------------------

my %TYPES = map { $_ => 1 } qw(charge credit adjustment opening reversal);

# what the operator writes: an account with one of these has been opened
my %OPENS = map { $_ => 1 } qw(credit adjustment opening);

# the entry's type: charge (also when it has none), credit, adjustment,
# opening, reversal; undef for a type this CLI does not know
sub entry_type {
    my ($f) = @_;
    my $t = defined $f->{type} ? $f->{type} : 'charge';
    return $TYPES{$t} ? $t : undef;
}

sub _int {
    my ($id, $name, $v, $signed) = @_;
    my $re = $signed ? qr/^-?\d{1,18}\z/ : qr/^\d{1,18}\z/;
    die "ledger entry $id: $name is not an integer in range"
        . (defined $v ? " (\"$v\")" : ' (missing)') . "\n"
        unless defined $v && $v =~ $re;
    return 0 + $v;
}

# what the entry adds to the balance, as a Perl integer (a charge is
# negative); dies on an entry that cannot be counted
sub entry_delta {
    my ($id, $f) = @_;
    my $t = entry_type($f);
    die "ledger entry $id: unknown type \"$f->{type}\"\n" unless defined $t;
    return -_int($id, 'charge', $f->{charge}) if $t eq 'charge';
    return _int($id, 'amount', $f->{amount}, 1);
}

# unix seconds: the ts field, or the stream id's time
sub entry_ts {
    my ($id, $f) = @_;
    return $f->{ts} if defined $f->{ts} && $f->{ts} =~ /^\d{1,12}\z/;
    my ($ms) = $id =~ /^(\d+)-/;
    return defined $ms ? int($ms / 1000) : undef;
}

sub _add {
    my ($sum, $d) = @_;
    $sum += $d;
    die "ledger sum out of range\n" if abs($sum) > $MAX_UNITS;
    return $sum;
}

# ---- reading the ledger --------------------------------------------------

# each_entry($r, $acct, $cb, from => ID, to => ID): $cb->($id, \%fields)
# for every entry from..to (inclusive; default all), oldest first
sub each_entry {
    my ($r, $acct, $cb, %o) = @_;
    my $key = acct_key($acct, 'ledger');
    my ($from, $to) = (defined $o{from} ? $o{from} : '-',
                       defined $o{to} ? $o{to} : '+');
    while (1) {
        my $a = $r->cmd('XRANGE', $key, $from, $to, 'COUNT', $CHUNK) || [];
        for my $e (@$a) {
            $cb->($e->[0], { @{ $e->[1] || [] } });
        }
        last if @$a < $CHUNK;
        $from = '(' . $a->[-1][0];
    }
    return;
}

# each_entry_back($r, $acct, $cb): newest first, until $cb returns true
sub each_entry_back {
    my ($r, $acct, $cb) = @_;
    my $key = acct_key($acct, 'ledger');
    my $to = '+';
    while (1) {
        my $a = $r->cmd('XREVRANGE', $key, $to, '-', 'COUNT', $CHUNK) || [];
        for my $e (@$a) {
            return if $cb->($e->[0], { @{ $e->[1] || [] } });
        }
        last if @$a < $CHUNK;
        $to = '(' . $a->[-1][0];
    }
    return;
}

# ledger_state($r, $acct) -> { opened => 1 } if the ledger has a credit,
# adjustment or opening entry, else { opened => 0, sum => the entries'
# sum, last => the newest entry's id ('0-0': none) }: what write_entry
# needs to compute an opening amount.  Newest first, so that an account
# with a credit is answered after a few entries.
sub ledger_state {
    my ($r, $acct) = @_;
    my %st = (opened => 0, sum => 0, last => '0-0');
    my $first = 1;
    each_entry_back($r, $acct, sub {
        my ($id, $f) = @_;
        $st{last} = $id if $first;
        $first = 0;
        my $t = entry_type($f);
        if (defined $t && $OPENS{$t}) {
            $st{opened} = 1;
            return 1;
        }
        $st{sum} = _add($st{sum}, entry_delta($id, $f));
        return 0;
    });
    return \%st;
}

my $SNAPSHOT_LUA = <<'EOT';
return {redis.call('GET', KEYS[1]),
        redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)}
EOT

# audit_account($r, $acct) -> { balance, sum, drift, opened, entries }:
# the balance and the newest entry's id are read together (one script), then
# the entries up to that id are summed: every write changes the balance
# and appends its entry at once, so the two agree unless something changed
# the balance behind the ledger's back.  drift = balance - sum, in units.
sub audit_account {
    my ($r, $acct) = @_;
    my $snap = $r->cmd('EVAL', $SNAPSHOT_LUA, 2, acct_key($acct, 'balance'),
                       acct_key($acct, 'ledger'));
    my ($bal, $newest) = @$snap;
    $bal = '0' unless defined $bal;
    die "balance of $acct is not an integer in range (\"$bal\")\n"
        unless $bal =~ /^-?\d{1,18}\z/;
    my %a = (balance => 0 + $bal, sum => 0, opened => 0, entries => 0);
    if (@{ $newest || [] }) {
        each_entry($r, $acct, sub {
            my ($id, $f) = @_;
            my $t = entry_type($f);
            $a{opened} = 1 if defined $t && $OPENS{$t};
            $a{sum} = _add($a{sum}, entry_delta($id, $f));
            $a{entries}++;
        }, to => $newest->[0][0]);
    }
    $a{drift} = $a{balance} - $a{sum};
    return \%a;
}

# ---- writing: one script per operation -------------------------------------

# KEYS: balance, ledger (one account, one slot)
# ARGV: op ('credit', 'adjustment' or 'open'), amount (signed units; ''
#   for open), reason, opened ('1': the ledger has a credit, adjustment or
#   opening entry), sum (what the ledger's entries up to `last` add to,
#   signed units), last (the newest entry's id then, '0-0' for none)
# -> {'ok', balance after, opening amount written ('' for none)}
#  | {'below', balance, balance it would have been}   (adjustment refused)
#  | {'opened'}                                        (open: nothing to do)
#
# The CLI reads the ledger beforehand (ledger_state) so that the script
# stays short on an account with a long history; the script adds the
# entries written since (after `last`) and sees whether one of them is a
# credit.  Nothing is written before every check has passed; INCRBY, the
# one write that can still fail (int64 overflow), comes first.
my $WRITE_LUA = <<'EOT';
local B = 1000000000

-- signed integers as two limbs, hi * B + lo, exact past 2^53
local function add(acc, s, neg)
  local sign, d = string.match(s, '^(%-?)(%d+)$')
  if not d or #d > 19 then
    error({err = 'ERR imgbill: not an integer: "' .. s .. '"'})
  end
  local m = ((sign == '-') ~= neg) and -1 or 1
  acc[1] = acc[1] + m * (#d > 9 and tonumber(string.sub(d, 1, -10)) or 0)
  acc[2] = acc[2] + m * tonumber(string.sub(d, -9))
end

local function norm(acc)
  local hi, lo = acc[1], acc[2]
  local c = math.floor(lo / B)
  lo = lo - c * B
  if lo < 0 then lo, c = lo + B, c - 1 elseif lo >= B then lo, c = lo - B, c + 1 end
  hi = hi + c
  if hi < 0 and lo > 0 then hi, lo = hi + 1, lo - B end
  return hi, lo
end

local function sign(acc)
  local hi, lo = norm(acc)
  if hi > 0 or lo > 0 then return 1 end
  if hi < 0 or lo < 0 then return -1 end
  return 0
end

local function str(acc)
  local hi, lo = norm(acc)
  local s = ''
  if hi < 0 or lo < 0 then s, hi, lo = '-', -hi, -lo end
  if hi == 0 then return s .. string.format('%d', lo) end
  return s .. string.format('%d%09d', hi, lo)
end

local balk, ledger = KEYS[1], KEYS[2]
local op, amount, reason, opened, sum, last =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1', ARGV[5], ARGV[6]

local t = redis.call('TYPE', ledger).ok
if t ~= 'none' and t ~= 'stream' then
  error({err = 'WRONGTYPE ' .. ledger .. ' is not a stream'})
end

local acc = {0, 0}
if not opened then
  add(acc, sum, false)
  local tail = redis.call('XRANGE', ledger, '(' .. last, '+')
  for _, e in ipairs(tail) do
    local f = {}
    for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
    local ty = f['type'] or 'charge'
    if ty == 'charge' then
      add(acc, f['charge'] or '', true)
    elseif ty == 'reversal' then
      add(acc, f['amount'] or '', false)
    elseif ty == 'credit' or ty == 'adjustment' or ty == 'opening' then
      opened = true
      break
    else
      error({err = 'ERR imgbill: ledger entry ' .. e[1] ..
                   ' has an unknown type "' .. ty .. '"'})
    end
  end
end
if opened and op == 'open' then return {'opened'} end

local bal = redis.call('GET', balk) or '0'
local now = redis.call('TIME')[1]

-- opening = balance - the entries' sum
local opening = ''
if not opened then
  local o = {0, 0}
  add(o, bal, false)
  add(o, str(acc), true)
  if sign(o) ~= 0 then opening = str(o) end
end

if op == 'open' then
  if opening ~= '' then
    redis.call('XADD', ledger, '*', 'type', 'opening', 'amount', opening,
               'reason', 'opening balance', 'ts', now, 'balance_after', bal)
  end
  return {'ok', bal, opening}
end

local nb = {0, 0}
add(nb, bal, false)
add(nb, amount, false)
if op == 'adjustment' and string.sub(amount, 1, 1) == '-' and sign(nb) < 0 then
  return {'below', bal, str(nb)}
end

redis.call('INCRBY', balk, amount)
local after = redis.call('GET', balk)
if opening ~= '' then
  redis.call('XADD', ledger, '*', 'type', 'opening', 'amount', opening,
             'reason', 'opening balance', 'ts', now, 'balance_after', bal)
end
redis.call('XADD', ledger, '*', 'type', op, 'amount', amount,
           'reason', reason, 'ts', now, 'balance_after', after)
return {'ok', after, opening}
EOT

# write_entry($r, $acct, $op, $units, $reason) -> the script's reply (see
# above); $op: credit, adjustment or open
sub write_entry {
    my ($r, $acct, $op, $units, $reason) = @_;
    my $st = ledger_state($r, $acct);
    return $r->cmd('EVAL', $WRITE_LUA, 2, acct_key($acct, 'balance'),
                   acct_key($acct, 'ledger'), $op,
                   defined $units ? $units : '', defined $reason ? $reason : '',
                   $st->{opened} ? 1 : 0, $st->{sum} || 0,
                   $st->{last} || '0-0');
}

# ---- reconciling with the relays' access logs -----------------------------

my %MONTH = (Jan => 1, Feb => 2, Mar => 3, Apr => 4, May => 5, Jun => 6,
             Jul => 7, Aug => 8, Sep => 9, Oct => 10, Nov => 11, Dec => 12);

# parse_billing_line($line) -> undef for a line not in conf.d's log_format
# imgbill_billing, else { time => unix seconds (its [$time_local]), status,
# req, acct, charge, outcome, ... }: each key=value field after the status
# as logged ("-" where nginx had no value; the first of a name counts).
# Only what follows the quoted request line is read: a client's request
# line cannot forge a field.
sub parse_billing_line {
    my ($l) = @_;
    my ($d, $mon, $y, $hh, $mm, $ss, $zs, $zh, $zm, $status, $rest) = $l =~
        m{^\S+\x20\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d)
          \x20([+-])(\d\d)(\d\d)\]\x20"(?:[^"\\]|\\.)*"\x20(\d{3})\x20
          ([^\r\n]*)\r?\n?\z}sx
        or return undef;
    my $m = $MONTH{$mon} or return undef;
    my $t = eval { timegm($ss, $mm, $hh, $d, $m - 1, $y) };
    return undef unless defined $t;
    my %f;
    while ($rest =~ /(?:^| )([a-z]+)=(\S*)/g) {
        $f{$1} = $2 unless exists $f{$1};
    }
    return undef unless defined $f{req} && defined $f{acct}
                        && defined $f{charge};
    $f{time} = $t - ($zs eq '-' ? -1 : 1) * ($zh * 3600 + $zm * 60);
    $f{status} = $status;
    return \%f;
}

# ledger_requests($r, $acct, from => ID) -> { request id => { charge =>
# units its charge entries took, reversed => units its reversal entries
# gave back, n => its charge entries, ts => the first one's time } }: the
# charge and reversal entries from stream id ID on (default: all), read as
# each_entry reads, a page at a time.  A charge without a request id is
# keyed "-" and its stream id: no log line names it.
sub ledger_requests {
    my ($r, $acct, %o) = @_;
    my %req;
    each_entry($r, $acct, sub {
        my ($id, $f) = @_;
        my $t = entry_type($f);
        return unless defined $t && ($t eq 'charge' || $t eq 'reversal');
        my $rid = defined $f->{request_id} && length $f->{request_id}
                ? $f->{request_id} : "-$id";
        my $q = $req{$rid} ||= { charge => 0, reversed => 0, n => 0 };
        if ($t eq 'charge') {
            $q->{charge} = _add($q->{charge}, -entry_delta($id, $f));
            $q->{ts} = entry_ts($id, $f) unless $q->{n}++;
        } else {
            $q->{reversed} = _add($q->{reversed}, entry_delta($id, $f));
        }
    }, from => $o{from});
    return \%req;
}

# reconcile_requests($logged, $ledger, $from, $to) -> findings, by request
# id, each { kind, rid, logged => [its logged charges, ascending], ledger =>
# what the ledger kept (its charges less their reversals) }, all in units:
#   $logged     { request id => { units => 1, ... } }: the distinct charges
#               the relays' log lines told its client (0 for none)
#   $ledger     ledger_requests()'s answer
#   $from, $to  the logs' time span (undef: none, nothing is unlogged)
# The kinds:
#   missing   a log line told a charge (> 0); the ledger has no charge
#   reversed  a log line told a charge; the ledger charged it and gave it
#             all back (its reply was never written): no charge is
#             expected, and this is not an error
#   differs   the lines disagree with each other, or with what the ledger
#             kept (a line telling 0.0000 of a charge the ledger kept too)
#   unlogged  a ledger charge made within [$from, $to] (its ts), not given
#             back, that no log line names
sub reconcile_requests {
    my ($logged, $ledger, $from, $to) = @_;
    my @out;
    for my $rid (keys %$logged) {
        my @u = sort { $a <=> $b } keys %{ $logged->{$rid} };
        my $told = $u[-1];
        my $q = $ledger->{$rid} || { charge => 0, reversed => 0, n => 0 };
        my $kept = $q->{charge} - $q->{reversed};
        my $kind;
        if ($told > 0 && !$q->{n}) {
            $kind = 'missing';
        } elsif ($told > 0 && $q->{reversed} && !$kept) {
            $kind = 'reversed';
        } elsif (@u > 1 || $kept != $told) {
            $kind = 'differs';
        } else {
            next;
        }
        push @out, { kind => $kind, rid => $rid, logged => \@u,
                     ledger => $kept };
    }
    if (defined $from) {
        for my $rid (keys %$ledger) {
            next if exists $logged->{$rid};
            my $q = $ledger->{$rid};
            my $kept = $q->{charge} - $q->{reversed};
            next unless $q->{n} && $kept && defined $q->{ts}
                        && $q->{ts} >= $from && $q->{ts} <= $to;
            push @out, { kind => 'unlogged', rid => $rid, logged => [],
                         ledger => $kept };
        }
    }
    return sort { $a->{rid} cmp $b->{rid} } @out;
}

# ---- accounts and keys -------------------------------------------------

# scan_keys($r, $pattern, $cb): $cb->(\@keys) per SCAN batch
sub scan_keys {
    my ($r, $pattern, $cb) = @_;
    my $cursor = '0';
    do {
        my $res = $r->cmd('SCAN', $cursor, 'MATCH', $pattern, 'COUNT', 1000);
        $cursor = $res->[0];
        $cb->($res->[1]) if @{ $res->[1] || [] };
    } while ($cursor ne '0');
    return;
}

# key_accounts($r) -> { sha256 hex => account } for every key mapping
sub key_accounts {
    my ($r) = @_;
    my %map;
    scan_keys($r, 'imgbill:key:*', sub {
        my ($keys) = @_;
        my @k = grep { /^imgbill:key:[0-9a-f]{64}\z/ } @$keys;
        return unless @k;
        my $v = $r->cmd('MGET', @k);
        for my $i (0 .. $#k) {
            next unless defined $v->[$i];
            $map{ substr($k[$i], length 'imgbill:key:') } = $v->[$i];
        }
    });
    return \%map;
}

# find_accounts($r) -> sorted account ids: those with a balance or a
# ledger, and those a key maps to
sub find_accounts {
    my ($r, $keymap) = @_;
    $keymap ||= key_accounts($r);
    my %acct = map { $_ => 1 } grep { valid_account($_) } values %$keymap;
    for my $what (qw(balance ledger)) {
        scan_keys($r, "imgbill:{*}:$what", sub {
            for (@{ $_[0] }) {
                $acct{$1} = 1 if /^imgbill:\{([A-Za-z0-9_.-]{1,64})\}:\Q$what\E\z/;
            }
        });
    }
    return sort keys %acct;
}

# an account is known if it has a balance, a ledger or a key
sub account_known {
    my ($r, $acct) = @_;
    return 1 if $r->cmd('EXISTS', acct_key($acct, 'balance'),
                        acct_key($acct, 'ledger'));
    my $map = key_accounts($r);
    return scalar grep { $_ eq $acct } values %$map;
}

# live_held($r, $acct) -> the sum of the holds that have not expired
sub live_held {
    my ($r, $acct, $now) = @_;
    $now = time unless defined $now;
    my $h = $r->cmd('HGETALL', acct_key($acct, 'holds')) || [];
    my $sum = 0;
    for (my $i = 1; $i < @$h; $i += 2) {
        my ($u, $exp) = $h->[$i] =~ /^(\d{1,18}):(\d+)\z/ or next;
        $sum = _add($sum, $u) if $exp > $now;
    }
    return $sum;
}

# random_key([PREFIX, N]): PREFIX (default "sk-") and N base62 characters
# (default 48: 285 bits) from the kernel's CSPRNG; bytes of 248 and up are
# dropped so that each character is uniform
sub random_key {
    my ($prefix, $n) = @_;
    $prefix = 'sk-' unless defined $prefix;
    $n ||= 48;
    my @c = ('0' .. '9', 'A' .. 'Z', 'a' .. 'z');
    open my $fh, '<:raw', '/dev/urandom' or die "/dev/urandom: $!\n";
    my $k = $prefix;
    while (length($k) < length($prefix) + $n) {
        my $got = read($fh, my $buf, 64);
        die "/dev/urandom: short read\n" unless $got;
        for my $b (unpack 'C*', $buf) {
            next if $b >= 248;
            $k .= $c[$b % 62];
            last if length($k) == length($prefix) + $n;
        }
    }
    close $fh;
    return $k;
}

# ---- output ----------------------------------------------------------------

sub iso_time {
    my ($t) = @_;
    return '-' unless defined $t && $t =~ /^\d+$/;
    return strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($t));
}

# the fields of one entry for output: type, signed amount in units, ...
sub entry_view {
    my ($id, $f) = @_;
    my $t = entry_type($f);
    my $delta = eval { entry_delta($id, $f) };
    return {
        error => $@,
        id    => $id,
        ts    => entry_ts($id, $f),
        type  => defined $t ? $t : $f->{type},
        delta => $delta,
        f     => $f,
    };
}

sub human_line {
    my ($v) = @_;
    my $f = $v->{f};
    my $fmt = sub {
        my $s = eval { format_units($_[0]) };
        defined $s ? $s : '?';
    };
    my $dash = sub { defined $_[0] && length $_[0] ? $_[0] : '-' };
    if ($v->{type} eq 'charge') {
        my $images = defined $f->{images} && $f->{images} ne '1'
                   ? " images=$f->{images}" : '';
        (my $api = defined $f->{api} ? $f->{api} : '') =~ s/[\x00-\x20\x7f]/?/g;
        $api = " api=$api" if defined $f->{api};
        return sprintf "%s %s %s %s in=%s out=%s%s%s charge=%s balance=%s\n",
            iso_time($v->{ts}),
            map({ $dash->($_) } $f->{request_id}, $f->{channel}, $f->{model},
                $f->{prompt_tokens}, $f->{completion_tokens}),
            $images, $api, $fmt->($f->{charge}), $fmt->($f->{balance_after});
    }
    my $amt = $fmt->($f->{amount});
    $amt = "+$amt" if $amt =~ /^\d/ && $amt ne '0.0000';
    if ($v->{type} eq 'reversal') {
        return sprintf "%s %s reversal amount=%s balance=%s charged=%s\n",
            iso_time($v->{ts}), $dash->($f->{request_id}), $amt,
            $fmt->($f->{balance_after}), iso_time($f->{charge_ts});
    }
    my $reason = defined $f->{reason} ? $f->{reason} : '';
    $reason =~ s/[\x00-\x1f\x7f]/?/g;
    return sprintf "%s %s amount=%s balance=%s reason=%s\n",
        iso_time($v->{ts}), $dash->($v->{type}), $amt,
        $fmt->($f->{balance_after}), $reason;
}

our @CSV_COLUMNS = qw(id time ts type amount balance_after request_id channel
                     model prompt_tokens completion_tokens reason images api);

sub csv_field {
    my ($s) = @_;
    $s = '' unless defined $s;
    return $s unless $s =~ /[",\r\n]/;
    $s =~ s/"/""/g;
    return qq{"$s"};
}

# the export's record of an entry (strings: money as decimal yuan)
sub export_record {
    my ($v) = @_;
    my $f = $v->{f};
    die "ledger entry $v->{id}: unknown type \"$v->{type}\"\n"
        unless defined entry_type($f);
    die $v->{error} unless defined $v->{delta};
    my $bal = eval { format_units($f->{balance_after}) };
    die "ledger entry $v->{id}: balance_after is not an integer\n"
        unless defined $bal;
    my %rec = (
        id            => $v->{id},
        ts            => $v->{ts},
        time          => iso_time($v->{ts}),
        type          => $v->{type},
        amount        => format_units($v->{delta}),
        balance_after => $bal,
    );
    if ($v->{type} eq 'charge') {
        $rec{$_} = $f->{$_} for qw(request_id channel model);
        for (qw(prompt_tokens completion_tokens)) {
            $rec{$_} = $f->{$_} if defined $f->{$_};
        }
        $rec{images} = defined $f->{images} ? $f->{images} : 1;
        $rec{api} = $f->{api} if defined $f->{api};
    } else {
        $rec{reason} = defined $f->{reason} ? $f->{reason} : '';
    }
    return \%rec;
}


# export_json(\@records) -> a JSON array, an entry a line, UTF-8: money as
# decimal strings, times and token counts as numbers
sub export_json {
    my ($recs) = @_;
    my $js = JSON::PP->new->canonical->utf8;
    my @lines;
    for my $rec (@$recs) {
        my %j;
        for (keys %$rec) {
            my $v = $rec->{$_};
            if (defined $v
                && /^(?:ts|prompt_tokens|completion_tokens|images)\z/
                && $v =~ /^\d{1,15}\z/) {
                $v += 0;
            } elsif (defined $v) {
                my $s = $v;
                $v = $s if utf8::decode($s);    # text, if it is UTF-8
            }
            $j{$_} = $v;
        }
        push @lines, $js->encode(\%j);
    }
    return @lines ? "[\n" . join(",\n", @lines) . "\n]\n" : "[]\n";
}

# export_csv(\@records) -> RFC 4180 text: a header, a row per record
sub export_csv {
    my ($recs) = @_;
    my $out = join(',', @CSV_COLUMNS) . "\r\n";
    for my $rec (@$recs) {
        $out .= join(',', map { csv_field($rec->{$_}) } @CSV_COLUMNS) . "\r\n";
    }
    return $out;
}

1;
