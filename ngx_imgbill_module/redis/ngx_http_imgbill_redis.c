
/*
 * Redis through hiredis' async API, driven by nginx's event loop.
 *
 * Each worker keeps a connection per lane (ngx_http_imgbill_redis_int.h:
 * one, or two with imgbill_redis_wait), opened on first use and reopened
 * on the first call after it is lost (its events:
 * ngx_http_imgbill_redis_link.c).  Each is named for CLIENT LIST, so that
 * an operator sees which worker's admissions or settlements it carries.
 *
 * A connection is "ready" once it is set up: AUTH and SELECT answered,
 * and, under Sentinel, ROLE answered "master".  Nothing is sent before:
 * a command that reached a replica would be refused at best.  The batch
 * layer holds its commands until then (ngx_http_imgbill_batch_wake()).
 * Under Sentinel every new connection starts by asking a Sentinel where
 * the master is (ngx_http_imgbill_sentinel.c), and a reply that says this
 * server is no longer the master (READONLY, MASTERDOWN) drops the
 * connection: the next one asks again, and so follows a failover.
 *
 * hiredis has no timeouts of its own.  One timer per connection measures
 * how long a call has waited without any reply arriving; when it runs out
 * the connection is dropped, which fails every pending call with a NULL
 * reply, so nothing waits longer than imgbill_redis_timeout for a Redis
 * that hangs.
 *
 * This file knows nothing of what is sent: ngx_http_imgbill_script.c does.
 */


#include "ngx_http_imgbill_redis_int.h"


struct ngx_http_imgbill_redis_s {
    ngx_http_imgbill_redis_link_t       link;     /* first: the hooks' */
    ngx_event_t                         timer;
    ngx_uint_t                          pending;  /* hiredis calls awaited */
    ngx_uint_t                          setup;    /* of them, set-up
                                                     commands */
    ngx_http_imgbill_store_t           *store;
    ngx_http_imgbill_client_t          *client;   /* its commands' */
    const char                         *lane;     /* for CLIENT SETNAME */
    ngx_str_t                           addr;     /* connected to, for the
                                                     log */
    u_char                              addr_buf[NGX_SOCKADDR_STRLEN
                                                 + sizeof(":65535")];
    ngx_msec_t                          down_since;  /* 0: up, or never
                                                        tried */
    ngx_msec_t                          logged_at;   /* the last failure
                                                        at error */
    ngx_uint_t                          failures;    /* since down_since */
    u_char                             *out;      /* a call's protocol */
    size_t                              out_size;
    unsigned                            was_connected:1;
    unsigned                            ready:1;
};


/* an outage's connect failures: its first at error, then one in this
   many ms, with how many; the others at debug */
#define NGX_HTTP_IMGBILL_REDIS_LOG_EVERY  10000

/* a call's protocol buffer is kept for the next call up to this size (a
   full batch of usual commands, or an EVAL of the whole script, fits); a
   bigger one is freed once hiredis has copied it */
#define NGX_HTTP_IMGBILL_REDIS_OUT_KEEP   (256 * 1024)


static ngx_http_imgbill_redis_t *ngx_http_imgbill_redis_lane(
    ngx_cycle_t *cycle, ngx_http_imgbill_store_t *store, const char *lane);
static ngx_int_t ngx_http_imgbill_redis_connect(ngx_http_imgbill_redis_t *rd,
    char *host, in_port_t port);
static ngx_int_t ngx_http_imgbill_redis_setup(ngx_http_imgbill_redis_t *rd,
    const char *name, const char *format, ...);
static void ngx_http_imgbill_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_imgbill_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_uint_t ngx_http_imgbill_redis_is_master(
    ngx_http_imgbill_redis_t *rd, redisReply *reply);
static void ngx_http_imgbill_redis_up(ngx_http_imgbill_redis_t *rd);
static ngx_uint_t ngx_http_imgbill_redis_failure(
    ngx_http_imgbill_redis_t *rd);
static void ngx_http_imgbill_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_imgbill_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_imgbill_redis_closed(ngx_http_imgbill_redis_link_t *l);
static void ngx_http_imgbill_redis_timeout(ngx_event_t *ev);
static u_char *ngx_http_imgbill_redis_format(ngx_http_imgbill_redis_t *rd,
    int argc, const char **argv, const size_t *argvlen, size_t *len);
