
/*
 * How the script's commands travel: batched.  A command is queued, and a
 * posted event sends everything the current turn of the event loop queued
 * as one call of the script, which runs each command in order and replies
 * with an array of their results.  Under load a turn queues admissions and
 * settlements of many requests, and Redis pays the cost of entering a
 * script, and of a read and a write, once for all of them; an idle worker
 * still sends a lone command at once.
 *
 * A command owns heap copies of its arguments: it can be resent (EVAL
 * after NOSCRIPT) and can outlive the request that issued it, which may
 * re-point its handler with ngx_http_imgbill_batch_rebind().
 *
 * Commands wait in the queue while the connection is being set up (under
 * Sentinel: the master looked up, and confirmed by ROLE), and fail as lost
 * if it cannot be.
 *
 * With imgbill_redis_wait (ngx_http_imgbill_wait.c), a call that carries
 * a settlement is followed, in the same pipeline, by "WAIT replicas
 * timeout": the settlements' results reach their handlers only once WAIT
 * says enough replicas have everything this connection wrote; otherwise
 * they are answered as lost, and their handlers journal them, as for a
 * reply that never came.  The journal's replay comes back here, and so
 * through WAIT too.  Admissions
 * and releases are answered at once: a hold lost at a failover takes no
 * money (the settlement charges without it), and a release lost leaves a
 * hold that expires.
 */


#include "ngx_http_imgbill_batch.h"
#include "ngx_http_imgbill_script_lua.h"


/*
 * The most commands one script call carries: Redis runs a call without
 * interruption, a few microseconds per command, so this bounds how long
 * one call keeps it from other clients.
 */
#define NGX_HTTP_IMGBILL_BATCH_MAX    128

/*
 * Script calls awaited at once.  While one is out, commands queue and
 * leave together when it returns: under load calls grow rather than
 * multiply, and a command waits for at most one call ahead of its own.
 */
#define NGX_HTTP_IMGBILL_BATCH_DEPTH  4

#define NGX_HTTP_IMGBILL_SHA1_HEX_LEN  40

/* EVALSHA, the SHA, the number of keys */
#define NGX_HTTP_IMGBILL_CALL_HEAD    3


static void ngx_http_imgbill_batch_flush(ngx_event_t *ev);
static ngx_int_t ngx_http_imgbill_batch_send(ngx_http_imgbill_client_t *cl,
    ngx_queue_t *cmds, ngx_uint_t n);
static void ngx_http_imgbill_batch_args(ngx_http_imgbill_batch_t *b,
    ngx_queue_t *cmds);
static ngx_int_t ngx_http_imgbill_batch_eval(ngx_http_imgbill_batch_t *b);
static void ngx_http_imgbill_batch_reply(ngx_http_imgbill_redis_call_t *call,
    redisReply *reply);
static void ngx_http_imgbill_batch_answer(ngx_http_imgbill_client_t *cl,
    ngx_http_imgbill_cmd_t *cmd, redisReply *e,
    ngx_http_imgbill_reply_t *keep);
static void ngx_http_imgbill_batch_fail(ngx_queue_t *cmds);
static void ngx_http_imgbill_batch_failed(ngx_event_t *ev);
static void ngx_http_imgbill_batch_rtt(ngx_http_imgbill_batch_t *b);


ngx_int_t
ngx_http_imgbill_batch_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store)
{
    ngx_http_imgbill_client_t  *cl;

    cl = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_client_t));
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->log = cycle->log;
    cl->store = store;

    cl->flush.handler = ngx_http_imgbill_batch_flush;
    cl->flush.data = cl;
    cl->flush.log = cycle->log;

    cl->fail.handler = ngx_http_imgbill_batch_failed;
    cl->fail.data = cl;
    cl->fail.log = cycle->log;

    ngx_queue_init(&cl->queue);

    store->client = cl;

    return NGX_OK;
}


/* at exit: what was never sent fails as what was sent does, and the
   handlers of settlements journal them */

