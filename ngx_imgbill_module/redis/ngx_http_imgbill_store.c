
/*
 * imgbill: a worker's store.  Its parts (the connection, Sentinel, the
 * batch, the journal) are set up at init_process and torn down at exit;
 * the request's path hands it the holds it places, for the journal to
 * name if the worker exits with them, and to keep them alive.
 *
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


#include "ngx_http_imgbill_redis_int.h"


static void ngx_http_imgbill_store_refresh(ngx_event_t *ev);


/* Redis round trips, in microseconds, as the metrics bucket them */
ngx_msec_t  ngx_http_imgbill_rtt_buckets[NGX_HTTP_IMGBILL_RTT_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    1000000
};


ngx_http_imgbill_store_t *
ngx_http_imgbill_store_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_redis_conf_t *rc, ngx_http_imgbill_stats_t *stats)
{
    ngx_http_imgbill_store_t  *store;

    store = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_store_t));
    if (store == NULL) {
        return NULL;
    }

    store->conf = rc;
    store->stats = stats;
    ngx_queue_init(&store->held);

    if (ngx_http_imgbill_redis_init(cycle, store) != NGX_OK
        || ngx_http_imgbill_batch_init(cycle, store) != NGX_OK
        || ngx_http_imgbill_journal_init(cycle, store) != NGX_OK)
    {
        return NULL;
    }

    store->refresh.handler = ngx_http_imgbill_store_refresh;
    store->refresh.data = store;
    store->refresh.log = cycle->log;
    store->refresh.cancelable = 1;

    ngx_add_timer(&store->refresh, ngx_max(rc->hold_ttl * 1000 / 3, 1000));

    return store;
}


/* before the connection goes: what is still held must be told */

void
ngx_http_imgbill_store_exit(ngx_http_imgbill_store_t *store)
{
    ngx_http_imgbill_journal_leave(store);
    ngx_http_imgbill_batch_done(store);
    ngx_http_imgbill_redis_done(store);
}


void
ngx_http_imgbill_store_hold(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_held_t *h)
{
    ngx_queue_insert_tail(&store->held, &h->queue);
    ngx_http_imgbill_journal_holding(store, h);
}


void
ngx_http_imgbill_store_unhold(ngx_http_imgbill_held_t *h)
{
    ngx_queue_remove(&h->queue);
}


static void
ngx_http_imgbill_store_refresh(ngx_event_t *ev)
{
    ngx_http_imgbill_store_t *store = ev->data;

    time_t                    now, third;
    ngx_uint_t                n;
    ngx_queue_t              *q;
    ngx_http_imgbill_held_t  *h;

    now = ngx_time();
    third = ngx_max(store->conf->hold_ttl / 3, 1);
    n = 0;

    for (q = ngx_queue_head(&store->held);
         q != ngx_queue_sentinel(&store->held);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_http_imgbill_held_t, queue);

        if (h->settling || now - h->since < third) {
            continue;
        }

        if (ngx_http_imgbill_script_refresh(store, h) != NULL)
        {
            h->since = now;
            n++;
        }
    }

    if (n) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "imgbill: %ui hold(s) of requests still alive "
                       "refreshed", n);
    }

    ngx_add_timer(ev, ngx_max(store->conf->hold_ttl * 1000 / 3, 1000));
}


/* the counters, where the metrics zone has them */

void
ngx_http_imgbill_stats_count(ngx_http_imgbill_store_t *store,
    ngx_uint_t what)
{
    if (store->stats == NULL) {
        return;
    }

    if (what == NGX_HTTP_IMGBILL_JOURNAL_LINE) {
        (void) ngx_atomic_fetch_add(&store->stats->journal_lines, 1);

    } else if (what == NGX_HTTP_IMGBILL_UNRECORDED) {
        (void) ngx_atomic_fetch_add(&store->stats->unrecorded, 1);

    } else if (what < NGX_HTTP_IMGBILL_REDIS_EVENTS) {
        (void) ngx_atomic_fetch_add(&store->stats->redis[what], 1);
    }
}


void
ngx_http_imgbill_stats_rtt(ngx_http_imgbill_store_t *store, ngx_msec_t usec)
{
    ngx_uint_t  i;

    if (store->stats == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_IMGBILL_RTT_BUCKETS; i++) {
        if (usec <= ngx_http_imgbill_rtt_buckets[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&store->stats->rtt[i], 1);
    (void) ngx_atomic_fetch_add(&store->stats->rtt_sum, usec);
}


/* what the last replay of any worker found still owed, and every line
   written since: a gauge */

void
ngx_http_imgbill_stats_owed(ngx_http_imgbill_store_t *store, ngx_uint_t owed)
{
    if (store->stats) {
        store->stats->journal_owed = owed;
    }
}


void
ngx_http_imgbill_stats_owed_add(ngx_http_imgbill_store_t *store)
{
    if (store->stats) {
        (void) ngx_atomic_fetch_add(&store->stats->journal_owed, 1);
    }
}
