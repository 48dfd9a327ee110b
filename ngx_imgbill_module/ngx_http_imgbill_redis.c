
/*
 * Redis through hiredis' async API, driven by nginx's event loop.
 *
 * Each worker keeps one connection, opened on first use and reopened on
 * the first command after it is lost.  hiredis' read/write hooks map onto
 * level-triggered events of an ngx_connection_t: hiredis reads one buffer
 * per call and expects to be called again while data remain.
 *
 * hiredis has no timeouts of its own.  One timer per connection measures
 * how long a command has waited without any reply arriving; when it runs
 * out the connection is dropped, which fails every pending command with a
 * NULL reply, so no request waits longer than imgbill_redis_timeout for a
 * Redis that hangs.
 *
 * Commands are batched: a command is queued, and a posted event sends
 * everything the current turn of the event loop queued as one call of one
 * script, which runs each command in order and replies with an array of
 * their results.  Under load a turn queues admissions and settlements of
 * many requests, and Redis pays the cost of entering a script, and of a
 * read and a write, once for all of them; an idle worker still sends a
 * lone command at once.  Each command keeps its own atomicity and its own
 * result: the script runs it under pcall, so one failing (a key of the
 * wrong type) answers that command with an error and no other.
 *
 * A command owns heap copies of its arguments: it can be resent (EVAL
 * after NOSCRIPT) and can outlive the request that issued it, which may
 * re-point its handler with ngx_http_imgbill_redis_rebind().
 */


#include "ngx_http_imgbill_module.h"
#include <openssl/evp.h>


static ngx_str_t  ngx_http_imgbill_script_names[] = {
    ngx_string("admit"),
    ngx_string("settle"),
    ngx_string("release"),
    ngx_string("release_key")
};


/*
 * The most commands one script call carries: Redis runs a call without
 * interruption, a few microseconds per command, so this bounds how long
 * one call keeps it from other clients.
 */
#define NGX_HTTP_IMGBILL_BATCH_MAX  128

/*
 * Script calls awaited at once.  While one is out, commands queue and
 * leave together when it returns: under load calls grow rather than
 * multiply, and a command waits for at most one call ahead of its own.
 */
#define NGX_HTTP_IMGBILL_BATCH_DEPTH  4


struct ngx_http_imgbill_redis_s {
    redisAsyncContext                  *ac;
    ngx_connection_t                   *connection;
    ngx_event_t                         timer;
    ngx_event_t                         flush;    /* posted: sends queue */
    ngx_queue_t                         queue;    /* commands not yet sent */
    ngx_uint_t                          pending;  /* hiredis calls awaited */
    ngx_uint_t                          inflight; /* script calls awaited */
    ngx_log_t                          *log;
    ngx_http_imgbill_main_conf_t       *conf;
    u_char                              sha[41];
};


struct ngx_http_imgbill_redis_cmd_s {
    ngx_queue_t                         queue;
    ngx_http_imgbill_redis_handler_pt   handler;
    void                               *data;
    ngx_int_t                           script;
    ngx_uint_t                          nkeys;
    ngx_uint_t                          argc;
    ngx_str_t                          *argv;    /* keys, then arguments */
    ngx_str_t                           head[3]; /* script, nkeys, nargs */
};


/* one script call: the commands it carries and its argument vector */

typedef struct {
    ngx_http_imgbill_redis_t           *redis;
    ngx_queue_t                         cmds;
    ngx_uint_t                          n;
    int                                 argc;
    const char                        **argv;
    size_t                             *argvlen;
    u_char                              nkeys[NGX_INT_T_LEN];
} ngx_http_imgbill_redis_batch_t;


static ngx_int_t ngx_http_imgbill_redis_connect(ngx_http_imgbill_redis_t *rd);
static void ngx_http_imgbill_redis_flush(ngx_event_t *ev);
static ngx_int_t ngx_http_imgbill_redis_send_batch(
    ngx_http_imgbill_redis_t *rd, ngx_queue_t *cmds, ngx_uint_t n);
static void ngx_http_imgbill_redis_fail(ngx_queue_t *cmds);
static void ngx_http_imgbill_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_imgbill_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_imgbill_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_imgbill_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_imgbill_redis_read_handler(ngx_event_t *rev);
static void ngx_http_imgbill_redis_write_handler(ngx_event_t *wev);
static void ngx_http_imgbill_redis_timeout(ngx_event_t *ev);
static void ngx_http_imgbill_redis_add_read(void *data);
static void ngx_http_imgbill_redis_del_read(void *data);
static void ngx_http_imgbill_redis_add_write(void *data);
static void ngx_http_imgbill_redis_del_write(void *data);
static void ngx_http_imgbill_redis_cleanup(void *data);


