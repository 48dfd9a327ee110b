
/*
 * libFuzzer target: the request validator (ngx_http_imgbill_request.c).
 * Built by t/fuzz/run against the nginx tree that scripts/build configured,
 * with the libnginx functions the validator calls from t/stub/ngx_stubs.c.
 *
 * An input is one byte of flags, two bytes of image_limit (little endian,
 * 0..64 KiB, so that small images already exceed it), then the client's
 * body.  Flag bit 0 picks the API (0 OpenAI, 1 Gemini); bits 1-2 and 3-4
 * pick a prefix and a suffix put around the body to make a URI for
 * ngx_http_imgbill_gemini_target(); bits 5-7 the size of the pieces the
 * body is also fed in (1 to 128 bytes).  The verdict and the findings are
 * checked against the validator's contract (ngx_http_imgbill_module.h)
 * and against a reference walk of jansson's tree written apart from the
 * validator; a failure abort()s with a message on stderr, a leaked tree is
 * LeakSanitizer's to report.
 */


#include "ngx_http_imgbill_api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct {
    size_t   images;        /* images seen, up to the first one too large */
    size_t   image_bytes;   /* their string lengths */
    size_t   image_size;    /* the last one's decoded size */
    size_t   limit;
    int      too_large;
} imgbill_fuzz_walk_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void imgbill_fuzz_check(ngx_uint_t api, u_char *body, size_t len,
    size_t limit, size_t piece);
static void imgbill_fuzz_pieces(ngx_uint_t api, u_char *body, size_t len,
    size_t limit, size_t piece, ngx_int_t rc,
    ngx_http_imgbill_request_t *whole);
static void imgbill_fuzz_common(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    u_char *body, size_t len);
static void imgbill_fuzz_openai(ngx_int_t rc, ngx_http_imgbill_request_t *req);
static void imgbill_fuzz_gemini(ngx_int_t rc, ngx_http_imgbill_request_t *req);
static void imgbill_fuzz_stream(ngx_uint_t api, ngx_int_t rc,
    ngx_http_imgbill_request_t *req);
static void imgbill_fuzz_images(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    imgbill_fuzz_walk_t *w, size_t len);
static void imgbill_fuzz_fail(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    const char *fmt, ...);
static void imgbill_fuzz_reading(ngx_int_t rc,
    ngx_http_imgbill_request_t *req);
static int imgbill_fuzz_collide(json_t *v, const char *key,
    const char *spelling);
static size_t imgbill_fuzz_fold(const char *key, char *buf, size_t size);
static void imgbill_fuzz_walk_openai(json_t *root, imgbill_fuzz_walk_t *w);
static void imgbill_fuzz_walk_gemini(json_t *root, imgbill_fuzz_walk_t *w);
static void imgbill_fuzz_walk_parts(json_t *parts, imgbill_fuzz_walk_t *w);
static void imgbill_fuzz_image(imgbill_fuzz_walk_t *w, json_t *s,
    size_t size);
static size_t imgbill_fuzz_url_size(const char *url, size_t len);
static size_t imgbill_fuzz_base64_size(const char *p, size_t n);
static int imgbill_fuzz_caseeq(const char *s, const char *lower, size_t n);
static void imgbill_fuzz_target(u_char flags, const u_char *body, size_t len);
static ngx_int_t imgbill_fuzz_target_ref(u_char *uri, size_t len,
    size_t *start, size_t *mlen, ngx_uint_t *stream);


/* the APIs, by the index the input's first byte gives them */
extern ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api;

#define OPENAI  0
#define GEMINI  1
#define API(a)  ((a) ? &ngx_http_imgbill_gemini_api                        \
                    : &ngx_http_imgbill_openai_api)

ngx_int_t ngx_http_imgbill_gemini_target(ngx_str_t *uri, ngx_str_t *model,
    ngx_uint_t *stream);


/* a verdict on a member of an API's own, told by the code it gives */

static int
imgbill_fuzz_is(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    ngx_int_t verdict, const char *code)
{
    return rc == verdict && req->code != NULL && strcmp(req->code, code) == 0;
}

