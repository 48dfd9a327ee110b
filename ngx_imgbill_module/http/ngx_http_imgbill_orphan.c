
/*
 * imgbill: what a command in flight does once its request is gone.  Its
 * handler is re-pointed to an orphan, a heap copy of what the command
 * needs to finish: the admission's reply, if it placed a hold, gives it
 * back; the settlement's, if it failed, goes to the journal.  A hold a
 * request leaves unused goes back through an orphan too, and so does a
 * charge decided as the request goes.
 */


#include "ngx_http_imgbill_ctx.h"


/* what a command needs to finish its work after its request is gone */
typedef struct {
    ngx_http_imgbill_store_t       *store;
    ngx_http_imgbill_settle_t       settle;
    u_char                          key_hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    u_char                          account[NGX_HTTP_IMGBILL_ACCOUNT_MAX];
} ngx_http_imgbill_orphan_t;


static ngx_http_imgbill_orphan_t *ngx_http_imgbill_orphan(
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_orphan_admitted(ngx_http_imgbill_reply_t *reply,
    void *data);
static void ngx_http_imgbill_orphan_settled(ngx_http_imgbill_reply_t *reply,
    void *data);


/* an unused hold goes back: a free settlement, journaled if it fails */

void
ngx_http_imgbill_release(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_orphan_t  *o;

    ctx->charge = 0;

    o = ngx_http_imgbill_orphan(ctx);
    if (o == NULL) {
        return;
    }

    if (ngx_http_imgbill_script_release(o->store, &o->settle.account,
                                        &o->settle.request_id, o->settle.hold,
                                        o->settle.key_limits ? &o->settle.key
                                                             : NULL,
                                        ngx_http_imgbill_orphan_settled, o)
        == NULL)
    {
        ngx_http_imgbill_journal_settle(o->store, ngx_cycle->log,
                                        &o->settle);
        ngx_free(o);
    }
}


/* a charge decided as the request goes: settled by an orphan, or kept in
   the journal */

void
ngx_http_imgbill_orphan_settle(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_orphan_t  *o;
    ngx_http_imgbill_settle_t   s;
    ngx_http_imgbill_store_t   *store;

    store = ngx_http_imgbill_store(ctx->request);

    o = ngx_http_imgbill_orphan(ctx);

    if (o == NULL) {
        ngx_http_imgbill_settlement(ctx, &s);
        ngx_http_imgbill_journal_settle(store, ngx_cycle->log, &s);
        return;
    }

    if (ngx_http_imgbill_script_settle(store, &o->settle,
                                       ngx_http_imgbill_orphan_settled, o)
        == NULL)
    {
        ngx_http_imgbill_journal_settle(store, ngx_cycle->log, &o->settle);
        ngx_free(o);
    }
}


/* a command in flight as its request ends (an admission, a settlement):
   it finishes with an orphan, or with nobody if none could be made */

void
ngx_http_imgbill_orphan_adopt(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_orphan_t  *o;

    o = ngx_http_imgbill_orphan(ctx);

    ngx_http_imgbill_batch_rebind(ctx->cmd,
                                   o == NULL ? NULL
                                   : (ctx->state == ngx_http_imgbill_admitting)
                                     ? ngx_http_imgbill_orphan_admitted
                                     : ngx_http_imgbill_orphan_settled,
                                   o);
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

    o->store = ngx_http_imgbill_store(ctx->request);

    ngx_http_imgbill_settlement(ctx, &o->settle);
    ngx_memcpy(o->key_hash, ctx->key_hash, NGX_HTTP_IMGBILL_KEY_HASH_LEN);
    o->settle.key.data = o->key_hash;

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
           whose (one never sent cannot) */
        if (reply->rc != NGX_HTTP_IMGBILL_REPLY_UNSENT) {
            ngx_http_imgbill_journal_release(o->store, ngx_cycle->log,
                                             &o->settle.request_id,
                                             o->key_hash);
        }

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

    if (ngx_http_imgbill_script_release(o->store, &o->settle.account,
                                        &o->settle.request_id,
                                        o->settle.hold,
                                        (reply->limit == 1) ? &o->settle.key
                                                            : NULL,
                                        ngx_http_imgbill_orphan_settled, o)
        != NULL)
    {
        return;                 /* o goes with the release */
    }

    ngx_http_imgbill_journal_settle(o->store, ngx_cycle->log, &o->settle);
    ngx_free(o);
}


static void
ngx_http_imgbill_orphan_settled(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_orphan_t *o = data;

    if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        ngx_http_imgbill_journal_settle(o->store, ngx_cycle->log, &o->settle);
    }

    ngx_free(o);
}
