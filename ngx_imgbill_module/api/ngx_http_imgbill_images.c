
/*
 * imgbill: OpenAI's Images API, its generations (/v1/images/generations),
 * as the relay reads it.  gpt-image-1, dall-e-3, Seedream, Imagen, flux
 * and the other image models aggregators sell are reached through it.
 *
 *   the key     Authorization: Bearer <key>
 *   the model   the body's "model"; the images asked for, its "n"
 *   a stream    "stream": true: events "image_generation.partial_image"
 *               and "image_generation.completed" (edits: "image_edit.*"),
 *               each a JSON object with its "type", an image in its
 *               "b64_json"; only a completed one is an image delivered,
 *               and carries that image's "usage"
 *   a reply     data[], each entry an image when it has a "b64_json" or
 *               a "url"; "usage" {input_tokens, output_tokens} from GPT
 *               image models, and input_tokens_details.image_tokens, the
 *               input's image tokens, billed at their own rate
 *   an error    OpenAI's: {"error":{"message","type","param":null,"code"}}
 *
 * "size" and "quality" (strings) choose a per-image price's variant.
 *
 * Edits (/v1/images/edits) and variations (/v1/images/variations) come
 * as multipart/form-data, read by ngx_http_imgbill_form.c: the same
 * members as text fields, and the images as files, "image" or "image[]"
 * (up to 16 in all), and a "mask".  Each file is a reference image of
 * the request's input.
 */


#include "ngx_http_imgbill_api.h"


enum {
    ngx_http_imgbill_images_key_b64 = NGX_HTTP_IMGBILL_SCAN_KEY_API,
    ngx_http_imgbill_images_key_url,
    ngx_http_imgbill_images_key_type
};


static ngx_int_t ngx_http_imgbill_images_check(
    ngx_http_imgbill_request_t *req, size_t image_limit);
static ngx_int_t ngx_http_imgbill_images_form(
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_images_refs(ngx_http_imgbill_request_t *req,
    size_t image_limit);
static ngx_int_t ngx_http_imgbill_images_ref(ngx_http_imgbill_request_t *req,
    json_t *ref, size_t image_limit);


/* the images an edit may send, as OpenAI takes them */
#define NGX_HTTP_IMGBILL_IMAGES_FILES  16


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
    { ngx_string("type"), ngx_http_imgbill_images_key_type },
    { ngx_null_string, 0 }
};


/* usage.input_tokens_details, where the image tokens of the input are */

static ngx_http_imgbill_scan_path_t  ngx_http_imgbill_images_paths[] = {
    { ngx_http_imgbill_role_usage, ngx_http_imgbill_key_details, '{',
      ngx_http_imgbill_role_details },
    { 0, 0, 0, 0 }
};


/*
 * A stream's events are each an object of their own: a partial image
 * shows an image (a client that leaves after one does not leave the
 * relay blind: it reads on, and the finished image is billed), and only
 * a "*.completed" one is an image delivered.
 */

static ngx_http_imgbill_scan_mark_t  ngx_http_imgbill_images_marks[] = {
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_images_key_b64,
      ngx_http_imgbill_shows_image },
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_images_key_url,
      ngx_http_imgbill_shows_image },
    { ngx_http_imgbill_role_root, ngx_http_imgbill_images_key_b64,
      ngx_http_imgbill_shows_image },
    { ngx_http_imgbill_role_root, ngx_http_imgbill_images_key_url,
      ngx_http_imgbill_shows_image },
    { ngx_http_imgbill_role_root, ngx_http_imgbill_images_key_type,
      ngx_http_imgbill_shows_done },
    { 0, 0, 0 }
};