#define NO_MODEL(rc, req)                                                    \
    imgbill_fuzz_is(rc, req, NGX_HTTP_IMGBILL_REQ_MISSING, "missing_model")
#define NO_CONTENTS(rc, req)                                                 \
    imgbill_fuzz_is(rc, req, NGX_HTTP_IMGBILL_REQ_MISSING, "missing_contents")
#define STREAM_OPTIONS(rc, req)                                              \
    imgbill_fuzz_is(rc, req, NGX_HTTP_IMGBILL_REQ_BAD_VALUE,                 \
                    "invalid_stream_options")


static const char  *imgbill_fuzz_prefix[] = {
    "", "/v1beta/models/", "/fast/v1beta/models/", "/v1/models/x/models/"
};

static const char  *imgbill_fuzz_suffix[] = {
    "", ":generateContent", ":streamGenerateContent", ":generateContent/"
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *body;
    size_t   len;

    if (size < 3) {
        return 0;
    }

    len = size - 3;

    /* an exact-size heap copy: a read past the body is an ASan error */

    body = malloc(len ? len : 1);
    if (body == NULL) {
        abort();
    }

    memcpy(body, data + 3, len);

    imgbill_fuzz_check(data[0] & 1, body, len, data[1] | (data[2] << 8),
                       (size_t) 1 << (data[0] >> 5));
    imgbill_fuzz_target(data[0], body, len);

    free(body);

    return 0;
}


static void
imgbill_fuzz_check(ngx_uint_t api, u_char *body, size_t len, size_t limit,
    size_t piece)
{
    json_t                      *ref, *root;
    ngx_int_t                    rc;
    json_error_t                 error;
    imgbill_fuzz_walk_t          w;
    ngx_http_imgbill_request_t   req;

    rc = ngx_http_imgbill_check_request(body, len, API(api), NULL, limit,
                                        &req);

    imgbill_fuzz_pieces(api, body, len, limit, piece, rc, &req);

    /*
     * The validator reads a compact copy of the body; the reference is
     * jansson's own reading of the body as it came, which the compactor
     * must refuse exactly when jansson does.
     */

    root = req.root;
    ref = (len && memchr(body, '\0', len) == NULL)
          ? json_loadb((char *) body, len, JSON_REJECT_DUPLICATES, &error)
          : NULL;

    if ((root == NULL) != (ref == NULL)
        && rc != NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX)
    {
        imgbill_fuzz_fail(rc, &req, "the compactor and jansson disagree: "
                          "%s", ref ? "jansson takes it" : error.text);
    }

    req.root = ref;

    imgbill_fuzz_common(rc, &req, body, len);

    if (api == GEMINI) {
        imgbill_fuzz_gemini(rc, &req);

    } else {
        imgbill_fuzz_openai(rc, &req);
    }

    imgbill_fuzz_stream(api, rc, &req);

    if (rc == NGX_HTTP_IMGBILL_REQ_OK
        || rc == NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE
        || STREAM_OPTIONS(rc, &req))
    {
        /* the reference: every image in walk order, up to the first one
           over the limit */

        memset(&w, 0, sizeof(imgbill_fuzz_walk_t));
        w.limit = limit;

        if (api == GEMINI) {
            imgbill_fuzz_walk_gemini(req.root, &w);

        } else {
            imgbill_fuzz_walk_openai(req.root, &w);
        }

        imgbill_fuzz_images(rc, &req, &w, len);
    }

    json_decref(ref);
    json_decref(root);
}


/*
 * The same body fed to the compactor in pieces of piece bytes, each an
 * exact-size heap copy (a read past a piece is an ASan error): every
 * finding must be the same as in one piece.
 */

