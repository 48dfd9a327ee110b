
/*
 * Access phase: find the API key, read and validate the body, then one
 * Redis script resolves the key, checks the gate and places the hold.
 * For what the module serves itself (the model lists) the key is only
 * looked up.
 *
 * The handler runs more than once: it starts the body read and returns
 * NGX_DONE; the body handler starts the admission; the admission's reply
 * wakes the request, the phase engine calls the handler again, and it
 * answers from the state the context is in.
 */


#include "ngx_http_imgbill_ctx.h"

#include <openssl/rand.h>


static ngx_int_t ngx_http_imgbill_resume(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_read(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_lookup(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_lookup_done(ngx_http_imgbill_reply_t *reply,
    void *data);
static void ngx_http_imgbill_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_imgbill_admit(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_admit_done(ngx_http_imgbill_reply_t *reply,
    void *data);
static void ngx_http_imgbill_refuse(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_int_t available);
static ngx_int_t ngx_http_imgbill_reject(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);


ngx_int_t
ngx_http_imgbill_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc, preflight;
    ngx_http_imgbill_ctx_t       *ctx;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    if (lcf->channel == NGX_HTTP_IMGBILL_OFF && !lcf->serve) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_imgbill_get_ctx(r);

    if (ctx) {
        return ngx_http_imgbill_resume(r, ctx);
    }

    /* a browser's question before a call from another origin: no key, no
       request of the API, and so nothing of its own to log or count */

    preflight = ngx_http_imgbill_cors_preflight(r, ngx_http_imgbill_reads(lcf));

    if (preflight == NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_HTTP_NO_CONTENT;
    }

    if (preflight == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_http_imgbill_create_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->channel = lcf->channel;
    ctx->api = lcf->api;

    ngx_http_imgbill_strip_headers(&r->headers_in.headers, "x-imgbill-", 1);

    if (preflight == NGX_ABORT) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_FORBIDDEN,
                                   ngx_http_imgbill_err_request,
                                   "origin_not_allowed",
                                   "this origin may not call the API from "
                                   "a browser (imgbill_cors)");
        rc = NGX_DECLINED;

    } else {
        rc = ngx_http_imgbill_start(r, ctx);
    }

    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    return ngx_http_imgbill_reject(r, ctx);
}


/* the handler called again: it answers from the state the context is in */

static ngx_int_t
ngx_http_imgbill_resume(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    switch (ctx->state) {

    case ngx_http_imgbill_keyed:
        rc = ngx_http_imgbill_read(r, ctx);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

        return ngx_http_imgbill_reject(r, ctx);

    case ngx_http_imgbill_reading:
    case ngx_http_imgbill_admitting:
    case ngx_http_imgbill_looking_up:
        return NGX_AGAIN;

    case ngx_http_imgbill_rejected:
        return ngx_http_imgbill_reject(r, ctx);

    case ngx_http_imgbill_authorized:
        if (lcf->models || lcf->serve) {
            return NGX_OK;
        }

        /* redirected from a list to a relay: nothing is held for it */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "imgbill: a request authorized for a model list "
                      "reached a billed location");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    default:
        /* admitted; after an internal redirect too: one hold only */
        return NGX_OK;
    }
}


/*
 * The first call: the key, the method, the path; then the body read, or
 * for what the module serves itself a lookup.  A body is read only for a
 * key seen valid lately (ngx_http_imgbill_keys.c); any other is looked up
 * first, and a stranger is answered before a byte of the body is read.
 * NGX_DECLINED with an error in ctx->error to reject.
 */

static ngx_int_t
ngx_http_imgbill_start(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_uint_t                     reads;
    ngx_http_imgbill_loc_conf_t   *lcf;
    ngx_http_imgbill_main_conf_t  *mcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    /* first, so that no rejection logs a key (a ?key=) */

    rc = ngx_http_imgbill_request_key(r, ctx->key_hash);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    reads = ngx_http_imgbill_reads(lcf);

    /* the keys' methods are told apart by their path, once the key is
       known */

    if (!(r->method & (reads ? (NGX_HTTP_GET|NGX_HTTP_HEAD)
                       : (lcf->serve == NGX_HTTP_IMGBILL_SERVE_KEYS)
                         ? (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST
                            |NGX_HTTP_DELETE)
                         : NGX_HTTP_POST)))
    {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_NOT_ALLOWED,
                                   ngx_http_imgbill_err_request,
                                   "method_not_allowed",
                                   "only %s is accepted here",
                                   reads ? "GET"
                                   : (lcf->serve
                                      == NGX_HTTP_IMGBILL_SERVE_KEYS)
                                     ? "GET, POST or DELETE" : "POST");
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_UNAUTHORIZED,
                                   ngx_http_imgbill_err_request,
                                   "missing_api_key",
                                   "no API key: send \"%s\"",
                                   lcf->api->key_hint);
        return NGX_DECLINED;
    }

    if (lcf->api->target && !lcf->models
        && ngx_http_imgbill_request_target(r, ctx) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (reads) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (reads || !ngx_http_imgbill_keys_known(mcf, ctx->key_hash)) {
        return (ngx_http_imgbill_lookup(r, ctx) == NGX_OK) ? NGX_AGAIN
                                                           : NGX_DECLINED;
    }

    return ngx_http_imgbill_read(r, ctx);
}


