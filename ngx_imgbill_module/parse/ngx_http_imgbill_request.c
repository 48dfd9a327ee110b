
/*
 * imgbill: what every API's request validator shares (api/ has each
 * API's): the body parsed as one JSON object, the images it asks for, its
 * inline reference images and their sizes, and the bound a metered hold
 * puts on its prompt.  Kept apart from the access phase, which owns the
 * HTTP side, so that it can be fuzzed on its own (t/fuzz/).
 */


#include "ngx_http_imgbill_request.h"


/*
 * What a metered hold assumes the prompt costs: every byte of the body
 * outside inline images may be a token of text, and each reference image
 * counts as NGX_HTTP_IMGBILL_IMAGE_TOKENS.  An image's string never takes
 * more bytes decoded than it took in the body, so this cannot wrap.
 */

void
ngx_http_imgbill_request_bound(ngx_http_imgbill_request_t *req)
{
    req->tokens = (size_t) req->length - req->image_bytes
                  + req->images * NGX_HTTP_IMGBILL_IMAGE_TOKENS;
}


/*
 * How many images a request asks for: absent or null, one; else a JSON
 * integer of at least 1 ("2.0" or "2" would be read otherwise by some
 * upstream), capped just above what any location allows.
 */

ngx_int_t
ngx_http_imgbill_request_asked(json_t *n, const char *name,
    ngx_http_imgbill_request_t *req)
{
    json_int_t  v;

    if (n == NULL || json_is_null(n)) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    req->count = name;

    if (!json_is_integer(n) || (v = json_integer_value(n)) < 1) {
        return NGX_HTTP_IMGBILL_REQ_BAD_COUNT;
    }

    req->asked = (ngx_uint_t) ngx_min(v, NGX_HTTP_IMGBILL_IMAGES_MAX + 1);

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * A long string of the body is in the tree as "\u0000<index>" (see
 * ngx_http_imgbill_compact.c), no string of the client's own begins so:
 * what it was is in req->longs.
 */

ngx_http_imgbill_long_t *
ngx_http_imgbill_request_long(ngx_http_imgbill_request_t *req, json_t *s)
{
    size_t       i, len;
    ngx_uint_t   n;
    const char  *v;

    len = json_string_length(s);
    v = json_string_value(s);

    if (len < 2 || v[0] != '\0' || len > NGX_INT_T_LEN) {
        return NULL;
    }

    n = 0;

    for (i = 1; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return NULL;
        }

        n = n * 10 + (v[i] - '0');
    }

    return (n < req->nlongs) ? &req->longs[n] : NULL;
}


/* a string's bytes as a data URL carries them; 0 for any other URL */

size_t
ngx_http_imgbill_request_url_size(ngx_http_imgbill_request_t *req, json_t *s)
{
    ngx_http_imgbill_long_t  *l;

    l = ngx_http_imgbill_request_long(req, s);

    return l ? l->url_size
             : ngx_http_imgbill_data_url_size((u_char *) json_string_value(s),
                                              json_string_length(s));
}


/* a string's bytes as base64 */

size_t
ngx_http_imgbill_request_base64_size(ngx_http_imgbill_request_t *req,
    json_t *s)
{
    ngx_http_imgbill_long_t  *l;

    l = ngx_http_imgbill_request_long(req, s);

    return l ? l->base64_size
             : ngx_http_imgbill_base64_size((u_char *) json_string_value(s),
                                            json_string_length(s));
}


/* one reference image, s its string in the body, size its bytes decoded */

ngx_int_t
ngx_http_imgbill_request_image(json_t *s, size_t size, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    ngx_http_imgbill_long_t  *l;

    l = ngx_http_imgbill_request_long(req, s);

    req->images++;
    req->image_bytes += l ? l->len : json_string_length(s);

    if (size > image_limit) {
        req->image_size = size;
        return NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* the bytes a data URL carries; 0 for any other URL */

size_t
ngx_http_imgbill_data_url_size(u_char *url, size_t len)
{
    u_char  *comma;

    if (len < sizeof("data:") - 1
        || ngx_strncasecmp(url, (u_char *) "data:", sizeof("data:") - 1) != 0)
    {
        return 0;
    }

    comma = ngx_strlchr(url, url + len, ',');
    if (comma == NULL) {
        return 0;
    }

    if (ngx_strlcasestrn(url, comma, (u_char *) ";base64",
                         sizeof(";base64") - 2)
        == NULL)
    {
        return url + len - (comma + 1);
    }

    return ngx_http_imgbill_base64_size(comma + 1, url + len - (comma + 1));
}


/*
 * Base64's payload without decoding it: 3 bytes for every 4 characters,
 * 1 or 2 for a last group of 2 or 3 (unpadded base64, which decoders
 * take), less one for each '=' among the last two characters.  Invalid
 * base64 is the upstream's to refuse.
 */

size_t
ngx_http_imgbill_base64_size(u_char *p, size_t len)
{
    size_t  size, pad;

    pad = (len && p[len - 1] == '=') + (len > 1 && p[len - 2] == '=');
    size = len / 4 * 3 + len % 4 * 3 / 4;

    return size - ngx_min(pad, size);
}


/* bytes added to a buffer that doubles as it fills (from 1 KiB) */

ngx_int_t
ngx_http_imgbill_append(u_char **buf, size_t *len, size_t *size, u_char *p,
    size_t n, ngx_log_t *log)
{
    u_char  *b;
    size_t   want;

    if (*len + n > *size) {
        want = ngx_max(2 * *size, *len + n);
        want = ngx_max(want, 1024);

        b = ngx_alloc(want, log);
        if (b == NULL) {
            return NGX_ERROR;
        }

        if (*buf) {
            ngx_memcpy(b, *buf, *len);
            ngx_free(*buf);
        }

        *buf = b;
        *size = want;
    }

    ngx_memcpy(*buf + *len, p, n);
    *len += n;

    return NGX_OK;
}
