# Hostile input: each a clear error or a safe, documented outcome, never a
# crash or a wrong charge.  Ends with a bounded, seeded mutation fuzz of the
# request validator through real HTTP.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok);

my $h = Imgbill::Harness->new;
my $FLASH = 'gemini-2.5-flash-image';
$h->account('hostile', 'sk-hostile', 1000000);

sub raw_post {
    my ($body, %o) = @_;
    return $h->post($o{path} // '/v1/chat/completions', $body,
                    Authorization => 'Bearer sk-hostile',
                    ($o{mock} ? ('X-Mock' => $o{mock}) : ()));
}

# --- requests
{
    my $before = $h->snapshot;
    my $deep = '{"model":"' . $FLASH . '","x":' . ('[' x 100000) . (']' x 100000) . '}';
    my $res = raw_post($deep);
    is $res->{status}, 400, '100000-deep nesting: 400';
    is $res->{json}{error}{code}, 'invalid_json', '... invalid_json';

    $res = raw_post(qq({"model":"$FLASH","messages":[{"role":"user","content":"a\0b"}]}));
    is $res->{json}{error}{code}, 'invalid_json', 'a raw NUL byte in a string: invalid_json';

    # jansson 2.14 itself accepts this one (fuzzing found it)
    $res = raw_post(qq({"model":"$FLASH","n":1\0,"messages":[]}));
    is $res->{status}, 400, 'a raw NUL byte after a number: 400';
    like $res->{json}{error}{message} // '', qr/NUL byte/, '... saying why';

    $res = raw_post(qq({"model":"$FLASH\\u0000x"}));
    is $res->{status}, 400, 'a \\u0000 inside the model name: 400, never truncated to a priced model';

    $res = raw_post(qq({"model":"$FLASH","n":1e999999}));
    is $res->{status}, 400, 'a number too large for a double: 400';

    $res = raw_post(qq({"model":"$FLASH", "model":"$FLASH"}));
    is $res->{json}{error}{code}, 'invalid_json', 'duplicate keys, even equal ones: invalid_json';

    $res = raw_post(qq(\xEF\xBB\xBF{"model":"$FLASH"}));
    is $res->{status}, 400, 'a byte-order mark before the object: 400';

    is $h->snapshot, $before, 'none of them touched Redis';
    is $h->upstream_hits, 0, 'none reached the upstream';
}

# --- replies: counts that are not counts are never billed by the token
for my $case (
    [ 'a count beyond 64 bits', 'pt=99999999999999999999999 ct=1120' ],
    [ 'a negative count',       'pt=-5 ct=1120' ],
    [ 'a count beyond 2^31',    'pt=2147483648 ct=1120' ],
) {
    my ($name, $mock) = @$case;
    my $bal = $h->balance('hostile');
    my $res = $h->chat(key => 'sk-hostile', mock => $mock);
    is $res->{status}, 200, "$name: the image still reaches the client";
    is $res->{headers}{'x-imgbill-charge'}, '0.0000', "$name: metered, not charged";
    is $h->balance('hostile'), $bal, "$name: balance unchanged";
    my $fast = $h->chat(key => 'sk-hostile', mock => $mock,
                        path => '/fast/v1/chat/completions');
    is $fast->{headers}{'x-imgbill-charge'}, '0.0700', "$name: fast, the price as usual";
}

# --- mutation fuzz of the request validator through HTTP
{
    srand(20261122);
    my @seeds = (
        qq({"model":"$FLASH","messages":[{"role":"user","content":"a cat"}]}),
        qq({"model":"$FLASH","messages":[{"role":"user","content":[{"type":"text","text":"edit"},)
          . qq({"type":"image_url","image_url":{"url":"data:image/png;base64,QUJDRA=="}}]}]}),
        qq({"model":"gemini-3-pro-image-preview","stream":false,"n":1,"size":"4096x4096"}),
    );
    my @tokens = ('{', '}', '[', ']', '"', ':', ',', '\\', '\\u', "\0", "\xff",
                  '1e400', '-', 'null', '"model"', '"image_url"', 'data:', ';base64,');
    my $n = $ENV{IMGBILL_HTTP_FUZZ} || 300;
    my (%status, $bad);
    my $bal0 = $h->balance('hostile');
    my $led0 = @{ $h->ledger('hostile') };
    for my $i (1 .. $n) {
        my $s = $seeds[rand @seeds];
        for (1 .. 1 + int rand 4) {
            my $pos = int rand(length($s) + 1);
            my $op = int rand 3;
            if ($op == 0) { substr($s, $pos, 0) = $tokens[rand @tokens] }
            elsif ($op == 1) { substr($s, $pos, 1 + int rand 8) = '' if $pos < length $s }
            else { substr($s, $pos, 1) = chr(int rand 256) if $pos < length $s }
        }
        my $res = raw_post($s);
        $status{ $res->{status} }++;
        my $ok = $res->{status} == 200
            || ($res->{status} =~ /^(400|402|413)$/ && $res->{json}
                && $res->{json}{error}{code});
        unless ($ok) {
            $bad++;
            diag "input $i: status $res->{status}: " . substr($res->{body} // '', 0, 200)
                if $bad <= 3;
        }
    }
    ok !$bad, "$n mutated bodies: each a 200 or a JSON 400/402/413 ("
        . join(', ', map { "$_ x$status{$_}" } sort keys %status) . ')';
    my $charged = 0;
    $charged += $_->{charge} for @{ $h->ledger('hostile') }[ $led0 .. $#{ $h->ledger('hostile') } ];
    is $bal0 - $h->balance('hostile'), $charged,
        'money moved only with ledger entries, to the unit';
    is_deeply $h->holds('hostile'), {}, 'no hold left';
}

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
