package Imgbill::Fixture;

# Whole replies of a known size, served by the test's own nginx as an
# "upstream" (a POST turned into the file by error_page), so that every
# byte the relay must pass on is known; and the relay's worker, to look
# at its memory and its open files.
#
#   use Imgbill::Fixture qw(reply_json write_fixture fixture_location
#                           relay_location worker_pid);
#   reply_json($b64len)            an OpenAI chat reply with one image of
#                                  about $b64len base64 characters
#   write_fixture($dir, $name, $text) -> sha256 of $text, now $dir/$name.json
#   fixture_location($dir)         "location /fixture/" serving $dir
#   relay_location($path, $file, @directives)  a billed location that
#                                  proxies to /fixture/$file (unbuffered,
#                                  as conf.d); $file may use variables
#   worker_pid($master_pid)        the (first) worker's pid

use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use Exporter 'import';

our @EXPORT_OK = qw(reply_json write_fixture fixture_location relay_location
                    worker_pid);

sub reply_json {
    my ($b64len) = @_;
    my $b64 = 'iVBORw0KGgo' . ('QUJD' x int(($b64len - 11) / 4));
    return qq({"id":"chatcmpl-fixture","object":"chat.completion",)
         . qq("created":1700000000,"model":"gemini-2.5-flash-image",)
         . qq("choices":[{"index":0,"message":{"role":"assistant",)
         . qq("content":"Here is your image.","images":[{"type":"image_url",)
         . qq("image_url":{"url":"data:image/png;base64,$b64"}}]},)
         . qq("finish_reason":"stop"}],)
         . qq("usage":{"prompt_tokens":560,"completion_tokens":1120,)
         . qq("total_tokens":1680}}\n);
}

sub write_fixture {
    my ($dir, $name, $text) = @_;
    open my $f, '>', "$dir/$name.json" or die "$dir/$name.json: $!";
    print $f $text;
    close $f;
    return sha256_hex($text);
}

sub fixture_location {
    my ($dir) = @_;
    return join "\n", 'location /fixture/ {', "    alias $dir/;",
        '    default_type application/json;', '    error_page 405 =200 $uri;',
        '}', '';
}

sub relay_location {
    my ($path, $file, @d) = @_;
    return join "\n", "location = $path {", @d,
        "proxy_pass http://127.0.0.1:\$server_port/fixture/$file;",
        'proxy_http_version 1.1;',
        'proxy_set_header Connection "";',
        'proxy_set_header Authorization "";',
        'proxy_set_header Accept-Encoding "";',
        'proxy_buffering off;',
        '}', '';
}

sub worker_pid {
    my ($master) = @_;
    open my $f, '<', "/proc/$master/task/$master/children" or return;
    my ($w) = split ' ', scalar(<$f>) // '';
    return $w;
}

1;
