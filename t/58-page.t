# The self-service page, /imgbill/ (html/index.html), in a real browser:
# Debian's chromium, headless, driven by puppeteer-core (t/sdk/page.mjs).
# A key holder pastes the key; the figures and the ledger the page shows are
# checked against Redis to the unit, page 1 and page 2 of the ledger, a
# wrong key shows the API's 401 message and nothing of the account before
# it, Redis down shows the API's 503 message.  The page asks nothing of any
# other origin and leaves the key nowhere but in its memory.  A screenshot
# of ledger page 1 is kept in build/artifacts/page.png, of page 2 in
# build/artifacts/page-older.png, of a wrong key in page-401.png.
# The keys section (/v1/imgbill/keys): the account's keys listed as Redis
# has them, the page's own marked; a key made through the form shown once
# and working at the relay, then deleted through the page (its confirm
# accepted) and refused; a limit of "abc" shows the API's 400 and writes
# nothing; the page's own key deleted last, after a warning.  Its driver is
# below (keys.mjs, written to the harness' directory); page-keys.png shows
# the new key.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use File::Path qw(make_path);
use IPC::Open2 qw(open2);
use POSIX qw(strftime);
use lib 't/lib', 'scripts/lib';
use Imgbill::Harness qw(fmt_units browser key_hash);

# scripts/test's second pass: what the browser calls runs under memcheck in
# the tests of the same requests without one (t/59-account.t, t/64-usage.t)
plan skip_all => 'the browser adds nothing under valgrind: the first pass ran it'
    if $ENV{IMGBILL_VALGRIND_DIR};

my ($CHROMIUM, $sdk) = browser();

my $root = Imgbill::Harness::root();
my $artifacts = "$root/build/artifacts";
make_path($artifacts);
my $shot = "$artifacts/page.png";
my $shot2 = "$artifacts/page-older.png";
my $shot3 = "$artifacts/page-401.png";
unlink $shot, $shot2, $shot3;

my $JSON = JSON::PP->new->canonical;
my $h = Imgbill::Harness->new;
my $base = $h->url('');

# node page.mjs CONFIG -> what the page showed, as JSON
sub browse { run_driver("$sdk/page.mjs", @_) }

