
/*
 * A request's life: its context, the states it goes through, what the log
 * phase reads of it ($imgbill_*), and what happens to its money when it
 * ends before its time.
 *
 *   reading -> admitting -> admitted -> collecting -> settling -> emitting
 *           -> passing;  or -> rejected;  or admitted -> released;
 *   a stream: admitted -> streaming -> settling -> emitting -> passing
 *   looking_up -> authorized (a model list);  or -> rejected
 *
 * The pool cleanup gives back a hold that was never settled (the client
 * went away, the upstream failed mid-reply, a later phase finalized the
 * request).  A command still in flight when the request ends outlives it:
 * its handler is re-pointed to an orphan, a heap copy of what the command
 * needs to finish, which releases the hold or journals the settlement.
 *
 * While a request holds money (admitted, collecting, streaming, settling)
 * its context is in its worker's mcf->inflight: a worker that exits with
 * generations in flight journals their holds, for the next workers to
 * release (ngx_http_imgbill_journal.c).
 */


#include "ngx_http_imgbill_journal.h"


/* what a command needs to finish its work after its request is gone */
typedef struct {
    ngx_http_imgbill_main_conf_t  *mcf;
    ngx_http_imgbill_settle_t      settle;
    u_char                         key_hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    u_char                         account[NGX_HTTP_IMGBILL_ACCOUNT_MAX];
} ngx_http_imgbill_orphan_t;


