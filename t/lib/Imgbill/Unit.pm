package Imgbill::Unit;
# The C unit checks (t/unit/*.c): compiled against the nginx tree that
# scripts/build configured, with some of the module's own files and the
# stubs of libnginx (t/stub/), under AddressSanitizer and UBSan, then run;
# each prints its own TAP.
#
#   use Imgbill::Unit;
#   Imgbill::Unit::run('scan_check', [qw(scan scan_token)]);
#   Imgbill::Unit::run('request_check', [qw(request reading key)],
#                      [qw(-ljansson -lcrypto)]);
use strict;
use warnings;
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/../../..');

# run($check, [module file stems], [extra linker arguments], [extra
# compiler flags]): exits
sub run {
    my ($check, $stems, $libs, $cflags) = @_;
    my $tree = "$ROOT/build/nginx";
    my $mod = "$ROOT/ngx_imgbill_module";

    # scripts/test's second pass re-runs the suite for the nginx it runs
    # under memcheck: these start none (AddressSanitizer checked them in
    # the first pass), and would only repeat themselves
    if ($ENV{IMGBILL_VALGRIND_DIR}) {
        print "1..0 # SKIP no nginx here: the first pass ran it\n";
        exit 0;
    }

    unless (-d "$tree/objs") {
        print "Bail out! $tree is missing: run scripts/build first\n";
        exit 255;
    }

    my $dir = tempdir(CLEANUP => 1);
    my @inc = map { "-I$tree/$_" }
        qw(src/core src/event src/event/modules src/os/unix objs src/http
           src/http/modules src/http/v2);
    my @files;
    for my $stem (@$stems) {
        my @f = glob "$mod/*/ngx_http_imgbill_$stem.c";
        die "no module file ngx_http_imgbill_$stem.c\n" unless @f == 1;
        push @files, @f;
    }

    my @cmd = ('cc', '-g', '-O1', '-fsanitize=address,undefined',
               '-fno-sanitize-recover=all', '-Wall', '-Werror', @inc,
               @{ $cflags || [] },
               map("-I$_", grep { -d } glob "$mod/*"),
               '-o', "$dir/$check", "$ROOT/t/unit/$check.c", @files,
               "$ROOT/t/stub/ngx_stubs.c", "$ROOT/t/stub/ngx_http_stubs.c",
               @{ $libs || [] });

    my $out = `@cmd 2>&1`;
    if ($? != 0) {
        print "1..1\nnot ok 1 - $check.c compiles\n# $out\n";
        exit 1;
    }

    system("$dir/$check");
    exit($? == 0 ? 0 : 1);
}

1;
