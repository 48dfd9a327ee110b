package Imgbill::Harness;

# Test harness for imgbill: a private redis-server, the mock upstream and
# nginx with the built module, all on free loopback ports, all torn down
# when the object goes away.
#
#   use lib 't/lib', 'scripts/lib';
#   use Imgbill::Harness;
#   my $h = Imgbill::Harness->new(
#       workers      => 1,             # worker_processes (default 1)
#       extra_server => 'location = /x { ... }',  # inside conf.d's server {}
#       extra_http   => '...',         # appended inside http {}
#       upstream_key => 'sk-up',       # the "site: upstream key" file sends
#                                      #   "Authorization: Bearer sk-up"
#       conf_filter  => sub { $_[0] =~ s/.../.../ },  # edit conf.d text
#       redis_password => 'pw',        # redis-server --requirepass, and
#                                      #   imgbill_redis ... password=pw
#       redis_db     => 3,             # imgbill_redis ... db=3
#       relay_redis_password => 'x',   # the relay's password= instead
#                                      # (undef: none)
#       redis_restartable => 1,        # redis-server with a save point and
#                                      #   --enable-debug-command local, so
#                                      #   DEBUG RESTART (scripts/loadcheck
#                                      #   --faults restart) keeps the data
#       nginx => 1, mock => 1, redis => 1,           # what to start
#       share_redis => $h1,            # another relay on $h1's Redis (and
#                                      #   its password and db): starts no
#                                      #   redis-server (redis => 0 implied),
#                                      #   redis_stop/start refused; its own
#                                      #   nginx, mock, journal and logs, as
#                                      #   a second machine would have
#   );
#   $h->account('alice', 'sk-alice', 100000);  # key + balance in units
#   my $res = $h->post('/v1/chat/completions',
#                      { model => 'gemini-2.5-flash-image', messages => [] },
#                      Authorization => 'Bearer sk-alice',
#                      'X-Mock' => 'pt=1 ct=1');
#   $res->{status}, $res->{headers}{'x-imgbill-charge'},
#   $res->{header_count}{'x-imgbill-charge'}, $res->{json}{error}{code}
#
# Methods:
#   post($path, $body, %hdr) / request($method, $path, $body, %hdr)
#       -> { status, reason, headers => {lc name => value, or [values] if
#            repeated}, header_count => {lc name => n}, body, json }
#       $body: a ref is JSON-encoded, a string is sent raw.
#   chat(key =>, model =>, path =>, mock =>, headers =>, body =>)
#   redis(@cmd), redis_client(db => N, timeout => S), account($acct, $key, $units),
#   fresh_account(units => N, prefix => 'x', holds => {...}) -> ($acct, $key)
#   balance($acct), holds($acct) -> {rid => "units:exp"}, ledger($acct) -> [{...}]
#   wait_holds($acct, $n, $timeout, $step) -> holds once there are exactly $n
#   rejected_ok($name, $status, $type, $code, sub { $res }, no_rid =>, check =>)
#   raw_send(%o) -> $socket / raw_reply($socket) -> {status, headers, raw, ...}
#   raw_http(%o) -> raw_reply(raw_send(%o)); close_after => 'headers' | 'body'
#       | $ms: a client that goes away mid-request instead
#   cli([{ stdin =>, env => }], @args) -> ($exit, $stdout, $stderr),
#   cli_printed()   scripts/imgbill on this Redis, and all it printed
#   access_wait(sub { $_->{...} }, $n, $timeout) -> matching access entries
#   snapshot()      canonical dump of every imgbill:* key (compare with is())
#   redis_dump()    every key and value, for searching
#   upstream_hits() / upstream_requests()   from the mock's log
#   redis_stop() / redis_start()            same port, empty data
#   nginx_stop()
#   nginx_t($http_text) -> ($exit, $output)  class or object method
#   error_log() / access_log() / access_entries() / crashes()
#   port / redis_port / mock_port / redis_addr / url($path) / dir / root
# Exported on request: wait_for(sub, $timeout, $step), key_hash($raw),
#   free_port(), port_open($port), fmt_units($units) -> "-1.2465",
#   error_ok($res, $status, $type, $code, $name),
#   gerror_ok($res, $status, $gstatus, $name, $msg_re): Google's error shape,
#   conf_ok($name, $http) / conf_bad($name, $http, $re): nginx -t accepts
#   the http text / refuses it, saying what $re matches,
#   priced_location($path, @directives) -> a location block for extra_server,
#   sdk_dir() -> t/sdk with its npm packages installed (node and npm from
#   Debian if missing), or undef with the reason in $@: skip then,
#   browser() -> (chromium, t/sdk): Debian's chromium (installed if
#   missing, as root) and the SDK directory with puppeteer-core, or the
#   test skipped (not root) or bailed out (root: it should have worked).
#
# Addresses are always 127.0.0.1.  The module is build/ngx_http_imgbill_module.so
# (env IMGBILL_MODULE overrides); if it is missing the test run BAILs OUT.
# IMGBILL_KEEP=1 keeps the temp dirs (their paths are printed as diag).

use strict;
use warnings;
use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use File::Temp qw(tempdir);
use File::Copy qw(copy);
use IO::Socket::INET;
use IO::Select;
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use Scalar::Util qw(weaken);
use Test::More ();
use ImgbillRedis;
use ImgbillPort ();

use Exporter 'import';
our @EXPORT_OK = qw(wait_for key_hash free_port port_open fmt_units error_ok
                    gerror_ok priced_location sdk_dir dechunk sse_events
                    form png conf_ok conf_bad browser);

my $ROOT = abs_path(File::Spec->catdir(dirname(abs_path(__FILE__)),
                                       '..', '..', '..'));
my $NGINX = $ENV{IMGBILL_NGINX} || '/usr/sbin/nginx';

my @LIVE;    # weak refs, for END

sub root { $ROOT }

# the real clients' SDKs (t/sdk/package.json), installed once per checkout
sub sdk_dir {
    my $sdk = "$ROOT/t/sdk";
    my $have = sub { system(q{sh -c "command -v node && command -v npm" >/dev/null}) == 0 };
    if (!$have->() && $> == 0) {
        system('apt-get update -qq && DEBIAN_FRONTEND=noninteractive '
             . 'apt-get install -y -qq nodejs npm >/dev/null');
    }
    unless ($have->()) {
        $@ = 'node and npm are not installed';
        return undef;
    }
    my $pkg = JSON::PP->new->decode(_slurp("$sdk/package.json"));
    my @missing = grep { !-d "$sdk/node_modules/$_" } keys %{ $pkg->{dependencies} };
    if (@missing) {
        my $out = `cd $sdk && npm install --no-package-lock --no-audit --no-fund --loglevel=error 2>&1`;
        if ($?) {
            $@ = "npm install of @missing failed:\n$out";
            return undef;
        }
    }
    return $sdk;
}

