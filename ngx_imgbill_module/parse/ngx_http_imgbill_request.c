
/*
 * imgbill: what every API's request validator shares (api/ has each
 * API's): the body parsed as one JSON object, the images it asks for, its
 * inline reference images and their sizes, and the bound a metered hold
 * puts on its prompt.  Kept apart from the access phase, which owns the
 * HTTP side, so that it can be fuzzed on its own (t/fuzz/).
 */


#include "ngx_http_imgbill_request.h"


/* a JSON object, or why not; req starts here */

ngx_int_t
ngx_http_imgbill_request_parse(u_char *p, size_t len,
    ngx_http_imgbill_request_t *req)
{
    ngx_memzero(req, sizeof(ngx_http_imgbill_request_t));

    req->asked = 1;

    if (len == 0) {
        return NGX_HTTP_IMGBILL_REQ_EMPTY;
    }

    /*
     * JSON has no place for a raw NUL, yet jansson 2.14 takes one right
     * after a number ({"n":1<NUL>}); the upstream would see what imgbill
     * did not validate.
     */

    if (memchr(p, '\0', len) != NULL) {
        return NGX_HTTP_IMGBILL_REQ_NUL_BYTE;
    }

    /* two "model" keys would let the relay and the upstream disagree */

    req->root = json_loadb((char *) p, len, JSON_REJECT_DUPLICATES,
                           &req->error);

    if (req->root == NULL) {
        return NGX_HTTP_IMGBILL_REQ_INVALID_JSON;
    }

    if (!json_is_object(req->root)) {
        return NGX_HTTP_IMGBILL_REQ_NOT_OBJECT;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * What a metered hold assumes the prompt costs: every byte of the body
 * outside inline images may be a token of text, and each reference image
 * counts as NGX_HTTP_IMGBILL_IMAGE_TOKENS.  An image's string never takes
 * more bytes decoded than it took in the body, so this cannot wrap.
 */

void
ngx_http_imgbill_request_bound(size_t len, ngx_http_imgbill_request_t *req)
{
    req->tokens = len - req->image_bytes
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


/* one reference image, s its string in the body, size its bytes decoded */

ngx_int_t
ngx_http_imgbill_request_image(json_t *s, size_t size, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    req->images++;
    req->image_bytes += json_string_length(s);

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