static void
imgbill_fuzz_pieces(ngx_uint_t api, u_char *body, size_t len, size_t limit,
    size_t piece, ngx_int_t rc, ngx_http_imgbill_request_t *whole)
{
    u_char                      *copy;
    size_t                       at, n;
    ngx_int_t                    prc;
    ngx_http_imgbill_compact_t  *c;
    ngx_http_imgbill_request_t   req;

    c = ngx_http_imgbill_compact_create(NGX_HTTP_IMGBILL_COMPACT_MAX,
                                        API(api)->marks, NULL);
    if (c == NULL) {
        abort();
    }

    for (at = 0; at < len; at += n) {
        n = len - at < piece ? len - at : piece;

        copy = malloc(n);
        if (copy == NULL) {
            abort();
        }

        memcpy(copy, body + at, n);
        ngx_http_imgbill_compact_feed(c, copy, copy + n);
        free(copy);
    }

    prc = ngx_http_imgbill_check_compact(c, API(api), NULL, limit, &req);

    ngx_http_imgbill_compact_free(c);

    if (prc != rc
        || req.images != whole->images
        || req.image_bytes != whole->image_bytes
        || req.image_size != whole->image_size
        || req.tokens != whole->tokens
        || req.asked != whole->asked
        || req.stream != whole->stream
        || req.usage_asked != whole->usage_asked
        || req.stream_options != whole->stream_options
        || req.root_close != whole->root_close
        || memcmp(req.marks, whole->marks, sizeof(req.marks)) != 0
        || req.model.len != whole->model.len
        || (req.model.len
            && memcmp(req.model.data, whole->model.data, req.model.len) != 0))
    {
        imgbill_fuzz_fail(prc, &req, "in pieces of %zu: not as whole "
                          "(rc %ld)", piece, (long) rc);
    }

    json_decref(req.root);
}


/* what holds whatever the API */

static void
imgbill_fuzz_common(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    u_char *body, size_t len)
{
    if (rc < NGX_HTTP_IMGBILL_REQ_OK
        || rc > NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX)
    {
        imgbill_fuzz_fail(rc, req, "unknown verdict");
    }

    imgbill_fuzz_reading(rc, req);

    if ((rc == NGX_HTTP_IMGBILL_REQ_EMPTY) != (len == 0)) {
        imgbill_fuzz_fail(rc, req, "EMPTY if and only if no body");
    }

    if ((req->root == NULL)
        != (rc == NGX_HTTP_IMGBILL_REQ_EMPTY
            || rc == NGX_HTTP_IMGBILL_REQ_NUL_BYTE
            || rc == NGX_HTTP_IMGBILL_REQ_INVALID_JSON))
    {
        imgbill_fuzz_fail(rc, req, "a tree if and only if JSON");
    }

    /*
     * RFC 8259 has no place for a raw NUL byte nor for a leading
     * byte-order mark, and the README promises 400 invalid_json for both:
     * an upstream may read such a body otherwise.
     */

    if ((rc == NGX_HTTP_IMGBILL_REQ_NUL_BYTE)
        != (memchr(body, '\0', len) != NULL))
    {
        imgbill_fuzz_fail(rc, req, "NUL_BYTE if and only if a raw NUL");
    }

    if (rc != NGX_HTTP_IMGBILL_REQ_INVALID_JSON
        && rc != NGX_HTTP_IMGBILL_REQ_NUL_BYTE
        && len >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0)
    {
        imgbill_fuzz_fail(rc, req, "a byte-order mark");
    }

    if ((rc == NGX_HTTP_IMGBILL_REQ_NOT_OBJECT)
        != (req->root != NULL && !json_is_object(req->root)))
    {
        imgbill_fuzz_fail(rc, req, "NOT_OBJECT if and only if not one");
    }

    if (rc == NGX_HTTP_IMGBILL_REQ_OK
        && req->tokens != len - req->image_bytes
                          + req->images * NGX_HTTP_IMGBILL_IMAGE_TOKENS)
    {
        imgbill_fuzz_fail(rc, req, "tokens, len %zu", len);
    }
}


/* the model the relay prices is the string the upstream reads */

