# Redemption codes: `imgbill codes-new` prints codes once and stores only
# their SHA-256; POST /v1/imgbill/redeem credits the caller's account once,
# as a ledger credit with reason "redeem" that names the code and the key.
# Tried as a key holder who wants money for nothing would: the same code
# twice, twenty at once from two accounts, an expired code, a wrong key,
# bodies of every wrong shape, and a flood past conf.d's rate limit.
# Every refusal leaves Redis as it was.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use POSIX ();
use Digest::SHA qw(sha256_hex);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units error_ok);

# conf.d lets a key try a code every 6 s, 5 at once: lifted here (the
# limit itself is checked at the end, on a relay of its own).  The burst
# too: nginx's clock moves once per turn of its event loop, and under
# valgrind one turn can read all ten of a key's racing redeems at one
# millisecond, where burst=5 refuses the seventh however high the rate.
my $h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s/(limit_req_zone \S+ zone=imgbill_redeem:\S+) rate=\S+;/$1 rate=10000r\/s;/
        or die 'no imgbill_redeem zone in conf.d';
    $_[0] =~ s/(limit_req zone=imgbill_redeem) burst=\d+/$1 burst=100/
        or die 'no imgbill_redeem limit in conf.d';
});

sub redeem {
    my ($key, $body, %hdr) = @_;
    return $h->request('POST', '/v1/imgbill/redeem', $body,
                       defined $key ? (Authorization => "Bearer $key") : (), %hdr);
}

sub codes {
    my (@args) = @_;
    my ($rc, $out, $err) = $h->cli('codes-new', @args);
    return ($rc, [ $out =~ /^(\S+)$/mg ], $err);
}

my ($acct, $key) = $h->fresh_account(prefix => 'shop', units => 10000);
my ($other, $okey) = $h->fresh_account(prefix => 'other', units => 0);

# ---- codes-new --------------------------------------------------------------

my ($rc, $made, $err) = codes('10', '--count', '3');
is $rc, 0, 'codes-new 10 --count 3: exit 0';
is scalar @$made, 3, '... three codes printed';
like $_, qr/^rc-[0-9A-Za-z]{24}$/, "... $_: rc- and 24 base62 characters (142 bits)"
    for @$made;
is scalar(keys %{ { map { $_ => 1 } @$made } }), 3, '... all different';
is $h->redis('ZCARD', 'imgbill:codes'), 3, '... indexed in imgbill:codes';
for my $c (@$made) {
    my %f = @{ $h->redis('HGETALL', 'imgbill:code:' . sha256_hex($c)) };
    is $f{amount}, 100000, "... imgbill:code:<sha256> holds amount 100000";
    ok abs($f{created} - time) < 60 && !exists $f{expires} && !exists $f{used_at},
        '... made now, no expiry, unused';
}
my $dump = $h->snapshot;
is_deeply [ grep { index($dump, $_) >= 0 } @$made ], [], 'no raw code stored in Redis';

# hostile arguments: refused with a message, nothing written
{
    my $before = $h->snapshot;
    for my $bad ([ '0', '--count', 1 ], [ '-5', '--count', 1 ], [ 'ten', '--count', 1 ],
                 [ '1.00001', '--count', 1 ], [ '10' ], [ '10', '--count', 0 ],
                 [ '10', '--count', 10001 ], [ '10', '--count', 'x' ],
                 [ '10', '--count', 1, '--expires', '2030-13-01T00:00:00Z' ],
                 [ '10', '--count', 1, '--expires', '2030-02-30T00:00:00Z' ],
                 [ '10', '--count', 1, '--expires', '2030-01-01' ],
                 [ '10', '--count', 1, '--expires', '2030-01-01T00:00:00+08:00' ],
                 [ '10', '--count', 1, '--expires', '2001-01-01T00:00:00Z' ])
    {
        my ($brc, $out, $berr) = $h->cli('codes-new', @$bad);
        is $brc, 2, "codes-new @$bad: exit 2";
        is $out, '', '... prints no code';
        like $berr, qr/^imgbill: \S.*\n/, '... says why: ' . (split /\n/, $berr)[0];
    }
    is $h->snapshot, $before, '... and writes nothing';
}

