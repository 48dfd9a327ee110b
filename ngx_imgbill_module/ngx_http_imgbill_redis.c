
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
 * A command owns heap copies of its arguments: it can be resent (EVAL
 * after NOSCRIPT) and can outlive the request that issued it, which may
 * re-point its handler with ngx_http_imgbill_redis_rebind().
 */


#include "ngx_http_imgbill_module.h"
#include <openssl/evp.h>


struct ngx_http_imgbill_redis_s {
    redisAsyncContext                  *ac;
    ngx_connection_t                   *connection;
    ngx_event_t                         timer;
    ngx_uint_t                          pending;
    ngx_log_t                          *log;
    ngx_http_imgbill_main_conf_t       *conf;
    u_char                              sha[ngx_http_imgbill_script_n][41];
};


struct ngx_http_imgbill_redis_cmd_s {
    ngx_http_imgbill_redis_t           *redis;
    ngx_http_imgbill_redis_handler_pt   handler;
    void                               *data;
    ngx_int_t                           script;
    int                                 argc;
    const char                        **argv;
    size_t                             *argvlen;
};


static ngx_int_t ngx_http_imgbill_redis_connect(ngx_http_imgbill_redis_t *rd);
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

/* give back one hold; the Lua locals of every script that releases */

#define NGX_HTTP_IMGBILL_LUA_UNHOLD                                          \
    "local function unhold(holds, held, rid)\n"                              \
    "  local h = redis.call('HGET', holds, rid)\n"                           \
    "  if not h then return 0 end\n"                                         \
    "  redis.call('HDEL', holds, rid)\n"                                     \
    "  local amt = tonumber(string.match(h, '^(%d+)') or '0')\n"             \
    "  if redis.call('HINCRBY', held, 'units', -amt) < 0 then\n"             \
    "    redis.call('HSET', held, 'units', 0, 'sweep', 0)\n"                 \
    "  end\n"                                                                \
    "  return 1\n"                                                           \
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

static const char  ngx_http_imgbill_admit_lua[] =
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
    "return {1, acct, bal, avail}\n";


/*
 * settle: KEYS = balance, holds, ledger, settled marker, held
 *         (all {account})
 *         ARGV = request id, charge, channel, model, prompt tokens,
 *                completion tokens, marker ttl (s)
 * -> {1, balance} applied | {0, balance} already applied earlier
 *
 * The marker makes a charge idempotent per request id; a free outcome
 * only gives the hold back and writes no ledger entry.
 */

static const char  ngx_http_imgbill_settle_lua[] =
    NGX_HTTP_IMGBILL_LUA_UNHOLD
    "if redis.call('EXISTS', KEYS[4]) == 1 then\n"
    "  return {0, tonumber(redis.call('GET', KEYS[1]) or '0')}\n"
    "end\n"
    "unhold(KEYS[2], KEYS[5], ARGV[1])\n"
    "local charge = tonumber(ARGV[2])\n"
    "if charge <= 0 then\n"
    "  return {1, tonumber(redis.call('GET', KEYS[1]) or '0')}\n"
    "end\n"
    "local bal = redis.call('DECRBY', KEYS[1], charge)\n"
    "redis.call('XADD', KEYS[3], '*', 'request_id', ARGV[1],\n"
    "           'ts', redis.call('TIME')[1], 'channel', ARGV[3],\n"
    "           'model', ARGV[4], 'prompt_tokens', ARGV[5],\n"
    "           'completion_tokens', ARGV[6], 'charge', ARGV[2],\n"
    "           'balance_after', bal)\n"
    "redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[7])\n"
    "return {1, bal}\n";


/* release: KEYS = holds, held (both {account}); ARGV[1] = request id */

static const char  ngx_http_imgbill_release_lua[] =
    NGX_HTTP_IMGBILL_LUA_UNHOLD
    "return unhold(KEYS[1], KEYS[2], ARGV[1])\n";


/*
 * release by key: KEYS[1] = imgbill:key:<sha256>, ARGV[1] = request id
 * An admission whose reply was lost may have placed a hold; only the key
 * is known then, not the account.
 */

static const char  ngx_http_imgbill_release_key_lua[] =
    NGX_HTTP_IMGBILL_LUA_UNHOLD
    "local acct = redis.call('GET', KEYS[1])\n"
    "if not acct then return 0 end\n"
    "local p = 'imgbill:{' .. acct .. '}:'\n"
    "return unhold(p .. 'holds', p .. 'held', ARGV[1])\n";


static ngx_str_t  ngx_http_imgbill_scripts[] = {
    ngx_string(ngx_http_imgbill_admit_lua),
    ngx_string(ngx_http_imgbill_settle_lua),
    ngx_string(ngx_http_imgbill_release_lua),
    ngx_string(ngx_http_imgbill_release_key_lua)
};


