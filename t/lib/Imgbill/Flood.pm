package Imgbill::Flood;

# A flood of large request bodies, and what the relay's worker does with
# them (issue 28): many clients at once, each sending one large JSON body
# at a set pace, all on non-blocking sockets in one process, each reading
# its reply while it still writes (a server may answer before the body is
# in, then discard the rest or close).  Core Perl only, no Test::More: the
# test (t/28-swell.t) and scripts/bench's swell case both use it.
#
#   use lib 't/lib';
#   use Imgbill::Flood qw(chat_body flood flood_summary rss peak_reset);
#
#   chat_body(size => 30_000_000, images => 6, model => ..., b64 => N)
#       -> a chat completion body, one user message: the text "draw" and
#          `images` image_url parts, each a data:image/png;base64 URL of
#          pseudo-random (deterministic) base64; the image length is chosen
#          so that the whole body is about `size` bytes, or is `b64` chars.
#          Each image's base64 length is a multiple of 4 (no padding).
#   image_bytes($body) -> the largest decoded image of a chat_body (bytes)
#
#   flood(port => P, path => '/v1/chat/completions', body => \$body,
#         headers => [ Authorization => 'Bearer sk-x', ... ],
#         clients => 20, rate => 20_000_000, chunk => 1_000_000,
#         timeout => 60, after_reply => 'send' | 'stop',
#         tick => sub { ... })
#       -> { seconds => S, clients => [ {...}, ... ], len => body bytes }
#     Every client connects to 127.0.0.1:P, writes the head (Connection:
#     close, Content-Type: application/json unless given, Content-Length),
#     then the body in `chunk`-byte steps, one every chunk/rate seconds
#     (a step the socket cannot take at once is caught up as it drains).
#     It reads all the while.  after_reply 'send' (the default): a client
#     whose reply came before its body was all sent goes on sending, as an
#     attacker would; 'stop': it stops there.  A write error (EPIPE,
#     ECONNRESET) ends the writing; after a complete reply it is no
#     failure; nor is a server that stops reading after its reply: a
#     client that could write nothing for `stall` seconds (10) after its
#     reply stops writing (wstall).  `tick` runs about every 0.1 s (e.g.
#     to sample a worker's RSS).  Each client's hash:
#       status (599: no complete reply), reason, headers (lc name ->
#       value, or [values]), body (de-chunked), json, complete,
#       sent (body bytes written), sent_at_reply (body bytes written when
#       the reply was complete), early (the reply came before the whole
#       body was written), replied (seconds from the start), sent_all
#       (seconds to write the whole body, undef if it never was), werr,
#       rerr (the errno text of a failed write or read), eof (the server
#       closed), wstall, timeout
#   flood_summary($r) -> one line: statuses, time, early replies, errors
#
#   rss($pid, 'VmRSS' | 'VmHWM') -> KiB from /proc/PID/status (undef if gone)
#   peak_reset($pid) -> true once VmHWM is reset to the current RSS
#       (writes 5 to /proc/PID/clear_refs; needs the right to)
#
#   my $sink = Imgbill::Flood::Sink->new(port => P, log => FILE);
#       a fast upstream on 127.0.0.1:P: one forked child per connection
#       reads the request (Content-Length or chunked), hashes the body as
#       it comes (SHA-256, nothing kept), and answers what
#       scripts/mock-upstream answers by default: one chat.completion with
#       an image in message.images[] and usage by model
#       (gemini-2.5-flash-image 560/1120, gemini-3-pro-image-preview
#       1210/2000, other 100/1000); on /v1/images/ paths, an Images API
#       reply of one b64_json image with gpt-image-1's usage of a
#       sixteen-image edit (50 text + 6208 image in, 1056 out).  The mock
#       decodes every body with
#       JSON::PP (about 12 s for 30 MB): too slow for twenty of them.
#   $sink->requests -> [ {pid, method, path, headers, content_length} ]:
#       one per request whose head arrived (logged before its body)
#   $sink->bodies -> [ {pid, length, sha256, complete, model} ]: one per
#       request whose body was read to its end (or given up on)
#   $sink->stop   (also when the object goes away, or its parent dies)
#
#   perl -It/lib -MImgbill::Flood -e 'exit Imgbill::Flood::cli(@ARGV)' -- \
#       [--clients N] [--size BYTES] [--images N] [--rate BYTES_PER_S]
#       [--chunk BYTES] [--timeout S] [--header 'Name: value']...
#       HOST:PORT/PATH
#     one flood, one line: statuses=401:20 seconds=S sent_all=S early=N
#       werr=N rerr=N wstall=N timeouts=N charges=0.2465:20 body=BYTES
#       image=BYTES (the largest decoded); flood_summary's line on stderr
#
# Addresses are 127.0.0.1 only.

