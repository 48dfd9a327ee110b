# OpenAI's Images API streamed (issue 19): "stream": true on generations
# and stream=true on edits answer with "image_generation.partial_image" /
# "image_generation.completed" events (edits: "image_edit.*"), passed to the
# client as they come, byte for byte but for the cost:
#   - only a completed event is an image delivered; their usages add up:
#     gpt-image-1 50 in, 1056 out -> 0.3059; n 2 (the input in the first
#     completed event) -> 0.6101; an edit, text 40 + image 388 in -> 0.3334
#   - the last completed event's usage carries "cost", whether the event is
#     short (held whole) or megabytes long (held from its usage on)
#   - the charge and the balance in the trailers, never in the header
#   - a stream cut before a completed event is free, and logged; a client
#     that leaves after a partial image does not leave free: the relay
#     reads on and the completed image is billed
#   - the official SDK's images.generate({stream: true, partial_images: 2})
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(wait_for dechunk sse_events);
use JSON::PP ();

my $h = Imgbill::Harness->new;
my $J = JSON::PP->new;
my $B = 'imgbillStreamBoundary42';

# a streamed call on a raw socket: status, headers, the events (raw text
# and JSON), the trailers
sub call {
    my (%o) = @_;
    my @hdr = $o{form} ? ('Content-Type' => "multipart/form-data; boundary=$B") : ();
    my $s = $h->raw_send(key => $o{key}, path => $o{path} // '/v1/images/generations',
                         body => $o{body}, mock => $o{mock}, headers => \@hdr);
    my $raw = $h->raw_reply($s);
    my ($data, $tr, $complete) = dechunk($raw->{body});
    my @text = grep { length } split /(?<=\n\n)/, $data;
    my @ev = map { $J->decode($_) } sse_events($data);
    return { status => $raw->{status}, headers => $raw->{headers}, data => $data,
             text => \@text, ev => \@ev, trailers => $tr, complete => $complete };
}

sub form {
    my (@parts) = @_;
    my $body = '';
    for my $p (@parts) {
        my ($name, $value, $file) = @$p;
        $body .= "--$B\r\nContent-Disposition: form-data; name=\"$name\""
               . (defined $file ? "; filename=\"$file\"\r\nContent-Type: image/png\r\n" : "\r\n")
               . "\r\n$value\r\n";
    }
    return $body . "--$B--\r\n";
}

