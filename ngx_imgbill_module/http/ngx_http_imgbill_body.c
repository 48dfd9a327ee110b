
/*
 * What a request asks for, before any money moves: the model from its
 * path where its API names it there, and the body, read by the compactor
 * as nginx reads it (a request body filter: the body itself goes on to
 * nginx's buffers or its temporary file, and is never gathered), checked
 * by its API once whole, and rewritten where the API asks the upstream
 * for what billing needs (a stream's usage).  Every failure leaves an
 * error in ctx->error for the access phase to send.
 */


#include "ngx_http_imgbill_ctx.h"
#include "ngx_http_imgbill_multipart.h"


#define NGX_HTTP_IMGBILL_LARGE_BODY  (1024 * 1024)

/* bytes of a body read before the read gives way to other connections */
#define NGX_HTTP_IMGBILL_BODY_SLICE  (64 * 1024)


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

    /* NGX_HTTP_IMGBILL_REQ_MISSING: the member, what it takes; the
       API's code */
    { NGX_HTTP_BAD_REQUEST, NULL, "\"%s\" is required and must be %s" },

    /* NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE: which, its size, the limit */
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "image_too_large",
      "reference image %uz is about %uz bytes; the limit is %uz bytes" },

    /* NGX_HTTP_IMGBILL_REQ_NUL_BYTE */
    { NGX_HTTP_BAD_REQUEST, "invalid_json",
      "the request body is not valid JSON: it contains a NUL byte" },

    /* NGX_HTTP_IMGBILL_REQ_BAD_COUNT: the member */
    { NGX_HTTP_BAD_REQUEST, "invalid_image_count",
      "\"%s\" must be a positive integer" },

    /* NGX_HTTP_IMGBILL_REQ_AMBIGUOUS: the key, and another */
    { NGX_HTTP_BAD_REQUEST, "ambiguous_key",
      "\"%s\" is read as \"%s\" by some upstreams (keys are compared "
      "without case or '_'): send each member once, spelled as the API "
      "spells it" },

    /* NGX_HTTP_IMGBILL_REQ_BAD_VALUE: the member, what it takes; the
       API's code, if any */
    { NGX_HTTP_BAD_REQUEST, "invalid_value", "\"%s\" must be %s" },

    /* NGX_HTTP_IMGBILL_REQ_NO_TARGET: what the path should be */
    { NGX_HTTP_NOT_FOUND, "not_found", "expected %s" },

    /* NGX_HTTP_IMGBILL_REQ_AMBIGUOUS_QUERY: the argument */
    { NGX_HTTP_BAD_REQUEST, "ambiguous_query",
      "\"%s\" must be given once, spelled so" },

    /* NGX_HTTP_IMGBILL_REQ_STREAM_FORMAT: what to ask instead */
    { NGX_HTTP_BAD_REQUEST, "alt_sse_required", "%s" },

    /* NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX: the limit */
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "request_too_large",
      "the request body is over %uz bytes of JSON outside its long strings "
      "(images, prompts)" },

    /* NGX_HTTP_IMGBILL_REQ_BAD_FORM: why */
    { NGX_HTTP_BAD_REQUEST, "invalid_multipart",
      "the multipart/form-data body cannot be read: %s" }
};


/* a form's fields have no JSON around them */
static char  ngx_http_imgbill_form_too_large[] =
    "the request body's fields are over %uz bytes";


