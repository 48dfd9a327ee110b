
/*
 * How the script's commands travel: batched.  A lane's client
 * (ngx_http_imgbill_client.c) sends everything the current turn of the
 * event loop queued as one call of the script, which runs each command in
 * order and replies with an array of their results.  Under load a turn
 * queues admissions and settlements of many requests, and Redis pays the
 * cost of entering a script, and of a read and a write, once for all of
 * them; an idle worker still sends a lone command at once.
 *
 * With imgbill_redis_wait (ngx_http_imgbill_wait.c), a call that carries
 * a settlement is followed, in the same pipeline, by "WAIT replicas
 * timeout": the settlements' results reach their handlers only once WAIT
 * says enough replicas have everything this connection wrote; otherwise
 * they are answered as lost, and their handlers journal them, as for a
 * reply that never came.  The journal's replay comes back here, and so
 * through WAIT too.  Admissions and releases are answered at once: a hold
 * lost at a failover takes no money (the settlement charges without it),
 * and a release lost leaves a hold that expires.
 */


#include "ngx_http_imgbill_batch.h"
#include "ngx_http_imgbill_script_lua.h"


#define NGX_HTTP_IMGBILL_SHA1_HEX_LEN  40

/* EVALSHA, the SHA, the number of keys */
#define NGX_HTTP_IMGBILL_CALL_HEAD    3


static void ngx_http_imgbill_batch_args(ngx_http_imgbill_batch_t *b,
    ngx_queue_t *cmds);
static ngx_int_t ngx_http_imgbill_batch_eval(ngx_http_imgbill_batch_t *b);
static void ngx_http_imgbill_batch_reply(ngx_http_imgbill_redis_call_t *call,
    redisReply *reply);
static void ngx_http_imgbill_batch_answer(ngx_http_imgbill_client_t *cl,
    ngx_http_imgbill_cmd_t *cmd, redisReply *e,
    ngx_http_imgbill_reply_t *keep);
static void ngx_http_imgbill_batch_error(ngx_http_imgbill_client_t *cl,
    char *error, ngx_str_t *what);
static ngx_uint_t ngx_http_imgbill_batch_passing(char *error);
static void ngx_http_imgbill_batch_rtt(ngx_http_imgbill_batch_t *b);


ngx_int_t
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
    b->glance = 0;
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

    if (ngx_http_imgbill_redis_call(cl->redis, &b->call, b->argc, b->argv,
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
    ngx_queue_t                 again, *q;
    ngx_http_imgbill_cmd_t     *cmd;
    ngx_http_imgbill_client_t  *cl;

    cl = b->client;

    ngx_queue_init(&again);

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
        ngx_http_imgbill_batch_error(cl, reply->str, NULL);

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

        if (e && e->type == REDIS_REPLY_ERROR && cmd->waits
            && ngx_http_imgbill_batch_passing(e->str)
            && ngx_current_msec - cmd->queued
               < cl->store->conf->outage_wait)
        {
            /* nothing was written: it waits for the master to take it
               (the whole call's error is said once, above) */
            if (e != reply) {
                ngx_http_imgbill_batch_error(cl, e->str,
                                 ngx_http_imgbill_script_name(cmd->script));
            }

            ngx_queue_insert_tail(&again, q);
            continue;
        }

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

    if (!ngx_queue_empty(&again)) {
        ngx_http_imgbill_batch_again(cl, &again);
    }

    /* without a WAIT to come, what waited for one is as good as lost;
       with one, the call ends when it answers */

    if (b->waits == 0) {
        ngx_http_imgbill_batch_confirm(b, NULL);
        ngx_http_imgbill_batch_next(cl);
    }
}


/* a call ended: what queued meanwhile goes out now, as one call */

void
ngx_http_imgbill_batch_next(ngx_http_imgbill_client_t *cl)
{
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

    if (ngx_http_imgbill_redis_call(b->client->redis, &b->call, b->argc,
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
        ngx_http_imgbill_batch_error(cl, e->str, name);
        reply->rc = NGX_HTTP_IMGBILL_REPLY_ERROR;

    } else {
        reply->rc = ngx_http_imgbill_script_parse(cmd->script, e, reply);

        if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
            ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                          "imgbill: unexpected reply to %V", name);

        } else if (cl->store->refusing
                   && ((cmd->script == ngx_http_imgbill_cmd_admit
                        && reply->status == NGX_HTTP_IMGBILL_ADMIT_HELD)
                       || cmd->script == ngx_http_imgbill_cmd_settle))
        {
            cl->store->refusing = 0;
            ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                          "imgbill: redis \"%V\" takes writes again",
                          ngx_http_imgbill_store_redis(cl->store));
        }
    }

    if (keep == NULL && cmd->handler) {
        cmd->handler(reply, cmd->data);
    }
}


/*
 * An error reply, to the log: a server that is no longer the master is
 * dropped; NOREPLICAS, which every write gets while it lasts, is said
 * once, in words, until a call goes through again.
 */

static void
ngx_http_imgbill_batch_error(ngx_http_imgbill_client_t *cl, char *error,
    ngx_str_t *what)
{
    ngx_http_imgbill_store_t  *store;

    store = cl->store;

    if (ngx_strncmp(error, "NOREPLICAS", 10) == 0
        || ngx_strncmp(error, "LOADING", 7) == 0)
    {
        if (store->refusing) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, cl->log, 0,
                           "imgbill: redis replied \"%s\"", error);
            return;
        }

        store->refusing = 1;

        if (error[0] == 'L') {
            ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                          "imgbill: redis \"%V\" is loading its data "
                          "(\"%s\"): admissions wait for it within "
                          "imgbill_redis_outage_wait, settlements go to "
                          "the journal (said once until writes go "
                          "through again)",
                          ngx_http_imgbill_store_redis(store), error);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "imgbill: redis \"%V\" refuses writes (\"%s\"): it "
                      "has fewer replicas in sync than its "
                      "\"min-replicas-to-write\"; until a replica is back "
                      "admissions wait (imgbill_redis_outage_wait), then "
                      "get 503, and settlements go to the journal; to "
                      "take writes on the master alone, set "
                      "\"min-replicas-to-write 0\" on it (said once until "
                      "writes go through again)",
                      ngx_http_imgbill_store_redis(store), error);
        return;
    }

    if (what) {
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "imgbill: redis replied \"%s\" to %V%s", error, what,
                      ngx_http_imgbill_redis_hint(error));

    } else {
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "imgbill: redis replied \"%s\" to a script call%s",
                      error, ngx_http_imgbill_redis_hint(error));
    }

    (void) ngx_http_imgbill_redis_demoted(cl->redis, error);
}


/*
 * Errors of a master that will take the command soon, having written
 * nothing of it: loading its data, demoted, short of replicas.
 */

static ngx_uint_t
ngx_http_imgbill_batch_passing(char *error)
{
    return ngx_strncmp(error, "LOADING", 7) == 0
           || ngx_strncmp(error, "READONLY", 8) == 0
           || ngx_strncmp(error, "MASTERDOWN", 10) == 0
           || ngx_strncmp(error, "NOREPLICAS", 10) == 0;
}


/* commands that were never sent, and never will be: their handlers know
   that Redis never saw them (a reply lost after its send may have run) */

void
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