/*
 * Holds: the hash imgbill:{acct}:holds (request id -> "units:expiry", what
 * operators read) and, beside it, the hash imgbill:{acct}:held: "units",
 * the sum of the holds, and "sweep", a time before which no hold can have
 * expired.  An admission reads the sum, not every hold, so it costs the
 * same with one request in flight or a thousand; it recounts the holds
 * only once "sweep" has passed (about once per imgbill_hold_ttl on a busy
 * account), or when the sum is missing (a first hold, an older imgbill).
 * A hold released by something else than these scripts leaves the sum too
 * high until that recount: on the side of refusing, never of overspending.
 */

/*
 * The script: one function per command, and a loop that runs the commands
 * of a call.  Its ARGV holds, per command, the function's number, how many
 * KEYS and how many ARGV it takes, then those arguments; its KEYS are every
 * command's keys in the same order.  Commands of several accounts share a
 * call, which is why imgbill needs a standalone Redis (or a proxy that
 * keeps a connection's calls on one node), as the key lookup always did.
 */

static const char  ngx_http_imgbill_lua[] =

/*
 * give back one hold; the worker that placed it knows its amount, and
 * saves reading it back, a journal replay does not (amt is 0 or "")
 */

    "local function unhold(holds, held, rid, amt)\n"
    "  amt = tonumber(amt)\n"
    "  if amt and amt > 0 then\n"
    "    if redis.call('HDEL', holds, rid) == 0 then return 0 end\n"
    "  else\n"
    "    local h = redis.call('HGET', holds, rid)\n"
    "    if not h then return 0 end\n"
    "    redis.call('HDEL', holds, rid)\n"
    "    amt = tonumber(string.match(h, '^(%d+)') or '0')\n"
    "  end\n"
    "  if redis.call('HINCRBY', held, 'units', -amt) < 0 then\n"
    "    redis.call('HSET', held, 'units', 0, 'sweep', 0)\n"
    "  end\n"
    "  return 1\n"
    "end\n"

/*
 * admit: KEYS[1] = imgbill:key:<sha256 of the API key>
 *        ARGV = request id, gate (units), hold (units), hold ttl (s)
 * -> {-1} unknown key | {0, account, balance, available} gate not met
 *    | {1, account, balance, available} hold placed
 *
 * Expired holds do not count, and are swept when a new hold is placed;
 * a rejection writes nothing.  The key lookup is the one cross-slot read:
 * everything written lives under {account}.
 */

    "local function admit(KEYS, ARGV)\n"
    "local acct = redis.call('GET', KEYS[1])\n"
    "if not acct then return {-1} end\n"
    "local p = 'imgbill:{' .. acct .. '}:'\n"
    "local holds, heldk = p .. 'holds', p .. 'held'\n"
    "local bal = tonumber(redis.call('GET', p .. 'balance') or '0')\n"
    "local now = tonumber(redis.call('TIME')[1])\n"
    "local exp = now + tonumber(ARGV[4])\n"
    "local s = redis.call('HMGET', heldk, 'units', 'sweep')\n"
    "local held, sweep = tonumber(s[1]), tonumber(s[2])\n"
    "local stale = {}\n"
    "if not held or not sweep or sweep <= now then\n"
    "  held, sweep = 0, exp\n"
    "  local h = redis.call('HGETALL', holds)\n"
    "  for i = 1, #h, 2 do\n"
    "    local amt, e = string.match(h[i + 1], '^(%d+):(%d+)$')\n"
    "    e = tonumber(e)\n"
    "    if amt and e > now then\n"
    "      held = held + tonumber(amt)\n"
    "      if e < sweep then sweep = e end\n"
    "    else\n"
    "      stale[#stale + 1] = h[i]\n"
    "    end\n"
    "  end\n"
    "else\n"
    "  sweep = nil\n"
    "end\n"
    "local avail = bal - held\n"
    "if avail < tonumber(ARGV[2]) then return {0, acct, bal, avail} end\n"
    "for i = 1, #stale, 2000 do\n"
    "  redis.call('HDEL', holds,\n"
    "             unpack(stale, i, math.min(i + 1999, #stale)))\n"
    "end\n"
    "redis.call('HSET', holds, ARGV[1], ARGV[3] .. ':' .. exp)\n"
    "if sweep then\n"
    "  redis.call('HSET', heldk, 'units', held + tonumber(ARGV[3]),\n"
    "             'sweep', sweep)\n"
    "else\n"
    "  redis.call('HINCRBY', heldk, 'units', ARGV[3])\n"
    "end\n"
    "return {1, acct, bal, avail}\n"
    "end\n"

