
/*
 * imgbill: Ideogram's legacy API (models 1.0 to 2a), POST .../OPERATION,
 * OPERATION one of generate, remix, edit, upscale and describe.  Its key,
 * its replies and its errors are Ideogram 3.0's
 * (ngx_http_imgbill_ideogram.c).
 *
 *   generate   JSON: {"image_request":{"model","num_images",...}}
 *   remix      multipart/form-data: "image_request", the same object as
 *   upscale    JSON text, and the file "image_file"
 *   edit       multipart/form-data: "model", "num_images" and the other
 *              members as fields, the files "image_file" and "mask"
 *   describe   multipart/form-data: the file "image_file"; its reply is
 *              {"descriptions":[{"text"}]}
 *
 * A description's reply is {"descriptions":[{"text"}]}, read by the same
 * dialect.
 *
 * The model is the request's (absent: V_2, as Ideogram defaults it, its
 * dearest), priced per image; an upscale is the model UPSCALE, priced per
 * image it returns, a description the model DESCRIBE, priced per call.
 * The model and the images asked for are read where the operation takes
 * them and refused anywhere else: an upstream that read the other place
 * would make images nobody held for.
 */


#include "ngx_http_imgbill_api.h"


typedef enum {
    ngx_http_imgbill_legacy_generate = 0,
    ngx_http_imgbill_legacy_remix,
    ngx_http_imgbill_legacy_edit,
    ngx_http_imgbill_legacy_upscale,
    ngx_http_imgbill_legacy_describe
} ngx_http_imgbill_legacy_op_e;