static ngx_uint_t ngx_http_imgbill_holding(ngx_http_imgbill_state_e state);
static ngx_int_t ngx_http_imgbill_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static const char *ngx_http_imgbill_outcome(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_cleanup(void *data);
static ngx_http_imgbill_orphan_t *ngx_http_imgbill_orphan(
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_orphan_admitted(ngx_http_imgbill_reply_t *reply,
    void *data);
static void ngx_http_imgbill_orphan_settle(ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_orphan_settled(ngx_http_imgbill_reply_t *reply,
    void *data);


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
    "streaming"
};

#endif


typedef enum {
    ngx_http_imgbill_var_account = 0,
    ngx_http_imgbill_var_channel,
    ngx_http_imgbill_var_charge,
    ngx_http_imgbill_var_balance,
    ngx_http_imgbill_var_prompt_tokens,
    ngx_http_imgbill_var_completion_tokens,
    ngx_http_imgbill_var_request_id,
    ngx_http_imgbill_var_outcome,
    ngx_http_imgbill_var_would_charge,
    ngx_http_imgbill_var_images,
    ngx_http_imgbill_var_reason
} ngx_http_imgbill_var_e;


static ngx_http_variable_t  ngx_http_imgbill_vars[] = {

    { ngx_string("imgbill_account"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_account, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_channel"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_channel, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_charge"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_charge, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_balance"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_balance, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_prompt_tokens"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_prompt_tokens, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_completion_tokens"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_completion_tokens, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_request_id"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_request_id, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_outcome"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_outcome, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_would_charge"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_would_charge, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_images"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_images, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_reason"), NULL, ngx_http_imgbill_variable,
      ngx_http_imgbill_var_reason, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


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
    ngx_uint_t                     was, is;
    ngx_http_imgbill_main_conf_t  *mcf;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                   "imgbill: request %V %s -> %s", &ctx->request_id,
                   ngx_http_imgbill_state_names[ctx->state],
                   ngx_http_imgbill_state_names[state]);

    was = ngx_http_imgbill_holding(ctx->state);
    is = ngx_http_imgbill_holding(state);

    ctx->state = state;

    if (was == is) {
        return;
    }

    if (was) {
        ngx_queue_remove(&ctx->inflight);
        return;
    }

    mcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_imgbill_module);

    ngx_queue_insert_tail(&mcf->inflight, &ctx->inflight);
    ngx_http_imgbill_journal_holding(mcf, ctx);
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
}


ngx_int_t
ngx_http_imgbill_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_imgbill_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                  *p;
    ngx_int_t                n;
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_imgbill_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case ngx_http_imgbill_var_account:
        if (ctx->account.len == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = ctx->account.data;
        v->len = ctx->account.len;
        break;

    case ngx_http_imgbill_var_channel:
        v->data = ngx_http_imgbill_channel_name(ctx->channel)->data;
        v->len = ngx_http_imgbill_channel_name(ctx->channel)->len;
        break;

    case ngx_http_imgbill_var_request_id:
        v->data = ctx->request_id.data;
        v->len = ctx->request_id.len;
        break;

    case ngx_http_imgbill_var_outcome:
        v->data = (u_char *) ngx_http_imgbill_outcome(r, ctx);
        v->len = ngx_strlen(v->data);
        break;

    case ngx_http_imgbill_var_reason:
        v->data = (u_char *) ngx_http_imgbill_reason(r, ctx);
        v->len = ngx_strlen(v->data);

        if (v->len == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        break;

    case ngx_http_imgbill_var_would_charge:

        /* what an abandoned stream would have cost: the upstream's bill */

        n = (ctx->state == ngx_http_imgbill_streaming
             && ngx_http_imgbill_stream_cut(ctx) != NGX_OK)
            ? ngx_http_imgbill_stream_worth(ctx) : -1;

        if (n < 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_MONEY_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_http_imgbill_format_money(p, n) - p;
        break;

    case ngx_http_imgbill_var_charge:
    case ngx_http_imgbill_var_balance:
        if (data == ngx_http_imgbill_var_balance && !ctx->balance_known) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_MONEY_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        n = (data == ngx_http_imgbill_var_charge) ? ctx->charge
                                                  : ctx->balance;
        v->data = p;
        v->len = ngx_http_imgbill_format_money(p, n) - p;
        break;

    case ngx_http_imgbill_var_images:

        /* "delivered/asked for"; nothing before the body was read */

        if (ctx->images_asked == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, 2 * NGX_INT_T_LEN + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%ui/%ui", ctx->images, ctx->images_asked)
                 - p;
        break;

    default: /* token counts */
        n = (data == ngx_http_imgbill_var_prompt_tokens)
            ? ctx->prompt_tokens : ctx->completion_tokens;

        if (n < 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%i", n) - p;
        break;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
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


static const char *
ngx_http_imgbill_outcome(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    switch (ngx_http_imgbill_ended(r, ctx)) {

    case ngx_http_imgbill_free_none:
        return "charged";

    case ngx_http_imgbill_free_client_gone:
        return "client_gone";

    case ngx_http_imgbill_free_upstream_cut:
        return "upstream_cut";

    case NGX_HTTP_IMGBILL_END_REJECTED:
        return "rejected";

    case NGX_HTTP_IMGBILL_END_LISTED:
        return "listed";

    case NGX_HTTP_IMGBILL_END_UNFINISHED:
        return "unfinished";

    default:
        return "free";
    }
}


static void
ngx_http_imgbill_cleanup(void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    ngx_http_imgbill_orphan_t  *o;

    if (ngx_http_imgbill_holding(ctx->state)) {
        /* the context goes with the pool; what it holds is handed on */
        ngx_queue_remove(&ctx->inflight);
    }

    switch (ctx->state) {

    case ngx_http_imgbill_admitting:

        /* the reply may still place a hold: give it back when it comes */
        o = ngx_http_imgbill_orphan(ctx);
        ngx_http_imgbill_batch_rebind(ctx->cmd,
                                       o ? ngx_http_imgbill_orphan_admitted
                                         : NULL, o);
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

        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "imgbill: request %V ended unsettled, "
                      "releasing its hold", &ctx->request_id);

        ngx_http_imgbill_release(ctx);
        break;

    case ngx_http_imgbill_looking_up:

        /* nothing was asked of Redis that needs undoing */
        ngx_http_imgbill_batch_rebind(ctx->cmd, NULL, NULL);
        break;

    case ngx_http_imgbill_settling:

        /* the settle goes on without the request; if it fails, the
           journal keeps it */
        o = ngx_http_imgbill_orphan(ctx);
        ngx_http_imgbill_batch_rebind(ctx->cmd,
                                       o ? ngx_http_imgbill_orphan_settled
                                         : NULL, o);
        break;

    default:
        break;
    }
}


/* an unused hold goes back: a free settlement, journaled if it fails */

void
ngx_http_imgbill_release(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_orphan_t     *o;
    ngx_http_imgbill_main_conf_t  *mcf;

    ctx->charge = 0;

    o = ngx_http_imgbill_orphan(ctx);
    if (o == NULL) {
        return;
    }

    mcf = o->mcf;

    if (ngx_http_imgbill_script_release(mcf, &o->settle.account,
                                        &o->settle.request_id, o->settle.hold,
                                        ngx_http_imgbill_orphan_settled, o)
        == NULL)
    {
        ngx_http_imgbill_journal_settle(mcf, ngx_cycle->log, &o->settle);
        ngx_free(o);
    }
}


/* a charge decided as the request goes: settled by an orphan, or kept in
   the journal */

static void
ngx_http_imgbill_orphan_settle(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_orphan_t     *o;
    ngx_http_imgbill_settle_t      s;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_imgbill_module);

    o = ngx_http_imgbill_orphan(ctx);

    if (o == NULL) {
        ngx_http_imgbill_settlement(ctx, &s);
        ngx_http_imgbill_journal_settle(mcf, ngx_cycle->log, &s);
        return;
    }

    if (ngx_http_imgbill_script_settle(mcf, &o->settle,
                                       ngx_http_imgbill_orphan_settled, o)
        == NULL)
    {
        ngx_http_imgbill_journal_settle(mcf, ngx_cycle->log, &o->settle);
        ngx_free(o);
    }
}


/*
 * Everything an orphan refers to is its own: the request's pool is gone
 * when the reply comes, and so is the reply when a later command fails.
 */

static ngx_http_imgbill_orphan_t *
ngx_http_imgbill_orphan(ngx_http_imgbill_ctx_t *ctx)
{
    u_char                     *p;
    ngx_http_imgbill_orphan_t  *o;

    o = ngx_alloc(sizeof(ngx_http_imgbill_orphan_t) + ctx->request_id.len
                  + ctx->model.len, ngx_cycle->log);
    if (o == NULL) {
        return NULL;
    }

    o->mcf = ngx_http_get_module_main_conf(ctx->request,
                                           ngx_http_imgbill_module);

    ngx_http_imgbill_settlement(ctx, &o->settle);
    ngx_memcpy(o->key_hash, ctx->key_hash, NGX_HTTP_IMGBILL_KEY_HASH_LEN);

    /* admission checked the account's length */

    o->settle.account.data = o->account;
    ngx_memcpy(o->account, ctx->account.data, ctx->account.len);

    p = (u_char *) (o + 1);

    o->settle.request_id.data = p;
    p = ngx_cpymem(p, ctx->request_id.data, ctx->request_id.len);

    o->settle.model.data = p;
    ngx_memcpy(p, ctx->model.data, ctx->model.len);

    return o;
}


static void
ngx_http_imgbill_orphan_admitted(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_orphan_t *o = data;

    if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        /* lost or not understood: a hold may exist; only the key says
           whose */
        ngx_http_imgbill_journal_release(o->mcf, ngx_cycle->log,
                                         &o->settle.request_id, o->key_hash);
        ngx_free(o);
        return;
    }

    if (reply->status != NGX_HTTP_IMGBILL_ADMIT_HELD) {
        ngx_free(o);
        return;
    }

    /* admission never came back to the request: the account is new here,
       and the reply it is read from goes when this handler returns */

    o->settle.account.len = reply->account.len;
    ngx_memcpy(o->account, reply->account.data, reply->account.len);

    if (ngx_http_imgbill_script_release(o->mcf, &o->settle.account,
                                        &o->settle.request_id,
                                        o->settle.hold,
                                        ngx_http_imgbill_orphan_settled, o)
        != NULL)
    {
        return;                 /* o goes with the release */
    }

    ngx_http_imgbill_journal_settle(o->mcf, ngx_cycle->log, &o->settle);
    ngx_free(o);
}


static void
ngx_http_imgbill_orphan_settled(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_orphan_t *o = data;

    if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        ngx_http_imgbill_journal_settle(o->mcf, ngx_cycle->log, &o->settle);
    }

    ngx_free(o);
}


/* the contexts of this worker that hold money, linked and unlinked by
   ngx_http_imgbill_set_state() and the pool cleanup */

void
ngx_http_imgbill_inflight_init(ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_queue_init(&mcf->inflight);
}


void
ngx_http_imgbill_inflight_exit(ngx_http_imgbill_main_conf_t *mcf)
{
    /* not set up where init_process found imgbill unconfigured */

    if (mcf->host.len == 0 || mcf->inflight.next == NULL) {
        return;
    }

    ngx_http_imgbill_journal_leave(mcf);
}
