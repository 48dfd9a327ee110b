
/*
 * libFuzzer target: the reply scanner (ngx_http_imgbill_scan.c), checked
 * against its own contract and, differentially, against jansson 2.14.
 * Built by t/fuzz/run against the nginx tree that scripts/build configured,
 * with t/stub/ngx_stubs.c.
 *
 * Every input is scanned in both dialects, OpenAI's and Gemini's: the
 * JSON verdict must not depend on the dialect, and a mutation of a seed of
 * either dialect is read as both.  The scanner says json, image, usage,
 * two counts, usage_key, error, finished, no_choices and usage_at; jansson
 * parses the same bytes into a tree, and the tree says what those verdicts
 * should have been.  The same bytes are also fed to the scanner in pieces,
 * cut where a generator seeded with the input says (so a reproducer cuts
 * them the same way), and every verdict must be the one of the whole
 * buffer.  Where usage_at points, "cost" is put in as the filter does: the
 * reply must stay one object, whose usage is the one before, plus "cost".
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

#include "ngx_http_imgbill_api.h"


/* the APIs' reply dialects, by the index the cases give them */
extern ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api;

#define DIALECT(d)  ((d) ? ngx_http_imgbill_gemini_api.dialect               \
                         : ngx_http_imgbill_openai_api.dialect)

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


#define OPENAI  0
#define GEMINI  1

#define COST    "\"cost\":0.2465"


/* the bytes, and jansson's two readings of them */
typedef struct {
    u_char        *buf;
    size_t         size;
    int            escaped;     /* a backslash anywhere */
    json_t        *lax;
    json_t        *strict;
    json_error_t   lax_err;
    json_error_t   strict_err;
} imgbill_fuzz_input_t;


/* where a finding is, on jansson's tree (see imgbill_fuzz_any) */
typedef struct {
    ngx_uint_t     dialect;
    const char    *path;
    int          (*test)(json_t *v);
} imgbill_fuzz_path_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void imgbill_fuzz_dialect(imgbill_fuzz_input_t *in,
    ngx_uint_t dialect, ngx_http_imgbill_scan_t *res);
static void imgbill_fuzz_contract(ngx_uint_t dialect, size_t size,
    ngx_http_imgbill_scan_t *res);
static void imgbill_fuzz_strict(imgbill_fuzz_input_t *in,
    ngx_uint_t dialect, ngx_http_imgbill_scan_t *res);
static void imgbill_fuzz_usage_at(imgbill_fuzz_input_t *in,
    ngx_http_imgbill_scan_t *res);
static void imgbill_fuzz_fail(ngx_http_imgbill_scan_t *res, const char *fmt,
    ...);
static void imgbill_fuzz_pieces(u_char *buf, size_t size,
    ngx_uint_t dialect, ngx_http_imgbill_scan_t *whole);
static int imgbill_fuzz_exempt(json_error_t *err);
static size_t imgbill_fuzz_depth(json_t *v);
static int imgbill_fuzz_usage(json_t *root, ngx_uint_t dialect,
    json_int_t *pt, json_int_t *ct, int *zero);
static int imgbill_fuzz_count(json_t *usage, const char *name,
    json_int_t *value);
static int imgbill_fuzz_any(json_t *v, const char *path,
    int (*test)(json_t *v));
static int imgbill_fuzz_string(json_t *v);
static int imgbill_fuzz_named(json_t *v);
static int imgbill_fuzz_text(json_t *v);
static int imgbill_fuzz_mime(json_t *v);
static int imgbill_fuzz_find(json_t *root, ngx_uint_t dialect,
    imgbill_fuzz_path_t *p);
static void imgbill_fuzz_images_of(json_t *root, ngx_uint_t dialect,
    ngx_http_imgbill_scan_t *res);


/*
 * Where the scanner looks for an image: in OpenAI's dialect, a choice's
 * message (or a chunk's delta) with images[] holding a string, an object
 * or an array, content[].image_url being one of those, or content, a
 * string, naming a data URL or a markdown image; in Gemini's, a part of a
 * candidate's content whose inline data has an image MIME type, each
 * field in either spelling.
 */