static ngx_int_t ngx_http_imgbill_body_form(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_str_t *boundary);
static ngx_int_t ngx_http_imgbill_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_imgbill_body_yield(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_imgbill_body_drop(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_imgbill_busy(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_compact_cleanup(void *data);
static void ngx_http_imgbill_verdict(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_int_t rc,
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_admissible(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_request_t *req);


/*
 * An API that names the model in the path (Gemini's) is read there
 * before the body; its model outlives the request line's buffers, into
 * the ledger.
 */

ngx_int_t
ngx_http_imgbill_request_target(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_str_t                   model;
    ngx_http_imgbill_request_t  req;

    ngx_memzero(&req, sizeof(ngx_http_imgbill_request_t));

    rc = ctx->api->target(r, &model, &req);

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        ngx_http_imgbill_verdict(r, ctx, rc, &req);
        return NGX_ERROR;
    }

    /* (an empty one is the body's to say, or nothing) */

    if (model.len) {
        ctx->model.len = model.len;
        ctx->model.data = ngx_pstrdup(r->pool, &model);
        if (ctx->model.data == NULL) {
            return NGX_ERROR;
        }
    }

    if (req.operation.len) {
        ctx->operation.len = req.operation.len;
        ctx->operation.data = ngx_pstrdup(r->pool, &req.operation);
        if (ctx->operation.data == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


ngx_int_t
ngx_http_imgbill_body_init(ngx_conf_t *cf)
{
    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_imgbill_request_body_filter;

    return NGX_OK;
}


/*
 * The body is to be read: the compactor takes it as it comes, or the
 * form reader a multipart/form-data one where the API takes forms.  It
 * lives until the body is checked, or with the request's pool if the
 * request ends first.  With imgbill_bodies_in_flight, a body is read
 * only while the worker reads less than that (one body always may be):
 * its Content-Length is reserved now, a chunked body's bytes as they
 * come.  NGX_DECLINED with the error set: the worker is busy, or the
 * form's boundary is unusable.
 */

ngx_int_t
ngx_http_imgbill_body_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    off_t                          len;
    ngx_int_t                      rc;
    ngx_str_t                      boundary;
    ngx_pool_cleanup_t            *cln;
    ngx_http_imgbill_worker_t     *w;
    ngx_http_imgbill_loc_conf_t   *lcf;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);
    w = mcf->worker;

    len = ngx_max(r->headers_in.content_length_n, 0);

    if (w && mcf->in_flight && w->reading && w->reading + len > mcf->in_flight)
    {
        ngx_http_imgbill_busy(r, ctx);
        return NGX_DECLINED;
    }

    rc = ngx_http_imgbill_body_form(r, ctx, &boundary);

    if (rc == NGX_ERROR) {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    if (rc == NGX_OK) {
        ctx->form = ngx_http_imgbill_form_create(&boundary, lcf->image_limit,
                                                 ctx->api->form_json,
                                                 r->connection->log);
        if (ctx->form == NULL) {
            return NGX_ERROR;
        }

    } else {
        ctx->compact = ngx_http_imgbill_compact_create(
                                             NGX_HTTP_IMGBILL_COMPACT_MAX,
                                             ctx->api->marks,
                                             r->connection->log);
        if (ctx->compact == NULL) {
            return NGX_ERROR;
        }
    }

    cln->handler = ngx_http_imgbill_compact_cleanup;
    cln->data = ctx;

    if (w) {
        ctx->reserved = len;
        w->reading += len;
    }

    return NGX_OK;
}


/*
 * Whether the body is a form the API takes: NGX_OK with its boundary,
 * NGX_DECLINED (JSON, or whatever else the compactor will refuse), or
 * NGX_ERROR with the error set: a form no reader could split.
 */

static ngx_int_t
ngx_http_imgbill_body_form(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_str_t *boundary)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *type;

    type = r->headers_in.content_type;

    if (!ctx->api->forms || type == NULL) {
        return NGX_DECLINED;
    }

    rc = ngx_http_imgbill_multipart_boundary(type->value.data,
                                             type->value.len, boundary);

    if (rc == NGX_ERROR) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request,
                                   "invalid_multipart",
                                   "the multipart/form-data body has no "
                                   "usable boundary in its Content-Type "
                                   "(1 to 70 characters), or a charset "
                                   "but UTF-8");
    }

    return rc;
}


static void
ngx_http_imgbill_busy(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_SERVICE_UNAVAILABLE,
                               ngx_http_imgbill_err_server, "relay_busy",
                               "the relay is reading as many request bodies "
                               "as it may; nothing was charged, please "
                               "retry");
}


/* the body checked, or the request gone: the reader and the
   reservation go */

static void
ngx_http_imgbill_compact_cleanup(void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    ngx_http_imgbill_main_conf_t  *mcf;

    if (ctx->compact) {
        ngx_http_imgbill_compact_free(ctx->compact);
        ctx->compact = NULL;
    }

    if (ctx->form) {
        ngx_http_imgbill_form_free(ctx->form);
        ctx->form = NULL;
    }

    mcf = ngx_http_get_module_main_conf(ctx->request,
                                        ngx_http_imgbill_module);

    if (mcf->worker) {
        mcf->worker->reading -= ctx->reserved;
    }

    ctx->reserved = 0;
}


/* each piece of the body as nginx reads it, before it is saved */

static ngx_int_t
ngx_http_imgbill_request_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                          size;
    ngx_int_t                      rc;
    ngx_chain_t                   *cl;
    ngx_http_imgbill_ctx_t        *ctx;
    ngx_http_imgbill_main_conf_t  *mcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_imgbill_module);

    if (ctx == NULL || (ctx->compact == NULL && ctx->form == NULL)) {
        return ngx_http_next_request_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        if (!ngx_buf_in_memory(cl->buf)) {
            continue;
        }

        size = cl->buf->last - cl->buf->pos;
        ctx->counted += size;
        ctx->slice += size;

        if (ctx->form) {
            ngx_http_imgbill_form_feed(ctx->form, cl->buf->pos,
                                       cl->buf->last);

        } else {
            ngx_http_imgbill_compact_feed(ctx->compact, cl->buf->pos,
                                          cl->buf->last);
        }
    }

    if (ctx->counted > ctx->reserved) {
        mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

        if (mcf->worker) {
            mcf->worker->reading += ctx->counted - ctx->reserved;
            ctx->reserved = ctx->counted;

            if (mcf->in_flight && mcf->worker->reading > mcf->in_flight
                && mcf->worker->reading > ctx->reserved)
            {
                ctx->busy = 1;
            }
        }
    }

    if (ctx->busy
        || (ctx->form ? ngx_http_imgbill_form_end_known(ctx->form)
                      : ngx_http_imgbill_compact_end_known(ctx->compact)))
    {
        rc = ngx_http_imgbill_body_drop(r, in);

    } else {
        rc = ngx_http_next_request_body_filter(r, in);
    }

    return ngx_http_imgbill_body_yield(r, ctx, rc);
}


