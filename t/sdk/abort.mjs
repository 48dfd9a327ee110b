// Clients that leave a stream on purpose, as a key holder who wants images
// free would: Node's fetch with an AbortController, and the official
// OpenAI SDK's stream.controller.abort().
// Usage: node abort.mjs BASE_URL < cases.json
// cases.json: [{ name, path, key, body (an object), headers, at, seed }]
//   at: "before"    abort half a second in, whatever came by then
//       "headers"   abort as soon as the reply's header is in
//       "text"      abort once the text event arrived, before any image
//       "mid-image" abort inside the image event, after some of its data
//       "image"     abort right after the image event ended
//       "usage"     abort after the chunk that carries usage
//       "end"       read it all
//       "random"    one of those, chosen by seed
//       "sdk-image" the OpenAI SDK iterates, and aborts on the image chunk
// prints one JSON object: per case what its client got (t/26-delivered.t).
import OpenAI from 'openai';

const base = process.argv[2];
const cases = JSON.parse(await new Promise(resolve => {
    let s = '';
    process.stdin.on('data', d => { s += d; });
    process.stdin.on('end', () => resolve(s));
}));
const points = ['headers', 'text', 'mid-image', 'image', 'usage', 'end'];
const out = {};

// what a reply so far holds: the first image byte, where its event ends
function image(text) {
    const i = text.search(/data:image\/|"inlineData"|"inline_data"/);
    return i < 0 ? null : { at: i, end: text.indexOf('\n\n', i) };
}

async function byFetch(c) {
    const ctl = new AbortController();
    let at = c.at;
    if (at === 'random') {
        at = points[c.seed % points.length];
    }
    const r = { at, status: null, request_id: null, bytes: 0, saw_image: false,
                aborted: false };
    if (at === 'before') {
        setTimeout(() => { r.aborted = true; ctl.abort(); }, 500);
    }
    try {
        const res = await fetch(base + c.path, {
            method: 'POST', signal: ctl.signal,
            headers: { 'content-type': 'application/json', ...c.headers },
            body: JSON.stringify(c.body) });
        r.status = res.status;
        r.request_id = res.headers.get('x-imgbill-request-id');
        if (at === 'headers') {
            ctl.abort();
            r.aborted = true;
            out[c.name] = r;
            return;
        }
        const reader = res.body.getReader();
        const dec = new TextDecoder('latin1');
        let text = '';
        for (;;) {
            const { value, done } = await reader.read();
            if (done) {
                break;
            }
            text += dec.decode(value, { stream: true });
            r.bytes = text.length;
            const img = image(text);
            r.saw_image = img !== null;
            const stop =
                (at === 'text' && /Here is your image|"text":"Here/.test(text) && !img)
                || (at === 'mid-image' && img && img.end < 0
                    && text.length > img.at + 65536)
                || (at === 'image' && img && img.end >= 0)
                || (at === 'usage' && /"usage":\{"prompt_tokens"/.test(text));
            if (stop) {
                ctl.abort();
                r.aborted = true;
                break;
            }
        }
    } catch (e) {
        failed(r, e);
    }
    out[c.name] = r;
}

// an abort the client made is no failure
function failed(r, e) {
    if (!r.aborted) {
        r.error = String(e.message).slice(0, 200);
    }
}

async function bySdk(c) {
    const client = new OpenAI({ apiKey: c.key, baseURL: base + c.path,
                                maxRetries: 0 });
    const r = { at: c.at, request_id: null, chunks: 0, saw_image: false,
                aborted: false };
    try {
        const { data, response } = await client.chat.completions
            .create({ ...c.body, stream: true }).withResponse();
        r.request_id = response.headers.get('x-imgbill-request-id');
        for await (const chunk of data) {
            r.chunks++;
            const d = (chunk.choices && chunk.choices[0]
                       && chunk.choices[0].delta) || {};
            if ((d.images || []).length) {
                r.saw_image = true;
                data.controller.abort();
                r.aborted = true;
                break;
            }
        }
    } catch (e) {
        failed(r, e);
    }
    out[c.name] = r;
}

await Promise.all(cases.map(c => (c.at === 'sdk-image' ? bySdk(c) : byFetch(c))));
console.log(JSON.stringify(out));