sub browser {
    my $bin = $ENV{IMGBILL_CHROMIUM} || '/usr/bin/chromium';
    if (!-x $bin && $> == 0 && !$ENV{IMGBILL_CHROMIUM}) {
        system('apt-get update -qq && DEBIAN_FRONTEND=noninteractive '
             . 'apt-get install -y -qq chromium fonts-noto-cjk >/dev/null');
    }
    # as root everything could be installed: a failure is the suite's
    if (!-x $bin) {
        my $why = "$bin is not installed (apt-get install chromium)";
        Test::More::plan(skip_all => $why) if $> != 0;
        Test::More::BAIL_OUT($why);
    }
    my $sdk = sdk_dir();
    if (!$sdk) {
        Test::More::plan(skip_all => $@) if $@ =~ /not installed/;
        Test::More::BAIL_OUT($@);
    }
    return ($bin, $sdk);
}

sub module_path {
    return $ENV{IMGBILL_MODULE}
        || File::Spec->catfile($ROOT, 'build', 'ngx_http_imgbill_module.so');
}

sub require_module {
    my $so = module_path();
    return $so if -f $so;
    Test::More::BAIL_OUT("imgbill module not found at $so: "
                         . "run scripts/build first (or set IMGBILL_MODULE)");
}

sub free_port { ImgbillPort::free_port() }

sub key_hash { sha256_hex($_[0]) }

# fmt_units($units) -> "d.dddd", '-' first when negative: money as the
# module prints it in headers and messages (1 unit = 0.0001 yuan).  Integer
# arithmetic, as the module's: a float would round 0.00005 steps wrongly.
sub fmt_units {
    my ($u) = @_;
    my $s = $u < 0 ? '-' : '';
    $u = abs $u;
    return sprintf '%s%d.%04d', $s, int($u / 10000), $u % 10000;
}

# dechunk($wire) -> ($body, \%trailers, $complete): a chunked body as
# raw_reply gives it, decoded; trailer names lowercased; $complete is true
# only if the terminating 0-size chunk came (a stream cut short has none).
sub dechunk {
    my ($wire) = @_;
    my ($body, %t) = ('');
    $wire //= '';
    while ($wire =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
        my $n = hex $1;
        if ($n == 0) {
            my ($tr) = $wire =~ /\A(.*?)\r\n/s ? ($wire =~ /\A((?:[^\r\n]+\r\n)*)\r\n/s) : ('');
            $t{lc $1} = $2 while ($tr // '') =~ /^([\w-]+):[ \t]*(.*?)\r$/mg;
            return ($body, \%t, 1);
        }
        last if length $wire < $n + 2;
        $body .= substr $wire, 0, $n, '';
        $wire =~ s/\A\r\n// or last;
    }
    return ($body, \%t, 0);
}

# sse_events($body) -> list of events, each the data of one event (data
# lines joined with "\n"); events without data (comments) are left out.
# Blank lines end events, with LF, CRLF or CR line ends.
sub sse_events {
    my ($body) = @_;
    my @ev;
    for my $e (split /(?:\r\n|\r|\n){2}/, $body // '') {
        my @d = map { /^data: ?(.*)$/s ? $1 : () } split /\r\n|\r|\n/, $e;
        push @ev, join "\n", @d if @d;
    }
    return @ev;
}

sub wait_for {
    my ($cond, $timeout, $step) = @_;
    $timeout = 5 unless defined $timeout;
    $step ||= 0.01;
    my $until = time + $timeout;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return undef if time >= $until;
        sleep $step;
    }
}

