#!/usr/bin/env perl
# The Debian package, into the system's own nginx: scripts/package builds
# build/libnginx-mod-http-imgbill_<version>_<arch>.deb (or reuses one newer
# than its sources), `apt-get install ./…deb` puts it into /usr/sbin/nginx's
# tree (module enabled through modules-enabled, CLI on the PATH, page, example
# config, journal directory owned by www-data), the installed example becomes
# /etc/nginx/conf.d/imgbill.conf with its "site:" lines pointed at a private
# Redis and the mock upstream, `nginx -t` passes, the system nginx serves one
# billed call for a key the installed CLI made.  The package's version is
# debian/changelog's stamped with the nginx-dev it was built against
# (scripts/package --version overrides it).  `apt-get remove` with imgbill
# still configured sets the files that use it aside (conf.d/X.conf ->
# X.conf.disabled-by-removal, sites-enabled/X ->
# sites-available/X.disabled-by-removal), so nginx -t passes and the system
# nginx keeps serving, and says the way back; it refuses when imgbill is in a
# file it cannot set aside.  Installing again puts the files back, and a
# reload brings billing back.  `apt-get purge` leaves nothing of the package
# behind, keeps the operator's set-aside configuration and a journal with
# lines, and says the whole way back.  /etc/nginx, /var/lib/nginx and
# /var/log/nginx are put back as they were, whatever happens.
#
# Root only (it installs a package and runs the system nginx); skipped when
# the package is already installed (an operator's), when the system nginx is
# running, and in scripts/test's valgrind pass (this nginx is not started by
# the harness, so memcheck would see nothing of it).  Only 127.0.0.1: the
# sites and conf.d snippets already in /etc/nginx (Debian's default site
# listens on *:80) are set aside while the system nginx runs.

use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname basename);
use File::Find ();
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use Digest::SHA ();
use Fcntl qw(:flock);
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);

