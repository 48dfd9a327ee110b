
/*
 * What a request asks for, before any money moves: Gemini's model and
 * method from its path, and the body, read into memory, validated, and
 * for an OpenAI stream rewritten to ask the upstream for usage.  Every
 * failure leaves an error in ctx->error for the access phase to send.
 */


#include "ngx_http_imgbill_module.h"


#define NGX_HTTP_IMGBILL_LARGE_BODY  (1024 * 1024)


/* what the client hears of each of the validator's verdicts */
typedef struct {
    ngx_uint_t                     status;
    const char                    *code;
    const char                    *message;
} ngx_http_imgbill_verdict_t;


static ngx_http_imgbill_verdict_t  ngx_http_imgbill_verdicts[] = {

    /* NGX_HTTP_IMGBILL_REQ_OK */
    { NGX_HTTP_OK, NULL, NULL },

    /* NGX_HTTP_IMGBILL_REQ_EMPTY */
    { NGX_HTTP_BAD_REQUEST, "invalid_json", "the request body is empty" },

    /* NGX_HTTP_IMGBILL_REQ_INVALID_JSON: jansson's text, line and column */
    { NGX_HTTP_BAD_REQUEST, "invalid_json",
      "the request body is not valid JSON: %s at line %d column %d" },

    /* NGX_HTTP_IMGBILL_REQ_NOT_OBJECT */
    { NGX_HTTP_BAD_REQUEST, "invalid_json",
      "the request body must be a JSON object" },

    /* NGX_HTTP_IMGBILL_REQ_NO_MODEL */
    { NGX_HTTP_BAD_REQUEST, "missing_model",
      "\"model\" is required and must be a string" },

    /* NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE: which, its size, the limit */
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "image_too_large",
      "reference image %uz is about %uz bytes; the limit is %uz bytes" },

    /* NGX_HTTP_IMGBILL_REQ_NUL_BYTE */
    { NGX_HTTP_BAD_REQUEST, "invalid_json",
      "the request body is not valid JSON: it contains a NUL byte" },

    /* NGX_HTTP_IMGBILL_REQ_NO_CONTENTS */
    { NGX_HTTP_BAD_REQUEST, "missing_contents",
      "\"contents\" is required and must be an array" },

    /* NGX_HTTP_IMGBILL_REQ_STREAM_OPTIONS */
    { NGX_HTTP_BAD_REQUEST, "invalid_stream_options",
      "\"stream_options\" must be an object, its \"include_usage\" true "
      "or false" },

    /* NGX_HTTP_IMGBILL_REQ_BAD_COUNT: the member */
    { NGX_HTTP_BAD_REQUEST, "invalid_image_count",
      "\"%s\" must be a positive integer" },

    /* NGX_HTTP_IMGBILL_REQ_AMBIGUOUS: the key, and another */
    { NGX_HTTP_BAD_REQUEST, "ambiguous_key",
      "\"%s\" is read as \"%s\" by some upstreams (keys are compared "
      "without case or '_'): send each member once, spelled as the API "
      "spells it" },

    /* NGX_HTTP_IMGBILL_REQ_BAD_VALUE: the member, what it takes */
    { NGX_HTTP_BAD_REQUEST, "invalid_value",
      "\"%s\" must be %s" }
};