use strict;
use warnings;
use Carp qw(croak);
use Digest::SHA qw(sha256_base64);
use Errno qw(EAGAIN EWOULDBLOCK EINTR EPIPE ECONNRESET EINPROGRESS);
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

use Exporter 'import';
our @EXPORT_OK = qw(chat_body image_bytes flood flood_summary rss peak_reset);

my $PNG = 'iVBORw0KGgoAAAANSUhEUgAA';    # a PNG's first bytes, in base64

# ---- the body -------------------------------------------------------------

my $POOL;    # 1 MiB of pseudo-random base64, made once
sub _pool {
    return $POOL if defined $POOL;
    my @p;
    my $d = 'imgbill issue 28';
    my $n = 0;
    while ($n < (1 << 20) + 64) {
        $d = sha256_base64($d);    # 43 chars of [A-Za-z0-9+/]
        push @p, $d;
        $n += length $d;
    }
    return $POOL = join '', @p;
}

# $n chars of base64 for image $i: the PNG start, then pieces of the pool
# taken from offsets that depend on $i and the piece (no two alike)
sub _b64 {
    my ($n, $i) = @_;
    my $pool = _pool();
    my $plen = 1 << 20;
    my $s = substr($PNG, 0, $n);
    my $x = 2654435761 * ($i + 1) % 4294967291;
    while (length $s < $n) {
        $x = (1103515245 * $x + 12345) % 2147483648;
        my $take = 65536;
        $take = $n - length $s if $take > $n - length $s;
        $s .= substr($pool, $x % ($plen - 65536), $take);
    }
    return $s;
}