static imgbill_fuzz_path_t  imgbill_fuzz_images[] = {
    { OPENAI, "choices[].message.images[]", imgbill_fuzz_named },
    { OPENAI, "choices[].delta.images[]", imgbill_fuzz_named },
    { OPENAI, "choices[].message.content[].image_url", imgbill_fuzz_named },
    { OPENAI, "choices[].delta.content[].image_url", imgbill_fuzz_named },
    { OPENAI, "choices[].message.content", imgbill_fuzz_text },
    { OPENAI, "choices[].delta.content", imgbill_fuzz_text },
    { GEMINI, "candidates[].content.parts[].inlineData.mimeType",
      imgbill_fuzz_mime },
    { GEMINI, "candidates[].content.parts[].inlineData.mime_type",
      imgbill_fuzz_mime },
    { GEMINI, "candidates[].content.parts[].inline_data.mimeType",
      imgbill_fuzz_mime },
    { GEMINI, "candidates[].content.parts[].inline_data.mime_type",
      imgbill_fuzz_mime },
    { 0, NULL, NULL }
};


static imgbill_fuzz_path_t  imgbill_fuzz_finish[] = {
    { OPENAI, "choices[].finish_reason", imgbill_fuzz_string },
    { GEMINI, "candidates[].finishReason", imgbill_fuzz_string },
    { 0, NULL, NULL }
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    imgbill_fuzz_input_t     in;
    ngx_http_imgbill_scan_t  openai, gemini;

    /*
     * An exact-size heap copy: a read one byte past the reply is an ASan
     * error, as it would be a read past nginx's buffer.
     */

    in.buf = malloc(size ? size : 1);
    if (in.buf == NULL) {
        abort();
    }

    memcpy(in.buf, data, size);
    in.size = size;
    in.escaped = memchr(in.buf, '\\', size) != NULL;

    /*
     * The lax parse: JSON_ALLOW_NUL, because the scanner, like RFC 8259,
     * takes "\u0000" in a string; duplicate keys allowed (the last wins),
     * as most clients read them.  The EOF check stays on: the scanner
     * rejects anything after the object too.
     *
     * The strict parse rejects duplicate keys, which the scanner handles
     * its own way (two top-level usage keys, or a count given twice, make
     * the usage unknown; elsewhere the scanner looks at every copy where
     * jansson keeps the last).  Without duplicates the two must agree
     * exactly.
     */

    in.lax = json_loadb((const char *) in.buf, size, JSON_ALLOW_NUL,
                        &in.lax_err);
    in.strict = NULL;

    if (in.lax != NULL) {
        in.strict = json_loadb((const char *) in.buf, size,
                               JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES,
                               &in.strict_err);
    }

    imgbill_fuzz_dialect(&in, OPENAI, &openai);
    imgbill_fuzz_dialect(&in, GEMINI, &gemini);

    if (openai.json != gemini.json) {
        imgbill_fuzz_fail(&gemini, "json %u in OpenAI's dialect",
                          (unsigned) openai.json);
    }

    json_decref(in.strict);
    json_decref(in.lax);
    free(in.buf);

    return 0;
}


