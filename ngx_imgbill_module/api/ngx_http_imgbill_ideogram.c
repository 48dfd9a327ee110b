
/*
 * imgbill: Ideogram 3.0, as aggregators resell it and Cherry Studio calls
 * it: POST .../ideogram-v3/OPERATION, OPERATION one of generate, remix,
 * edit, reframe and replace-background.
 *
 *   the key     Api-Key: <key> (Ideogram's own header), or Authorization:
 *               Bearer <key>
 *   the model   V_3, by the path; the operation and "rendering_speed"
 *               (FLASH, TURBO, DEFAULT, QUALITY; absent: DEFAULT) choose
 *               its per-image price, "OPERATION:SPEED", as a size and a
 *               quality choose an Images API model's
 *   a request   multipart/form-data only: text fields, "num_images" (1 to
 *               8) the images asked for; files "image", "mask",
 *               "style_reference_images", "character_reference_images"
 *   a reply     {"created","data":[{"url","is_image_safe",...}]}: an entry
 *               is an image delivered when its "url" is not empty (a
 *               filtered image keeps its entry, "is_image_safe": false
 *               and "url": "")
 *   an error    Ideogram's: {"error": "<message>"}, with imgbill's code
 *               beside it
 *
 * A request with character references is priced apart, as Ideogram
 * prices it: the model V_3_CHARACTER, refused where nobody priced it.
 *
 * The key, the error and the reply are Ideogram's legacy API's too
 * (ngx_http_imgbill_ideogram_legacy.c).
 */


#include "ngx_http_imgbill_api.h"


enum {
    ngx_http_imgbill_ideogram_key_url = NGX_HTTP_IMGBILL_SCAN_KEY_API,
    ngx_http_imgbill_ideogram_key_b64,
    ngx_http_imgbill_ideogram_key_text
};


static ngx_int_t ngx_http_imgbill_ideogram_target(ngx_http_request_t *r,
    ngx_str_t *model, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_ideogram_check(
    ngx_http_imgbill_request_t *req, size_t image_limit);


/* by ngx_http_imgbill_ideogram_operations */
enum {
    ngx_http_imgbill_ideogram_generate = 0,
    ngx_http_imgbill_ideogram_remix,
    ngx_http_imgbill_ideogram_edit
};


ngx_http_imgbill_key_source_t  ngx_http_imgbill_ideogram_key[] = {
    { ngx_http_imgbill_key_in_header, ngx_string("Api-Key") },
    { ngx_http_imgbill_key_in_bearer, ngx_string("Authorization") },
    { ngx_http_imgbill_key_in_none, ngx_null_string }
};


/*
 * data[] is read as the choices are: one entry, one image if its url is
 * not empty (or its b64_json, which some resellers offer instead).  The
 * legacy API's descriptions are choices too, each shown by its text.
 */

static ngx_http_imgbill_scan_key_t  ngx_http_imgbill_ideogram_keys[] = {
    { ngx_string("data"), ngx_http_imgbill_key_choices },
    { ngx_string("descriptions"), ngx_http_imgbill_key_choices },
    { ngx_string("error"), ngx_http_imgbill_key_error },
    { ngx_string("url"), ngx_http_imgbill_ideogram_key_url },
    { ngx_string("b64_json"), ngx_http_imgbill_ideogram_key_b64 },
    { ngx_string("text"), ngx_http_imgbill_ideogram_key_text },
    { ngx_null_string, 0 }
};

static ngx_http_imgbill_scan_path_t  ngx_http_imgbill_ideogram_paths[] = {
    { 0, 0, 0, 0 }
};

static ngx_http_imgbill_scan_mark_t  ngx_http_imgbill_ideogram_marks[] = {
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_ideogram_key_url,
      ngx_http_imgbill_shows_url },
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_ideogram_key_b64,
      ngx_http_imgbill_shows_url },
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_ideogram_key_text,
      ngx_http_imgbill_shows_url },
    { 0, 0, 0 }
};

