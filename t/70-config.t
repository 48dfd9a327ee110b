# Directives: `nginx -t` accepts good configurations and rejects bad ones
# with a message naming the directive.
use strict;
use warnings;
use Test::More;
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(free_port);

# scripts/test's second pass: nginx -t runs no worker, and nothing here
# runs under memcheck
plan skip_all => 'nothing under valgrind here: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $port = free_port();

sub conf {
    my (%o) = @_;
    my $http = $o{http} // "imgbill_redis 127.0.0.1:6379;\n";
    my $prices = $o{prices} // "imgbill_metered_price gemini-2.5-flash-image 2.2 219;\n"
                             . "imgbill_fast_price gemini-2.5-flash-image 0.07;\n";
    my $loc = $o{loc} // '';
    my $channel = $o{channel} // 'metered';
    return <<"EOC";
$http
$prices
server {
    listen 127.0.0.1:$port;
    $o{server}
    location / {
        imgbill $channel;
        $loc
        proxy_pass http://127.0.0.1:9;
    }
}
EOC
}

sub good {
    my ($name, %o) = @_;
    my ($rc, $out) = Imgbill::Harness->nginx_t(conf(server => '', %o));
    is $rc, 0, "accepted: $name" or diag $out;
}

sub bad {
    my ($name, $directive, %o) = @_;
    my ($rc, $out) = Imgbill::Harness->nginx_t(conf(server => '', %o));
    subtest "rejected: $name" => sub {
        isnt $rc, 0, 'nginx -t fails';
        like $out, qr/\[emerg\]/, 'an [emerg] message';
        like $out, qr/"\Q$directive\E"/, "the message names \"$directive\""
            or diag $out;
        $o{like} and like $out, $o{like}, "the message matches $o{like}";
    };
}