/*
 * nginx reads a body for as long as the socket has some of it (epoll is
 * edge-triggered): a client that keeps its socket full would keep the
 * worker in that loop for the whole body, its compaction included, and
 * every other connection waiting.  After each slice the read stops, as
 * ngx_ssl_recv() stops with what SSL still holds, and goes on in the
 * event loop's next turn, after the events of that turn.  NGX_AGAIN ends
 * nginx's read loop at once; the buffer just read has been passed on, so
 * the loop takes up where it was.  An HTTP/2 stream's body comes from the
 * connection's own read loop, which cannot be stopped here.
 */

static ngx_int_t
ngx_http_imgbill_body_yield(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_int_t rc)
{
    ngx_event_t  *rev;

    if (rc != NGX_OK
        || ctx->slice < NGX_HTTP_IMGBILL_BODY_SLICE
        || r->request_body == NULL
        || r->request_body->rest == 0
#if (NGX_HTTP_V2)
        || r->stream
#endif
        )
    {
        return rc;
    }

    ctx->slice = 0;
    rev = r->connection->read;

    if (rev->posted) {
        ngx_delete_posted_event(rev);
    }

    ngx_post_event(rev, &ngx_posted_next_events);

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "imgbill body read gives way");

    return NGX_AGAIN;
}


/*
 * A body already refused (not JSON, too much structure, a file over the
 * limit, the worker busy) is read to its end as nginx discards one, and
 * no byte more of it goes to the temporary file: only its end, for nginx
 * to know it read it all.
 */