sub run_driver {
    my ($script, %cfg) = @_;
    my $arg = $JSON->encode({ base => $base, chromium => $CHROMIUM, sdk => $sdk, %cfg });
    $arg =~ s/'/'\\''/g;
    my $out = `node $script '$arg' 2>&1`;
    my $r = eval { decode_json((grep { /^\{/ } split /\n/, $out)[-1] // '') };
    if (!$r || $r->{failure}) {
        diag "$script: " . ($r ? $r->{failure} : $out);
        $r //= {};
    }
    return $r;
}

# ---- the file itself ----------------------------------------------------

{
    open my $f, '<', "$root/html/index.html" or die "html/index.html: $!";
    my $html = do { local $/; <$f> };
    my @refs = $html =~ /\b(?:src|href|action)\s*=\s*["']?([^"'\s>]+)/gi;
    is_deeply [ grep { !/^data:/ } @refs ], [], 'index.html loads nothing by URL (inline only)';
    unlike $html, qr{(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/}i, '... and names no other host';
    my $js = join '', $html =~ m{<script>(.*?)</script>}gs;
    ok length $js, '... its script inline';
    unlike $js, qr/localStorage|sessionStorage|document\.cookie|indexedDB/,
        '... which touches no storage that outlives the page';
}

# ---- an account with two pages of ledger ----------------------------------

my ($acct, $key) = $h->fresh_account(prefix => 'page', units => 1000000);
my $bad = 'sk-page-wrong-key';

# a credit first, if the CLI writes credit entries (shown then; not needed)
my ($ok) = $h->cli('topup', $acct, '1.00');
note 'topup by the CLI: exit ' . $ok;

my @charges = map { $h->chat(key => $key) } 1 .. 23;
is scalar(grep { $_->{status} == 200 && ($_->{headers}{'x-imgbill-charge'} // '') eq '0.2465' }
          @charges), 23, '23 charges of 0.2465 through the relay';
ok $h->wait_holds($acct, 0), 'no hold left';

my $balance = $h->balance($acct);
my $ledger = $h->ledger($acct);
my @newest = reverse @$ledger;
my @charged = grep { ($_->{type} // 'charge') eq 'charge' } @newest;
is scalar @charged, 23, '23 charge entries in Redis';

# what a row must show, from a Redis ledger entry
sub expect_row {
    my ($e) = @_;
    my $type = $e->{type} // 'charge';
    my $amount = $type eq 'charge' ? fmt_units(-$e->{charge}) : fmt_units($e->{amount});
    $amount = "+$amount" if $amount !~ /^-/ && $amount ne '0.0000';
    return {
        id      => $type eq 'charge' ? $e->{request_id} : $e->{_id},
        type    => $type,
        time    => strftime('%Y-%m-%d %H:%M:%S', localtime $e->{ts}),
        model   => $type eq 'charge' ? $e->{model} : undef,
        amount  => $amount,
        balance => fmt_units($e->{balance_after}),
    };
}
sub shown_rows {
    my ($rows) = @_;
    return [ map { my $r = $_; +{ map { $_ => $r->{$_} } qw(id type time model amount balance) } }
             @{ $rows || [] } ];
}

my $api_401 = $h->request('GET', '/v1/imgbill/account', undef,
                          Authorization => "Bearer $bad");
is $api_401->{status}, 401, 'the API: a wrong key is a 401';
my $msg_401 = eval { $api_401->{json}{error}{message} } // '(none)';

# ---- the browser ----------------------------------------------------------

my $r = browse(key => $key, bad_key => $bad, screenshot => $shot,
            screenshot_older => $shot2, screenshot_bad => $shot3, mode => 'full');
ok !$r->{failure}, 'the browser script ran to the end';
is $r->{page}{status}, 200, 'GET /imgbill/: 200';
like $r->{page}{csp} // '', qr/default-src 'self'/, '... with its Content-Security-Policy';
is $r->{idle_state}, 'idle', '... and waits for a key';

my $p1 = $r->{first} || {};
is $p1->{state}, 'ready', 'the key entered: figures and ledger shown';
ok !$p1->{error_shown}, '... no error';
is_deeply $p1->{account}, { id => $acct, balance => fmt_units($balance),
                            available => fmt_units($balance), held => '0.0000',
                            currency => "\x{a5}" },
    'balance, available, held as Redis has them: ' . fmt_units($balance) . ' yuan';

is scalar @{ $p1->{rows} || [] }, 20, 'ledger page 1: 20 rows';
is_deeply shown_rows($p1->{rows}), [ map { expect_row($_) } @newest[0 .. 19] ],
    '... newest first: ids, types, times, models, amounts, balances as in Redis';
is_deeply [ map { $_->{amount} } @{ $p1->{rows} || [] } ], [ ('-0.2465') x 20 ],
    '... each charged -0.2465';
is_deeply [ map { $_->{model} } @{ $p1->{rows} || [] } ], [ ('gemini-2.5-flash-image') x 20 ],
    '... for gemini-2.5-flash-image';
is_deeply [ map { $_->{id} } @{ $p1->{rows} || [] } ],
          [ map { $_->{request_id} } @charged[0 .. 19] ],
    '... the ids are the request ids of the last 20 charges';
is_deeply [ map { $_->{id_shown} } @{ $p1->{rows} || [] } ],
          [ map { $_->{id} } @{ $p1->{rows} || [] } ], '... shown in full';
like $p1->{rows}[0]{detail} // '', qr/\b560\b.*\b1120\b/, '... with their token counts';
like $p1->{rows}[0]{detail} // '', qr/\x{5bf9}\x{8bdd} Chat Completions/, '... and the API their client spoke';
my $kid = substr(Imgbill::Harness::key_hash($key), 0, 12);
is scalar(grep { ($_->{detail} // '') =~ /Key \Q$kid\E$/ } @{ $p1->{rows} || [] }), 20,
    '... and the key that spent, by its id';
ok $p1->{newer_disabled}, '... "newer" disabled on the newest page';
ok !$p1->{older_disabled}, '... "older" enabled';

my $p2 = $r->{older} || {};
is $p2->{state}, 'ready', '"older": page 2 shown';
my @rest = @newest[20 .. $#newest];
is scalar @{ $p2->{rows} || [] }, scalar @rest, 'ledger page 2: ' . scalar(@rest) . ' rows';
is scalar(grep { $_->{type} eq 'charge' } @{ $p2->{rows} || [] }), 3, '... 3 of them charges';
is_deeply shown_rows($p2->{rows}), [ map { expect_row($_) } @rest ],
    '... the oldest entries, as in Redis';
ok !$p2->{newer_disabled}, '... "newer" enabled';
ok $p2->{older_disabled}, '... "older" disabled: nothing older';
is $p2->{account}{balance}, fmt_units($balance), '... the balance still shown';
if (my @credit = grep { $_->{type} ne 'charge' } @{ $p2->{rows} || [] }) {
    note 'credit entries shown: ' . join ', ', map { "$_->{type} $_->{amount}" } @credit;
    ok scalar(grep { $_->{type} eq 'credit' && $_->{amount} eq '+1.0000' } @credit),
        '... the CLI\'s credit of 1.00 shown as +1.0000';
}

my $back = $r->{newer} || {};
is_deeply shown_rows($back->{rows}), shown_rows($p1->{rows}), '"newer": page 1 again';
ok $back->{newer_disabled} && !$back->{older_disabled}, '... its buttons as before';

ok -s $shot && -s $shot2 && -s $shot3, 'screenshots saved';
note "screenshot of page 1: $shot";
note "screenshot of page 2: $shot2";
note "screenshot of a wrong key: $shot3";

my $bp = $r->{bad} || {};
is $bp->{state}, 'error', 'a wrong key: an error shown';
is $bp->{error_message}, $msg_401, "... the API's message: $msg_401";
like $bp->{error_status}, qr/\b401\b/, '... with the status 401';
ok !$bp->{account_shown} && !$bp->{ledger_shown}, '... the previous account hidden';
is_deeply [ @{ $bp->{account} }{qw(id balance available held)}, scalar @{ $bp->{rows} || [] } ],
          [ '', '', '', '', 0 ], '... and its figures and rows gone from the page';

# the page talked to its own origin only, and the key stayed in memory
my @reqs = @{ $r->{requests} || [] };
my @http = grep { $_->{url} !~ /^data:/ } @reqs;
is_deeply [ grep { index($_->{url}, "$base/") != 0 } @http ], [],
    'every request went to the page\'s own origin';
my @api = grep { $_->{url} =~ m{^\Q$base\E/v1/imgbill/} } @http;
is_deeply [ sort map { m{^\Q$base\E(/v1/imgbill/\w+)} ? $1 : $_ } map { $_->{url} } @api ],
          [ ('/v1/imgbill/account') x 4, '/v1/imgbill/keys', ('/v1/imgbill/ledger') x 4 ],
    '... the account and the ledger: key, older, newer, wrong key; the key list once';
is_deeply [ grep { ($_->{authorization} // '') !~ /^Bearer (?:\Q$key\E|\Q$bad\E)$/ } @api ], [],
    '... each with the key as Authorization: Bearer';
is_deeply [ grep { $_->{method} ne 'GET' } @api ], [], '... each a GET';
is_deeply [ grep { defined $_->{authorization} } grep { $_->{url} !~ m{/v1/imgbill/} } @http ], [],
    '... and the key sent nowhere else';
is_deeply [ grep { index($_->{url}, $key) >= 0 } @reqs ], [], 'the key in no URL';
my $st = $r->{storage} || {};
is_deeply [ $st->{local}, $st->{session}, $st->{cookie}, $st->{browser_cookies} ],
          [ {}, {}, '', [] ], 'nothing in localStorage, sessionStorage or cookies';
is $st->{href}, "$base/imgbill/", 'location still /imgbill/ (no key in the URL)';
is $st->{input_value}, '', 'the input emptied once the key was taken';
ok defined $st->{html} && index($st->{html}, $key) < 0, 'the key nowhere in the document';
# Chromium logs each 4xx/5xx it was given; the 401s asked for are not errors
is_deeply [ grep { !/^Failed to load resource: .* status of 401\b/ } @{ $r->{console_errors} || [] } ],
          [], 'no console errors (CSP violations included)';
is_deeply $r->{page_errors}, [], 'no script errors';

# ---- a redemption code, typed into the page --------------------------------

{
    my ($rc, $out) = $h->cli('codes-new', '3.5', '--count', '1');
    my ($code) = $out =~ /^(rc-\S+)$/m;
    is $rc, 0, 'codes-new made a code of 3.5 yuan';
    my $before = $h->balance($acct);
    my $shot4 = "$artifacts/page-redeem.png";
    unlink $shot4;
    my $rr = browse(key => $key, mode => 'redeem', codes => [ $code // 'rc-none', $code // 'rc-none' ],
                    screenshot => $shot4);
    ok !$rr->{failure}, 'the browser redeemed through the box';
    my ($first, $again) = @{ $rr->{redeemed} || [] };
    is $h->balance($acct), $before + 35000, '... Redis credited 3.5000 once';
    is $first->{redeem}{outcome}, 'done', '... the first try: done';
    like $first->{redeem}{result}, qr/\x{a5}3\.5000\b.*\x{a5}\Q@{[fmt_units($before + 35000)]}\E/,
        '... showing the amount and the new balance';
    is $first->{account}{balance}, fmt_units($before + 35000), '... the figures reloaded';
    is $first->{rows}[0]{type}, 'credit', '... the ledger\'s newest row a credit';
    is $first->{rows}[0]{amount}, '+3.5000', '... of +3.5000';
    like $first->{rows}[0]{detail}, qr/\x{5151}\x{6362}\x{7801} redemption code\s*Key \Q$kid\E$/,
        '... from a redemption code, by the key';
    is $first->{redeem}{input_value}, '', '... the box emptied';
    my $used = $h->request('POST', '/v1/imgbill/redeem', { code => $code // 'rc-none' },
                           Authorization => "Bearer $key");
    is $again->{redeem}{outcome}, 'failed', 'the same code again: refused';
    is $again->{redeem}{result}, "HTTP 409 " . (eval { $used->{json}{error}{message} } // '?'),
        "... with the API's status and message";
    is $again->{account}{balance}, fmt_units($before + 35000), '... the balance unchanged';
    is_deeply [ map { $_->{url} } grep { $_->{method} eq 'POST' } @{ $rr->{requests} || [] } ],
              [ ("$base/v1/imgbill/redeem") x 2 ], '... two POSTs, to /v1/imgbill/redeem';
    is_deeply [ grep { !/status of (?:401|409)\b/ } @{ $rr->{console_errors} || [] } ], [],
        '... no console errors but the 409';
    is_deeply $rr->{page_errors}, [], '... no script errors';
    note "screenshot of a redemption: $shot4";
}

# ---- the account's keys: listed, made, deleted through the page ------------

# keys.mjs: the same browser, acting on the keys section, in one visit.  It
# enters the key, reads the key list, then runs cfg.steps in order, reading
# what the page shows after each:
#   {create: {name, limit, daily, expires, models, ips}}  type into the
#       form's fields (those given), press Create, wait for its outcome
#   {delete: ID, accept: true|false}  press the row's Delete and accept or
#       dismiss the confirm(), wait for the outcome ("cancelled" if
#       dismissed); ID "@new": the key the last create made
#   {dismiss: true}   press "I have saved it"
#   {screenshot: PATH}
#   {pause: NAME}     print {"pause": NAME, "shown": ...} and wait for a
#       line on stdin: the .t looks at Redis and the relay meanwhile
# Always: every request (with its body), each dialog's text, storage,
# console and script errors.  The last line printed is the whole report.
my $KEYS_JS = <<'JS';
import { createRequire } from 'node:module';
import readline from 'node:readline';

const cfg = JSON.parse(process.argv[2] || '{}');
const require = createRequire(cfg.sdk + '/package.json');
const puppeteer = require('puppeteer-core');
const out = { requests: [], console_errors: [], page_errors: [], dialogs: [], steps: [] };
const WAIT = 20000;    // a bound on each wait, never asserted on
const stdin = readline.createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

const browser = await puppeteer.launch({
  executablePath: cfg.chromium || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--no-first-run',
         '--no-default-browser-check', '--disable-extensions',
         '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--metrics-recording-only', '--lang=zh-CN'],
});

try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 900, deviceScaleFactor: 1 });
  page.on('request', (r) => {
    const h = r.headers();
    out.requests.push({
      url: r.url(), method: r.method(),
      authorization: h.authorization === undefined ? null : h.authorization,
      body: r.postData() === undefined ? null : r.postData(),
    });
  });
  page.on('console', (m) => {
    if (m.type() === 'error') out.console_errors.push(m.text());
  });
  page.on('pageerror', (e) => out.page_errors.push(String(e && e.message || e)));
  let answer = null;    // what the next confirm() is given
  page.on('dialog', async (d) => {
    out.dialogs.push({ type: d.type(), message: d.message(), accepted: answer === true });
    if (answer === true) await d.accept(); else await d.dismiss();
  });

  const until = (fn) => page.waitForFunction(fn, { timeout: WAIT });
  const read = () => page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const q = (e, sel) => { const x = e.querySelector(sel); return x ? x.textContent : null; };
    const p = (id) => ({ shown: !$(id).hidden, text: $(id).textContent, cls: $(id).className });
    const attr = (a) => document.body.getAttribute(a);
    return {
      state: attr('data-state'), keys_state: attr('data-keys'),
      key_new: attr('data-key-new'), key_del: attr('data-key-del'),
      error_shown: !$('error').hidden,
      account_shown: !$('account').hidden, ledger_shown: !$('ledger').hidden,
      keys_shown: !$('keys').hidden,
      keys: [...document.querySelectorAll('#key-rows tr[data-key-id]')].map((tr) => ({
        id: tr.getAttribute('data-key-id'),
        id_shown: q(tr, '.kid-v'),
        current: tr.getAttribute('data-current') === 'true',
        marker: q(tr, '.tag.current'),
        made_by: q(tr, '.kby'),
        name: q(tr, '.kname'),
        spent: q(tr, '.klimit .used'), limit: q(tr, '.klimit .lim'),
        today: q(tr, '.kdaily .used'), daily_limit: q(tr, '.kdaily .lim'),
        expires: q(tr, '.kexpires'), models: q(tr, '.kmodels'), ips: q(tr, '.kips'),
        last_used: tr.querySelector('.kused').firstChild.textContent,
        created: q(tr, '.kcreated'),
        delete_button: !!tr.querySelector('button.kdel'),
      })),
      markup: document.querySelectorAll('#key-rows b, #key-rows i, #key-rows img').length,
      keys_result: p('keys-result'), new_result: p('key-new-result'), notice: p('notice'),
      box: { shown: !$('key-new-box').hidden, raw: $('key-new-raw').textContent,
             id: $('key-new-id').textContent, note: $('key-new-note').textContent },
      inputs: Object.fromEntries(['name', 'limit', 'daily', 'expires', 'models', 'ips']
        .map((f) => [f, $('key-new-' + f).value])),
      html: document.documentElement.outerHTML,
    };
  });

  const res = await page.goto(cfg.base + '/imgbill/', { waitUntil: 'load', timeout: WAIT });
  out.page = { status: res.status() };
  await page.waitForSelector('#key', { timeout: WAIT });
  await page.type('#key', cfg.key);
  await page.click('#submit');
  await until(() => ['ready', 'error'].includes(document.body.getAttribute('data-state')));
  await until(() => ['ready', 'error'].includes(document.body.getAttribute('data-keys')));
  out.first = await read();

  let made = null;      // the id of the key the last create made
  for (const step of cfg.steps || []) {
    if (step.create) {
      await page.evaluate(() => document.body.setAttribute('data-key-new', ''));
      for (const [f, v] of Object.entries(step.create)) {
        await page.click('#key-new-' + f, { clickCount: 3 });
        await page.type('#key-new-' + f, v);
      }
      await page.click('#key-new-submit');
      await until(() => ['done', 'failed'].includes(document.body.getAttribute('data-key-new')));
      await until(() => !document.getElementById('key-new-submit').disabled);
    } else if (step.delete) {
      const id = step.delete === '@new' ? made : step.delete;
      answer = step.accept === true;
      await page.evaluate(() => document.body.setAttribute('data-key-del', ''));
      await page.click(`#key-rows button.kdel[data-id="${id}"]`);
      await until(() => ['done', 'failed', 'cancelled']
        .includes(document.body.getAttribute('data-key-del')));
      await until(() => [...document.querySelectorAll('button.kdel')].every((b) => !b.disabled));
      answer = null;
    } else if (step.dismiss) {
      await page.click('#key-new-done');
      await until(() => document.getElementById('key-new-box').hidden);
    } else if (step.screenshot) {
      await page.screenshot({ path: step.screenshot, fullPage: true });
    }
    const shown = await read();
    if (step.create && shown.box.shown) made = shown.box.id;
    if (step.pause) {
      process.stdout.write(JSON.stringify({ pause: step.pause, shown }) + '\n');
      const go = await lines.next();
      if (go.done) throw new Error(`stdin closed at pause ${step.pause}`);
    }
    out.steps.push(shown);
  }

  out.storage = await page.evaluate(() => {
    const dump = (s) => {
      const o = {};
      for (let i = 0; i < s.length; i++) o[s.key(i)] = s.getItem(s.key(i));
      return o;
    };
    return { local: dump(localStorage), session: dump(sessionStorage),
             cookie: document.cookie, href: location.href };
  });
} catch (e) {
  out.failure = String(e && e.stack || e);
} finally {
  stdin.close();
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
JS

my $keys_js = $h->dir . '/keys.mjs';
{
    open my $f, '>', $keys_js or die "$keys_js: $!";
    print $f $KEYS_JS;
    close $f or die "$keys_js: $!";
}

# keys_browse(%cfg, pauses => { NAME => sub { my ($shown) = @_; ... } })
#   -> the report: keys.mjs run with cfg, each pause's sub called with what
#   the page showed there before the browser goes on
sub keys_browse {
    my (%cfg) = @_;
    my $pauses = delete $cfg{pauses} || {};
    my $arg = $JSON->encode({ base => $base, chromium => $CHROMIUM, sdk => $sdk, %cfg });
    my ($from, $to);
    my $pid = open2($from, $to, 'node', $keys_js, $arg);
    my ($r, @noise);
    while (my $line = <$from>) {
        my $j = $line =~ /^\{/ ? eval { decode_json($line) } : undef;
        if (!$j) { push @noise, $line; next }
        if (defined $j->{pause}) {
            my $cb = $pauses->{ $j->{pause} };
            if ($cb) { $cb->($j->{shown}) } else { fail("no check for pause $j->{pause}") }
            print {$to} "go\n";
            next;
        }
        $r = $j;
    }
    close $to;
    close $from;
    waitpid $pid, 0;
    if (!$r || $r->{failure}) {
        diag "keys.mjs: " . ($r ? $r->{failure} : join '', @noise);
        $r //= {};
    }
    return $r;
}

# the account's keys as Redis has them: key-list's lines by id
sub cli_keys {
    my ($acct) = @_;
    my ($rc, $out, $err) = $h->cli('key-list', $acct);
    is $rc, 0, "key-list $acct" or diag $err;
    return { map { /^([0-9a-f]{12}) (.*)$/ ? ($1 => $2) : () } split /\n/, $out };
}
sub row_of {
    my ($shown, $id) = @_;
    my @r = grep { $_->{id} eq $id } @{ $shown->{keys} || [] };
    return $r[0] || {};
}
# two snapshot()s equal, or the Redis keys that differ named
sub same_redis {
    my ($got, $want, $name) = @_;
    return pass($name) if $got eq $want;
    my %g = map { $_->{key} => $JSON->encode($_) } @{ decode_json($got) };
    my %w = map { $_->{key} => $JSON->encode($_) } @{ decode_json($want) };
    fail($name);
    diag "$_:\n  before: " . ($w{$_} // '(none)') . "\n  after:  " . ($g{$_} // '(none)')
        for sort grep { ($g{$_} // '') ne ($w{$_} // '') } keys %{ { %g, %w } };
    return 0;
}

my ($kacct, $kkey) = $h->fresh_account(prefix => 'pagekeys', units => 100000);
my $kkid = $h->key_id($kacct);
# a second key with every limit, made by the operator, markup in its name
my $cli_name = '<b>cli</b> & "co"';
my ($crc, $craw) = $h->cli('key-new', $kacct, '--name', $cli_name, '--limit', '2',
                           '--daily-limit', '0.5', '--expires', '2031-02-03T04:05:06Z',
                           '--models', 'gemini-2.5-flash-image,dall-e-3',
                           '--ips', '10.0.0.0/8,2001:db8::/32');
is $crc, 0, 'key-new made a second key with limits';
chomp $craw;
my $cid = substr(key_hash($craw), 0, 12);
# key-list indexes the harness' key, made as keys were before the API
my $redis_keys = cli_keys($kacct);

my $bad_create = $h->request('POST', '/v1/imgbill/keys', { limit => 'abc' },
                             Authorization => "Bearer $key");
is $bad_create->{status}, 400, 'the API: a limit of "abc" is a 400';
my $msg_400 = eval { $bad_create->{json}{error}{message} } // '(none)';

my $shot5 = "$artifacts/page-keys.png";
unlink $shot5;
my $new_name = 'shop <i>web</i>';
my ($before, $after_abc, $raw, $nid);
$before = $h->snapshot;
my $kr = keys_browse(
    key => $kkey,
    steps => [
        { create => { limit => 'abc' } },
        { pause => 'refused' },
        { create => { name => $new_name, limit => '0.50', daily => '0.20',
                      expires => '2030-01-31',
                      models => 'gemini-2.5-flash-image, gemini-3-pro-image-preview',
                      ips => '127.0.0.0/8, ::1/128' } },
        { pause => 'made' },
        { screenshot => $shot5 },
        { dismiss => 1 },
        { delete => $kkid, accept => JSON::PP::false },
        { delete => '@new', accept => JSON::PP::true },
        { pause => 'deleted' },
        { delete => $kkid, accept => JSON::PP::true },
    ],
    pauses => {
        refused => sub { $after_abc = $h->snapshot },
        made => sub {
            my ($shown) = @_;
            $raw = $shown->{box}{raw} // '';
            $nid = substr(key_hash($raw), 0, 12);
            my $use = $h->request('GET', '/v1/imgbill/account', undef,
                                  Authorization => "Bearer $raw");
            is $use->{status}, 200, 'the new key works at the relay: GET /v1/imgbill/account 200';
            is eval { $use->{json}{id} }, $kacct, "... on the same account, $kacct";
            is $h->redis('GET', 'imgbill:key:' . key_hash($raw)), $kacct,
                '... Redis maps it to the account';
            like cli_keys($kacct)->{$nid} // '',
                qr/^name="shop <i>web<\/i>" limit=0\.5000 spent=0\.0000 daily_limit=0\.2000 today=0\.0000 expires=2030-01-31T00:00:00Z models=gemini-2\.5-flash-image,gemini-3-pro-image-preview ips=127\.0\.0\.0\/8,::1\/128 /,
                '... with the name and limits typed (key-list)';
            my $listed = $h->request('GET', '/v1/imgbill/keys', undef,
                                     Authorization => "Bearer $kkey");
            my $data = ref $listed->{json} eq 'HASH' && ref $listed->{json}{data} eq 'ARRAY'
                     ? $listed->{json}{data} : [];
            is $listed->{status}, 200, 'GET /v1/imgbill/keys: 200';
            ok @$data && index($listed->{body} // $raw, $raw) < 0
               && !grep({ ref $_ ne 'HASH' || exists $_->{key} } @$data),
                '... and it never shows a raw key again';
        },
        deleted => sub {
            my $after = $h->request('GET', '/v1/imgbill/account', undef,
                                    Authorization => "Bearer $raw");
            is $after->{status}, 401, 'the deleted key: 401 at the relay';
            ok !$h->redis('EXISTS', 'imgbill:key:' . key_hash($raw), "imgbill:{$kacct}:key:$nid"),
                '... and gone from Redis, with its limits';
            is_deeply [ sort keys %{ cli_keys($kacct) } ], [ sort $kkid, $cid ],
                '... key-list: the page\'s key and the operator\'s left';
        },
    },
);
ok !$kr->{failure}, 'keys: the browser script ran to the end';
$raw //= '';
$nid //= '';

# -- the list ----------------------------------------------------------------

my $l1 = $kr->{first} || {};
is $l1->{keys_state}, 'ready', 'the key entered: the keys section loaded';
ok $l1->{keys_shown}, '... and shown';
is_deeply [ sort map { $_->{id} } @{ $l1->{keys} || [] } ], [ sort keys %$redis_keys ],
    "... listing the account's keys as Redis has them: $kkid, $cid";
is_deeply [ map { $_->{id} } grep { $_->{current} } @{ $l1->{keys} || [] } ], [$kkid],
    '... the page\'s own key marked current, and no other';
is row_of($l1, $kkid)->{marker}, "\x{5f53}\x{524d} This key", '... as "this key"';
is_deeply { map { $_ => row_of($l1, $kkid)->{$_} }
            qw(id_shown name limit spent daily_limit today expires models ips last_used made_by) },
    { id_shown => $kkid, name => "\x{2014}", limit => "\x{4e0d}\x{9650} none",
      spent => "\x{a5}0.0000", daily_limit => "\x{4e0d}\x{9650} none", today => "\x{a5}0.0000",
      expires => "\x{6c38}\x{4e0d} never", models => "\x{4e0d}\x{9650} any",
      ips => "\x{4e0d}\x{9650} any", last_used => "\x{4ece}\x{672a} never", made_by => undef },
    '... a key without limits: no name, no limits, any model and network, never used';
is_deeply { map { $_ => row_of($l1, $cid)->{$_} }
            qw(current name limit spent daily_limit today expires models ips last_used) },
    { current => JSON::PP::false, name => $cli_name, limit => "\x{a5}2.0000",
      spent => "\x{a5}0.0000", daily_limit => "\x{a5}0.5000", today => "\x{a5}0.0000",
      expires => '2031-02-03 04:05:06', models => 'gemini-2.5-flash-image, dall-e-3',
      ips => '10.0.0.0/8, 2001:db8::/32', last_used => "\x{4ece}\x{672a} never" },
    "... key-new's key with its limits, expiry in UTC, its name as text";
is $l1->{markup}, 0, '... the name\'s markup not made elements';
is scalar(grep { $_->{delete_button} } @{ $l1->{keys} || [] }), 2, '... a delete button on each';

my ($abc, undef, $made, undef, $shown, $dismissed, $cancel, $gone, undef, $own) =
    map { $_ || {} } @{ $kr->{steps} || [] }[0 .. 9];
my @calls = grep { $_->{url} =~ m{/v1/imgbill/} } @{ $kr->{requests} || [] };
my @writes = grep { $_->{method} ne 'GET' } @calls;

# -- a limit of "abc" ------------------------------------------------------------

is $abc->{key_new}, 'failed', 'a limit of "abc": the create failed';
is_deeply $abc->{new_result}, { shown => JSON::PP::true, text => "HTTP 400 $msg_400", cls => 'fail' },
    "... showing HTTP 400 and the API's message: $msg_400";
ok !$abc->{box}{shown}, '... no new key shown';
is $abc->{inputs}{limit}, 'abc', '... the field kept to be corrected';
is_deeply [ $writes[0]{method}, $writes[0]{url}, eval { decode_json($writes[0]{body}) } ],
          [ 'POST', "$base/v1/imgbill/keys", { limit => 'abc' } ],
    '... one POST /v1/imgbill/keys of {"limit":"abc"}: the empty fields left out';
is scalar(@{ $abc->{keys} || [] }), 2, '... the list unchanged';
same_redis($after_abc // '[]', $before, '... and nothing written to Redis (nor by the list)');

# -- a key made through the form ---------------------------------------------------

is $made->{key_new}, 'done', 'a key made through the form';
is_deeply [ $writes[1]{method}, $writes[1]{url}, eval { decode_json($writes[1]{body}) } ],
          [ 'POST', "$base/v1/imgbill/keys",
            { name => $new_name, limit => '0.50', daily_limit => '0.20',
              expires => '2030-01-31T00:00:00Z',
              models => [ 'gemini-2.5-flash-image', 'gemini-3-pro-image-preview' ],
              ips => [ '127.0.0.0/8', '::1/128' ] } ],
    '... one POST /v1/imgbill/keys with the fields, the date as midnight UTC, the lists split';
ok $made->{box}{shown}, '... the new key shown in its box';
like $raw, qr/^sk-[A-Za-z0-9_-]{20,}$/, '... a raw key: ' . substr($raw, 0, 6) . '...';
is $made->{box}{id}, $nid, '... with its id';
like $made->{box}{note}, qr/\x{53ea}\x{663e}\x{793a}\x{8fd9}\x{4e00}\x{6b21}.*will not be shown again/s,
    '... and the note that it is shown this once';
is_deeply [ values %{ $made->{inputs} || {} } ], [ ('') x 6 ], '... the form emptied';
is scalar(@{ $made->{keys} || [] }), 3, 'the list reloaded: 3 keys';
my $nrow = row_of($made, $nid);
is_deeply { map { $_ => $nrow->{$_} }
            qw(current name limit spent daily_limit today expires models ips made_by) },
    { current => JSON::PP::false, name => $new_name, limit => "\x{a5}0.5000",
      spent => "\x{a5}0.0000", daily_limit => "\x{a5}0.2000", today => "\x{a5}0.0000",
      expires => '2030-01-31 00:00:00',
      models => 'gemini-2.5-flash-image, gemini-3-pro-image-preview',
      ips => '127.0.0.0/8, ::1/128', made_by => "\x{521b}\x{5efa}\x{8005} made by $kkid" },
    '... the new key with its name, limit and the rest, made by the page\'s key';
like $nrow->{created} // '', qr/^\x{521b}\x{5efa} created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/,
    '... its creation time';
is $made->{markup}, 0, '... names as text';
ok $shown->{box}{shown}, '... the raw key still shown for the screenshot';
ok -s $shot5, 'screenshot saved';
note "screenshot of the keys section: $shot5";
ok !$dismissed->{box}{shown} && index($dismissed->{html} // $raw, $raw) < 0,
    '"I have saved it": the raw key gone from the page';

# -- deleted through the page ------------------------------------------------------

my ($d1, $d2, $d3) = @{ $kr->{dialogs} || [] };
is scalar @{ $kr->{dialogs} || [] }, 3, 'three confirm()s';
is $d1->{type}, 'confirm', 'the page\'s own key: a confirm';
like $d1->{message},
    qr/\Q$kkid\E.*\x{672c}\x{9875}\x{9762}\x{6b63}\x{5728}\x{4f7f}\x{7528}.*this page loses access/s,
    '... warning that the page will lose access';
is $cancel->{key_del}, 'cancelled', '... dismissed: nothing done';
is scalar(@{ $cancel->{keys} || [] }), 3, '... the list as it was';
like $d2->{message}, qr/\Q$nid\E.*\Q$new_name\E/s, 'the new key: a confirm naming it';
unlike $d2->{message}, qr/loses access/, '... without the warning';
is $gone->{key_del}, 'done', '... accepted: deleted';
is_deeply [ sort map { $_->{id} } @{ $gone->{keys} || [] } ], [ sort $kkid, $cid ],
    '... the list reloaded without it';
is_deeply $gone->{keys_result}, { shown => JSON::PP::true, cls => 'ok',
                                  text => "\x{5df2}\x{5220}\x{9664} Key $nid deleted" },
    '... saying so';

like $d3->{message}, qr/this page loses access/, 'the page\'s own key again: warned';
is $own->{key_del}, 'done', '... the warning accepted: deleted';
is $own->{state}, 'idle', '... the page forgot the key';
ok !$own->{keys_shown} && !$own->{account_shown} && !$own->{ledger_shown},
    '... and shows nothing of the account';
ok $own->{notice}{shown}, '... saying the key was deleted';
like $own->{notice}{text}, qr/\Q$kkid\E/, '... naming it';
is $h->request('GET', '/v1/imgbill/account', undef, Authorization => "Bearer $kkey")->{status},
    401, '... and the relay refuses it';
is_deeply [ sort keys %{ cli_keys($kacct) } ], [ $cid ],
    '... key-list: the operator\'s key is all the account has left';

is_deeply [ map { "$_->{method} $_->{url}" } @writes ],
          [ ("POST $base/v1/imgbill/keys") x 2,
            "DELETE $base/v1/imgbill/keys/$nid", "DELETE $base/v1/imgbill/keys/$kkid" ],
    'two POSTs, two DELETEs, none for the dismissed confirm';
is_deeply [ grep { ($_->{authorization} // '') ne "Bearer $kkey" } @calls ], [],
    'every call with the key entered, as Authorization: Bearer';
is_deeply [ grep { index($_->{url}, $raw) >= 0 || index($_->{body} // '', $raw) >= 0 }
            @{ $kr->{requests} || [] } ], [], 'the raw key sent nowhere';
my $kst = $kr->{storage} || {};
is_deeply [ $kst->{local}, $kst->{session}, $kst->{cookie}, $kst->{href} ],
          [ {}, {}, '', "$base/imgbill/" ],
    'nothing in localStorage, sessionStorage, cookies or the URL';
is_deeply [ grep { !/status of 400\b/ } @{ $kr->{console_errors} || [] } ], [],
    'no console errors but the 400';
is_deeply $kr->{page_errors}, [], 'no script errors';

# ---- Redis down: the API's 503 message ----------------------------------

$h->redis_stop;
my $api_503 = $h->request('GET', '/v1/imgbill/account', undef, Authorization => "Bearer $key");
is $api_503->{status}, 503, 'Redis down: the API answers 503';
my $down = browse(key => $key, mode => 'error');
my $d = $down->{first} || {};
is $d->{state}, 'error', 'Redis down: the page shows an error';
is $d->{error_message}, eval { $api_503->{json}{error}{message} } // '(none)',
    "... the API's message";
like $d->{error_status}, qr/\b503\b/, '... with the status 503';
ok !$d->{account_shown} && !$d->{ledger_shown}, '... and no figures';
is_deeply $down->{page_errors}, [], '... no script errors';

done_testing;
