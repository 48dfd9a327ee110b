# Limits per key (`imgbill key-new ACCOUNT --limit/--daily-limit/--expires/
# --models/--ips`, `key-set ID`), checked in the admission that checks the
# balance: exact under 60 requests at once on both channels and both APIs
# (¥0.50 of limit buys exactly 7 calls at 0.07), the account's other keys
# untouched; a daily limit across a UTC midnight (the key's day moved, not
# waited for); expiry; model lists; client networks, IPv4 and IPv6 (the
# latter as a balancer's realip header gives it); a
# limited key's hold given back when its stream is abandoned; the CLI's
# refusals of malformed networks and dates.  Every refusal costs nothing
# and writes nothing.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use POSIX ();
use Digest::SHA qw(sha256_hex);
use HTTP::Tiny;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units error_ok gerror_ok wait_for);

# An IPv6 client is one behind a balancer, as the README has it: the realip
# module takes the address from a header the balancer (this test, on
# 127.0.0.1) sets, so no test connects outside 127.0.0.0/8 and a machine
# without IPv6 runs it the same
my $h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s/^(\s*)(listen\s+[^;]*;\s*#\s*site:\s*listen\s*)$/$1$2\n$1set_real_ip_from 127.0.0.1;\n$1real_ip_header X-Balanced-For;/m
        or die 'no listen in conf.d';
});

# 60 at once; under valgrind (scripts/test's second pass) 12, which take
# the same paths
my $N = $ENV{IMGBILL_VALGRIND_DIR} ? 12 : 60;

my $FLASH = 'gemini-2.5-flash-image';
my $PRO   = 'gemini-3-pro-image-preview';
my $GBODY = { contents => [ { role => 'user', parts => [ { text => 'draw a cat' } ] } ] };

sub kid { substr(sha256_hex($_[0]), 0, 12) }
sub khash { my ($acct, $key) = @_; +{ @{ $h->redis('HGETALL', "imgbill:{$acct}:key:" . kid($key)) || [] } } }
sub kholds { my ($acct, $key) = @_; +{ @{ $h->redis('HGETALL', "imgbill:{$acct}:key:" . kid($key) . ':holds') || [] } } }

sub key_new {
    my ($acct, @flags) = @_;
    my ($rc, $out, $err) = $h->cli('key-new', $acct, @flags);
    die "key-new @flags: exit $rc: $err" if $rc;
    chomp $out;
    return $out;
}

sub key_set {
    my ($key, @flags) = @_;
    my ($rc, $out, $err) = $h->cli('key-set', kid($key), @flags);
    is "$rc $out", "0 ok\n", "key-set @flags" or diag $err;
}

