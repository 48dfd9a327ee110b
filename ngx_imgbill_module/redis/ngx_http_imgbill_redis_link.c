
/*
 * A hiredis async context on nginx's event loop: hiredis' read/write
 * hooks map onto level-triggered events of an ngx_connection_t made for
 * its descriptor; hiredis reads one buffer per call and expects to be
 * called again while data remain.  Used by the master's connection
 * (ngx_http_imgbill_redis.c) and by the one that asks a Sentinel
 * (ngx_http_imgbill_sentinel.c).
 *
 * A connected socket is nearly always writable, so a new command is
 * written from a posted event at the end of the current cycle, with
 * whatever else the cycle queued, and no epoll_ctl() before and after:
 * the write event is registered only while a write is left unfinished,
 * or while the connect is in progress.
 */


#include "ngx_http_imgbill_redis_int.h"


static void ngx_http_imgbill_redis_read_handler(ngx_event_t *rev);
static void ngx_http_imgbill_redis_write_handler(ngx_event_t *wev);
static void ngx_http_imgbill_redis_add_read(void *data);
static void ngx_http_imgbill_redis_del_read(void *data);
static void ngx_http_imgbill_redis_add_write(void *data);
static void ngx_http_imgbill_redis_del_write(void *data);
static void ngx_http_imgbill_redis_cleanup(void *data);


/*
 * hiredis takes these callbacks, its event hooks and a descriptor of an
 * ngx_connection_t; the link's closed() runs from hiredis' cleanup.
 */

ngx_int_t
ngx_http_imgbill_redis_attach(ngx_http_imgbill_redis_link_t *link,
    redisAsyncContext *ac)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(ac->c.fd, link->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c->data = link;
    c->read->handler = ngx_http_imgbill_redis_read_handler;
    c->write->handler = ngx_http_imgbill_redis_write_handler;
    c->read->log = link->log;
    c->write->log = link->log;

    link->ac = ac;
    link->connection = c;

    ac->ev.data = link;
    ac->ev.addRead = ngx_http_imgbill_redis_add_read;
    ac->ev.delRead = ngx_http_imgbill_redis_del_read;
    ac->ev.addWrite = ngx_http_imgbill_redis_add_write;
    ac->ev.delWrite = ngx_http_imgbill_redis_del_write;
    ac->ev.cleanup = ngx_http_imgbill_redis_cleanup;
    ac->data = link;

    return NGX_OK;
}


static void
ngx_http_imgbill_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t               *c;
    ngx_http_imgbill_redis_link_t  *link;

    c = rev->data;
    link = c->data;

    redisAsyncHandleRead(link->ac);
}


static void
ngx_http_imgbill_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t               *c;
    ngx_http_imgbill_redis_link_t  *link;

    c = wev->data;
    link = c->data;

    link->writing = 1;
    redisAsyncHandleWrite(link->ac);

    /* hiredis may have freed the link's connection, never the link */
    link->writing = 0;
}


static void
ngx_http_imgbill_redis_add_read(void *data)
{
    ngx_http_imgbill_redis_link_t *link = data;

    ngx_event_t  *rev;

    rev = link->connection->read;

    if (!rev->active
        && ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                      "imgbill: cannot add the redis read event");
    }
}


static void
ngx_http_imgbill_redis_del_read(void *data)
{
    ngx_http_imgbill_redis_link_t *link = data;

    ngx_event_t  *rev;

    rev = link->connection->read;

    if (rev->active) {
        (void) ngx_del_event(rev, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_imgbill_redis_add_write(void *data)
{
    ngx_http_imgbill_redis_link_t *link = data;

    ngx_event_t  *wev;

    wev = link->connection->write;

    if (wev->active) {
        return;
    }

    if (!link->writing && (link->ac->c.flags & REDIS_CONNECTED)) {
        if (!wev->posted) {
            ngx_post_event(wev, &ngx_posted_events);
        }

        return;
    }

    if (ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                      "imgbill: cannot add the redis write event");
    }
}


static void
ngx_http_imgbill_redis_del_write(void *data)
{
    ngx_http_imgbill_redis_link_t *link = data;

    ngx_event_t  *wev;

    wev = link->connection->write;

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
    ngx_http_imgbill_redis_link_t *link = data;

    ngx_connection_t  *c;

    c = link->connection;

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

    link->connection = NULL;
    link->ac = NULL;

    link->closed(link);
}
