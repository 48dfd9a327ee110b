# Reply shapes: where the image is, where usage is, how the body is framed.
# Each one is a success and must be charged exactly like the plain reply.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units);

my $h = Imgbill::Harness->new;

sub reply_ok {
    my ($name, %o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'rep', units => 100000);
    my $res = $h->chat(key => $key, model => $o{model}, path => $o{path},
                       mock => $o{mock});
    my $charge = $o{charge};
    my $after = 100000 - $charge;
    subtest $name => sub {
        is $res->{status}, 200, 'status 200' or diag substr($res->{body}, 0, 300);
        is $res->{headers}{'x-imgbill-charge'}, fmt_units($charge), 'charge header';
        is $h->balance($acct), $after, 'Redis balance';
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        is $l->[0]{charge}, $charge, 'ledger charge';
        is $l->[0]{prompt_tokens}, $o{pt}, 'ledger prompt_tokens' if defined $o{pt};
        is $l->[0]{completion_tokens}, $o{ct}, 'ledger completion_tokens' if defined $o{ct};
        is_deeply $h->holds($acct), {}, 'hold released';
        ok $res->{json}, 'body is JSON';
        is $res->{json}{mock_seen}{authorization}, undef, 'body is the mock reply';
        $o{check}->($res) if $o{check};
    };
}

reply_ok('decoy usage inside a JSON string is ignored',
    mock => 'kind=decoy', charge => 2465, pt => 560, ct => 1120,
    check => sub {
        like $_[0]{body}, qr/999999/, 'decoy text relayed unchanged';
    });
reply_ok('decoy with markdown image', mock => 'kind=decoy image=markdown',
    charge => 2465, pt => 560, ct => 1120);
reply_ok('decoy with parts image', mock => 'kind=decoy image=parts',
    charge => 2465, pt => 560, ct => 1120);
reply_ok('decoy on the fast channel records the real tokens',
    mock => 'kind=decoy', path => '/fast/v1/chat/completions',
    charge => 700, pt => 560, ct => 1120);

reply_ok('chunked reply', mock => 'chunked=1', charge => 2465, pt => 560, ct => 1120);
reply_ok('chunked 2 MB reply', mock => 'chunked=1 size=2000000',
    charge => 2465, pt => 560, ct => 1120,
    check => sub {
        my $u = $_[0]{json}{choices}[0]{message}{images}[0]{image_url}{url};
        is length($u), 2000000 + length('data:image/png;base64,'), 'image intact';
    });
reply_ok('usage before choices', mock => 'usage_first=1',
    charge => 2465, pt => 560, ct => 1120);
reply_ok('usage before choices, chunked, 3-pro', mock => 'usage_first=1 chunked=1',
    model => 'gemini-3-pro-image-preview', charge => 17232, pt => 1210, ct => 2000);
reply_ok('markdown image in content', mock => 'image=markdown',
    charge => 2465, pt => 560, ct => 1120);
reply_ok('content parts with image_url', mock => 'image=parts',
    charge => 2465, pt => 560, ct => 1120);
reply_ok('2 MB image (Content-Length)', mock => 'size=2000000',
    charge => 2465, pt => 560, ct => 1120,
    check => sub {
        is $_[0]{headers}{'content-length'}, length $_[0]{body},
            'Content-Length matches the body';
        my $u = $_[0]{json}{choices}[0]{message}{images}[0]{image_url}{url};
        is length($u), 2000000 + length('data:image/png;base64,'), 'image intact';
    });
reply_ok('slow reply (1.5 s) is charged normally', mock => 'sleep=1.5',
    charge => 2465, pt => 560, ct => 1120);

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