static ngx_int_t ngx_http_imgbill_legacy_target(ngx_http_request_t *r,
    ngx_str_t *model, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_legacy_check(
    ngx_http_imgbill_request_t *req, size_t image_limit);
static ngx_int_t ngx_http_imgbill_legacy_misplaced(
    ngx_http_imgbill_request_t *req, const char *const *names);
static ngx_int_t ngx_http_imgbill_legacy_request(
    ngx_http_imgbill_request_t *req, json_t *obj, ngx_uint_t op);


static const char  *ngx_http_imgbill_legacy_json[] = {
    "image_request", NULL
};


ngx_http_imgbill_api_t  ngx_http_imgbill_ideogram_legacy_api = {
    ngx_string("ideogram_legacy"),
    ngx_http_imgbill_ideogram_key,
    "Api-Key: <key>",
    ngx_http_imgbill_legacy_target,
    ngx_http_imgbill_legacy_check,
    NULL,
    NULL,
    ngx_http_imgbill_ideogram_error,
    NGX_HTTP_IMGBILL_IDEOGRAM_ERROR_LEN,
    ngx_string("{\"object\":\"list\",\"data\":["),
    ngx_http_imgbill_ideogram_model,
    NGX_HTTP_IMGBILL_OPENAI_MODEL_LEN,
    ngx_string("]}\n"),
    &ngx_http_imgbill_ideogram_dialect,
    ngx_http_imgbill_legacy_json,
    0,
    1,
    0
};


/* by ngx_http_imgbill_legacy_op_e */
static ngx_str_t  ngx_http_imgbill_legacy_ops[] = {
    ngx_string("generate"),
    ngx_string("remix"),
    ngx_string("edit"),
    ngx_string("upscale"),
    ngx_string("describe"),
    ngx_null_string
};

/* the members the relay reads, in the spellings the upstream reads: the
   root's, and the image request's */
static const char  *ngx_http_imgbill_legacy_root[] = {
    "image_request", "image_file", "mask", "model", "num_images", NULL
};

static const char  *ngx_http_imgbill_legacy_members[] = {
    "model", "num_images", NULL
};

static const char  *ngx_http_imgbill_legacy_in_request[] = {
    "image_request", NULL
};

static const char  *ngx_http_imgbill_legacy_files[] = {
    "image_file", "mask", NULL
};


/* the operation is the path's last segment; an upscale or a description
   names no model, the path does */

static ngx_int_t
ngx_http_imgbill_legacy_target(ngx_http_request_t *r, ngx_str_t *model,
    ngx_http_imgbill_request_t *req)
{
    switch (ngx_http_imgbill_ideogram_op(&r->uri, ngx_http_imgbill_legacy_ops,
                                         &req->operation))
    {

    case NGX_ERROR:
        req->expected = ".../generate, remix, edit, upscale or describe";
        return NGX_HTTP_IMGBILL_REQ_NO_TARGET;

    case ngx_http_imgbill_legacy_upscale:
        ngx_str_set(model, "UPSCALE");
        break;

    case ngx_http_imgbill_legacy_describe:
        ngx_str_set(model, "DESCRIBE");
        break;

    default:
        ngx_str_null(model);
        break;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


static ngx_int_t
ngx_http_imgbill_legacy_check(ngx_http_imgbill_request_t *req,
    size_t image_limit)
{
    json_t     *ir;
    ngx_int_t   rc, op;

    op = ngx_http_imgbill_ideogram_op(&req->operation,
                                      ngx_http_imgbill_legacy_ops,
                                      &req->operation);

    if (op == NGX_ERROR) {
        req->expected = ".../generate, remix, edit, upscale or describe";
        return NGX_HTTP_IMGBILL_REQ_NO_TARGET;
    }

    /* a generation is JSON, the others are forms, as Ideogram takes them */

    if (op == ngx_http_imgbill_legacy_generate ? req->form : !req->form) {
        req->param = "Content-Type";
        req->expected = req->form ? "application/json for a generation"
                                  : "multipart/form-data";
        req->code = "invalid_content_type";
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    rc = ngx_http_imgbill_reading_keys(req->root,
                                       ngx_http_imgbill_legacy_root, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    /* an edit's members are fields of their own, the others' are in
       image_request */

    rc = ngx_http_imgbill_legacy_misplaced(req,
                                     op == ngx_http_imgbill_legacy_edit
                                     ? ngx_http_imgbill_legacy_in_request
                                     : ngx_http_imgbill_legacy_members);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    if (req->form) {
        rc = ngx_http_imgbill_ideogram_files_read(req,
                                               ngx_http_imgbill_legacy_files);
        if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
            return rc;
        }

        if (json_object_get(req->root, "image_file") == NULL) {
            req->param = "image_file";
            req->expected = "a file";
            req->code = "missing_image";
            return NGX_HTTP_IMGBILL_REQ_MISSING;
        }
    }

    switch (op) {

    case ngx_http_imgbill_legacy_describe:
        /* one price for the call, however many descriptions it gives */
        req->once = 1;
        return NGX_HTTP_IMGBILL_REQ_OK;

    case ngx_http_imgbill_legacy_edit:
        if (json_object_get(req->root, "mask") == NULL) {
            req->param = "mask";
            req->expected = "a file";
            req->code = "missing_mask";
            return NGX_HTTP_IMGBILL_REQ_MISSING;
        }

        ngx_http_imgbill_reading_number(req->root, "num_images");

        return ngx_http_imgbill_legacy_request(req, req->root, op);

    default:
        break;
    }

    ir = json_object_get(req->root, "image_request");

    if (!json_is_object(ir)) {
        req->param = "image_request";
        req->expected = "an object";
        req->code = "missing_image_request";
        return NGX_HTTP_IMGBILL_REQ_MISSING;
    }

    rc = ngx_http_imgbill_reading_keys(ir, ngx_http_imgbill_legacy_members,
                                       req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    return ngx_http_imgbill_legacy_request(req, ir, op);
}


/* members the root has no place for in this operation (the keys were
   compared without case already) */

static ngx_int_t
ngx_http_imgbill_legacy_misplaced(ngx_http_imgbill_request_t *req,
    const char *const *names)
{
    ngx_uint_t  i;

    for (i = 0; names[i]; i++) {
        if (json_object_get(req->root, names[i])) {
            req->param = names[i];
            req->expected = "absent here: Ideogram reads it elsewhere in "
                            "this operation";
            req->code = "misplaced_member";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
        }
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* the model and the images asked for, where the request has them; an
   upscale's model is the path's */

static ngx_int_t
ngx_http_imgbill_legacy_request(ngx_http_imgbill_request_t *req,
    json_t *obj, ngx_uint_t op)
{
    json_t  *model;

    if (op != ngx_http_imgbill_legacy_upscale) {
        model = json_object_get(obj, "model");

        if (model == NULL || json_is_null(model)) {
            ngx_str_set(&req->model, "V_2");

        } else if (!json_is_string(model) || json_string_length(model) == 0
                   || ngx_http_imgbill_request_long(req, model))
        {
            req->param = "model";
            req->expected = "a model's name";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;

        } else {
            req->model.len = json_string_length(model);
            req->model.data = (u_char *) json_string_value(model);
        }
    }

    return ngx_http_imgbill_request_asked(json_object_get(obj, "num_images"),
                                          "num_images", req);
}