/*
 * settle: KEYS = balance, holds, ledger, settled marker, held
 *         (all {account})
 *         ARGV = request id, charge, channel, model, prompt tokens,
 *                completion tokens, marker ttl (s), time, hold (0: unknown)
 * -> {1, balance} applied | {0, balance} already applied earlier
 *
 * The marker makes a charge idempotent per request id: setting it is the
 * test.  Redis undoes nothing a failing script did, so a failure (a key of
 * the wrong type) before the balance moved takes the marker back, and the
 * journal can try again; once the balance moved, the marker stays, and the
 * charge is never applied twice.  A free outcome only gives the hold back
 * and writes no ledger entry.  The time is the relay's: when the charge
 * was decided.
 */

    "local function settle(KEYS, ARGV)\n"
    "local charge = tonumber(ARGV[2])\n"
    "if charge <= 0 then\n"
    "  if redis.call('EXISTS', KEYS[4]) == 0 then\n"
    "    unhold(KEYS[2], KEYS[5], ARGV[1], ARGV[9])\n"
    "    return {1, tonumber(redis.call('GET', KEYS[1]) or '0')}\n"
    "  end\n"
    "elseif redis.call('SET', KEYS[4], ARGV[2], 'NX', 'EX', ARGV[7]) then\n"
    "  local bal\n"
    "  local ok, e = pcall(function()\n"
    "    unhold(KEYS[2], KEYS[5], ARGV[1], ARGV[9])\n"
    "    bal = redis.call('DECRBY', KEYS[1], charge)\n"
    "    redis.call('XADD', KEYS[3], '*', 'request_id', ARGV[1],\n"
    "               'ts', ARGV[8], 'channel', ARGV[3],\n"
    "               'model', ARGV[4], 'prompt_tokens', ARGV[5],\n"
    "               'completion_tokens', ARGV[6], 'charge', ARGV[2],\n"
    "               'balance_after', bal)\n"
    "  end)\n"
    "  if not ok then\n"
    "    if not bal then redis.call('DEL', KEYS[4]) end\n"
    "    error(e)\n"
    "  end\n"
    "  return {1, bal}\n"
    "end\n"
    "return {0, tonumber(redis.call('GET', KEYS[1]) or '0')}\n"
    "end\n"

/*
 * release: KEYS = holds, held (both {account});
 *          ARGV = request id, hold (0: unknown)
 */

    "local function release(KEYS, ARGV)\n"
    "return unhold(KEYS[1], KEYS[2], ARGV[1], ARGV[2])\n"
    "end\n"

/*
 * release by key: KEYS[1] = imgbill:key:<sha256>, ARGV[1] = request id
 * An admission whose reply was lost may have placed a hold; only the key
 * is known then, not the account.
 */

    "local function release_key(KEYS, ARGV)\n"
    "local acct = redis.call('GET', KEYS[1])\n"
    "if not acct then return 0 end\n"
    "local p = 'imgbill:{' .. acct .. '}:'\n"
    "return unhold(p .. 'holds', p .. 'held', ARGV[1], '')\n"
    "end\n"

/* in the order of ngx_http_imgbill_script_e, from 1 */

    "local run = {admit, settle, release, release_key}\n"
    "local out, k, i = {}, 1, 1\n"
    "while i <= #ARGV do\n"
    "  local f = run[tonumber(ARGV[i])]\n"
    "  local nk, na = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])\n"
    "  local ok, r = pcall(f, {unpack(KEYS, k, k + nk - 1)},\n"
    "                      {unpack(ARGV, i + 3, i + 2 + na)})\n"
    "  if not ok then\n"
    "    r = {err = type(r) == 'table' and r.err or tostring(r)}\n"
    "  end\n"
    "  out[#out + 1] = r\n"
    "  k, i = k + nk, i + 3 + na\n"
    "end\n"
    "return out\n";


