# Issue 30: a full disk loses no charge.  The journal lives on a 64 KiB
# tmpfs of its own; Redis goes down (its data saved, as persistence keeps
# it) while a generation runs, so its settle goes to the journal:
#   a. the journal's last page is nearly used and the filesystem is full:
#      the line is written in part, then ENOSPC.  It is cut back (the file
#      holds whole lines only), the client gets 503 billing_unavailable
#      instead of an image it would never pay for, the alert says why with
#      its own errno, and imgbill_unrecorded_total counts it (and the
#      reversal that would undo a settle Redis might still have read);
#   a2. a stream in the same plight: its images went out already, so it
#      ends without its charge (usage and trailers), the alert tells it;
#   b. space freed, Redis still away: the next charge is journaled, the
#      client gets its image and the charge;
#   c. Redis back: the journal is replayed, that charge is in the ledger
#      once, the first request's nothing;
#   d. the same under load: thirty generations, Redis down, the disk full,
#      space freed mid-outage: the ledger holds exactly the charges told.
# At start, the filesystem's 64 KiB are under imgbill_journal_reserve
# (16m): a warning says so.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for error_ok dechunk);
use JSON::PP ();

plan skip_all => 'mounting a tmpfs needs root' if $> != 0;

my $mnt = tempdir('imgbill-disk-XXXXXX', TMPDIR => 1, CLEANUP => 1);
system('mount', '-t', 'tmpfs', '-o', 'size=64k,mode=0777', 'tmpfs', $mnt) == 0
    or plan skip_all => "cannot mount a tmpfs at $mnt (no CAP_SYS_ADMIN)";
END { system('umount', '-l', $mnt) if $mnt && -d $mnt }

my $journal = "$mnt/imgbill.journal";
my $h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s{^(\s*)imgbill_journal\s+[^;]*;}{${1}imgbill_journal $journal;}m
        or die 'no imgbill_journal line';
});

ok wait_for(sub { $h->error_log =~ /the journal "\Q$journal\E" has \d+ bytes free, under imgbill_journal_reserve \(16777216\)/ }, 10),
   'at start: the journal\'s filesystem is under the reserve, a warning says so';