/* the body, for a known key; NGX_DECLINED: the worker reads enough */

static ngx_int_t
ngx_http_imgbill_read(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    if (lcf->serve == NGX_HTTP_IMGBILL_SERVE_REDEEM) {
        return ngx_http_imgbill_redeem_start(r, ctx);
    }

    if (lcf->serve == NGX_HTTP_IMGBILL_SERVE_KEYS) {
        return ngx_http_imgbill_keyring_start(r, ctx);
    }

    rc = ngx_http_imgbill_body_start(r, ctx);

    if (rc != NGX_OK) {
        return (rc == NGX_DECLINED) ? NGX_DECLINED
                                    : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_reading);

    rc = ngx_http_read_client_request_body(r, ngx_http_imgbill_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static void
ngx_http_imgbill_body_handler(ngx_http_request_t *r)
{
    ngx_http_imgbill_ctx_t       *ctx;
    ngx_http_imgbill_loc_conf_t  *lcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_imgbill_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    r->write_event_handler = ngx_http_core_run_phases;

    if (ngx_http_imgbill_read_request(r, lcf, ctx) == NGX_OK
        && ngx_http_imgbill_admit(r, ctx) == NGX_OK)
    {
        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_admitting);
        return;
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_imgbill_admit(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_asker_t      asker;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    asker.key_hash = ctx->key_hash;
    asker.model = ctx->model;
    ngx_http_imgbill_address(r, &asker.address);

    ctx->cmd = ngx_http_imgbill_script_admit(ngx_http_imgbill_store(r),
                                             &asker,
                                             &ctx->request_id,
                                             ngx_http_imgbill_gate(
                                                 &lcf->tariff, ctx->channel,
                                                 ctx->hold),
                                             ctx->hold,
                                             ngx_http_imgbill_admit_done,
                                             ctx);
    if (ctx->cmd) {
        return NGX_OK;
    }

    ngx_http_imgbill_unavailable(r, ctx);
    return NGX_ERROR;
}


static void
ngx_http_imgbill_admit_done(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    ngx_http_request_t        *r;
    ngx_http_imgbill_store_t  *store;

    r = ctx->request;
    ctx->cmd = NULL;

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    store = ngx_http_imgbill_store(r);

    if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        /*
         * Lost, or not understood (an account name too long, a proxy's
         * error): the script may have placed a hold anyway.  The release
         * by key is idempotent, and harmless if it did not.  An admission
         * never sent held nothing: an outage's 503s write no lines.
         */
        if (reply->rc != NGX_HTTP_IMGBILL_REPLY_UNSENT) {
            ngx_http_imgbill_journal_release(store, r->connection->log,
                                             &ctx->request_id,
                                             ctx->key_hash);
        }

        ngx_http_imgbill_unavailable(r, ctx);
        goto wake;
    }

    if (reply->status == NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY) {
        ngx_http_imgbill_invalid_key(r, ctx);
        goto wake;
    }

    if (ngx_http_imgbill_account(r, ctx, &reply->account) != NGX_OK) {
        if (reply->status == NGX_HTTP_IMGBILL_ADMIT_HELD) {
            ngx_http_imgbill_journal_release(store, r->connection->log,
                                             &ctx->request_id,
                                             ctx->key_hash);
        }

        goto wake;
    }

    if (reply->status == NGX_HTTP_IMGBILL_ADMIT_HELD) {
        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_admitted);

        ctx->holding = 1;
        ctx->key_limits = (reply->limit == 1);
        ngx_http_imgbill_metrics_hold(r);

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "imgbill: admitted \"%V\" holding %i of %i",
                       &ctx->account, ctx->hold, reply->available);
        goto wake;
    }

    if (reply->status == NGX_HTTP_IMGBILL_ADMIT_REFUSED) {
        ngx_http_imgbill_refuse(r, ctx, reply->available);

    } else {
        ngx_http_imgbill_key_refuse(r, ctx, reply);
    }

wake:

    ngx_post_event(r->connection->write, &ngx_posted_events);
}