ngx_int_t
ngx_http_imgbill_redis_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf)
{
    u_char                     md[EVP_MAX_MD_SIZE];
    unsigned int               len;
    ngx_http_imgbill_redis_t  *rd;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->log = cycle->log;
    rd->conf = mcf;

    rd->timer.handler = ngx_http_imgbill_redis_timeout;
    rd->timer.data = rd;
    rd->timer.log = cycle->log;

    rd->flush.handler = ngx_http_imgbill_redis_flush;
    rd->flush.data = rd;
    rd->flush.log = cycle->log;

    ngx_queue_init(&rd->queue);

    /*
     * Not cancelable: a worker that quits gracefully waits for the commands
     * still pending (a settle, a release), at most imgbill_redis_timeout.
     */

    /* EVALSHA names a script by the SHA-1 of its text */

    if (EVP_Digest(ngx_http_imgbill_lua, sizeof(ngx_http_imgbill_lua) - 1,
                   md, &len, EVP_sha1(), NULL)
        != 1)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "imgbill: EVP_Digest(sha1) failed");
        return NGX_ERROR;
    }

    *ngx_hex_dump(rd->sha, md, len) = '\0';

    mcf->redis = rd;

    return NGX_OK;
}


void
ngx_http_imgbill_redis_done(ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_queue_t                queue;
    ngx_http_imgbill_redis_t  *rd;

    rd = mcf->redis;

    if (rd == NULL) {
        return;
    }

    /* what was never sent fails as what was sent does: the handlers of
       settlements journal them */

    if (rd->flush.posted) {
        ngx_delete_posted_event(&rd->flush);
    }

    ngx_queue_init(&queue);
    ngx_queue_add(&queue, &rd->queue);
    ngx_queue_init(&rd->queue);

    ngx_http_imgbill_redis_fail(&queue);

    if (rd->ac) {
        redisAsyncFree(rd->ac);
    }
}


/*
 * For work that has no request behind it (the journal): NGX_OK when
 * connected, NGX_AGAIN while a connection is being set up (its connect
 * callback wakes the journal), NGX_ERROR when Redis cannot be reached.
 */

ngx_int_t
ngx_http_imgbill_redis_ready(ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = mcf->redis;

    if (rd == NULL) {
        return NGX_ERROR;
    }

    if (rd->ac == NULL) {
        return (ngx_http_imgbill_redis_connect(rd) == NGX_OK) ? NGX_AGAIN
                                                              : NGX_ERROR;
    }

    return (rd->ac->c.flags & REDIS_CONNECTED) ? NGX_OK : NGX_AGAIN;
}


/*
 * Queues a command; NULL when it cannot be (no connection can be opened,
 * no memory), and then its handler is never called.
 */

ngx_http_imgbill_redis_cmd_t *
ngx_http_imgbill_redis_send(ngx_http_imgbill_main_conf_t *mcf,
    ngx_int_t script, ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_imgbill_redis_handler_pt handler, void *data)
{
    u_char                        *p;
    size_t                         size;
    ngx_uint_t                     i;
    ngx_http_imgbill_redis_t      *rd;
    ngx_http_imgbill_redis_cmd_t  *cmd;

    rd = mcf->redis;

    if (rd == NULL) {
        return NULL;
    }

    if (rd->ac == NULL && ngx_http_imgbill_redis_connect(rd) != NGX_OK) {
        return NULL;
    }

    size = sizeof(ngx_http_imgbill_redis_cmd_t) + argc * sizeof(ngx_str_t)
           + 3 * NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        size += argv[i].len;
    }

    cmd = ngx_alloc(size, rd->log);
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
    p = ngx_sprintf(p, "%i", script + 1);
    cmd->head[0].len = p - cmd->head[0].data;

    cmd->head[1].data = p;
    p = ngx_sprintf(p, "%ui", nkeys);
    cmd->head[1].len = p - cmd->head[1].data;

    cmd->head[2].data = p;
    p = ngx_sprintf(p, "%ui", argc - nkeys);
    cmd->head[2].len = p - cmd->head[2].data;

    ngx_queue_insert_tail(&rd->queue, &cmd->queue);

    /* run after this turn's other events, which may queue more */

    if (!rd->flush.posted) {
        ngx_post_event(&rd->flush, &ngx_posted_events);
    }

    return cmd;
}