ngx_http_imgbill_dialect_t  ngx_http_imgbill_ideogram_dialect = {
    ngx_http_imgbill_ideogram_keys,
    ngx_http_imgbill_ideogram_paths,
    ngx_http_imgbill_ideogram_marks,
    0,
    0
};


/* a model list in OpenAI's shape, but not OpenAI's list: no client of
   /v1/models can call V_3 or UPSCALE */

ngx_http_imgbill_api_t  ngx_http_imgbill_ideogram_api = {
    ngx_string("ideogram"),
    ngx_http_imgbill_ideogram_key,
    "Api-Key: <key>",
    ngx_http_imgbill_ideogram_target,
    ngx_http_imgbill_ideogram_check,
    NULL,
    NULL,
    ngx_http_imgbill_ideogram_error,
    NGX_HTTP_IMGBILL_IDEOGRAM_ERROR_LEN,
    ngx_string("{\"object\":\"list\",\"data\":["),
    ngx_http_imgbill_ideogram_model,
    NGX_HTTP_IMGBILL_OPENAI_MODEL_LEN,
    ngx_string("]}\n"),
    &ngx_http_imgbill_ideogram_dialect,
    NULL,
    0,
    1,
    0
};


static ngx_str_t  ngx_http_imgbill_ideogram_operations[] = {
    ngx_string("generate"),
    ngx_string("remix"),
    ngx_string("edit"),
    ngx_string("reframe"),
    ngx_string("replace-background"),
    ngx_null_string
};

static const char  *ngx_http_imgbill_ideogram_speeds[] = {
    "FLASH", "TURBO", "DEFAULT", "QUALITY", NULL
};

/* the members the relay reads, in the spellings the upstream reads */
static const char  *ngx_http_imgbill_ideogram_root[] = {
    "num_images", "rendering_speed", "image", "mask",
    "style_reference_images", "character_reference_images", NULL
};

static const char  *ngx_http_imgbill_ideogram_files[] = {
    "image", "mask", "style_reference_images",
    "character_reference_images", NULL
};


/* the operation is the path's last segment */

static ngx_int_t
ngx_http_imgbill_ideogram_target(ngx_http_request_t *r, ngx_str_t *model,
    ngx_http_imgbill_request_t *req)
{
    if (ngx_http_imgbill_ideogram_op(&r->uri,
                                     ngx_http_imgbill_ideogram_operations,
                                     &req->operation)
        == NGX_ERROR)
    {
        req->expected = ".../ideogram-v3/generate, remix, edit, reframe or "
                        "replace-background";
        return NGX_HTTP_IMGBILL_REQ_NO_TARGET;
    }

    ngx_str_set(model, "V_3");

    return NGX_HTTP_IMGBILL_REQ_OK;
}


