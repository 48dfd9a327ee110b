
/*
 * imgbill_redis_wait: a call that carries a settlement is followed, in
 * the same pipeline, by "WAIT replicas timeout".  Its settlements reach
 * their handlers only once WAIT says enough replicas have everything the
 * connection wrote; otherwise they are answered as lost, and journaled
 * (see ngx_http_imgbill_batch.c).  This happens on the settlements' own
 * lane: no admission waits behind a WAIT.
 *
 * A WAIT that runs out says the replicas are gone or far behind, and the
 * next would most likely run out too, each keeping its settlements (and
 * the replies that wait for them) for the whole timeout.  So after one,
 * the WAITs only glance ("WAIT 0 0": what the replicas have acknowledged
 * already) for a while, 1 s doubling to 16 s, then one waits the full
 * timeout again.  What a glance cannot confirm is journaled, as for any
 * WAIT that falls short.
 *
 * A WAIT blocks the calls behind it on its connection, and a WAIT's
 * timeout is chosen when it is sent: the settlements' lane has one call
 * in flight at a time (ngx_http_imgbill_client.c), so that the calls that
 * queue behind a WAIT that runs out glance rather than wait in turn.
 */


#include "ngx_http_imgbill_batch.h"


#define NGX_HTTP_IMGBILL_WAIT_BACKOFF      1000
#define NGX_HTTP_IMGBILL_WAIT_BACKOFF_MAX  16000


static void ngx_http_imgbill_batch_waited(
    ngx_http_imgbill_redis_call_t *call, redisReply *reply);


/* WAIT, pipelined behind the script call; if it cannot be sent, the
   settlements count as lost when the script answers */

ngx_int_t
ngx_http_imgbill_batch_wait(ngx_http_imgbill_batch_t *b)
{
    u_char                        *p;
    const char                    *argv[3];
    size_t                         argvlen[3];
    u_char                         replicas[NGX_INT_T_LEN];
    u_char                         timeout[NGX_INT_T_LEN];
    ngx_http_imgbill_client_t     *cl;
    ngx_http_imgbill_store_t      *store;

    cl = b->client;
    store = cl->store;

    b->glance = (cl->backoff
                 && (ngx_msec_int_t) (cl->probe - ngx_current_msec) > 0);

    b->wait.handler = ngx_http_imgbill_batch_waited;

    argv[0] = "WAIT";
    argvlen[0] = sizeof("WAIT") - 1;

    /* a glance is "WAIT 0 0": how many replicas acknowledged, at once
       (Redis checks a WAIT's timeout only every 1000/hz ms) */

    p = ngx_sprintf(replicas, "%i",
                    b->glance ? (ngx_int_t) 0 : store->conf->wait_replicas);
    argv[1] = (const char *) replicas;
    argvlen[1] = p - replicas;

    p = ngx_sprintf(timeout, "%M",
                    b->glance ? (ngx_msec_t) 0 : store->conf->wait_timeout);
    argv[2] = (const char *) timeout;
    argvlen[2] = p - timeout;

    /* hiredis copies the arguments into its output buffer */

    if (ngx_http_imgbill_redis_call(b->client->redis, &b->wait, 3, argv,
                                    argvlen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    b->waits++;

    return NGX_OK;
}


/* WAIT's reply: the last one sent decides */

static void
ngx_http_imgbill_batch_waited(ngx_http_imgbill_redis_call_t *call,
    redisReply *reply)
{
    ngx_http_imgbill_batch_t *b = (ngx_http_imgbill_batch_t *)
        ((u_char *) call - offsetof(ngx_http_imgbill_batch_t, wait));

    ngx_http_imgbill_client_t  *cl;

    b->waits--;

    if (!b->evaluated || b->waits) {
        /* sent behind an EVALSHA that found no script: another follows */
        return;
    }

    cl = b->client;

    ngx_http_imgbill_batch_confirm(b, reply);
    ngx_http_imgbill_batch_next(cl);
}


/*
 * The settlements of a call once WAIT answered: theirs as the script gave
 * them if enough replicas have them, else lost (their handlers journal
 * them, and the journal's replay comes back through WAIT).
 */

void
ngx_http_imgbill_batch_confirm(ngx_http_imgbill_batch_t *b,
    redisReply *reply)
{
    ngx_uint_t                     n;
    ngx_queue_t                   *q;
    ngx_http_imgbill_cmd_t        *cmd;
    ngx_http_imgbill_reply_t       lost;
    ngx_http_imgbill_client_t     *cl;
    ngx_http_imgbill_store_t  *store;

    cl = b->client;
    store = cl->store;

    ngx_memzero(&lost, sizeof(ngx_http_imgbill_reply_t));
    lost.rc = NGX_HTTP_IMGBILL_REPLY_LOST;

    if (reply && reply->type == REDIS_REPLY_INTEGER
        && reply->integer >= store->conf->wait_replicas)
    {
        if (cl->backoff) {
            ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                          "imgbill: %L replica(s) confirm settlements "
                          "again", reply->integer);
            cl->backoff = 0;
        }

    } else if (!ngx_queue_empty(&b->settled)
               && (b->glance
                   || (cl->backoff
                       && (ngx_msec_int_t) (cl->probe - ngx_current_msec)
                          > 0)))
    {
        /* a glance, or a full WAIT sent before the backoff began: the
           backoff counts one of them */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, cl->log, 0,
                       "imgbill: a WAIT fell short while backing off");
        reply = NULL;

    } else if (!ngx_queue_empty(&b->settled)) {
        n = 0;

        for (q = ngx_queue_head(&b->settled);
             q != ngx_queue_sentinel(&b->settled);
             q = ngx_queue_next(q))
        {
            n++;
        }

        if (reply && reply->type == REDIS_REPLY_INTEGER) {
            cl->backoff = cl->backoff
                          ? ngx_min(cl->backoff * 2,
                                    NGX_HTTP_IMGBILL_WAIT_BACKOFF_MAX)
                          : NGX_HTTP_IMGBILL_WAIT_BACKOFF;
            cl->probe = ngx_current_msec + cl->backoff;

            ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                          "imgbill: %L of %i replica(s) confirmed %ui "
                          "settlement(s) within %M ms; they are journaled "
                          "until a replica has them, and for %M ms WAIT "
                          "only glances", reply->integer,
                          store->conf->wait_replicas, n,
                          store->conf->wait_timeout, cl->backoff);

        } else {
            ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                          "imgbill: WAIT failed%s%s; %ui settlement(s) are "
                          "journaled until a replica has them",
                          (reply && reply->type == REDIS_REPLY_ERROR)
                          ? ": " : "",
                          (reply && reply->type == REDIS_REPLY_ERROR)
                          ? reply->str : "", n);
        }

        reply = NULL;
    }

    while (!ngx_queue_empty(&b->settled)) {
        q = ngx_queue_head(&b->settled);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);

        if (cmd->handler) {
            cmd->handler(reply ? &cmd->reply : &lost, cmd->data);
        }

        ngx_free(cmd);
    }

    ngx_free(b);
}
