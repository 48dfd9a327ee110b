
/*
 * A lane's commands (ngx_http_imgbill_redis_int.h), queued until its
 * connection is ready, then sent as script calls
 * (ngx_http_imgbill_batch.c): everything one turn of the event loop
 * queued leaves as one call; a second call leaves beside one that is out,
 * and what queues while two are out leaves when one returns (more calls
 * at once only full ones, up to NGX_HTTP_IMGBILL_BATCH_DEPTH).
 *
 * A command owns heap copies of its arguments: it can be resent (EVAL
 * after NOSCRIPT) and can outlive the request that issued it, which may
 * re-point its handler with ngx_http_imgbill_batch_rebind().
 *
 * Commands wait in the queue while the connection is being set up (under
 * Sentinel: the master looked up, and confirmed by ROLE).  If it cannot
 * be, what a request waits on to go ahead (an admission, a key looked up,
 * an account read) stays queued for imgbill_redis_outage_wait while the
 * connection is tried again every NGX_HTTP_IMGBILL_RETRY ms: a failover
 * or a restart of Redis is a pause for the requests that arrive during
 * it, not a 503 (at most outage_max of them per worker and lane; more are
 * refused at once).  Everything else fails at once as never sent:
 * settlements go to the journal, releases leave holds that expire.
 */


#include "ngx_http_imgbill_batch.h"


/*
 * The most commands one script call carries: Redis runs a call without
 * interruption, a few microseconds per command, so this bounds how long
 * one call keeps it from other clients.
 */
#define NGX_HTTP_IMGBILL_BATCH_MAX    128

/*
 * Script calls awaited at once.  Up to NGX_HTTP_IMGBILL_BATCH_EAGER leave
 * as soon as commands queue: while Redis runs one, the worker hands out
 * the answers of the other, and the requests they resume queue the next,
 * so neither side idles through the other's turn (bench, small replies,
 * everything on 2 cores: 22,800 req/s, 0.22 calls a request, where one
 * call out made 19,500 and 0.13).  Beyond that, calls grow rather than
 * multiply, each costing Redis and the worker a wakeup: what queues
 * leaves when a call returns, and another call leaves beside them only
 * full, when Redis is far enough away that a round trip's calls cannot
 * carry the load (four calls out, a new one for each turn that queued
 * something, made 21,000 and 0.29).
 */
#define NGX_HTTP_IMGBILL_BATCH_DEPTH  4
#define NGX_HTTP_IMGBILL_BATCH_EAGER  2

/* how often a worker without a master tries again, for what waits */
#define NGX_HTTP_IMGBILL_RETRY        250


static ngx_http_imgbill_client_t *ngx_http_imgbill_batch_client(
    ngx_cycle_t *cycle, ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_redis_t *rd);
static void ngx_http_imgbill_batch_failed(ngx_event_t *ev);
static void ngx_http_imgbill_batch_expire(ngx_http_imgbill_client_t *cl,
    ngx_uint_t all);
static void ngx_http_imgbill_batch_retry(ngx_event_t *ev);
static void ngx_http_imgbill_batch_flush(ngx_event_t *ev);



ngx_int_t
ngx_http_imgbill_batch_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store)
{
    ngx_uint_t  i;

    for (i = 0; i < store->lanes; i++) {
        store->client[i] = ngx_http_imgbill_batch_client(cycle, store,
                                                         store->redis[i]);
        if (store->client[i] == NULL) {
            return NGX_ERROR;
        }
    }

    if (store->lanes == 1) {
        store->client[NGX_HTTP_IMGBILL_LANE_SETTLE] =
            store->client[NGX_HTTP_IMGBILL_LANE_ADMIT];
    }

    return NGX_OK;
}


