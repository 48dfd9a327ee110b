# A whole reply past what the worker may hold in memory (here
# imgbill_reply_memory 256k, for one reply at a time; t/69 is the budget
# under load) waits in a temporary file
# under imgbill_temp_path, not in the worker's memory: charged to the unit,
# relayed byte for byte (sha256 of what the upstream sent), the file open
# (and already unlinked) while a slow client downloads and closed once the
# request ends, whether the client read it all or went away.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Digest::SHA qw(sha256_hex);
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(sleep);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units wait_for dechunk);
use Imgbill::Fixture qw(reply_json write_fixture fixture_location relay_location
                        worker_pid);

# --- fixtures: what the "upstream" sends, exactly ----------------------------
# the test's nginx serves them to itself (a POST turned into the file by
# error_page), so every byte the relay must pass on is known
my $fx = tempdir(CLEANUP => !$ENV{IMGBILL_KEEP});
my %sha;
sub fixture {
    my ($name, $b64len) = @_;
    my $json = reply_json($b64len);
    $sha{$name} = write_fixture($fx, $name, $json);
    return length $json;
}
my $big_len = fixture('big', 16_000_000);     # a 4K image
fixture('small', 100_000);                    # under 256k
fixture('mid', 600_000);                      # over 256k, under 1m
# a reply that is JSON but not an object: the scanner must see its first
# byte, though it went to the file long before the end
write_fixture($fx, 'notjson', '[' . ('"x",' x 200_000) . '"x"]');

sub relay {
    my ($path, @d) = @_;
    return relay_location($path, '$http_x_fixture.json', @d);
}

my $h = Imgbill::Harness->new(extra_http => "imgbill_reply_memory 256k;\n",
    extra_server => join "\n",
    fixture_location($fx),
    relay('/spool/v1/chat/completions', 'imgbill fast;'),
    relay('/metered/v1/chat/completions', 'imgbill metered;'),
    relay('/sendfile/v1/chat/completions', 'imgbill fast;', 'sendfile on;'),
    relay('/gzip/v1/chat/completions', 'imgbill fast;', 'sendfile on;', 'gzip on;',
          'gzip_types application/json;', 'gzip_min_length 0;'),
    relay('/mem/v1/chat/completions', 'imgbill fast;',
          'imgbill_reply_buffer_size off;'),
    relay('/onem/v1/chat/completions', 'imgbill fast;',
          'imgbill_reply_buffer_size 1m;'),
    relay('/limit/v1/chat/completions', 'imgbill fast;',
          'imgbill_body_limit 1m;'),
    relay('/own/v1/chat/completions', 'imgbill fast;',
          'imgbill_temp_path ' . "$fx/own" . ' 1 2;'),
);

my $tmp = $h->dir . '/tmp/imgbill';
ok -d $tmp, 'the default temp path, beside proxy_temp_path, is created';
ok -d "$fx/own", 'a configured imgbill_temp_path is created';

my $body = '{"model":"gemini-2.5-flash-image","messages":[{"role":"user","content":"koi"}]}';

my $master = $h->{nginx_pid};
sub worker { worker_pid($master) }

