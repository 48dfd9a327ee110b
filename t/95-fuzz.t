#!/usr/bin/perl
# libFuzzer over the parsers of hostile input (t/fuzz/run: the reply
# scanner, checked against jansson, the request validator and the
# event-stream reader), and proof that the harness notices a broken
# scanner or a broken reader.
use strict;
use warnings;
use File::Temp qw(tempdir);
use FindBin;
use Test::More;

# scripts/test's second pass re-runs the suite for nginx under valgrind;
# nothing here starts nginx, and the first pass fuzzed already
plan skip_all => 'fuzzing ran in the first pass'
    if $ENV{IMGBILL_VALGRIND_DIR};

my $root = "$FindBin::Bin/..";

# the files and -I flags a target is built from (t/fuzz/sources)
sub sources {
    my @l = split /\n/, `"$root/t/fuzz/sources" $_[0]`;
    die "t/fuzz/sources $_[0] failed\n" if $?;
    return @l;
}
my $tree = "$root/build/nginx";
my $seconds = $ENV{FUZZ_SECONDS} || 20;
my $started = time;

# the targets, side by side: about $seconds in all, plus the builds
my $out = `FUZZ_SECONDS=$seconds "$root/t/fuzz/run" 2>&1`;
is($?, 0, "t/fuzz/run exits 0") or diag($out);

for my $t (qw(scan request sse)) {
    my ($line, $runs, $crashes) =
        $out =~ /^(fuzz $t: (\d+) runs in \d+ s, (\d+) crash\S*)/m;

    ok(defined $line, "$t: a summary line") or next;
    note($line);
    cmp_ok($runs, '>', 1000, "$t: more than 1000 runs");
    is($crashes, 0, "$t: no crashes");
}

# A harness that cannot fail is no test: the scan target built with
# IMGBILL_FUZZ_SELFTEST reports one prompt token more than the scanner
# found (a plausible count still), and must fail on the seed corpus, on
# which the real one passes, by comparing with jansson.

my $dir = tempdir(CLEANUP => 1);
my @inc = map { "-I$tree/$_" }
    qw(src/core src/event src/event/modules src/os/unix objs src/http
       src/http/modules src/http/v2);
my @cmd = ('clang', '-g', '-O1', '-fsanitize=fuzzer,address,undefined',
           '-fno-sanitize-recover=all', '-Wall', '-Werror',
           '-DIMGBILL_FUZZ_SELFTEST', @inc, sources('--include'),
           '-o', "$dir/scan_selftest", "$root/t/fuzz/scan_fuzz.c",
           sources('scan'), '-ljansson');

my $cc = `@cmd 2>&1`;
is($?, 0, "the self-test variant compiles") or diag($cc);

# a copy, so that nothing libFuzzer does can touch the repository's corpus
mkdir "$dir/corpus" or die "$dir/corpus: $!";
system('cp', glob("$root/t/fuzz/corpus/scan/*"), "$dir/corpus") == 0
    or die "cp: $?";

# (a failing input is written to -artifact_prefix, by default the cwd)
my $replay = qq(-runs=0 -artifact_prefix="$dir/" "$dir/corpus" 2>&1);

my $good = `"$root/build/fuzz/scan_fuzz" $replay`;
is($?, 0, "the real scan target passes the seed corpus") or diag($good);

my $bad = `"$dir/scan_selftest" $replay`;
isnt($?, 0, "a scanner that miscounts fails the seed corpus");
like($bad, qr/scan_fuzz: invariant failed: jansson's usage differs/,
     "... because jansson counts otherwise")
    or diag($bad);
note($1) if $bad =~ /^(scan_fuzz: invariant failed: .*)$/m;

# The same for the event-stream reader: a variant that puts usage_at one
# byte late (where "cost" would go in) must fail the seed corpus.

@cmd = ('clang', '-g', '-O1', '-fsanitize=fuzzer,address,undefined',
        '-fno-sanitize-recover=all', '-Wall', '-Werror',
        '-DIMGBILL_FUZZ_SELFTEST', @inc, sources('--include'),
        '-o', "$dir/sse_selftest", "$root/t/fuzz/sse_fuzz.c",
        sources('sse'), '-ljansson');

$cc = `@cmd 2>&1`;
is($?, 0, "the reader's self-test variant compiles") or diag($cc);

mkdir "$dir/sse" or die "$dir/sse: $!";
system('cp', glob("$root/t/fuzz/corpus/sse/*"), "$dir/sse") == 0
    or die "cp: $?";

$replay = qq(-runs=0 -artifact_prefix="$dir/" "$dir/sse" 2>&1);

$good = `"$root/build/fuzz/sse_fuzz" $replay`;
is($?, 0, "the real sse target passes the seed corpus") or diag($good);

$bad = `"$dir/sse_selftest" $replay`;
isnt($?, 0, "a reader that misplaces the usage fails the seed corpus");
like($bad, qr/invariant failed: usage_at is not after a '\{'/,
     "... because the cost would not go into the usage object")
    or diag($bad);

note("t/95-fuzz.t: " . (time - $started) . " s");

done_testing();