static void
imgbill_fuzz_openai(ngx_int_t rc, ngx_http_imgbill_request_t *req)
{
    json_t  *model;
    int      named;

    if (NO_CONTENTS(rc, req)) {
        imgbill_fuzz_fail(rc, req, "NO_CONTENTS from OpenAI");
    }

    /* the root's keys are read first, as one reading */

    if (!json_is_object(req->root) || rc == NGX_HTTP_IMGBILL_REQ_AMBIGUOUS) {
        return;
    }

    model = json_object_get(req->root, "model");
    named = json_is_string(model) && json_string_length(model) > 0;

    if (NO_MODEL(rc, req) == named) {
        imgbill_fuzz_fail(rc, req, "NO_MODEL if and only if no model");
    }

    if (named && json_string_length(model) > NGX_HTTP_IMGBILL_SHORT) {
        if (rc != NGX_HTTP_IMGBILL_REQ_BAD_VALUE || req->param == NULL
            || strcmp(req->param, "model") != 0)
        {
            imgbill_fuzz_fail(rc, req, "a model of over %d bytes taken",
                              NGX_HTTP_IMGBILL_SHORT);
        }

        return;
    }

    if (named
        && (req->model.len != json_string_length(model)
            || memcmp(req->model.data, json_string_value(model),
                      req->model.len) != 0))
    {
        imgbill_fuzz_fail(rc, req, "model is not root's \"model\"");
    }
}


/* the model is the URL's; "contents" must be an array */

static void
imgbill_fuzz_gemini(ngx_int_t rc, ngx_http_imgbill_request_t *req)
{
    if (NO_MODEL(rc, req) || STREAM_OPTIONS(rc, req))
    {
        imgbill_fuzz_fail(rc, req, "an OpenAI verdict from Gemini");
    }

    if (req->model.len != 0 || req->model.data != NULL) {
        imgbill_fuzz_fail(rc, req, "a model from a Gemini body");
    }

    if (json_is_object(req->root) && rc != NGX_HTTP_IMGBILL_REQ_AMBIGUOUS
        && NO_CONTENTS(rc, req)
           != !json_is_array(json_object_get(req->root, "contents")))
    {
        imgbill_fuzz_fail(rc, req, "NO_CONTENTS if and only if no array");
    }
}


/*
 * OpenAI's stream flags, read from an admitted body only: stream_options
 * other than an object or null, or its include_usage other than a boolean
 * or null, is refused once model and images pass.
 */

static void
imgbill_fuzz_stream(ngx_uint_t api, ngx_int_t rc,
    ngx_http_imgbill_request_t *req)
{
    json_t  *o, *u, *st;
    int      bad;

    o = json_object_get(req->root, "stream_options");
    u = json_object_get(o, "include_usage");
    st = json_object_get(req->root, "stream");
    bad = (o != NULL && !json_is_object(o) && !json_is_null(o))
          || (u != NULL && !json_is_boolean(u) && !json_is_null(u));

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        if (req->stream || req->stream_options || req->usage_asked) {
            imgbill_fuzz_fail(rc, req, "stream flags on a refusal");
        }

        if (STREAM_OPTIONS(rc, req) && !bad) {
            imgbill_fuzz_fail(rc, req, "stream_options refused wrongly");
        }

        return;
    }

    if (api == GEMINI) {
        if (req->stream || req->stream_options || req->usage_asked) {
            imgbill_fuzz_fail(rc, req, "stream flags from Gemini");
        }

        return;
    }

    if (bad
        || (st != NULL && !json_is_boolean(st) && !json_is_null(st))
        || req->stream != json_is_true(st)
        || req->stream_options != (o != NULL)
        || req->usage_asked != json_is_true(u))
    {
        imgbill_fuzz_fail(rc, req, "stream flags differ");
    }
}


static void
imgbill_fuzz_images(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    imgbill_fuzz_walk_t *w, size_t len)
{
    if (req->images != w->images || req->image_bytes != w->image_bytes) {
        imgbill_fuzz_fail(rc, req, "the reference sees %zu images "
                          "of %zu bytes", w->images, w->image_bytes);
    }

    /* decoded JSON strings are never longer than their text */

    if (req->image_bytes > len) {
        imgbill_fuzz_fail(rc, req, "image_bytes > len %zu", len);
    }

    if ((rc == NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE) != w->too_large) {
        imgbill_fuzz_fail(rc, req, "the reference finds size %zu, "
                          "limit %zu", w->image_size, w->limit);
    }

    if (rc == NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE
        && (req->images == 0
            || req->image_size <= w->limit
            || req->image_size != w->image_size
            || req->image_size > req->image_bytes))
    {
        imgbill_fuzz_fail(rc, req, "the reference finds size %zu, "
                          "limit %zu", w->image_size, w->limit);
    }
}


