// Google's GenAI SDK (npm "@google/genai") generating an image through the
// relay: ai.models.generateContent() and generateContentStream(), with the
// SDK's defaults (apiVersion v1beta) and only httpOptions.baseUrl set.
// Usage: node gemini.mjs BASE_URL KEY_ONE KEY_STREAM
// prints one JSON object (t/87-sdk-stream.t).  Every request the SDK makes
// is recorded on the way out (a wrapper of the global fetch the SDK calls):
// its path and query, and in which header the key went.
import { GoogleGenAI } from '@google/genai';

const [base, keyOne, keyStream] = process.argv.slice(2);
const out = { sent: [] };
const model = 'gemini-2.5-flash-image';

const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
    const h = new Headers(init.headers || {});
    const u = new URL(String(url));
    const keyIn = [];
    for (const [k, v] of h) {
        if (v.includes(keyOne) || v.includes(keyStream) || v.includes('sk-nobody')) keyIn.push(k);
    }
    out.sent.push({ method: init.method || 'GET', path: u.pathname, query: u.search,
                    key_headers: keyIn });
    return realFetch(url, init);
};

// what a reply's parts hold
function parts(resp) {
    const r = { images: [], text: '' };
    for (const c of resp.candidates || []) {
        for (const p of (c.content && c.content.parts) || []) {
            if (p.inlineData) {
                r.images.push({ mime: p.inlineData.mimeType,
                                prefix: (p.inlineData.data || '').slice(0, 11),
                                length: (p.inlineData.data || '').length });
            }
            if (typeof p.text === 'string') r.text += p.text;
        }
    }
    return r;
}

function headers(resp) {
    const h = (resp.sdkHttpResponse && resp.sdkHttpResponse.headers) || {};
    return { charge: h['x-imgbill-charge'] ?? null, balance: h['x-imgbill-balance'] ?? null,
             request_id: h['x-imgbill-request-id'] ?? null };
}

function failure(e) {
    return { error: String(e.message).slice(0, 300), status: e.status ?? null };
}

async function one(name, key) {
    const ai = new GoogleGenAI({ apiKey: key, httpOptions: { baseUrl: base } });
    try {
        const resp = await ai.models.generateContent({ model, contents: 'draw a cat' });
        const p = parts(resp);
        out[name] = { ...p, ...headers(resp), usage: resp.usageMetadata || null };
    } catch (e) {
        out[name] = failure(e);
    }
}

async function stream(name, key) {
    const ai = new GoogleGenAI({ apiKey: key, httpOptions: { baseUrl: base } });
    try {
        const r = { chunks: 0, images: [], text: '', usage: [], request_id: null };
        for await (const chunk of await ai.models.generateContentStream({
                model, contents: 'draw a cat in the rain' })) {
            r.chunks++;
            const p = parts(chunk);
            r.images.push(...p.images);
            r.text += p.text;
            if (chunk.usageMetadata) r.usage.push(chunk.usageMetadata.candidatesTokenCount);
            r.request_id ??= headers(chunk).request_id;
        }
        out[name] = r;
    } catch (e) {
        out[name] = failure(e);
    }
}

await one('one', keyOne);
await stream('stream', keyStream);
await stream('stream_bad_key', 'sk-nobody');
console.log(JSON.stringify(out));
