// An HTTP/2 client (Node's own http2: cleartext with prior knowledge for an
// http: URL, as gRPC-style clients and proxies speak to a relay; TLS with
// ALPN for https:, as browsers and SDKs do) running several calls at once
// on one connection.
// Usage: node h2.mjs URL CALLS_FILE
//   CALLS_FILE: JSON, [{name, path, key, body, mock, how}], how one of
//     read   read the reply to its end
//     slow   read 1 MB, stop reading for pause_ms (default 1000), then
//            the rest: the relay meets HTTP/2 flow control
//     cancel read until an image's data URL has arrived whole, then reset
//            the stream (RST_STREAM CANCEL); the connection stays
//     early  reset the stream at the first byte of the body, before any
//            image
//     drop   as cancel, then close the whole connection (TCP gone)
// Prints one JSON object: name => {status, headers, trailers, bytes,
// sha256, image_len, events, done, reset}; image_len is the length of the
// first "data:image/..." URL seen (up to its closing quote).
import http2 from 'node:http2';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [url, callsFile] = process.argv.slice(2);
const calls = JSON.parse(readFileSync(callsFile, 'utf8'));
// https: ALPN h2 over TLS, with the test's self-signed certificate
const session = http2.connect(url, { rejectUnauthorized: false });
const out = {};
session.on('error', () => {});

// the length of the first data URL in text, once it is whole; each byte
// looked at once (s: where the URL starts, or where to look for it next)
function imageScan(text, s) {
    if (s.at < 0) {
        s.at = text.indexOf('data:image/', Math.max(0, s.from - 10));
        if (s.at < 0) {
            s.from = text.length;
            return -1;
        }
        s.from = s.at;
    }
    const end = text.indexOf('"', s.from);
    if (end < 0) {
        s.from = text.length;
        return -1;
    }
    return end - s.at;
}

function call(c) {
    return new Promise((resolve) => {
        const body = typeof c.body === 'string' ? c.body : JSON.stringify(c.body);
        const headers = {
            ':method': 'POST', ':path': c.path,
            'content-type': 'application/json',
            authorization: 'Bearer ' + c.key,
        };
        if (c.mock) headers['x-mock'] = c.mock;
        const req = session.request(headers);
        const r = { status: 0, headers: {}, trailers: {}, bytes: 0, image_len: -1,
                    events: 0, done: false, reset: false };
        const hash = createHash('sha256');
        const scan = { at: -1, from: 0 };
        let text = '', paused = false, ended = false;
        const finish = () => {
            if (ended) return;
            ended = true;
            r.sha256 = hash.digest('hex');
            r.events = (text.match(/\n\n/g) || []).length;
            r.done = /data: \[DONE\]\s*$/.test(text);
            out[c.name] = r;
            resolve();
        };
        const reset = () => {
            r.reset = true;
            req.close(http2.constants.NGHTTP2_CANCEL);
            if (c.how === 'drop') session.destroy();
            finish();
        };
        req.on('response', (h) => {
            r.status = h[':status'];
            for (const k of Object.keys(h)) if (k[0] !== ':') r.headers[k] = h[k];
        });
        req.on('trailers', (t) => { Object.assign(r.trailers, t); });
        req.on('data', (d) => {
            if (ended) return;
            r.bytes += d.length;
            hash.update(d);
            text += d.toString('latin1');
            if (r.image_len < 0) r.image_len = imageScan(text, scan);
            if (c.how === 'early') return reset();
            if ((c.how === 'cancel' || c.how === 'drop') && r.image_len >= 0) {
                return reset();
            }
            if (c.how === 'slow' && !paused && r.bytes >= 1 << 20) {
                paused = true;
                req.pause();
                setTimeout(() => req.resume(), c.pause_ms || 1000);
            }
        });
        req.on('end', finish);
        req.on('close', finish);
        req.on('error', (e) => { r.error = String(e.code || e); finish(); });
        req.end(body);
    });
}

await Promise.all(calls.map(call));
if (!session.destroyed) session.close();
process.stdout.write(JSON.stringify(out) + '\n');
