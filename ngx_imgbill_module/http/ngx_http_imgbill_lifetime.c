
/*
 * A hold lives as long as its request.  imgbill_hold_ttl is the bound for
 * the hold of a relay that died; a request that outlives it (a generation
 * of minutes, a stream its client reads slowly) would otherwise let the
 * money it reserves be spent a second time.  Every third of the ttl, each
 * worker refreshes the holds of its requests that have held money that
 * long, as commands of the batch's next script call: a request shorter
 * than that costs Redis nothing more, and a long one a command per third
 * of the ttl.  A worker that is exiting goes on refreshing what it still
 * generates; the timer never keeps it alive.
 */


#include "ngx_http_imgbill_module.h"


static void ngx_http_imgbill_lifetime_handler(ngx_event_t *ev);


ngx_int_t
ngx_http_imgbill_lifetime_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_event_t  *ev;

    ev = ngx_pcalloc(cycle->pool, sizeof(ngx_event_t));
    if (ev == NULL) {
        return NGX_ERROR;
    }

    ev->handler = ngx_http_imgbill_lifetime_handler;
    ev->data = mcf;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, ngx_max(mcf->hold_ttl * 1000 / 3, 1000));

    return NGX_OK;
}


static void
ngx_http_imgbill_lifetime_handler(ngx_event_t *ev)
{
    ngx_http_imgbill_main_conf_t *mcf = ev->data;

    time_t                   now, third;
    ngx_uint_t               n;
    ngx_queue_t             *q;
    ngx_http_imgbill_ctx_t  *ctx;

    now = ngx_time();
    third = ngx_max(mcf->hold_ttl / 3, 1);
    n = 0;

    for (q = ngx_queue_head(&mcf->inflight);
         q != ngx_queue_sentinel(&mcf->inflight);
         q = ngx_queue_next(q))
    {
        ctx = ngx_queue_data(q, ngx_http_imgbill_ctx_t, inflight);

        /* a settlement in flight ends the hold itself */

        if (!ctx->holding || ctx->state == ngx_http_imgbill_settling
            || now - ctx->held_since < third)
        {
            continue;
        }

        if (ngx_http_imgbill_script_refresh(mcf, &ctx->account,
                                            &ctx->request_id, ctx->hold)
            != NULL)
        {
            ctx->held_since = now;
            n++;
        }
    }

    if (n) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "imgbill: %ui hold(s) of requests still alive "
                       "refreshed", n);
    }

    ngx_add_timer(ev, ngx_max(mcf->hold_ttl * 1000 / 3, 1000));
}
