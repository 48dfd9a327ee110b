// A web app on another origin calls the relay from the browser: Debian's
// chromium, headless, driven by puppeteer-core.  t/38-cors-browser.t runs
// it and asserts on the JSON it prints; this script only does what a web
// app's code does and reports what the browser let it see.
//
//   node cors.mjs '{"chromium":"/usr/bin/chromium","relay":"http://..",
//                   "app":"http://127.0.0.1:A","other":"http://127.0.0.1:B",
//                   "key":"sk-.."}'
//
// From "app" (an allowed origin): a fetch() of a chat completion, its image
// and its X-Imgbill-Charge; the official openai SDK (dangerouslyAllowBrowser)
// doing the same; a fetch() with a wrong key, its 401 read.  From "other"
// (an origin the relay does not allow): the same fetch(), which the browser
// must refuse.  Always: what the page's requests got (method, URL, status,
// or failed), for a diagnosis; the .t counts on the relay's own log.
import puppeteer from 'puppeteer-core';

const cfg = JSON.parse(process.argv[2] || '{}');
const out = { requests: [], console_errors: [] };
const WAIT = 20000;    // a bound on each wait, never asserted on

const browser = await puppeteer.launch({
  executablePath: cfg.chromium || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--no-first-run',
         '--no-default-browser-check', '--disable-extensions',
         '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--metrics-recording-only'],
});

// what a page's own code does: a fetch() of one generation
const call = (relay, key) => (async () => {
  try {
    const r = await fetch(relay + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'Authorization': 'Bearer ' + key,
                 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'gemini-2.5-flash-image',
                             messages: [{ role: 'user', content: 'a cat' }] }),
    });
    const j = await r.json();
    const img = j.choices && j.choices[0].message.images;
    return { status: r.status,
             charge: r.headers.get('x-imgbill-charge'),
             balance: r.headers.get('x-imgbill-balance'),
             request_id: r.headers.get('x-imgbill-request-id'),
             image_url_start: img ? img[0].image_url.url.slice(0, 22) : null,
             error_code: j.error ? j.error.code : null };
  } catch (e) {
    return { refused: String(e && e.message || e) };
  }
})();

async function openPage(origin) {
  const page = await browser.newPage();
  page.on('response', (r) => out.requests.push({
    origin, method: r.request().method(), url: r.url(), status: r.status() }));
  page.on('requestfailed', (r) => out.requests.push({
    origin, method: r.method(), url: r.url(), failed: true }));
  page.on('console', (m) => {
    if (m.type() === 'error') out.console_errors.push(m.text());
  });
  await page.goto(origin + '/', { waitUntil: 'load', timeout: WAIT });
  return page;
}

try {
  const app = await openPage(cfg.app);
  out.fetch = await app.evaluate(call, cfg.relay, cfg.key);
  out.wrong_key = await app.evaluate(call, cfg.relay, cfg.key + '-wrong');

  // the SDK, as a web app bundles it: its ES modules from the app's origin
  out.sdk = await app.evaluate(async (relay, key) => {
    try {
      const { default: OpenAI } = await import('/openai/index.mjs');
      const client = new OpenAI({ apiKey: key, baseURL: relay + '/v1',
                                  dangerouslyAllowBrowser: true,
                                  maxRetries: 0 });
      const { data, response } = await client.chat.completions.create({
        model: 'gemini-2.5-flash-image',
        messages: [{ role: 'user', content: 'a dog' }],
      }).withResponse();
      const img = data.choices[0].message.images;
      return { charge: response.headers.get('x-imgbill-charge'),
               request_id: response.headers.get('x-imgbill-request-id'),
               image_url_start: img ? img[0].image_url.url.slice(0, 22) : null };
    } catch (e) {
      return { error: String(e && e.stack || e) };
    }
  }, cfg.relay, cfg.key);

  const other = await openPage(cfg.other);
  out.other = await other.evaluate(call, cfg.relay, cfg.key);
} catch (e) {
  out.failure = String(e && e.stack || e);
} finally {
  await browser.close();
}

console.log(JSON.stringify(out));
