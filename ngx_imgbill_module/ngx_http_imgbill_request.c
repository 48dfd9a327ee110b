
/*
 * imgbill: the request validator.
 *
 * Everything imgbill believes about a request body before it asks Redis for
 * money: a JSON object, its "model", and its inline reference images.  Kept
 * apart from the access phase, which owns the HTTP side, so that it can be
 * fuzzed on its own (t/fuzz/).
 */


#include "ngx_http_imgbill_module.h"


static ngx_int_t ngx_http_imgbill_check_images(json_t *root,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static size_t ngx_http_imgbill_data_url_size(u_char *url, size_t len);


ngx_int_t
ngx_http_imgbill_check_request(u_char *p, size_t len, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    json_t     *model;
    ngx_int_t   rc;

    ngx_memzero(req, sizeof(ngx_http_imgbill_request_t));

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

    model = json_object_get(req->root, "model");

    if (!json_is_string(model) || json_string_length(model) == 0) {
        return NGX_HTTP_IMGBILL_REQ_NO_MODEL;
    }

    req->model.len = json_string_length(model);
    req->model.data = (u_char *) json_string_value(model);

    rc = ngx_http_imgbill_check_images(req->root, image_limit, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    /*
     * What a metered hold assumes the prompt costs: every byte of the body
     * outside inline images may be a token of text, and each reference
     * image counts as NGX_HTTP_IMGBILL_IMAGE_TOKENS.  A URL never takes
     * more bytes decoded than it took in the body, so this cannot wrap.
     */

    req->tokens = len - req->image_bytes
                  + req->images * NGX_HTTP_IMGBILL_IMAGE_TOKENS;

    /*
     * A streamed reply (SSE) cannot be billed yet: refused here, before
     * the upstream makes an image nobody pays for.
     */

    if (json_is_true(json_object_get(req->root, "stream"))) {
        return NGX_HTTP_IMGBILL_REQ_STREAM;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * Reference images arrive as content parts of messages:
 * {"type":"image_url","image_url":{"url":"data:image/png;base64,..."}}
 * (or with the URL string directly under "image_url").  Only inline data
 * URLs have a size here; their decoded size is known from the base64 length
 * alone, without decoding.
 */

static ngx_int_t
ngx_http_imgbill_check_images(json_t *root, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    u_char  *url;
    size_t   i, j, len, size;
    json_t  *messages, *content, *image;

    messages = json_object_get(root, "messages");

    if (!json_is_array(messages)) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    for (i = 0; i < json_array_size(messages); i++) {
        content = json_object_get(json_array_get(messages, i), "content");

        if (!json_is_array(content)) {
            continue;
        }

        for (j = 0; j < json_array_size(content); j++) {
            image = json_object_get(json_array_get(content, j), "image_url");

            if (json_is_object(image)) {
                image = json_object_get(image, "url");
            }

            if (!json_is_string(image)) {
                continue;
            }

            url = (u_char *) json_string_value(image);
            len = json_string_length(image);

            req->images++;
            req->image_bytes += len;

            size = ngx_http_imgbill_data_url_size(url, len);

            if (size > image_limit) {
                req->image_size = size;
                return NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE;
            }
        }
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* the bytes a data URL carries; 0 for any other URL */

static size_t
ngx_http_imgbill_data_url_size(u_char *url, size_t len)
{
    u_char  *comma;
    size_t   size, pad;

    if (len < sizeof("data:") - 1
        || ngx_strncasecmp(url, (u_char *) "data:", sizeof("data:") - 1) != 0)
    {
        return 0;
    }

    comma = ngx_strlchr(url, url + len, ',');
    if (comma == NULL) {
        return 0;
    }

    size = url + len - (comma + 1);

    if (ngx_strlcasestrn(url, comma, (u_char *) ";base64",
                         sizeof(";base64") - 2)
        == NULL)
    {
        return size;
    }

    pad = (size && url[len - 1] == '=') + (size > 1 && url[len - 2] == '=');
    size = size / 4 * 3;

    return size - ngx_min(pad, size);
}
