
/*
 * libFuzzer target: the reply scanner (ngx_http_imgbill_scan.c), checked
 * against its own contract and, differentially, against jansson 2.14.
 * Built by t/fuzz/run against the nginx tree that scripts/build configured,
 * with t/stub/ngx_stubs.c.
 *
 * The scanner says json, image, usage and two counts; jansson parses the
 * same bytes into a tree, and the tree says what those verdicts should have
 * been.  The same bytes are also fed to the scanner in pieces, cut where a
 * generator seeded with the input says (so a reproducer cuts them the
 * same way), and every verdict must be the one of the whole buffer.
 *
 * Where the two may legitimately disagree, the exception is named below
 * with the reason; anything else is a bug in one of them, and the target
 * abort()s with a message on stderr.
 *
 * -DIMGBILL_FUZZ_SELFTEST builds a deliberately broken variant (a prompt
 * count reported one too high, yet in range), which t/95-fuzz.t expects
 * to fail on the seed corpus: a harness that cannot see that cannot see
 * anything.
 */


#include "ngx_http_imgbill_scan.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void imgbill_fuzz_fail(ngx_http_imgbill_scan_t *res, const char *fmt,
    ...);
static void imgbill_fuzz_pieces(u_char *buf, size_t size,
    ngx_http_imgbill_scan_t *whole);
static int imgbill_fuzz_exempt(json_error_t *err);
static size_t imgbill_fuzz_depth(json_t *v);
static int imgbill_fuzz_count(json_t *usage, const char *name,
    json_int_t *value);
static int imgbill_fuzz_image(json_t *root);
static int imgbill_fuzz_content_image(json_t *content);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                       escaped, image;
    u_char                   *buf;
    json_t                   *lax, *strict, *usage;
    json_int_t                pt, ct;
    json_error_t              err;
    ngx_http_imgbill_scan_t   res;

    /*
     * An exact-size heap copy: a read one byte past the reply is an ASan
     * error, as it would be a read past nginx's buffer.
     */

    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        abort();
    }

    memcpy(buf, data, size);

    ngx_http_imgbill_scan(buf, buf + size, &res);

    imgbill_fuzz_pieces(buf, size, &res);

#ifdef IMGBILL_FUZZ_SELFTEST
    /* a plausible miscount: only the comparison with jansson can see it */
    if (res.usage && res.prompt_tokens < NGX_HTTP_IMGBILL_TOKENS_MAX) {
        res.prompt_tokens++;
    }