static u_char *ngx_http_imgbill_redis_bulk(u_char *p, size_t n);


ngx_int_t
ngx_http_imgbill_redis_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store)
{
    store->lanes = store->conf->wait_replicas ? 2 : 1;

    store->redis[NGX_HTTP_IMGBILL_LANE_ADMIT] =
        ngx_http_imgbill_redis_lane(cycle, store,
                                    store->lanes == 2 ? "admit" : "main");

    store->redis[NGX_HTTP_IMGBILL_LANE_SETTLE] =
        (store->lanes == 2)
        ? ngx_http_imgbill_redis_lane(cycle, store, "settle")
        : store->redis[NGX_HTTP_IMGBILL_LANE_ADMIT];

    if (store->redis[NGX_HTTP_IMGBILL_LANE_ADMIT] == NULL
        || store->redis[NGX_HTTP_IMGBILL_LANE_SETTLE] == NULL)
    {
        return NGX_ERROR;
    }

    if (store->conf->sentinels) {
        return ngx_http_imgbill_sentinel_init(cycle, store);
    }

    return NGX_OK;
}


static ngx_http_imgbill_redis_t *
ngx_http_imgbill_redis_lane(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store, const char *lane)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_redis_t));
    if (rd == NULL) {
        return NULL;
    }

    rd->link.log = cycle->log;
    rd->link.closed = ngx_http_imgbill_redis_closed;
    rd->store = store;
    rd->lane = lane;
    rd->addr = store->conf->host;

    /*
     * Not cancelable: a worker that quits gracefully waits for the calls
     * still pending (a settle, a release), at most imgbill_redis_timeout.
     */

    rd->timer.handler = ngx_http_imgbill_redis_timeout;
    rd->timer.data = rd;
    rd->timer.log = cycle->log;

    return rd;
}


/* the batch's client that a lane's connection answers to */

void
ngx_http_imgbill_redis_bind(ngx_http_imgbill_redis_t *rd,
    ngx_http_imgbill_client_t *cl)
{
    rd->client = cl;
}


/* at exit: pending calls get their NULL replies */

void
ngx_http_imgbill_redis_done(ngx_http_imgbill_store_t *store)
{
    ngx_uint_t                 i;
    ngx_http_imgbill_redis_t  *rd;

    for (i = 0; i < store->lanes; i++) {
        rd = store->redis[i];

        if (rd && rd->link.ac) {
            redisAsyncFree(rd->link.ac);
        }

        if (rd && rd->out) {
            ngx_free(rd->out);
            rd->out = NULL;
            rd->out_size = 0;
        }
    }

    ngx_http_imgbill_sentinel_done(store);
}


/*
 * For work that has no request behind it (the journal, the batch's
 * flush): NGX_OK when ready, NGX_AGAIN while a connection is being set up
 * (ngx_http_imgbill_redis_up() wakes the journal and the batch), NGX_ERROR
 * when Redis cannot be reached.
 */

ngx_int_t
ngx_http_imgbill_redis_ready(ngx_http_imgbill_redis_t *rd)
{
    if (rd->link.ac) {
        /* a connection being dropped is as good as gone: wait for the
           next one, which its closing asks for */
        return (rd->ready && !(rd->link.ac->c.flags & REDIS_FREEING))
               ? NGX_OK : NGX_AGAIN;
    }

    return (ngx_http_imgbill_redis_open(rd) == NGX_OK) ? NGX_AGAIN
                                                     : NGX_ERROR;
}


/* NGX_OK when a connection is up or on its way: calls can be queued */

ngx_int_t
ngx_http_imgbill_redis_open(ngx_http_imgbill_redis_t *rd)
{
    ngx_http_imgbill_store_t  *store;

    if (rd->link.ac) {
        return NGX_OK;
    }

    store = rd->store;

    if (store->sentinel) {
        /* the Sentinel's answer connects every lane without a connection
           (its lookup may be on its way already) */
        return ngx_http_imgbill_sentinel_lookup(store);
    }

    return ngx_http_imgbill_redis_connect(rd, (char *) store->conf->host.data,
                                          store->conf->port);
}