static void
imgbill_fuzz_fail(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "request_fuzz: invariant failed: ");

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fprintf(stderr, " (validator: rc %ld root %p model %zu images %zu "
            "image_bytes %zu image_size %zu tokens %zu stream %d/%d/%d)\n",
            (long) rc, (void *) req->root, req->model.len, req->images,
            req->image_bytes, req->image_size, req->tokens, req->stream,
            req->stream_options, req->usage_asked);

    abort();
}


/*
 * messages[].content[].image_url, itself the URL or an object with a
 * string "url"; anything else in that place is not an image.
 */

static void
imgbill_fuzz_walk_openai(json_t *root, imgbill_fuzz_walk_t *w)
{
    size_t   i, j;
    json_t  *message, *part, *url;

    json_array_foreach(json_object_get(root, "messages"), i, message) {

        json_array_foreach(json_object_get(message, "content"), j, part) {
            url = json_object_get(part, "image_url");

            if (json_is_object(url)) {
                url = json_object_get(url, "url");
            }

            if (!json_is_string(url)) {
                continue;
            }

            imgbill_fuzz_image(w, url,
                               imgbill_fuzz_url_size(json_string_value(url),
                                                     json_string_length(url)));
            if (w->too_large) {
                return;
            }
        }
    }
}


/*
 * contents[].parts[], then systemInstruction.parts[] and
 * system_instruction.parts[]; in each part inlineData.data, then
 * inline_data.data, each a base64 string.
 */

static void
imgbill_fuzz_walk_gemini(json_t *root, imgbill_fuzz_walk_t *w)
{
    size_t   i;
    json_t  *content;

    json_array_foreach(json_object_get(root, "contents"), i, content) {
        imgbill_fuzz_walk_parts(json_object_get(content, "parts"), w);

        if (w->too_large) {
            return;
        }
    }

    content = json_object_get(root, "systemInstruction");
    imgbill_fuzz_walk_parts(json_object_get(content, "parts"), w);

    if (!w->too_large) {
        content = json_object_get(root, "system_instruction");
        imgbill_fuzz_walk_parts(json_object_get(content, "parts"), w);
    }
}


static void
imgbill_fuzz_walk_parts(json_t *parts, imgbill_fuzz_walk_t *w)
{
    size_t       i, k;
    json_t      *part, *data;
    const char  *names[] = { "inlineData", "inline_data" };

    json_array_foreach(parts, i, part) {
        for (k = 0; k < 2; k++) {
            data = json_object_get(json_object_get(part, names[k]), "data");

            if (!json_is_string(data)) {
                continue;
            }

            imgbill_fuzz_image(w, data,
                imgbill_fuzz_base64_size(json_string_value(data),
                                         json_string_length(data)));
            if (w->too_large) {
                return;
            }
        }
    }
}


static void
imgbill_fuzz_image(imgbill_fuzz_walk_t *w, json_t *s, size_t size)
{
    w->images++;
    w->image_bytes += json_string_length(s);
    w->image_size = size;
    w->too_large = size > w->limit;
}


/*
 * A data URL's payload in bytes (RFC 2397: "data:" [media type and
 * parameters] "," payload), 0 for any other URL.  With ";base64" among
 * the parameters, as the validator reads it, the payload is base64.
 */

static size_t
imgbill_fuzz_url_size(const char *url, size_t len)
{
    size_t       i, n;
    const char  *comma;

    if (len < 5 || !imgbill_fuzz_caseeq(url, "data:", 5)) {
        return 0;
    }

    comma = memchr(url, ',', len);
    if (comma == NULL) {
        return 0;
    }

    n = url + len - (comma + 1);

    for (i = 0; url + i + 7 <= comma; i++) {
        if (imgbill_fuzz_caseeq(url + i, ";base64", 7)) {
            return imgbill_fuzz_base64_size(comma + 1, n);
        }
    }

    return n;
}


