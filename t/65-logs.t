# Access-log variables, and raw API keys never stored or logged.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(key_hash);
use Time::HiRes qw(sleep);

my $h = Imgbill::Harness->new;
my %KEYS = (
    logs  => 'sk-LOGS-raw-key-7d2f91c0e4',
    logs2 => 'sk-LOGS2-raw-key-a0b1c2d3e4',
);
$h->account($_, $KEYS{$_}, 100000) for keys %KEYS;
my $UNKNOWN = 'sk-UNKNOWN-raw-key-55aa55aa';

sub entry_for {
    my ($rid) = @_;
    my ($e) = $h->access_wait(sub { ($_->{request_id} // '') eq $rid });
    return $e || {};
}

subtest 'charged metered request' => sub {
    my $r = $h->chat(key => $KEYS{logs});
    my $e = entry_for($r->{headers}{'x-imgbill-request-id'});
    is $e->{status}, 200, 'status';
    is $e->{account}, 'logs', '$imgbill_account';
    is $e->{channel}, 'metered', '$imgbill_channel';
    is $e->{charge}, '0.2465', '$imgbill_charge';
    is $e->{balance}, '9.7535', '$imgbill_balance';
    is $e->{prompt_tokens}, '560', '$imgbill_prompt_tokens';
    is $e->{completion_tokens}, '1120', '$imgbill_completion_tokens';
    is $e->{request_id}, $e->{nginx_request_id}, '$imgbill_request_id = $request_id';
};

subtest 'charged fast request' => sub {
    my $r = $h->chat(key => $KEYS{logs2}, path => '/fast/v1/chat/completions',
                     model => 'gemini-3-pro-image-preview');
    my $e = entry_for($r->{headers}{'x-imgbill-request-id'});
    is $e->{account}, 'logs2', '$imgbill_account';
    is $e->{channel}, 'fast', '$imgbill_channel';
    is $e->{charge}, '0.2000', '$imgbill_charge';
    is $e->{balance}, '9.8000', '$imgbill_balance';
    is $e->{prompt_tokens}, '1210', '$imgbill_prompt_tokens';
    is $e->{completion_tokens}, '2000', '$imgbill_completion_tokens';
};

subtest 'free request (upstream 500)' => sub {
    my $r = $h->chat(key => $KEYS{logs}, mock => 'status=500');
    my $e = entry_for($r->{headers}{'x-imgbill-request-id'});
    is $e->{status}, 500, 'status';
    is $e->{account}, 'logs', '$imgbill_account';
    is $e->{channel}, 'metered', '$imgbill_channel';
    is $e->{charge}, '0.0000', '$imgbill_charge 0.0000';
    is $e->{balance}, $r->{headers}{'x-imgbill-balance'},
        '$imgbill_balance = X-Imgbill-Balance';
};

subtest 'rejected request (unknown key)' => sub {
    my $r = $h->chat(key => $UNKNOWN);
    my $e = entry_for($r->{headers}{'x-imgbill-request-id'});
    is $e->{status}, 401, 'status';
    is $e->{account}, '-', 'no account';
    is $e->{request_id}, $r->{headers}{'x-imgbill-request-id'}, 'request id logged';
};

subtest 'unpriced location: variables are empty' => sub {
    my $r = $h->request('GET', '/');
    is $r->{status}, 200, 'the plain location answers';
    # nginx logs after the reply is out: under valgrind, noticeably after
    my ($e) = $h->access_wait(sub { ($_->{uri} // '') eq '/' });
    is $e->{account}, '-', 'no account';
    is $e->{charge}, '-', 'no charge';
};

# more traffic carrying the keys, in every way a key can arrive
my $logged = () = $h->access_entries;
$h->chat(key => $KEYS{logs}, mock => 'kind=nonjson');
$h->chat(key => $KEYS{logs}, model => 'gpt-4o');
$h->post('/v1/chat/completions', 'not json', Authorization => "Bearer $KEYS{logs}");
$h->post('/v1/chat/completions', { model => 'gemini-2.5-flash-image' },
         Authorization => "bearer $KEYS{logs2}");
$h->post('/v1/chat/completions', { model => 'gemini-2.5-flash-image' },
         Authorization => "Bearer  $UNKNOWN  ");
$h->request('GET', '/v1/chat/completions', undef, Authorization => "Bearer $KEYS{logs}");
# nginx logs after the reply is out: all six, before the logs are read
$h->access_wait(sub { 1 }, $logged + 6);

my $dump = $h->redis_dump;
my $elog = $h->error_log;
my $alog = $h->access_log;
ok length $elog, 'error.log is not empty (level info)';
for my $k (values(%KEYS), $UNKNOWN) {
    unlike $dump, qr/\Q$k\E/, "raw key $k is in no Redis key or value";
    unlike $elog, qr/\Q$k\E/, "... not in error.log";
    unlike $alog, qr/\Q$k\E/, "... not in access.log";
}
like $dump, qr/imgbill:key:\Q${\ key_hash($KEYS{logs}) }\E/, 'Redis holds the sha256 instead';

is_deeply [ $h->crashes ], [], 'no nginx worker crashed';

done_testing;