static ngx_http_imgbill_client_t *
ngx_http_imgbill_batch_client(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_redis_t *rd)
{
    ngx_http_imgbill_client_t  *cl;

    cl = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_client_t));
    if (cl == NULL) {
        return NULL;
    }

    cl->log = cycle->log;
    cl->store = store;
    cl->redis = rd;

    /* a WAIT blocks its connection: what queues behind it leaves once it
       answered, with a timeout chosen then (ngx_http_imgbill_wait.c) */
    cl->depth = (store->lanes == 2
                 && rd == store->redis[NGX_HTTP_IMGBILL_LANE_SETTLE])
                ? 1 : NGX_HTTP_IMGBILL_BATCH_DEPTH;

    cl->flush.handler = ngx_http_imgbill_batch_flush;
    cl->flush.data = cl;
    cl->flush.log = cycle->log;

    cl->fail.handler = ngx_http_imgbill_batch_failed;
    cl->fail.data = cl;
    cl->fail.log = cycle->log;

    /* not cancelable: a worker that quits gracefully answers what waits
       (within imgbill_redis_outage_wait) before it goes */

    cl->retry.handler = ngx_http_imgbill_batch_retry;
    cl->retry.data = cl;
    cl->retry.log = cycle->log;

    ngx_queue_init(&cl->queue);

    ngx_http_imgbill_redis_bind(rd, cl);

    return cl;
}


/* at exit: what was never sent fails as what was sent does, and the
   handlers of settlements journal them */

void
ngx_http_imgbill_batch_done(ngx_http_imgbill_store_t *store)
{
    ngx_uint_t                  i;
    ngx_queue_t                 queue;
    ngx_http_imgbill_client_t  *cl;

    for (i = 0; i < store->lanes; i++) {
        cl = store->client[i];

        if (cl == NULL) {
            continue;
        }

        if (cl->flush.posted) {
            ngx_delete_posted_event(&cl->flush);
        }

        if (cl->fail.posted) {
            ngx_delete_posted_event(&cl->fail);
        }

        if (cl->retry.timer_set) {
            ngx_del_timer(&cl->retry);
        }

        ngx_queue_init(&queue);
        ngx_queue_add(&queue, &cl->queue);
        ngx_queue_init(&cl->queue);
        cl->waiting = 0;

        ngx_http_imgbill_batch_fail(&queue);
    }
}


/*
 * From the connection: NGX_OK, it is ready, what is queued goes; else it
 * could not be set up, and what is queued fails, or waits.  Posted either
 * way: this runs inside hiredis' callbacks.
 */

void
ngx_http_imgbill_batch_wake(ngx_http_imgbill_client_t *cl, ngx_int_t rc)
{
    ngx_event_t  *ev;

    if (cl == NULL) {
        return;
    }

    ev = (rc == NGX_OK) ? &cl->flush : &cl->fail;

    if (!ev->posted) {
        ngx_post_event(ev, &ngx_posted_events);
    }
}


static void
ngx_http_imgbill_batch_failed(ngx_event_t *ev)
{
    ngx_http_imgbill_client_t *cl = ev->data;

    /* not retried at once: a Redis that is down would have this spin */

    ngx_http_imgbill_batch_expire(cl, 1);
}


/*
 * Fail what has waited its imgbill_redis_outage_wait, and, once the
 * connection failed (all), what may not wait; for what is left, try again
 * in a while, or at the first deadline if sooner.
 */

static void
ngx_http_imgbill_batch_expire(ngx_http_imgbill_client_t *cl, ngx_uint_t all)
{
    ngx_msec_t               wait, age, next;
    ngx_queue_t              queue, *q, *n;
    ngx_http_imgbill_cmd_t  *cmd;

    wait = cl->store->conf->outage_wait;
    next = NGX_HTTP_IMGBILL_RETRY;

    ngx_queue_init(&queue);

    for (q = ngx_queue_head(&cl->queue);
         q != ngx_queue_sentinel(&cl->queue);
         q = n)
    {
        n = ngx_queue_next(q);
        cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);

        age = ngx_current_msec - cmd->queued;

        if (cmd->waits && age < wait) {
            next = ngx_min(next, wait - age);
            continue;
        }

        if (!cmd->waits && !all) {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&queue, q);

        if (cmd->waits) {
            cl->waiting--;
        }
    }

    if (!ngx_queue_empty(&cl->queue) && !cl->retry.timer_set) {
        ngx_add_timer(&cl->retry, next);
    }

    ngx_http_imgbill_batch_fail(&queue);
}