# --- the shipped configuration and good variants
{
    my $shipped = do { local (@ARGV, $/) = (Imgbill::Harness->root . '/conf.d/imgbill.conf'); <> };
    # the journal's directory is the package's (/var/lib/imgbill); nginx -t
    # opens the file
    $shipped =~ s{^imgbill_journal\s+[^;]*;}{imgbill_journal /tmp/imgbill-t70-$$.journal;}m
        or die 'no imgbill_journal line in conf.d';
    # ... and its upstream key file, the package's
    open my $kf, '>', "/tmp/imgbill-t70-$$.key" or die $!;
    print $kf qq{map "" \$imgbill_upstream_key { default ""; }\n};
    close $kf;
    $shipped =~ s{^include\s+[^;]*;(\s*#\s*site:\s*upstream key)}{include /tmp/imgbill-t70-$$.key;$1}m
        or die 'no upstream key include in conf.d';
    my ($rc, $out) = Imgbill::Harness->nginx_t($shipped);
    unlink "/tmp/imgbill-t70-$$.journal", "/tmp/imgbill-t70-$$.key";
    is $rc, 0, 'conf.d/imgbill.conf passes nginx -t' or diag $out;
}
good('base');
good('redis with password and db', http => "imgbill_redis 127.0.0.1:6379 password=s3cret db=2;\n");
good('redis on a unix socket', http => "imgbill_redis unix:/tmp/redis.sock;\n");
good('metered price with hold', prices => "imgbill_metered_price m 1 2 hold=1.50;\n");
good('same model in both channels',
     prices => "imgbill_metered_price m 1 2;\nimgbill_fast_price m 0.07;\n");
good('integer and 4-decimal prices',
     prices => "imgbill_metered_price m 1 2;\nimgbill_fast_price f 0.0001;\n");
good('all the tunables', loc => 'imgbill_min_balance 0; imgbill_min_charge 0.0001; '
                               . 'imgbill_body_limit 1k; imgbill_image_limit 10m;',
     http => "imgbill_redis 127.0.0.1:6379;\nimgbill_redis_timeout 250ms;\nimgbill_hold_ttl 1h;\n");
good('an image-input rate', prices => "imgbill_metered_price m 36 288 image_input=72 max_output=6240;\n");
good('per-image prices by size and quality', channel => 'fast',
     prices => "imgbill_fast_price d 0.288 1024x1024:hd=0.576 1792x1024=0.576 :hd=0.6;\n");
good('imgbill off', channel => 'off');
good('imgbill fast', channel => 'fast');

# --- bad prices
bad('fast price "abc"', 'imgbill_fast_price', prices => "imgbill_fast_price m abc;\n",
    like => qr/abc/);
bad('negative fast price', 'imgbill_fast_price', prices => "imgbill_fast_price m -0.07;\n");
bad('fast price with 5 decimals', 'imgbill_fast_price',
    prices => "imgbill_fast_price m 0.00001;\n");
bad('fast price "1.2.3"', 'imgbill_fast_price', prices => "imgbill_fast_price m 1.2.3;\n");
bad('fast price "1e3"', 'imgbill_fast_price', prices => "imgbill_fast_price m 1e3;\n");
bad('fast price with one argument', 'imgbill_fast_price', prices => "imgbill_fast_price m;\n");
bad('huge fast price', 'imgbill_fast_price',
    prices => "imgbill_fast_price m 99999999999999999999;\n");
bad('metered output price "x"', 'imgbill_metered_price',
    prices => "imgbill_metered_price m 1 x;\n");
bad('metered input price "x"', 'imgbill_metered_price',
    prices => "imgbill_metered_price m x 1;\n");
bad('metered hold "abc"', 'imgbill_metered_price',
    prices => "imgbill_metered_price m 1 2 hold=abc;\n");
bad('image-input rate "abc"', 'imgbill_metered_price',
    prices => "imgbill_metered_price m 1 2 image_input=abc;\n");
bad('metered unknown option', 'imgbill_metered_price',
    prices => "imgbill_metered_price m 1 2 bogus=1;\n");

bad('a size priced on a per-token model', 'imgbill_metered_price',
    prices => "imgbill_metered_price m 1 2 1024x1024=0.5;\n");
bad('a size priced without a price', 'imgbill_fast_price',
    prices => "imgbill_fast_price d 0.288 1024x1024;\n", like => qr/SIZE=PRICE/);
bad('a size priced "x"', 'imgbill_fast_price',
    prices => "imgbill_fast_price d 0.288 1024x1024=x;\n");
bad('an empty quality', 'imgbill_fast_price',
    prices => "imgbill_fast_price d 0.288 1024x1024:=0.5;\n");
bad('a size priced twice, in two cases', 'imgbill_fast_price',
    prices => "imgbill_fast_price d 0.288 1792x1024:hd=0.5 1792X1024:HD=0.6;\n",
    like => qr/priced twice/);
bad('a size priced twice', 'imgbill_fast_price',
    prices => "imgbill_fast_price d 0.288 1792x1024=0.5 1792x1024=0.6;\n",
    like => qr/priced twice/);

# --- duplicates
bad('duplicate metered model', 'imgbill_metered_price',
    prices => "imgbill_metered_price m 1 2;\nimgbill_metered_price m 3 4;\n",
    like => qr/\bm\b|duplicate/);
bad('duplicate fast model', 'imgbill_fast_price',
    prices => "imgbill_fast_price m 0.1;\nimgbill_fast_price m 0.2;\n");

# --- channel
bad('unknown channel', 'imgbill', channel => 'turbo', like => qr/turbo/);

# --- redis address
bad('redis without a host', 'imgbill_redis', http => "imgbill_redis :6379;\n");
bad('redis port 99999', 'imgbill_redis', http => "imgbill_redis 127.0.0.1:99999;\n");
bad('redis port "abc"', 'imgbill_redis', http => "imgbill_redis 127.0.0.1:abc;\n");
bad('redis port 0', 'imgbill_redis', http => "imgbill_redis 127.0.0.1:0;\n");
bad('redis db "abc"', 'imgbill_redis', http => "imgbill_redis 127.0.0.1:6379 db=abc;\n");
bad('redis unknown option', 'imgbill_redis', http => "imgbill_redis 127.0.0.1:6379 foo=bar;\n");
bad('redis empty unix path', 'imgbill_redis', http => "imgbill_redis unix:;\n");
bad('redis in a server block', 'imgbill_redis', server => 'imgbill_redis 127.0.0.1:6380;');
bad('redis without a port', 'imgbill_redis', http => "imgbill_redis 127.0.0.1;\n",
    like => qr/"127\.0\.0\.1" in "imgbill_redis" names no port: write "127\.0\.0\.1:6379"/);
bad('redis twice', 'imgbill_redis',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_redis 127.0.0.1:6380;\n");

# --- money and sizes
bad('min_charge "abc"', 'imgbill_min_charge', loc => 'imgbill_min_charge abc;');
bad('negative min_charge', 'imgbill_min_charge', loc => 'imgbill_min_charge -0.01;');
bad('min_charge with 5 decimals', 'imgbill_min_charge', loc => 'imgbill_min_charge 0.00001;');
bad('min_balance "abc"', 'imgbill_min_balance', loc => 'imgbill_min_balance abc;');
bad('body_limit "abc"', 'imgbill_body_limit', loc => 'imgbill_body_limit abc;');
bad('image_limit "abc"', 'imgbill_image_limit', loc => 'imgbill_image_limit abc;');
bad('redis_timeout 0', 'imgbill_redis_timeout',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_redis_timeout 0;\n",
    like => qr/"imgbill_redis_timeout" directive must be above 0/);
bad('redis_timeout "abc"', 'imgbill_redis_timeout',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_redis_timeout abc;\n");
good('imgbill_memory_trim off',
     http => "imgbill_redis 127.0.0.1:6379;\nimgbill_memory_trim off;\n");
good('imgbill_memory_trim 5m',
     http => "imgbill_redis 127.0.0.1:6379;\nimgbill_memory_trim 5m;\n");
bad('imgbill_memory_trim 0', 'imgbill_memory_trim',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_memory_trim 0;\n",
    like => qr/invalid value "0" in "imgbill_memory_trim": a time above 0/);
bad('imgbill_memory_trim "soon"', 'imgbill_memory_trim',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_memory_trim soon;\n");
bad('imgbill_memory_trim twice', 'imgbill_memory_trim',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_memory_trim 1s;\n"
          . "imgbill_memory_trim off;\n",
    like => qr/is duplicate/);
good('imgbill_max_images 1 and 64', loc => 'imgbill_max_images 1;',
     http => "imgbill_redis 127.0.0.1:6379;\nimgbill_max_images 64;\n");
for my $n (0, 65, 'many') {
    bad("imgbill_max_images $n", 'imgbill_max_images', loc => "imgbill_max_images $n;",
        ($n =~ /^\d/ ? (like => qr/invalid value "$n" in "imgbill_max_images": from 1 to 64/)
                     : ()));
}
bad('hold_ttl "abc"', 'imgbill_hold_ttl',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_hold_ttl abc;\n");

# --- mistakes that pass each directive's syntax but cost money at run time
bad('an "imgbill" location with nothing to relay to', 'imgbill',
    server => 'location /bare { imgbill metered; }',
    like => qr/location "\/bare" has nothing to relay to: add "proxy_pass"/);
bad('imgbill_hold_ttl not longer than proxy_read_timeout', 'imgbill_hold_ttl',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_hold_ttl 10m;\n",
    loc => 'proxy_read_timeout 600s;',
    like => qr/"imgbill_hold_ttl" 600 s is not longer than "proxy_read_timeout" 600\.000 s of location "\/"/);
bad('... nor equal to it', 'imgbill_hold_ttl',
    http => "imgbill_redis 127.0.0.1:6379;\nimgbill_hold_ttl 600s;\n",
    server => 'proxy_read_timeout 600s;');
good('imgbill_hold_ttl longer than proxy_read_timeout',
     http => "imgbill_redis 127.0.0.1:6379;\nimgbill_hold_ttl 601s;\n",
     loc => 'proxy_read_timeout 600s;');
bad('imgbill_health beside "imgbill"', 'imgbill_health',
    server => 'location = /h { imgbill metered; imgbill_health; }',
    like => qr/cannot share a location with "imgbill"/);
good('imgbill_health under a server that bills: the health needs no key',
     server => "imgbill metered;\n    location = /h { imgbill_health; }");
good('"imgbill" on a server: its locations without proxy_pass are not relays',
     server => "imgbill metered;\n    location = /ready { return 200; }");

# --- what is checked once the configuration is read names the line of the
# directive it is about, not the end of the http block
sub names_line {
    my ($name, $directive, %o) = @_;
    local $ENV{IMGBILL_KEEP} = 1;
    my ($rc, $out) = Imgbill::Harness->nginx_t(conf(server => '', %o));
    my ($file, $line) = $out =~ /\[emerg\][^\n]* in (\S+):(\d+)/;
    my @lines = ($file && -f $file) ? do { open my $f, '<', $file; <$f> } : ();
    subtest "$name: the line of \"$directive\"" => sub {
        isnt $rc, 0, 'nginx -t fails';
        like $lines[($line // 1) - 1] // '', qr/(?:^\s*|[{;]\s*)\Q$directive\E[\s;]/,
            "$file:$line is the directive's" or diag $out;
    };
    File::Path::remove_tree(File::Basename::dirname($file)) if $file;
}
use File::Path ();
use File::Basename ();

names_line('nothing to relay to', 'imgbill', server => 'location /bare { imgbill metered; }');
names_line('hold_ttl under proxy_read_timeout', 'imgbill',
           http => "imgbill_redis 127.0.0.1:6379;\nimgbill_hold_ttl 10m;\n",
           loc => 'proxy_read_timeout 600s;');
names_line('"imgbill" without imgbill_redis', 'imgbill', http => "\n");
names_line('"imgbill fast" without a fast price', 'imgbill', channel => 'fast',
           prices => "imgbill_metered_price m 1 2;\n");
names_line('imgbill_redis_wait without a journal', 'imgbill_redis_wait',
           http => "imgbill_redis 127.0.0.1:6379;\nimgbill_redis_wait 1 100ms;\n");
names_line('imgbill_redis_wait not shorter than the timeout', 'imgbill_redis_wait',
           http => "imgbill_redis 127.0.0.1:6379;\nimgbill_journal /tmp/imgbill-t70-w$$.j;\n"
                 . "imgbill_redis_timeout 1s;\nimgbill_redis_wait 1 2s;\n");
unlink "/tmp/imgbill-t70-w$$.j";

done_testing;
