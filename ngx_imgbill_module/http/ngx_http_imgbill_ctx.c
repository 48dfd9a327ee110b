
/*
 * A request's life: its context, the states it goes through, and what
 * happens to its money when it ends before its time.
 *
 *   reading -> admitting -> admitted -> collecting -> settling -> emitting
 *           -> passing;  or -> rejected;  or admitted -> released;
 *   a stream: admitted -> streaming -> settling -> emitting -> passing
 *   looking_up -> authorized (a model list);  or -> rejected
 *
 * The pool cleanup gives back a hold that was never settled (the client
 * went away, the upstream failed mid-reply, a later phase finalized the
 * request).  A command still in flight when the request ends outlives it,
 * as an orphan (ngx_http_imgbill_orphan.c).
 *
 * While a request holds money (admitted, collecting, streaming, settling)
 * its hold is in its worker's store: a worker that exits with generations
 * in flight journals their holds, for the next workers to release, and a
 * long request's hold is kept alive.
 */


#include "ngx_http_imgbill_ctx.h"


static ngx_uint_t ngx_http_imgbill_holding(ngx_http_imgbill_state_e state);
static void ngx_http_imgbill_cleanup(void *data);


#if (NGX_DEBUG)

static const char  *ngx_http_imgbill_state_names[] = {
    "reading",
    "admitting",
    "rejected",
    "admitted",
    "collecting",
    "settling",
    "emitting",
    "passing",
    "released",
    "looking_up",
    "authorized",
    "keyed",
    "streaming"
};

#endif


ngx_http_imgbill_ctx_t *
ngx_http_imgbill_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t      *cln;
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_imgbill_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    /*
     * An internal redirect (error_page) wipes module contexts; the request
     * still holds money, so find the context through its pool cleanup,
     * as the realip module does.
     */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_imgbill_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_imgbill_module);
            break;
        }
    }

    return ctx;
}


ngx_http_imgbill_ctx_t *
ngx_http_imgbill_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t            *cln;
    ngx_http_variable_value_t     *vv;
    ngx_http_imgbill_ctx_t        *ctx;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    vv = ngx_http_imgbill_request_id(r, mcf);
    if (vv == NULL || vv->not_found) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_imgbill_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     ctx->state = ngx_http_imgbill_reading;
     *     ctx->cmd = NULL;
     *     ctx->body = NULL;
     *     ctx->charge = 0;
     */

    ctx->request = r;
    ctx->request_id.len = vv->len;
    ctx->request_id.data = vv->data;
    ctx->prompt_tokens = -1;
    ctx->completion_tokens = -1;

    cln->handler = ngx_http_imgbill_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_imgbill_module);

    return ctx;
}


void
ngx_http_imgbill_set_state(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_state_e state)
{
    ngx_uint_t                was, is;
    ngx_http_imgbill_held_t  *h;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                   "imgbill: request %V %s -> %s", &ctx->request_id,
                   ngx_http_imgbill_state_names[ctx->state],
                   ngx_http_imgbill_state_names[state]);

    was = ngx_http_imgbill_holding(ctx->state);
    is = ngx_http_imgbill_holding(state);

    ctx->state = state;

    /* a settlement in flight ends the hold itself: not to be refreshed */
    ctx->placed.settling = (state == ngx_http_imgbill_settling);

    if (was == is) {
        return;
    }

    if (was) {
        ngx_http_imgbill_store_unhold(&ctx->placed);
        return;
    }

    h = &ctx->placed;
    h->request_id = ctx->request_id;
    h->account = ctx->account;
    h->hold = ctx->hold;
    h->since = ngx_time();

    if (ngx_http_imgbill_limited_key(ctx, &h->key) == NULL) {
        ngx_str_null(&h->key);
    }

    ngx_http_imgbill_store_hold(ngx_http_imgbill_store(ctx->request), h);
}


/*
 * The states in which a hold is placed and its fate is not yet in Redis:
 * settling counts until the settle script answers, since a worker killed
 * meanwhile leaves the hold with nobody to release it.
 */

static ngx_uint_t
ngx_http_imgbill_holding(ngx_http_imgbill_state_e state)
{
    switch (state) {

    case ngx_http_imgbill_admitted:
    case ngx_http_imgbill_collecting:
    case ngx_http_imgbill_streaming:
    case ngx_http_imgbill_settling:
        return 1;

    default:
        return 0;
    }
}