static void
ngx_http_imgbill_refuse(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_int_t available)
{
    u_char                       *p, *last;
    u_char                        have[NGX_HTTP_IMGBILL_MONEY_LEN];
    u_char                        need[NGX_HTTP_IMGBILL_MONEY_LEN];
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    p = ngx_http_imgbill_format_money(have, available);
    last = ngx_http_imgbill_format_money(need,
                                         ngx_http_imgbill_gate(&lcf->tariff,
                                                               ctx->channel,
                                                               ctx->hold));

    ngx_http_imgbill_set_error(r, &ctx->error,
                               NGX_HTTP_IMGBILL_PAYMENT_REQUIRED,
                               ngx_http_imgbill_err_quota,
                               "insufficient_balance",
                               "insufficient balance: available %*s, "
                               "required %*s", p - have, have,
                               last - need, need);
}


/* what the key's own limits refuse; nothing was held (nor made, nor
   deleted: the key commands refuse an expired key, or an address, so) */

void
ngx_http_imgbill_key_refuse(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_reply_t *reply)
{
    u_char  *p, *last;
    u_char   left[NGX_HTTP_IMGBILL_MONEY_LEN];
    u_char   need[NGX_HTTP_IMGBILL_MONEY_LEN];
    u_char   when[NGX_HTTP_IMGBILL_TIME_LEN];

    switch (reply->status) {

    case NGX_HTTP_IMGBILL_ADMIT_KEY_EXPIRED:
        p = ngx_http_imgbill_format_time(when, reply->when);
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_UNAUTHORIZED,
                                   ngx_http_imgbill_err_request,
                                   "key_expired",
                                   "this API key expired at %*s",
                                   p - when, when);
        return;

    case NGX_HTTP_IMGBILL_ADMIT_KEY_MODEL:
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_FORBIDDEN,
                                   ngx_http_imgbill_err_request,
                                   "model_not_allowed",
                                   "this API key may not use the model "
                                   "\"%V\"", &ctx->model);
        return;

    case NGX_HTTP_IMGBILL_ADMIT_KEY_ADDRESS:
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_FORBIDDEN,
                                   ngx_http_imgbill_err_request,
                                   "ip_not_allowed",
                                   "this API key may not be used from %V",
                                   &r->connection->addr_text);
        return;

    default: /* NGX_HTTP_IMGBILL_ADMIT_KEY_LIMIT */
        p = ngx_http_imgbill_format_money(left, ngx_max(reply->available, 0));
        last = ngx_http_imgbill_format_money(need, ctx->hold);

        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_IMGBILL_PAYMENT_REQUIRED,
                                   ngx_http_imgbill_err_quota,
                                   "key_limit_reached",
                                   "this API key's %s spending limit is "
                                   "reached: left %*s, required %*s",
                                   reply->limit == 2 ? "daily" : "total",
                                   p - left, left, last - need, need);
    }
}