static void
ngx_http_imgbill_redis_flush(ngx_event_t *ev)
{
    ngx_http_imgbill_redis_t *rd = ev->data;

    ngx_uint_t    n;
    ngx_queue_t   batch, rest, *q;

    while (!ngx_queue_empty(&rd->queue)
           && rd->inflight < NGX_HTTP_IMGBILL_BATCH_DEPTH)
    {
        /* up to BATCH_MAX commands from the head of the queue */

        n = 0;

        for (q = ngx_queue_head(&rd->queue);
             q != ngx_queue_sentinel(&rd->queue)
             && n < NGX_HTTP_IMGBILL_BATCH_MAX;
             q = ngx_queue_next(q))
        {
            n++;
        }

        ngx_queue_init(&rest);

        if (q != ngx_queue_sentinel(&rd->queue)) {
            ngx_queue_split(&rd->queue, q, &rest);
        }

        ngx_queue_init(&batch);
        ngx_queue_add(&batch, &rd->queue);
        ngx_queue_init(&rd->queue);
        ngx_queue_add(&rd->queue, &rest);

        /* the connection may have been lost since the commands queued */

        if ((rd->ac == NULL && ngx_http_imgbill_redis_connect(rd) != NGX_OK)
            || ngx_http_imgbill_redis_send_batch(rd, &batch, n) != NGX_OK)
        {
            ngx_http_imgbill_redis_fail(&batch);
        }
    }
}


static ngx_int_t
ngx_http_imgbill_redis_send_batch(ngx_http_imgbill_redis_t *rd,
    ngx_queue_t *cmds, ngx_uint_t n)
{
    int                              argc, k;
    size_t                           nkeys;
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_http_imgbill_redis_cmd_t    *cmd;
    ngx_http_imgbill_redis_batch_t  *b;

    argc = 3;
    nkeys = 0;

    for (q = ngx_queue_head(cmds);
         q != ngx_queue_sentinel(cmds);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_imgbill_redis_cmd_t, queue);
        argc += 3 + cmd->argc;
        nkeys += cmd->nkeys;
    }

    b = ngx_alloc(sizeof(ngx_http_imgbill_redis_batch_t)
                  + argc * (sizeof(char *) + sizeof(size_t)), rd->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->redis = rd;
    b->n = n;
    b->argc = argc;
    b->argv = (const char **) (b + 1);
    b->argvlen = (size_t *) (b->argv + argc);

    b->argv[0] = "EVALSHA";
    b->argvlen[0] = sizeof("EVALSHA") - 1;
    b->argv[1] = (const char *) rd->sha;
    b->argvlen[1] = 40;
    b->argv[2] = (const char *) b->nkeys;
    b->argvlen[2] = ngx_sprintf(b->nkeys, "%uz", nkeys) - b->nkeys;

    /* KEYS: every command's keys; ARGV: each command's head and rest */

    k = 3;

    for (q = ngx_queue_head(cmds);
         q != ngx_queue_sentinel(cmds);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_imgbill_redis_cmd_t, queue);

        for (i = 0; i < cmd->nkeys; i++, k++) {
            b->argv[k] = (const char *) cmd->argv[i].data;
            b->argvlen[k] = cmd->argv[i].len;
        }
    }

    for (q = ngx_queue_head(cmds);
         q != ngx_queue_sentinel(cmds);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_imgbill_redis_cmd_t, queue);

        for (i = 0; i < 3; i++, k++) {
            b->argv[k] = (const char *) cmd->head[i].data;
            b->argvlen[k] = cmd->head[i].len;
        }

        for (i = cmd->nkeys; i < cmd->argc; i++, k++) {
            b->argv[k] = (const char *) cmd->argv[i].data;
            b->argvlen[k] = cmd->argv[i].len;
        }
    }

    if (redisAsyncCommandArgv(rd->ac, ngx_http_imgbill_redis_reply, b,
                              b->argc, b->argv, b->argvlen)
        != REDIS_OK)
    {
        /* the connection is going away under us */
        ngx_free(b);
        return NGX_ERROR;
    }

    ngx_queue_init(&b->cmds);
    ngx_queue_add(&b->cmds, cmds);

    rd->inflight++;

    if (rd->pending++ == 0) {
        ngx_add_timer(&rd->timer, rd->conf->timeout);
    }

    return NGX_OK;
}


/* commands that will never be answered: their handlers see a lost reply */

static void
ngx_http_imgbill_redis_fail(ngx_queue_t *cmds)
{
    ngx_queue_t                   *q;
    ngx_http_imgbill_redis_cmd_t  *cmd;

    while (!ngx_queue_empty(cmds)) {
        q = ngx_queue_head(cmds);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_imgbill_redis_cmd_t, queue);

        if (cmd->handler) {
            cmd->handler(NULL, cmd->data);
        }

        ngx_free(cmd);
    }
}


void
ngx_http_imgbill_redis_rebind(ngx_http_imgbill_redis_cmd_t *cmd,
    ngx_http_imgbill_redis_handler_pt handler, void *data)
{
    cmd->handler = handler;
    cmd->data = data;
}