sub chat_body {
    my (%o) = @_;
    my $images = $o{images} // 6;
    my $model  = $o{model} // 'gemini-2.5-flash-image';
    my $head = qq({"model":"$model","messages":[{"role":"user","content":)
             . qq([{"type":"text","text":"draw"});
    my @part = (qq(,{"type":"image_url","image_url":{"url":"data:image/png;base64,),
                qq("}}));
    my $tail = ']}]}';
    my $b64 = $o{b64};
    if (!defined $b64) {
        my $size = $o{size} // 30_000_000;
        my $over = length($head) + length($tail)
                 + $images * (length($part[0]) + length($part[1]));
        croak "chat_body: size $size leaves no room for $images images"
            if $images && $size - $over < 4 * $images;
        $b64 = $images ? int(($size - $over) / $images / 4) * 4 : 0;
    }
    croak 'chat_body: b64 must be a multiple of 4' if $b64 % 4;
    return join '', $head,
        (map { $part[0] . _b64($b64, $_) . $part[1] } 1 .. $images), $tail;
}

sub image_bytes {
    my ($body) = @_;
    my $max = 0;
    while ($body =~ /;base64,([A-Za-z0-9+\/]*)(=*)"/g) {
        my $n = length($1) * 3 / 4 - length $2;
        $max = $n if $n > $max;
    }
    return $max;
}

# ---- /proc ----------------------------------------------------------------

sub rss {
    my ($pid, $field) = @_;
    $field //= 'VmRSS';
    open my $s, '<', "/proc/$pid/status" or return undef;
    while (<$s>) { return $1 + 0 if /^\Q$field\E:\s+(\d+)/ }
    return undef;
}

sub peak_reset {
    my ($pid) = @_;
    open my $f, '>', "/proc/$pid/clear_refs" or return 0;
    print $f "5" or return 0;
    close $f or return 0;
    return 1;
}

# ---- a reply --------------------------------------------------------------

# _reply($raw, $eof) -> the reply if it is complete in $raw (or, at EOF,
# as much of it as came, complete => 0 when it was cut), else undef
sub _reply {
    my ($raw, $eof) = @_;
    my $hend = index($raw, "\r\n\r\n");
    if ($hend < 0) {
        return undef unless $eof;
        return { status => 599, complete => 0, headers => {}, body => '',
                 raw => $raw };
    }
    my $head = substr($raw, 0, $hend);
    my $rest = substr($raw, $hend + 4);
    my ($st, $reason) = $head =~ m{^HTTP/1\.[01] (\d{3}) ?([^\r\n]*)};
    my %h;
    while ($head =~ /^([\w-]+):[ \t]*(.*?)\r?$/mg) {
        my ($k, $v) = (lc $1, $2);
        $h{$k} = !exists $h{$k} ? $v
               : ref $h{$k}    ? [ @{ $h{$k} }, $v ] : [ $h{$k}, $v ];
    }
    my ($body, $complete);
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        ($body, $complete) = ('', 0);
        my $w = $rest;
        while ($w =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            if ($n == 0) { $complete = $w =~ /\r\n\z/ ? 1 : 0; last }
            last if length $w < $n + 2;
            $body .= substr($w, 0, $n, '');
            $w =~ s/\A\r\n// or last;
        }
    } elsif (defined $h{'content-length'} && $h{'content-length'} =~ /^(\d+)$/) {
        $complete = length $rest >= $1 ? 1 : 0;
        $body = substr($rest, 0, $1);
    } else {
        ($body, $complete) = ($rest, $eof ? 1 : 0);
    }
    return undef unless $complete || $eof;
    return {
        status   => $complete ? $st // 599 : 599,
        got      => $st,
        reason   => $reason,
        headers  => \%h,
        body     => $body,
        json     => scalar eval { JSON::PP->new->decode($body) },
        complete => $complete,
        raw      => $head,
    };
}

# ---- the flood ------------------------------------------------------------

sub flood {
    my (%o) = @_;
    my $port = $o{port} or croak 'flood: port';
    my $bref = ref $o{body} ? $o{body} : \$o{body};
    my $len = length $$bref;
    my $n = $o{clients} // 20;
    my $rate = $o{rate} // 20_000_000;
    my $chunk = $o{chunk} // 1_000_000;
    my $step = $chunk / $rate;
    my $timeout = $o{timeout} // 60;
    my $after = $o{after_reply} // 'send';
    my $stall = $o{stall} // 10;
    croak "flood: after_reply 'send' or 'stop'" unless $after =~ /^(send|stop)$/;

    my @hdr = @{ $o{headers} || [] };
    my %given = map { lc $hdr[$_] => 1 } grep { !($_ % 2) } 0 .. $#hdr;
    unshift @hdr, 'Content-Type' => 'application/json' unless $given{'content-type'};
    my $head = sprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
                       $o{path} // '/v1/chat/completions')
             . join('', map { "$hdr[$_]: $hdr[$_ + 1]\r\n" } grep { !($_ % 2) } 0 .. $#hdr)
             . "Content-Length: $len\r\n\r\n";

    local $SIG{PIPE} = 'IGNORE';
    my $t0 = time;
    my @c;
    for my $i (0 .. $n - 1) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Timeout => 5)
            or croak "flood: connect 127.0.0.1:$port: $!";
        $s->blocking(0);
        binmode $s;
        push @c, { s => $s, fd => fileno $s, t0 => time, hsent => 0, sent => 0,
                   resp => '' };
    }
    my $deadline = $t0 + $timeout;
    my $next_tick = 0;
    my $hlen = length $head;

    # the body bytes client $c may have written by $now
    my $allowed = sub {
        my ($c, $now) = @_;
        my $a = $chunk * (int(($now - $c->{t0}) / $step) + 1);
        return $a > $len ? $len : $a;
    };
    my $finish = sub {
        my ($c, $now) = @_;
        $c->{done} = 1;
        $c->{finished} = $now - $t0;
        close $c->{s};
        delete $c->{s};
    };
    my $read = sub {
        my ($c, $now) = @_;
        for (1 .. 16) {
            my $r = sysread($c->{s}, my $buf, 65536);
            if (!defined $r) {
                next if $! == EINTR;
                last if $! == EAGAIN || $! == EWOULDBLOCK;
                $c->{rerr} = "$!";
                $c->{rdone} = 1;
                last;
            }
            if ($r == 0) {
                $c->{eof} = 1;
                $c->{rdone} = 1;
                last;
            }
            $c->{resp} .= $buf if length $c->{resp} < (16 << 20);
            $c->{first_byte} //= $now - $t0;
        }
        if (!$c->{reply}) {
            my $rep = _reply($c->{resp}, $c->{rdone});
            if ($rep) {
                $c->{reply} = $rep;
                $c->{replied} = $now - $t0;
                $c->{sent_at_reply} = $c->{sent};
                $c->{wdone} = 1 if $after eq 'stop' || !$rep->{complete};
            }
        }
        $c->{wdone} = 1 if $c->{rdone} && !$c->{reply};
    };
    my $write = sub {
        my ($c, $now) = @_;
        return unless _put($c, \$head, 'hsent', $hlen);
        my $a = $allowed->($c, $now);
        my $was = $c->{sent};
        my $more = _put($c, $bref, 'sent', $a);
        $c->{wrote_at} = $now if $c->{sent} > $was;
        return unless $more;
        if ($c->{sent} >= $len) {
            $c->{sent_all} = $now - $t0;
            $c->{wdone} = 1;
        }
    };

    while (my @live = grep { !$_->{done} } @c) {
        my $now = time;
        if ($now >= $deadline) {
            for my $c (@live) {
                $c->{timeout} = 1;
                $c->{reply} //= _reply($c->{resp}, 1);
                $finish->($c, $now);
            }
            last;
        }
        if ($o{tick} && $now >= $next_tick) {
            $o{tick}->();
            $next_tick = $now + 0.1;
        }
        my ($rin, $win) = ('', '');
        my $wake = $now + 0.1;
        $wake = $deadline if $deadline < $wake;
        for my $c (@live) {
            vec($rin, $c->{fd}, 1) = 1 unless $c->{rdone};
            if (!$c->{wdone} && $c->{reply}
                && $now - ($c->{wrote_at} // $c->{t0}) > $stall
                && $now - $t0 - $c->{replied} > $stall) {
                $c->{wstall} = 1;
                $c->{wdone} = 1;
            }
            next if $c->{wdone};
            if ($c->{hsent} < $hlen || $c->{sent} < $allowed->($c, $now)) {
                vec($win, $c->{fd}, 1) = 1;
            } else {
                my $next = $c->{t0} + $step * (int(($now - $c->{t0}) / $step) + 1);
                $wake = $next if $next < $wake;
            }
        }
        my $wait = $wake - time;
        $wait = 0 if $wait < 0;
        my $nf = select(my $rout = $rin, my $wout = $win, undef, $wait);
        if ($nf < 0) {
            next if $! == EINTR;
            croak "flood: select: $!";
        }
        $now = time;
        for my $c (@live) {
            $read->($c, $now) if !$c->{rdone} && $nf > 0 && vec($rout, $c->{fd}, 1);
            $write->($c, $now) if !$c->{wdone} && $nf > 0 && vec($wout, $c->{fd}, 1);
            $finish->($c, $now)
                if $c->{wdone} && ($c->{rdone} || $c->{reply});
        }
    }

    my @out;
    for my $c (@c) {
        my $rep = $c->{reply} || { status => 599, complete => 0, headers => {},
                                   body => '' };
        push @out, {
            %$rep,
            sent          => $c->{sent},
            sent_at_reply => $c->{sent_at_reply},
            early         => ($c->{reply} && ($c->{sent_at_reply} // 0) < $len) ? 1 : 0,
            replied       => $c->{replied},
            first_byte    => $c->{first_byte},
            sent_all      => $c->{sent_all},
            finished      => $c->{finished},
            werr          => $c->{werr},
            rerr          => $c->{rerr},
            eof           => $c->{eof},
            wstall        => $c->{wstall},
            timeout       => $c->{timeout},
        };
    }
    return { seconds => time - $t0, clients => \@out, len => $len,
             rate => $rate, chunk => $chunk };
}

sub _count {
    my (@v) = @_;
    my %n;
    $n{$_}++ for @v;
    return join(',', map { "$_:$n{$_}" } sort keys %n) || '-';
}

sub flood_summary {
    my ($r) = @_;
    my @c = @{ $r->{clients} };
    my @sent = grep { defined } map { $_->{sent_all} } @c;
    my ($slow) = sort { $b <=> $a } @sent;
    my @rep = grep { defined } map { $_->{replied} } @c;
    my ($last) = sort { $b <=> $a } @rep;
    return sprintf '%d clients x %d bytes at %.1f MB/s each: statuses %s in %.2f s '
                 . '(last reply at %s s, slowest body sent in %s s); replies before '
                 . 'the body was all sent %d (after %s bytes at most); write errors '
                 . '%s, read errors %s, server closed %d, writes stalled after the '
                 . 'reply %d, timeouts %d',
        scalar @c, $r->{len}, $r->{rate} / 1e6,
        _count(map { $_->{status} } @c), $r->{seconds},
        defined $last ? sprintf('%.2f', $last) : '-',
        defined $slow ? sprintf('%.2f', $slow) : '-',
        scalar(grep { $_->{early} } @c),
        (sort { $b <=> $a } map { $_->{sent_at_reply} // 0 } grep { $_->{early} } @c)[0] // '-',
        _count(map { $_->{werr} } grep { $_->{werr} } @c),
        _count(map { $_->{rerr} } grep { $_->{rerr} } @c),
        scalar(grep { $_->{eof} } @c),
        scalar(grep { $_->{wstall} } @c),
        scalar(grep { $_->{timeout} } @c);
}

# ---- the command line (scripts/bench) -----------------------------------

sub cli {
    my (@argv) = @_;
    require Getopt::Long;
    my %o = (clients => 20, size => 30_000_000, images => 6, rate => 20_000_000,
             chunk => 1_000_000, timeout => 120);
    my @headers;
    Getopt::Long::GetOptionsFromArray(\@argv, \%o, 'clients=i', 'size=i', 'images=i',
        'rate=i', 'chunk=i', 'timeout=f', 'header=s' => \@headers)
        && @argv == 1
        or die "usage: flood [--clients N] [--size BYTES] [--images N] [--rate B/S] "
             . "[--chunk B] [--timeout S] [--header 'Name: value']... HOST:PORT/PATH\n";
    my ($host, $port, $path) = $argv[0] =~ m{^(127\.[\d.]+):(\d+)(/.*)$}
        or die "flood: the target must be 127.x.x.x:PORT/PATH\n";
    my $body = chat_body(size => $o{size}, images => $o{images});
    my @h = map { /^([^:]+):\s*(.*)$/ ? ($1, $2) : die "flood: bad header $_\n" } @headers;
    my $r = flood(port => $port, path => $path, body => \$body, headers => \@h,
                  map { $_ => $o{$_} } qw(clients rate chunk timeout));
    my @c = @{ $r->{clients} };
    my @sent = sort { $b <=> $a } grep { defined } map { $_->{sent_all} } @c;
    print STDERR flood_summary($r), "\n";
    printf "statuses=%s seconds=%.2f sent_all=%s early=%d werr=%d rerr=%d "
         . "wstall=%d timeouts=%d charges=%s body=%d image=%d\n",
        _count(map { $_->{status} } @c), $r->{seconds},
        @sent ? sprintf('%.2f', $sent[0]) : '-',
        scalar(grep { $_->{early} } @c), scalar(grep { $_->{werr} } @c),
        scalar(grep { $_->{rerr} } @c), scalar(grep { $_->{wstall} } @c),
        scalar(grep { $_->{timeout} } @c),
        _count(map { $_->{headers}{'x-imgbill-charge'} // '-' } @c),
        length $body, image_bytes($body);
    return 0;
}

# ---- the sink: a fast upstream ------------------------------------------

# _put($c, \$bytes, $field, $upto): write $bytes from $c->{$field} up to
# $upto, at most 1 MiB a call, advancing $c->{$field}; false when the
# socket would block or failed (then $c->{werr} and wdone say so)
sub _put {
    my ($c, $bref, $field, $upto) = @_;
    while ($c->{$field} < $upto) {
        my $want = $upto - $c->{$field};
        $want = 1 << 20 if $want > 1 << 20;
        my $w = syswrite($c->{s}, $$bref, $want, $c->{$field});
        if (!defined $w) {
            next if $! == EINTR;
            return 0 if $! == EAGAIN || $! == EWOULDBLOCK;
            $c->{werr} = "$!";
            $c->{wdone} = 1;
            return 0;
        }
        $c->{$field} += $w;
    }
    return 1;
}


package Imgbill::Flood::Sink;

use Carp qw(croak);
use Digest::SHA;
use Errno qw(EINTR EAGAIN);
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

my %USAGE = ('gemini-2.5-flash-image' => [560, 1120],
             'gemini-3-pro-image-preview' => [1210, 2000]);

sub new {
    my ($class, %o) = @_;
    my $port = $o{port} or croak 'Sink: port';
    my $log = $o{log} or croak 'Sink: log';
    open my $lf, '>', $log or croak "Sink: $log: $!";
    close $lf;
    pipe(my $rd, my $wr) or croak "pipe: $!";
    my $parent = $$;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        close $rd;
        setpgrp(0, 0);
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        $SIG{PIPE} = 'IGNORE';
        my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                        Proto => 'tcp', Listen => 128, ReuseAddr => 1);
        syswrite $wr, $srv ? "ok\n" : "listen 127.0.0.1:$port: $!\n";
        close $wr;
        POSIX::_exit(1) unless $srv;
        _serve_loop($srv, $log, $parent);
        POSIX::_exit(0);
    }
    close $wr;
    my $said = <$rd> // 'no word from the sink';
    close $rd;
    if ($said ne "ok\n") {
        waitpid $pid, 0;
        croak "Sink: $said";
    }
    return bless { pid => $pid, owner => $$, log => $log, port => $port }, $class;
}

sub port { $_[0]{port} }

sub _serve_loop {
    my ($srv, $log, $parent) = @_;
    my $rin = '';
    vec($rin, fileno $srv, 1) = 1;
    while (1) {
        # the test that started it is gone: so is the sink
        POSIX::_exit(0) if getppid() != $parent;
        1 while waitpid(-1, WNOHANG) > 0;
        my $n = select(my $rout = $rin, undef, undef, 0.5);
        next unless $n && $n > 0;
        my $c = $srv->accept or next;
        my $pid = fork;
        if (!defined $pid) { close $c; next }
        if ($pid == 0) {
            close $srv;
            eval { _serve($c, $log) };
            POSIX::_exit(0);
        }
        close $c;
    }
}

sub _log {
    my ($log, $h) = @_;
    my $line = JSON::PP->new->canonical->encode($h) . "\n";
    open my $f, '>>', $log or return;
    syswrite $f, $line;
    close $f;
}

sub _serve {
    my ($c, $log) = @_;
    binmode $c;
    my $deadline = time + 300;
    my $more = sub {
        my ($buf) = @_;
        my $rin = '';
        vec($rin, fileno $c, 1) = 1;
        while (1) {
            my $left = $deadline - time;
            return 0 if $left <= 0;
            my $n = select(my $rout = $rin, undef, undef, $left);
            if ($n < 0) { next if $! == EINTR; return 0 }
            next unless $n;
            my $r = sysread($c, $$buf, 262144, length $$buf);
            if (!defined $r) { next if $! == EINTR || $! == EAGAIN; return 0 }
            return $r;
        }
    };
    my $buf = '';
    my $hend;
    while (($hend = index($buf, "\r\n\r\n")) < 0) {
        return unless $more->(\$buf);
        return if length $buf > 1 << 20;
    }
    my $head = substr($buf, 0, $hend);
    $buf = substr($buf, $hend + 4);
    my ($method, $path) = $head =~ /^(\S+) (\S+)/ or return;
    my %h;
    while ($head =~ /^([^:\r\n]+):[ \t]*(.*?)\r?$/mg) { $h{lc $1} = $2 }
    _log($log, { event => 'request', pid => $$, method => $method, path => $path,
                 headers => \%h, content_length => $h{'content-length'} });

    my $sha = Digest::SHA->new(256);
    my ($len, $complete, $start) = (0, 0, '');
    my $take = sub {
        my ($piece) = @_;
        $sha->add($piece);
        $len += length $piece;
        $start .= substr($piece, 0, 4096 - length $start) if length $start < 4096;
    };
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        CHUNK: while (1) {
            my $i;
            while (($i = index($buf, "\r\n")) < 0) { last CHUNK unless $more->(\$buf) }
            my ($sz) = substr($buf, 0, $i) =~ /^([0-9a-fA-F]+)/ or last;
            $sz = hex $sz;
            substr($buf, 0, $i + 2, '');
            if ($sz == 0) { $complete = 1; last }
            while ($sz > 0) {
                if (!length $buf) { last CHUNK unless $more->(\$buf) }
                my $p = substr($buf, 0, $sz, '');
                $take->($p);
                $sz -= length $p;
            }
            while (length $buf < 2) { last CHUNK unless $more->(\$buf) }
            substr($buf, 0, 2, '');
        }
    } else {
        my $want = $h{'content-length'} // 0;
        while (1) {
            if (length $buf) {
                my $p = substr($buf, 0, $want - $len);
                $take->($p);
                $buf = '';
            }
            last if $len >= $want;
            last unless $more->(\$buf);
        }
        $complete = $len >= $want ? 1 : 0;
    }
    my ($model) = $start =~ /"model"\s*:\s*"([^"\\]*)"/;
    _log($log, { event => 'body', pid => $$, length => $len, sha256 => $sha->hexdigest,
                 complete => $complete, model => $model });
    return unless $complete;

    my ($pt, $ct) = @{ (defined $model && $USAGE{$model}) || [100, 1000] };
    my $b64 = 'iVBORw0KGgoAAAANSUhEUgAA' . ('A' x (2048 - 24));
    my $J = JSON::PP->new;
    # OpenAI's Images API (an edit of sixteen images): gpt-image-1's usage
    my $out = $path =~ m{^/v1/images/} ? sprintf '{"created":%d,"data":[{"b64_json":"%s"}],'
        . '"usage":{"input_tokens":6258,"input_tokens_details":{"image_tokens":6208,'
        . '"text_tokens":50},"output_tokens":1056,"total_tokens":7314}}' . "\n", time, $b64
        : sprintf '{"id":"chatcmpl-sink%d","object":"chat.completion","created":%d,'
        . '"model":%s,"choices":[{"index":0,"message":{"role":"assistant",'
        . '"content":"Here is your image.","images":[{"type":"image_url","image_url":'
        . '{"url":"data:image/png;base64,%s"}}]},"finish_reason":"stop"}],'
        . '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}' . "\n",
        $$, time, $J->encode($model // 'unknown'), $b64, $pt, $ct, $pt + $ct;
    my $data = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             . "Connection: close\r\nContent-Length: " . length($out) . "\r\n\r\n$out";
    my $off = 0;
    while ($off < length $data) {
        my $w = syswrite($c, $data, length($data) - $off, $off);
        if (!defined $w) { next if $! == EINTR; return }
        $off += $w;
    }
    shutdown($c, 1);
    my $junk = '';
    $deadline = time + 2;
    1 while $more->(\$junk);
    close $c;
}

sub _lines {
    my ($self, $event) = @_;
    open my $f, '<', $self->{log} or return [];
    my @r;
    while (my $l = <$f>) {
        my $j = eval { JSON::PP->new->decode($l) } or next;
        push @r, $j if $j->{event} eq $event;
    }
    return \@r;
}

sub requests { $_[0]->_lines('request') }
sub bodies   { $_[0]->_lines('body') }

sub stop {
    my ($self) = @_;
    return if $self->{owner} != $$;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', -$pid;
    # reaped as it exits, or killed after 5 s: a wait, not a poll
    my $reaped = eval {
        local $SIG{ALRM} = sub { die "alarm\n" };
        alarm 5;
        waitpid($pid, 0);
        alarm 0;
        1;
    };
    return if $reaped;
    kill 'KILL', -$pid;
    waitpid($pid, 0);
}

sub DESTROY { local ($?, $!, $@); $_[0]->stop }


1;