/*
 * The client's address as the admission matches it against a key's
 * networks: "4:" and 8 hex digits, or "6:" and 32 (an IPv4 address mapped
 * into IPv6 is the IPv4 one); empty for a unix socket, which no network
 * contains.  After the realip module, if it is configured: the client's,
 * not a balancer's.
 */

void
ngx_http_imgbill_address(ngx_http_request_t *r, ngx_str_t *addr)
{
    u_char               *p, *a;
    size_t                n;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    ngx_str_null(addr);

    switch (r->connection->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        a = (u_char *) &sin->sin_addr;
        n = 4;
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        a = sin6->sin6_addr.s6_addr;
        n = 16;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            a += 12;
            n = 4;
        }

        break;
#endif

    default:
        return;
    }

    p = ngx_pnalloc(r->pool, 2 + 2 * n);
    if (p == NULL) {
        return;
    }

    addr->data = p;
    *p++ = (n == 4) ? '4' : '6';
    *p++ = ':';
    p = ngx_hex_dump(p, a, n);
    addr->len = p - addr->data;
}


/* a key only: nothing is held for what the module serves itself */

static ngx_int_t
ngx_http_imgbill_lookup(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_info_t       info;
    ngx_http_imgbill_store_t     *store;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);
    store = ngx_http_imgbill_store(r);

    if (ngx_http_imgbill_reads(lcf) && lcf->serve) {
        /* the account's figures come with the key's owner */

        if (ngx_http_imgbill_serve_args(r, ctx, &info) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->cmd = ngx_http_imgbill_script_info(store, ctx->key_hash, &info,
                                                ngx_http_imgbill_lookup_done,
                                                ctx);
    } else {
        ctx->cmd = ngx_http_imgbill_script_lookup(store, ctx->key_hash,
                                                  ngx_http_imgbill_lookup_done,
                                                  ctx);
    }

    if (ctx->cmd == NULL) {
        ngx_http_imgbill_unavailable(r, ctx);
        return NGX_ERROR;
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_looking_up);

    return NGX_OK;
}


static void
ngx_http_imgbill_lookup_done(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    ngx_http_request_t           *r;
    ngx_http_imgbill_loc_conf_t  *lcf;

    r = ctx->request;
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);
    ctx->cmd = NULL;

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        ngx_http_imgbill_unavailable(r, ctx);

    } else if (reply->status == NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY) {
        ngx_http_imgbill_invalid_key(r, ctx);

    } else if (ngx_http_imgbill_account(r, ctx, &reply->account) != NGX_OK) {
        /* the error is set */

    } else if (!ngx_http_imgbill_reads(lcf)) {
        /* a relay's (or a redeem's) key: now its body is worth reading */
        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_keyed);

    } else if (reply->status == NGX_HTTP_IMGBILL_INFO_UNSUMMED) {
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_SERVICE_UNAVAILABLE,
                                   ngx_http_imgbill_err_server,
                                   "usage_unavailable",
                                   "this account's usage before its daily "
                                   "totals is too long to sum here; the "
                                   "operator runs \"imgbill "
                                   "usage-backfill\"");

    } else if (lcf->serve
               && ngx_http_imgbill_serve_reply(r, ctx, reply) != NGX_OK)
    {
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   ngx_http_imgbill_err_server,
                                   "internal_error",
                                   "out of memory");
    } else {
        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_authorized);
    }

    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * A key Redis knows: believed for imgbill_key_cache from now on, and its
 * account, which outlives the reply it is read from, into the ledger.
 */

ngx_int_t
ngx_http_imgbill_account(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_str_t *account)
{
    ngx_http_imgbill_keys_seen(
        ngx_http_get_module_main_conf(r, ngx_http_imgbill_module),
        ctx->key_hash);

    ctx->account.data = ngx_pnalloc(r->pool, account->len);

    if (ctx->account.data == NULL) {
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   ngx_http_imgbill_err_server,
                                   "internal_error",
                                   "out of memory");
        return NGX_ERROR;
    }

    ctx->account.len = account->len;
    ngx_memcpy(ctx->account.data, account->data, account->len);

    return NGX_OK;
}


/* a key Redis does not know, or knows no more: forgotten here too */