/*
 * Each base64 character carries 6 bits, whole bytes only, less one for
 * each '=' among the last two characters (which is the padding of valid
 * base64; invalid base64 is the upstream's to refuse).
 */

static size_t
imgbill_fuzz_base64_size(const char *p, size_t n)
{
    size_t  pad, size;

    pad = (n > 0 && p[n - 1] == '=') + (n > 1 && p[n - 2] == '=');

    size = (size_t) ((unsigned long long) n * 6 / 8);

    return (size > pad) ? size - pad : 0;
}


/* ASCII only, whatever the locale */

static int
imgbill_fuzz_caseeq(const char *s, const char *lower, size_t n)
{
    u_char  c;

    while (n--) {
        c = (u_char) *s++;

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != (u_char) *lower++) {
            return 0;
        }
    }

    return 1;
}


/* the URI prefix + body + suffix, against a reference parse */

static void
imgbill_fuzz_target(u_char flags, const u_char *body, size_t len)
{
    u_char      *uri;
    size_t       plen, slen, start, mlen;
    ngx_int_t    rc, ref;
    ngx_str_t    u, model;
    ngx_uint_t   stream, ref_stream;
    const char  *prefix, *suffix;

    prefix = imgbill_fuzz_prefix[(flags >> 1) & 3];
    suffix = imgbill_fuzz_suffix[(flags >> 3) & 3];
    plen = strlen(prefix);
    slen = strlen(suffix);

    uri = malloc(plen + len + slen + 1);
    if (uri == NULL) {
        abort();
    }

    memcpy(uri, prefix, plen);
    memcpy(uri + plen, body, len);
    memcpy(uri + plen + len, suffix, slen);

    u.data = uri;
    u.len = plen + len + slen;

    model.data = NULL;
    model.len = 0;
    stream = 7;

    rc = ngx_http_imgbill_gemini_target(&u, &model, &stream);
    ref = imgbill_fuzz_target_ref(uri, u.len, &start, &mlen, &ref_stream);

    if (rc != ref) {
        fprintf(stderr, "request_fuzz: invariant failed: gemini_target "
                "%ld, the reference %ld on \"%.*s\"\n", (long) rc,
                (long) ref, (int) u.len, uri);
        abort();
    }

    if (rc == NGX_OK
        && (model.data != uri + start || model.len != mlen
            || stream != ref_stream))
    {
        fprintf(stderr, "request_fuzz: invariant failed: gemini_target "
                "model at %zd of %zu, stream %lu on \"%.*s\"\n",
                model.data - uri, model.len, (unsigned long) stream,
                (int) u.len, uri);
        abort();
    }

    if (rc != NGX_OK && (model.data != NULL || stream != 7)) {
        fprintf(stderr, "request_fuzz: invariant failed: gemini_target "
                "declined but wrote its findings\n");
        abort();
    }

    free(uri);
}


/*
 * Forward scans this time: the last "/models/", the last ':', the model
 * between them of at most 128 bytes of [A-Za-z0-9._-], and one of the two
 * methods exactly.
 */

static ngx_int_t
imgbill_fuzz_target_ref(u_char *uri, size_t len, size_t *start,
    size_t *mlen, ngx_uint_t *stream)
{
    size_t       i, m, colon;
    const char  *method;

    m = (size_t) -1;
    colon = (size_t) -1;

    for (i = 0; i < len; i++) {
        if (len - i >= 8 && memcmp(uri + i, "/models/", 8) == 0) {
            m = i + 8;
        }

        if (uri[i] == ':') {
            colon = i;
        }
    }

    if (m == (size_t) -1 || colon == (size_t) -1 || colon < m
        || colon - m == 0 || colon - m > 128)
    {
        return NGX_DECLINED;
    }

    for (i = m; i < colon; i++) {
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789._-", uri[i]) || uri[i] == '\0')
        {
            return NGX_DECLINED;
        }
    }

    method = (const char *) uri + colon + 1;

    if (len - colon - 1 == 15 && memcmp(method, "generateContent", 15) == 0) {
        *stream = 0;

    } else if (len - colon - 1 == 21
               && memcmp(method, "streamGenerateContent", 21) == 0)
    {
        *stream = 1;

    } else {
        return NGX_DECLINED;
    }

    *start = m;
    *mlen = colon - m;

    return NGX_OK;
}