ngx_int_t
ngx_http_imgbill_redis_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf)
{
    u_char                     md[EVP_MAX_MD_SIZE];
    ngx_uint_t                 i;
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

    /*
     * Not cancelable: a worker that quits gracefully waits for the commands
     * still pending (a settle, a release), at most imgbill_redis_timeout.
     */

    /* EVALSHA names a script by the SHA-1 of its text */

    for (i = 0; i < ngx_http_imgbill_script_n; i++) {
        if (EVP_Digest(ngx_http_imgbill_scripts[i].data,
                       ngx_http_imgbill_scripts[i].len, md, &len,
                       EVP_sha1(), NULL)
            != 1)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "imgbill: EVP_Digest(sha1) failed");
            return NGX_ERROR;
        }

        *ngx_hex_dump(rd->sha[i], md, len) = '\0';
    }

    mcf->redis = rd;

    return NGX_OK;
}


void
ngx_http_imgbill_redis_done(ngx_http_imgbill_main_conf_t *mcf)
{
    if (mcf->redis && mcf->redis->ac) {
        redisAsyncFree(mcf->redis->ac);
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


ngx_http_imgbill_redis_cmd_t *
ngx_http_imgbill_redis_send(ngx_http_imgbill_main_conf_t *mcf,
    ngx_int_t script, ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_imgbill_redis_handler_pt handler, void *data)
{
    u_char                        *p, *nk;
    size_t                         size;
    ngx_uint_t                     i, n;
    ngx_http_imgbill_redis_t      *rd;
    ngx_http_imgbill_redis_cmd_t  *cmd;

    rd = mcf->redis;

    if (rd == NULL) {
        return NULL;
    }

    if (rd->ac == NULL && ngx_http_imgbill_redis_connect(rd) != NGX_OK) {
        return NULL;
    }

    /* EVALSHA sha numkeys keys... args...; EVAL after a NOSCRIPT */

    n = 3 + argc;

    size = sizeof(ngx_http_imgbill_redis_cmd_t)
           + n * (sizeof(char *) + sizeof(size_t)) + NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        size += argv[i].len + 1;
    }

    cmd = ngx_alloc(size, rd->log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->redis = rd;
    cmd->handler = handler;
    cmd->data = data;
    cmd->script = script;
    cmd->argc = (int) n;
    cmd->argv = (const char **) (cmd + 1);
    cmd->argvlen = (size_t *) (cmd->argv + n);

    p = (u_char *) (cmd->argvlen + n);

    cmd->argv[0] = "EVALSHA";
    cmd->argvlen[0] = sizeof("EVALSHA") - 1;
    cmd->argv[1] = (const char *) rd->sha[script];
    cmd->argvlen[1] = 40;

    nk = p;
    p = ngx_sprintf(p, "%ui", nkeys);
    cmd->argv[2] = (const char *) nk;
    cmd->argvlen[2] = p - nk;

    for (i = 0; i < argc; i++) {
        cmd->argv[3 + i] = (const char *) p;
        cmd->argvlen[3 + i] = argv[i].len;
        p = ngx_cpymem(p, argv[i].data, argv[i].len);
        *p++ = '\0';
    }

    if (redisAsyncCommandArgv(rd->ac, ngx_http_imgbill_redis_reply, cmd,
                              cmd->argc, cmd->argv, cmd->argvlen)
        != REDIS_OK)
    {
        /* the connection is going away under us */
        ngx_free(cmd);
        return NULL;
    }

    if (rd->pending++ == 0) {
        ngx_add_timer(&rd->timer, mcf->timeout);
    }

    return cmd;
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
                        + 3 * NGX_INT_T_LEN];
    ngx_str_t    argv[12];
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

    return ngx_http_imgbill_redis_send(mcf, ngx_http_imgbill_script_settle,
                                       5, 12, argv, handler, data);
}


/* give a hold back: the account is known */

ngx_http_imgbill_redis_cmd_t *
ngx_http_imgbill_redis_release(ngx_http_imgbill_main_conf_t *mcf,
    ngx_str_t *account, ngx_str_t *request_id,
    ngx_http_imgbill_redis_handler_pt handler, void *data)
{
    u_char      *p, buf[2 * (sizeof("imgbill:{}:holds") - 1
                             + NGX_HTTP_IMGBILL_ACCOUNT_MAX)];
    ngx_str_t    argv[3];
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

    return ngx_http_imgbill_redis_send(mcf, ngx_http_imgbill_script_release,
                                       2, 3, argv, handler, data);
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
    redisReply                    *reply = r;
    ngx_http_imgbill_redis_cmd_t  *cmd = privdata;

    ngx_str_t                 *script;
    ngx_http_imgbill_redis_t  *rd;

    rd = cmd->redis;

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
        && cmd->argvlen[0] == sizeof("EVALSHA") - 1)
    {
        /* the script cache is empty (a restart, SCRIPT FLUSH): EVAL once */

        script = &ngx_http_imgbill_scripts[cmd->script];

        cmd->argv[0] = "EVAL";
        cmd->argvlen[0] = 4;
        cmd->argv[1] = (const char *) script->data;
        cmd->argvlen[1] = script->len;

        if (redisAsyncCommandArgv(ac, ngx_http_imgbill_redis_reply, cmd,
                                  cmd->argc, cmd->argv, cmd->argvlen)
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
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis replied \"%s\" to %s",
                      reply->str, cmd->argv[0]);
    }

    if (cmd->handler) {
        cmd->handler(reply, cmd->data);
    }

    ngx_free(cmd);
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
}
