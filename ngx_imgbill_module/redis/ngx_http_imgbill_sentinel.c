
/*
 * Where the master is, asked of Redis Sentinel.
 *
 * Under "imgbill_redis sentinel=.. master=NAME" each new connection to
 * Redis starts here: one Sentinel is asked, through nginx's event loop,
 * "SENTINEL get-master-addr-by-name NAME"; its answer is where
 * ngx_http_imgbill_redis.c connects (and checks with ROLE that it is the
 * master indeed).  A Sentinel that cannot be reached, does not answer in
 * imgbill_redis_timeout, or does not know the name, gives way to the next
 * one; once all of them failed, what waited for a connection fails, and
 * the next command asks again.  The Sentinel that answered is asked first
 * the next time, unless what it named turned out not to be the master.
 *
 * Nothing subscribes to +switch-master: a failover shows itself to the
 * relay as a lost connection or a READONLY reply from the old master,
 * and the connection that replaces it asks here again.
 */


#include "ngx_http_imgbill_redis_int.h"


struct ngx_http_imgbill_sentinel_s {
    ngx_http_imgbill_redis_link_t       link;     /* first: the hooks' */
    ngx_http_imgbill_store_t       *store;
    ngx_event_t                         timer;
    ngx_event_t                         next;     /* posted: ask the next
                                                     Sentinel */
    ngx_uint_t                          current;  /* the one asked */
    ngx_uint_t                          tried;    /* in this lookup */
    u_char                              master[NGX_SOCKADDR_STRLEN
                                               + sizeof(":65535")];
    unsigned                            busy:1;
    unsigned                            answered:1;
};


static void ngx_http_imgbill_sentinel_ask(ngx_event_t *ev);
static ngx_int_t ngx_http_imgbill_sentinel_connect(
    ngx_http_imgbill_sentinel_t *sn, ngx_http_imgbill_addr_t *addr);
static void ngx_http_imgbill_sentinel_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_int_t ngx_http_imgbill_sentinel_master(
    ngx_http_imgbill_sentinel_t *sn, redisReply *reply);
static void ngx_http_imgbill_sentinel_auth(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_imgbill_sentinel_timeout(ngx_event_t *ev);
static void ngx_http_imgbill_sentinel_closed(ngx_http_imgbill_redis_link_t *l);


ngx_int_t
ngx_http_imgbill_sentinel_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store)
{
    ngx_http_imgbill_sentinel_t  *sn;

    sn = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_sentinel_t));
    if (sn == NULL) {
        return NGX_ERROR;
    }

    sn->link.log = cycle->log;
    sn->link.closed = ngx_http_imgbill_sentinel_closed;
    sn->store = store;

    sn->timer.handler = ngx_http_imgbill_sentinel_timeout;
    sn->timer.data = sn;
    sn->timer.log = cycle->log;

    sn->next.handler = ngx_http_imgbill_sentinel_ask;
    sn->next.data = sn;
    sn->next.log = cycle->log;

    /* workers start from different Sentinels: no one takes all the asking */
    sn->current = ngx_pid % store->conf->sentinels->nelts;

    store->sentinel = sn;

    return NGX_OK;
}


void
ngx_http_imgbill_sentinel_done(ngx_http_imgbill_store_t *store)
{
    ngx_http_imgbill_sentinel_t  *sn;

    sn = store->sentinel;

    if (sn == NULL) {
        return;
    }

    sn->busy = 0;

    if (sn->next.posted) {
        ngx_delete_posted_event(&sn->next);
    }

    if (sn->link.ac) {
        redisAsyncFree(sn->link.ac);
    }
}


/* NGX_OK: a lookup is on its way, and will connect to the master */

ngx_int_t
ngx_http_imgbill_sentinel_lookup(ngx_http_imgbill_store_t *store)
{
    ngx_http_imgbill_sentinel_t  *sn;

    sn = store->sentinel;

    if (sn->busy) {
        return NGX_OK;
    }

    sn->busy = 1;
    sn->answered = 0;
    sn->tried = 0;

    ngx_http_imgbill_sentinel_ask(&sn->next);

    return sn->busy ? NGX_OK : NGX_ERROR;
}


