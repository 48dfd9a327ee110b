#!/usr/bin/perl
# The reply scanner, checked directly in C (t/unit/scan_check.c) under
# AddressSanitizer and UBSan: every verdict, the same however the reply is
# cut into buffers, and no read outside the reply.
use strict;
use warnings;
use File::Temp qw(tempdir);
use FindBin;

my $root = "$FindBin::Bin/..";
my $tree = "$root/build/nginx";
unless (-d "$tree/objs") {
    print "Bail out! $tree is missing: run scripts/build first\n";
    exit 255;
}

my $dir = tempdir(CLEANUP => 1);
my @inc = map { "-I$tree/$_" }
    qw(src/core src/event src/event/modules src/os/unix objs src/http
       src/http/modules src/http/v2);
my @cmd = ('cc', '-g', '-O1', '-fsanitize=address,undefined',
           '-fno-sanitize-recover=all', '-Wall', '-Werror', @inc,
           "-I$root/ngx_imgbill_module", '-o', "$dir/scan_check",
           "$root/t/unit/scan_check.c",
           "$root/ngx_imgbill_module/ngx_http_imgbill_scan.c",
           "$root/ngx_imgbill_module/ngx_http_imgbill_scan_token.c",
           "$root/t/stub/ngx_stubs.c");

my $out = `@cmd 2>&1`;
if ($? != 0) {
    print "1..1\nnot ok 1 - scan_check.c compiles\n# $out\n";
    exit 1;
}

system("$dir/scan_check");
exit($? == 0 ? 0 : 1);