static void
imgbill_fuzz_dialect(imgbill_fuzz_input_t *in, ngx_uint_t dialect,
    ngx_http_imgbill_scan_t *res)
{
    int         zero;
    json_int_t  pt, ct;

    ngx_http_imgbill_scan(in->buf, in->buf + in->size, DIALECT(dialect), res);

    imgbill_fuzz_pieces(in->buf, in->size, dialect, res);

#ifdef IMGBILL_FUZZ_SELFTEST
    /* a plausible miscount: only the comparison with jansson can see it */
    if (res->usage && res->prompt_tokens < NGX_HTTP_IMGBILL_TOKENS_MAX) {
        res->prompt_tokens++;
    }
#endif

    imgbill_fuzz_contract(dialect, in->size, res);

    if (in->lax == NULL) {
        if (res->json && !imgbill_fuzz_exempt(&in->lax_err)) {
            imgbill_fuzz_fail(res, "json, but jansson says: %s (code %d)",
                              in->lax_err.text,
                              (int) json_error_code(&in->lax_err));
        }

        return;
    }

    if (res->json && !json_is_object(in->lax)) {
        imgbill_fuzz_fail(res, "json, but jansson parses a non-object");
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

    if (!res->json
        && json_is_object(in->lax)
        && memchr(in->buf, '\0', in->size) == NULL
        && imgbill_fuzz_depth(in->lax) <= NGX_HTTP_IMGBILL_SCAN_DEPTH)
    {
        imgbill_fuzz_fail(res, "jansson parses an object, json is 0");
    }

    if (!res->json) {
        return;
    }

    /*
     * A usage the scanner believes is the one a client sees.  The scanner
     * takes it only when the usage and each count occur once, so jansson's
     * "last wins" cannot pick another one.
     */

    if (res->usage
        && (!imgbill_fuzz_usage(in->lax, dialect, &pt, &ct, &zero)
            || pt != res->prompt_tokens || ct != res->completion_tokens))
    {
        imgbill_fuzz_fail(res, "jansson's usage differs");
    }

    if (dialect == OPENAI) {
        imgbill_fuzz_usage_at(in, res);
    }

    /* a parse that jansson accepts laxly fails strictly only on a
       duplicate key */

    if (in->strict == NULL) {
        if (json_error_code(&in->strict_err) != json_error_duplicate_key) {
            imgbill_fuzz_fail(res, "strict jansson: %s",
                              in->strict_err.text);
        }

        return;
    }

    imgbill_fuzz_strict(in, dialect, res);
}


/* what the filter relies on, for any input at all */

static void
imgbill_fuzz_contract(ngx_uint_t dialect, size_t size,
    ngx_http_imgbill_scan_t *res)
{
    if (res->usage && !(res->json && res->usage_key)) {
        imgbill_fuzz_fail(res, "usage without json or a usage key");
    }

    if (res->usage
        && (res->prompt_tokens < 0
            || res->prompt_tokens > NGX_HTTP_IMGBILL_TOKENS_MAX
            || res->completion_tokens < 0
            || res->completion_tokens > NGX_HTTP_IMGBILL_TOKENS_MAX))
    {
        imgbill_fuzz_fail(res, "implausible count");
    }

    /* the filter copies the counts of every JSON reply into the log */

    if (res->json && !res->usage
        && (res->prompt_tokens != -1 || res->completion_tokens != -1))
    {
        imgbill_fuzz_fail(res, "counts without usage");
    }

    if (res->usage_at != 0
        && (!res->json || !res->usage_key || dialect != OPENAI
            || res->usage_at > size))
    {
        imgbill_fuzz_fail(res, "usage_at %zu out of place", res->usage_at);
    }

    if (res->no_choices && dialect != OPENAI) {
        imgbill_fuzz_fail(res, "no_choices in Gemini's dialect");
    }

    /* an image shows at a byte of the reply, in a choice that carries it */

    if ((res->image_at != 0) != res->image || res->image_at > size
        || (res->image && res->images == 0) || (res->images != 0) != res->image
        || (res->indexes != 0) != res->image)
    {
        imgbill_fuzz_fail(res, "images %lu at %zu out of place",
                          (unsigned long) res->images, res->image_at);
    }
}


/*
 * On the strict tree, without duplicate keys, the two must agree on every
 * finding.  Exception: the scanner compares keys as sent; a key spelled
 * with escapes is none of the keys it knows (and one where a usage or a
 * count could be makes the usage ambiguous), and it looks for "data:image/"
 * (or "data:image\/"), "![" and "image/" in text as sent, so that other
 * escapes hide them from it.  With a backslash in the input, the scanner
 * may then see less than jansson (no usage, no image: free, the safe
 * side), never more.
 */

static void
imgbill_fuzz_strict(imgbill_fuzz_input_t *in, ngx_uint_t dialect,
    ngx_http_imgbill_scan_t *res)
{
    int          zero;
    json_t      *v, *c;
    ngx_uint_t   i;
    json_int_t   pt, ct;
    const char  *usage;
    struct {
        int          jansson;
        int          scanner;
        const char  *name;
    }            f[5];

    usage = (dialect == OPENAI) ? "usage" : "usageMetadata";

    /*
     * Exception: "-0" is the integer 0 to jansson; to the scanner a signed
     * count is a negative one, and a negative count is no count.
     */

    if (!(in->escaped && !res->usage)
        && imgbill_fuzz_usage(in->strict, dialect, &pt, &ct, &zero)
        && !(zero && memmem(in->buf, in->size, "-0", 2) != NULL))
    {
        if (!res->usage
            || pt != res->prompt_tokens
            || ct != res->completion_tokens)
        {
            imgbill_fuzz_fail(res, "jansson finds usage %lld/%lld",
                              (long long) pt, (long long) ct);
        }
    }

    /* each finding: jansson's, the scanner's */

    v = json_object_get(in->strict, "error");
    c = json_object_get(in->strict, "choices");

    f[0].jansson = json_is_object(json_object_get(in->strict, usage));
    f[0].scanner = res->usage_key;
    f[0].name = "usage_key";
    f[1].jansson = (v != NULL && !json_is_null(v));
    f[1].scanner = res->error;
    f[1].name = "error";
    f[2].jansson = imgbill_fuzz_find(in->strict, dialect, imgbill_fuzz_finish);
    f[2].scanner = res->finished;
    f[2].name = "finished";
    f[3].jansson = (dialect == OPENAI && json_is_array(c)
                    && json_array_size(c) == 0);
    f[3].scanner = res->no_choices;
    f[3].name = "no_choices";
    f[4].jansson = imgbill_fuzz_find(in->strict, dialect, imgbill_fuzz_images);
    f[4].scanner = res->image;
    f[4].name = "image";

    for (i = 0; i < 5; i++) {
        if (in->escaped) {
            f[i].jansson &= f[i].scanner;
        }

        if (f[i].jansson != f[i].scanner) {
            imgbill_fuzz_fail(res, "jansson finds %s %d", f[i].name,
                              f[i].jansson);
        }
    }

    /* each choice carrying an image counts once, at its index */

    if (!in->escaped) {
        imgbill_fuzz_images_of(in->strict, dialect, res);
    }

    /* one usage object, none beside it: "cost" has its place */

    if (dialect == OPENAI && f[0].jansson && !in->escaped
        && res->usage_at == 0)
    {
        imgbill_fuzz_fail(res, "a usage, but no usage_at");
    }
}


/*
 * usage_at, on the lax tree: the byte before it opens the object that is
 * the reply's usage, and "cost" put in there, as the filter does, leaves
 * one object whose usage is the one before with "cost" added, to jansson;
 * to the scanner, the reply reads the same.
 */

static void
imgbill_fuzz_usage_at(imgbill_fuzz_input_t *in, ngx_http_imgbill_scan_t *res)
{
    u_char                   *out;
    size_t                    at, len, i;
    json_t                   *usage, *from, *again, *cost;
    json_error_t              err;
    ngx_http_imgbill_scan_t   rescan;

    at = res->usage_at;

    if (at == 0) {
        return;
    }

    usage = json_object_get(in->lax, "usage");

    if (in->buf[at - 1] != '{' || !json_is_object(usage)) {
        imgbill_fuzz_fail(res, "usage_at %zu is no usage's '{'", at);
    }

    from = json_loadb((const char *) in->buf + at - 1, in->size - at + 1,
                      JSON_ALLOW_NUL | JSON_DISABLE_EOF_CHECK, &err);

    if (!json_equal(from, usage)) {
        imgbill_fuzz_fail(res, "the object at usage_at %zu is not the "
                          "usage", at);
    }

    json_decref(from);

    /* after white space, '}' closes an empty usage: no comma then */

    for (i = at; i < in->size && memchr(" \t\r\n", in->buf[i], 4); i++) {
        /* void */
    }

    len = (i < in->size && in->buf[i] == '}') ? sizeof(COST) - 1
                                                : sizeof(COST ",") - 1;

    out = malloc(in->size + len);
    if (out == NULL) {
        abort();
    }

    memcpy(out, in->buf, at);
    memcpy(out + at, COST ",", len);
    memcpy(out + at + len, in->buf + at, in->size - at);

    again = json_loadb((const char *) out, in->size + len, JSON_ALLOW_NUL,
                       &err);
    cost = json_object_get(json_object_get(again, "usage"), "cost");

    if (again == NULL
        || (json_object_get(usage, "cost") == NULL
            && (!json_is_real(cost) || json_real_value(cost) != 0.2465
                || json_object_size(json_object_get(again, "usage"))
                   != json_object_size(usage) + 1)))
    {
        imgbill_fuzz_fail(res, "\"cost\" at usage_at %zu: %s", at,
                          again ? "not the usage's" : err.text);
    }

    ngx_http_imgbill_scan(out, out + in->size + len, DIALECT(OPENAI),
                          &rescan);

    /* an image after the usage moved by what went in */
    if (rescan.image_at > at) {
        rescan.image_at -= len;
    }

    if (memcmp(&rescan, res, sizeof(ngx_http_imgbill_scan_t)) != 0) {
        imgbill_fuzz_fail(&rescan, "\"cost\" at usage_at %zu: the scanner "
                          "reads the reply otherwise", at);
    }

    json_decref(again);
    free(out);
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
            "completion %ld usage_key %u error %u finished %u "
            "no_choices %u usage_at %zu)\n",
            (unsigned) res->json, (unsigned) res->image,
            (unsigned) res->usage, (long) res->prompt_tokens,
            (long) res->completion_tokens, (unsigned) res->usage_key,
            (unsigned) res->error, (unsigned) res->finished,
            (unsigned) res->no_choices, res->usage_at);

    abort();
}


