
/*
 * A charge given back: the whole reply it paid for never left.
 *
 * A held reply is charged before it is written, so that the charge can
 * go in its headers; the client is asked right before the charge
 * (ngx_http_imgbill_client_gone()).  It may still leave during the
 * settle's round trip, or its socket may refuse the reply's first write.
 * Then no byte of the image reached it, and the charge goes back: the
 * reverse script credits what the settle took, writes a "reversal" ledger
 * entry and takes it off the day's usage, once per request id, whichever
 * of the settle and the reversal reaches Redis first (a settle still in
 * the journal then charges nothing).  If Redis cannot take it now, the
 * journal keeps it (a V line) until it can.
 *
 * The request may be gone before Redis answers: what the answer needs is
 * copied.  A settlement still in flight when the request goes is the
 * orphan's (ngx_http_imgbill_orphan.c), with the charge as it now is: 0,
 * so that if it fails, the journal keeps only its hold's release.
 */


#include "ngx_http_imgbill_ctx.h"


typedef struct {
    ngx_str_t                 account;
    ngx_str_t                 request_id;
    ngx_str_t                 key;        /* if it has limits; else
                                             empty */
    u_char                    key_id[NGX_HTTP_IMGBILL_KEY_ID_LEN];
    time_t                    charged_at;
    ngx_http_imgbill_store_t *store;
    u_char                    data[1];
} ngx_http_imgbill_reversal_t;


static void ngx_http_imgbill_reverse_gone(void *data);
static void ngx_http_imgbill_reversed(ngx_http_imgbill_reply_t *reply,
    void *data);


/*
 * While a held reply's charge settles, the client may leave and nginx end
 * the request (a client that closes is "499" to the upstream module): the
 * reply was never written.  A request cleanup runs before the access log,
 * which then tells the truth too.  An allocation failure here leaves the
 * charge standing, as before there were reversals.
 */

void
ngx_http_imgbill_reverse_watch(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_cleanup_t  *cln;

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return;
    }

    cln->handler = ngx_http_imgbill_reverse_gone;
    cln->data = ctx;
}


static void
ngx_http_imgbill_reverse_gone(void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    if (ctx->state == ngx_http_imgbill_settling && ctx->stream == NULL) {
        ngx_http_imgbill_reverse(ctx->request, ctx,
                                 "left while it was charged");
    }
}


void
ngx_http_imgbill_reverse(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    const char *why)
{
    u_char                       buf[NGX_HTTP_IMGBILL_MONEY_LEN], *p;
    ngx_str_t                    key, *limited;
    ngx_http_imgbill_store_t    *store;
    ngx_http_imgbill_reversal_t  *rv;

    if (ctx->charge <= 0 || ctx->reversed) {
        return;
    }

    ctx->reversed = 1;

    p = ngx_http_imgbill_format_money(buf, ctx->charge);
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "imgbill: the client of request %V %s, its charge %*s "
                  "goes back", &ctx->request_id, why, p - buf, buf);

    ctx->charge = 0;
    ctx->charge_reason = ngx_http_imgbill_free_none;
    ctx->free_reason = ngx_http_imgbill_free_client_gone;

    store = ngx_http_imgbill_store(r);
    limited = ngx_http_imgbill_limited_key(ctx, &key);

    rv = ngx_alloc(sizeof(ngx_http_imgbill_reversal_t) + ctx->account.len
                   + ctx->request_id.len, ngx_cycle->log);

    if (rv) {
        rv->store = store;
        rv->charged_at = ctx->settled_at;
        rv->account.len = ctx->account.len;
        rv->account.data = rv->data;
        rv->request_id.len = ctx->request_id.len;
        rv->request_id.data = ngx_cpymem(rv->data, ctx->account.data,
                                         ctx->account.len);
        ngx_memcpy(rv->request_id.data, ctx->request_id.data,
                   ctx->request_id.len);

        rv->key.data = rv->key_id;
        rv->key.len = limited ? NGX_HTTP_IMGBILL_KEY_ID_LEN : 0;
        ngx_memcpy(rv->key_id, ctx->key_hash, NGX_HTTP_IMGBILL_KEY_ID_LEN);

        if (ngx_http_imgbill_script_reverse(store, &rv->account,
                                            &rv->request_id, rv->charged_at,
                                            limited ? &rv->key : NULL,
                                            ngx_http_imgbill_reversed, rv)
            != NULL)
        {
            return;
        }

        ngx_free(rv);
    }

    ngx_http_imgbill_journal_reverse(store, r->connection->log, &ctx->account,
                                     &ctx->request_id, ctx->settled_at,
                                     limited);
}


static void
ngx_http_imgbill_reversed(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_reversal_t *rv = data;

    if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "imgbill: reversal of request %V failed, it goes to "
                      "the journal", &rv->request_id);

        ngx_http_imgbill_journal_reverse(rv->store, ngx_cycle->log,
                                         &rv->account, &rv->request_id,
                                         rv->charged_at,
                                         rv->key.len ? &rv->key : NULL);

    } else if (reply->status == 0) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "imgbill: request %V was given back before, "
                      "not again", &rv->request_id);
    }

    ngx_free(rv);
}