#endif

    /* the contract the filter relies on, for any input at all */

    if (res.usage && !res.json) {
        imgbill_fuzz_fail(&res, "usage without json");
    }

    if (res.usage
        && (res.prompt_tokens < 0
            || res.prompt_tokens > NGX_HTTP_IMGBILL_TOKENS_MAX
            || res.completion_tokens < 0
            || res.completion_tokens > NGX_HTTP_IMGBILL_TOKENS_MAX))
    {
        imgbill_fuzz_fail(&res, "implausible count");
    }

    /* the filter copies the counts of every JSON reply into the log */

    if (res.json && !res.usage
        && (res.prompt_tokens != -1 || res.completion_tokens != -1))
    {
        imgbill_fuzz_fail(&res, "counts without usage");
    }

    /*
     * The lax parse: JSON_ALLOW_NUL, because the scanner, like RFC 8259,
     * takes "\u0000" in a string; duplicate keys allowed (the last wins),
     * as most clients read them.  The EOF check stays on: the scanner
     * rejects anything after the object too.
     */

    lax = json_loadb((const char *) buf, size, JSON_ALLOW_NUL, &err);

    if (lax == NULL) {
        if (res.json && !imgbill_fuzz_exempt(&err)) {
            imgbill_fuzz_fail(&res, "json, but jansson says: %s (code %d)",
                              err.text, (int) json_error_code(&err));
        }

        goto done;
    }

    if (res.json && !json_is_object(lax)) {
        imgbill_fuzz_fail(&res, "json, but jansson parses a non-object");
    }

    /*
     * Exceptions, where the scanner's "not JSON" is right or deliberate:
     *
     * jansson 2.14 drops one raw NUL byte that follows a number or a
     * literal ("{\"n\":1\0}" parses): its stream marks the end of its
     * one-byte look-ahead with NUL, so a NUL it puts back is lost.  A raw
     * NUL is never JSON.
     *
     * jansson takes 2048 levels of nesting, the scanner 128: a reply is
     * never that deep, and the scanner's stack is fixed.
     */

    if (!res.json
        && json_is_object(lax)
        && memchr(buf, '\0', size) == NULL
        && imgbill_fuzz_depth(lax) <= NGX_HTTP_IMGBILL_SCAN_DEPTH)
    {
        imgbill_fuzz_fail(&res, "jansson parses an object, json is 0");
    }

    if (!res.json) {
        goto lax_done;
    }

    /*
     * A usage the scanner believes is the one a client sees.  The scanner
     * takes it only when "usage" and each count occur once, so jansson's
     * "last wins" cannot pick another one.
     */

    if (res.usage) {
        usage = json_object_get(lax, "usage");

        if (!imgbill_fuzz_count(usage, "prompt_tokens", &pt)
            || !imgbill_fuzz_count(usage, "completion_tokens", &ct)
            || pt != res.prompt_tokens
            || ct != res.completion_tokens)
        {
            imgbill_fuzz_fail(&res, "jansson's usage differs");
        }
    }

    /*
     * The strict parse rejects duplicate keys, which the scanner handles
     * its own way (two top-level "usage" keys, or a count given twice,
     * make the usage unknown; elsewhere the scanner looks at every copy
     * where jansson keeps the last).  Without duplicates the two must agree
     * exactly on the usage and the image.  A parse that jansson accepts
     * laxly fails strictly only on a duplicate key.
     */

    strict = json_loadb((const char *) buf, size,
                        JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &err);

    if (strict == NULL) {
        if (json_error_code(&err) != json_error_duplicate_key) {
            imgbill_fuzz_fail(&res, "strict jansson: %s", err.text);
        }

        goto lax_done;
    }

    usage = json_object_get(strict, "usage");

    /*
     * Exception: "-0" is the integer 0 to jansson; to the scanner a signed
     * count is a negative one, and a negative count is no count.
     */

    /*
     * Exception: the scanner compares keys as sent; a key spelled with
     * escapes where "usage" or a count could be makes the usage ambiguous,
     * so a usage jansson decodes may be no usage to the scanner (free, the
     * safe side).  A usage the scanner does report is checked above.
     */

    escaped = memchr(buf, '\\', size) != NULL;

    if (!(escaped && !res.usage)
        && imgbill_fuzz_count(usage, "prompt_tokens", &pt)
        && imgbill_fuzz_count(usage, "completion_tokens", &ct)
        && pt >= 0 && pt <= NGX_HTTP_IMGBILL_TOKENS_MAX
        && ct >= 0 && ct <= NGX_HTTP_IMGBILL_TOKENS_MAX
        && !((pt == 0 || ct == 0) && memmem(buf, size, "-0", 2) != NULL))
    {
        if (!res.usage
            || pt != res.prompt_tokens
            || ct != res.completion_tokens)
        {
            imgbill_fuzz_fail(&res, "jansson finds usage %lld/%lld",
                              (long long) pt, (long long) ct);
        }
    }

    /*
     * Exception: the scanner looks for "data:image/" (or "data:image\/")
     * and "![" in the text as sent; other escapes of those characters
     * hide an image from it (free, the safe side), never the reverse.
     */

    image = imgbill_fuzz_image(strict);

    if (escaped && image && !res.image) {
        image = 0;
    }

    if ((unsigned) image != res.image) {
        imgbill_fuzz_fail(&res, "jansson finds %s image",
                          res.image ? "no" : "an");
    }

    json_decref(strict);

lax_done:

    json_decref(lax);

done:

    free(buf);

    return 0;
}


static void
imgbill_fuzz_fail(ngx_http_imgbill_scan_t *res, const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "scan_fuzz: invariant failed: ");

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fprintf(stderr, " (scanner: json %u image %u usage %u prompt %ld "
            "completion %ld)\n", (unsigned) res->json, (unsigned) res->image,
            (unsigned) res->usage, (long) res->prompt_tokens,
            (long) res->completion_tokens);

    abort();
}


/*
 * The input fed again in pieces of 1 byte to all that is left, each an
 * exact-size heap copy (a read past a piece is an ASan error), the sizes
 * drawn by xorshift seeded with the input's FNV-1a hash.  Feeding stops
 * at NGX_ERROR, as a caller may; the verdict must be the whole buffer's.
 */