/* the settle script for one request; argument copies are the command's */

ngx_http_imgbill_redis_cmd_t *
ngx_http_imgbill_redis_settle(ngx_http_imgbill_main_conf_t *mcf,
    ngx_http_imgbill_settle_t *s, ngx_http_imgbill_redis_handler_pt handler,
    void *data)
{
    u_char      *p, buf[5 * (sizeof("imgbill:{}:settled:") - 1
                             + NGX_HTTP_IMGBILL_ACCOUNT_MAX)
                        + NGX_HTTP_IMGBILL_REQUEST_ID_MAX
                        + 4 * NGX_INT_T_LEN + NGX_TIME_T_LEN];
    ngx_str_t    argv[14];
    ngx_uint_t   i;

    static const char  *suffix[] = { "balance", "holds", "ledger",
                                     "settled:", "held" };

    if (s->account.len > NGX_HTTP_IMGBILL_ACCOUNT_MAX
        || s->request_id.len > NGX_HTTP_IMGBILL_REQUEST_ID_MAX)
    {
        return NULL;
    }

    p = buf;

    /* KEYS: everything under the account's hash tag, one cluster slot */

    for (i = 0; i < 5; i++) {
        argv[i].data = p;
        p = ngx_sprintf(p, "imgbill:{%V}:%s", &s->account, suffix[i]);

        if (i == 3) {
            p = ngx_cpymem(p, s->request_id.data, s->request_id.len);
        }

        argv[i].len = p - argv[i].data;
    }

    argv[5] = s->request_id;

    argv[6].data = p;
    p = ngx_sprintf(p, "%i", s->charge);
    argv[6].len = p - argv[6].data;

    if (s->channel == NGX_HTTP_IMGBILL_FAST) {
        ngx_str_set(&argv[7], "fast");

    } else {
        ngx_str_set(&argv[7], "metered");
    }

    argv[8] = s->model;

    argv[9].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(s->prompt_tokens, 0));
    argv[9].len = p - argv[9].data;

    argv[10].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(s->completion_tokens, 0));
    argv[10].len = p - argv[10].data;

    ngx_str_set(&argv[11], NGX_HTTP_IMGBILL_SETTLED_TTL);

    argv[12].data = p;
    p = ngx_sprintf(p, "%T", ngx_time());
    argv[12].len = p - argv[12].data;

    argv[13].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(s->hold, 0));
    argv[13].len = p - argv[13].data;

    return ngx_http_imgbill_redis_send(mcf, ngx_http_imgbill_script_settle,
                                       5, 14, argv, handler, data);
}


/* give a hold back: the account is known */

ngx_http_imgbill_redis_cmd_t *
ngx_http_imgbill_redis_release(ngx_http_imgbill_main_conf_t *mcf,
    ngx_str_t *account, ngx_str_t *request_id, ngx_int_t hold,
    ngx_http_imgbill_redis_handler_pt handler, void *data)
{
    u_char      *p, buf[2 * (sizeof("imgbill:{}:holds") - 1
                             + NGX_HTTP_IMGBILL_ACCOUNT_MAX)
                        + NGX_INT_T_LEN];
    ngx_str_t    argv[4];
    ngx_uint_t   i;

    static const char  *suffix[] = { "holds", "held" };

    if (account->len > NGX_HTTP_IMGBILL_ACCOUNT_MAX) {
        return NULL;
    }

    p = buf;

    for (i = 0; i < 2; i++) {
        argv[i].data = p;
        p = ngx_sprintf(p, "imgbill:{%V}:%s", account, suffix[i]);
        argv[i].len = p - argv[i].data;
    }

    argv[2] = *request_id;

    argv[3].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(hold, 0));
    argv[3].len = p - argv[3].data;

    return ngx_http_imgbill_redis_send(mcf, ngx_http_imgbill_script_release,
                                       2, 4, argv, handler, data);
}


/* give a hold back: only the key is known */

