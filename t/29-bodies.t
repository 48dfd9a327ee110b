# Request bodies are read only for a key Redis knows, as they stream into
# nginx's temporary file, and go upstream from there:
#   - an unknown key is answered 401 before its body is read (even one
#     that waits for "100 Continue"); a key revoked is believed until the
#     admission refuses it, then looked up again
#   - an OpenAI stream's stream_options rewritten in a body that sits in a
#     file, in memory, or came chunked: every byte the upstream reads is
#     the client's, but the ones the rewrite changes; and the same again
#     when the first upstream is down and nginx sends the body to the next
#   - imgbill_bodies_in_flight: past it, 503 relay_busy and nothing spent
#   - a body of more structure than the compact limit: 413, nothing spent
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for dechunk);
use Digest::SHA qw(sha256_hex);
use IO::Select;
use JSON::PP;

my $FLASH = 'gemini-2.5-flash-image';

# a body of $kb KiB or so: a prompt and one inline image, its stream
# options as given (raw JSON text, or undef for none), a trailing newline
sub body_text {
    my ($kb, $options) = @_;
    my $b64 = join '', map { chr(65 + ($_ * 7) % 26) } 1 .. $kb * 1024;
    my $opt = defined $options ? qq("stream_options":$options,) : '';
    return qq({"model":"$FLASH","stream":true,$opt"messages":[{"role":"user",)
         . qq("content":[{"type":"text","text":"draw"},{"type":"image_url",)
         . qq("image_url":{"url":"data:image/png;base64,$b64"}}]}]}\n);
}

# what the upstream should read: the rewrite, done here by hand
sub rewritten {
    my ($body, $options) = @_;
    my $tail = ',"stream_options":{"include_usage":true}}';
    if (!defined $options) {
        $body =~ s/\}\n\z/$tail/ or die;
    } elsif ($options =~ /"include_usage":(false|null)/) {
        my $was = $1;
        $body =~ s/"include_usage":$was/'"include_usage":true' . (' ' x (length($was) - 4))/e
            or die;
    } else {
        # with the ',' before it
        my $member = qq(,"stream_options":$options);
        $body =~ s/\Q$member\E/' ' x length $member/e or die;
        $body =~ s/\}\n\z/$tail/ or die;
    }
    return $body;
}