static void
ngx_http_imgbill_batch_retry(ngx_event_t *ev)
{
    ngx_http_imgbill_client_t *cl = ev->data;

    cl->paused = 0;

    ngx_http_imgbill_batch_expire(cl, 0);

    if (!ngx_queue_empty(&cl->queue)) {
        /* a connection on its way answers through batch_wake(); until
           then the timer goes on expiring */
        ngx_http_imgbill_batch_flush(&cl->flush);

        if (!ngx_queue_empty(&cl->queue) && !cl->retry.timer_set) {
            ngx_add_timer(&cl->retry, NGX_HTTP_IMGBILL_RETRY);
        }
    }
}


/*
 * Commands the master turned back without running them (it is loading,
 * demoted, or short of replicas): first in the queue again, and sent no
 * sooner than the next retry, within their outage wait.
 */

void
ngx_http_imgbill_batch_again(ngx_http_imgbill_client_t *cl,
    ngx_queue_t *cmds)
{
    ngx_queue_t  *q;

    for (q = ngx_queue_head(cmds);
         q != ngx_queue_sentinel(cmds);
         q = ngx_queue_next(q))
    {
        cl->waiting++;
    }

    ngx_queue_add(cmds, &cl->queue);
    ngx_queue_init(&cl->queue);
    ngx_queue_add(&cl->queue, cmds);

    cl->paused = 1;

    if (!cl->retry.timer_set) {
        ngx_add_timer(&cl->retry, NGX_HTTP_IMGBILL_RETRY);
    }
}


/* a command that answers at once rather than wait out an outage (what a
   load balancer asks) */

void
ngx_http_imgbill_batch_nowait(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_cmd_t *cmd)
{
    if (cmd->waits) {
        cmd->waits = 0;
        store->client[NGX_HTTP_IMGBILL_LANE_ADMIT]->waiting--;
    }
}


void
ngx_http_imgbill_batch_rebind(ngx_http_imgbill_cmd_t *cmd,
    ngx_http_imgbill_reply_pt handler, void *data)
{
    cmd->handler = handler;
    cmd->data = data;
}