void
ngx_http_imgbill_batch_done(ngx_http_imgbill_store_t *store)
{
    ngx_queue_t                 queue;
    ngx_http_imgbill_client_t  *cl;

    cl = store->client;

    if (cl == NULL) {
        return;
    }

    if (cl->flush.posted) {
        ngx_delete_posted_event(&cl->flush);
    }

    if (cl->fail.posted) {
        ngx_delete_posted_event(&cl->fail);
    }

    ngx_queue_init(&queue);
    ngx_queue_add(&queue, &cl->queue);
    ngx_queue_init(&cl->queue);

    ngx_http_imgbill_batch_fail(&queue);
}


/*
 * From the connection: NGX_OK, it is ready, what is queued goes; else it
 * could not be set up, and what is queued fails.  Posted either way: this
 * runs inside hiredis' callbacks.
 */

void
ngx_http_imgbill_batch_wake(ngx_http_imgbill_store_t *store, ngx_int_t rc)
{
    ngx_event_t                *ev;
    ngx_http_imgbill_client_t  *cl;

    cl = store->client;

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

    ngx_queue_t  queue;

    /* not retried at once: a Redis that is down would have this spin; the
       next command tries again */

    ngx_queue_init(&queue);
    ngx_queue_add(&queue, &cl->queue);
    ngx_queue_init(&cl->queue);

    ngx_http_imgbill_batch_fail(&queue);
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
    ngx_uint_t                  i;
    ngx_http_imgbill_cmd_t     *cmd;
    ngx_http_imgbill_client_t  *cl;

    cl = store->client;

    if (cl == NULL || ngx_http_imgbill_redis_open(store) != NGX_OK) {
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

    ngx_int_t     rc;
    ngx_uint_t    n;
    ngx_queue_t   batch, rest, *q;

    while (!ngx_queue_empty(&cl->queue)
           && cl->inflight < NGX_HTTP_IMGBILL_BATCH_DEPTH)
    {
        rc = ngx_http_imgbill_redis_ready(cl->store);

        if (rc == NGX_AGAIN) {
            return;             /* the connection wakes this when ready */
        }

        if (rc == NGX_ERROR) {
            ngx_http_imgbill_batch_failed(&cl->fail);
            return;
        }

        /* up to BATCH_MAX commands from the head of the queue */

        n = 0;

        for (q = ngx_queue_head(&cl->queue);
             q != ngx_queue_sentinel(&cl->queue)
             && n < NGX_HTTP_IMGBILL_BATCH_MAX;
             q = ngx_queue_next(q))
        {
            n++;
        }

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


static ngx_int_t
ngx_http_imgbill_batch_send(ngx_http_imgbill_client_t *cl,
    ngx_queue_t *cmds, ngx_uint_t n)
{
    int                        argc;
    size_t                     nkeys;
    ngx_uint_t                 settles;
    ngx_queue_t               *q;
    ngx_http_imgbill_cmd_t    *cmd;
    ngx_http_imgbill_batch_t  *b;

    argc = NGX_HTTP_IMGBILL_CALL_HEAD;
    nkeys = 0;
    settles = 0;

    for (q = ngx_queue_head(cmds);
         q != ngx_queue_sentinel(cmds);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);
        argc += NGX_HTTP_IMGBILL_CMD_HEAD + cmd->argc;
        nkeys += cmd->nkeys;
        settles |= (cmd->script == ngx_http_imgbill_cmd_settle
                    || cmd->script == ngx_http_imgbill_cmd_reverse);
    }

    b = ngx_alloc(sizeof(ngx_http_imgbill_batch_t)
                  + argc * (sizeof(char *) + sizeof(size_t)), cl->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->call.handler = ngx_http_imgbill_batch_reply;
    b->client = cl;
    b->n = n;
    b->waits = 0;
    b->settles = (settles && cl->store->conf->wait_replicas);
    b->evaluated = 0;
    ngx_queue_init(&b->settled);
    b->argc = argc;
    b->argv = (const char **) (b + 1);
    b->argvlen = (size_t *) (b->argv + argc);

    b->argv[0] = "EVALSHA";
    b->argvlen[0] = sizeof("EVALSHA") - 1;
    b->argv[1] = NGX_HTTP_IMGBILL_SCRIPT_SHA;
    b->argvlen[1] = NGX_HTTP_IMGBILL_SHA1_HEX_LEN;
    b->argv[2] = (const char *) b->nkeys;
    b->argvlen[2] = ngx_sprintf(b->nkeys, "%uz", nkeys) - b->nkeys;

    ngx_http_imgbill_batch_args(b, cmds);

    (void) clock_gettime(CLOCK_MONOTONIC, &b->sent);

    if (ngx_http_imgbill_redis_call(cl->store, &b->call, b->argc, b->argv,
                                    b->argvlen)
        != NGX_OK)
    {
        ngx_free(b);
        return NGX_ERROR;
    }

    ngx_queue_init(&b->cmds);
    ngx_queue_add(&b->cmds, cmds);

    cl->inflight++;

    if (b->settles) {
        (void) ngx_http_imgbill_batch_wait(b);
    }

    return NGX_OK;
}


/* KEYS: every command's keys; ARGV: each command's head and rest */

static void
ngx_http_imgbill_batch_args(ngx_http_imgbill_batch_t *b, ngx_queue_t *cmds)
{
    int                      k;
    ngx_uint_t               i;
    ngx_queue_t             *q;
    ngx_http_imgbill_cmd_t  *cmd;

    k = NGX_HTTP_IMGBILL_CALL_HEAD;

    for (q = ngx_queue_head(cmds);
         q != ngx_queue_sentinel(cmds);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);

        for (i = 0; i < cmd->nkeys; i++, k++) {
            b->argv[k] = (const char *) cmd->argv[i].data;
            b->argvlen[k] = cmd->argv[i].len;
        }
    }

    for (q = ngx_queue_head(cmds);
         q != ngx_queue_sentinel(cmds);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);

        for (i = 0; i < NGX_HTTP_IMGBILL_CMD_HEAD; i++, k++) {
            b->argv[k] = (const char *) cmd->head[i].data;
            b->argvlen[k] = cmd->head[i].len;
        }

        for (i = cmd->nkeys; i < cmd->argc; i++, k++) {
            b->argv[k] = (const char *) cmd->argv[i].data;
            b->argvlen[k] = cmd->argv[i].len;
        }
    }
}


static void
ngx_http_imgbill_batch_reply(ngx_http_imgbill_redis_call_t *call,
    redisReply *reply)
{
    ngx_http_imgbill_batch_t *b = (ngx_http_imgbill_batch_t *) call;

    ngx_uint_t                  i;
    redisReply                 *e;
    ngx_queue_t                *q;
    ngx_http_imgbill_cmd_t     *cmd;
    ngx_http_imgbill_client_t  *cl;

    cl = b->client;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && b->argvlen[0] == sizeof("EVALSHA") - 1)
    {
        if (ngx_http_imgbill_batch_eval(b) == NGX_OK) {
            return;
        }

        reply = NULL;
    }

    if (reply) {
        ngx_http_imgbill_batch_rtt(b);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        /* the whole call failed: every command sees the error */
        ngx_http_imgbill_stats_count(cl->store, NGX_HTTP_IMGBILL_REDIS_ERROR);
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "imgbill: redis replied \"%s\" to %s%s",
                      reply->str, b->argv[0],
                      ngx_http_imgbill_redis_hint(reply->str));

        (void) ngx_http_imgbill_redis_demoted(cl->store, reply->str);

    } else if (reply && (reply->type != REDIS_REPLY_ARRAY
                         || reply->elements != b->n))
    {
        /* the commands may have run: treated as a reply lost */
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "imgbill: redis replied with %uz results to a call "
                      "of %ui commands", reply->elements, b->n);
        reply = NULL;
    }

    i = 0;
    b->evaluated = 1;

    while (!ngx_queue_empty(&b->cmds)) {
        q = ngx_queue_head(&b->cmds);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);
        e = (reply && reply->type == REDIS_REPLY_ARRAY) ? reply->element[i]
                                                        : reply;
        i++;

        if (b->settles
            && (cmd->script == ngx_http_imgbill_cmd_settle
                || cmd->script == ngx_http_imgbill_cmd_reverse))
        {

            ngx_http_imgbill_batch_answer(cl, cmd, e, &cmd->reply);

            if (cmd->reply.rc == NGX_HTTP_IMGBILL_REPLY_OK) {
                /* its reply keeps no pointer into e: it can wait */
                ngx_queue_insert_tail(&b->settled, &cmd->queue);
                continue;
            }

            /* failed: nothing to wait for */

            if (cmd->handler) {
                cmd->handler(&cmd->reply, cmd->data);
            }

            ngx_free(cmd);
            continue;
        }

        ngx_http_imgbill_batch_answer(cl, cmd, e, NULL);
        ngx_free(cmd);
    }

    /* without a WAIT to come, what waited for one is as good as lost */

    if (b->waits == 0) {
        ngx_http_imgbill_batch_confirm(b, NULL);
    }

    /* what queued meanwhile goes out now, as one call */

    cl->inflight--;

    if (!ngx_queue_empty(&cl->queue) && !cl->flush.posted) {
        ngx_post_event(&cl->flush, &ngx_posted_events);
    }
}