# one call of each kind: chat (OpenAI) or gemini, metered or fast
sub call {
    my ($key, %o) = @_;
    if (($o{api} // 'openai') eq 'gemini') {
        my $m = $o{model} // $FLASH;
        return $h->request('POST', ($o{fast} ? '/fast' : '') . "/v1beta/models/$m:generateContent",
                           $GBODY, 'x-goog-api-key' => $key, %{ $o{headers} || {} });
    }
    return $h->chat(key => $key, model => $o{model}, headers => $o{headers},
                    path => ($o{fast} ? '/fast' : '') . '/v1/chat/completions');
}

# $n calls at once: "status code" each
sub burst {
    my ($n, $key, %o) = @_;
    return $h->burst($n, sub {
        my $r = call($key, %o);
        my $j = $r->{json};
        my $code = ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
                 ? $j->{error}{status} // $j->{error}{code} // '-' : '-';
        return "$r->{status} $code";
    });
}

sub today { POSIX::strftime('%Y-%m-%d', gmtime($h->redis('TIME')->[0])) }

# ---- the issue's example: ¥0.50 buys 7 calls at 0.07, 60 at once ------------

for my $case ([ 'OpenAI, fast', api => 'openai', fast => 1 ],
              [ 'Gemini, fast', api => 'gemini', fast => 1 ])
{
    my ($name, %o) = @$case;
    my ($acct, $plain) = $h->fresh_account(prefix => 'lim', units => 1000000);
    for my $which ('limit', 'daily-limit') {
        my $key = key_new($acct, "--$which", '0.50', '--name', "app $which");
        my $before = $h->balance($acct);
        my @got = burst($N, $key, %o);
        my $ok = grep { /^200 / } @got;
        my $no = $o{api} eq 'gemini' ? grep { $_ eq '402 RESOURCE_EXHAUSTED' } @got
                                      : grep { $_ eq '402 key_limit_reached' } @got;
        is $ok, 7, "$name, --$which 0.50, $N calls at once: exactly 7 served";
        is $no, $N - 7, '... ' . ($N - 7) . ' refused 402' . ($o{api} eq 'gemini' ? ' (Google\'s shape)' : ' key_limit_reached')
            or diag join ', ', @got;
        ok $h->wait_holds($acct, 0, 60), '... no hold left';
        is $h->balance($acct), $before - 4900, '... the account paid 7 x 0.0700';
        my $k = khash($acct, $key);
        is $k->{spent}, 4900, '... the key spent 4900 units';
        is_deeply [ @$k{qw(day day_spent)} ], [ today(), 4900 ], '... all of it today';
        is_deeply kholds($acct, $key), {}, '... and holds nothing';
        my @mine = grep { ($_->{key} // '') eq kid($key) } @{ $h->ledger($acct) };
        is scalar @mine, 7, '... seven ledger entries name the key';
        my $more = call($key, %o);
        is $more->{status}, 402, '... an 8th, later: 402';
        my $other = call($plain, %o);
        is $other->{status}, 200, '... while the account\'s other key still works';
    }
}

# the message says what is left and what was needed
{
    my ($acct) = $h->fresh_account(prefix => 'msg', units => 1000000);
    my $key = key_new($acct, '--limit', '0.10');
    is call($key, fast => 1)->{status}, 200, 'a key of 0.10: one call of 0.07';
    my $before = $h->snapshot;
    my $r = call($key, fast => 1);
    error_ok $r, 402, 'insufficient_quota', 'key_limit_reached', '... the second: 402 key_limit_reached';
    like $r->{json}{error}{message}, qr/total spending limit is reached: left 0\.0300, required 0\.0700/,
        '... left 0.0300, required 0.0700';
    is $h->snapshot, $before, '... nothing written';
}

# ---- the metered channel: held by the most a call may cost, charged less -------

for my $api ('openai', 'gemini') {
    my ($acct) = $h->fresh_account(prefix => "met$api", units => 1000000);
    my $probe = key_new($acct, '--limit', '0.0001');
    my $r = call($probe, api => $api);
    my ($hold) = ($r->{json}{error}{message} // '') =~ /required (\d+\.\d{4})/;
    ok defined $hold, "$api metered: a call holds $hold" or diag $r->{body};
    $hold = int(($hold // 1) * 10000 + 0.5);
    my $key = key_new($acct, '--limit', '2.00');
    my @got = burst($N, $key, api => $api);
    my $ok = grep { /^200 / } @got;
    ok $h->wait_holds($acct, 0, 60), "$api metered, --limit 2.00, $N at once: no hold left";
    my $spent = khash($acct, $key)->{spent} // 0;
    is $spent, $ok * 2465, "... $ok served, each charged 0.2465: the key spent $spent";
    cmp_ok $spent, '<=', 20000, '... never more than its limit';
    cmp_ok $ok, '>=', int(20000 / $hold), '... at least as many as its limit holds at once';
    is scalar(grep { /^402 / } @got), $N - $ok, '... the others refused 402';
    is 1000000 - $h->balance($acct), $spent, '... and the account paid exactly that';
}

# ---- several images in one call: held for all, refused unless all fit -------------

{
    my ($acct) = $h->fresh_account(prefix => 'multi', units => 1000000);
    my $key = key_new($acct, '--limit', '0.20');
    my $body = { model => $FLASH, n => 3, messages => [ { role => 'user', content => 'three foxes' } ] };
    my $before = $h->snapshot;
    my $r = $h->post('/fast/v1/chat/completions', $body, Authorization => "Bearer $key");
    error_ok $r, 402, 'insufficient_quota', 'key_limit_reached', 'n=3 at 0.07 on a key of 0.20: 402';
    like $r->{json}{error}{message}, qr/left 0\.2000, required 0\.2100/, '... all three are held';
    is $h->snapshot, $before, '... nothing written';
    $body->{n} = 2;
    is $h->post('/fast/v1/chat/completions', $body, Authorization => "Bearer $key")->{status}, 200,
        'n=2: served';
    ok $h->wait_holds($acct, 0, 20), '... settled';
    is khash($acct, $key)->{spent}, 1000000 - $h->balance($acct), '... the key spent what the account paid';
    cmp_ok khash($acct, $key)->{spent}, '<=', 1400, '... at most two images';
}

# ---- a UTC day: the key's day moved back, as midnight would -----------------------

{
    my ($acct) = $h->fresh_account(prefix => 'day', units => 1000000);
    my $key = key_new($acct, '--daily-limit', '0.14');
    is call($key, fast => 1)->{status}, 200, 'daily 0.14: call 1';
    is call($key, fast => 1)->{status}, 200, '... call 2';
    my $r = call($key, fast => 1);
    error_ok $r, 402, 'insufficient_quota', 'key_limit_reached', '... call 3: 402';
    like $r->{json}{error}{message}, qr/daily spending limit/, '... the daily limit';
    my $now = $h->redis('TIME')->[0];
    my $yesterday = POSIX::strftime('%Y-%m-%d', gmtime($now - 86400));
    $h->redis('HSET', "imgbill:{$acct}:key:" . kid($key), 'day', $yesterday);
    is call($key, fast => 1)->{status}, 200, 'the day it spent 0.14 is yesterday: a call today';
    my $k = khash($acct, $key);
    is_deeply [ @$k{qw(day day_spent spent)} ], [ today(), 700, 2100 ],
        '... today counts 0.07 from 0, the total 0.21';
}

# ---- expiry ------------------------------------------------------------------------

{
    my ($acct) = $h->fresh_account(prefix => 'exp', units => 1000000);
    my $later = POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 3600));
    my $key = key_new($acct, '--expires', $later);
    is call($key, fast => 1)->{status}, 200, "a key that expires at $later works now";
    key_set($key, '--expires', '2020-01-01T00:00:00Z');
    my $before = $h->snapshot;
    my $r = call($key, fast => 1);
    error_ok $r, 401, 'invalid_request_error', 'key_expired', '... expired: 401 key_expired';
    like $r->{json}{error}{message}, qr/expired at 2020-01-01T00:00:00Z/, '... saying when';
    gerror_ok call($key, api => 'gemini'), 401, 'UNAUTHENTICATED', '... on the Gemini API: 401 UNAUTHENTICATED';
    is $h->snapshot, $before, '... nothing written';
    my ($urc, $uout) = $h->cli('key-set', uc kid($key), '--expires', 'none');
    is "$urc $uout", "0 ok\n", 'key-set takes the ID in capitals too';
    is call($key, fast => 1)->{status}, 200, '--expires none: it works again';
}

# ---- models ----------------------------------------------------------------------

{
    my ($acct) = $h->fresh_account(prefix => 'mod', units => 1000000);
    my $key = key_new($acct, '--models', $PRO);
    my $before = $h->snapshot;
    my $r = call($key, model => $FLASH);
    error_ok $r, 403, 'invalid_request_error', 'model_not_allowed', "--models $PRO: $FLASH is 403 model_not_allowed";
    like $r->{json}{error}{message}, qr/may not use the model "\Q$FLASH\E"/, '... naming it';
    gerror_ok call($key, api => 'gemini'), 403, 'PERMISSION_DENIED', '... on the Gemini API: 403 PERMISSION_DENIED';
    is $h->snapshot, $before, '... nothing written';
    is call($key, model => $PRO)->{status}, 200, "... $PRO is served";
    key_set($key, '--models', "$PRO,$FLASH");
    is call($key, model => $FLASH)->{status}, 200, 'both listed: both served';
}

# ---- client networks, IPv4 and IPv6 ------------------------------------------------

# a call from ::1, as the balancer says
sub call6 {
    my ($key) = @_;
    my $res = HTTP::Tiny->new(timeout => 30)->post($h->url('/fast/v1/chat/completions'), {
        headers => { 'Content-Type' => 'application/json', Authorization => "Bearer $key",
                     'X-Balanced-For' => '::1' },
        content => encode_json({ model => $FLASH, messages => [ { role => 'user', content => 'a fox' } ] }),
    });
    $res->{json} = eval { decode_json($res->{content}) };
    $res->{headers}{'content-type'} //= '';
    return $res;
}

{
    my ($acct) = $h->fresh_account(prefix => 'net', units => 1000000);
    my $key = key_new($acct, '--ips', '10.0.0.0/8,2001:db8::/32');
    my $before = $h->snapshot;
    my $r = call($key, fast => 1);
    error_ok $r, 403, 'invalid_request_error', 'ip_not_allowed', '--ips 10.0.0.0/8,2001:db8::/32: 127.0.0.1 is 403';
    like $r->{json}{error}{message}, qr/from 127\.0\.0\.1$/, '... naming the address';
    my $r6 = call6($key);
    is $r6->{status}, 403, '... ::1 is 403 too';
    is eval { $r6->{json}{error}{code} }, 'ip_not_allowed', '... ip_not_allowed';
    like eval { $r6->{json}{error}{message} } // '', qr/from ::1$/, '... naming ::1';
    is $h->snapshot, $before, '... nothing written';

    key_set($key, '--ips', '127.0.0.0/8');
    is call($key, fast => 1)->{status}, 200, '--ips 127.0.0.0/8: 127.0.0.1 served';
    is call6($key)->{status}, 403, '... ::1 not';
    key_set($key, '--ips', '::1');
    is call6($key)->{status}, 200, '--ips ::1: ::1 served';
    is call($key, fast => 1)->{status}, 403, '... 127.0.0.1 not';
    key_set($key, '--ips', '::/0,127.0.0.1/32');
    is call6($key)->{status}, 200, '--ips ::/0,127.0.0.1/32: ::1 served';
    is call($key, fast => 1)->{status}, 200, '... and 127.0.0.1';
    key_set($key, '--ips', '::ffff:127.0.0.0/104');
    is call($key, fast => 1)->{status}, 200, '--ips ::ffff:127.0.0.0/104 is 127.0.0.0/8: 127.0.0.1 served';
    key_set($key, '--ips', '127.0.0.2/31,fe80::/10');
    is call($key, fast => 1)->{status}, 403, '--ips 127.0.0.2/31: 127.0.0.1 is outside';
    key_set($key, '--ips', 'none');
    is call6($key)->{status}, 200, '--ips none: any address';
}

# ---- a stream abandoned: the key's hold goes back with the account's ----------------

{
    my ($acct) = $h->fresh_account(prefix => 'abandon', units => 1000000);
    my $key = key_new($acct, '--limit', '1.00');
    my $s = $h->raw_send(key => $key, mock => 'gap=0.5',
                         body => { model => $FLASH, stream => JSON::PP::true,
                                   messages => [ { role => 'user', content => 'a fox' } ] });
    my $got = '';
    wait_for(sub { sysread($s, my $buf, 65536); $got .= $buf // ''; $got =~ /\ndata: / }, 20, 0.01);
    like $got, qr/\ndata: /, 'a limited key\'s stream: the first event arrived';
    is scalar(keys %{ kholds($acct, $key) }), 1, '... the key holds it';
    close $s;
    ok $h->wait_holds($acct, 0, 60), 'the client left: the account\'s hold given back';
    ok wait_for(sub { !%{ kholds($acct, $key) } }, 10), '... and the key\'s';
    is khash($acct, $key)->{spent} // 0, 1000000 - $h->balance($acct), '... the key spent what the account paid';
}

# ---- the operator's view, and what the CLI refuses ----------------------------------

{
    my ($acct, $plain) = $h->fresh_account(prefix => 'list', units => 1000000);
    my $key = key_new($acct, '--name', 'shop "main" app', '--limit', '5', '--daily-limit', '1.5',
                      '--models', "$FLASH,$PRO", '--ips', '127.0.0.1,::1', '--expires', '2099-12-31T23:59:59Z');
    is call($key, fast => 1)->{status}, 200, 'a key with every limit: served';
    my ($rc, $out) = $h->cli('key-list', $acct);
    is $rc, 0, 'key-list: exit 0';
    my %line = map { /^([0-9a-f]{12}) / ? ($1 => $_) : () } split /\n/, $out;
    is $line{ kid($key) }, kid($key) . ' name="shop \"main\" app" limit=5.0000 spent=0.0700 '
        . 'daily_limit=1.5000 today=0.0700 expires=2099-12-31T23:59:59Z '
        . "models=$FLASH,$PRO ips=127.0.0.1/32,::1/128 last_used=$1",
        '... its limits and spend' if ($line{ kid($key) } // '') =~ /last_used=(\S+Z)$/;
    like $line{ kid($key) } // '', qr/last_used=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '... and its last use';
    is $line{ kid($plain) }, kid($plain) . ' name=- limit=none spent=0.0000 daily_limit=none '
        . 'today=0.0000 expires=never models=any ips=any last_used=-', '... a key made before limits: none';

    my $before = $h->snapshot;
    for my $bad ([ '--ips', '10.0.0.1/8', qr/host bits set \(the network is 10\.0\.0\.0\/8\)/ ],
                 [ '--ips', '300.1.1.1', qr/no IPv4 or IPv6 address/ ],
                 [ '--ips', '10.0.0.0/33', qr/prefix of IPv4 is 0 to 32/ ],
                 [ '--ips', 'fe80::/129', qr/prefix of IPv6 is 0 to 128/ ],
                 [ '--ips', '10.0.0.0/8,', qr/bad network ""/ ],
                 [ '--ips', 'example.com', qr/bad network "example\.com"/ ],
                 [ '--ips', '1:2:3:4:5:6:7:8:9', qr/no IPv4 or IPv6 address/ ],
                 [ '--expires', '2030-02-30T00:00:00Z', qr/no such time/ ],
                 [ '--expires', '2030-01-01', qr/want YYYY-MM-DDTHH:MM:SSZ/ ],
                 [ '--expires', 'tomorrow', qr/want YYYY-MM-DDTHH:MM:SSZ/ ],
                 [ '--limit', '-1', qr/bad --limit/ ],
                 [ '--limit', '0.00001', qr/bad --limit/ ],
                 [ '--daily-limit', 'lots', qr/bad --daily-limit/ ],
                 [ '--models', 'a b', qr/bad --models/ ],
                 [ '--name', "tab\there", qr/bad --name/ ],
                 [ '--limit', 'none', qr/"none" is for key-set/ ])
    {
        my ($opt, $val, $why) = @$bad;
        my ($brc, $bout, $berr) = $h->cli('key-new', $acct, $opt, $val);
        is "$brc $bout", '2 ', "key-new $opt '$val': exit 2, no key";
        like $berr, $why, '... ' . (split /\n/, $berr)[0];
    }
    my ($src, undef, $serr) = $h->cli('key-set', 'abcdef012345', '--limit', '1');
    is $src, 1, 'key-set of no such id: exit 1';
    like $serr, qr/no key with id abcdef012345/, '... saying so';
    ($src) = $h->cli('key-set', kid($key));
    is $src, 2, 'key-set without a limit: exit 2';
    ($src) = $h->cli('key-set', 'sk-whole-key', '--limit', '1');
    is $src, 2, 'key-set of a key, not an id: exit 2';
    is $h->snapshot, $before, 'none of them wrote anything';

    my ($drc, $dout) = $h->cli('key-del', kid($key));
    is "$drc $dout", "0 ok\n", 'key-del ID';
    is_deeply [ $h->redis('EXISTS', 'imgbill:key:' . sha256_hex($key), "imgbill:{$acct}:key:" . kid($key)) ],
              [ 0 ], '... the key and its limits gone';
    error_ok call($key, fast => 1), 401, 'invalid_request_error', 'invalid_api_key', '... it is refused';
}

done_testing;