static ngx_int_t
ngx_http_imgbill_body_drop(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t    *b;
    ngx_uint_t    last;
    ngx_chain_t  *cl, out;

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        last |= cl->buf->last_buf;
        cl->buf->pos = cl->buf->last;
    }

    /* the next filter is called all the same: it still flushes what it
       keeps of the body before the refusal as its buffer fills */

    if (!last) {
        return ngx_http_next_request_body_filter(r, NULL);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last_buf = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_request_body_filter(r, &out);
}


ngx_int_t
ngx_http_imgbill_read_request(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_imgbill_request_t  req;

    if (ctx->busy) {
        ngx_http_imgbill_busy(r, ctx);
        return NGX_ERROR;
    }

    if (ctx->form) {
        rc = ngx_http_imgbill_check_form(ctx->form, ctx->api,
                                         &ctx->operation, lcf->image_limit,
                                         &req);

    } else {
        rc = ngx_http_imgbill_check_compact(ctx->compact, ctx->api,
                                            &ctx->operation,
                                            lcf->image_limit, &req);
    }

    if (ctx->counted > NGX_HTTP_IMGBILL_LARGE_BODY) {
        /*
         * Megabytes of reference images took a while to read: without a
         * fresh clock the Redis timeout armed next would start in the past.
         */
        ngx_time_update();
    }

    /* a form's verdict names what the form keeps */

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        ngx_http_imgbill_verdict(r, ctx, rc, &req);
        ngx_http_imgbill_compact_cleanup(ctx);
        goto failed;
    }

    ngx_http_imgbill_compact_cleanup(ctx);

    /* the model outlives the document: it goes into the ledger (an API
       that names it in the path gave it already, unless the body does) */

    if (req.model.len) {
        ctx->model.len = req.model.len;
        ctx->model.data = ngx_pnalloc(r->pool, req.model.len);
        if (ctx->model.data == NULL) {
            goto oom;
        }

        ngx_memcpy(ctx->model.data, req.model.data, req.model.len);
    }

    if (ctx->api->rewrite && ctx->api->rewrite(r, &req) != NGX_OK) {
        goto oom;
    }

    ctx->usage_asked = req.usage_asked;
    ctx->usage_added = req.usage_added;
    ctx->once = req.once;

    /* (the size and quality a price may depend on are inside the root) */

    rc = ngx_http_imgbill_admissible(r, lcf, ctx, &req);

    json_decref(req.root);

    return rc;

oom:

    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               ngx_http_imgbill_err_server, "internal_error",
                               "out of memory");
failed:

    json_decref(req.root);

    return NGX_ERROR;
}


/*
 * Priced on the location's channel, and asking for no more images than it
 * allows: each image asked for is a generation the upstream bills, so the
 * hold and the gate cover them all.
 */

static ngx_int_t
ngx_http_imgbill_admissible(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_request_t *req)
{
    ngx_int_t                  units;
    ngx_http_imgbill_price_t  *price;

    ctx->price = ngx_http_imgbill_find_price(&lcf->tariff, ctx->channel,
                                             &ctx->model);

    if (ctx->price == NULL) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request,
                                   "model_not_supported",
                                   "model \"%V\" is not available on the "
                                   "%V channel", &ctx->model,
                                   ngx_http_imgbill_channel_name(
                                                              ctx->channel));
        return NGX_ERROR;
    }

    if (req->asked > lcf->max_images) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request,
                                   "too_many_images",
                                   "at most %ui images may be asked for in "
                                   "one request here; \"%s\" asks for %s%ui",
                                   lcf->max_images, req->count,
                                   req->asked > NGX_HTTP_IMGBILL_IMAGES_MAX
                                   ? "more than " : "",
                                   ngx_min(req->asked,
                                           NGX_HTTP_IMGBILL_IMAGES_MAX));
        return NGX_ERROR;
    }

    /* a price per image by the size and quality asked for: the request's
       own copy of it */

    units = ngx_http_imgbill_per_call(ctx->price, &req->size, &req->quality);

    if (units != ctx->price->per_call) {
        price = ngx_palloc(r->pool, sizeof(ngx_http_imgbill_price_t));
        if (price == NULL) {
            ngx_http_imgbill_set_error(r, &ctx->error,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       ngx_http_imgbill_err_server,
                                       "internal_error", "out of memory");
            return NGX_ERROR;
        }

        *price = *ctx->price;
        price->per_call = units;
        ctx->price = price;
    }

    ctx->images_asked = req->asked;
    ctx->hold = ngx_http_imgbill_hold(&lcf->tariff, ctx->channel, ctx->price,
                                      req);

    return NGX_OK;
}


