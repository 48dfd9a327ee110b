
/*
 * libFuzzer target: the request validator (ngx_http_imgbill_request.c).
 * Built by t/fuzz/run against the nginx tree that scripts/build configured,
 * with the libnginx functions the validator calls from t/stub/ngx_stubs.c.
 *
 * An input is two bytes of image_limit (little endian, 0..64 KiB, so that
 * small images already exceed it) followed by the client's body.  The
 * verdict and the findings are checked against the validator's contract
 * (ngx_http_imgbill_module.h) and against a reference walk of jansson's
 * tree written apart from the validator; a failure abort()s with a message
 * on stderr, a leaked tree is LeakSanitizer's to report.
 */


#include "ngx_http_imgbill_module.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct {
    size_t   images;        /* URLs seen, up to the first one too large */
    size_t   image_bytes;   /* their lengths */
    size_t   image_size;    /* the last one's decoded size */
    int      too_large;
} imgbill_fuzz_walk_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void imgbill_fuzz_fail(ngx_int_t rc, ngx_http_imgbill_request_t *req,
    const char *fmt, ...);
static void imgbill_fuzz_walk(json_t *root, size_t limit,
    imgbill_fuzz_walk_t *w);
static size_t imgbill_fuzz_url_size(const char *url, size_t len);
static int imgbill_fuzz_caseeq(const char *s, const char *lower, size_t n);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                      *body;
    size_t                       len, limit;
    json_t                      *model;
    ngx_int_t                    rc;
    imgbill_fuzz_walk_t          w;
    ngx_http_imgbill_request_t   req;

    if (size < 2) {
        return 0;
    }

    limit = data[0] | (data[1] << 8);
    len = size - 2;

    /* an exact-size heap copy: a read past the body is an ASan error */

    body = malloc(len ? len : 1);
    if (body == NULL) {
        abort();
    }

    memcpy(body, data + 2, len);

    rc = ngx_http_imgbill_check_request(body, len, limit, &req);

    if ((rc == NGX_HTTP_IMGBILL_REQ_EMPTY) != (len == 0)) {
        imgbill_fuzz_fail(rc, &req, "EMPTY if and only if no body");
    }

    if ((req.root == NULL)
        != (rc == NGX_HTTP_IMGBILL_REQ_EMPTY
            || rc == NGX_HTTP_IMGBILL_REQ_NUL_BYTE
            || rc == NGX_HTTP_IMGBILL_REQ_INVALID_JSON))
    {
        imgbill_fuzz_fail(rc, &req, "a tree if and only if JSON");
    }

    /*
     * RFC 8259 has no place for a raw NUL byte nor for a leading
     * byte-order mark, and the README promises 400 invalid_json for both:
     * an upstream may read such a body otherwise.
     */

    if ((rc == NGX_HTTP_IMGBILL_REQ_NUL_BYTE)
        != (memchr(body, '\0', len) != NULL))
    {
        imgbill_fuzz_fail(rc, &req, "NUL_BYTE if and only if a raw NUL");
    }

    if (rc != NGX_HTTP_IMGBILL_REQ_INVALID_JSON
        && rc != NGX_HTTP_IMGBILL_REQ_NUL_BYTE
        && len >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0)
    {
        imgbill_fuzz_fail(rc, &req, "a byte-order mark");
    }

    switch (rc) {

    case NGX_HTTP_IMGBILL_REQ_EMPTY:
    case NGX_HTTP_IMGBILL_REQ_NUL_BYTE:
    case NGX_HTTP_IMGBILL_REQ_INVALID_JSON:
        break;

    case NGX_HTTP_IMGBILL_REQ_NOT_OBJECT:
        if (json_is_object(req.root)) {
            imgbill_fuzz_fail(rc, &req, "an object");
        }

        break;

    case NGX_HTTP_IMGBILL_REQ_NO_MODEL:
        model = json_object_get(req.root, "model");

        if (!json_is_object(req.root)
            || (json_is_string(model) && json_string_length(model) > 0))
        {
            imgbill_fuzz_fail(rc, &req, "a model");
        }

        break;

    case NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE:
    case NGX_HTTP_IMGBILL_REQ_OK:
    case NGX_HTTP_IMGBILL_REQ_STREAM:

        /* only a body that would be admitted is refused for streaming */

        if ((rc == NGX_HTTP_IMGBILL_REQ_STREAM)
            != (rc != NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE
                && json_is_true(json_object_get(req.root, "stream"))))
        {
            imgbill_fuzz_fail(rc, &req, "\"stream\": true decided wrongly");
        }

        /* the model the relay prices is the string the upstream reads */

        model = json_object_get(req.root, "model");

        if (!json_is_string(model)
            || req.model.len == 0
            || req.model.len != json_string_length(model)
            || req.model.data != (u_char *) json_string_value(model))
        {
            imgbill_fuzz_fail(rc, &req, "model is not root's \"model\"");
        }

        /* the reference: every image URL in walk order, up to the
           first one over the limit */

        imgbill_fuzz_walk(req.root, limit, &w);

        if (req.images != w.images || req.image_bytes != w.image_bytes) {
            imgbill_fuzz_fail(rc, &req, "the reference sees %zu images "
                              "of %zu bytes", w.images, w.image_bytes);
        }

        /* decoded JSON strings are never longer than their text */

        if (req.image_bytes > len) {
            imgbill_fuzz_fail(rc, &req, "image_bytes > len %zu", len);
        }

        if (rc != NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE) {
            if (w.too_large) {
                imgbill_fuzz_fail(rc, &req, "the reference finds an image "
                                  "of %zu bytes, limit %zu",
                                  w.image_size, limit);
            }

            if (req.tokens != len - req.image_bytes
                              + req.images * NGX_HTTP_IMGBILL_IMAGE_TOKENS)
            {
                imgbill_fuzz_fail(rc, &req, "tokens, len %zu", len);
            }

            break;
        }

        if (!w.too_large
            || req.images == 0
            || req.image_size <= limit
            || req.image_size != w.image_size
            || req.image_size > req.image_bytes)
        {
            imgbill_fuzz_fail(rc, &req, "the reference finds size %zu, "
                              "limit %zu", w.image_size, limit);
        }

        break;

    default:
        imgbill_fuzz_fail(rc, &req, "unknown verdict");
    }

    json_decref(req.root);
    free(body);

    return 0;
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
            "image_bytes %zu image_size %zu tokens %zu)\n", (long) rc,
            (void *) req->root, req->model.len, req->images,
            req->image_bytes, req->image_size, req->tokens);

    abort();
}


