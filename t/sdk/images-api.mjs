// OpenAI's Images API through the official SDK, as a customer's code calls
// it: client.images.generate() on the metered channel (gpt-image-1) and on
// /fast/ (dall-e-3, Seedream with n); streams: images-stream.mjs.
// Usage: node images-api.mjs BASE_URL KEY
// prints one JSON object: per case what the client got and the charge it
// was told (t/25-images-api.t).
import OpenAI from 'openai';

const [base, key] = process.argv.slice(2);
const out = {};

function failure(e) {
    return { status: e.status ?? null, code: e.code ?? null,
             error_class: e.constructor.name,
             error: String(e.message).slice(0, 300) };
}

async function generate(name, baseURL, params) {
    const client = new OpenAI({ apiKey: key, baseURL, maxRetries: 0 });
    try {
        const { data, response } = await client.images.generate(params)
            .withResponse();
        out[name] = {
            status: response.status,
            images: data.data.length,
            b64: data.data.filter(d => d.b64_json).length,
            urls: data.data.filter(d => d.url).length,
            usage: data.usage ?? null,
            charge: response.headers.get('x-imgbill-charge'),
            balance: response.headers.get('x-imgbill-balance'),
        };
    } catch (e) {
        out[name] = failure(e);
    }
}

await generate('gpt', base + '/v1', { model: 'gpt-image-1', prompt: 'a fox' });
await generate('dalle', base + '/fast/v1',
               { model: 'dall-e-3', prompt: 'a fox', size: '1024x1024' });
await generate('seedream', base + '/fast/v1',
               { model: 'doubao-seedream-4-0', prompt: 'foxes', n: 2 });
console.log(JSON.stringify(out));