static ngx_int_t ngx_http_imgbill_query_once(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_imgbill_ask_usage(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_str_t *body,
    ngx_http_imgbill_request_t *req);


/*
 * Gemini's native API names the model and the streaming in the path
 * (".../models/{model}:streamGenerateContent?alt=sse"); the key was
 * taken out of the query with the key itself (ngx_http_imgbill_api_key).
 */

ngx_int_t
ngx_http_imgbill_request_target(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_str_t   model, alt;
    ngx_uint_t  stream;

    if (ngx_http_imgbill_gemini_target(&r->uri, &model, &stream) != NGX_OK) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_NOT_FOUND,
                                   "invalid_request_error", "not_found",
                                   "expected .../models/{model}:"
                                   "generateContent or "
                                   ":streamGenerateContent");
        return NGX_ERROR;
    }

    if (ngx_http_imgbill_query_once(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* without alt=sse Google streams one JSON array, which is not read */

    if (stream
        && (ngx_http_arg(r, (u_char *) "alt", 3, &alt) != NGX_OK
            || alt.len != 3 || ngx_strncmp(alt.data, "sse", 3) != 0))
    {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "alt_sse_required",
                                   "streamGenerateContent is relayed as "
                                   "server-sent events only: add ?alt=sse");
        return NGX_ERROR;
    }

    ctx->model.len = model.len;
    ctx->model.data = ngx_pstrdup(r->pool, &model);
    if (ctx->model.data == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The arguments the relay acts on, "alt" and "key", are read once: given
 * twice they could be read two ways, and so could an "alt" spelled
 * otherwise than so (nginx's arguments ignore case, Google's do not, and
 * Google decodes names).  The client's query is the unparsed URI's: the
 * keys are masked there, their names as sent.
 */

static ngx_int_t
ngx_http_imgbill_query_once(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    u_char      *p, *last, *end, *eq;
    ngx_uint_t   alts, keys, spelled;

    alts = 0;
    keys = 0;
    spelled = 0;

    last = r->unparsed_uri.data + r->unparsed_uri.len;
    p = ngx_strlchr(r->unparsed_uri.data, last, '?');

    for (p = p ? p + 1 : last; p < last; p = end + 1) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');
        eq = eq ? eq : end;

        switch (ngx_http_imgbill_arg_is(p, eq, "alt")) {
        case 2:
            spelled = 1;
            /* fall through */
        case 1:
            alts++;
            break;
        }

        if (ngx_http_imgbill_arg_is(p, eq, "key")) {
            keys++;
        }
    }

    if (alts < 2 && keys < 2 && !spelled) {
        return NGX_OK;
    }

    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "ambiguous_query",
                               "\"%s\" must be given once, spelled so",
                               (alts > 1 || spelled) ? "alt" : "key");
    return NGX_ERROR;
}


/* the body as one piece of memory */

static ngx_int_t
ngx_http_imgbill_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = NULL;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && ngx_buf_in_memory(cl->buf)) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    /*
     * A body spilled to a temporary file (client_body_buffer_size smaller
     * than the request) is read back, like the static module reads files.
     */

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        if (!b->in_file) {
            /* a special buffer: the end of an empty body */
            continue;
        }

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "imgbill: cannot read the request body back "
                          "from \"%V\"", &b->file->name);
            return NGX_ERROR;
        }

        p += n;
    }

    body->len = p - body->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_imgbill_read_request(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_str_t                    body;
    ngx_http_imgbill_verdict_t  *v;
    ngx_http_imgbill_request_t   req;

    if (ngx_http_imgbill_read_body(r, &body) != NGX_OK) {
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "server_error", "internal_error",
                                   "cannot read the request body");
        return NGX_ERROR;
    }

    rc = ngx_http_imgbill_check_request(body.data, body.len, lcf->api,
                                        lcf->image_limit, &req);

    if (body.len > NGX_HTTP_IMGBILL_LARGE_BODY) {
        /*
         * Parsing megabytes of reference images takes a while: without a
         * fresh clock the Redis timeout armed next would start in the past.
         */
        ngx_time_update();
    }

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        v = &ngx_http_imgbill_verdicts[rc];

        /* each message takes the arguments of its verdict, the others
           are ignored */

        if (rc == NGX_HTTP_IMGBILL_REQ_INVALID_JSON) {
            ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                       "invalid_request_error", v->code,
                                       v->message, req.error.text,
                                       req.error.line, req.error.column);

        } else if (rc == NGX_HTTP_IMGBILL_REQ_BAD_COUNT) {
            ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                       "invalid_request_error", v->code,
                                       v->message, req.count);

        } else if (rc == NGX_HTTP_IMGBILL_REQ_AMBIGUOUS) {
            ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                       "invalid_request_error", v->code,
                                       v->message, req.key,
                                       req.spelling ? req.spelling
                                                    : "another key of its "
                                                      "object");

        } else if (rc == NGX_HTTP_IMGBILL_REQ_BAD_VALUE) {
            ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                       "invalid_request_error", v->code,
                                       v->message, req.param, req.expected);

        } else {
            ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                       "invalid_request_error", v->code,
                                       v->message, req.images,
                                       req.image_size, lcf->image_limit);
        }

        goto failed;
    }

    /* the model outlives the document: it goes into the ledger (Gemini's
       came with the path) */

    if (lcf->api == NGX_HTTP_IMGBILL_API_OPENAI) {
        ctx->model.len = req.model.len;
        ctx->model.data = ngx_pnalloc(r->pool, req.model.len);
        if (ctx->model.data == NULL) {
            goto oom;
        }

        ngx_memcpy(ctx->model.data, req.model.data, req.model.len);
    }

    if (ngx_http_imgbill_ask_usage(r, ctx, &body, &req) != NGX_OK) {
        goto oom;
    }

    json_decref(req.root);

    ctx->price = ngx_http_imgbill_find_price(lcf, &ctx->model);

    if (ctx->price == NULL) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   "model_not_supported",
                                   "model \"%V\" is not available on the "
                                   "%V channel", &ctx->model,
                                   ngx_http_imgbill_channel_name(
                                                              ctx->channel));
        return NGX_ERROR;
    }

    /*
     * Each image asked for is a generation the upstream bills: the hold
     * and the gate cover them all, and a location sets how many one
     * request may ask for.
     */

    if (req.asked > lcf->max_images) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "too_many_images",
                                   "at most %ui images may be asked for in "
                                   "one request here; \"%s\" asks for %s%ui",
                                   lcf->max_images, req.count,
                                   req.asked > NGX_HTTP_IMGBILL_IMAGES_MAX
                                   ? "more than " : "",
                                   ngx_min(req.asked,
                                           NGX_HTTP_IMGBILL_IMAGES_MAX));
        return NGX_ERROR;
    }

    ctx->images_asked = req.asked;
    ctx->hold = ngx_http_imgbill_hold(lcf, ctx->price, &req);

    return NGX_OK;