/*
 * messages[].content[].image_url, itself the URL or an object with a
 * string "url"; anything else in that place is not an image.
 */

static void
imgbill_fuzz_walk(json_t *root, size_t limit, imgbill_fuzz_walk_t *w)
{
    size_t   i, j;
    json_t  *message, *part, *url;

    memset(w, 0, sizeof(imgbill_fuzz_walk_t));

    json_array_foreach(json_object_get(root, "messages"), i, message) {

        json_array_foreach(json_object_get(message, "content"), j, part) {
            url = json_object_get(part, "image_url");

            if (json_is_object(url)) {
                url = json_object_get(url, "url");
            }

            if (!json_is_string(url)) {
                continue;
            }

            w->images++;
            w->image_bytes += json_string_length(url);
            w->image_size = imgbill_fuzz_url_size(json_string_value(url),
                                                  json_string_length(url));

            if (w->image_size > limit) {
                w->too_large = 1;
                return;
            }
        }
    }
}


/*
 * A data URL's payload in bytes (RFC 2397: "data:" [media type and
 * parameters] "," payload), 0 for any other URL.  With ";base64" among
 * the parameters, as the validator reads it, 4 characters carry 3 bytes,
 * less one for each '=' among the last two characters (which is the
 * padding of valid base64; invalid base64 is the upstream's to refuse).
 */

static size_t
imgbill_fuzz_url_size(const char *url, size_t len)
{
    size_t       i, n, pad, size;
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
            break;
        }
    }

    if (url + i + 7 > comma) {
        return n;
    }

    pad = (n > 0 && url[len - 1] == '=') + (n > 1 && url[len - 2] == '=');

    size = n / 4 * 3;

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
