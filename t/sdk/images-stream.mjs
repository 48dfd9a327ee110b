// OpenAI's Images API streamed, through the official SDK (5.x: the 4.x has
// no image streams), as a customer's code reads it: images.generate()
// with stream: true and partial_images: 2, each event as the SDK hands it.
// Usage: node images-stream.mjs BASE_URL KEY
// prints one JSON object: the events' types, the completed event's
// usage.cost and output tokens (t/34-images-stream.t).
import OpenAI from 'openai-v5';

const [base, key] = process.argv.slice(2);
const client = new OpenAI({ apiKey: key, baseURL: base + '/v1', maxRetries: 0 });
const out = { types: [] };

try {
    const stream = await client.images.generate({
        model: 'gpt-image-1', prompt: 'a fox', stream: true, partial_images: 2,
    });
    for await (const ev of stream) {
        out.types.push(ev.type);
        if (ev.type === 'image_generation.completed') {
            out.cost = ev.usage?.cost ?? null;
            out.output_tokens = ev.usage?.output_tokens ?? null;
            out.b64 = (ev.b64_json ?? '').length;
        }
    }
} catch (e) {
    out.error = String(e.message).slice(0, 300);
    out.status = e.status ?? null;
}
console.log(JSON.stringify(out));