/*
 * One command on a ready connection; NGX_OK means call->handler will be
 * called exactly once, with the reply or with NULL if it is lost.
 */

ngx_int_t
ngx_http_imgbill_redis_call(ngx_http_imgbill_redis_t *rd,
    ngx_http_imgbill_redis_call_t *call, int argc, const char **argv,
    const size_t *argvlen)
{
    int      rc;
    size_t   len;
    u_char  *out;

    if (rd->link.ac == NULL || !rd->ready) {
        return NGX_ERROR;
    }

    out = ngx_http_imgbill_redis_format(rd, argc, argv, argvlen, &len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    rc = redisAsyncFormattedCommand(rd->link.ac, ngx_http_imgbill_redis_reply,
                                    call, (char *) out, len);

    if (out != rd->out) {
        ngx_free(out);
    }

    if (rc != REDIS_OK) {
        /* the connection is going away under us */
        return NGX_ERROR;
    }

    if (rd->pending++ == 0) {
        ngx_add_timer(&rd->timer, rd->store->conf->timeout);
    }

    return NGX_OK;
}


/*
 * The call in Redis' protocol.  hiredis would format the argv with
 * sdscatfmt() into a string of its own, which it then copies into its
 * output buffer: for a batch's few hundred arguments, more of a worker's
 * time than the rest of the client.  Here the protocol is written once,
 * into a buffer that the next call reuses; hiredis copies it once.
 */

static u_char *
ngx_http_imgbill_redis_format(ngx_http_imgbill_redis_t *rd, int argc,
    const char **argv, const size_t *argvlen, size_t *len)
{
    int      i;
    size_t   size;
    u_char  *out, *p;

    size = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        size += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + argvlen[i];
    }

    if (size <= rd->out_size) {
        out = rd->out;

    } else {
        out = ngx_alloc(size, rd->link.log);
        if (out == NULL) {
            return NULL;
        }

        if (size <= NGX_HTTP_IMGBILL_REDIS_OUT_KEEP) {
            if (rd->out) {
                ngx_free(rd->out);
            }

            rd->out = out;
            rd->out_size = size;
        }
    }

    p = out;
    *p++ = '*';
    p = ngx_http_imgbill_redis_bulk(p, argc);

    for (i = 0; i < argc; i++) {
        *p++ = '$';
        p = ngx_http_imgbill_redis_bulk(p, argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR; *p++ = LF;
    }

    *len = p - out;

    return out;
}


/* a count or a length, and its CRLF: ngx_sprintf() parses a format for
   each of a batch's hundreds of them */

static u_char *
ngx_http_imgbill_redis_bulk(u_char *p, size_t n)
{
    u_char  *q, digits[NGX_SIZE_T_LEN];

    q = digits + NGX_SIZE_T_LEN;

    do {
        *--q = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    p = ngx_cpymem(p, q, digits + NGX_SIZE_T_LEN - q);
    *p++ = CR; *p++ = LF;

    return p;
}


static void
ngx_http_imgbill_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_imgbill_redis_call_t *call = privdata;

    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    if (--rd->pending == 0) {
        if (rd->timer.timer_set) {
            ngx_del_timer(&rd->timer);
        }

    } else if (r) {
        /* progress: what is still pending gets a fresh timeout */
        ngx_add_timer(&rd->timer, rd->store->conf->timeout);
    }

    call->handler(call, r);
}


/* the master Sentinel named (host is numeric): every lane without a
   connection connects to it */

ngx_int_t
ngx_http_imgbill_redis_master(ngx_http_imgbill_store_t *store, char *host,
    in_port_t port)
{
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_http_imgbill_redis_t  *rd;

    rc = NGX_OK;

    for (i = 0; i < store->lanes; i++) {
        rd = store->redis[i];

        if (rd->link.ac == NULL
            && ngx_http_imgbill_redis_connect(rd, host, port) != NGX_OK)
        {
            rc = NGX_ERROR;
        }
    }

    return rc;
}


/* no connection could be set up: what waits for one fails, or waits
   longer (ngx_http_imgbill_batch.c) */

void
ngx_http_imgbill_redis_failed(ngx_http_imgbill_store_t *store)
{
    ngx_uint_t                 i;
    ngx_http_imgbill_redis_t  *rd;

    for (i = 0; i < store->lanes; i++) {
        rd = store->redis[i];

        if (rd->link.ac == NULL) {
            ngx_http_imgbill_batch_wake(rd->client, NGX_ERROR);
        }
    }
}


/*
 * An error reply that says the server is not, or no longer, a master that
 * takes writes: a replica (READONLY) or one cut off from its master
 * (MASTERDOWN).  The connection is dropped, and the next one goes where
 * the Sentinels say.  Returns 1 if so.
 */

ngx_uint_t
ngx_http_imgbill_redis_demoted(ngx_http_imgbill_redis_t *rd, char *error)
{
    if (ngx_strncmp(error, "READONLY", 8) != 0
        && ngx_strncmp(error, "MASTERDOWN", 10) != 0)
    {
        return 0;
    }

    if (rd->link.ac == NULL || (rd->link.ac->c.flags & REDIS_FREEING)) {
        return 1;
    }

    ngx_log_error(NGX_LOG_WARN, rd->link.log, 0,
                  "imgbill: redis %V is not a master that takes writes "
                  "(\"%s\"), dropping the connection%s", &rd->addr, error,
                  rd->store->sentinel ? " and asking the Sentinels again"
                                      : "");

    /* inside a reply's callback: hiredis frees it once that returns */
    redisAsyncFree(rd->link.ac);

    return 1;
}


static ngx_int_t
ngx_http_imgbill_redis_connect(ngx_http_imgbill_redis_t *rd, char *host,
    in_port_t port)
{
    u_char                        *p;
    ngx_uint_t                     level;
    redisAsyncContext             *ac;
    ngx_http_imgbill_store_t  *store;

    store = rd->store;

    if (port) {
        p = ngx_snprintf(rd->addr_buf, sizeof(rd->addr_buf), "%s:%d",
                         host, (int) port);
        rd->addr.data = rd->addr_buf;
        rd->addr.len = p - rd->addr_buf;
    }

    /* host is a numeric address (resolved at configuration, or checked
       as Sentinel gave it): no DNS here */

    if (port == 0) {
        ac = redisAsyncConnectUnix(host);

    } else {
        ac = redisAsyncConnect(host, port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->link.log, 0,
                      "imgbill: cannot allocate a redis context");
        return NGX_ERROR;
    }

    if (ac->err) {
        /* (ngx_log_error() evaluates its level twice) */
        level = ngx_http_imgbill_redis_failure(rd);
        ngx_log_error(level, rd->link.log, 0,
                      "imgbill: redis connect to \"%V\" failed: %s (%ui "
                      "failed connects in %M ms)", &rd->addr, ac->errstr,
                      rd->failures, ngx_current_msec - rd->down_since);
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    if (ngx_http_imgbill_redis_attach(&rd->link, ac) != NGX_OK) {
        return NGX_ERROR;
    }

    redisAsyncSetConnectCallback(ac, ngx_http_imgbill_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_http_imgbill_redis_disconnected);

    rd->ready = 0;
    rd->setup = 0;

    /* queued ahead of everything else: hiredis writes them in order */

    if ((store->conf->password.len
         && ngx_http_imgbill_redis_setup(rd, "AUTH", "AUTH %b",
                                         store->conf->password.data,
                                         store->conf->password.len)
            != NGX_OK)
        || (store->conf->db
            && ngx_http_imgbill_redis_setup(rd, "SELECT", "SELECT %d",
                                            (int) store->conf->db)
               != NGX_OK)
        || ngx_http_imgbill_redis_setup(rd, "SETNAME",
                                        "CLIENT SETNAME imgbill-%s-%d",
                                        rd->lane, (int) ngx_pid)
           != NGX_OK
        || (store->sentinel
            && ngx_http_imgbill_redis_setup(rd, "ROLE", "ROLE") != NGX_OK))
    {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    /* the connection itself has imgbill_redis_timeout to come up */
    ngx_add_timer(&rd->timer, store->conf->timeout);

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_redis_setup(ngx_http_imgbill_redis_t *rd, const char *name,
    const char *format, ...)
{
    int      rc;
    va_list  args;

    va_start(args, format);
    rc = redisvAsyncCommand(rd->link.ac, ngx_http_imgbill_redis_setup_reply,
                            (void *) name, format, args);
    va_end(args);

    if (rc != REDIS_OK) {
        return NGX_ERROR;
    }

    rd->pending++;
    rd->setup++;

    return NGX_OK;
}


static void
ngx_http_imgbill_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                *reply = r;
    ngx_uint_t                 level;
    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    rd->pending--;
    rd->setup--;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && ngx_strcmp(privdata, "SETNAME") == 0)
    {
        /* a Redis that has CLIENT renamed away is still of use */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->link.log, 0,
                       "imgbill: redis CLIENT SETNAME: \"%s\"", reply->str);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        /* the password never appears in the log, only the command name;
           a connection refused so is a failed connect */
        level = ngx_http_imgbill_redis_failure(rd);
        ngx_log_error(level, rd->link.log, 0,
                      "imgbill: redis %s on \"%V\" failed: \"%s\"%s",
                      (char *) privdata, &rd->addr, reply->str,
                      ngx_http_imgbill_redis_hint(reply->str));

        /* deferred by hiredis until this callback returns */
        redisAsyncFree(ac);
        return;
    }

    if (ngx_strcmp(privdata, "ROLE") == 0
        && !ngx_http_imgbill_redis_is_master(rd, reply))
    {
        redisAsyncFree(ac);
        return;
    }

    if (rd->setup == 0 && (ac->c.flags & REDIS_CONNECTED)) {
        ngx_http_imgbill_redis_up(rd);
    }
}


/* ROLE's reply: "master" first, or the server is of no use for writes */

static ngx_uint_t
ngx_http_imgbill_redis_is_master(ngx_http_imgbill_redis_t *rd,
    redisReply *reply)
{
    redisReply  *role;

    role = (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
           ? reply->element[0] : NULL;

    if (role && role->type == REDIS_REPLY_STRING && role->len == 6
        && ngx_strncmp(role->str, "master", 6) == 0)
    {
        return 1;
    }

    ngx_log_error(NGX_LOG_WARN, rd->link.log, 0,
                  "imgbill: redis \"%V\" named as master \"%V\" says it is "
                  "a \"%s\", not the master: dropping it and asking the "
                  "Sentinels again", &rd->addr, &rd->store->conf->host,
                  (role && role->type == REDIS_REPLY_STRING) ? role->str
                                                             : "?");

    ngx_http_imgbill_sentinel_skip(rd->store);

    return 0;
}


/* set up: what waits for a connection goes now */

static void
ngx_http_imgbill_redis_up(ngx_http_imgbill_redis_t *rd)
{
    rd->ready = 1;

    if (rd->pending == 0 && rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->link.log, 0,
                   "imgbill: redis connected to \"%V\"", &rd->addr);

    if (rd->was_connected) {
        ngx_http_imgbill_stats_count(rd->store,
                                       NGX_HTTP_IMGBILL_REDIS_RECONNECT);
    }

    /* the end of an outage is news at the default log level too */

    if (rd->down_since) {
        ngx_log_error(NGX_LOG_NOTICE, rd->link.log, 0,
                      "imgbill: redis \"%V\" is back, %M ms after it was "
                      "lost (%ui failed connects, the %s connection)",
                      &rd->addr, ngx_current_msec - rd->down_since,
                      rd->failures, rd->lane);
        rd->down_since = 0;
        rd->failures = 0;
    }

    rd->was_connected = 1;

    ngx_http_imgbill_batch_wake(rd->client, NGX_OK);

    /* what could not be settled before is settled now, on its lane */

    if (rd == rd->store->redis[NGX_HTTP_IMGBILL_LANE_SETTLE]) {
        ngx_http_imgbill_journal_wake(rd->store);
    }
}


/* the Redis the worker uses (under Sentinel, the master it was last
   given) */

ngx_str_t *
ngx_http_imgbill_store_redis(ngx_http_imgbill_store_t *store)
{
    return &store->redis[NGX_HTTP_IMGBILL_LANE_ADMIT]->addr;
}


/* a failed connect: the level to log it at */

static ngx_uint_t
ngx_http_imgbill_redis_failure(ngx_http_imgbill_redis_t *rd)
{
    rd->failures++;

    if (rd->down_since == 0) {
        /* (a msec clock of 0 would read as "up") */
        rd->down_since = ngx_current_msec ? ngx_current_msec : 1;
        rd->logged_at = rd->down_since;
        return NGX_LOG_ERR;
    }

    if (rd->failures == 1
        || ngx_current_msec - rd->logged_at >= NGX_HTTP_IMGBILL_REDIS_LOG_EVERY)
    {
        rd->logged_at = ngx_current_msec;
        return NGX_LOG_ERR;
    }

    return NGX_LOG_DEBUG;
}


/*
 * What an error reply from Redis asks of the operator, said in words
 * beside it ("" if nothing): Redis's own texts for a missing or a wrong
 * password are easy to misread.
 */

const char *
ngx_http_imgbill_redis_hint(const char *error)
{
    if (ngx_strncmp(error, "NOAUTH", 6) == 0
        || ngx_strstr(error, "unauthenticated"))
    {
        return " (this Redis wants a password: add password=... to "
               "imgbill_redis)";
    }

    if (ngx_strncmp(error, "WRONGPASS", 9) == 0
        || ngx_strstr(error, "invalid password"))
    {
        return " (the password in imgbill_redis is not this Redis's)";
    }

    if (ngx_strncmp(error, "NOREPLICAS", 10) == 0) {
        return " (the master has fewer replicas than its "
               "min-replicas-to-write: writes wait for a replica)";
    }

    return "";
}


static void
ngx_http_imgbill_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_uint_t                 level;
    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    if (status != REDIS_OK) {
        ngx_http_imgbill_stats_count(rd->store,
                                       NGX_HTTP_IMGBILL_REDIS_ERROR);
        level = ngx_http_imgbill_redis_failure(rd);
        ngx_log_error(level, rd->link.log, 0,
                      "imgbill: redis connect to \"%V\" failed: %s (%ui "
                      "failed connects in %M ms)", &rd->addr, ac->errstr,
                      rd->failures, ngx_current_msec - rd->down_since);
        return;
    }

    if (rd->setup == 0) {
        ngx_http_imgbill_redis_up(rd);
    }
}


static void
ngx_http_imgbill_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    if (status != REDIS_OK) {
        ngx_http_imgbill_stats_count(rd->store,
                                       NGX_HTTP_IMGBILL_REDIS_ERROR);
        ngx_log_error(NGX_LOG_ERR, rd->link.log, 0,
                      "imgbill: redis connection to \"%V\" lost: %s",
                      &rd->addr, ac->errstr);

        if (rd->down_since == 0) {
            rd->down_since = ngx_current_msec;
            rd->logged_at = rd->down_since;
        }
    }
}