sub lines { open my $f, '<', $journal or return (); local $/; my $t = <$f>; return $t // '' }

# a generation in flight, then Redis down: its settle will find it gone
sub held_then_redis_away {
    my ($key, $tag) = @_;
    my $s = $h->raw_send(key => $key, mock => "sleep=1 tag=$tag",
                         body => { model => 'gemini-2.5-flash-image',
                                   messages => [ { role => 'user', content => 'a fox' } ] });
    ok wait_for(sub { grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests }, 10),
       "$tag: the upstream has the request";
    $h->redis_stop(keep => 1);
    return $s;
}

# the metrics are the module's own: no Redis needed
sub metric {
    my ($name) = @_;
    my $r = $h->request('GET', '/imgbill/metrics');
    return $r->{body} =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# ---- a. a line written in part: cut back, 503, free ----------------------
my ($a1, $k1) = $h->fresh_account(prefix => 'full');
my $s1 = held_then_redis_away($k1, 'full');

# the journal's one page nearly used (D lines answer nothing: harmless),
# every other page of the filesystem taken
{
    open my $f, '>>', $journal or die "$journal: $!";
    my $pad = '';
    $pad .= 'D ' . ('0' x 32) . "\n" while length($pad) + 35 <= 4070;
    print $f $pad;
    close $f;
    fill();
}

# every page of the filesystem the journal does not hold, taken
sub fill {
    open my $fill, '>>', "$mnt/filler" or die;
    my $page = "\0" x 4096;
    1 while syswrite($fill, $page);
    close $fill;
}
my $before = length lines();
my $res = $h->raw_reply($s1);
error_ok $res, 503, 'server_error', 'billing_unavailable',
    'a charge recorded nowhere: 503 billing_unavailable, not the image';
unlike $res->{raw} // '', qr/data:image|"images"/, '... no image in it';
is length(lines()), $before, '... the journal cut back to its last whole line';
unlike lines(), qr/^S /m, '... no settlement line in it';
like $h->error_log, qr/cannot write "S [0-9a-f]{32} \Q$a1\E 2465 [^"]*" to the journal "\Q$journal\E" \(28: No space left on device\)/,
     '... the alert names the line and ENOSPC';
like $h->error_log, qr/the charge 0\.2465 of request [0-9a-f]{32}, account "\Q$a1\E", could be recorded nowhere; its reply is withheld \(503\)/,
     '... and what became of the reply';
my ($e1) = $h->access_wait(sub { ($_->{account} // '') eq $a1 }, 1, 10);
is $e1 && "$e1->{status} $e1->{charge} $e1->{reason}", '503 0.0000 unrecorded',
   '... logged 503, charge 0.0000, reason unrecorded';
ok wait_for(sub { $h->error_log =~ m{cannot write "V [0-9a-f]{32}/v \Q$a1\E \d+" to the journal} }, 10),
   '... its reversal could be recorded nowhere either';
is metric('imgbill_unrecorded_total'), 2, '... imgbill_unrecorded_total 2 (the S line, the V line)';

# ---- a2. a stream, the disk still full: its images went out, it ends ------
# without its charge, and the alert says what it owes
$h->redis_start;
my ($as, $ks) = $h->fresh_account(prefix => 'fullstream');
# the worker back on Redis replays what is owed (nothing) and empties the
# journal: then the disk is filled whole, no page left for a line
$h->request('GET', '/v1/models', undef, Authorization => "Bearer $ks");
ok wait_for(sub { !-s $journal }, 15), 'Redis back: the journal of D lines emptied';
fill();
{
    my $tag = 'fullstream';
    my $s = $h->raw_send(key => $ks, mock => "sleep=1 tag=$tag",
                         body => { model => 'gemini-2.5-flash-image', stream => JSON::PP::true(),
                                   messages => [ { role => 'user', content => 'a fox' } ] });
    ok wait_for(sub { grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests }, 10),
       "$tag: the upstream has the request";
    $h->redis_stop(keep => 1);
    my $r = $h->raw_reply($s);
    my ($body, $trailers) = dechunk($r->{body} // '');
    is $r->{status}, 200, 'a stream whose charge is recorded nowhere: 200, its images sent';
    like $body, qr/data:image/, '... with its image';
    ok !exists $trailers->{'x-imgbill-charge'}, '... and no X-Imgbill-Charge trailer';
    unlike $body, qr/"cost":/, '... nor a cost in its usage';
    like $h->error_log, qr/the charge 0\.2465 of request [0-9a-f]{32}, account "\Q$as\E", could be recorded nowhere; its stream ends without it/,
         '... the alert says what it owes';
    is metric('imgbill_unrecorded_total'), 3, '... imgbill_unrecorded_total 3';
}

# ---- b. space freed, Redis still away: journaled, the image goes out ------
unlink "$mnt/filler" or die;
$h->redis_start;
my ($a2, $k2) = $h->fresh_account(prefix => 'freed');
my $s2 = held_then_redis_away($k2, 'freed');
$res = $h->raw_reply($s2);
is $res->{status}, 200, 'space freed: 200';
is $res->{headers}{'x-imgbill-charge'}, '0.2465', '... charged 0.2465';
like lines(), qr/^S [0-9a-f]{32} \Q$a2\E 2465 /m, '... its settlement journaled';
my @bad = grep { !/^(?:[SRVHD] \S+(?: \S+)*)$/ } split /\n/, lines();
is_deeply \@bad, [], '... every line of the journal whole';

# ---- c. Redis back: replayed once ------------------------------------------
$h->redis_start;
ok wait_for(sub { ($h->balance($a2) // 0) == 100000 - 2465 }, 15),
   'Redis back: the journaled charge applied';
ok wait_for(sub { !-s $journal }, 15), '... the journal emptied';
is scalar @{ $h->ledger($a2) }, 1, '... one ledger entry';
is $h->balance($a1), 100000, 'the withheld reply: nothing charged';
is scalar @{ $h->ledger($a1) }, 0, '... no ledger entry';
is metric('imgbill_unrecorded_total'), 3, 'imgbill_unrecorded_total still 3';
# ---- d. under load: the disk full, Redis down, space freed mid-outage -----
# Thirty generations admitted at once, then Redis goes down: the first
# fifteen finish while the journal's filesystem is full, the rest after
# space is freed.  Whatever each client was told, the ledger agrees once
# Redis is back: every charge told is applied once, no other.
{
    my $N = 15;
    my ($al, $kl) = $h->fresh_account(prefix => 'load', units => 1_000_000);
    $h->request('GET', '/v1/models', undef, Authorization => "Bearer $kl");
    ok wait_for(sub { !-s $journal }, 15), 'load: the journal empty to begin with';
    fill();
    my $first = $h->in_flight($N, key => $kl, mock => 'sleep=1');
    my $later = $h->in_flight($N, key => $kl, mock => 'sleep=5');
    ok $h->wait_holds($al, 2 * $N, 15), "load: all @{[ 2 * $N ]} admitted";
    $h->redis_stop(keep => 1);
    my @r1 = $first->();
    unlink "$mnt/filler" or die;
    my @r2 = $later->();
    my %seen;
    $seen{$_}++ for @r1, @r2;
    note 'load: ' . join(', ', map { "$_ x$seen{$_}" } sort keys %seen);
    is scalar(grep { $_ eq '503 -' || $_ eq '503 0.0000' } @r1), $N,
       "load: the $N that ended on a full disk got 503";
    is scalar(grep { $_ eq '200 0.2465' } @r2), $N,
       "load: the $N that ended after space was freed got their image and 0.2465";
    $h->redis_start;
    ok wait_for(sub { !-s $journal }, 20), 'load: Redis back, the journal replayed and emptied';
    my @l = @{ $h->ledger($al) };
    my $net = 0;
    $net += ($_->{type} // 'charge') eq 'reversal' ? -$_->{amount} : $_->{charge} for @l;
    is $net, 2465 * $N, 'load: the ledger holds exactly the charges told';
    is $h->balance($al), 1_000_000 - 2465 * $N, '... and so does the balance';
    is scalar(grep { ($_->{type} // 'charge') eq 'charge' } @l)
       - scalar(grep { ($_->{type} // '') eq 'reversal' } @l), $N,
       "... $N charges standing";
}

is_deeply [ $h->crashes ], [], 'no worker crashed';

done_testing;
