// The official OpenAI SDK streaming an image through the relay, as a
// customer's code does: chat.completions.create({..., stream: true}) and
// iterate.  Usage: node stream.mjs BASE_URL KEY_PLAIN KEY_USAGE KEY_FAST
// prints one JSON object: per case what the client saw (t/87-sdk-stream.t).
import OpenAI from 'openai';

const [base, keyPlain, keyUsage, keyFast] = process.argv.slice(2);
const out = {};
const messages = [{ role: 'user', content: 'a red fox in the snow, woodcut' }];

// what one streamed call showed its client
async function stream(name, key, path, extra) {
    const client = new OpenAI({ apiKey: key, baseURL: base + path, maxRetries: 0 });
    try {
        const { data, response } = await client.chat.completions
            .create({ model: 'gemini-2.5-flash-image', messages, stream: true, ...extra })
            .withResponse();
        const r = {
            status: response.status,
            content_type: response.headers.get('content-type'),
            request_id: response.headers.get('x-imgbill-request-id'),
            chunks: 0, text: '', images: [], finish_reason: null,
            usage_chunks: 0, null_usage_chunks: 0, last: null,
        };
        for await (const chunk of data) {
            r.chunks++;
            const c = chunk.choices && chunk.choices[0];
            const d = (c && c.delta) || {};
            if (typeof d.content === 'string') r.text += d.content;
            for (const img of d.images || []) {
                const url = (img.image_url && img.image_url.url) || '';
                r.images.push({ prefix: url.slice(0, 22), length: url.length });
            }
            if (c && c.finish_reason) r.finish_reason = c.finish_reason;
            if (chunk.usage) r.usage_chunks++;
            else if ('usage' in chunk) r.null_usage_chunks++;
            r.last = { choices: (chunk.choices || []).length, usage: chunk.usage || null,
                       cost_type: chunk.usage ? typeof chunk.usage.cost : null };
        }
        out[name] = r;
    } catch (e) {
        out[name] = { error: String(e.message).slice(0, 300), status: e.status,
                      code: e.code, error_class: e.constructor.name };
    }
}

await stream('plain', keyPlain, '/v1', {});
await stream('usage', keyUsage, '/v1', { stream_options: { include_usage: true } });
await stream('fast', keyFast, '/fast/v1', {});
await stream('bad_key', 'sk-nobody', '/v1', {});
console.log(JSON.stringify(out));