oom:

    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "server_error", "internal_error",
                               "out of memory");
failed:

    json_decref(req.root);

    return NGX_ERROR;
}


/*
 * An OpenAI streamed request is made to report usage: without
 * "stream_options": {"include_usage": true} an upstream sends none, and
 * a stream could not be billed.  The member goes in after the body's
 * opening brace, without a copy of the (maybe megabytes of) body, when
 * the body has none; a body that has one (null, or without include_usage
 * true) is written anew with it, its one stream_options.
 */

static ngx_int_t
ngx_http_imgbill_ask_usage(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_str_t *body,
    ngx_http_imgbill_request_t *req)
{
    u_char       *p, *brace;
    size_t        len;
    json_t       *options;
    ngx_buf_t    *b, *rest;
    ngx_chain_t  *cl;

    static u_char  member[] = "\"stream_options\":{\"include_usage\":true},";

    if (ctx->api != NGX_HTTP_IMGBILL_API_OPENAI) {
        /* Gemini's path says whether it streams, and usage always comes */
        return NGX_OK;
    }

    ctx->usage_asked = req->usage_asked;

    if (!req->stream || req->usage_asked) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    rest = NULL;

    if (!req->stream_options) {
        brace = ngx_strlchr(body->data, body->data + body->len, '{');
        if (brace == NULL) {
            return NGX_ERROR;
        }

        brace++;
        len = brace - body->data;

        p = ngx_pnalloc(r->pool, len + sizeof(member) - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        b->pos = p;
        b->last = ngx_cpymem(ngx_cpymem(p, body->data, len),
                             member, sizeof(member) - 1);

        rest = ngx_calloc_buf(r->pool);
        if (rest == NULL) {
            return NGX_ERROR;
        }

        rest->pos = brace;
        rest->last = body->data + body->len;
        rest->memory = 1;

    } else {

        /*
         * The client's stream_options is replaced, never added to: a
         * second member would leave the upstream to pick one (Go's
         * encoding/json takes the last, and a null there).
         */

        options = json_object_get(req->root, "stream_options");

        if (!json_is_object(options)) {
            options = json_object();

            if (json_object_set_new(req->root, "stream_options", options)
                != 0)
            {
                return NGX_ERROR;
            }
        }

        if (json_object_set_new(options, "include_usage", json_true()) != 0)
        {
            return NGX_ERROR;
        }

        len = json_dumpb(req->root, NULL, 0, JSON_COMPACT);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL
            || json_dumpb(req->root, (char *) p, len, JSON_COMPACT) != len)
        {
            return NGX_ERROR;
        }

        b->pos = p;
        b->last = p + len;
    }

    b->memory = 1;

    /* the proxy sends these bufs, and their length as Content-Length */

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    if (rest) {
        cl->next = ngx_alloc_chain_link(r->pool);
        if (cl->next == NULL) {
            return NGX_ERROR;
        }

        cl->next->buf = rest;
        cl->next->next = NULL;
    }

    (rest ? rest : b)->last_buf = 1;

    r->request_body->bufs = cl;
    r->headers_in.content_length_n = (b->last - b->pos)
                                     + (rest ? rest->last - rest->pos : 0);

    ctx->usage_added = 1;

    return NGX_OK;
}