/* the master the current Sentinel named is not one: it lags, or lies;
   the next lookup starts with another */

void
ngx_http_imgbill_sentinel_skip(ngx_http_imgbill_store_t *store)
{
    ngx_http_imgbill_sentinel_t  *sn;

    sn = store->sentinel;

    if (sn && !sn->busy) {
        sn->current = (sn->current + 1) % store->conf->sentinels->nelts;
    }
}


/* the current Sentinel, or the next ones if it cannot even be tried */

static void
ngx_http_imgbill_sentinel_ask(ngx_event_t *ev)
{
    ngx_http_imgbill_sentinel_t *sn = ev->data;

    ngx_http_imgbill_addr_t  *addr;

    addr = sn->store->conf->sentinels->elts;

    while (sn->tried < sn->store->conf->sentinels->nelts) {

        if (ngx_http_imgbill_sentinel_connect(sn, &addr[sn->current])
            == NGX_OK)
        {
            return;
        }

        sn->current = (sn->current + 1) % sn->store->conf->sentinels->nelts;
        sn->tried++;
    }

    ngx_log_error(NGX_LOG_ERR, sn->link.log, 0,
                  "imgbill: no Sentinel named the master \"%V\"",
                  &sn->store->conf->host);

    sn->busy = 0;

    ngx_http_imgbill_redis_failed(sn->store);
}


static ngx_int_t
ngx_http_imgbill_sentinel_connect(ngx_http_imgbill_sentinel_t *sn,
    ngx_http_imgbill_addr_t *addr)
{
    redisAsyncContext             *ac;
    ngx_http_imgbill_store_t  *store;

    store = sn->store;

    ac = redisAsyncConnect((char *) addr->host.data, addr->port);

    if (ac == NULL) {
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, sn->link.log, 0,
                      "imgbill: connect to Sentinel %V:%d failed: %s",
                      &addr->host, (int) addr->port, ac->errstr);
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    if (ngx_http_imgbill_redis_attach(&sn->link, ac) != NGX_OK) {
        return NGX_ERROR;
    }

    if ((store->conf->sentinel_password.len
         && redisAsyncCommand(ac, ngx_http_imgbill_sentinel_auth, sn,
                              "AUTH %b", store->conf->sentinel_password.data,
                              store->conf->sentinel_password.len)
            != REDIS_OK)
        || redisAsyncCommand(ac, ngx_http_imgbill_sentinel_reply, sn,
                             "SENTINEL get-master-addr-by-name %b",
                             store->conf->host.data, store->conf->host.len)
           != REDIS_OK)
    {
        /* its cleanup moves on to the next Sentinel */
        redisAsyncFree(ac);
        return NGX_OK;
    }

    ngx_add_timer(&sn->timer, store->conf->timeout);

    return NGX_OK;
}


static void
ngx_http_imgbill_sentinel_auth(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_imgbill_sentinel_t *sn = privdata;

    redisReply  *reply = r;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        /* the password never appears in the log */
        ngx_log_error(NGX_LOG_ERR, sn->link.log, 0,
                      "imgbill: AUTH to a Sentinel failed: \"%s\"",
                      reply->str);
    }
}


static void
ngx_http_imgbill_sentinel_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_imgbill_sentinel_t *sn = privdata;

    redisReply               *reply = r;
    ngx_http_imgbill_addr_t  *addr;

    if (reply == NULL) {
        addr = sn->store->conf->sentinels->elts;

        ngx_log_error(NGX_LOG_WARN, sn->link.log, 0,
                      "imgbill: cannot ask Sentinel %V:%d%s%s, trying the "
                      "next one", &addr[sn->current].host,
                      (int) addr[sn->current].port, ac->errstr[0] ? ": " : "",
                      ac->errstr);

        /* the cleanup that follows moves on */
        return;
    }

    if (ngx_http_imgbill_sentinel_master(sn, reply) == NGX_OK) {
        sn->answered = 1;
    }

    /* deferred by hiredis until this callback returns; its cleanup ends
       the lookup, or moves on to the next Sentinel */
    redisAsyncFree(ac);
}