/* from hiredis' cleanup: pending calls have had their NULL replies */

static void
ngx_http_imgbill_redis_closed(ngx_http_imgbill_redis_link_t *l)
{
    ngx_http_imgbill_redis_t *rd = (ngx_http_imgbill_redis_t *) l;

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    rd->pending = 0;
    rd->setup = 0;

    if (!rd->ready) {
        /* never set up: the commands held for it fail */
        ngx_http_imgbill_batch_wake(rd->client, NGX_ERROR);
        return;
    }

    /* lost after it was up: what waits goes on a new one */
    rd->ready = 0;
    ngx_http_imgbill_batch_wake(rd->client, NGX_OK);
}


static void
ngx_http_imgbill_redis_timeout(ngx_event_t *ev)
{
    ngx_uint_t                 level;
    ngx_http_imgbill_redis_t  *rd;

    rd = ev->data;

    if (rd->link.ac == NULL) {
        return;
    }

    ngx_http_imgbill_stats_count(rd->store, NGX_HTTP_IMGBILL_REDIS_TIMEOUT);

    /* one that never came up is a failed connect, logged as they are */

    level = rd->ready ? NGX_LOG_ERR : ngx_http_imgbill_redis_failure(rd);

    if (rd->ready && rd->down_since == 0) {
        rd->down_since = ngx_current_msec;
        rd->logged_at = rd->down_since;
    }

    ngx_log_error(level, rd->link.log, NGX_ETIMEDOUT,
                  "imgbill: redis \"%V\" did not answer in %M ms, "
                  "dropping the connection", &rd->addr,
                  rd->store->conf->timeout);

    /* fails every pending command with a NULL reply */
    redisAsyncFree(rd->link.ac);
}