my $ROOT;
BEGIN { $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/..') }
use lib "$ROOT/t/lib", "$ROOT/scripts/lib";

my $PKG     = 'libnginx-mod-http-imgbill';
my $NGINX   = '/usr/sbin/nginx';
my $ETC     = '/etc/nginx';
my $PIDFILE = '/run/nginx.pid';
my $SO      = '/usr/lib/nginx/modules/ngx_http_imgbill_module.so';
my $AVAIL   = '/usr/share/nginx/modules-available/mod-http-imgbill.conf';
my $ENABLED = "$ETC/modules-enabled/50-mod-http-imgbill.conf";
my $EXAMPLE = "/usr/share/doc/$PKG/examples/imgbill.conf";
my $VARDIR  = '/var/lib/imgbill';
my $JOURNAL = "$VARDIR/imgbill.journal";
my $APT     = 'DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600';

plan skip_all => 'needs root: installs a package into the system nginx' if $> != 0;
plan skip_all => 'no apt-get/dpkg here'
    unless -x '/usr/bin/apt-get' && -x '/usr/bin/dpkg' && -x '/usr/bin/dpkg-query';
plan skip_all => 'the valgrind pass: this test runs the system nginx, not the harness\''
    if $ENV{IMGBILL_VALGRIND_DIR};
plan skip_all => "no system nginx ($NGINX, $ETC/nginx.conf)"
    unless -x $NGINX && -f "$ETC/nginx.conf";

# one run of this test at a time on this machine (it owns /etc/nginx while
# it runs)
my $lockdir = -d '/run/lock' ? '/run/lock' : '/tmp';
open my $lock, '>', "$lockdir/imgbill-96-package.lock" or die "lock: $!";
{
    my $until = time + 900;
    until (flock $lock, LOCK_EX | LOCK_NB) {
        plan skip_all => 'another run of t/96-package.t held the lock for 15 minutes'
            if time > $until;
        sleep 1;
    }
}

my $status = `dpkg-query -W -f='\${db:Status-Abbrev}' $PKG 2>/dev/null`;
plan skip_all => "$PKG is installed ($status): not touching an operator's install"
    if $status =~ /^.[^n]/;    # anything but "not installed"
plan skip_all => "$VARDIR exists: it may hold an operator's journal" if -e $VARDIR;
plan skip_all => 'the system nginx is running' if system_nginx_pid();

require Imgbill::Harness;
Imgbill::Harness->import(qw(wait_for port_open fmt_units));

my $t0 = time;
my $bak = tempdir('ib96-XXXXXXXX', TMPDIR => 1, CLEANUP => 0);
my %state;    # what cleanup() has to undo

# ---- what the machine looked like ----------------------------------------

sub manifest {
    my ($dir) = @_;
    my %m;
    return \%m unless -d $dir;
    File::Find::find({ no_chdir => 1, wanted => sub {
        my $p = $File::Find::name;
        my @st = lstat $p or return;
        my $what = -l _ ? 'link ' . readlink($p)
                 : -d _ ? 'dir'
                 : -f _ ? 'file ' . Digest::SHA->new(256)->addfile($p)->hexdigest
                 : 'other';
        $m{$p} = sprintf '%s %04o %d:%d', $what, $st[2] & 07777, @st[4, 5];
    } }, $dir);
    return \%m;
}

sub manifest_text {
    my ($m) = @_;
    return join '', map { "$_ $m->{$_}\n" } sort keys %$m;
}

sub sizes {
    my ($dir) = @_;
    my %s;
    opendir my $d, $dir or return \%s;
    for (grep { !/^\.\.?$/ } readdir $d) {
        my @st = lstat "$dir/$_" or next;
        $s{$_} = -d _ ? 'dir' : $st[7];
    }
    return \%s;
}

my $etc_before  = manifest($ETC);
my $lib_before  = sizes('/var/lib/nginx');
my $log_before  = sizes('/var/log/nginx');
system('cp', '-a', $ETC, "$bak/etc-nginx") == 0 or die "cannot back up $ETC";

# ---- cleanup, on every way out --------------------------------------------

my $cleaned;
sub cleanup {
    return if $cleaned++;
    local ($?, $!, $@);
    kill 'TERM', -$state{build} if $state{build};
    stop_system_nginx() if $state{nginx_started};
    if ($state{installed}) {
        # whatever the test left configured: the package goes
        system("IMGBILL_REMOVE_ANYWAY=1 $APT purge -y -qq $PKG >>$bak/cleanup.log 2>&1");
    }
    remove_tree($VARDIR) if $state{installed} && -d $VARDIR;
    # /etc/nginx: put back what changed or went, remove what came
    my $now = manifest($ETC);
    for my $p (sort { length $b <=> length $a } keys %$now) {
        next if exists $etc_before->{$p};
        if (-d $p && !-l $p) { remove_tree($p) } else { unlink $p }
    }
    if (system('cp', '-a', "$bak/etc-nginx/.", "$ETC/") == 0) {
        remove_tree("$bak/etc-nginx");
    } else {
        warn "restoring $ETC from $bak/etc-nginx failed: that copy is kept\n";
    }
    # nginx makes its temp dirs in /var/lib/nginx and appends to its logs
    my $lib = sizes('/var/lib/nginx');
    for (keys %$lib) {
        remove_tree("/var/lib/nginx/$_") unless exists $lib_before->{$_};
    }
    my $log = sizes('/var/log/nginx');
    for (keys %$log) {
        if (!exists $log_before->{$_}) { unlink "/var/log/nginx/$_" }
        elsif ($log_before->{$_} ne 'dir' && $log->{$_} ne $log_before->{$_}) {
            truncate "/var/log/nginx/$_", $log_before->{$_};
        }
    }
    remove_tree($bak) unless -d "$bak/etc-nginx";
}

my $h;
for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub {
        cleanup();
        $h->teardown if $h;
        $SIG{$sig} = 'DEFAULT';
        kill $sig, $$;
        POSIX::_exit(1);
    };
}
END { cleanup() if $bak }

# ---- helpers ----------------------------------------------------------------

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub spew {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh or die "$f: $!";
}

# run a shell command, stdout and stderr together -> ($exit, $output), its
# lines without the \r apt's terminal handling may add
sub run {
    my ($cmd) = @_;
    my $out = `$cmd 2>&1`;
    my $rc = $? >> 8;
    $out =~ s/\r//g;
    return ($rc, $out);
}

sub system_nginx_pid {
    my ($pid) = slurp($PIDFILE) =~ /(\d+)/ or return 0;
    return kill(0, $pid) ? $pid : 0;
}

sub stop_system_nginx {
    my $pid = system_nginx_pid() or return 1;
    system("$NGINX -c $ETC/nginx.conf -s quit >/dev/null 2>&1");
    my $gone = wait_for(sub { !kill 0, $pid }, 15, 0.1);
    unless ($gone) {
        kill 'TERM', $pid;
        $gone = wait_for(sub { !kill 0, $pid }, 5, 0.1);
    }
    delete $state{nginx_started} if $gone;
    return $gone;
}

