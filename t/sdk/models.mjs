// The model lists through the official SDKs: OpenAI's models.list() and
// Google's models.list(), as Open WebUI and the Gemini SDK users call them.
// Usage: node models.mjs BASE_URL KEY; prints one JSON object.
import OpenAI from 'openai';
import { GoogleGenAI } from '@google/genai';

const [base, key] = process.argv.slice(2);
const out = {};

async function openai(name, path, apiKey) {
    const client = new OpenAI({ apiKey, baseURL: base + path, maxRetries: 0 });
    try {
        const ids = [];
        for await (const m of client.models.list()) {
            ids.push(m.id);
        }
        out[name] = { ids };
    } catch (e) {
        out[name] = { status: e.status, code: e.code };
    }
}

async function gemini(name, apiKey) {
    const ai = new GoogleGenAI({ apiKey, httpOptions: { baseUrl: base } });
    try {
        const names = [];
        const pager = await ai.models.list();
        for await (const m of pager) {
            names.push(m.name);
        }
        out[name] = { names };
    } catch (e) {
        out[name] = { status: e.status, message: String(e.message).slice(0, 200) };
    }
}

await openai('openai', '/v1', key);
await openai('openai_fast', '/fast/v1', key);
await openai('openai_bad', '/v1', 'sk-nobody');
await gemini('gemini', key);
await gemini('gemini_bad', 'sk-nobody');
console.log(JSON.stringify(out));