ngx_int_t
ngx_http_imgbill_redis_release_key(ngx_http_imgbill_main_conf_t *mcf,
    ngx_str_t *request_id, u_char *key_hash,
    ngx_http_imgbill_redis_handler_pt handler, void *data)
{
    u_char     buf[sizeof("imgbill:key:") + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t  argv[2];

    argv[0].data = buf;
    argv[0].len = ngx_sprintf(buf, "imgbill:key:%*s",
                              (size_t) NGX_HTTP_IMGBILL_KEY_HASH_LEN,
                              key_hash)
                  - buf;

    argv[1] = *request_id;

    return ngx_http_imgbill_redis_send(mcf,
                                       ngx_http_imgbill_script_release_key,
                                       1, 2, argv, handler, data)
           ? NGX_OK : NGX_ERROR;
}


/* element i of an array reply as an integer */

ngx_int_t
ngx_http_imgbill_redis_integer(redisReply *reply, ngx_uint_t i,
    ngx_int_t *value)
{
    redisReply  *e;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || i >= reply->elements)
    {
        return NGX_ERROR;
    }

    e = reply->element[i];

    if (e->type != REDIS_REPLY_INTEGER) {
        return NGX_ERROR;
    }

    *value = (ngx_int_t) e->integer;

    return NGX_OK;
}


static void
ngx_http_imgbill_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                      *reply = r;
    ngx_http_imgbill_redis_batch_t  *b = privdata;

    redisReply                    *e;
    ngx_uint_t                     i;
    ngx_queue_t                   *q;
    ngx_http_imgbill_redis_t      *rd;
    ngx_http_imgbill_redis_cmd_t  *cmd;

    rd = b->redis;

    if (--rd->pending == 0) {
        if (rd->timer.timer_set) {
            ngx_del_timer(&rd->timer);
        }

    } else if (reply) {
        /* progress: what is still pending gets a fresh timeout */
        ngx_add_timer(&rd->timer, rd->conf->timeout);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && b->argvlen[0] == sizeof("EVALSHA") - 1)
    {
        /* the script cache is empty (a restart, SCRIPT FLUSH): EVAL once */

        b->argv[0] = "EVAL";
        b->argvlen[0] = 4;
        b->argv[1] = ngx_http_imgbill_lua;
        b->argvlen[1] = sizeof(ngx_http_imgbill_lua) - 1;

        if (redisAsyncCommandArgv(ac, ngx_http_imgbill_redis_reply, b,
                                  b->argc, b->argv, b->argvlen)
            == REDIS_OK)
        {
            if (rd->pending++ == 0) {
                ngx_add_timer(&rd->timer, rd->conf->timeout);
            }

            return;
        }

        reply = NULL;
    }

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        /* the whole call failed: every command sees the error */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis replied \"%s\" to %s",
                      reply->str, b->argv[0]);

    } else if (reply && (reply->type != REDIS_REPLY_ARRAY
                         || reply->elements != b->n))
    {
        /* the commands may have run: treated as a reply lost */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis replied with %uz results to a call "
                      "of %ui commands", reply->elements, b->n);
        reply = NULL;
    }

    i = 0;

    while (!ngx_queue_empty(&b->cmds)) {
        q = ngx_queue_head(&b->cmds);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_imgbill_redis_cmd_t, queue);

        e = reply;

        if (reply && reply->type == REDIS_REPLY_ARRAY) {
            e = reply->element[i];

            if (e->type == REDIS_REPLY_ERROR) {
                ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                              "imgbill: redis replied \"%s\" to %V",
                              e->str,
                              &ngx_http_imgbill_script_names[cmd->script]);
            }
        }

        if (cmd->handler) {
            cmd->handler(e, cmd->data);
        }

        ngx_free(cmd);
        i++;
    }

    ngx_free(b);

    /* what queued meanwhile goes out now, as one call */

    rd->inflight--;

    if (!ngx_queue_empty(&rd->queue) && !rd->flush.posted) {
        ngx_post_event(&rd->flush, &ngx_posted_events);
    }
}