# the new lines of the system nginx's error log, for diagnostics
sub error_log_tail {
    my $log = slurp('/var/log/nginx/error.log');
    my $from = $log_before->{'error.log'} // 0;
    $from = 0 if $from eq 'dir' || $from > length $log;
    return substr $log, $from;
}

# the installed CLI, /usr/bin/imgbill, on the test's Redis
sub cli {
    my (@args) = @_;
    local $ENV{IMGBILL_REDIS} = $h->redis_addr;
    delete local $ENV{IMGBILL_REDIS_PASSWORD};
    delete local $ENV{IMGBILL_REDIS_DB};
    my $cmd = join ' ', '/usr/bin/imgbill', map { quotemeta } @args;
    return run($cmd);
}

# ---- 1. the package -----------------------------------------------------------

# in its own process group: an interrupted test stops the build too
sub package_build {
    my (@args) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        setpgrp(0, 0);
        open STDERR, '>&', \*STDOUT;
        exec "$ROOT/scripts/package", @args or POSIX::_exit(127);
    }
    $state{build} = $pid;
    local $/;
    my $out = <$fh> // '';
    close $fh;
    delete $state{build};
    return ($? >> 8, $out);
}
my ($rc, $out) = package_build('--if-needed');
my ($deb) = $out =~ m{^(/\S+\.deb)\s*\z}m;
unless (ok($rc == 0 && $deb && -f $deb, 'scripts/package builds the .deb')) {
    diag "scripts/package failed (exit $rc):\n$out";
    done_testing;
    exit 1;
}
like(basename($deb), qr/^\Q$PKG\E_[0-9][^_]*_[a-z0-9]+\.deb$/, 'named <package>_<version>_<arch>.deb')
    or diag $deb;
my $arch = `dpkg --print-architecture`;
chomp $arch;
like(basename($deb), qr/_\Q$arch\E\.deb$/, "for this machine's architecture ($arch)");

my %ctl = `dpkg-deb -f $deb Package Version Depends Recommends`
    =~ /^(\S+): (.*)$/mg;
is($ctl{Package}, $PKG, 'Package');
my ($abi) = slurp('/usr/share/nginx/src/debian/libnginx-mod.abisubstvars')
    =~ /^nginx:abi=(\S+)/m;
my %dep = map { /^\s*(\S+)/ ? ($1 => 1) : () } split /[,|]/, $ctl{Depends} // '';
ok($abi && $dep{$abi}, "Depends on the nginx ABI it was built for ($abi)")
    or diag "Depends: $ctl{Depends}";
like(`dpkg-query -W -f='\${Provides}' nginx 2>/dev/null`, qr/\b\Q$abi\E\b/,
     'which the installed nginx provides');

# the version: debian/changelog's, stamped with the nginx it was built
# against, so that a rebuild after an nginx upgrade is a newer package
my $base = `dpkg-parsechangelog -l $ROOT/debian/changelog -S Version`;
chomp $base;
(my $ngxdev = `dpkg-query -W -f='\${Version}' nginx-dev 2>/dev/null`) =~ s/^\d+://;
is($ctl{Version}, "$base+nginx$ngxdev",
   "Version: debian/changelog's ($base) stamped with the nginx-dev it was built against ($ngxdev)");
