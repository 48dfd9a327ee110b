
/*
 * imgbill: OpenAI's Images API, its generations (/v1/images/generations),
 * as the relay reads it.  gpt-image-1, dall-e-3, Seedream, Imagen, flux
 * and the other image models aggregators sell are reached through it.
 *
 *   the key     Authorization: Bearer <key>
 *   the model   the body's "model"; the images asked for, its "n"
 *   a stream    not relayed yet: "stream": true is refused, free
 *   a reply     data[], each entry an image when it has a "b64_json" or
 *               a "url"; "usage" {input_tokens, output_tokens} from GPT
 *               image models, and input_tokens_details.image_tokens, the
 *               input's image tokens, billed at their own rate
 *   an error    OpenAI's: {"error":{"message","type","param":null,"code"}}
 *
 * "size" and "quality" (strings) choose a per-image price's variant.
 * Edits and variations (multipart/form-data, read by
 * ngx_http_imgbill_multipart.c) and streams are still to come (issue 19).
 */


#include "ngx_http_imgbill_api.h"


enum {
    ngx_http_imgbill_images_key_b64 = NGX_HTTP_IMGBILL_SCAN_KEY_API,
    ngx_http_imgbill_images_key_url
};


static ngx_int_t ngx_http_imgbill_images_check(
    ngx_http_imgbill_request_t *req, size_t image_limit);


/* data[] is read as the choices are: one entry, one image */

static ngx_http_imgbill_scan_key_t  ngx_http_imgbill_images_keys[] = {
    { ngx_string("usage"), ngx_http_imgbill_key_usage },
    { ngx_string("data"), ngx_http_imgbill_key_choices },
    { ngx_string("error"), ngx_http_imgbill_key_error },
    { ngx_string("input_tokens"), ngx_http_imgbill_key_prompt },
    { ngx_string("output_tokens"), ngx_http_imgbill_key_completion },
    { ngx_string("input_tokens_details"), ngx_http_imgbill_key_details },
    { ngx_string("image_tokens"), ngx_http_imgbill_key_image_input },
    { ngx_string("b64_json"), ngx_http_imgbill_images_key_b64 },
    { ngx_string("url"), ngx_http_imgbill_images_key_url },
    { ngx_null_string, 0 }
};


/* usage.input_tokens_details, where the image tokens of the input are */

static ngx_http_imgbill_scan_path_t  ngx_http_imgbill_images_paths[] = {
    { ngx_http_imgbill_role_usage, ngx_http_imgbill_key_details, '{',
      ngx_http_imgbill_role_details },
    { 0, 0, 0, 0 }
};


static ngx_http_imgbill_scan_mark_t  ngx_http_imgbill_images_marks[] = {
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_images_key_b64,
      ngx_http_imgbill_shows_image },
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_images_key_url,
      ngx_http_imgbill_shows_image },
    { 0, 0, 0 }
};


static ngx_http_imgbill_dialect_t  ngx_http_imgbill_images_dialect = {
    ngx_http_imgbill_images_keys,
    ngx_http_imgbill_images_paths,
    ngx_http_imgbill_images_marks,
    0,
    0
};


/* the key, errors and the model list as chat completions has them */

ngx_http_imgbill_api_t  ngx_http_imgbill_images_api = {
    ngx_string("openai_images"),
    ngx_http_imgbill_openai_key,
    "Authorization: Bearer <key>",
    NULL,
    ngx_http_imgbill_images_check,
    NULL,
    NULL,
    ngx_http_imgbill_openai_error,
    NGX_HTTP_IMGBILL_OPENAI_ERROR_LEN,
    ngx_string("{\"object\":\"list\",\"data\":["),
    ngx_http_imgbill_openai_model,
    NGX_HTTP_IMGBILL_OPENAI_MODEL_LEN,
    ngx_string("]}\n"),
    &ngx_http_imgbill_images_dialect,
    0
};


/* the members the relay reads, in the spellings the upstream reads */

static const char  *ngx_http_imgbill_images_root[] = {
    "model", "n", "stream", "size", "quality", NULL
};

static const char  *ngx_http_imgbill_images_variant[] = {
    "size", "quality", NULL
};


static ngx_int_t
ngx_http_imgbill_images_check(ngx_http_imgbill_request_t *req,
    size_t image_limit)
{
    json_t      *v;
    ngx_str_t   *s;
    ngx_int_t    rc;
    ngx_uint_t   i, stream;

    rc = ngx_http_imgbill_reading_openai(req, ngx_http_imgbill_images_root);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    rc = ngx_http_imgbill_reading_flag(json_object_get(req->root, "stream"),
                                       "stream", &stream, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    /* what a price per image may depend on: strings, as OpenAI takes */

    for (i = 0; ngx_http_imgbill_images_variant[i]; i++) {
        v = json_object_get(req->root, ngx_http_imgbill_images_variant[i]);

        if (v == NULL || json_is_null(v)) {
            continue;
        }

        if (!json_is_string(v) || ngx_http_imgbill_request_long(req, v)) {
            req->param = ngx_http_imgbill_images_variant[i];
            req->expected = "a short string";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
        }

        s = i ? &req->quality : &req->size;
        s->len = json_string_length(v);
        s->data = (u_char *) json_string_value(v);
    }

    if (stream) {
        req->param = "stream";
        req->expected = "false or absent: the relay does not relay the "
                        "Images API's streams yet";
        req->code = "stream_not_supported";
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}