static ngx_http_imgbill_dialect_t  ngx_http_imgbill_images_dialect = {
    ngx_http_imgbill_images_keys,
    ngx_http_imgbill_images_paths,
    ngx_http_imgbill_images_marks,
    1,
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
    NULL,
    1,
    1,
    1
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

    rc = req->form ? ngx_http_imgbill_images_form(req)
                   : ngx_http_imgbill_images_refs(req, image_limit);

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

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

    req->stream = stream;

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * A form's fields are text: "n" and "stream" are read as OpenAI reads
 * them ("2", "true"), anything else stays a string for the checks to
 * refuse.  Its files are the input's images: at least one, "image" or
 * "image[]" (at most 16 in all), and at most one "mask".
 */

static ngx_int_t
ngx_http_imgbill_images_form(ngx_http_imgbill_request_t *req)
{
    json_t      *v;
    ngx_uint_t   i, images;
    const char  *key;

    static const char  *files[] = { "image", "image[]", NULL };

    ngx_http_imgbill_reading_number(req->root, "n");

    v = json_object_get(req->root, "stream");

    if (json_is_string(v)) {
        if (ngx_strcmp(json_string_value(v), "true") == 0) {
            json_object_set_new(req->root, "stream", json_true());

        } else if (ngx_strcmp(json_string_value(v), "false") == 0) {
            json_object_set_new(req->root, "stream", json_false());
        }
    }

    images = 0;

    for (i = 0; files[i]; i++) {
        v = json_object_get(req->root, files[i]);

        if (v == NULL) {
            continue;
        }

        if (!json_is_array(v)) {
            req->param = files[i];
            req->expected = "a file";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
        }

        images += json_array_size(v);
    }

    if (images == 0) {
        req->param = "image";
        req->expected = "a file";
        req->code = "missing_image";
        return NGX_HTTP_IMGBILL_REQ_MISSING;
    }

    if (images > NGX_HTTP_IMGBILL_IMAGES_FILES) {
        req->param = "image[]";
        req->expected = "at most 16 files";
        req->code = "too_many_images";
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    v = json_object_get(req->root, "mask");

    if (v && (!json_is_array(v) || json_array_size(v) > 1)) {
        req->param = "mask";
        req->expected = "one file";
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    /* every file is input the model may read, under whatever name an
       upstream takes (a mask is an image too): the hold counts them all */

    req->images = 0;

    json_object_foreach(req->root, key, v) {
        req->images += json_array_size(v);
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * A JSON edit names its input images: "images", objects with an
 * "image_url" (a URL or a data URL) or a "file_id", as gpt-image-1
 * takes them, or "image", a URL or an array of them, as relays take
 * them; and a "mask", one such reference.  Each is held for as a
 * reference image, and a data URL over the image limit is refused.  A
 * generation names none.
 */

static ngx_int_t
ngx_http_imgbill_images_refs(ngx_http_imgbill_request_t *req,
    size_t image_limit)
{
    json_t      *v, *e;
    size_t       i;
    ngx_int_t    rc;
    ngx_uint_t   n;

    /* the mask last: at most 16 images before it */
    static const char  *refs[] = { "images", "image", "mask", NULL };

    for (n = 0; refs[n]; n++) {

        if (n == 2 && req->images > NGX_HTTP_IMGBILL_IMAGES_FILES) {
            req->param = "images";
            req->expected = "at most 16 images";
            req->code = "too_many_images";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
        }

        v = json_object_get(req->root, refs[n]);

        if (v == NULL || json_is_null(v)) {
            continue;
        }

        if (!json_is_array(v)) {
            rc = ngx_http_imgbill_images_ref(req, v, image_limit);

        } else {
            rc = NGX_HTTP_IMGBILL_REQ_OK;

            json_array_foreach(v, i, e) {
                rc = ngx_http_imgbill_images_ref(req, e, image_limit);
                if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
                    break;
                }
            }
        }

        if (rc == NGX_HTTP_IMGBILL_REQ_BAD_VALUE) {
            req->param = refs[n];
            req->expected = "image references: URLs, or objects with an "
                            "\"image_url\" or a \"file_id\"";
        }

        if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
            return rc;
        }
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


static ngx_int_t
ngx_http_imgbill_images_ref(ngx_http_imgbill_request_t *req, json_t *ref,
    size_t image_limit)
{
    json_t  *url;

    if (json_is_object(ref)) {
        url = json_object_get(ref, "image_url");

        if (!json_is_string(url)) {
            if (!json_is_string(json_object_get(ref, "file_id"))) {
                return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
            }

            /* a file uploaded before: its bytes are not here */
            req->images++;
            return NGX_HTTP_IMGBILL_REQ_OK;
        }

        ref = url;
    }

    if (!json_is_string(ref)) {
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    return ngx_http_imgbill_request_image(ref,
                               ngx_http_imgbill_request_url_size(req, ref),
                               image_limit, req);
}
