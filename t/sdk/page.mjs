// The self-service page (/imgbill/) in a real browser: Debian's chromium,
// headless, driven by puppeteer-core.  t/58-page.t runs it and asserts on
// the JSON it prints; this script only acts as a person would and reports
// what the page showed, it decides nothing.
//
//   node page.mjs '{"base":"http://127.0.0.1:PORT","key":"sk-..",
//                   "bad_key":"sk-wrong","screenshot":"/path/page.png",
//                   "mode":"full"}'
//
// mode "full":  enter the key, read the figures and ledger page 1, click
//               "older", read page 2 (screenshot_older: its picture), click
//               "newer", read page 1 again, take the screenshot; then enter
//               bad_key and read the error shown (screenshot_bad: its picture).
// mode "error": enter the key and read what the page shows (the .t has
//               stopped Redis): the error, and that no figures are left.
// mode "redeem": enter the key, type each of codes[] into the redemption
//               box and send it, reading what the page shows after each.
// Always: every request the page made (URL, method, whether it carried the
// key), the storage the page could have put the key in, console errors.
import puppeteer from 'puppeteer-core';

const cfg = JSON.parse(process.argv[2] || '{}');
const out = { mode: cfg.mode || 'full', requests: [], console_errors: [], page_errors: [] };
const WAIT = 20000;    // a bound on each wait, never asserted on

const browser = await puppeteer.launch({
  executablePath: cfg.chromium || process.env.CHROMIUM || '/usr/bin/chromium',
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
      url: r.url(), method: r.method(), type: r.resourceType(),
      authorization: h.authorization === undefined ? null : h.authorization,
    });
  });
  page.on('console', (m) => {
    if (m.type() === 'error') out.console_errors.push(m.text());
  });
  page.on('pageerror', (e) => out.page_errors.push(String(e && e.message || e)));

  const res = await page.goto(cfg.base + '/imgbill/', { waitUntil: 'load', timeout: WAIT });
  out.page = { status: res.status(), csp: res.headers()['content-security-policy'] || null,
               title: await page.title() };

  // the page's state once it is no longer loading, and all it shows
  const settle = () => page.waitForFunction(
    () => ['ready', 'error'].includes(document.body.getAttribute('data-state')),
    { timeout: WAIT });
  const read = () => page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const text = (id) => $(id).textContent;
    return {
      state: document.body.getAttribute('data-state'),
      error_shown: !$('error').hidden,
      error_status: text('error-status'),
      error_message: text('error-message'),
      account_shown: !$('account').hidden,
      ledger_shown: !$('ledger').hidden,
      account: { id: text('account-id'), balance: text('balance'),
                 available: text('available'), held: text('held'),
                 currency: document.querySelector('.currency').textContent },
      rows: [...document.querySelectorAll('#rows tr[data-id]')].map((tr) => ({
        id: tr.getAttribute('data-id'),
        type: tr.getAttribute('data-type'),
        time: tr.querySelector('.time').textContent,
        model: tr.querySelector('.model') ? tr.querySelector('.model').textContent : null,
        detail: tr.querySelector('.detail').textContent,
        amount: tr.querySelector('.amount').textContent,
        balance: tr.querySelector('.balance').textContent,
        id_shown: tr.querySelector('.id').textContent,
      })),
      info: text('page-info'),
      newer_disabled: $('newer').disabled,
      older_disabled: $('older').disabled,
    };
  });
  const enterKey = async (key) => {
    await page.click('#key', { clickCount: 3 });
    await page.type('#key', key);
    await page.click('#submit');
    await settle();
  };
  const turn = async (button) => {
    await page.click(button);
    await settle();
  };

  await page.waitForSelector('#key', { timeout: WAIT });
  out.idle_state = await page.evaluate(() => document.body.getAttribute('data-state'));
  await enterKey(cfg.key);
  out.first = await read();

  if (out.mode === 'redeem') {
    out.redeemed = [];
    for (const code of cfg.codes || []) {
      await page.evaluate(() => document.body.setAttribute('data-redeem', ''));
      await page.click('#redeem-code', { clickCount: 3 });
      await page.type('#redeem-code', code);
      await page.click('#redeem-submit');
      await page.waitForFunction(
        () => ['done', 'failed'].includes(document.body.getAttribute('data-redeem')),
        { timeout: WAIT });
      await settle();
      await page.waitForFunction(() => !document.getElementById('redeem-submit').disabled,
        { timeout: WAIT });
      const shown = await read();
      shown.redeem = await page.evaluate(() => ({
        outcome: document.body.getAttribute('data-redeem'),
        result: document.getElementById('redeem-result').textContent,
        result_class: document.getElementById('redeem-result').className,
        input_value: document.getElementById('redeem-code').value,
      }));
      out.redeemed.push(shown);
    }
    if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot, fullPage: true });
  }

  if (out.mode === 'full') {
    if (!out.first.older_disabled) {
      await turn('#older');
      out.older = await read();
      if (cfg.screenshot_older) {
        await page.screenshot({ path: cfg.screenshot_older, fullPage: true });
      }
      if (!out.older.newer_disabled) {
        await turn('#newer');
        out.newer = await read();
      }
    }
    out.screenshot = cfg.screenshot || null;
    if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot, fullPage: true });
  }

  // where the key could have been left behind, read before anything else
  out.storage = await page.evaluate(() => {
    const dump = (s) => {
      const o = {};
      for (let i = 0; i < s.length; i++) o[s.key(i)] = s.getItem(s.key(i));
      return o;
    };
    return {
      local: dump(localStorage), session: dump(sessionStorage),
      cookie: document.cookie, href: location.href, history_length: history.length,
      input_value: document.getElementById('key').value,
      html: document.documentElement.outerHTML,
    };
  });
  const cookies = typeof browser.cookies === "function" ? await browser.cookies() : await page.cookies();
  out.storage.browser_cookies = cookies.map((c) => `${c.name}=${c.value}`);

  if (out.mode === 'full' && cfg.bad_key) {
    await enterKey(cfg.bad_key);
    out.bad = await read();
    if (cfg.screenshot_bad) await page.screenshot({ path: cfg.screenshot_bad, fullPage: true });
  }
} catch (e) {
  out.failure = String(e && e.stack || e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