# ---- a redemption -------------------------------------------------------------

my $code = $made->[0];
{
    my $r = redeem($key, { code => $code });
    is $r->{status}, 200, 'redeem: 200';
    like $r->{headers}{'content-type'}, qr{^application/json}, '... JSON';
    is_deeply $r->{json}, { object => 'redemption', account => $acct, amount => '10.0000',
                            balance => '11.0000', currency => 'CNY' },
        '... the amount and the new balance';
    is $h->balance($acct), 110000, 'Redis: 1.0000 + 10.0000 = 110000 units';
    my $l = $h->ledger($acct);
    is scalar @$l, 1, 'one ledger entry';
    my %e = %{ $l->[0] };
    delete $e{_id};
    ok abs(delete($e{ts}) - time) < 60, '... of now';
    is_deeply \%e, { type => 'credit', amount => 100000, reason => 'redeem',
                     code => substr(sha256_hex($code), 0, 12),
                     key => substr(sha256_hex($key), 0, 12), balance_after => 110000 },
        '... a credit of 100000, reason redeem, naming the code and the key by id';
    my %f = @{ $h->redis('HGETALL', 'imgbill:code:' . sha256_hex($code)) };
    is_deeply [ @f{qw(account key)} ], [ $acct, substr(sha256_hex($key), 0, 12) ],
        'the code records who redeemed it';
    ok abs($f{used_at} - time) < 60, '... and when';

    my $page = $h->request('GET', '/v1/imgbill/ledger', undef, Authorization => "Bearer $key");
    my ($shown) = @{ $page->{json}{data} || [] };
    is_deeply [ @{ $shown || {} }{qw(type reason amount balance)} ],
              [ 'credit', 'redeem', '10.0000', '11.0000' ],
        'the key holder\'s ledger shows the credit';
    unlike $h->error_log . $h->access_log, qr/\Q$code\E/, 'the code is in no log';
}

# ---- what must not pay twice, or at all ---------------------------------------

{
    my $before = $h->snapshot;
    my $again = redeem($key, { code => $code });
    error_ok $again, 409, 'invalid_request_error', 'code_already_used',
        'the same code again: 409 code_already_used';
    like $again->{json}{error}{message}, qr/\bredeemed at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/,
        '... saying when';
    error_ok redeem($okey, { code => $code }), 409, 'invalid_request_error',
        'code_already_used', '... from another account too';
    error_ok redeem($key, { code => 'rc-' . ('x' x 24) }), 404, 'invalid_request_error',
        'code_not_found', 'an unknown code: 404 code_not_found';
    error_ok redeem($key, { code => uc $made->[1] }), 404, 'invalid_request_error',
        'code_not_found', '... a code in the wrong case is another code';
    error_ok redeem('sk-nobody', { code => $made->[1] }), 401, 'invalid_request_error',
        'invalid_api_key', 'a wrong key: 401 invalid_api_key';
    error_ok redeem(undef, { code => $made->[1] }), 401, 'invalid_request_error',
        'missing_api_key', 'no key: 401 missing_api_key';
    error_ok $h->request('GET', '/v1/imgbill/redeem', undef, Authorization => "Bearer $key"),
        405, 'invalid_request_error', 'method_not_allowed', 'a GET: 405';

    for my $case ([ 'not JSON', 'code=' . $made->[1], 'invalid_request' ],
                  [ 'an array', [ $made->[1] ], 'invalid_request' ],
                  [ 'no code', {}, 'invalid_request' ],
                  [ 'a number', { code => 5 }, 'invalid_request' ],
                  [ 'null', { code => undef }, 'invalid_request' ],
                  [ 'empty', { code => '' }, 'invalid_code' ],
                  [ 'a space in it', { code => "$made->[1] " }, 'invalid_code' ],
                  [ 'a newline', { code => "rc-\nx" }, 'invalid_code' ],
                  [ 'non-ASCII', qq({"code":"rc-\xe4\xb8\xad"}), 'invalid_code' ],
                  [ '129 characters', { code => 'r' x 129 }, 'invalid_code' ],
                  [ 'two codes', '{"code":"' . $made->[1] . '","code":"'
                                 . $made->[2] . '"}', 'invalid_request' ])
    {
        my ($name, $body, $what) = @$case;
        error_ok redeem($key, $body), 400, 'invalid_request_error', $what,
            "a body with $name: 400 $what";
    }
    my $big = '{"code":"' . $made->[1] . '","pad":"' . ('x' x 1100) . '"}';
    error_ok redeem($key, $big), 413, 'invalid_request_error', 'request_too_large',
        'a body over 1 KB: 413';
    my $raw = $h->raw_http(request => "POST /v1/imgbill/redeem HTTP/1.1\r\nHost: x\r\n"
                           . "Authorization: Bearer $key\r\nTransfer-Encoding: chunked\r\n"
                           . "Connection: close\r\n\r\n"
                           . sprintf("%x\r\n%s\r\n0\r\n\r\n", length $big, $big));
    error_ok $raw, 413, 'invalid_request_error', 'request_too_large',
        '... sent chunked, without a length: 413 too';
    my $s = $h->raw_send(request => "POST /v1/imgbill/redeem HTTP/1.1\r\nHost: x\r\n"
                         . "Authorization: Bearer sk-stranger\r\nTransfer-Encoding: chunked\r\n"
                         . "Expect: 100-continue\r\nConnection: close\r\n\r\n");
    my $stranger = $h->raw_reply($s);
    error_ok $stranger, 401, 'invalid_request_error', 'invalid_api_key',
        'a stranger\'s body of no stated length: 401 before it is read';
    unlike $stranger->{raw}, qr{^HTTP/1\.1 100}, '... never asked for';
    is $h->snapshot, $before, 'every refusal left Redis as it was';
    is $h->balance($acct), 110000, '... the balance 110000';
}