/*
 * One reading, against a fold written apart from the validator's: an
 * admitted body has no two keys of its root that fold alike; a refused
 * one names a key that is in the tree, beside another that folds alike,
 * or that folds like the spelling it stands for without being it.
 */

static void
imgbill_fuzz_reading(ngx_int_t rc, ngx_http_imgbill_request_t *req)
{
    char         a[300], b[300];
    size_t       an, bn;
    const char  *k1, *k2;
    json_t      *v1, *v2;

    if (rc == NGX_HTTP_IMGBILL_REQ_AMBIGUOUS) {
        if (req->key == NULL
            || !imgbill_fuzz_collide(req->root, req->key, req->spelling))
        {
            imgbill_fuzz_fail(rc, req, "AMBIGUOUS, but the key \"%s\" "
                              "collides with nothing",
                              req->key ? req->key : "(null)");
        }

        return;
    }

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return;
    }

    json_object_foreach(req->root, k1, v1) {
        an = imgbill_fuzz_fold(k1, a, sizeof(a));

        json_object_foreach(req->root, k2, v2) {
            bn = imgbill_fuzz_fold(k2, b, sizeof(b));

            if (k1 != k2 && an && an == bn && memcmp(a, b, an) == 0) {
                imgbill_fuzz_fail(rc, req, "admitted with \"%s\" and "
                                  "\"%s\" at the root", k1, k2);
            }
        }
    }
}


/* whether key, somewhere in v, has a sibling or a spelling it folds to */

static int
imgbill_fuzz_collide(json_t *v, const char *key, const char *spelling)
{
    char         a[300], b[300];
    size_t       i, an, bn;
    json_t      *e;
    const char  *k;

    if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            if (imgbill_fuzz_collide(e, key, spelling)) {
                return 1;
            }
        }

        return 0;
    }

    if (!json_is_object(v)) {
        return 0;
    }

    an = imgbill_fuzz_fold(key, a, sizeof(a));

    if (json_object_get(v, key) != NULL) {
        if (spelling != NULL) {
            bn = imgbill_fuzz_fold(spelling, b, sizeof(b));

            if (strcmp(key, spelling) != 0 && an && an == bn
                && memcmp(a, b, an) == 0)
            {
                return 1;
            }

        } else {
            json_object_foreach(v, k, e) {
                bn = imgbill_fuzz_fold(k, b, sizeof(b));

                if (strcmp(k, key) != 0 && an && an == bn
                    && memcmp(a, b, an) == 0)
                {
                    return 1;
                }
            }
        }
    }

    json_object_foreach(v, k, e) {
        if (imgbill_fuzz_collide(e, key, spelling)) {
            return 1;
        }
    }

    return 0;
}


/*
 * Lower case, no '_', U+017F as 's' and U+212A as 'k': as Go's matching
 * of keys (and Google's proto names) reads them.  0 if it does not fit.
 */

static size_t
imgbill_fuzz_fold(const char *key, char *buf, size_t size)
{
    size_t         n;
    const u_char  *p;

    n = 0;

    for (p = (const u_char *) key; *p; p++) {
        if (n == size) {
            return 0;
        }

        if (*p == '_') {
            continue;

        } else if (p[0] == 0xc5 && p[1] == 0xbf) {
            buf[n++] = 's';
            p++;

        } else if (p[0] == 0xe2 && p[1] == 0x84 && p[2] == 0xaa) {
            buf[n++] = 'k';
            p += 2;

        } else {
            buf[n++] = (*p >= 'A' && *p <= 'Z') ? (*p | 0x20) : *p;
        }
    }

    return (n > 256) ? 0 : n;
}