/* ["ip", "port"]: connect there */

static ngx_int_t
ngx_http_imgbill_sentinel_master(ngx_http_imgbill_sentinel_t *sn,
    redisReply *reply)
{
    u_char            *p, buf[NGX_SOCKADDR_STRLEN + sizeof(":65535")];
    ngx_int_t          port;
    redisReply        *ip, *pr;
#if (NGX_HAVE_INET6)
    struct in6_addr    in6;
#endif

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, sn->link.log, 0,
                      "imgbill: a Sentinel replied \"%s\" when asked for "
                      "the master \"%V\"", reply->str, &sn->store->conf->host);
        return NGX_ERROR;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, sn->link.log, 0,
                      "imgbill: a Sentinel does not know the master \"%V\"",
                      &sn->store->conf->host);
        return NGX_ERROR;
    }

    ip = reply->element[0];
    pr = reply->element[1];

    port = ngx_atoi((u_char *) pr->str, pr->len);

    /* numeric only: a name would have hiredis block on DNS */

    if (port < 1 || port > 65535
        || ip->len >= NGX_SOCKADDR_STRLEN
        || (ngx_inet_addr((u_char *) ip->str, ip->len) == INADDR_NONE
#if (NGX_HAVE_INET6)
            && ngx_inet6_addr((u_char *) ip->str, ip->len, in6.s6_addr)
               != NGX_OK
#endif
           ))
    {
        ngx_log_error(NGX_LOG_ERR, sn->link.log, 0,
                      "imgbill: a Sentinel named \"%s\" port \"%s\" as the "
                      "master \"%V\": not a numeric address (is "
                      "\"announce-hostnames\" on?)",
                      ip->str, pr->str, &sn->store->conf->host);
        return NGX_ERROR;
    }

    /* a failover shows in the log as the master's new address */

    p = ngx_snprintf(buf, sizeof(buf) - 1, "%s:%i", ip->str, port);
    *p = '\0';

    if (ngx_strcmp(buf, sn->master) != 0) {
        ngx_log_error(NGX_LOG_NOTICE, sn->link.log, 0,
                      "imgbill: Sentinel names %s as the master \"%V\"%s%s",
                      buf, &sn->store->conf->host,
                      sn->master[0] ? ", was " : "", sn->master);

        ngx_memcpy(sn->master, buf, p - buf + 1);
    }

    return ngx_http_imgbill_redis_master(sn->store, ip->str,
                                         (in_port_t) port);
}


static void
ngx_http_imgbill_sentinel_timeout(ngx_event_t *ev)
{
    ngx_http_imgbill_sentinel_t *sn = ev->data;

    if (sn->link.ac == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, sn->link.log, NGX_ETIMEDOUT,
                  "imgbill: a Sentinel did not answer in %M ms",
                  sn->store->conf->timeout);

    redisAsyncFree(sn->link.ac);
}


/* from hiredis' cleanup: the lookup is over, or the next Sentinel's turn */

static void
ngx_http_imgbill_sentinel_closed(ngx_http_imgbill_redis_link_t *l)
{
    ngx_http_imgbill_sentinel_t *sn = (ngx_http_imgbill_sentinel_t *) l;

    if (sn->timer.timer_set) {
        ngx_del_timer(&sn->timer);
    }

    if (!sn->busy) {
        return;                 /* the worker is exiting */
    }

    if (sn->answered) {
        sn->busy = 0;
        return;
    }

    sn->current = (sn->current + 1) % sn->store->conf->sentinels->nelts;
    sn->tried++;

    /* once hiredis is done with this context */
    ngx_post_event(&sn->next, &ngx_posted_events);
}