# an expired code (its expiry moved into the past, as time would)
{
    my $c = $made->[1];
    my $k = 'imgbill:code:' . sha256_hex($c);
    my $past = time - 5;
    $h->redis('HSET', $k, 'expires', $past);
    my $before = $h->snapshot;
    my $r = redeem($key, { code => $c });
    error_ok $r, 410, 'invalid_request_error', 'code_expired', 'an expired code: 410 code_expired';
    my $when = POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $past);
    like $r->{json}{error}{message}, qr/\Q$when\E/, "... saying when ($when)";
    is $h->snapshot, $before, '... nothing written, the code not spent';

    my ($erc, $fresh) = codes('0.5', '--count', '1', '--expires',
                              POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 3600)));
    is $erc, 0, 'codes-new with --expires in an hour';
    is $h->redis('HGET', 'imgbill:code:' . sha256_hex($fresh->[0]), 'expires') - time > 3500, 1,
        '... stored as unix seconds';
    my $ok = redeem($key, { code => $fresh->[0] });
    is $ok->{status}, 200, '... redeemed before it expires';
    is $ok->{json}{amount}, '0.5000', '... for 0.5000';
    is $h->balance($acct), 115000, '... Redis 115000';
}

# ---- twenty at once -------------------------------------------------------------