void
ngx_http_imgbill_settlement(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_settle_t *s)
{
    s->request_id = ctx->request_id;
    s->account = ctx->account;
    s->model = ctx->model;
    s->channel = ctx->channel;
    s->charge = ctx->charge;
    s->hold = ctx->hold;
    s->prompt_tokens = ctx->prompt_tokens;
    s->completion_tokens = ctx->completion_tokens;
    s->images = ctx->images;
    s->api = ctx->api->name;
    s->decided = ctx->settled_at ? ctx->settled_at : ngx_time();
    s->key.data = ctx->key_hash;
    s->key.len = NGX_HTTP_IMGBILL_KEY_ID_LEN;
    s->key_limits = ctx->key_limits;
}


/* the key's id into *key if it has limits to count against, else NULL */

ngx_str_t *
ngx_http_imgbill_limited_key(ngx_http_imgbill_ctx_t *ctx, ngx_str_t *key)
{
    if (!ctx->key_limits) {
        return NULL;
    }

    key->data = ctx->key_hash;
    key->len = NGX_HTTP_IMGBILL_KEY_ID_LEN;

    return key;
}


/*
 * How the request ended, for the access log and the metrics alike (the
 * log phase runs before the pool cleanup releases what an unfinished
 * request held): 0 charged, a free reason, or NGX_HTTP_IMGBILL_END_*.
 */

ngx_uint_t
ngx_http_imgbill_ended(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    switch (ctx->state) {

    case ngx_http_imgbill_rejected:
        return NGX_HTTP_IMGBILL_END_REJECTED;

    case ngx_http_imgbill_authorized:
        return NGX_HTTP_IMGBILL_END_LISTED;

    case ngx_http_imgbill_settling:
    case ngx_http_imgbill_emitting:
    case ngx_http_imgbill_passing:
    case ngx_http_imgbill_released:
        if (ctx->charge > 0) {
            return ngx_http_imgbill_free_none;
        }

        return ctx->free_reason ? ctx->free_reason
                                : ngx_http_imgbill_free_upstream_error;

    case ngx_http_imgbill_streaming:
        if (ngx_http_imgbill_stream_cut(ctx) == NGX_OK) {
            return ngx_http_imgbill_free_none;
        }

        return r->connection->error ? ngx_http_imgbill_free_client_gone
                                    : ngx_http_imgbill_free_upstream_cut;

    case ngx_http_imgbill_admitted:
    case ngx_http_imgbill_collecting:
        return r->connection->error ? ngx_http_imgbill_free_client_gone
                                    : NGX_HTTP_IMGBILL_END_UNFINISHED;

    default:
        return NGX_HTTP_IMGBILL_END_UNFINISHED;
    }
}


static void
ngx_http_imgbill_cleanup(void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    if (ngx_http_imgbill_holding(ctx->state)) {
        /* the context goes with the pool; what it holds is handed on */
        ngx_http_imgbill_store_unhold(&ctx->placed);
    }

    switch (ctx->state) {

    case ngx_http_imgbill_admitting:

        /* the reply may still place a hold: give it back when it comes */
        ngx_http_imgbill_orphan_adopt(ctx);
        break;

    case ngx_http_imgbill_streaming:

        /* the client left, or the upstream died: free unless its image
           reached the client, and the operator hears what it cost */
        ngx_http_imgbill_stream_abandoned(ctx);

        if (ngx_http_imgbill_stream_cut(ctx) == NGX_OK) {
            ngx_http_imgbill_orphan_settle(ctx);
            break;
        }

        ngx_http_imgbill_release(ctx);
        break;

    case ngx_http_imgbill_admitted:
    case ngx_http_imgbill_collecting:

        if (ctx->request->connection->error) {
            ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                          "imgbill: the client of request %V left before "
                          "its reply, not charged", &ctx->request_id);

        } else {
            ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                          "imgbill: request %V ended unsettled, "
                          "releasing its hold", &ctx->request_id);
        }

        ngx_http_imgbill_release(ctx);
        break;

    case ngx_http_imgbill_looking_up:

        /* nothing was asked of Redis that needs undoing */
        ngx_http_imgbill_batch_rebind(ctx->cmd, NULL, NULL);
        break;

    case ngx_http_imgbill_settling:

        /* the settle goes on without the request; if it fails, the
           journal keeps it */
        ngx_http_imgbill_orphan_adopt(ctx);
        break;

    default:
        break;
    }
}