sub stream_case {
    my ($h, $name, %o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'bd');
    my $body = body_text($o{kb}, $o{options});
    my $tag = "t" . int(rand 1e9);
    my $sent = $body;
    if ($o{chunked}) {
        # odd-sized chunks, straddling nginx's 16k buffer
        my @c;
        for (my ($at, $i) = (0, 0); $at < length $body; $i++) {
            my $n = (997, 1, 16384, 4093, 17)[ $i % 5 ];
            push @c, substr($body, $at, $n);
            $at += $n;
        }
        $sent = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } @c) . "0\r\n\r\n";
    }
    my $head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             . "Connection: close\r\nAuthorization: Bearer $key\r\n"
             . "X-Mock: tag=$tag\r\nContent-Type: application/json\r\n"
             . ($o{chunked} ? "Transfer-Encoding: chunked\r\n"
                            : 'Content-Length: ' . length($body) . "\r\n")
             . "\r\n";
    my $res = $h->raw_http(request => $head . $sent);
    my (undef, $trailers) = dechunk($res->{body} // '');
    my ($up) = grep { ($_->{mock}{tag} // '') eq $tag } $h->upstream_requests;
    my $want = rewritten($body, $o{options});
    subtest $name => sub {
        is $res->{status}, 200, 'status 200';
        ok $up && $up->{json}, 'the upstream read JSON';
        ok $up && $up->{include_usage}, '... asking for the usage';
        is $up && $up->{body_length}, length $want, '... of the rewritten length';
        is $up && $up->{body_sha256}, sha256_hex($want),
           '... every byte the client sent but the rewrite\'s';
        is $trailers->{'x-imgbill-charge'}, '0.2465', 'trailer X-Imgbill-Charge 0.2465';
        ok wait_for(sub { ($h->balance($acct) // 0) == 100000 - 2465 }),
           'Redis: 0.2465 charged';
    };
}

my $h = Imgbill::Harness->new;

# ---- stream_options, wherever the body is ----------------------------------

for my $where ([ 'in a file', 200 ], [ 'in memory', 4 ]) {
    my ($what, $kb) = @$where;
    stream_case($h, "$what: no stream_options: one asked for at the end",
                kb => $kb, options => undef);
    stream_case($h, "$what: include_usage false: true in its place",
                kb => $kb, options => '{"include_usage":false}');
    stream_case($h, "$what: include_usage null, another member: true in its place",
                kb => $kb, options => '{"x":1,"include_usage":null}');
    stream_case($h, "$what: stream_options null: blanked, one asked for at the end",
                kb => $kb, options => 'null');
    stream_case($h, "$what: stream_options {}: blanked, one asked for at the end",
                kb => $kb, options => '{}');
}
stream_case($h, 'chunked, 200 KiB in odd chunks: one asked for at the end',
            kb => 200, options => undef, chunked => 1);
stream_case($h, 'chunked, include_usage false: true in its place',
            kb => 200, options => '{"include_usage":false}', chunked => 1);
# 4 MiB written at once: nginx reads it in slices, giving way to other
# connections between them (issue 29); none of it lost or reordered
stream_case($h, 'in a file, 4 MiB at once, read in slices: every byte arrives',
            kb => 4096, options => '{"include_usage":false}');
stream_case($h, 'chunked, 4 MiB at once, read in slices: every byte arrives',
            kb => 4096, options => undef, chunked => 1);

# ---- the first upstream down: nginx sends the body to the next -------------

{
    my $dead = Imgbill::Harness::free_port();
    my $hr = Imgbill::Harness->new(conf_filter => sub {
        $_[0] =~ s{^(\s*)(server\s+127\.0\.0\.1:\d+);(\s*#\s*site:\s*upstream\s*)$}
                  {${1}server 127.0.0.1:$dead;\n${1}$2 backup;$3}m or die;
    });
    for my $o (undef, '{"include_usage":false}', 'null') {
        stream_case($hr, 'first upstream refused, the backup reads: '
                         . ($o // 'no stream_options'), kb => 200, options => $o);
    }
    like $hr->error_log, qr/connect\(\) failed .*127\.0\.0\.1:$dead/,
         'the dead upstream was tried first';
}

# ---- keys: no body read for a key Redis does not know ------------------------

{
    # "Expect: 100-continue": nginx asks for the body only once imgbill
    # reads it; a stranger is answered first
    my $before = $h->snapshot;
    my $s = $h->raw_send(key => 'sk-nobody-here', upto => 'headers',
                         body => 'x' x 100,
                         headers => [ 'Content-Length' => 10_000_000,
                                      'Expect' => '100-continue' ]);
    my $res = $h->raw_reply($s);
    is $res->{status}, 401, 'unknown key, body withheld: 401 all the same';
    is $res->{json}{error}{code}, 'invalid_api_key', '... invalid_api_key';
    unlike $res->{raw}, qr{^HTTP/1\.1 100}, '... never asked for the body';
    is $h->snapshot, $before, '... Redis unchanged';

    # a key revoked: believed until the admission says otherwise
    my ($acct, $key) = $h->fresh_account(prefix => 'rv');
    is $h->chat(key => $key)->{status}, 200, 'a key: 200';
    $h->redis('DEL', 'imgbill:key:' . Imgbill::Harness::key_hash($key));
    my $r = $h->chat(key => $key);
    is $r->{status}, 401, 'revoked: the admission refuses it';
    $r = $h->raw_reply($h->raw_send(key => $key, upto => 'headers',
                                    body => 'x' x 1_000_000));
    is $r->{status}, 401, '... and now it is refused before its body';
    is $h->balance($acct), 100000 - 2465, '... the one request charged';
}

# ---- bodies in flight -----------------------------------------------------------

{
    my $hb = Imgbill::Harness->new(conf_filter => sub {
        $_[0] =~ s/^imgbill_bodies_in_flight\s+\S+;/imgbill_bodies_in_flight 100k;/m or die;
    });
    my ($acct, $key) = $hb->fresh_account(prefix => 'fl');
    my $big = body_text(150);
    $big =~ s/"stream":true,//;

    # one body always may be read, whatever its size
    is $hb->chat(key => $key, body => $big)->{status}, 200, 'one 150 KiB body: 200';

    # a body being read (it waits for "100 Continue" before it is sent)
    my $a = $hb->raw_send(key => $key, upto => 'headers', body => $big,
                          headers => [ 'Expect' => '100-continue' ]);
    my $cont = '';
    my $sel = IO::Select->new($a);
    wait_for(sub {
        sysread($a, $cont, 4096, length $cont) if $sel->can_read(0.05);
        $cont =~ /\r\n\r\n/;
    }, 10);
    like $cont, qr{^HTTP/1\.1 100 Continue}, 'a body being read (100 Continue)';

    my $before = $hb->snapshot;
    $hb->rejected_ok('a second body past imgbill_bodies_in_flight: 503 relay_busy', 503,
                     'server_error', 'relay_busy', sub { $hb->chat(key => $key, body => $big) });
    is $hb->snapshot, $before, '... nothing held, nothing spent';

    print $a $big;
    my $ra = $hb->raw_reply($a);
    like $ra->{raw}, qr{HTTP/1\.1 200 }, 'the first body, sent: 200';
    is $hb->chat(key => $key, body => $big)->{status}, 200, 'then another: 200';
    ok wait_for(sub { ($hb->balance($acct) // 0) == 100000 - 3 * 2465 }),
       'Redis: three charges of 0.2465';
}

# ---- structure past the compact limit ----------------------------------------------

{
    my ($acct, $key) = $h->fresh_account(prefix => 'cx');
    my $body = qq({"model":"$FLASH","messages":[],"x":[) . join(',', (1) x 150_000) . ']}';
    $h->rejected_ok('300 KB of structure: 413 request_too_large', 413,
                    'invalid_request_error', 'request_too_large',
                    sub { $h->chat(key => $key, body => $body) },
                    check => sub { like $_[0]{json}{error}{message}, qr/262144 bytes of JSON/,
                                        'the message names the limit' });
}

done_testing;