ngx_http_imgbill_cmd_t *
ngx_http_imgbill_batch_queue(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_script_e script, ngx_uint_t nkeys, ngx_uint_t argc,
    ngx_str_t *argv, ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char                     *p;
    size_t                      size;
    ngx_uint_t                  i, waits, down;
    ngx_http_imgbill_cmd_t     *cmd;
    ngx_http_imgbill_client_t  *cl;

    waits = (script == ngx_http_imgbill_cmd_admit
             || script == ngx_http_imgbill_cmd_lookup
             || script == ngx_http_imgbill_cmd_info)
            && store->conf->outage_wait;

    cl = store->client[(script == ngx_http_imgbill_cmd_settle
                        || script == ngx_http_imgbill_cmd_reverse)
                       ? NGX_HTTP_IMGBILL_LANE_SETTLE
                       : NGX_HTTP_IMGBILL_LANE_ADMIT];

    if (cl == NULL) {
        return NULL;
    }

    down = (ngx_http_imgbill_redis_open(cl->redis) != NGX_OK);

    if (down && !waits) {
        return NULL;
    }

    /* during an outage, only so many wait */

    if (waits && (down || cl->retry.timer_set)
        && cl->waiting >= store->conf->outage_max)
    {
        ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                      "imgbill: %ui requests already wait for redis, "
                      "refusing another (imgbill_redis_outage_wait max=)",
                      cl->waiting);
        return NULL;
    }

    size = sizeof(ngx_http_imgbill_cmd_t) + argc * sizeof(ngx_str_t)
           + NGX_HTTP_IMGBILL_CMD_HEAD * NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        size += argv[i].len;
    }

    cmd = ngx_alloc(size, cl->log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->queued = ngx_current_msec;
    cmd->waits = waits;
    cmd->script = script;
    cmd->nkeys = nkeys;
    cmd->argc = argc;
    cmd->argv = (ngx_str_t *) (cmd + 1);

    p = (u_char *) (cmd->argv + argc);

    for (i = 0; i < argc; i++) {
        cmd->argv[i].data = p;
        cmd->argv[i].len = argv[i].len;
        p = ngx_cpymem(p, argv[i].data, argv[i].len);
    }

    /* the script numbers its functions from 1 */

    cmd->head[0].data = p;
    p = ngx_sprintf(p, "%i", (ngx_int_t) script + 1);
    cmd->head[0].len = p - cmd->head[0].data;

    cmd->head[1].data = p;
    p = ngx_sprintf(p, "%ui", nkeys);
    cmd->head[1].len = p - cmd->head[1].data;

    cmd->head[2].data = p;
    p = ngx_sprintf(p, "%ui", argc - nkeys);
    cmd->head[2].len = p - cmd->head[2].data;

    ngx_queue_insert_tail(&cl->queue, &cmd->queue);

    if (waits) {
        cl->waiting++;
    }

    if (down) {
        /* no connection even on its way: tried again soon */

        if (!cl->retry.timer_set) {
            ngx_add_timer(&cl->retry, NGX_HTTP_IMGBILL_RETRY);
        }

        return cmd;
    }

    /* run after this turn's other events, which may queue more */

    if (!cl->flush.posted) {
        ngx_post_event(&cl->flush, &ngx_posted_events);
    }

    return cmd;
}


static void
ngx_http_imgbill_batch_flush(ngx_event_t *ev)
{
    ngx_http_imgbill_client_t *cl = ev->data;

    ngx_int_t                rc;
    ngx_uint_t               n, waits;
    ngx_queue_t              batch, rest, *q;
    ngx_http_imgbill_cmd_t  *cmd;

    if (cl->paused) {
        return;                 /* the retry timer sends */
    }

    while (!ngx_queue_empty(&cl->queue)
           && cl->inflight < cl->depth)
    {
        rc = ngx_http_imgbill_redis_ready(cl->redis);

        if (rc == NGX_AGAIN) {
            return;             /* the connection wakes this when ready */
        }

        if (rc == NGX_ERROR) {
            ngx_http_imgbill_batch_failed(&cl->fail);
            return;
        }

        if (cl->retry.timer_set) {
            ngx_del_timer(&cl->retry);
        }

        /* up to BATCH_MAX commands from the head of the queue */

        n = 0;
        waits = 0;

        for (q = ngx_queue_head(&cl->queue);
             q != ngx_queue_sentinel(&cl->queue)
             && n < NGX_HTTP_IMGBILL_BATCH_MAX;
             q = ngx_queue_next(q))
        {
            n++;

            cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);

            if (cmd->waits) {
                waits++;
            }
        }

        if (cl->inflight >= NGX_HTTP_IMGBILL_BATCH_EAGER
            && n < NGX_HTTP_IMGBILL_BATCH_MAX)
        {
            return;             /* leaves when a call returns */
        }

        cl->waiting -= waits;

        ngx_queue_init(&rest);

        if (q != ngx_queue_sentinel(&cl->queue)) {
            ngx_queue_split(&cl->queue, q, &rest);
        }

        ngx_queue_init(&batch);
        ngx_queue_add(&batch, &cl->queue);
        ngx_queue_init(&cl->queue);
        ngx_queue_add(&cl->queue, &rest);

        if (ngx_http_imgbill_batch_send(cl, &batch, n) != NGX_OK) {
            ngx_http_imgbill_batch_fail(&batch);
        }
    }
}