static void
imgbill_fuzz_pieces(u_char *buf, size_t size, ngx_http_imgbill_scan_t *whole)
{
    static size_t               scales[] = { 1, 2, 8, 64, 4096, 65536 };
    u_char                     *piece;
    size_t                      i, n;
    uint64_t                    r;
    ngx_int_t                   rc;
    ngx_http_imgbill_scan_t     res;
    ngx_http_imgbill_scanner_t  s;

    r = 14695981039346656037ULL;

    for (i = 0; i < size; i++) {
        r = (r ^ buf[i]) * 1099511628211ULL;
    }

    ngx_http_imgbill_scan_init(&s);
    rc = NGX_OK;

    for (i = 0; i < size && rc == NGX_OK; i += n) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;

        n = 1 + (r >> 8) % scales[r % (sizeof(scales) / sizeof(size_t))];
        n = (n > size - i) ? size - i : n;

        piece = malloc(n);
        if (piece == NULL) {
            abort();
        }

        memcpy(piece, buf + i, n);
        rc = ngx_http_imgbill_scan_feed(&s, piece, piece + n);
        free(piece);
    }

    ngx_http_imgbill_scan_finish(&s, &res);

    if (rc == NGX_ERROR && whole->json) {
        imgbill_fuzz_fail(whole, "fed in pieces, NGX_ERROR at byte %zu",
                          i);
    }

    if (res.json != whole->json || res.image != whole->image
        || res.usage != whole->usage
        || res.prompt_tokens != whole->prompt_tokens
        || res.completion_tokens != whole->completion_tokens)
    {
        imgbill_fuzz_fail(&res, "fed in pieces, the verdict differs "
                          "from the whole buffer's");
    }
}


/*
 * What jansson rejects and the scanner may accept: the scanner checks the
 * JSON grammar, not what a string or a number means.
 */

static int
imgbill_fuzz_exempt(json_error_t *err)
{
    switch (json_error_code(err)) {

    /* the scanner does not decode UTF-8: a base64 image is ASCII, and
       the text of a reply is the upstream's business */
    case json_error_invalid_utf8:

    /* integers beyond long long, reals beyond double: valid JSON, and a
       count the scanner caps (and disbelieves) rather than overflows */
    case json_error_numeric_overflow:

    /* "\u0000" in a key: valid JSON that jansson cannot represent */
    case json_error_null_byte_in_key:
        return 1;

    /* a lone UTF-16 surrogate ("\uD83D" alone): the scanner checks that
       four hex digits follow "\u", not what they encode; jansson 2.14 has
       no error code of its own for it, only this message */
    case json_error_invalid_syntax:
        return strncmp(err->text, "invalid Unicode '",
                       sizeof("invalid Unicode '") - 1) == 0;

    default:
        return 0;
    }
}


/* containers nested, as the scanner's stack counts them */

static size_t
imgbill_fuzz_depth(json_t *v)
{
    size_t       i, d, max;
    json_t      *e;
    const char  *key;

    if (!json_is_object(v) && !json_is_array(v)) {
        return 0;
    }

    max = 0;

    if (json_is_object(v)) {
        json_object_foreach(v, key, e) {
            d = imgbill_fuzz_depth(e);
            max = (d > max) ? d : max;
        }

    } else {
        json_array_foreach(v, i, e) {
            d = imgbill_fuzz_depth(e);
            max = (d > max) ? d : max;
        }
    }

    return max + 1;
}


static int
imgbill_fuzz_count(json_t *usage, const char *name, json_int_t *value)
{
    json_t  *v;

    v = json_object_get(usage, name);

    if (!json_is_integer(v)) {
        return 0;
    }

    *value = json_integer_value(v);

    return 1;
}


/*
 * Where the scanner looks for an image, on jansson's tree:
 * choices[].message.images[] holding a string, an object or an array;
 * choices[].message.content[].image_url being one of those; or
 * choices[].message.content, a string, naming a data URL or a markdown
 * image.
 */

static int
imgbill_fuzz_image(json_t *root)
{
    size_t   i, j;
    json_t  *choices, *choice, *message, *list, *v;

    choices = json_object_get(root, "choices");

    json_array_foreach(choices, i, choice) {
        message = json_object_get(choice, "message");

        if (!json_is_object(message)) {
            continue;
        }

        list = json_object_get(message, "images");

        json_array_foreach(list, j, v) {
            if (json_is_string(v) || json_is_object(v) || json_is_array(v)) {
                return 1;
            }
        }

        list = json_object_get(message, "content");

        if (imgbill_fuzz_content_image(list)) {
            return 1;
        }

        json_array_foreach(list, j, v) {
            if (!json_is_object(v)) {
                continue;
            }

            v = json_object_get(v, "image_url");

            if (json_is_string(v) || json_is_object(v) || json_is_array(v)) {
                return 1;
            }
        }
    }

    return 0;
}


/* the message text, decoded, as a client reads it */

static int
imgbill_fuzz_content_image(json_t *content)
{
    size_t       len;
    const char  *s;

    if (!json_is_string(content)) {
        return 0;
    }

    s = json_string_value(content);
    len = json_string_length(content);

    return memmem(s, len, "data:image/", sizeof("data:image/") - 1) != NULL
           || memmem(s, len, "![", 2) != NULL;
}