static ngx_int_t
ngx_http_imgbill_ideogram_check(ngx_http_imgbill_request_t *req,
    size_t image_limit)
{
    json_t      *v;
    ngx_int_t    rc, op;
    ngx_uint_t   i;

    op = ngx_http_imgbill_ideogram_op(&req->operation,
                                      ngx_http_imgbill_ideogram_operations,
                                      &req->operation);
    if (op == NGX_ERROR) {
        req->expected = ".../ideogram-v3/generate, remix, edit, reframe or "
                        "replace-background";
        return NGX_HTTP_IMGBILL_REQ_NO_TARGET;
    }

    if (!req->form) {
        req->param = "Content-Type";
        req->expected = "multipart/form-data: Ideogram 3.0 takes forms only";
        req->code = "invalid_content_type";
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    rc = ngx_http_imgbill_reading_keys(req->root,
                                       ngx_http_imgbill_ideogram_root, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    rc = ngx_http_imgbill_ideogram_files_read(req,
                                              ngx_http_imgbill_ideogram_files);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    /* every operation but a generation works on an image, an edit within
       its mask: a request without them is the upstream's 400 anyway */

    if (op != ngx_http_imgbill_ideogram_generate
        && json_object_get(req->root, "image") == NULL)
    {
        req->param = "image";
        req->expected = "a file";
        req->code = "missing_image";
        return NGX_HTTP_IMGBILL_REQ_MISSING;
    }

    if (op == ngx_http_imgbill_ideogram_edit
        && json_object_get(req->root, "mask") == NULL)
    {
        req->param = "mask";
        req->expected = "a file";
        req->code = "missing_mask";
        return NGX_HTTP_IMGBILL_REQ_MISSING;
    }

    ngx_http_imgbill_reading_number(req->root, "num_images");

    rc = ngx_http_imgbill_request_asked(json_object_get(req->root,
                                                        "num_images"),
                                        "num_images", req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    /* the speed chooses the price: only Ideogram's own, as it spells
       them, so that no spelling the upstream reads otherwise is cheap */

    v = json_object_get(req->root, "rendering_speed");

    if (v == NULL) {
        ngx_str_set(&req->quality, "DEFAULT");

    } else {
        for (i = 0; json_is_string(v) && ngx_http_imgbill_ideogram_speeds[i];
             i++)
        {
            if (ngx_strcmp(json_string_value(v),
                           ngx_http_imgbill_ideogram_speeds[i])
                == 0)
            {
                break;
            }
        }

        if (!json_is_string(v) || ngx_http_imgbill_ideogram_speeds[i] == NULL)
        {
            req->param = "rendering_speed";
            req->expected = "FLASH, TURBO, DEFAULT or QUALITY";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
        }

        req->quality.len = ngx_strlen(ngx_http_imgbill_ideogram_speeds[i]);
        req->quality.data = (u_char *) ngx_http_imgbill_ideogram_speeds[i];
    }

    req->size = req->operation;

    if (json_object_get(req->root, "character_reference_images")) {
        ngx_str_set(&req->model, "V_3_CHARACTER");
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * The operation a path names, its last segment (or an operation already
 * read: its own): its index among ops, which an empty one ends, and ops'
 * own string in *op; NGX_ERROR if none.  Both Ideogram APIs read theirs
 * so.
 */

ngx_int_t
ngx_http_imgbill_ideogram_op(ngx_str_t *path, ngx_str_t *ops, ngx_str_t *op)
{
    u_char      *p, *last;
    ngx_int_t    i;

    last = path->data + path->len;

    for (p = last; p > path->data && p[-1] != '/'; p--) {
        /* void */
    }

    for (i = 0; ops[i].len; i++) {
        if ((size_t) (last - p) == ops[i].len
            && ngx_strncmp(p, ops[i].data, ops[i].len) == 0)
        {
            *op = ops[i];
            return i;
        }
    }

    return NGX_ERROR;
}


/*
 * The files of a form, under the names given: each an array of file
 * sizes, never a field; and every file of the form, under any name, an
 * image the request sends.  The form reader held each to the image limit
 * already.
 */

ngx_int_t
ngx_http_imgbill_ideogram_files_read(ngx_http_imgbill_request_t *req,
    const char *const *files)
{
    json_t      *v;
    ngx_uint_t   i;
    const char  *key;

    for (i = 0; files[i]; i++) {
        v = json_object_get(req->root, files[i]);

        if (v && !json_is_array(v)) {
            req->param = files[i];
            req->expected = "a file";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
        }
    }

    req->images = 0;

    json_object_foreach(req->root, key, v) {
        req->images += json_array_size(v);
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* a list is gathered from the locations of its API's model function
   (ngx_http_imgbill_models.c): this one is Ideogram's own */

u_char *
ngx_http_imgbill_ideogram_model(u_char *p, ngx_str_t *name)
{
    return ngx_http_imgbill_openai_model(p, name);
}


u_char *
ngx_http_imgbill_ideogram_error(u_char *p, ngx_http_imgbill_error_t *err)
{
    p = ngx_cpymem(p, "{\"error\":\"", sizeof("{\"error\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, err->message.data, err->message.len);

    return ngx_sprintf(p, "\",\"code\":\"%s\"}\n", err->code);
}