/*
 * The script cache is empty (a restart, SCRIPT FLUSH, a replica just
 * promoted): EVAL once.  A WAIT sent behind the EVALSHA answers before the
 * EVAL runs: another one follows it.
 */

static ngx_int_t
ngx_http_imgbill_batch_eval(ngx_http_imgbill_batch_t *b)
{
    b->argv[0] = "EVAL";
    b->argvlen[0] = sizeof("EVAL") - 1;
    b->argv[1] = ngx_http_imgbill_script_lua;
    b->argvlen[1] = sizeof(ngx_http_imgbill_script_lua) - 1;

    if (ngx_http_imgbill_redis_call(b->client->store, &b->call, b->argc,
                                    b->argv, b->argvlen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (b->settles) {
        (void) ngx_http_imgbill_batch_wait(b);
    }

    return NGX_OK;
}


/*
 * One command's result (NULL: lost), parsed: to its handler, or into keep
 * for later.
 */

static void
ngx_http_imgbill_batch_answer(ngx_http_imgbill_client_t *cl,
    ngx_http_imgbill_cmd_t *cmd, redisReply *e, ngx_http_imgbill_reply_t *keep)
{
    ngx_str_t                 *name;
    ngx_http_imgbill_reply_t   answer, *reply;

    reply = keep ? keep : &answer;

    ngx_memzero(reply, sizeof(ngx_http_imgbill_reply_t));

    name = ngx_http_imgbill_script_name(cmd->script);

    if (e == NULL) {
        reply->rc = NGX_HTTP_IMGBILL_REPLY_LOST;

    } else if (e->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "imgbill: redis replied \"%s\" to %V%s", e->str, name,
                      ngx_http_imgbill_redis_hint(e->str));
        reply->rc = NGX_HTTP_IMGBILL_REPLY_ERROR;

        (void) ngx_http_imgbill_redis_demoted(cl->store, e->str);

    } else {
        reply->rc = ngx_http_imgbill_script_parse(cmd->script, e, reply);

        if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
            ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                          "imgbill: unexpected reply to %V", name);
        }
    }

    if (keep == NULL && cmd->handler) {
        cmd->handler(reply, cmd->data);
    }
}


/* commands that were never sent, and never will be: their handlers know
   that Redis never saw them (a reply lost after its send may have run) */

static void
ngx_http_imgbill_batch_fail(ngx_queue_t *cmds)
{
    ngx_queue_t               *q;
    ngx_http_imgbill_cmd_t    *cmd;
    ngx_http_imgbill_reply_t   reply;

    ngx_memzero(&reply, sizeof(ngx_http_imgbill_reply_t));
    reply.rc = NGX_HTTP_IMGBILL_REPLY_UNSENT;

    while (!ngx_queue_empty(cmds)) {
        q = ngx_queue_head(cmds);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_imgbill_cmd_t, queue);

        if (cmd->handler) {
            cmd->handler(&reply, cmd->data);
        }

        ngx_free(cmd);
    }
}


/* a call's round trip, from its send to its reply, to the metrics */

static void
ngx_http_imgbill_batch_rtt(ngx_http_imgbill_batch_t *b)
{
    struct timespec  now;

    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
        return;
    }

    ngx_http_imgbill_stats_rtt(b->client->store,
                                 (ngx_msec_t) (now.tv_sec - b->sent.tv_sec)
                                 * 1000000
                                 + (now.tv_nsec - b->sent.tv_nsec) / 1000);
}
