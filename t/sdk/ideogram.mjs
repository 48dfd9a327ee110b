// Ideogram as its clients send it: Node's own FormData (the multipart
// encoder browsers and Cherry Studio use) posted with fetch(), or a JSON
// body, with the key in Api-Key.
// Usage: node ideogram.mjs BASE_URL KEY SPEC
//   SPEC: {"path", "fields": {name: value}, "files": [[name, bytes,
//   filename]], "json": {...} (instead of a form), "mock": X-Mock,
//   "bearer": 1 (the key as Authorization: Bearer)}
// prints one JSON object: status, the X-Imgbill-* headers, the reply
// (json, or text when it is not JSON).
const [base, key, spec] = process.argv.slice(2);
const s = JSON.parse(spec);

// a PNG's signature and some bytes: the relay counts them, never reads them
function png(n) {
    const b = Buffer.alloc(n, 7);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b);
    return b;
}

const headers = s.bearer ? { Authorization: `Bearer ${key}` }
                         : { 'Api-Key': key };
if (s.mock) {
    headers['X-Mock'] = s.mock;
}

let body;
if (s.json) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(s.json);
} else {
    body = new FormData();
    for (const [name, value] of Object.entries(s.fields ?? {})) {
        body.append(name, String(value));
    }
    for (const [name, n, filename] of s.files ?? []) {
        body.append(name, new Blob([png(n)], { type: 'image/png' }), filename);
    }
}

const out = {};
try {
    const res = await fetch(base + s.path, { method: 'POST', headers, body });
    const text = await res.text();
    out.status = res.status;
    out.charge = res.headers.get('x-imgbill-charge');
    out.balance = res.headers.get('x-imgbill-balance');
    out.request_id = res.headers.get('x-imgbill-request-id');
    out.content_type = res.headers.get('content-type');
    try {
        out.json = JSON.parse(text);
    } catch {
        out.text = text.slice(0, 500);
    }
} catch (e) {
    out.error = String(e.message);
}
console.log(JSON.stringify(out));