# the temporary files the worker holds open under $dir
sub open_files {
    my ($dir) = @_;
    my $w = worker() or return ();
    opendir my $d, "/proc/$w/fd" or return ();
    return grep { index($_, "$dir/") == 0 }
           map { readlink "/proc/$w/fd/$_" // '' } readdir $d;
}

sub held_lines {
    my $log = $h->error_log;
    my @l = $log =~ /an upstream reply waits in a temporary file (\S+)/g;
    return scalar @l;
}

sub post {
    my ($path, $fixture, $key, @hdr) = @_;
    return $h->raw_send(path => $path, body => $body, key => $key,
                        headers => ['Content-Type' => 'application/json',
                                    'X-Fixture' => $fixture, @hdr]);
}

# one reply: status, charge, body byte for byte, the money in Redis, and
# whether it went through a temporary file
sub relayed_ok {
    my ($name, %o) = @_;
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    my $before = held_lines();
    my $res = $h->raw_reply(post($o{path}, $o{fixture}, $key, @{ $o{hdr} || [] }));
    my $charge = $o{charge} // 700;
    subtest $name => sub {
        is $res->{status}, 200, 'status 200'
            or diag substr($res->{body} // '', 0, 300);
        is $res->{headers}{'x-imgbill-charge'}, fmt_units($charge), 'charge header';
        is $res->{headers}{'x-imgbill-balance'}, fmt_units(100000 - $charge),
            'balance header';
        my $got = $res->{body};
        $got = $o{decode}->($res) if $o{decode};
        ok defined $got && sha256_hex($got) eq $sha{ $o{fixture} },
            'body is the upstream\'s, byte for byte';
        is $res->{headers}{'content-length'}, length $res->{body},
            'Content-Length' unless $o{decode};
        is $h->balance($acct), 100000 - $charge, 'Redis balance';
        my $l = $h->ledger($acct);
        is scalar @$l, 1, 'one ledger entry';
        is $l->[0]{charge}, $charge, 'ledger charge';
        is_deeply $h->holds($acct), {}, 'no hold left';
        is held_lines() - $before, $o{file} ? 1 : 0,
            $o{file} ? 'held in a temporary file' : 'held in memory only';
        is_deeply [open_files($tmp)], [], 'no temporary file left open';
    };
}

relayed_ok('16 MB reply (past the 256k budget)',
    path => '/spool/v1/chat/completions', fixture => 'big', file => 1);
relayed_ok('100 KB reply stays in memory',
    path => '/spool/v1/chat/completions', fixture => 'small', file => 0);
relayed_ok('600 KB reply goes to the file',
    path => '/spool/v1/chat/completions', fixture => 'mid', file => 1);
relayed_ok('600 KB reply, imgbill_reply_buffer_size 1m: the budget still rules',
    path => '/onem/v1/chat/completions', fixture => 'mid', file => 1);
relayed_ok('100 KB reply, imgbill_reply_buffer_size 1m: in memory',
    path => '/onem/v1/chat/completions', fixture => 'small', file => 0);
relayed_ok('16 MB reply, imgbill_reply_buffer_size off: the budget still rules',
    path => '/mem/v1/chat/completions', fixture => 'big', file => 1);
relayed_ok('metered 16 MB reply, charged from its usage to the unit',
    path => '/metered/v1/chat/completions', fixture => 'big', file => 1,
    charge => 2465);
relayed_ok('16 MB reply sent with sendfile',
    path => '/sendfile/v1/chat/completions', fixture => 'big', file => 1);
relayed_ok('16 MB reply through gzip (a later filter that needs memory)',
    path => '/gzip/v1/chat/completions', fixture => 'big', file => 1,
    hdr => ['Accept-Encoding' => 'gzip'],
    decode => sub {
        my ($res) = @_;
        return undef unless ($res->{headers}{'content-encoding'} // '') eq 'gzip';
        my ($z) = dechunk($res->{body});
        my $plain;
        gunzip(\$z => \$plain) or return undef;
        return $plain;
    });
relayed_ok('16 MB reply under a configured imgbill_temp_path with levels',
    path => '/own/v1/chat/completions', fixture => 'big', file => 1);

# --- the reply scanned as it came: not an object, though spooled ------------
{
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    my $res = $h->raw_reply(post('/spool/v1/chat/completions', 'notjson', $key));
    is $res->{status}, 502, 'a 2.4 MB JSON array in a file: 502';
    is $res->{json}{error}{code}, 'bad_upstream_response', '... bad_upstream_response';
    is $h->balance($acct), 100000, '... nothing charged';
    is_deeply $h->holds($acct), {}, '... hold released';
}

# --- too large, past the file ------------------------------------------------
{
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    my $res = $h->raw_reply(post('/limit/v1/chat/completions', 'big', $key));
    is $res->{status}, 502, 'past imgbill_body_limit: 502';
    is $res->{json}{error}{code}, 'upstream_response_too_large',
        '... upstream_response_too_large';
    is $h->balance($acct), 100000, '... nothing charged';
    is_deeply $h->holds($acct), {}, '... hold released';
}

# --- a reply without Content-Length (the mock, chunked) ----------------------
{
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    my $before = held_lines();
    my $res = $h->chat(key => $key, mock => 'chunked=1 size=3000000');
    is $res->{status}, 200, 'chunked 3 MB reply: 200';
    is $res->{headers}{'x-imgbill-charge'}, '0.2465', '... charged 0.2465';
    my $u = $res->{json}{choices}[0]{message}{images}[0]{image_url}{url} // '';
    is length($u), 3000000 + length('data:image/png;base64,'), '... image intact';
    is held_lines() - $before, 1, '... held in a temporary file';
    is $h->balance($acct), 100000 - 2465, '... Redis balance';
}

# --- Gemini, through the file -------------------------------------------------
{
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    my $res = $h->chat(key => $key, mock => 'size=2000000',
        path => '/v1beta/models/gemini-2.5-flash-image:generateContent',
        headers => { 'x-goog-api-key' => $key },
        body => { contents => [{ parts => [{ text => 'koi' }] }] });
    is $res->{status}, 200, 'Gemini 2 MB reply: 200';
    is $res->{headers}{'x-imgbill-charge'}, '0.2465', '... charged 0.2465';
    is $h->balance($acct), 100000 - 2465, '... Redis balance';
}

# --- a slow reader: the file is open while it downloads, closed after --------
{
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    my $s = post('/spool/v1/chat/completions', 'big', $key);
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 65536);
    my @open;
    ok wait_for(sub { @open = open_files($tmp) }, 10),
        'slow reader: a temporary file is open under imgbill_temp_path';
    like $open[0] // '', qr{^\Q$tmp\E/\d{10} \(deleted\)$},
        '... already unlinked: nothing to leak if the worker dies';
    opendir my $d, $tmp or die $!;
    is_deeply [grep { !/^\.\.?$/ } readdir $d], [], '... the directory stays empty';
    ok wait_for(sub { $h->balance($acct) == 100000 - 700 }, 10),
        "... settled before the body goes out";
    my $res = $h->raw_reply($s);
    ok sha256_hex($res->{body} // '') eq $sha{big}, '... the whole reply, byte for byte';
    ok wait_for(sub { !open_files($tmp) }, 10), '... the file is closed after';
}

# --- a client that goes away mid-download leaves no file ---------------------
{
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    my $s = post('/spool/v1/chat/completions', 'big', $key);
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 65536);
    ok wait_for(sub { open_files($tmp) }, 10), 'client gone: the file was open';
    sysread $s, my $buf, 65536;
    close $s;
    ok wait_for(sub { !open_files($tmp) }, 10), '... and is closed once it went';
    is $h->balance($acct), 100000 - 700, '... charged once (settled before)';
    is scalar @{ $h->ledger($acct) }, 1, '... one ledger entry';
    is_deeply $h->holds($acct), {}, '... no hold left';
}

# --- the directory cannot take the file: 500, nothing charged ---------------
{
    my ($acct, $key) = $h->fresh_account(prefix => 'spool', units => 100000);
    system('rm', '-rf', "$fx/own") == 0 or die 'rm';
    open my $f, '>', "$fx/own" or die $!;    # a file where the directory was
    close $f;
    my $res = $h->raw_reply(post('/own/v1/chat/completions', 'big', $key));
    is $res->{status}, 500, 'temp path unusable: 500';
    is $res->{json}{error}{code}, 'reply_not_held', '... reply_not_held';
    is $h->balance($acct), 100000, '... nothing charged';
    is_deeply $h->holds($acct), {}, '... hold released';
    like $h->error_log, qr/the reply of request \S+ cannot be held in "\Q$fx\E\/own"/,
        '... and the log says where';
    unlink "$fx/own";
}

# --- nginx -t ---------------------------------------------------------------
my $site = "imgbill_redis 127.0.0.1:6379;\nimgbill_fast_price m 0.07;\n";
for my $bad (['imgbill_reply_buffer_size 0;', qr/invalid value "0"/],
             ['imgbill_reply_buffer_size lots;', qr/invalid value "lots"/],
             ["imgbill_reply_buffer_size 1m;\nimgbill_reply_buffer_size 2m;",
              qr/is duplicate/],
             ["imgbill_temp_path $fx/t 0;", qr/invalid value/],
             ["imgbill_temp_path $fx/t 1 2 1 2;",
              qr/invalid number of arguments/]) {
    my ($rc, $out) = Imgbill::Harness->nginx_t("$site$bad->[0]\n");
    isnt $rc, 0, "nginx -t refuses: $bad->[0]";
    like $out, $bad->[1], '... saying why';
}
my ($rc, $out) = Imgbill::Harness->nginx_t(
    "${site}imgbill_reply_buffer_size off;\nimgbill_temp_path $fx/t 1 2;\n");
is $rc, 0, 'nginx -t takes "off" and a path with levels' or diag $out;

is_deeply [$h->crashes], [], 'no worker crashed';

done_testing;
