// Several images in one call, through the official SDKs: OpenAI's
// chat.completions.create({n}) whole and streamed, and Google's
// generateContent / generateContentStream with config.candidateCount.
// Usage: node images.mjs BASE_URL KEY_OPENAI KEY_OPENAI_STREAM KEY_GEMINI
//        KEY_GEMINI_STREAM
// prints one JSON object: per case the images the client got and the
// charge it was told (t/24-images.t).
import OpenAI from 'openai';
import { GoogleGenAI } from '@google/genai';

const [base, keyOne, keyStream, keyGemini, keyGeminiStream] =
    process.argv.slice(2);
const out = {};
const model = 'gemini-2.5-flash-image';
const messages = [{ role: 'user', content: 'three foxes, woodcut' }];

function failure(e) {
    return { error: String(e.message).slice(0, 300), status: e.status ?? null };
}

async function openaiOne() {
    const client = new OpenAI({ apiKey: keyOne, baseURL: base + '/fast/v1',
                                maxRetries: 0 });
    try {
        const { data, response } = await client.chat.completions
            .create({ model, messages, n: 3 }).withResponse();
        out.openai = {
            choices: data.choices.map(c => (c.message.images || []).length),
            charge: response.headers.get('x-imgbill-charge'),
        };
    } catch (e) {
        out.openai = failure(e);
    }
}

async function openaiStream() {
    const client = new OpenAI({ apiKey: keyStream, baseURL: base + '/v1',
                                maxRetries: 0 });
    try {
        const stream = await client.chat.completions.create({
            model, messages, n: 2, stream: true,
            stream_options: { include_usage: true } });
        const images = {};
        let usage = null;
        for await (const chunk of stream) {
            for (const c of chunk.choices || []) {
                images[c.index] = (images[c.index] || 0)
                                  + ((c.delta && c.delta.images) || []).length;
            }
            if (chunk.usage) usage = chunk.usage;
        }
        out.openai_stream = { images, usage };
    } catch (e) {
        out.openai_stream = failure(e);
    }
}

function candidateImages(resp) {
    return (resp.candidates || []).map(c => ({
        index: c.index ?? 0,
        images: ((c.content && c.content.parts) || [])
                    .filter(p => p.inlineData).length,
    }));
}

async function geminiOne() {
    const ai = new GoogleGenAI({ apiKey: keyGemini,
                                 httpOptions: { baseUrl: base } });
    try {
        const resp = await ai.models.generateContent({
            model, contents: 'two cats', config: { candidateCount: 2 } });
        const h = (resp.sdkHttpResponse && resp.sdkHttpResponse.headers) || {};
        out.gemini = { candidates: candidateImages(resp),
                       charge: h['x-imgbill-charge'] ?? null,
                       usage: resp.usageMetadata || null };
    } catch (e) {
        out.gemini = failure(e);
    }
}

async function geminiStream() {
    const ai = new GoogleGenAI({ apiKey: keyGeminiStream,
                                 httpOptions: { baseUrl: base + '/fast' } });
    try {
        const images = {};
        for await (const chunk of await ai.models.generateContentStream({
                model, contents: 'two cats', config: { candidateCount: 2 } })) {
            for (const c of candidateImages(chunk)) {
                images[c.index] = (images[c.index] || 0) + c.images;
            }
        }
        out.gemini_stream = { images };
    } catch (e) {
        out.gemini_stream = failure(e);
    }
}

await openaiOne();
await openaiStream();
await geminiOne();
await geminiStream();
console.log(JSON.stringify(out));