/*
 * The input fed again in pieces of 1 byte to all that is left, each an
 * exact-size heap copy (a read past a piece is an ASan error), the sizes
 * drawn by xorshift seeded with the input's FNV-1a hash.  Feeding stops
 * at NGX_ERROR, as a caller may; the verdict must be the whole buffer's.
 */

static void
imgbill_fuzz_pieces(u_char *buf, size_t size, ngx_uint_t dialect,
    ngx_http_imgbill_scan_t *whole)
{
    static size_t               scales[] = { 1, 2, 8, 64, 4096, 65536 };
    u_char                     *piece;
    size_t                      i, n;
    uint64_t                    r;
    ngx_int_t                   rc;
    ngx_http_imgbill_scan_t     res;
    ngx_http_imgbill_scanner_t  s;

    r = 14695981039346656037ULL ^ dialect;

    for (i = 0; i < size; i++) {
        r = (r ^ buf[i]) * 1099511628211ULL;
    }

    ngx_http_imgbill_scan_init(&s, DIALECT(dialect));
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

    /* every finding (finish() zeroes the whole, padding and all) */

    if (memcmp(&res, whole, sizeof(ngx_http_imgbill_scan_t)) != 0) {
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


/*
 * The usage a bill can be made of, on jansson's tree: OpenAI's "usage"
 * with prompt_tokens and completion_tokens, or Gemini's "usageMetadata"
 * with promptTokenCount and candidatesTokenCount, and thoughtsTokenCount
 * added to the output if it is there; each count, and the output, within
 * the cap.  zero: one of the counts is 0 (which "-0" would also be).
 */

static int
imgbill_fuzz_usage(json_t *root, ngx_uint_t dialect, json_int_t *pt,
    json_int_t *ct, int *zero)
{
    json_t      *usage;
    json_int_t   thoughts;

    thoughts = 0;

    if (dialect == OPENAI) {
        usage = json_object_get(root, "usage");

        if (!imgbill_fuzz_count(usage, "prompt_tokens", pt)
            || !imgbill_fuzz_count(usage, "completion_tokens", ct))
        {
            return 0;
        }

    } else {
        usage = json_object_get(root, "usageMetadata");

        if (!imgbill_fuzz_count(usage, "promptTokenCount", pt)
            || !imgbill_fuzz_count(usage, "candidatesTokenCount", ct)
            || (json_object_get(usage, "thoughtsTokenCount") != NULL
                && !imgbill_fuzz_count(usage, "thoughtsTokenCount",
                                       &thoughts)))
        {
            return 0;
        }
    }

    *zero = (*pt == 0 || *ct == 0 || thoughts == 0);
    *ct += thoughts;

    return *ct <= NGX_HTTP_IMGBILL_TOKENS_MAX;
}


/* an integer count within the cap */

static int
imgbill_fuzz_count(json_t *usage, const char *name, json_int_t *value)
{
    json_t  *v;

    v = json_object_get(usage, name);

    if (!json_is_integer(v)) {
        return 0;
    }

    *value = json_integer_value(v);

    return *value >= 0 && *value <= NGX_HTTP_IMGBILL_TOKENS_MAX;
}


/*
 * Whether any value at path in v passes test: path is keys joined by '.',
 * and "[]" after a key stands for each element of its array.  (jansson
 * answers NULL or nothing for a key of what is no object, or an element
 * of what is no array.)
 */

static int
imgbill_fuzz_any(json_t *v, const char *path, int (*test)(json_t *v))
{
    char         key[32];
    size_t       i, n;
    json_t      *e;

    if (*path == '\0') {
        return test(v);
    }

    if (*path == '[') {
        path += (path[2] == '.') ? 3 : 2;

        json_array_foreach(v, i, e) {
            if (imgbill_fuzz_any(e, path, test)) {
                return 1;
            }
        }

        return 0;
    }

    n = strcspn(path, ".[");
    memcpy(key, path, n);
    key[n] = '\0';
    path += n + (path[n] == '.');

    return imgbill_fuzz_any(json_object_get(v, key), path, test);
}


static int
imgbill_fuzz_string(json_t *v)
{
    return json_is_string(v);
}


/* an entry of images[], or an image_url: a URL, or an object naming one */

static int
imgbill_fuzz_named(json_t *v)
{
    return json_is_string(v) || json_is_object(v) || json_is_array(v);
}


/* the message text, decoded, as a client reads it */

static int
imgbill_fuzz_text(json_t *v)
{
    size_t       len;
    const char  *s;

    if (!json_is_string(v)) {
        return 0;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    return memmem(s, len, "data:image/", sizeof("data:image/") - 1) != NULL
           || memmem(s, len, "![", 2) != NULL;
}


/* an image's MIME type, in any case */

static int
imgbill_fuzz_mime(json_t *v)
{
    return json_is_string(v)
           && json_string_length(v) >= sizeof("image/") - 1
           && strncasecmp(json_string_value(v), "image/",
                          sizeof("image/") - 1) == 0;
}


/* whether any of the paths of a dialect passes its test */

static int
imgbill_fuzz_find(json_t *root, ngx_uint_t dialect, imgbill_fuzz_path_t *p)
{
    for ( /* void */ ; p->path != NULL; p++) {
        if (p->dialect == dialect && imgbill_fuzz_any(root, p->path, p->test))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The choices (candidates) that carry an image, one at a time in a reply
 * of their own, and the bit of each one's "index" (an integer, 0 if it
 * is none, the last bit past it).
 */

static void
imgbill_fuzz_images_of(json_t *root, ngx_uint_t dialect,
    ngx_http_imgbill_scan_t *res)
{
    size_t       i;
    json_t      *choices, *e, *one, *index;
    uint64_t     indexes;
    ngx_uint_t   images;
    json_int_t   n;
    const char  *name;

    name = (dialect == OPENAI) ? "choices" : "candidates";
    choices = json_object_get(root, name);

    images = 0;
    indexes = 0;

    json_array_foreach(choices, i, e) {
        one = json_pack("{s:[O]}", name, e);

        if (one != NULL && imgbill_fuzz_find(one, dialect, imgbill_fuzz_images))
        {
            index = json_object_get(e, "index");
            n = json_is_integer(index) ? json_integer_value(index) : 0;
            n = (n < 0) ? 0 : (n > 63) ? 63 : n;

            images++;
            indexes |= (uint64_t) 1 << n;
        }

        json_decref(one);
    }

    if (images != res->images || indexes != res->indexes) {
        imgbill_fuzz_fail(res, "jansson finds %lu images, indexes %#llx",
                          (unsigned long) images,
                          (unsigned long long) indexes);
    }
}