void
ngx_http_imgbill_invalid_key(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_keys_forget(
        ngx_http_get_module_main_conf(r, ngx_http_imgbill_module),
        ctx->key_hash);

    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_UNAUTHORIZED,
                               ngx_http_imgbill_err_request, "invalid_api_key",
                               "incorrect API key provided");
}


/* Fail closed: without Redis nobody can be admitted, and nobody pays. */

void
ngx_http_imgbill_unavailable(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_SERVICE_UNAVAILABLE,
                               ngx_http_imgbill_err_server,
                               "billing_unavailable",
                               "billing is unavailable; nothing was charged, "
                               "please retry");
}


/*
 * The end of a served write's answer (a key made or deleted, a code
 * redeemed): NGX_OK, its reply was built and the request goes on to be
 * served; NGX_ERROR, it could not be (a 500); NGX_DECLINED, the error is
 * set.  The writer takes the request on from here.
 */

void
ngx_http_imgbill_answered(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_int_t rc)
{
    if (rc == NGX_OK) {
        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_authorized);

    } else if (rc == NGX_ERROR) {
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   ngx_http_imgbill_err_server,
                                   "internal_error", "out of memory");
    }

    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * The error, sent; a body not read yet (a stranger's, a rejection on the
 * path) is discarded as nginx discards one, never read into memory, and
 * never asked for: a client waiting for "100 Continue" gets the error.
 */

static ngx_int_t
ngx_http_imgbill_reject(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (r->request_body == NULL) {
        r->expect_tested = 1;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    b = ngx_http_imgbill_error_body(r, &ctx->error);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    r->headers_out.status = ctx->error.status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_imgbill_add_header(r, "X-Imgbill-Request-Id",
                                    ctx->request_id.data,
                                    ctx->request_id.len)
        != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "imgbill: rejected with %ui %s: %V",
                  ctx->error.status, ctx->error.code, &ctx->error.message);

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc != NGX_ERROR && rc <= NGX_OK && !r->header_only) {
        rc = ngx_http_output_filter(r, &out);
    }

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/*
 * The request id is nginx's $request_id, which the access log and the
 * upstream may also name.  nginx 1.22 draws its 16 bytes from RAND_bytes()
 * for each request, and a call costs microseconds whatever its size: when
 * nothing has read $request_id yet, the id comes from this worker's batch
 * of NGX_HTTP_IMGBILL_ID_BATCH drawn by one call, and becomes the
 * variable's value.  The same generator, so the same uniqueness across
 * workers, restarts and relays.  The master never draws: the batch is
 * empty when a worker is forked.
 */

ngx_http_variable_value_t *
ngx_http_imgbill_request_id(ngx_http_request_t *r,
    ngx_http_imgbill_main_conf_t *mcf)
{
    u_char                     *id;
    ngx_http_imgbill_worker_t  *w;
    ngx_http_variable_value_t  *vv;

    vv = &r->variables[mcf->request_id_index];
    w = mcf->worker;

    if (vv->valid || vv->not_found || w == NULL) {
        return (vv->valid || vv->not_found) ? vv
               : ngx_http_get_indexed_variable(r, mcf->request_id_index);
    }

    if (w->request_ids_left == 0) {
        if (RAND_bytes(w->request_ids, sizeof(w->request_ids)) != 1) {
            return ngx_http_get_indexed_variable(r, mcf->request_id_index);
        }

        w->request_ids_left = NGX_HTTP_IMGBILL_ID_BATCH;
    }

    id = ngx_pnalloc(r->pool, 2 * NGX_HTTP_IMGBILL_ID_BYTES);
    if (id == NULL) {
        return NULL;
    }

    w->request_ids_left--;

    ngx_hex_dump(id, w->request_ids
                     + w->request_ids_left * NGX_HTTP_IMGBILL_ID_BYTES,
                 NGX_HTTP_IMGBILL_ID_BYTES);

    vv->len = 2 * NGX_HTTP_IMGBILL_ID_BYTES;
    vv->valid = 1;
    vv->no_cacheable = 0;
    vv->not_found = 0;
    vv->data = id;

    return vv;
}