# a stream billed: trailers, the cost in the last completed event, the
# ledger, no hold
sub streamed_ok {
    my ($r, $acct, $charge, $images, $prefix, $name) = @_;
    my $units = int($charge * 10000 + 0.5);
    subtest $name => sub {
        is $r->{status}, 200, 'status 200';
        like $r->{headers}{'content-type'}, qr{^text/event-stream}, 'an event stream';
        ok !exists $r->{headers}{'x-imgbill-charge'}, 'no charge in the header';
        like $r->{headers}{'x-imgbill-request-id'} // '', qr/^[0-9a-f]{32}$/, 'a request id';
        ok $r->{complete}, 'the chunked body ends';
        is $r->{trailers}{'x-imgbill-charge'}, $charge, "trailer X-Imgbill-Charge $charge";
        is $r->{trailers}{'x-imgbill-balance'}, sprintf('%.4f', (100000 - $units) / 10000),
           'trailer X-Imgbill-Balance';
        my @done = grep { $_->{type} eq "$prefix.completed" } @{ $r->{ev} };
        is scalar @done, $images, "$images completed event(s)";
        is $done[-1]{usage}{cost}, $charge + 0, "the last one's usage.cost is $charge";
        ok !grep({ exists $_->{usage}{cost} } @done[0 .. $#done - 1]), '... and only it';
        for my $t (@{ $r->{text} }) {
            my ($ev) = $t =~ /^event: (\S+)\n/;
            my ($type) = $t =~ /"type":"([^"]+)"/;
            is $ev, $type, "event: $type" if defined $ev;
        }
        ok wait_for(sub { ($h->balance($acct) // 0) == 100000 - $units }), "Redis: $charge charged";
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        is $l->[0]{images}, $images, "... for $images image(s)";
        is $l->[0]{api}, 'openai_images', '... by the Images API';
        ok $h->wait_holds($acct, 0, 10), 'no hold left';
    };
}

# ---- generations -----------------------------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'st');
    my $r = call(key => $k, body => { model => 'gpt-image-1', prompt => 'a fox',
                                      stream => JSON::PP::true(), partial_images => 2 });
    streamed_ok($r, $a, '0.3059', 1, 'image_generation',
                'a stream, 2 partial images: 50 in, 1056 out: 0.3059');
    is_deeply [ map { $_->{type} } @{ $r->{ev} } ],
              [ ('image_generation.partial_image') x 2, 'image_generation.completed' ],
              '... the events in their order';
    is_deeply [ map { $_->{partial_image_index} } @{ $r->{ev} }[0, 1] ], [ 0, 1 ],
              '... the partial images as sent';
    is $r->{ev}[2]{usage}{output_tokens}, 1056, '... the usage as the upstream sent it';

    ($a, $k) = $h->fresh_account(prefix => 'st');
    $r = call(key => $k, body => { model => 'gpt-image-1', prompt => 'two foxes', n => 2,
                                   stream => JSON::PP::true(), partial_images => 1 });
    streamed_ok($r, $a, '0.6101', 2, 'image_generation',
                'n 2: two completed events, their usages added: 0.6101');

    # megabyte events: the completed one is held only from its usage on
    ($a, $k) = $h->fresh_account(prefix => 'st');
    $r = call(key => $k, mock => 'size=1500000; gap=0.05',
              body => { model => 'gpt-image-1', prompt => 'a fox', stream => JSON::PP::true(),
                        partial_images => 1 });
    streamed_ok($r, $a, '0.3059', 1, 'image_generation', 'events of 1.5 MB: 0.3059, the cost in');
    is length($r->{ev}[1]{b64_json}), 1_500_000, '... the image whole';

    # events about as long as what is held before one passes as it comes
    # (64 KiB): wherever the usage's '{' falls, before or after that, the
    # completed event carries the cost
    for my $size (map { 60_000 + 1_000 * $_ } 0 .. 10) {
        ($a, $k) = $h->fresh_account(prefix => 'st');
        $r = call(key => $k, mock => "size=$size",
                  body => { model => 'gpt-image-1', prompt => 'a fox', stream => JSON::PP::true() });
        is_deeply [ $r->{ev}[-1]{usage}{cost}, $r->{trailers}{'x-imgbill-charge'} ], [ 0.3059, '0.3059' ],
                  "an event of a $size-byte image: the cost in it, the charge in the trailers";
    }

    # per image on /fast/: gpt-image-1 at 1024x1024
    ($a, $k) = $h->fresh_account(prefix => 'st');
    $r = call(key => $k, path => '/fast/v1/images/generations',
              body => { model => 'gpt-image-1', prompt => 'a fox', size => '1024x1024',
                        stream => JSON::PP::true(), n => 2 });
    streamed_ok($r, $a, '2.4048', 2, 'image_generation', '/fast/, n 2 at 1024x1024: 2 x 1.2024');
}

# ---- edits -----------------------------------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'se');
    my $r = call(key => $k, path => '/v1/images/edits', form => 1, mock => 'pt=40; it=388',
                 body => form([ model => 'gpt-image-1' ], [ prompt => 'a fox' ],
                              [ stream => 'true' ], [ partial_images => 1 ],
                              [ image => "\x89PNG" . ('x' x 5000), 'fox.png' ]));
    streamed_ok($r, $a, '0.3334', 1, 'image_edit',
                'an edit streamed: text 40 + image 388 in, 1056 out: 0.3334');
}

# ---- cut before a completed event: free -------------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'cut');
    my $r = call(key => $k, mock => 'cut=2',
                 body => { model => 'gpt-image-1', prompt => 'a fox', stream => JSON::PP::true(),
                           partial_images => 2 });
    is scalar(grep { $_->{type} =~ /partial_image$/ } @{ $r->{ev} }), 2,
       'a stream cut after its partial images: they reached the client';
    ok !grep({ $_->{type} =~ /completed$/ } @{ $r->{ev} }), '... no completed event';
    ok $h->wait_holds($a, 0, 10), '... its hold given back';
    is $h->balance($a), 100000, '... free';
    is scalar @{ $h->ledger($a) }, 0, '... no ledger entry';
    ok wait_for(sub { $h->error_log =~ /the upstream ended the stream of request \w+ of account "\Q$a\E" .*before an image was finished, after a partial one; .*not charged/ }),
       '... and logged: the upstream ended it before an image was finished';
}

# ---- a client that leaves after a partial image ------------------------------
{
    my ($a, $k) = $h->fresh_account(prefix => 'gone');
    my $s = $h->raw_send(key => $k, path => '/v1/images/generations', mock => 'gap=0.3',
                         body => { model => 'gpt-image-1', prompt => 'a fox',
                                   stream => JSON::PP::true(), partial_images => 2 });
    my $got = '';
    my $sel = IO::Select->new($s);
    while ($got !~ /partial_image_index":0/ && $sel->can_read(10)) {
        sysread($s, my $buf, 65536) or last;
        $got .= $buf;
    }
    like $got, qr/image_generation\.partial_image/, 'a partial image reached the client';
    close $s;
    ok wait_for(sub { ($h->balance($a) // 0) == 100000 - 3059 }, 15),
       '... which left: the relay read on, the completed image billed 0.3059';
    ok $h->wait_holds($a, 0, 10), '... no hold left';
}

# ---- the official SDK ---------------------------------------------------------
SKIP: {
    my $sdk = eval { Imgbill::Harness::sdk_dir() };
    skip "the openai SDK: $@", 1 unless $sdk;
    my ($a, $k) = $h->fresh_account(prefix => 'sdk');
    my $json = `node $sdk/images-stream.mjs ${\ $h->url('') } $k 2>&1`;
    is $?, 0, 'SDK: the script ran' or diag $json;
    my $r = eval { $J->decode($json) } || {};
    is_deeply $r->{types}, [ ('image_generation.partial_image') x 2, 'image_generation.completed' ],
              'SDK, images.generate stream with partial_images 2: the events in order';
    is $r->{cost}, 0.3059, '... usage.cost 0.3059 in the completed event';
    is $r->{output_tokens}, 1056, '... and its usage';
    ok wait_for(sub { ($h->balance($a) // 0) == 100000 - 3059 }), 'SDK: Redis charged 0.3059';
}

done_testing;