like(basename($deb), qr/^\Q${PKG}_$ctl{Version}_\E/, 'the .deb is named for that version');
is(system('dpkg', '--compare-versions', $ctl{Version}, 'gt', $base), 0,
   "newer than an unstamped $base: apt upgrades one to it");
{
    my ($c, $o) = package_build('--if-needed');
    my ($again) = $o =~ m{^(/\S+\.deb)\s*\z}m;
    SKIP: {
        skip "a source changed while it was built: $o", 1 if $o =~ /^building /m;
        ok($c == 0 && $o =~ /^up to date: / && ($again // '') eq $deb,
           '--if-needed again: the stamped .deb is reused, its path the last line')
            or diag $o;
    }
    # another version, somewhere else (build/ keeps one .deb: the README
    # installs build/libnginx-mod-http-imgbill_*.deb)
    my $vout = "$ROOT/build/t96-package";
    ($c, $o) = package_build('--if-needed', '--version', '9.9.9-1', '--out', $vout);
    my ($vdeb) = $o =~ m{^(/\S+\.deb)\s*\z}m;
    ok($c == 0 && $vdeb && -f $vdeb, 'scripts/package --version 9.9.9-1 --out build/t96-package')
        or diag $o;
    is($vdeb, "$vout/${PKG}_9.9.9-1_$arch.deb", 'named for 9.9.9-1, in --out');
    is(`dpkg-deb -f $vdeb Version 2>&1`, "9.9.9-1\n", 'Version: 9.9.9-1') if $vdeb;
    ok(-f $deb, 'the stamped .deb in build/ is still there');
    ($c, $o) = run("$ROOT/scripts/package --version 'not a version'");
    is($c, 2, '--version refuses what is not a Debian version') or diag $o;
}
ok((grep { /^libhiredis/ } keys %dep) && (grep { /^libjansson/ } keys %dep)
   && (grep { /^perl(:any)?$/ } keys %dep), 'Depends: libhiredis, libjansson (shlibs), perl')
    or diag "Depends: $ctl{Depends}";
like($ctl{Recommends} // '', qr/\bredis-server\b/, 'Recommends: redis-server');

my @contents = map { m{\s\.(/\S*?)/?(?:\s->\s\S+)?$} ? $1 : () } `dpkg-deb -c $deb`;
my %in_deb = map { $_ => 1 } @contents;
for my $f ($SO, $AVAIL, $EXAMPLE, '/usr/bin/imgbill', '/usr/share/imgbill/imgbill',
           '/usr/share/imgbill/lib/ImgbillRedis.pm', '/usr/share/imgbill/lib/ImgbillLedger.pm',
           '/usr/share/imgbill/ngx_http_imgbill_script.lua',
           '/usr/share/imgbill/html/index.html', $VARDIR) {
    ok($in_deb{$f}, "the .deb has $f");
}
ok(!(grep { m{^/etc/} } @contents), 'and nothing under /etc (dh_nginx enables it in postinst)');

# ---- 2. installed ---------------------------------------------------------------

$state{installed} = 1;
($rc, $out) = run('cd ' . quotemeta(dirname($deb)) . " && $APT install -y --no-install-recommends ./"
                  . basename($deb));
is($rc, 0, 'apt-get install ./' . basename($deb)) or diag $out;
like(`dpkg-query -W -f='\${db:Status-Abbrev}' $PKG`, qr/^ii/, 'installed');

my %listed = map { chomp; $_ => 1 } `dpkg -L $PKG`;
for my $f ($SO, $AVAIL, $EXAMPLE, '/usr/bin/imgbill', '/usr/share/imgbill/html/index.html') {
    ok($listed{$f} && (-e $f || -l $f), "dpkg -L: $f, and it is there");
}
is(slurp($AVAIL), "load_module modules/ngx_http_imgbill_module.so;\n",
   "$AVAIL: the load_module line");
is(readlink($ENABLED) // '', $AVAIL, "enabled: $ENABLED -> $AVAIL");
is(abs_path('/usr/bin/imgbill'), '/usr/share/imgbill/imgbill',
   '/usr/bin/imgbill is the CLI beside its lib/');
like(`sh -c 'command -v imgbill'`, qr{^/usr/bin/imgbill$}m, 'imgbill is on the PATH');
like(slurp('/usr/share/imgbill/imgbill'), qr{\A#!/usr/bin/perl\n}, "the CLI's #! is /usr/bin/perl");
{
    my @st = stat $VARDIR;
    ok(@st && -d _, "$VARDIR exists");
    is(scalar(getpwuid($st[4] // -1)) // '', 'www-data', "$VARDIR belongs to www-data");
    is(sprintf('%04o', ($st[2] // 0) & 07777), '0750', "$VARDIR is 0750");
}
is(slurp('/usr/share/imgbill/html/index.html'), slurp("$ROOT/html/index.html"),
   'the page is html/index.html');
is(slurp($EXAMPLE), slurp("$ROOT/conf.d/imgbill.conf"),
   'the example is conf.d/imgbill.conf, uncompressed');

# ---- 3. the system nginx, with the example as its site ------------------------------

$h = Imgbill::Harness->new(nginx => 0);    # Redis and the mock upstream
my ($lp, $rp, $mp) = ($h->port, $h->redis_port, $h->mock_port);

my $conf = slurp($EXAMPLE);
my %n;
$n{redis} = $conf =~ s{^(\s*)imgbill_redis\s+[^;]*;(\s*#\s*site:\s*redis\s*)$}
                      {${1}imgbill_redis 127.0.0.1:$rp;$2}mg;
$n{upstream} = $conf =~ s{^(\s*)server\s+[^;]*;(\s*#\s*site:\s*upstream\s*)$}
                         {${1}server 127.0.0.1:$mp;$2}mg;
$n{listen} = $conf =~ s{^(\s*)listen\s+[^;]*;(\s*#\s*site:\s*listen\s*)$}
                       {${1}listen 127.0.0.1:$lp;$2}mg;
# the package's journal directory (whatever the example's default is)
$n{journal} = $conf =~ s{^(\s*)imgbill_journal\s+[^;]*;(\s*#\s*site:\s*journal\s*)$}
                        {${1}imgbill_journal $JOURNAL;$2}mg;
ok($n{$_}, "the example has a 'site: $_' line") for qw(redis upstream listen journal);
{
    # the upstream key: one file of root's, which the example includes
    my @st = stat "$ETC/imgbill-upstream-key.conf";
    ok(@st && ($st[2] & 07777) == 0600 && $st[4] == 0,
       "the upstream key's file: $ETC/imgbill-upstream-key.conf, root's, mode 0600");
    like($conf, qr{^\s*include\s+\Q$ETC\E/imgbill-upstream-key\.conf;\s*#\s*site:\s*upstream key\s*$}m,
         '... included by the example');
}
like($conf, qr{^\s*alias\s+/usr/share/imgbill/html/;\s*#\s*site:\s*html\s*$}m,
     "its page is the package's: alias /usr/share/imgbill/html/");
unlike($conf, qr{^\s*listen\s+(?!127\.0\.0\.1:)}m, 'it listens on 127.0.0.1 only');

# only these sites: Debian's default one listens on *:80
for my $d ("$ETC/sites-enabled", "$ETC/conf.d") {
    opendir my $dh, $d or next;
    for (grep { !/^\.\.?$/ } readdir $dh) {
        my $p = "$d/$_";
        if (-d $p && !-l $p) { remove_tree($p) } else { unlink $p or die "$p: $!" }
    }
}
my $IMGBILL_CONF = "$ETC/conf.d/imgbill.conf";
spew($IMGBILL_CONF, $conf);

# beside it, a site of its own that uses imgbill too, enabled the Debian way
# (sites-enabled/NAME -> ../sites-available/NAME), and one that does not:
# removing the package sets the first two aside and keeps the third
# serving
my ($sp, $pp) = (Imgbill::Harness::free_port(), Imgbill::Harness::free_port());
my $SITE      = "$ETC/sites-available/ib96-site";
my $SITE_LINK = "$ETC/sites-enabled/ib96-site";
spew($SITE, <<"EOF");
server {
    listen 127.0.0.1:$sp;
    location = / {
        default_type text/plain;
        return 200 "ib96 site\\n";
    }
    location = /v1/chat/completions {
        imgbill metered;
        proxy_pass http://imgbill_upstream/v1/chat/completions;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Accept-Encoding "";
        proxy_buffering off;
    }
}
EOF
symlink '../sites-available/ib96-site', $SITE_LINK or die "$SITE_LINK: $!";
my $PLAIN_CONF = "$ETC/conf.d/ib96-plain.conf";
my $plain = <<"EOF";
server {
    listen 127.0.0.1:$pp;
    location / {
        default_type text/plain;
        return 200 "plain\\n";
    }
}
EOF
spew($PLAIN_CONF, $plain);

($rc, $out) = run("$NGINX -t -c $ETC/nginx.conf");
is($rc, 0, 'nginx -t: the system nginx.conf, the module from modules-enabled')
    or diag $out;
like($out, qr/test is successful/, 'nginx -t: test is successful');

$state{nginx_started} = 1;
($rc, $out) = run("$NGINX -c $ETC/nginx.conf");
is($rc, 0, "the system nginx starts ($NGINX)") or diag $out, error_log_tail();
my $master = wait_for(sub { system_nginx_pid() && port_open($lp) && system_nginx_pid() }, 15);
ok($master, "it listens on 127.0.0.1:$lp") or diag error_log_tail();

my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0);
my $key = 'sk-pkg-' . unpack 'H16', pack 'NN', int(rand 2**32), $$;

sub get_body {
    my ($port, $path) = @_;
    my $r = $http->get("http://127.0.0.1:$port" . ($path // '/'));
    return "$r->{status} $r->{content}";
}

# one billed call for the key, through the system nginx: its reply
sub billed_call {
    return $http->post("http://127.0.0.1:$lp/v1/chat/completions", {
        headers => { 'Content-Type' => 'application/json',
                     Authorization  => "Bearer $key" },
        content => encode_json({ model => 'gemini-2.5-flash-image',
                                 messages => [ { role => 'user', content => 'a cat' } ] }),
    });
}

SKIP: {
    skip 'the system nginx did not start', 15 unless $master;

    my @workers = map { [split ' ', $_, 2] } `ps -o user=,args= --ppid $master`;
    ok(@workers && !(grep { $_->[0] ne 'www-data' } @workers),
       "its workers run as www-data, as Debian's nginx.conf says")
        or diag explain \@workers;
    ok(-f $JOURNAL, "it opened the journal $JOURNAL");

    like(get_body($lp), qr/^200 .*ready/s, 'GET /: ready');
    my $r = $http->get("http://127.0.0.1:$lp/imgbill/");
    is($r->{status}, 200, 'GET /imgbill/: the self-service page, from /usr/share/imgbill/html');
    is($r->{content}, slurp('/usr/share/imgbill/html/index.html'), 'the packaged page');
    is(get_body($sp), "200 ib96 site\n", 'the sites-enabled site answers');
    is(get_body($pp), "200 plain\n", 'the site without imgbill answers');

    my ($c, $o) = cli('key-add', 'pkgtest', $key);
    is($c, 0, '/usr/bin/imgbill key-add') or diag $o;
    ($c, $o) = cli('topup', 'pkgtest', '10', '--reason', 't/96 package', '--create');
    is($c, 0, '/usr/bin/imgbill topup --create') or diag $o;

    $r = billed_call();
    is($r->{status}, 200, 'POST /v1/chat/completions through the system nginx')
        or diag substr($r->{content} // '', 0, 500), error_log_tail();
    is($r->{headers}{'x-imgbill-charge'}, '0.2465', 'X-Imgbill-Charge: 0.2465 (560 in, 1120 out)');
    is($h->balance('pkgtest'), 100000 - 2465, 'Redis: the balance is 10 - 0.2465');
    ($c, $o) = cli('balance', 'pkgtest');
    is($o, "9.7535\n", '/usr/bin/imgbill balance: 9.7535');
    ($c, $o) = cli('audit', 'pkgtest');
    is($c, 0, '/usr/bin/imgbill audit: the balance is its ledger') or diag $o;

    # key-del runs the relay's own script, which the package carries
    ($c, $o) = cli('key-add', 'pkgtest', "$key-2");
    is($c, 0, '/usr/bin/imgbill key-add of a second key') or diag $o;
    ($c, $o) = cli('key-del', "$key-2");
    is("$c $o", "0 ok\n", '/usr/bin/imgbill key-del: ok, with the packaged script');
    is($h->redis('EXISTS', 'imgbill:key:' . Digest::SHA::sha256_hex("$key-2")), 0,
       '... and the key is gone');

    # the example's billing log, where it says (written by the system nginx)
    my ($alog) = $conf =~ m{^\s*access_log\s+(/\S+)\s+\S+;\s*#\s*site:\s*access log\s*$}m;
    my $rid = $r->{headers}{'x-imgbill-request-id'} // 'none';
    SKIP: {
        skip "the example has no 'site: access log' line", 1 unless $alog;
        ok(wait_for(sub { index(slurp($alog), $rid) >= 0 }, 5),
           "the billing log $alog has the request ($rid)");
    }
}

# ---- 4. removed, with imgbill still configured ---------------------------------------
#
# Without the module every imgbill directive is an `unknown directive`: the
# removal sets aside the files nginx loads that use it, says where they went
# and the way back, and nginx's configuration stays valid.

sub pkg_status { `dpkg-query -W -f='\${db:Status-Abbrev}' $PKG 2>/dev/null` }
my %ASIDE = ($IMGBILL_CONF => "$IMGBILL_CONF.disabled-by-removal",
             $SITE_LINK    => "$ETC/sites-available/ib96-site.disabled-by-removal");

# imgbill in a file nginx includes by name cannot be set aside (the include
# would fail): that removal is refused, and nothing changes
my $EXPLICIT = "$ETC/ib96-explicit.conf";
spew($EXPLICIT, "map \$imgbill_account \$ib96_account { default \"\"; }\n");
spew($PLAIN_CONF, $plain . "include $EXPLICIT;\n");
($rc, $out) = run("$APT remove -y $PKG");
isnt($rc, 0, 'apt-get remove refuses while a file nginx includes by name uses imgbill');
like($out, qr{not removed:.*\Q$EXPLICIT\E.*IMGBILL_REMOVE_ANYWAY=1}s,
     'and says which file, and how to remove it anyway') or diag $out;
like(pkg_status(), qr/^ii/, 'still installed');
is(readlink($ENABLED) // '', $AVAIL, 'the module still enabled');
ok(-f $IMGBILL_CONF && -l $SITE_LINK && !(grep { -e $_ || -l $_ } values %ASIDE),
   'nothing was set aside');
($rc, $out) = run("$NGINX -t -q -c $ETC/nginx.conf");
is($rc, 0, 'nginx -t passes') or diag $out;
spew($PLAIN_CONF, $plain);
unlink $EXPLICIT;

# with the example and the site in place, and the system nginx running
my $running = system_nginx_pid();
($rc, $out) = run("$APT remove -y $PKG");
is($rc, 0, "apt-get remove -y $PKG, imgbill configured, the system nginx running") or diag $out;
like(pkg_status(), qr/^rc/, 'removed (rc: purge is still to come)');
ok(!-e $ENABLED && -l "$ENABLED.removed", "the module disabled: $ENABLED.removed (dh_nginx)");
for my $f (sort keys %ASIDE) {
    ok(!-e $f && !-l $f && (-e $ASIDE{$f} || -l $ASIDE{$f}), "set aside: $f -> $ASIDE{$f}");
    like($out, qr{^\s*\Q$f -> $ASIDE{$f}\E$}m, '  and the removal says so');
    like($out, qr{^\s*mv \Q$ASIDE{$f} $f\E$}m, '  and how to put it back');
}
is(slurp($ASIDE{$IMGBILL_CONF}), $conf, 'the example, as it was');
is(readlink($ASIDE{$SITE_LINK}) // '', '../sites-available/ib96-site', 'the site link, as it was');
ok(-f $PLAIN_CONF, 'the site without imgbill stays');
like($out, qr{apt-get install.*nginx -t && systemctl reload nginx.*replay the journal}s,
     'the way back: install again, reload, the journal is replayed') or diag $out;
($rc, $out) = run("$NGINX -t -c $ETC/nginx.conf");
is($rc, 0, 'nginx -t passes without the module') or diag $out;
is(system_nginx_pid(), $running, 'the system nginx still runs') if $running;
is(get_body($pp), "200 plain\n", 'and answers');
# what Debian's nginx-reload trigger does where invoke-rc.d may (here
# policy-rc.d may forbid it)
system("$NGINX -c $ETC/nginx.conf -s reload >/dev/null 2>&1");
ok(wait_for(sub { !port_open($lp) && !port_open($sp) }, 15),
   'reloaded: no imgbill site left (nothing relayed unbilled)') or diag error_log_tail();
is(system_nginx_pid(), $running, 'the same nginx') if $running;
is(get_body($pp), "200 plain\n", 'which still answers');

# ---- 5. installed again: billing is back -----------------------------------------------

($rc, $out) = run('cd ' . quotemeta(dirname($deb)) . " && $APT install -y --no-install-recommends ./"
                  . basename($deb));
is($rc, 0, 'apt-get install ./' . basename($deb) . ' again') or diag $out;
like(pkg_status(), qr/^ii/, 'installed');
is(readlink($ENABLED) // '', $AVAIL, 'the module enabled again');
for my $f (sort keys %ASIDE) {
    ok((-e $f || -l $f) && !-e $ASIDE{$f} && !-l $ASIDE{$f}, "put back: $ASIDE{$f} -> $f");
    like($out, qr{^\s*\Q$ASIDE{$f} -> $f\E$}m, '  and the install says so');
}
is(slurp($IMGBILL_CONF), $conf, 'the example, as it was');
($rc, $out) = run("$NGINX -t -c $ETC/nginx.conf");
is($rc, 0, 'nginx -t passes') or diag $out;
# the message's last step
system("$NGINX -c $ETC/nginx.conf -s reload >/dev/null 2>&1");
ok(wait_for(sub { port_open($lp) && port_open($sp) }, 15), 'nginx -s reload: the imgbill sites are back')
    or diag error_log_tail();
{
    my $r = billed_call();
    is($r->{status}, 200, 'a billed call again') or diag substr($r->{content} // '', 0, 500), error_log_tail();
    is($r->{headers}{'x-imgbill-charge'}, '0.2465', 'X-Imgbill-Charge: 0.2465');
    is($h->balance('pkgtest'), 100000 - 2 * 2465, 'Redis: the balance is 10 - 2 x 0.2465');
    is(get_body($sp), "200 ib96 site\n", 'the sites-enabled site answers again');
    is(get_body($pp), "200 plain\n", 'and the plain one');
}

ok(stop_system_nginx(), 'nginx -s quit: the system nginx is gone');
ok(wait_for(sub { !port_open($lp) }, 5), "127.0.0.1:$lp is closed");
is(-s $JOURNAL || 0, 0, 'nothing was left owed in the journal');

# ---- 6. purged ------------------------------------------------------------------------

($rc, $out) = run("$APT purge -y $PKG");
is($rc, 0, "apt-get purge -y $PKG") or diag $out;
unlike(pkg_status(), qr/^[a-z][ic]/, 'not installed, no config files left');
my @left = grep { -e $_ || -l $_ }
    ((grep { !-d $_ || -l $_ } keys %listed),    # its files and links
     $SO, $AVAIL, $ENABLED, "$ENABLED.removed", '/usr/bin/imgbill',
     '/usr/share/imgbill', "/usr/share/doc/$PKG", $VARDIR);
is("@left", '', 'nothing of it is left: module, modules-available/-enabled, CLI, page, docs, journal dir');
ok((-e $ASIDE{$IMGBILL_CONF}) && !-e $IMGBILL_CONF, 'the configuration is set aside, not deleted');
like($out, qr{set aside on removal is kept:.*\Q$ASIDE{$IMGBILL_CONF}\E}s, 'and the purge says where')
    or diag $out;
like($out, qr{apt-get install.*mv \Q$ASIDE{$IMGBILL_CONF} $IMGBILL_CONF\E.*nginx -t && systemctl reload nginx}s,
     'and the way back: install, put it back, reload');
($rc, $out) = run("$NGINX -t -q -c $ETC/nginx.conf");
is($rc, 0, 'nginx -t passes') or diag $out;

# a purge must not destroy money Redis has not seen: a journal with lines
# stays, and the purge says the whole way back to it
($rc, $out) = run('cd ' . quotemeta(dirname($deb)) . " && $APT install -y --no-install-recommends ./"
                  . basename($deb));
is($rc, 0, 'installed again') or diag $out;
ok(-f $IMGBILL_CONF && -l $SITE_LINK, 'which puts the configuration back, after a purge too');
spew($JOURNAL, "settle pkgtest 2465 ...\n");
($rc, $out) = run("$APT purge -y $PKG");
is($rc, 0, 'purged with a journal that has a line') or diag $out;
like($out, qr{kept /var/lib/imgbill}, 'the purge says it kept /var/lib/imgbill');
ok(-s $JOURNAL, 'and the journal is still there');
like($out, qr{\Q$JOURNAL\E is not empty}, 'the removal said the journal is not empty');
like($out, qr{kept\ /var/lib/imgbill.*
              apt-get\ install\ \./\Q${PKG}\E_.*
              mv\ \Q$ASIDE{$IMGBILL_CONF} $IMGBILL_CONF\E.*
              mv\ \Q$ASIDE{$SITE_LINK} $SITE_LINK\E.*
              nginx\ -t\ &&\ systemctl\ reload\ nginx.*replay\ the\ journal.*
              purge\ again}sx,
     "purge's whole way back: install, put the configuration back, reload (the journal replayed), purge again")
    or diag $out;
remove_tree($VARDIR);
delete $state{installed};

# ---- 7. as it was ----------------------------------------------------------------------

cleanup();
is(manifest_text(manifest($ETC)), manifest_text($etc_before), "$ETC is as it was");
is_deeply(sizes('/var/lib/nginx'), $lib_before, '/var/lib/nginx is as it was');
is_deeply(sizes('/var/log/nginx'), $log_before, '/var/log/nginx is as it was');
ok(!system_nginx_pid(), 'no system nginx left running');

note sprintf 'runtime %.1f s', time - $t0;
done_testing;
