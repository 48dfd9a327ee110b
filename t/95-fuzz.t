#!/usr/bin/perl
# libFuzzer over the parsers of hostile input (t/fuzz/run: the reply
# scanner, checked against jansson, the request validator, the
# event-stream reader, the multipart/form-data reader and the journal's
# reader), and proof that the harness notices a broken scanner or a broken
# reader.
use strict;
use warnings;
use File::Temp qw(tempdir);
use POSIX ();
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
my $seconds = $ENV{FUZZ_SECONDS} || 10;
my $started = time;

# A harness that cannot fail is no test: each target built with
# IMGBILL_FUZZ_SELFTEST is broken on purpose, and must fail on its seed
# corpus, on which the real one passes, saying why.

my $dir = tempdir(CLEANUP => 1);
my @inc = map { "-I$tree/$_" }
    qw(src/core src/event src/event/modules src/os/unix objs src/http
       src/http/modules src/http/v2);

# the self-test variants compile while the targets fuzz: the fuzzing runs
# for its time whatever else runs, and the compiles are most of the rest
my @broken = qw(scan sse multipart journal);
my $cc_pid = fork // die "fork: $!";
if ($cc_pid == 0) {
    for my $t (@broken) {
        my @cmd = selftest_cc($t);
        my $cc = `@cmd 2>&1`;
        open my $f, '>', "$dir/$t.cc" or POSIX::_exit(1);
        print $f "$?\n$cc";
        close $f;
    }
    POSIX::_exit(0);
}

# the targets, side by side: about $seconds in all, plus the builds
my $out = `FUZZ_SECONDS=$seconds "$root/t/fuzz/run" 2>&1`;
is($?, 0, "t/fuzz/run exits 0") or diag($out);
waitpid $cc_pid, 0;

for my $t (qw(scan request sse multipart journal)) {
    my ($line, $runs, $crashes) =
        $out =~ /^(fuzz $t: (\d+) runs in \d+ s, (\d+) crash\S*)/m;

    ok(defined $line, "$t: a summary line") or next;
    note($line);
    cmp_ok($runs, '>', 1000, "$t: more than 1000 runs");
    is($crashes, 0, "$t: no crashes");
}

sub selftest_cc {
    my ($t) = @_;
    return ('clang', '-g', '-O1', '-fsanitize=fuzzer,address,undefined',
            '-fno-sanitize-recover=all', '-Wall', '-Werror',
            '-DIMGBILL_FUZZ_SELFTEST', @inc, sources('--include'),
            '-o', "$dir/${t}_selftest", "$root/t/fuzz/${t}_fuzz.c",
            sources($t), '-ljansson');
}

sub selftest {
    my ($t, $broken, $because, $why) = @_;
    my ($rc, $cc) = do {
        local (@ARGV, $/) = ("$dir/$t.cc");
        split /\n/, (<> // "-1\nno compiler output"), 2;
    };
    is($rc, 0, "$t: the self-test variant compiles") or diag($cc);

    # a copy, so that nothing libFuzzer does can touch the repository's
    # corpus; a failing input is written to -artifact_prefix
    mkdir "$dir/$t" or die "$dir/$t: $!";
    system('cp', glob("$root/t/fuzz/corpus/$t/*"), "$dir/$t") == 0
        or die "cp: $?";
    my $replay = qq(-runs=0 -artifact_prefix="$dir/" "$dir/$t" 2>&1);

    my $good = `"$root/build/fuzz/${t}_fuzz" $replay`;
    is($?, 0, "$t: the real target passes the seed corpus") or diag($good);

    my $bad = `"$dir/${t}_selftest" $replay`;
    isnt($?, 0, "$t: $broken fails the seed corpus");
    like($bad, $because, "... $why") or diag($bad);
    note($1) if $bad =~ /^(\w+_fuzz: invariant failed: .*)$/m;
}

# one prompt token more than the scanner found (a plausible count still)
selftest('scan', 'a scanner that miscounts',
         qr/scan_fuzz: invariant failed: jansson's usage differs/,
         'because jansson counts otherwise');

# usage_at one byte late (where "cost" would go in)
selftest('sse', 'a reader that misplaces the usage',
         qr/invariant failed: usage_at is not after a '\{'/,
         'because the cost would not go into the usage object');

# a part told one byte longer than its bytes
selftest('multipart', 'a reader that miscounts a part',
         qr/invariant failed: a part's size is not its bytes/,
         'because its bytes add up otherwise');

# a journal line's charge read one unit high
selftest('journal', 'a journal reader that misreads a charge',
         qr/invariant failed: a charge reads back otherwise/,
         'because the line says otherwise');

note("t/95-fuzz.t: " . (time - $started) . " s");

done_testing();
