// OpenAI's Images API uploads through the official SDK, as a customer's
// code sends them: client.images.edit() with one image, with two (the SDK
// sends an array as "image[]") and with a mask, all through toFile();
// client.images.createVariation() on /fast/; and a browser's own FormData
// posted with fetch().
// Usage: node images-edit.mjs BASE_URL KEY
// prints one JSON object: per case what the client got and the charge it
// was told (t/31-images-edits.t).
import OpenAI, { toFile } from 'openai';

const [base, key] = process.argv.slice(2);
const out = {};

// a PNG's signature and some bytes: the relay counts them, never reads them
function png(n, fill) {
    const b = Buffer.alloc(n, fill);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b);
    return b;
}

function failure(e) {
    return { status: e.status ?? null, code: e.code ?? null,
             error_class: e.constructor.name,
             error: String(e.message).slice(0, 300) };
}

async function call(name, baseURL, method, params) {
    const client = new OpenAI({ apiKey: key, baseURL, maxRetries: 0 });
    try {
        const { data, response } = await client.images[method](params)
            .withResponse();
        out[name] = {
            status: response.status,
            images: data.data.length,
            usage: data.usage ?? null,
            charge: response.headers.get('x-imgbill-charge'),
            balance: response.headers.get('x-imgbill-balance'),
        };
    } catch (e) {
        out[name] = failure(e);
    }
}

const file = (n, fill, name) => toFile(png(n, fill), name,
                                       { type: 'image/png' });

await call('one', base + '/v1', 'edit', {
    model: 'gpt-image-1', prompt: 'a fox in the snow',
    image: await file(40000, 1, 'fox.png'),
});
await call('two', base + '/v1', 'edit', {
    model: 'gpt-image-1', prompt: 'a fox and a hare', n: 2,
    image: [await file(30000, 2, 'fox.png'), await file(20000, 13, 'hare.png')],
});
await call('mask', base + '/v1', 'edit', {
    model: 'gpt-image-1', prompt: 'a fox, the sky replaced',
    image: await file(30000, 3, 'fox.png'),
    mask: await file(10000, 0, 'mask.png'),
});
await call('variation', base + '/fast/v1', 'createVariation', {
    model: 'dall-e-2', n: 2, size: '512x512',
    image: await file(30000, 4, 'fox.png'),
});

// a browser's FormData, as a web client builds it
{
    const form = new FormData();
    form.append('model', 'dall-e-2');
    form.append('n', '1');
    form.append('image', new Blob([png(5000, 6)], { type: 'image/png' }),
                'fox.png');
    const res = await fetch(base + '/fast/v1/images/variations', {
        method: 'POST', body: form,
        headers: { Authorization: 'Bearer ' + key },
    });
    const body = await res.json();
    out.formdata = { status: res.status, images: body.data?.length ?? 0,
                     charge: res.headers.get('x-imgbill-charge') };
}

console.log(JSON.stringify(out));
