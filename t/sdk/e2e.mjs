// The official OpenAI SDK against the relay: what a customer's code sees.
// Usage: node e2e.mjs BASE_URL GOOD_KEY POOR_KEY; prints one JSON object.
import OpenAI from 'openai';

const [base, goodKey, poorKey] = process.argv.slice(2);
const out = {};
const prompt = [{ role: 'user', content: 'a koi pond at dawn, watercolor' }];

async function call(name, key, path, model) {
    const client = new OpenAI({ apiKey: key, baseURL: base + path, maxRetries: 0 });
    try {
        const { data, response } = await client.chat.completions
            .create({ model, messages: prompt })
            .withResponse();
        const msg = data.choices[0].message;
        out[name] = {
            status: response.status,
            charge: response.headers.get('x-imgbill-charge'),
            balance: response.headers.get('x-imgbill-balance'),
            request_id: response.headers.get('x-imgbill-request-id'),
            image: (msg.images && msg.images[0] && msg.images[0].image_url.url.slice(0, 22)) || null,
            prompt_tokens: data.usage.prompt_tokens,
            completion_tokens: data.usage.completion_tokens,
        };
    } catch (e) {
        out[name] = { status: e.status, code: e.code, type: e.type,
                      message: e.message, error_class: e.constructor.name };
    }
}

await call('metered', goodKey, '/v1', 'gemini-2.5-flash-image');
await call('fast', goodKey, '/fast/v1', 'gemini-3-pro-image-preview');
await call('bad_key', 'sk-nobody', '/v1', 'gemini-2.5-flash-image');
await call('poor', poorKey, '/v1', 'gemini-3-pro-image-preview');
await call('unpriced', goodKey, '/v1', 'dall-e-3');
console.log(JSON.stringify(out));