/* a verdict, as the client hears it: each message takes the arguments of
   its verdict, the others are ignored */

static void
ngx_http_imgbill_verdict(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_int_t rc, ngx_http_imgbill_request_t *req)
{
    const char                   *code;
    ngx_http_imgbill_verdict_t   *v;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    /* an API may name the code of a member of its own */

    v = &ngx_http_imgbill_verdicts[rc];
    code = req->code ? req->code : v->code;

    switch (rc) {

    case NGX_HTTP_IMGBILL_REQ_INVALID_JSON:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   v->message, req->error.text,
                                   req->error.line, req->error.column);
        break;

    case NGX_HTTP_IMGBILL_REQ_BAD_COUNT:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   v->message, req->count);
        break;

    case NGX_HTTP_IMGBILL_REQ_AMBIGUOUS:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   v->message, req->key,
                                   req->spelling ? req->spelling
                                                 : "another key of its "
                                                   "object");
        break;

    case NGX_HTTP_IMGBILL_REQ_MISSING:
    case NGX_HTTP_IMGBILL_REQ_BAD_VALUE:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   v->message, req->param, req->expected);
        break;

    case NGX_HTTP_IMGBILL_REQ_NO_TARGET:
    case NGX_HTTP_IMGBILL_REQ_STREAM_FORMAT:
    case NGX_HTTP_IMGBILL_REQ_BAD_FORM:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   v->message, req->expected);
        break;

    case NGX_HTTP_IMGBILL_REQ_AMBIGUOUS_QUERY:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   v->message, req->param);
        break;

    case NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   req->form ? ngx_http_imgbill_form_too_large
                                             : v->message,
                                   (size_t) NGX_HTTP_IMGBILL_COMPACT_MAX);
        break;

    default:
        ngx_http_imgbill_set_error(r, &ctx->error, v->status,
                                   ngx_http_imgbill_err_request, code,
                                   v->message, req->images,
                                   req->image_size, lcf->image_limit);
        break;
    }
}


/*
 * A small JSON body of what the module serves itself (a code, a key's
 * limits), read whole; NGX_DECLINED with the error set if it says it is
 * larger than size, NGX_DONE while it is read.
 */

ngx_int_t
ngx_http_imgbill_small_body_read(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, size_t size,
    ngx_http_client_body_handler_pt handler)
{
    ngx_int_t  rc;

    if (r->headers_in.content_length_n > (off_t) size) {
        ngx_http_imgbill_small_body_too_large(r, ctx, size);
        return NGX_DECLINED;
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_reading);

    rc = ngx_http_read_client_request_body(r, handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


/*
 * That body, gathered into buf: NGX_DECLINED if it does not fit.  One in a
 * file was more than a buffer, so more than any of them takes.
 */

ngx_int_t
ngx_http_imgbill_small_body(ngx_http_request_t *r, u_char *buf, size_t size,
    size_t *len)
{
    size_t        n;
    ngx_chain_t  *cl;

    *len = 0;

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        n = (size_t) ngx_buf_size(cl->buf);

        if (n == 0) {
            continue;
        }

        if (!ngx_buf_in_memory(cl->buf)) {
            return NGX_DECLINED;
        }

        if (n > size - *len) {
            return NGX_DECLINED;
        }

        ngx_memcpy(buf + *len, cl->buf->pos, n);
        *len += n;
    }

    return NGX_OK;
}


void
ngx_http_imgbill_small_body_too_large(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, size_t size)
{
    ngx_http_imgbill_set_error(r, &ctx->error,
                               NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                               ngx_http_imgbill_err_request,
                               "request_too_large",
                               "the body is a small JSON object here, at "
                               "most %uz bytes", size);
}
