# The key holder's keys: GET /v1/imgbill/keys lists the account's keys
# (never a raw key), POST makes one (its raw key in that reply only),
# DELETE /v1/imgbill/keys/{id} deletes one.  A key with limits makes keys
# no wider than itself: what it gives comes out of its own limits, at once
# and exactly under concurrency, and comes back when the key it made is
# deleted; it sees and deletes only itself and the keys it made.  Tried as
# a key holder who wants more than was given: keys minted twenty at once,
# a wider limit, a later expiry, other models and networks, another
# account's key, a sibling's, and bodies of every wrong shape.  Every
# refusal leaves Redis as it was.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use POSIX ();
use Digest::SHA qw(sha256_hex);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(error_ok wait_for);

# conf.d's read limit (5/s, bursts of 20) is lifted: a hundred keys are
# made below
my $h = Imgbill::Harness->new(conf_filter => sub {
    $_[0] =~ s/(limit_req_zone \S+ zone=imgbill_reads:\S+) rate=\S+;/$1 rate=10000r\/s;/
        or die 'no imgbill_reads zone in conf.d';
});

my $N = $ENV{IMGBILL_VALGRIND_DIR} ? 8 : 20;

sub kid { substr(sha256_hex($_[0]), 0, 12) }

# an OpenAI error, and what its message says
sub err_ok {
    my ($r, $status, $code, $re, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    error_ok($r, $status, 'invalid_request_error', $code, $name)
        and like $r->{json}{error}{message}, $re, '... saying so';
}
sub auth { (Authorization => "Bearer $_[0]") }
sub list { $h->request('GET', '/v1/imgbill/keys', undef, auth($_[0])) }
sub make { $h->request('POST', '/v1/imgbill/keys', $_[1] // {}, auth($_[0])) }
sub del  { $h->request('DELETE', "/v1/imgbill/keys/$_[1]", undef, auth($_[0])) }
sub khash {
    my ($acct, $id) = @_;
    +{ @{ $h->redis('HGETALL', "imgbill:{$acct}:key:$id") || [] } };
}
sub ids { [ sort map { $_->{id} } @{ $_[0]{json}{data} || [] } ] }
# a fast call (0.07), once its charge is settled: the reply goes out first
sub fast {
    my ($key) = @_;
    my $acct = $h->redis('GET', 'imgbill:key:' . sha256_hex($key));
    my $r = $h->chat(key => $key, path => '/fast/v1/chat/completions');
    $h->wait_holds($acct, 0, 30) if $acct && $r->{status} == 200;
    return $r;
}

sub made_ok {
    my ($r, $name) = @_;
    is $r->{status}, 200, "$name: 200" or diag $r->{body};
    like $r->{json}{key} // '', qr/^sk-[0-9A-Za-z]{48}$/, '... with the raw key, sk- and 48 base62';
    is $r->{json}{id}, kid($r->{json}{key} // ''), '... its id, the first 12 hex of its SHA-256';
    return ($r->{json}{key}, $r->{json}{id});
}

# $n requests at once: "status code" each (a key made: its limit)
sub burst {
    my ($n, $do) = @_;
    return $h->burst($n, sub {
        my $r = $do->();
        my $code = ref $r->{json} eq 'HASH' && ref $r->{json}{error} eq 'HASH'
                 ? $r->{json}{error}{code} : ($r->{json}{limit} // '-');
        return "$r->{status} $code";
    });
}

# ---- a key without limits: its account's keys ---------------------------------

my ($acct, $main) = $h->fresh_account(prefix => 'ring', units => 1000000);
my ($other, $okey) = $h->fresh_account(prefix => 'else', units => 1000000);

{
    my $r = list($main);
    is $r->{status}, 200, 'GET /v1/imgbill/keys: 200';
    is $r->{json}{object}, 'list', '... a list';
    is_deeply ids($r), [ kid($main) ], '... of the calling key, made before the index';
    my ($me) = @{ $r->{json}{data} };
    is $me->{current}, JSON::PP::true, '... marked current';
    is_deeply [ @$me{qw(object limit daily_limit expires models ips made_by)} ],
        [ 'key', undef, undef, undef, undef, undef, undef ], '... a key with no limits';
    is $me->{spent}, '0.0000', '... spent 0.0000';
    unlike $r->{body}, qr/\Q$main\E/, '... and the raw key nowhere';
}

my ($shop, $shop_id);
{
    my $before = $h->balance($acct);
    my $r = make($main, { name => 'shop 商店', limit => '0.50', daily_limit => '0.30',
                          models => [ 'gemini-2.5-flash-image', 'gpt-image-1' ],
                          ips => [ '127.0.0.0/8', '::1/128', '2001:db8::/32' ] });
    ($shop, $shop_id) = made_ok($r, 'POST a key with every limit');
    my $j = $r->{json};
    is_deeply [ @$j{qw(object name limit daily_limit spent today made_by)} ],
        [ 'key', 'shop 商店', '0.5000', '0.3000', '0.0000', '0.0000', kid($main) ],
        '... its name, limits and maker, amounts in 4 places';
    is_deeply $j->{models}, [ 'gemini-2.5-flash-image', 'gpt-image-1' ], '... its models';
    is_deeply $j->{ips}, [ '127.0.0.0/8', '::1/128', '2001:db8::/32' ], '... its networks, as written';
    ok abs($j->{created} - time) < 60 && !defined $j->{expires} && !defined $j->{last_used},
        '... made now, no expiry, never used';
    is $j->{current}, JSON::PP::false, '... not the calling key';
    my $k = khash($acct, $shop_id);
    is_deeply [ @$k{qw(name limit daily_limit models ips parent)} ],
        [ 'shop 商店', 5000, 3000, 'gemini-2.5-flash-image,gpt-image-1',
          '4:7f000000/8,6:00000000000000000000000000000001/128,6:20010db8000000000000000000000000/32',
          kid($main) ], '... stored as the CLI stores limits';
    ok !exists $k->{carved}, '... nothing carved from a key without limits';
    is $h->redis('GET', 'imgbill:key:' . sha256_hex($shop)), $acct, '... its hash maps to the account';
    is $h->redis('HGET', "imgbill:{$acct}:keys", $shop_id), sha256_hex($shop), '... indexed by id';
    is index($h->snapshot, $shop), -1, '... and the raw key is nowhere in Redis';
    is $h->balance($acct), $before, '... making a key costs nothing';

    my $ar = $h->request("GET", "/v1/imgbill/account", undef, auth($shop));
    is "$ar->{status} $ar->{json}{id}", "200 $acct", 'the new key reads the same account';
    my $c = fast($shop);
    is $c->{status}, 200, '... and spends under its limits';
    is khash($acct, $shop_id)->{spent}, 700, '... counted as the key\'s spend';
    my $m = $h->chat(key => $shop, path => '/fast/v1/chat/completions', model => 'gemini-3-pro-image-preview');
    err_ok $m, 403, 'model_not_allowed', qr/gemini-3-pro-image-preview/,
        '... and a model not in its list is refused';

    my $l = list($main);
    is_deeply ids($l), [ sort { $a cmp $b } kid($main), $shop_id ], 'the list now shows both keys';
    my ($s) = grep { $_->{id} eq $shop_id } @{ $l->{json}{data} };
    is_deeply [ @$s{qw(spent today)} ], [ '0.0700', '0.0700' ], '... with the new key\'s spend';
    ok abs($s->{last_used} - time) < 60, '... and its last use';
    unlike $l->{body}, qr/sk-/, '... and no raw key';

    my $one = $h->request('GET', "/v1/imgbill/keys/$shop_id", undef, auth($main));
    is "$one->{status} $one->{json}{id}", "200 $shop_id", 'GET /v1/imgbill/keys/{id}: that key';
    my $up = $h->request('GET', '/v1/imgbill/keys/' . uc $shop_id, undef, auth($main));
    is $up->{json}{id}, $shop_id, '... the id in capitals too';
}

# ---- what a key with limits may make ----------------------------------------

{
    my ($a2, $root) = $h->fresh_account(prefix => 'carve', units => 1000000);
    my ($lim, $lim_id) = made_ok(make($root, { name => 'reseller', limit => '1.00' }), 'a key of 1.00');

    my $before = $h->snapshot;
    err_ok make($lim, {}), 403, 'limits_too_wide',
        qr/needs "limit", at most 1\.0000/, 'it cannot make a key without a limit';
    err_ok make($lim, { limit => '1.0001' }), 403, 'limits_too_wide',
        qr/at most 1\.0000/, '... nor one above what it has';
    is $h->snapshot, $before, '... and the refusals write nothing';

    my @got = burst($N, sub { make($lim, { limit => '0.30' }) });
    my $ok = grep { /^200 0\.3000$/ } @got;
    my $no = grep { $_ eq '403 limits_too_wide' } @got;
    is $ok, 3, "$N keys of 0.30 asked at once by a key of 1.00: exactly 3 made";
    is $no, $N - 3, '... the others refused 403 limits_too_wide' or diag join ', ', @got;
    is khash($a2, $lim_id)->{limit}, 1000, '... and the maker keeps 0.1000';
    my @kids = grep { $_->{made_by} && $_->{made_by} eq $lim_id } @{ list($root)->{json}{data} };
    is scalar @kids, 3, '... three keys made by it';
    my $sum = 1000;
    $sum += khash($a2, $_->{id})->{limit} for @kids;
    is $sum, 10000, '... whose limits and the maker\'s add up to the 1.0000 it had';
    is_deeply [ map { khash($a2, $_->{id})->{carved} } @kids ], [ ('l') x 3 ], '... each marked carved';

    # what it sees and may delete: itself and the keys it made
    my $l = list($lim);
    is_deeply ids($l), [ sort { $a cmp $b } $lim_id, map { $_->{id} } @kids ],
        'a key with limits lists itself and the keys it made, not its maker';
    $before = $h->snapshot;
    err_ok del($lim, kid($root)), 404, 'key_not_found', qr/no such key/,
        '... cannot delete the key that made it';
    err_ok $h->request('GET', '/v1/imgbill/keys/' . kid($root), undef, auth($lim)),
        404, 'key_not_found', qr/no such key/, '... nor read it';
    my ($sib, $sib_id) = made_ok(make($root, { name => 'sibling' }), 'a sibling key');
    $before = $h->snapshot;
    err_ok del($lim, $sib_id), 404, 'key_not_found', qr/no such key/,
        '... which the limited key cannot delete';
    is $h->snapshot, $before, '... and nothing is written';

    # a key it made spends, then is deleted: what it did not spend comes back
    my ($kid1) = map { $_->{id} } @kids;
    my ($grand, $grand_id) = made_ok(make($lim, { limit => '0.10' }), 'a third level: 0.10 of the maker\'s 0.10');
    is khash($a2, $lim_id)->{limit}, 0, '... the maker has 0 left';
    my $c = fast($grand);
    is $c->{status}, 200, '... the grandchild spends 0.07';
    my $d = del($lim, $grand_id);
    is "$d->{status} $d->{json}{object} $d->{json}{deleted}", '200 key.deleted 1',
        'DELETE by its maker: 200 key.deleted';
    is khash($a2, $lim_id)->{limit}, 300, '... 0.03 unspent comes back to the maker';
    is $h->redis('EXISTS', 'imgbill:key:' . sha256_hex($grand), "imgbill:{$a2}:key:$grand_id"), 0,
        '... the key and its limits are gone';
    is $h->redis('HEXISTS', "imgbill:{$a2}:keys", $grand_id), 0, '... and out of the index';
    err_ok fast($grand), 401, 'invalid_api_key', qr/incorrect API key/,
        '... the deleted key is refused';
    my @mine = grep { ($_->{key} // '') eq $grand_id } @{ $h->ledger($a2) };
    is scalar @mine, 1, '... its charge stays in the ledger, naming it';

    # the root (no limits) deletes the middle key: its keys go to the root
    my $r = del($root, $lim_id);
    is $r->{status}, 200, 'the account\'s key without limits deletes the reseller key';
    is khash($a2, $kid1)->{parent}, kid($root), '... whose keys are now the root\'s';
    is_deeply [ sort map { $_->{made_by} // '-' } grep { $_->{id} ne kid($root) } @{ list($root)->{json}{data} } ],
        [ (kid($root)) x 4 ], '... as the list shows';
    err_ok del($root, $lim_id), 404, 'key_not_found', qr/no such key/,
        '... and a second DELETE is 404';
}

# ---- the operator's key-del gives back as DELETE does ----------------------

{
    my ($a7, $root) = $h->fresh_account(prefix => 'clidel', units => 1000000);
    my ($lim, $lim_id) = made_ok(make($root, { name => 'reseller', limit => '1.00' }), 'a key of 1.00');
    my ($mid, $mid_id) = made_ok(make($lim, { limit => '0.30' }), '... makes a key of 0.30');
    my ($low, $low_id) = made_ok(make($mid, { limit => '0.10' }), '... which makes one of 0.10');
    is fast($mid)->{status}, 200, 'the middle key spends 0.07';
    is_deeply [ map { khash($a7, $_)->{limit} } $lim_id, $mid_id, $low_id ], [ 7000, 2000, 1000 ],
        '... the three keep 0.70, 0.20 and 0.10';
    my ($rc, $out) = $h->cli('key-del', $mid_id);
    is "$rc $out", "0 ok\n", 'imgbill key-del of the middle key';
    is khash($a7, $lim_id)->{limit}, 8300, '... its unspent 0.13 comes back to its maker';
    is khash($a7, $low_id)->{parent}, $lim_id, '... the key it made is its maker\'s now';
    is $h->redis('EXISTS', 'imgbill:key:' . sha256_hex($mid), "imgbill:{$a7}:key:$mid_id",
                 "imgbill:{$a7}:key:$mid_id:held"), 0, '... it and its limits are gone';
    is $h->redis('HEXISTS', "imgbill:{$a7}:keys", $mid_id), 0, '... and out of the index';
    err_ok fast($mid), 401, 'invalid_api_key', qr/incorrect API key/, '... it is refused';
    is fast($low)->{status}, 200, 'the key it made still spends';
    ($rc) = $h->cli('key-del', $mid_id);
    is $rc, 1, 'a second key-del: exit 1';
}

# ---- a daily limit: given from what is left today ---------------------------

{
    my ($a3, $root) = $h->fresh_account(prefix => 'daily', units => 1000000);
    my ($lim, $lim_id) = made_ok(make($root, { daily_limit => '0.50' }), 'a key of 0.50 a day');
    is fast($lim)->{status}, 200, '... spends 0.07 today';
    err_ok make($lim, { daily_limit => '0.44' }), 403, 'limits_too_wide',
        qr/daily spending limit.*"daily_limit", at most 0\.4300 .*today/, 'it gives at most what is left today';
    my ($k, $k_id) = made_ok(make($lim, { daily_limit => '0.20' }), '... 0.20 it may give');
    is khash($a3, $lim_id)->{daily_limit}, 3000, '... keeping 0.30 a day';
    is fast($k)->{status}, 200, 'the key made spends 0.07';
    is del($lim, $k_id)->{status}, 200, '... and is deleted';
    my $f = khash($a3, $lim_id);
    is_deeply [ @$f{qw(daily_limit day_spent)} ], [ 5000, 1400 ],
        '... its 0.20 a day comes back, and what it spent today counts against the maker today';
}

# ---- expiry, models and networks: no wider, or inherited --------------------

{
    my ($a4, $root) = $h->fresh_account(prefix => 'narrow', units => 1000000);
    my $t = time + 86400;
    my $iso = POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $t);
    my $later = POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($t + 1));
    my ($lim, $lim_id) = made_ok(make($root, { expires => $iso, models => [ 'a-1', 'b-2' ],
                                              ips => [ '127.0.0.0/8' ] }), 'a key with expiry, models, networks');
    is $h->request('GET', "/v1/imgbill/keys/$lim_id", undef, auth($root))->{json}{expires}, $t,
        '... its expiry as unix seconds';
    my $before = $h->snapshot;
    err_ok make($lim, { expires => $later }), 403, 'limits_too_wide',
        qr/expires at \Q$iso\E: the new key's "expires" may be no later/, 'a later expiry is refused';
    err_ok make($lim, { models => [ 'a-1', 'c-3' ] }), 403, 'limits_too_wide',
        qr/"models" must be among/, '... a model it lacks';
    err_ok make($lim, { ips => [ '10.0.0.0/8' ] }), 403, 'limits_too_wide',
        qr/"ips" must lie within/, '... a network outside its own';
    err_ok make($lim, { ips => [ '0.0.0.0/0' ] }), 403, 'limits_too_wide',
        qr/"ips" must lie within/, '... a wider network holding its own';
    is $h->snapshot, $before, '... all without a write';

    my $r = make($lim, { name => 'inherits' });
    my ($k) = made_ok($r, 'a key naming no limits');
    is_deeply [ @{ $r->{json} }{qw(expires)}, $r->{json}{models}, $r->{json}{ips} ],
        [ $t, [ 'a-1', 'b-2' ], [ '127.0.0.0/8' ] ], '... gets its maker\'s expiry, models and networks';
    $r = make($lim, { models => [ 'b-2' ], ips => [ '127.0.0.1/32' ], expires => $iso });
    made_ok($r, 'narrower ones: one model, one address, the same expiry');

    # a key expired, or called from outside its networks, makes nothing
    $h->redis('HSET', "imgbill:{$a4}:key:$lim_id", 'expires', time - 10);
    $before = $h->snapshot;
    err_ok make($lim, {}), 401, 'key_expired', qr/expired at/,
        'an expired key makes no key';
    err_ok del($lim, $lim_id), 401, 'key_expired', qr/expired at/,
        '... and deletes none';
    is list($lim)->{status}, 200, '... but still lists its keys, as it reads its account';
    is $h->snapshot, $before, '... none of it writes';
    $h->redis('HSET', "imgbill:{$a4}:key:$lim_id", 'expires', $t, 'ips', '4:0a000000/8');
    $before = $h->snapshot;
    err_ok make($lim, {}), 403, 'ip_not_allowed', qr/127\.0\.0\.1/,
        'a key called from outside its networks makes no key';
    err_ok del($lim, $lim_id), 403, 'ip_not_allowed', qr/127\.0\.0\.1/,
        '... and deletes none';
    is $h->snapshot, $before, '... none of it writes';
}

# ---- another account's key, strangers, methods ------------------------------

{
    my $before = $h->snapshot;
    err_ok del($okey, $shop_id), 404, 'key_not_found', qr/no such key/,
        'another account\'s key: DELETE is 404';
    err_ok $h->request('GET', "/v1/imgbill/keys/$shop_id", undef, auth($okey)), 404,
        'key_not_found', qr/no such key/, '... GET is 404';
    is_deeply ids(list($okey)), [ kid($okey) ], '... and its list shows only its own';
    err_ok del($main, 'nothex000000'), 404, 'key_not_found',
        qr/12 hex digits/, 'an id that is none: 404';
    err_ok del($main, 'abc'), 404, 'key_not_found', qr/12 hex/, '... a short one';
    err_ok list('sk-nobody'), 401, 'invalid_api_key', qr/incorrect/,
        'a stranger: 401';
    err_ok $h->request('POST', '/v1/imgbill/keys', {}), 401,
        'missing_api_key', qr/no API key/, 'no key: 401';
    err_ok $h->request('PUT', '/v1/imgbill/keys', {}, auth($main)), 405,
        'method_not_allowed', qr/GET, POST or DELETE/, 'PUT: 405';
    err_ok $h->request('DELETE', '/v1/imgbill/keys', undef, auth($main)), 405,
        'method_not_allowed', qr/listed with GET/, 'DELETE of the list: 405';
    err_ok $h->request('POST', "/v1/imgbill/keys/$shop_id", {}, auth($main)), 405,
        'method_not_allowed', qr/deleted with DELETE/, 'POST to a key: 405';
    is $h->snapshot, $before, '... none of it writes';
}

# ---- bodies of every wrong shape ----------------------------------------------

{
    my $before = $h->snapshot;
    my $past = POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time - 60));
    for my $c ([ 'not JSON', '{"name": ', 'invalid_request' ],
               [ 'an array', '[]', 'invalid_request' ],
               [ 'a duplicate field', '{"name": "a", "name": "b"}', 'invalid_request' ],
               [ 'an unknown field', '{"limits": "1"}', 'unknown_parameter' ],
               [ 'an empty name', '{"name": ""}', 'invalid_name' ],
               [ 'a name of 65 characters', '{"name": "' . ('名' x 65) . '"}', 'invalid_name' ],
               [ 'a name with a newline', '{"name": "a\nb"}', 'invalid_name' ],
               [ 'a number for a name', '{"name": 5}', 'invalid_name' ],
               [ 'a limit that is no number', '{"limit": "abc"}', 'invalid_limit' ],
               [ 'a limit of 0', '{"limit": "0"}', 'invalid_limit' ],
               [ 'a negative limit', '{"limit": "-1"}', 'invalid_limit' ],
               [ 'a limit of 5 decimals', '{"limit": "1.00001"}', 'invalid_limit' ],
               [ 'a limit as a JSON number', '{"limit": 1}', 'invalid_limit' ],
               [ 'a daily limit that is no number', '{"daily_limit": "1,5"}', 'invalid_daily_limit' ],
               [ 'an expiry that is no date', '{"expires": "2030-02-30T00:00:00Z"}', 'invalid_expires' ],
               [ 'an expiry without a time', '{"expires": "2030-01-01"}', 'invalid_expires' ],
               [ 'an expiry with an offset', '{"expires": "2030-01-01T00:00:00+08:00"}', 'invalid_expires' ],
               [ 'an expiry in the past', qq({"expires": "$past"}), 'invalid_expires' ],
               [ 'no models', '{"models": []}', 'invalid_models' ],
               [ 'models as a string', '{"models": "a"}', 'invalid_models' ],
               [ 'a model with a space', '{"models": ["a b"]}', 'invalid_models' ],
               [ 'a model that is a number', '{"models": [1]}', 'invalid_models' ],
               [ 'no networks', '{"ips": []}', 'invalid_ips' ],
               [ 'host bits set', '{"ips": ["10.0.0.1/8"]}', 'invalid_ips' ],
               [ 'no address', '{"ips": ["300.1.1.1"]}', 'invalid_ips' ],
               [ 'a prefix of 33', '{"ips": ["10.0.0.0/33"]}', 'invalid_ips' ],
               [ 'a prefix of 129', '{"ips": ["::/129"]}', 'invalid_ips' ],
               [ 'a hostname', '{"ips": ["localhost"]}', 'invalid_ips' ],
               [ 'an empty network', '{"ips": [""]}', 'invalid_ips' ],
               [ '33 networks', '{"ips": [' . join(',', ('"10.0.0.0/8"') x 33) . ']}', 'invalid_ips' ])
    {
        my ($name, $body, $code) = @$c;
        err_ok $h->request('POST', '/v1/imgbill/keys', $body, auth($main)), 400,
            $code, qr/\S/, "$name: 400 $code";
    }
    err_ok $h->request('POST', '/v1/imgbill/keys', '{"name": "' . ('x' x 9000) . '"}', auth($main)),
        413, 'request_too_large', qr/too large/, 'a body of 9 KB: 413, from conf.d\'s client_max_body_size';
    is $h->snapshot, $before, '... and none of it writes';
    my $e = make($main, { name => undef, limit => undef });
    is $e->{status}, 200, 'null fields are no fields: 200';
    is $h->request('DELETE', "/v1/imgbill/keys/$e->{json}{id}/", undef, auth($main))->{status}, 200,
        '... (deleted again, with a trailing slash)';
    my $sl = $h->request('GET', '/v1/imgbill/keys/', undef, auth($main));
    is "$sl->{status} $sl->{json}{object}", '200 list', 'GET /v1/imgbill/keys/: the list';
}

# ---- a hundred keys at most ---------------------------------------------------

{
    my ($a5, $root) = $h->fresh_account(prefix => 'many', units => 1000000);
    my $made = 0;
    for (1 .. 99) { $made++ if make($root, {})->{status} == 200 }
    is $made, 99, '99 keys made besides the first';
    is $h->redis('HLEN', "imgbill:{$a5}:keys"), 100, '... 100 in the index';
    my $before = $h->snapshot;
    err_ok make($root, {}), 403, 'too_many_keys', qr/at most 100 keys/,
        'the 101st: 403 too_many_keys';
    is $h->snapshot, $before, '... writing nothing';
    is scalar @{ list($root)->{json}{data} }, 100, '... and the list shows all 100';
}

# ---- the CLI keeps the index --------------------------------------------------

{
    my ($a6, $root) = $h->fresh_account(prefix => 'cli', units => 1000000);
    my ($rc, $out) = $h->cli('key-new', $a6, '--name', 'from cli', '--limit', '2');
    chomp $out;
    is $rc, 0, 'imgbill key-new';
    my ($row) = grep { $_->{id} eq kid($out) } @{ list($root)->{json}{data} };
    is_deeply [ @$row{qw(name limit)} ], [ 'from cli', '2.0000' ], '... the key holder lists it at once';
    ($rc) = $h->cli('key-add', $a6, 'sk-added-by-hand-0123456789');
    ok grep({ $_->{id} eq kid('sk-added-by-hand-0123456789') } @{ list($root)->{json}{data} }),
        'imgbill key-add: listed too';
    $h->redis('SET', 'imgbill:key:' . sha256_hex('sk-old-one-0123456789'), $a6);
    ok !grep({ $_->{id} eq kid('sk-old-one-0123456789') } @{ list($root)->{json}{data} }),
        'a key older than the index is not listed to others';
    $h->cli('key-list', $a6);
    ok grep({ $_->{id} eq kid('sk-old-one-0123456789') } @{ list($root)->{json}{data} }),
        '... until imgbill key-list indexes it';
    $h->redis('HSET', "imgbill:{$a6}:keys", 'not-an-id"x', sha256_hex($root));
    my $junk = list($root);
    ok $junk->{status} == 200 && !grep({ $_->{id} =~ /not-an-id/ } @{ $junk->{json}{data} }),
        'a field in the index that is no id is no key: skipped';
    $h->redis('HDEL', "imgbill:{$a6}:keys", 'not-an-id"x');
    my ($made) = made_ok(make($root, { name => 'api' }), 'a key made over the API');
    my (undef, $kl) = $h->cli('key-list', $a6);
    like $kl, qr/^\Q@{[kid($made)]}\E name="api" /m, '... shows in imgbill key-list';
    is del($root, kid($made))->{status}, 200, '... deleted over the API';
    (undef, $kl) = $h->cli('key-list', $a6);
    unlike $kl, qr/\Q@{[kid($made)]}\E/, '... gone from key-list';
    ($rc) = $h->cli('key-del', kid($out));
    is $rc, 0, 'imgbill key-del';
    ok !grep({ $_->{id} eq kid($out) } @{ list($root)->{json}{data} }), '... gone from the list';
    is $h->redis('HEXISTS', "imgbill:{$a6}:keys", kid($out)), 0, '... and from the index';
}

# ---- a browser's preflight ------------------------------------------------------

{
    my $before = $h->snapshot;
    my $r = $h->request('OPTIONS', "/v1/imgbill/keys/$shop_id", undef,
                        Origin => 'http://app.test', 'Access-Control-Request-Method' => 'DELETE',
                        'Access-Control-Request-Headers' => 'authorization');
    is $r->{status}, 204, 'a preflight for DELETE of a key: 204, no key needed';
    like $r->{headers}{'access-control-allow-methods'} // '', qr/\bDELETE\b/, '... DELETE allowed';
    like $r->{headers}{'access-control-allow-methods'} // '', qr/\bPOST\b.*|\bGET\b/, '... with GET and POST';
    is $h->snapshot, $before, '... and nothing written';
}

# ---- no raw key in the logs -----------------------------------------------------

{
    my $logs = $h->error_log . $h->access_log;
    ok length $logs, 'the logs were read';
    is_deeply [ $logs =~ /(sk-[0-9A-Za-z]{48})/g ], [], 'no key made here is in any log';
    like $logs, qr/made key \Q$shop_id\E/, '... the error log names a key made by its id';
}

done_testing;