static ngx_int_t
ngx_http_imgbill_redis_connect(ngx_http_imgbill_redis_t *rd)
{
    ngx_connection_t              *c;
    redisAsyncContext             *ac;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = rd->conf;

    /* host is a numeric address (resolved at configuration): no DNS here */

    if (mcf->port == 0) {
        ac = redisAsyncConnectUnix((char *) mcf->host.data);

    } else {
        ac = redisAsyncConnect((char *) mcf->host.data, mcf->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: cannot allocate a redis context");
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis connect to \"%V\" failed: %s",
                      &mcf->host, ac->errstr);
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c->data = rd;
    c->read->handler = ngx_http_imgbill_redis_read_handler;
    c->write->handler = ngx_http_imgbill_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    rd->ac = ac;
    rd->connection = c;

    ac->ev.data = rd;
    ac->ev.addRead = ngx_http_imgbill_redis_add_read;
    ac->ev.delRead = ngx_http_imgbill_redis_del_read;
    ac->ev.addWrite = ngx_http_imgbill_redis_add_write;
    ac->ev.delWrite = ngx_http_imgbill_redis_del_write;
    ac->ev.cleanup = ngx_http_imgbill_redis_cleanup;
    ac->data = rd;

    redisAsyncSetConnectCallback(ac, ngx_http_imgbill_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_http_imgbill_redis_disconnected);

    /* queued ahead of the first command: hiredis writes them in order */

    if (mcf->password.len) {
        if (redisAsyncCommand(ac, ngx_http_imgbill_redis_setup_reply,
                              (void *) "AUTH", "AUTH %b", mcf->password.data,
                              mcf->password.len)
            != REDIS_OK)
        {
            redisAsyncFree(ac);
            return NGX_ERROR;
        }

        rd->pending++;
    }

    if (mcf->db) {
        if (redisAsyncCommand(ac, ngx_http_imgbill_redis_setup_reply,
                              (void *) "SELECT", "SELECT %d", (int) mcf->db)
            != REDIS_OK)
        {
            redisAsyncFree(ac);
            return NGX_ERROR;
        }

        rd->pending++;
    }

    if (rd->pending) {
        ngx_add_timer(&rd->timer, mcf->timeout);
    }

    return NGX_OK;
}


static void
ngx_http_imgbill_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                *reply = r;
    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    if (--rd->pending == 0 && rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* the password never appears in the log, only the command name */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis %s failed: \"%s\"",
                      (char *) privdata, reply->str);

        /* deferred by hiredis until this callback returns */
        redisAsyncFree(ac);
    }
}


static void
ngx_http_imgbill_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis connect to \"%V\" failed: %s",
                      &rd->conf->host, ac->errstr);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "imgbill: redis connected to \"%V\"", &rd->conf->host);

    /* what could not be settled before is settled now */
    ngx_http_imgbill_journal_wake(rd->conf);
}


static void
ngx_http_imgbill_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis connection to \"%V\" lost: %s",
                      &rd->conf->host, ac->errstr);
    }
}


static void
ngx_http_imgbill_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t          *c;
    ngx_http_imgbill_redis_t  *rd;

    c = rev->data;
    rd = c->data;

    redisAsyncHandleRead(rd->ac);
}


static void
ngx_http_imgbill_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t          *c;
    ngx_http_imgbill_redis_t  *rd;

    c = wev->data;
    rd = c->data;

    redisAsyncHandleWrite(rd->ac);
}


static void
ngx_http_imgbill_redis_timeout(ngx_event_t *ev)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = ev->data;

    if (rd->ac == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, NGX_ETIMEDOUT,
                  "imgbill: redis \"%V\" did not answer in %M ms, "
                  "dropping the connection", &rd->conf->host,
                  rd->conf->timeout);

    /* fails every pending command with a NULL reply */
    redisAsyncFree(rd->ac);
}


static void
ngx_http_imgbill_redis_add_read(void *data)
{
    ngx_http_imgbill_redis_t *rd = data;

    ngx_event_t  *rev;

    rev = rd->connection->read;

    if (!rev->active
        && ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "imgbill: cannot add the redis read event");
    }
}


static void
ngx_http_imgbill_redis_del_read(void *data)
{
    ngx_http_imgbill_redis_t *rd = data;

    ngx_event_t  *rev;

    rev = rd->connection->read;

    if (rev->active) {
        (void) ngx_del_event(rev, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_imgbill_redis_add_write(void *data)
{
    ngx_http_imgbill_redis_t *rd = data;

    ngx_event_t  *wev;

    wev = rd->connection->write;

    if (!wev->active
        && ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "imgbill: cannot add the redis write event");
    }
}


static void
ngx_http_imgbill_redis_del_write(void *data)
{
    ngx_http_imgbill_redis_t *rd = data;

    ngx_event_t  *wev;

    wev = rd->connection->write;

    if (wev->active) {
        (void) ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


/*
 * hiredis frees its context, and closes the socket itself right after
 * this hook: release the ngx_connection_t without closing the descriptor.
 * Pending commands have already been failed by then.
 */

static void
ngx_http_imgbill_redis_cleanup(void *data)
{
    ngx_http_imgbill_redis_t *rd = data;

    ngx_connection_t  *c;

    c = rd->connection;

    if (c) {
        if (c->read->active) {
            (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        c->read->closed = 1;
        c->write->closed = 1;

        ngx_free_connection(c);
        c->fd = (ngx_socket_t) -1;
    }

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    rd->connection = NULL;
    rd->ac = NULL;
    rd->pending = 0;
    rd->inflight = 0;
}