# port_open($port): something accepts connections on 127.0.0.1:$port
sub port_open {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

sub _tempdir {
    my $d = tempdir('ibh-XXXXXXXX', TMPDIR => 1, CLEANUP => 0);
    chmod 0755, $d;
    return $d;
}

sub new {
    my ($class, %o) = @_;
    if (my $peer = $o{share_redis}) {
        croak 'share_redis: a harness that runs redis-server'
            unless ref $peer && $peer->{redis_pid};
        croak 'share_redis and redis => 1 exclude each other' if $o{redis};
        $o{redis} = 0;
        $o{$_} //= $peer->{opt}{$_} for qw(redis_password redis_db);
    }
    my $self = bless {
        opt      => \%o,
        owner    => $$,
        workers  => $o{workers} || 1,
        want_nginx => exists $o{nginx} ? $o{nginx} : 1,
        want_mock  => exists $o{mock}  ? $o{mock}  : 1,
        want_redis => exists $o{redis} ? $o{redis} : 1,
    }, $class;

    $self->{module} = require_module() if $self->{want_nginx};

    _install_signal_handlers();
    $self->{dir} = _tempdir();
    Test::More::diag("harness dir: $self->{dir}") if $ENV{IMGBILL_KEEP};
    push @LIVE, $self;
    weaken($LIVE[-1]);

    $self->{redis_port} = $o{share_redis} ? $o{share_redis}->redis_port
                                          : free_port();
    $self->{mock_port}  = free_port();
    $self->{port}       = free_port();

    $self->redis_start if $self->{want_redis};
    $self->_mock_start if $self->{want_mock};
    $self->_nginx_start if $self->{want_nginx};
    return $self;
}

# priced_location($path, @directives) -> "location = $path { ... }" for
# extra_server: the directives (e.g. 'imgbill metered;', 'imgbill_body_limit
# 1k;'), then proxied to the mock's /v1/chat/completions the way conf.d's
# priced locations are: HTTP/1.1, and neither the client's Authorization
# nor its Accept-Encoding (a compressed reply could not be read for usage)
# nor its Connection passed on.
sub priced_location {
    my ($path, @directives) = @_;
    return join '', "    location = $path {\n",
        map({ "        $_\n" } @directives,
            'proxy_http_version 1.1;',
            'proxy_set_header Connection "";',
            'proxy_set_header Authorization "";',
            'proxy_set_header Accept-Encoding "";',
            'proxy_pass http://imgbill_upstream/v1/chat/completions;'),
        "    }\n";
}

sub dir        { $_[0]{dir} }
sub port       { $_[0]{port} }
sub redis_port { $_[0]{redis_port} }
sub mock_port  { $_[0]{mock_port} }
sub redis_addr { '127.0.0.1:' . $_[0]{redis_port} }
sub url        { 'http://127.0.0.1:' . $_[0]{port} . ($_[1] // '') }

# ---- processes ----------------------------------------------------------

sub _spawn {
    my ($self, $log, @cmd) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        setpgrp(0, 0);
        exec @cmd or POSIX::_exit(127);
    }
    return $pid;
}

sub _reap {
    my ($pid, $timeout) = @_;
    return unless $pid;
    kill 'TERM', $pid;
    my $until = time + ($timeout || 5);
    while (time < $until) {
        my $r = waitpid($pid, WNOHANG);
        return if $r == $pid || $r == -1;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

sub redis_start {
    my ($self) = @_;
    croak 'redis already running' if $self->{redis_pid};
    croak 'redis_start: the Redis belongs to share_redis' if $self->{opt}{share_redis};
    my $rd = "$self->{dir}/redis";
    # after redis_stop(keep => 1) the saved data comes back, as persistence
    # would bring it: nothing is ever missing while a replay runs
    remove_tree($rd) unless delete $self->{redis_keep};
    make_path($rd);
    # DEBUG RESTART re-execs argv[0] taken relative to the cwd: give a path
    my $bin = 'redis-server';
    if ($self->{opt}{redis_restartable}) {
        ($bin) = grep { -x } map { "$_/redis-server" } File::Spec->path;
        $bin or die 'redis-server not found in PATH';
    }
    $self->{redis_pid} = $self->_spawn("$self->{dir}/redis.log",
        $bin, '--port', $self->{redis_port}, '--bind', '127.0.0.1',
        # restartable: DEBUG RESTART saves to --dir before it re-execs
        ($self->{opt}{redis_restartable}
            ? ('--save', '3600 1', '--enable-debug-command', 'local')
            : ('--save', '')),
        '--appendonly', 'no', '--dir', $rd,
        '--daemonize', 'no',
        (defined $self->{opt}{redis_password}
            ? ('--requirepass', $self->{opt}{redis_password}) : ()));
    my $ok = wait_for(sub {
        my $r = eval { ImgbillRedis->new(port => $self->{redis_port},
                                         password => $self->{opt}{redis_password},
                                         timeout => 1) } or return 0;
        my $p = eval { $r->cmd('PING') };
        return defined $p && $p eq 'PONG';
    }, 10);
    die "redis-server did not start on port $self->{redis_port}:\n"
        . _slurp("$self->{dir}/redis.log") unless $ok;
    return 1;
}

sub redis_stop {
    my ($self, %o) = @_;
    croak 'redis_stop: the Redis belongs to share_redis'
        if $self->{opt}{share_redis} && !$self->{torn};
    if ($o{keep} && $self->{redis_pid}) {
        # (a large dataset takes its time)
        $self->redis_client(timeout => 120)->cmd('SAVE');
        $self->{redis_keep} = 1;
    }
    my $pid = delete $self->{redis_pid} or return;
    _reap($pid, 5);
    wait_for(sub { !port_open($self->{redis_port}) }, 5);
    return 1;
}

sub _mock_start {
    my ($self) = @_;
    $self->{mock_log} = "$self->{dir}/mock.log";
    open my $fh, '>', $self->{mock_log} or die $!;
    close $fh;
    $self->{mock_pid} = $self->_spawn("$self->{dir}/mock.stderr",
        $^X, "$ROOT/scripts/mock-upstream",
        '--listen', "127.0.0.1:$self->{mock_port}",
        '--log', $self->{mock_log});
    wait_for(sub { port_open($self->{mock_port}) }, 10)
        or die "mock upstream did not start:\n"
               . _slurp("$self->{dir}/mock.stderr");
}

sub _site_conf {
    my ($self) = @_;
    my $conf = _slurp("$ROOT/conf.d/imgbill.conf");
    my %n;
    my $rp = $self->{redis_port};
    my $mp = $self->{mock_port};
    my $lp = $self->{port};

    my $ropt = '';
    # relay_redis_password: what the relay says, if not Redis's own
    my $pw = exists $self->{opt}{relay_redis_password}
           ? $self->{opt}{relay_redis_password} : $self->{opt}{redis_password};
    $ropt .= " password=$pw" if defined $pw;
    $ropt .= " db=$self->{opt}{redis_db}" if defined $self->{opt}{redis_db};
    $n{redis} = $conf =~ s{^(\s*)imgbill_redis\s+[^;]*;(\s*#\s*site:\s*redis\s*)$}
                          {${1}imgbill_redis 127.0.0.1:$rp$ropt;$2}mg;
    $n{upstream} = $conf =~ s{^(\s*)server\s+[^;]*;(\s*#\s*site:\s*upstream\s*)$}
                             {${1}server 127.0.0.1:$mp;$2}mg;
    $n{listen} = $conf =~ s{^(\s*)listen\s+[^;]*;(\s*#\s*site:\s*listen\s*)$}
                           {${1}listen 127.0.0.1:$lp;$2}mg;
    # each instance its own journal: lines replayed into another test's
    # Redis would be someone else's money
    my $jp = "$self->{dir}/imgbill.journal";
    $n{journal} = $conf =~ s{^(\s*)imgbill_journal\s+[^;]*;(\s*#\s*site:\s*journal\s*)$}
                            {${1}imgbill_journal $jp;$2}mg;
    $n{html} = $conf =~ s{^(\s*)alias\s+[^;]*;(\s*#\s*site:\s*html\s*)$}
                         {${1}alias $ROOT/html/;$2}mg;
    # the access log the tests read, in the harness' own format
    $n{access} = $conf =~ s{^(\s*)access_log\s+[^;]*;(\s*#\s*site:\s*access log\s*)$}
                           {${1}access_log $self->{dir}/access.log imgbill;$2}mg;
    # the upstream's CA: one certificate, not Debian's bundle of some 150,
    # which memcheck takes about 5 s to load at every start (t/36 brings
    # CAs of its own; t/70 and t/96 load the shipped bundle)
    my ($ca) = sort glob '/etc/ssl/certs/*.pem';
    $conf =~ s{^(\s*)proxy_ssl_trusted_certificate\s+[^;]*;(\s*#\s*site:\s*upstream CA\s*)$}
              {${1}proxy_ssl_trusted_certificate $ca;$2}mg if $ca;
    # the upstream key's own file, as the package installs it (empty
    # unless upstream_key)
    my $kf = "$self->{dir}/imgbill-upstream-key.conf";
    _spew($kf, sprintf qq{map "" \$imgbill_upstream_key { default "%s"; }\n},
                       $self->{opt}{upstream_key} // '');
    chmod 0600, $kf;
    $n{key} = $conf =~ s{^(\s*)include\s+[^;]*;(\s*#\s*site:\s*upstream key\s*)$}
                        {${1}include $kf;$2}mg;
    for (qw(redis upstream listen journal html access key)) {
        die "conf.d/imgbill.conf: no 'site: $_' line to substitute" unless $n{$_};
    }
    if (defined(my $x = $self->{opt}{extra_server})) {
        $conf =~ s{^(\s*listen\s+[^;]*;\s*#\s*site:\s*listen\s*)$}
                  {$1\n    # --- extra_server (test) ---\n$x\n    # --- end extra_server ---\n}m
            or die 'cannot place extra_server';
    }
    if (my $f = $self->{opt}{conf_filter}) {
        $f->($conf);
    }
    return $conf;
}

sub _private_module {
    my ($prefix, $module) = @_;
    my $so = "$prefix/ngx_http_imgbill_module.so";
    copy($module, "$so.tmp") or die "copy $module: $!";
    chmod 0755, "$so.tmp";
    rename "$so.tmp", $so or die "rename: $!";
    return $so;
}

sub _main_conf {
    my ($prefix, $module, $workers, $http) = @_;
    my $user = $> == 0 ? "user root;\n" : '';
    make_path(map { "$prefix/tmp/$_" } qw(body proxy fastcgi uwsgi scgi));
    return <<"EOC";
load_module $module;
$user
worker_processes $workers;
daemon on;
master_process on;
pid $prefix/nginx.pid;
lock_file $prefix/nginx.lock;
error_log $prefix/error.log info;

events {
    worker_connections 1024;
}

http {
    # as Debian's /etc/nginx/nginx.conf has them, around conf.d
    sendfile on;
    tcp_nopush on;

    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path       $prefix/tmp/proxy;
    fastcgi_temp_path     $prefix/tmp/fastcgi;
    uwsgi_temp_path       $prefix/tmp/uwsgi;
    scgi_temp_path        $prefix/tmp/scgi;

    log_format imgbill 'status=\$status method=\$request_method uri=\$uri '
                       'account=\$imgbill_account channel=\$imgbill_channel '
                       'charge=\$imgbill_charge balance=\$imgbill_balance '
                       'prompt_tokens=\$imgbill_prompt_tokens '
                       'completion_tokens=\$imgbill_completion_tokens '
                       'request_id=\$imgbill_request_id '
                       'outcome=\$imgbill_outcome '
                       'would_charge=\$imgbill_would_charge '
                       'images=\$imgbill_images '
                       'reason=\$imgbill_reason '
                       'api=\$imgbill_api nginx_request_id=\$request_id';
    access_log $prefix/access.log imgbill;

$http
}
EOC
}

sub _nginx_start {
    my ($self) = @_;
    my $p = $self->{dir};
    my $http = $self->_site_conf;
    $http .= "\n# --- extra_http (test) ---\n$self->{opt}{extra_http}\n"
        if defined $self->{opt}{extra_http};
    # an admission waits for a Redis that is down 1 s, not the default 5 s:
    # the tests of outages answer 503 sooner, through the same path
    $http .= "imgbill_redis_outage_wait 1s;\n"
        unless $http =~ /^\s*imgbill_redis_outage_wait\s/m;
    # a private copy: a rebuild that overwrites build/*.so in place must not
    # crash the running workers (nor mix two builds in one run)
    my $so = _private_module($p, $self->{module});
    _spew("$p/nginx.conf", _main_conf($p, $so, $self->{workers}, $http));

    # IMGBILL_VALGRIND_DIR (set by the second pass of scripts/test): the
    # master and its workers run under memcheck, one log per process there
    my $pre = '';
    if (my $vd = $ENV{IMGBILL_VALGRIND_DIR}) {
        $pre = "valgrind -q --leak-check=full --show-leak-kinds=definite "
             . "--errors-for-leak-kinds=definite --log-file=$vd/nginx-%p.log ";
    }
    my $out = `$pre$NGINX -p $p/ -c $p/nginx.conf -e $p/error.log 2>&1`;
    my $rc = $? >> 8;
    if ($rc != 0) {
        die "nginx failed to start (exit $rc):\n$out\n"
            . _slurp("$p/error.log");
    }
    my $ok = wait_for(sub {
        -s "$p/nginx.pid" && port_open($self->{port});
    }, $ENV{IMGBILL_VALGRIND_DIR} ? 60 : 10);
    die "nginx did not come up:\n" . _slurp("$p/error.log") unless $ok;
    my $pid = _slurp("$p/nginx.pid");
    ($self->{nginx_pid}) = $pid =~ /(\d+)/;
    return 1;
}

sub nginx_stop {
    my ($self) = @_;
    my $pid = delete $self->{nginx_pid} or return;
    kill 'TERM', $pid;
    my $gone = wait_for(sub { !kill(0, $pid) },
                        $ENV{IMGBILL_VALGRIND_DIR} ? 60 : 10);
    kill 'KILL', $pid unless $gone;
    # workers follow their master; make sure the port is free
    wait_for(sub { !port_open($self->{port}) }, 5);
    return 1;
}

# nginx_t($http_text) -> (exit code, output): `nginx -t` on a config whose
# http block is exactly $http_text (plus the temp paths and log format).
# Works as a class method or on an object; starts nothing.
sub nginx_t {
    my ($self_or_class, $http, %o) = @_;
    my $module = require_module();
    my $p = _tempdir();
    my $so = _private_module($p, $module);
    _spew("$p/nginx.conf", _main_conf($p, $so, $o{workers} || 1, $http));
    my $out = `$NGINX -t -p $p/ -c $p/nginx.conf -e $p/error.log 2>&1`;
    my $rc = $? >> 8;
    my $log = _slurp("$p/error.log");
    $out .= $log if length $log && index($out, $log) < 0;
    remove_tree($p) unless $ENV{IMGBILL_KEEP};
    return ($rc, $out);
}

# INT/TERM/HUP (and PIPE, e.g. `prove ... | head`) would skip END blocks:
# tear everything down first.  Writes to sockets that may be closed must
# use local $SIG{PIPE} = 'IGNORE' (HTTP::Tiny and ImgbillRedis do).
my $handlers_installed;
sub _install_signal_handlers {
    return if $handlers_installed++;
    for my $sig (qw(INT TERM HUP PIPE)) {
        next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT' && $SIG{$sig} ne '';
        $SIG{$sig} = sub {
            for my $h (@LIVE) { $h->teardown if $h }
            $SIG{$sig} = 'DEFAULT';
            kill $sig, $$;
            POSIX::_exit(1);
        };
    }
}

sub DESTROY {
    my ($self) = @_;
    $self->teardown;
}

sub teardown {
    my ($self) = @_;
    return if $self->{torn} || $self->{owner} != $$;
    $self->{torn} = 1;
    local ($?, $!, $@);
    $self->nginx_stop;
    _reap(delete $self->{mock_pid}, 5);
    $self->redis_stop;
    if ($self->{dir} && !$ENV{IMGBILL_KEEP}) {
        remove_tree($self->{dir});
    }
}

END {
    for my $h (@LIVE) {
        $h->teardown if $h;
    }
}

# ---- HTTP -----------------------------------------------------------------

# request($method, $path, $body, %headers); $body: a ref is JSON-encoded,
# a string is sent raw, undef sends no body.
# in_flight($n, %chat) -> $wait: $n chat() calls at once, each in a child
# process; $wait->() waits for them and returns one "status charge" string
# each ("none" if a child got nothing), in order.
sub in_flight {
    my ($self, $n, %o) = @_;
    my @kids;
    for my $i (1 .. $n) {
        my $file = "$self->{dir}/flight-" . (++$self->{flights});
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $res = $self->chat(%o);
            if (open my $f, '>', $file) {
                print $f join(' ', $res->{status} // 0,
                              $res->{headers}{'x-imgbill-charge'} // '-'), "\n";
                close $f;
            }
            POSIX::_exit(0);    # the servers belong to the parent
        }
        push @kids, [$pid, $file];
    }
    return sub {
        map {
            waitpid $_->[0], 0;
            my $line = -s $_->[1] ? _slurp($_->[1]) : "none\n";
            chomp $line;
            $line;
        } @kids;
    };
}

sub request {
    my ($self, $method, $path, $body, %hdr) = @_;
    my %headers;
    my $has_ct = grep { lc $_ eq 'content-type' } keys %hdr;
    $headers{'Content-Type'} = 'application/json'
        if defined $body && !$has_ct;
    %headers = (%headers, %hdr);
    my $content = ref $body ? JSON::PP->new->canonical->encode($body) : $body;

    my $http = HTTP::Tiny->new(timeout => $self->{opt}{http_timeout} || 30,
                               keep_alive => 0, max_redirect => 0);
    my $res = $http->request($method, $self->url($path), {
        headers => \%headers,
        (defined $content ? (content => $content) : ()),
    });

    my (%h, %count);
    for my $k (keys %{ $res->{headers} || {} }) {
        my $v = $res->{headers}{$k};
        $h{lc $k} = $v;
        $count{lc $k} = ref $v eq 'ARRAY' ? scalar @$v : 1;
    }
    my $json = eval { JSON::PP->new->decode($res->{content}) };
    return {
        status       => $res->{status},
        reason       => $res->{reason},
        headers      => \%h,
        header_count => \%count,
        body         => $res->{content},
        json         => $json,
    };
}

sub post {
    my ($self, $path, $body, %hdr) = @_;
    return $self->request('POST', $path, $body, %hdr);
}

# chat(%o): a typical image generation call.
#   key => raw API key (sent as "Authorization: Bearer KEY"; undef: none)
#   model => (default gemini-2.5-flash-image), path => (default metered),
#   mock => X-Mock header value, headers => { more headers },
#   body => a whole body (ref or raw string) instead of the default one
sub chat {
    my ($self, %o) = @_;
    my $path = $o{path} || '/v1/chat/completions';
    my $body = exists $o{body} ? $o{body} : {
        model    => $o{model} // 'gemini-2.5-flash-image',
        messages => [ { role => 'user', content => 'draw a cat' } ],
    };
    my %hdr = %{ $o{headers} || {} };
    $hdr{Authorization} = "Bearer $o{key}" if defined $o{key};
    $hdr{'X-Mock'} = $o{mock} if defined $o{mock};
    return $self->post($path, $body, %hdr);
}

# ---- raw HTTP -------------------------------------------------------------
#
# For what HTTP::Tiny will not do: exact bytes (no Content-Length, a chunked
# request), a reply read later while the test looks at Redis meanwhile, or a
# client that goes away mid-request.
#
# raw_send(%o) -> $socket, the request written:
#   request => the exact bytes to send; nothing is added.  Otherwise it is
#     "METHOD PATH HTTP/1.1", Host and Connection: close, then in order:
#   method => (POST), path => (/v1/chat/completions),
#   key => raw API key (Authorization: Bearer KEY), mock => X-Mock value,
#   headers => [ name => value, ... ] (a list: order and repeats kept),
#   body => a ref is JSON-encoded and sent with Content-Type:
#     application/json, a string is sent as is, undef sends no body; with a
#     body, Content-Length: its length unless headers have one
#   upto => 'headers': write the head only; the body never follows
#   port => where to connect (default nginx's; e.g. $h->mock_port)
# raw_reply($socket) -> { status, reason, headers, header_count, body, json
#   (undef for a body over 8 MB),
#   raw }: reads until the server closes (http_timeout, default 30 s), then
#   closes.  headers as request() gives them; body is as on the wire (not
#   de-chunked); raw is the whole reply; status 599 if there was none.
# raw_http(%o) -> raw_reply(raw_send(%o)), or, with close_after, a client
#   that disconnects mid-request and reads nothing (returns nothing):
#     close_after => 'headers'  send the head, close before the body
#     close_after => 'body'     send everything, close at once
#     close_after => $ms        send everything (or upto => 'headers' only),
#                               close $ms milliseconds later
sub raw_send {
    my ($self, %o) = @_;
    my $req = $o{request};
    if (!defined $req) {
        my $body = $o{body};
        my @hdr = ('Host' => '127.0.0.1', 'Connection' => 'close');
        push @hdr, 'Authorization' => "Bearer $o{key}" if defined $o{key};
        push @hdr, 'X-Mock' => $o{mock} if defined $o{mock};
        push @hdr, @{ $o{headers} || [] };
        if (ref $body) {
            push @hdr, 'Content-Type' => 'application/json';
            $body = JSON::PP->new->canonical->encode($body);
        }
        my %given = map { lc $_ => 1 } @hdr[ grep { !($_ % 2) } 0 .. $#hdr ];
        push @hdr, 'Content-Length' => length $body
            if defined $body && !$given{'content-length'};
        $req = sprintf "%s %s HTTP/1.1\r\n", $o{method} // 'POST',
                       $o{path} // '/v1/chat/completions';
        $req .= "$hdr[$_]: $hdr[$_ + 1]\r\n" for grep { !($_ % 2) } 0 .. $#hdr;
        $req .= "\r\n";
        $req .= $body if defined $body && ($o{upto} // '') ne 'headers';
    }
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $o{port} // $self->{port},
                                  Proto => 'tcp', Timeout => 5)
        or die "raw_send: connect: $!";
    # the server may answer (413) and close before all of a body is in
    local $SIG{PIPE} = 'IGNORE';
    print $s $req;
    return $s;
}

sub raw_reply {
    my ($self, $s) = @_;
    my $sel = IO::Select->new($s);
    my $until = time + ($self->{opt}{http_timeout} || 30);
    my $resp = '';
    while ((my $left = $until - time) > 0) {
        last unless $sel->can_read($left);
        my $got = sysread $s, my $buf, 65536;
        last unless $got;    # closed, or reset
        $resp .= $buf;
    }
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $resp, 2;
    $head //= '';
    my ($st, $reason) = $head =~ m{^HTTP/1\.[01] (\d+) ?([^\r\n]*)};
    my (%h, %count);
    while ($head =~ /^([\w-]+):[ \t]*(.*?)\r?$/mg) {
        my ($k, $v) = (lc $1, $2);
        $h{$k} = !exists $h{$k} ? $v
               : ref $h{$k}    ? [ @{ $h{$k} }, $v ] : [ $h{$k}, $v ];
        $count{$k}++;
    }
    return {
        status       => $st // 599,
        reason       => $reason,
        headers      => \%h,
        header_count => \%count,
        body         => $body,
        # (JSON::PP takes seconds a MB: a whole 4K image is compared, not
        # read)
        json         => length($body // '') > 8_000_000 ? undef
                        : scalar eval { JSON::PP->new->decode($body) },
        raw          => $resp,
    };
}

sub raw_http {
    my ($self, %o) = @_;
    my $close = delete $o{close_after};
    return $self->raw_reply($self->raw_send(%o)) unless defined $close;
    croak "raw_http: close_after => 'headers', 'body' or milliseconds"
        unless $close =~ /^(headers|body|\d+)$/;
    $o{upto} = 'headers' if $close eq 'headers';
    my $s = $self->raw_send(%o);
    sleep $close / 1000 if $close =~ /^\d+$/;
    close $s;
    return;
}

# $h->images_charged_ok($res, $acct, $charge, $images, $name): an Images API
# reply of $images images, charged $charge (yuan) on an account opened with
# 10.0000: the header, data[], the balance, one ledger entry, no hold left
# images_charged_ok($r, $acct, $charge, $images, $name, %o): a per-image
# reply charged; api (openai_images), entries (data[]'s, default $images:
# a filtered image keeps its entry), start (100000)
sub images_charged_ok {
    my ($self, $r, $acct, $charge, $images, $name, %o) = @_;
    my $start = $o{start} // 100000;
    my $units = int($charge * 10000 + 0.5);
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return Test::More::subtest($name => sub {
        Test::More::is($r->{status}, 200, 'status 200')
            or Test::More::diag(substr $r->{body} // '', 0, 400);
        Test::More::is($r->{headers}{'x-imgbill-charge'}, $charge, "X-Imgbill-Charge $charge");
        my $entries = $o{entries} // $images;
        Test::More::is(scalar @{ $r->{json}{data} || [] }, $entries,
                       "$entries entries in data[]") unless $o{no_data};
        Test::More::ok(wait_for(sub { ($self->balance($acct) // 0) == $start - $units }),
                       "Redis: $charge charged");
        Test::More::is($r->{headers}{'x-imgbill-balance'}, fmt_units($start - $units),
                       'X-Imgbill-Balance');
        my $l = $self->ledger($acct);
        Test::More::is(scalar @$l, 1, 'one ledger entry');
        Test::More::is($l->[0]{charge}, $units, "... of $units units");
        Test::More::is($l->[0]{images}, $images, "... for $images image(s)");
        Test::More::is($l->[0]{model}, $o{model}, "... model $o{model}") if defined $o{model};
        Test::More::is($l->[0]{api}, $o{api} // 'openai_images', '... by its API');
        Test::More::ok($self->wait_holds($acct, 0, 10), 'no hold left');
    });
}

# form($boundary, @parts): a multipart/form-data body as browsers and the
# SDKs write it: [name, value] is a field, [name, bytes, filename] a file
sub form {
    my ($boundary, @parts) = @_;
    my $body = '';
    for my $p (@parts) {
        my ($name, $value, $file) = @$p;
        $body .= "--$boundary\r\nContent-Disposition: form-data; name=\"$name\"";
        $body .= defined $file ? "; filename=\"$file\"\r\nContent-Type: image/png\r\n"
                               : "\r\n";
        $body .= "\r\n$value\r\n";
    }
    return $body . "--$boundary--\r\n";
}

# png($bytes, $fill): a PNG's signature and filler: the relay counts an
# upload's bytes, never reads them
sub png { my ($n, $fill) = @_; return "\x89PNG\r\n\x1a\n" . (chr($fill // 7) x ($n - 8)) }

# ---- assertions (exported on request) -----------------------------------

# error_ok($res, $status, $type, $code, $name): the module's JSON error shape
sub conf_ok {
    my ($name, $http) = @_;
    my ($rc, $out) = __PACKAGE__->nginx_t($http);
    Test::More::is($rc, 0, "nginx -t accepts: $name") or Test::More::diag($out);
}

sub conf_bad {
    my ($name, $http, $re) = @_;
    my ($rc, $out) = __PACKAGE__->nginx_t($http);
    Test::More::isnt($rc, 0, "nginx -t refuses: $name");
    Test::More::like($out, $re, "... saying why: $name");
}

sub error_ok {
    my ($res, $status, $type, $code, $name) = @_;
    my $tb = Test::More->builder;
    my $j = $res->{json};
    my @bad;
    push @bad, "status $res->{status}, want $status" if $res->{status} != $status;
    if (ref $j ne 'HASH' || ref $j->{error} ne 'HASH') {
        push @bad, "body is not {\"error\":{...}}: " . substr($res->{body} // '', 0, 300);
    } else {
        my $e = $j->{error};
        push @bad, 'error.type ' . ($e->{type} // 'undef') . ", want $type"
            if ($e->{type} // '') ne $type;
        push @bad, 'error.code ' . ($e->{code} // 'undef') . ", want $code"
            if ($e->{code} // '') ne $code;
        push @bad, 'error.message missing'
            unless defined $e->{message} && !ref $e->{message} && length $e->{message};
        push @bad, 'error.param is not null'
            unless exists $e->{param} && !defined $e->{param};
    }
    my $ct = $res->{headers}{'content-type'} // '';
    push @bad, "Content-Type \"$ct\", want application/json"
        unless $ct =~ m{^application/json\b};
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = $tb->ok(!@bad, $name);
    $tb->diag(join "\n", @bad) if @bad;
    return $ok;
}

# gerror_ok($res, $status, $gstatus, $name, $msg_re): Google's error shape,
# {"error":{"code":N,"message":"...","status":"..."}} and nothing else
sub gerror_ok {
    my ($res, $status, $gstatus, $name, $msg_re) = @_;
    my $e = ref $res->{json} eq 'HASH' ? $res->{json}{error} : undef;
    my @bad;
    push @bad, "status $res->{status}, want $status" if $res->{status} != $status;
    if (ref $e ne 'HASH') {
        push @bad, 'body is not {"error":{...}}: ' . substr $res->{body} // '', 0, 300;
    } else {
        push @bad, "error.code " . ($e->{code} // 'undef') . ", want the number $status"
            unless defined $e->{code} && $e->{code} =~ /^\d+$/ && $e->{code} == $status
                && JSON::PP->new->canonical->encode([$e->{code}]) eq "[$status]";
        push @bad, 'error.status ' . ($e->{status} // 'undef') . ", want $gstatus"
            if ($e->{status} // '') ne $gstatus;
        push @bad, 'error.message missing'
            unless defined $e->{message} && !ref $e->{message} && length $e->{message};
        push @bad, "error.message '$e->{message}' !~ $msg_re"
            if $msg_re && defined $e->{message} && $e->{message} !~ $msg_re;
        my @extra = grep { !/^(code|message|status)$/ } sort keys %$e;
        push @bad, "error has more than code/message/status: @extra" if @extra;
        push @bad, 'more than "error" at the top: ' . join ' ', sort keys %{ $res->{json} }
            if keys %{ $res->{json} } != 1;
    }
    push @bad, 'Content-Type ' . ($res->{headers}{'content-type'} // 'none')
        unless ($res->{headers}{'content-type'} // '') =~ m{^application/json};
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $tb = Test::More->builder;
    my $ok = $tb->ok(!@bad, $name);
    $tb->diag(join "\n", @bad) if @bad;
    return $ok;
}

# rejected_ok($name, $status, $type, $code, $send, %o) -> $res: $send->()
# makes a request the module must refuse; one subtest then checks the JSON
# error (error_ok; with google => 1, Google's shape: $type is its status,
# $code is not used), X-Imgbill-Request-Id on it (unless no_rid => 1: not
# the module's own error), that the upstream was not reached and that Redis
# did not change at all, then check => sub { my ($res) = @_; ... } if given.
# A refusal that wrote anything (a hold, a counter) would cost money later.
sub rejected_ok {
    my ($self, $name, $status, $type, $code, $send, %o) = @_;
    my $before = $self->snapshot;
    my $hits = $self->upstream_hits;
    my $res = $send->();
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::subtest($name => sub {
        if ($o{google}) {
            gerror_ok($res, $status, $type, "$status $type");
        } else {
            error_ok($res, $status, $type, $code, "$status $type $code");
        }
        unless ($o{no_rid}) {
            Test::More::like($res->{headers}{'x-imgbill-request-id'} // '',
                             qr/^[0-9a-f]{32}$/, 'X-Imgbill-Request-Id on the error');
        }
        Test::More::is($self->upstream_hits, $hits, 'upstream not reached');
        Test::More::is($self->snapshot, $before, 'Redis unchanged');
        $o{check}->($res) if $o{check};
    });
    return $res;
}

# ---- Redis ----------------------------------------------------------------

# redis_client(db => N): a fresh ImgbillRedis on the harness' Redis
# (authenticated, and in redis_db unless db is given)
sub redis_client {
    my ($self, %o) = @_;
    return ImgbillRedis->new(port => $self->{redis_port}, timeout => $o{timeout} // 5,
                             password => $self->{opt}{redis_password},
                             db => exists $o{db} ? $o{db} : $self->{opt}{redis_db});
}

sub redis {
    my ($self, @cmd) = @_;
    return $self->redis_client->cmd(@cmd);
}

# account($acct, $raw_key, $balance_units): seeds the key and the balance
# (balance undef: left absent).  Returns the raw key.
sub account {
    my ($self, $acct, $key, $units) = @_;
    my $r = $self->redis_client;
    $r->cmd('SET', 'imgbill:key:' . key_hash($key), $acct);
    $self->{key_of}{$acct} = $key;
    if (defined $units) {
        $r->cmd('SET', "imgbill:{$acct}:balance", $units);
    } else {
        $r->cmd('DEL', "imgbill:{$acct}:balance");
    }
    return $key;
}

# key_id($acct) -> the id (12 hex) of the key account() last gave $acct,
# as the ledger names it
sub key_id {
    my ($self, $acct) = @_;
    my $key = $self->{key_of}{$acct};
    return defined $key ? substr(key_hash($key), 0, 12) : undef;
}

# fresh_account(units => N, prefix => 'x', holds => { rid => "units:exp" })
#   -> ($acct, $raw_key): an account nothing else in the test has touched,
#   "<prefix><n>" with key "sk-<prefix>-<n>", so each case starts from its
#   own balance and an empty ledger.  n counts per harness and prefix, and
#   skips names or keys already in Redis (a hand-made account, a case run
#   twice).  units: default 100000 (10.0000); undef leaves the balance
#   absent.  holds: other requests' holds to seed (the held sum is left for
#   the module to recount).
sub fresh_account {
    my ($self, %o) = @_;
    my $prefix = $o{prefix} // 'acct';
    croak "fresh_account: prefix '$prefix' is not [A-Za-z0-9_.-]{1,48}"
        unless $prefix =~ /^[A-Za-z0-9_.-]{1,48}$/;
    my $r = $self->redis_client;
    my ($acct, $key);
    do {
        my $n = ++$self->{fresh}{$prefix};
        ($acct, $key) = ("$prefix$n", "sk-$prefix-$n");
    } while ($r->cmd('EXISTS', 'imgbill:key:' . key_hash($key),
                     map { "imgbill:{$acct}:$_" } qw(balance holds held ledger)));
    $self->account($acct, $key, exists $o{units} ? $o{units} : 100000);
    $r->cmd('HSET', "imgbill:{$acct}:holds", %{ $o{holds} })
        if $o{holds} && %{ $o{holds} };
    return ($acct, $key);
}

sub balance {
    my ($self, $acct) = @_;
    return $self->redis('GET', "imgbill:{$acct}:balance");
}

# live and expired holds, as { request_id => "units:expiry" }
sub holds {
    my ($self, $acct) = @_;
    my $a = $self->redis('HGETALL', "imgbill:{$acct}:holds") || [];
    return { @$a };
}

# wait_holds($acct, $n, $timeout, $step) -> the holds (a hash ref, true even
# when empty) once the account has exactly $n of them, undef if it has not
# within $timeout seconds (default 5).  A hold is the sign that a request
# was admitted and is still running, and no hold that all were settled:
# tests wait on that rather than sleep for a guessed time.
# $n children run $do at the same instant (all wait for one file, then
# go); returns the line each one's $do returned, in order
sub burst {
    my ($self, $n, $do) = @_;
    my $go = "$self->{dir}/go-" . int(rand 1e9);
    my @kids;
    for my $i (1 .. $n) {
        my $file = "$go.$i";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            wait_for(sub { -e $go }, 60, 0.005);
            my $line = $do->();
            open my $f, '>', $file;
            print $f "$line\n";
            close $f;
            POSIX::_exit(0);
        }
        push @kids, [$pid, $file];
    }
    open my $g, '>', $go or die "$go: $!";
    close $g;
    return map {
        waitpid $_->[0], 0;
        open my $f, '<', $_->[1];
        my $l = <$f> // 'none';
        chomp $l;
        $l;
    } @kids;
}

sub wait_holds {
    my ($self, $acct, $n, $timeout, $step) = @_;
    my $got;
    wait_for(sub { $got = $self->holds($acct); keys %$got == $n },
             $timeout, $step) or return undef;
    return $got;
}

# ledger entries, oldest first: [{ _id => stream id, field => value, ... }]
sub ledger {
    my ($self, $acct) = @_;
    my $a = $self->redis('XRANGE', "imgbill:{$acct}:ledger", '-', '+') || [];
    return [ map { +{ _id => $_->[0], @{ $_->[1] } } } @$a ];
}

# every imgbill:* key with its type and value, canonically: two snapshots
# compare equal (as strings) iff the billing state is the same.
sub snapshot {
    my ($self) = @_;
    my $r = $self->redis_client;
    my %keys;
    my $cursor = '0';
    do {
        my $res = $r->cmd('SCAN', $cursor, 'MATCH', 'imgbill:*', 'COUNT', 1000);
        $cursor = $res->[0];
        $keys{$_} = 1 for @{ $res->[1] };
    } while ($cursor ne '0');

    my @out;
    for my $k (sort keys %keys) {
        my $t = $r->cmd('TYPE', $k);
        my $v;
        if ($t eq 'string') {
            $v = $r->cmd('GET', $k);
        } elsif ($t eq 'hash') {
            my %hh = @{ $r->cmd('HGETALL', $k) };
            $v = \%hh;
        } elsif ($t eq 'stream') {
            $v = [ map { [ $_->[0], $_->[1] ] }
                   @{ $r->cmd('XRANGE', $k, '-', '+') } ];
        } elsif ($t eq 'list') {
            $v = $r->cmd('LRANGE', $k, 0, -1);
        } elsif ($t eq 'set') {
            $v = [ sort @{ $r->cmd('SMEMBERS', $k) } ];
        } elsif ($t eq 'zset') {
            $v = $r->cmd('ZRANGE', $k, 0, -1, 'WITHSCORES');
        } elsif ($t eq 'none') {
            next;    # vanished meanwhile
        }
        push @out, { key => $k, type => $t, value => $v };
    }
    return JSON::PP->new->canonical->pretty->encode(\@out);
}

# every key and value in Redis (all types), as one string, for searching
sub redis_dump {
    my ($self) = @_;
    my $r = $self->redis_client;
    my @keys = @{ $r->cmd('KEYS', '*') };
    my $s = '';
    for my $k (sort @keys) {
        my $t = $r->cmd('TYPE', $k);
        my $v = $t eq 'string' ? $r->cmd('GET', $k)
              : $t eq 'hash'   ? $r->cmd('HGETALL', $k)
              : $t eq 'stream' ? $r->cmd('XRANGE', $k, '-', '+')
              : $t eq 'list'   ? $r->cmd('LRANGE', $k, 0, -1)
              : $t eq 'set'    ? $r->cmd('SMEMBERS', $k)
              : $t eq 'zset'   ? $r->cmd('ZRANGE', $k, 0, -1, 'WITHSCORES')
              : undef;
        $s .= "$k\t$t\t" . JSON::PP->new->canonical->encode([$v]) . "\n";
    }
    return $s;
}

# ---- mock upstream and logs -------------------------------------------

sub upstream_requests {
    my ($self) = @_;
    return grep { !exists $_->{done} } $self->_mock_lines;
}

# upstream_idle($timeout): waits until the mock has answered every request
# it logged (or seen its client go), as its "done" lines say
sub upstream_idle {
    my ($self, $timeout) = @_;
    return wait_for(sub {
        my @l = $self->_mock_lines;
        my %pending = map { $_->{pid} => 1 } grep { !exists $_->{done} } @l;
        delete $pending{ $_->{done} } for grep { exists $_->{done} } @l;
        return !%pending;
    }, $timeout // 10);
}

sub _mock_lines {
    my ($self) = @_;
    my @r;
    open my $fh, '<', $self->{mock_log} or return ();
    while (my $l = <$fh>) {
        my $j = eval { JSON::PP->new->decode($l) } or next;
        push @r, $j;
    }
    return @r;
}

sub upstream_hits {
    my ($self) = @_;
    my @r = $self->upstream_requests;
    return scalar @r;
}

sub error_log  { _slurp("$_[0]{dir}/error.log") }

# error.log lines telling of a crashed worker ("exited on signal N")
sub crashes {
    my ($self) = @_;
    return grep { /exited on signal/ } split /\n/, $self->error_log;
}

# the pids of nginx's workers (the master's children), as ps sees them now
sub workers {
    my ($self) = @_;
    my $master = $self->{nginx_pid};
    return grep { /^\d+$/ } map { s/\s+//gr }
           split /\n/, `ps -o pid= --ppid $master`;
}
sub access_log { _slurp("$_[0]{dir}/access.log") }

# access log lines as hashes (keys: status method uri account channel charge
# balance prompt_tokens completion_tokens request_id nginx_request_id)
sub access_entries {
    my ($self) = @_;
    my @e;
    for my $l (split /\n/, $self->access_log) {
        my %f = $l =~ /(\w+)=(\S*)/g;
        push @e, \%f;
    }
    return @e;
}

# access_wait($match, $n, $timeout) -> the access entries for which
# $match->($entry) is true ($_ is the entry too), once there are at least $n
# (default 1); what matched by then if $timeout (default 5) runs out.  nginx
# writes the line after the reply is out: under valgrind, noticeably after.
sub access_wait {
    my ($self, $match, $n, $timeout) = @_;
    $n //= 1;
    my @e;
    wait_for(sub { @e = grep { $match->($_) } $self->access_entries; @e >= $n },
             $timeout);
    return @e;
}

# ---- the operator CLI ---------------------------------------------------

# cli([{ stdin => TEXT, env => { NAME => value, or undef to unset } },]
#     @args) -> ($exit, $stdout, $stderr): scripts/imgbill on this harness'
# Redis (IMGBILL_REDIS, IMGBILL_REDIS_PASSWORD and _DB from redis_password
# and redis_db), never on one the caller's environment names.  stdout and
# stderr go through files: a pipe read one after the other could deadlock.
# cli_printed() -> everything cli() has printed so far, both streams, e.g.
# to show that a raw key was never printed.
sub cli {
    my ($self, @args) = @_;
    my %o = ref $args[0] eq 'HASH' ? %{ shift @args } : ();
    my $n = ++$self->{clis};
    my ($in, $out, $err) = map { "$self->{dir}/cli-$n.$_" } qw(in out err);
    _spew($in, $o{stdin} // '');
    my %env = (IMGBILL_REDIS          => $self->redis_addr,
               IMGBILL_REDIS_PASSWORD => $self->{opt}{redis_password},
               IMGBILL_REDIS_DB       => $self->{opt}{redis_db},
               %{ $o{env} || {} });
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        for (keys %env) {
            if (defined $env{$_}) { $ENV{$_} = $env{$_} } else { delete $ENV{$_} }
        }
        open STDIN, '<', $in;
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $^X, "$ROOT/scripts/imgbill", @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my @r = ($? >> 8, _slurp($out), _slurp($err));
    push @{ $self->{cli_printed} }, @r[1, 2];
    unlink $in, $out, $err;
    return @r;
}

sub cli_printed { join '', @{ $_[0]{cli_printed} || [] } }

# ---- small file helpers -----------------------------------------------

sub _slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    binmode $fh;
    local $/;
    my $s = <$fh>;
    return defined $s ? $s : '';
}

sub _spew {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh or die "$f: $!";
}

1;