{
    my (undef, $race) = codes('2.5', '--count', '1');
    my $c = $race->[0];
    my $b1 = $h->balance($acct);
    my $b2 = $h->balance($other) // 0;
    my $go = "$h->{dir}/redeem-go";
    my @kids;
    for my $i (1 .. 20) {
        my $file = "$h->{dir}/redeem-$i";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            # all start together: each waits for the same file
            Imgbill::Harness::wait_for(sub { -e $go }, 30, 0.005);
            my $r = redeem($i % 2 ? $key : $okey, { code => $c });
            open my $f, '>', $file;
            print $f join(' ', $r->{status}, eval { $r->{json}{error}{code} } // '-'), "\n";
            close $f;
            POSIX::_exit(0);
        }
        push @kids, [$pid, $file];
    }
    open my $g, '>', $go;
    close $g;
    my @got = map { waitpid $_->[0], 0; open my $f, '<', $_->[1]; my $l = <$f> // 'none';
                    chomp $l; $l } @kids;
    is scalar(grep { $_ eq '200 -' } @got), 1, 'twenty redeems of one code at once: one 200';
    is scalar(grep { $_ eq '409 code_already_used' } @got), 19, '... nineteen 409 code_already_used'
        or diag join "\n", "the twenty got: @{[ map { \"[$_]\" } @got ]}",
                grep { /\[(?:warn|error|crit|alert)\]/ } split /\n/, $h->error_log;
    my $gain = ($h->balance($acct) - $b1) + (($h->balance($other) // 0) - $b2);
    is $gain, 25000, '... 2.5000 credited once, across both accounts';
    my $id = substr(sha256_hex($c), 0, 12);
    my @credits = grep { ($_->{code} // '') eq $id } @{ $h->ledger($acct) }, @{ $h->ledger($other) };
    is scalar @credits, 1, '... one ledger entry names the code';
}

# ---- codes-list -------------------------------------------------------------------

{
    my ($lrc, $out) = $h->cli('codes-list');
    is $lrc, 0, 'codes-list: exit 0';
    my %line = map { /^([0-9a-f]{12}) / ? ($1 => $_) : () } split /\n/, $out;
    is scalar keys %line, 5, '... five codes';
    my $id = sub { substr(sha256_hex($_[0]), 0, 12) };
    my $kid = substr(sha256_hex($key), 0, 12);
    like $line{ $id->($made->[0]) },
         qr/^\S+ 10\.0000 created \S+Z expires never used \d{4}-\d\d-\d\dT\S+Z by \Q$acct\E key \Q$kid\E$/,
         '... the used one: by which account and key, and when';
    like $line{ $id->($made->[1]) }, qr/ expires \S+Z expired$/, '... the expired one';
    like $line{ $id->($made->[2]) }, qr/^\S+ 10\.0000 created \S+ expires never unused$/,
         '... the unused one';
    my (undef, $unused) = $h->cli('codes-list', '--unused');
    is_deeply [ $unused =~ /^([0-9a-f]{12}) /mg ], [ $id->($made->[2]) ],
        '--unused: that one only (an expired code is not)';
    my (undef, $used) = $h->cli('codes-list', '--used');
    is scalar(() = $used =~ /^[0-9a-f]{12} /mg), 3, '--used: the three redeemed';
    my ($brc) = $h->cli('codes-list', '--used', '--unused');
    is $brc, 2, '--used with --unused: exit 2';
}

# ---- a browser may redeem from another origin (conf.d: imgbill_cors *) ---------

{
    my $r = $h->request('OPTIONS', '/v1/imgbill/redeem', undef,
                        Origin => 'http://shop.example', 'Access-Control-Request-Method' => 'POST',
                        'Access-Control-Request-Headers' => 'authorization, content-type');
    is $r->{status}, 204, 'a preflight: 204';
    is $r->{headers}{'access-control-allow-methods'}, 'POST, OPTIONS', '... POST allowed';
}

$h->teardown;

# ---- conf.d's rate limit ------------------------------------------------------------

# nginx's limit_req and conf.d's error_page, no imgbill code: not worth a
# relay under valgrind (scripts/test's second pass)
unless ($ENV{IMGBILL_VALGRIND_DIR}) {
    my $l = Imgbill::Harness->new;
    my (undef, $lkey) = $l->fresh_account(prefix => 'rush', units => 0);
    my $before = $l->snapshot;
    my @r = map { $l->request('POST', '/v1/imgbill/redeem', { code => "rc-guess$_" },
                              Authorization => "Bearer $lkey") } 1 .. 12;
    my @limited = grep { $_->{status} == 429 } @r;
    ok @limited >= 1, 'twelve guesses in a row: ' . scalar(@limited) . ' refused 429';
    is scalar(grep { $_->{status} == 404 } @r), 12 - @limited, '... the others 404';
    error_ok $limited[0] // {}, 429, 'rate_limit_error', 'rate_limit_exceeded',
        '... in the API\'s JSON shape';
    is $l->snapshot, $before, '... and nothing written';
    $l->teardown;
}

done_testing;
