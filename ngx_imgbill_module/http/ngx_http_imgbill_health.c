
/*
 * imgbill: imgbill_health, what a load balancer asks of a relay.  Ready
 * is what billing needs: this worker's Redis answers the script (a key
 * looked up, which no key has), so an admission would not be a 503.  It
 * answers 200 {"status":"ready","redis":ADDR} or 503 {"status":
 * "unavailable",...}, ADDR the Redis (under Sentinel the master) this
 * worker uses; no key, nothing held.
 */


#include "ngx_http_imgbill_ctx.h"


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_imgbill_cmd_t         *cmd;       /* in flight */
} ngx_http_imgbill_health_t;


static ngx_int_t ngx_http_imgbill_health_handler(ngx_http_request_t *r);
static void ngx_http_imgbill_health_done(ngx_http_imgbill_reply_t *reply,
    void *data);
static void ngx_http_imgbill_health_cleanup(void *data);
static ngx_int_t ngx_http_imgbill_health_send(ngx_http_request_t *r,
    ngx_uint_t ready);


char *
ngx_http_imgbill_health_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_imgbill_loc_conf_t  *lcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate, or shares a location with another handler";
    }

    clcf->handler = ngx_http_imgbill_health_handler;

    /* a load balancer has no key: an "imgbill" of the server's is not
       this location's */

    lcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_imgbill_module);

    if (lcf->channel != NGX_CONF_UNSET_UINT
        && lcf->channel != NGX_HTTP_IMGBILL_OFF)
    {
        return "cannot share a location with \"imgbill\"";
    }

    lcf->channel = NGX_HTTP_IMGBILL_OFF;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_imgbill_health_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_pool_cleanup_t         *cln;
    ngx_http_imgbill_store_t   *store;
    ngx_http_imgbill_health_t  *h;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    store = ngx_http_imgbill_store(r);
    if (store == NULL) {
        return ngx_http_imgbill_health_send(r, 0);
    }

    h = ngx_pcalloc(r->pool, sizeof(ngx_http_imgbill_health_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (h == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->request = r;
    h->cmd = ngx_http_imgbill_script_probe(store,
                                           ngx_http_imgbill_health_done, h);
    if (h->cmd == NULL) {
        return ngx_http_imgbill_health_send(r, 0);
    }

    /* the reply may outlive a client that left: it then goes nowhere */
    cln->handler = ngx_http_imgbill_health_cleanup;
    cln->data = h;

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_http_imgbill_health_done(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_health_t *h = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = h->request;
    c = r->connection;
    h->cmd = NULL;

    /* (the request, and h with it, may be freed by the finalization) */

    ngx_http_finalize_request(r,
                      ngx_http_imgbill_health_send(r,
                                      reply->rc == NGX_HTTP_IMGBILL_REPLY_OK));
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_imgbill_health_cleanup(void *data)
{
    ngx_http_imgbill_health_t *h = data;

    if (h->cmd) {
        ngx_http_imgbill_batch_rebind(h->cmd, NULL, NULL);
    }
}


static ngx_int_t
ngx_http_imgbill_health_send(ngx_http_request_t *r, ngx_uint_t ready)
{
    size_t                     len;
    ngx_buf_t                 *b;
    ngx_str_t                 *addr, none = ngx_string("");
    ngx_http_imgbill_store_t  *store;

    store = ngx_http_imgbill_store(r);
    addr = store ? ngx_http_imgbill_store_redis(store) : &none;

    len = sizeof("{\"status\":\"unavailable\",\"redis\":\"\"}\n") - 1
          + addr->len + ngx_escape_json(NULL, addr->data, addr->len);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last, "{\"status\":\"%s\",\"redis\":\"",
                          ready ? "ready" : "unavailable");
    b->last = (u_char *) ngx_escape_json(b->last, addr->data, addr->len);
    b->last = ngx_cpymem(b->last, "\"}\n", 3);

    return ngx_http_imgbill_send_text(r, ready ? NGX_HTTP_OK
                                               : NGX_HTTP_SERVICE_UNAVAILABLE,
                                      b, "application/json");
}
