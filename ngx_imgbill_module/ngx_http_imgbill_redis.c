
/*
 * Redis through hiredis' async API, driven by nginx's event loop.
 *
 * Each worker keeps one connection, opened on first use and reopened on
 * the first call after it is lost.  hiredis' read/write hooks map onto
 * level-triggered events of an ngx_connection_t: hiredis reads one buffer
 * per call and expects to be called again while data remain.
 *
 * hiredis has no timeouts of its own.  One timer per connection measures
 * how long a call has waited without any reply arriving; when it runs out
 * the connection is dropped, which fails every pending call with a NULL
 * reply, so nothing waits longer than imgbill_redis_timeout for a Redis
 * that hangs.
 *
 * This file knows nothing of what is sent: ngx_http_imgbill_script.c does.
 */


#include "ngx_http_imgbill_module.h"


struct ngx_http_imgbill_redis_s {
    redisAsyncContext                  *ac;
    ngx_connection_t                   *connection;
    ngx_event_t                         timer;
    ngx_uint_t                          pending;  /* hiredis calls awaited */
    ngx_log_t                          *log;
    ngx_http_imgbill_main_conf_t       *conf;
    unsigned                            was_connected:1;
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


ngx_int_t
ngx_http_imgbill_redis_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->log = cycle->log;
    rd->conf = mcf;

    /*
     * Not cancelable: a worker that quits gracefully waits for the calls
     * still pending (a settle, a release), at most imgbill_redis_timeout.
     */

    rd->timer.handler = ngx_http_imgbill_redis_timeout;
    rd->timer.data = rd;
    rd->timer.log = cycle->log;

    mcf->redis = rd;

    return NGX_OK;
}


/* at exit: pending calls get their NULL replies */

void
ngx_http_imgbill_redis_done(ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = mcf->redis;

    if (rd && rd->ac) {
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


/* NGX_OK when a connection is up or on its way: calls can be made */

ngx_int_t
ngx_http_imgbill_redis_open(ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = mcf->redis;

    if (rd == NULL) {
        return NGX_ERROR;
    }

    if (rd->ac == NULL) {
        return ngx_http_imgbill_redis_connect(rd);
    }

    return NGX_OK;
}


/*
 * One command; NGX_OK means call->handler will be called exactly once,
 * with the reply or with NULL if it is lost.  The connection may have been
 * lost since the caller last looked: it is reopened here.
 */

ngx_int_t
ngx_http_imgbill_redis_call(ngx_http_imgbill_main_conf_t *mcf,
    ngx_http_imgbill_redis_call_t *call, int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_http_imgbill_redis_t  *rd;

    if (ngx_http_imgbill_redis_open(mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    rd = mcf->redis;

    if (redisAsyncCommandArgv(rd->ac, ngx_http_imgbill_redis_reply, call,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        /* the connection is going away under us */
        return NGX_ERROR;
    }

    if (rd->pending++ == 0) {
        ngx_add_timer(&rd->timer, mcf->timeout);
    }

    return NGX_OK;
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
        ngx_add_timer(&rd->timer, rd->conf->timeout);
    }

    call->handler(call, r);
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
        ngx_http_imgbill_metrics_count(rd->conf,
                                       NGX_HTTP_IMGBILL_REDIS_ERROR);
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "imgbill: redis connect to \"%V\" failed: %s",
                      &rd->conf->host, ac->errstr);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "imgbill: redis connected to \"%V\"", &rd->conf->host);

    if (rd->was_connected) {
        ngx_http_imgbill_metrics_count(rd->conf,
                                       NGX_HTTP_IMGBILL_REDIS_RECONNECT);
    }

    rd->was_connected = 1;

    /* what could not be settled before is settled now */
    ngx_http_imgbill_journal_wake(rd->conf);
}


static void
ngx_http_imgbill_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_imgbill_redis_t  *rd;

    rd = ac->data;

    if (status != REDIS_OK) {
        ngx_http_imgbill_metrics_count(rd->conf,
                                       NGX_HTTP_IMGBILL_REDIS_ERROR);
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

    ngx_http_imgbill_metrics_count(rd->conf, NGX_HTTP_IMGBILL_REDIS_TIMEOUT);

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
