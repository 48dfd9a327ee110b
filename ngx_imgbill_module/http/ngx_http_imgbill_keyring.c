
/*
 * The keys a key holder manages (imgbill_serve keys): GET lists them,
 * POST makes one, DELETE .../{id} deletes one; GET .../{id} shows one.
 *
 * A key is made here, as the CLI's key-new makes one: "sk-" and 48
 * base62 characters drawn from RAND_bytes(), of which Redis keeps only
 * the SHA-256.  The raw key is in the POST's reply and nowhere else: not
 * in a log, not in Redis.  What a key may be given (no more than the key
 * that makes it has) is the key_new command's to decide, atomically with
 * the caller's own spend; ngx_http_imgbill_keyring_limits.c checks the
 * body for form.
 */


#include "ngx_http_imgbill_ctx.h"

#include <openssl/rand.h>


/* "sk-" and 48 of 62 characters: 285 bits, as the CLI's keys */
#define NGX_HTTP_IMGBILL_NEW_KEY_CHARS     48
#define NGX_HTTP_IMGBILL_NEW_KEY_LEN       (3 + NGX_HTTP_IMGBILL_NEW_KEY_CHARS)

/* what one key takes in JSON besides its strings, escaped */
#define NGX_HTTP_IMGBILL_ROW_LEN           640


static ngx_int_t ngx_http_imgbill_keyring_id(ngx_http_request_t *r,
    ngx_str_t *id);
static ngx_int_t ngx_http_imgbill_keyring_send(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_key_ask_t *ask);
static void ngx_http_imgbill_keyring_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_imgbill_keyring_new_key(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_key_ask_t *ask);
static void ngx_http_imgbill_keyring_done(ngx_http_imgbill_reply_t *reply,
    void *data);
static void ngx_http_imgbill_keyring_refused(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply);
static ngx_int_t ngx_http_imgbill_keyring_reply(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply);
static u_char *ngx_http_imgbill_keyring_row(u_char *p, ngx_str_t *row);
static u_char *ngx_http_imgbill_keyring_time(u_char *p, ngx_str_t *t);
static u_char *ngx_http_imgbill_keyring_money(u_char *p, ngx_str_t *units);
static u_char *ngx_http_imgbill_keyring_ips(u_char *p, ngx_str_t *ips);




/*
 * For a key Redis knows: what the path and the method ask.  NGX_DECLINED
 * with an error in ctx->error to reject; NGX_DONE while a body is read.
 */

ngx_int_t
ngx_http_imgbill_keyring_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_http_imgbill_key_ask_t  *ask;

    ask = ngx_pcalloc(r->pool, sizeof(ngx_http_imgbill_key_ask_t));
    if (ask == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ask->key_hash = ctx->key_hash;
    ngx_http_imgbill_address(r, &ask->address);
    ctx->keyring = ask;

    rc = ngx_http_imgbill_keyring_id(r, &ask->id);

    if (rc == NGX_DECLINED) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_NOT_FOUND,
                                   ngx_http_imgbill_err_request,
                                   "key_not_found",
                                   "no such key: an id is the 12 hex digits "
                                   "the list of keys shows");
        return NGX_DECLINED;
    }

    if (!(r->method & (ask->id.len ? NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_DELETE
                                   : NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST)))
    {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_NOT_ALLOWED,
                                   ngx_http_imgbill_err_request,
                                   "method_not_allowed",
                                   ask->id.len
                                   ? "a key is read with GET and deleted "
                                     "with DELETE"
                                   : "the keys are listed with GET, and a "
                                     "key made with POST");
        return NGX_DECLINED;
    }

    if (r->method != NGX_HTTP_POST) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_imgbill_keyring_send(r, ctx, ask);
    }

    return ngx_http_imgbill_small_body_read(r, ctx,
                                            NGX_HTTP_IMGBILL_KEYRING_BODY_MAX,
                                            ngx_http_imgbill_keyring_body);
}


/*
 * The path's last segment: "keys" (or the location's own prefix) is the
 * list, 12 hex digits a key (NGX_OK, the id lowercased), anything else no key
 * (NGX_DECLINED).
 */

static ngx_int_t
ngx_http_imgbill_keyring_id(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char      *p, *last, *seg;
    ngx_uint_t   i;

    ngx_str_null(id);

    last = r->uri.data + r->uri.len;

    /* ".../keys/" and ".../keys/{id}/" are what they are without it */

    if (last > r->uri.data && last[-1] == '/') {
        last--;
    }

    for (seg = last; seg > r->uri.data && seg[-1] != '/'; seg--) {
        /* void */
    }

    if (seg == last
        || (last - seg == 4 && ngx_strncmp(seg, "keys", 4) == 0))
    {
        return NGX_OK;
    }

    if (last - seg != NGX_HTTP_IMGBILL_KEY_ID_LEN) {
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_KEY_ID_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_IMGBILL_KEY_ID_LEN; i++) {
        p[i] = ngx_tolower(seg[i]);

        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
        {
            return NGX_DECLINED;
        }
    }

    id->data = p;
    id->len = NGX_HTTP_IMGBILL_KEY_ID_LEN;

    return NGX_OK;
}


/* the command the request asks for; NGX_AGAIN while it runs */

static ngx_int_t
ngx_http_imgbill_keyring_send(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_key_ask_t *ask)
{
    ngx_http_imgbill_store_t   *store;
    ngx_http_imgbill_reply_pt   done;

    store = ngx_http_imgbill_store(r);
    done = ngx_http_imgbill_keyring_done;

    if (r->method == NGX_HTTP_POST) {
        ctx->cmd = ngx_http_imgbill_script_key_new(store, ask, done, ctx);

    } else if (r->method == NGX_HTTP_DELETE) {
        ctx->cmd = ngx_http_imgbill_script_key_del(store, ask, done, ctx);

    } else {
        ctx->cmd = ngx_http_imgbill_script_key_list(store, ask, done, ctx);
    }

    if (ctx->cmd == NULL) {
        ngx_http_imgbill_unavailable(r, ctx);
        return NGX_DECLINED;
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_looking_up);

    return NGX_AGAIN;
}


static void
ngx_http_imgbill_keyring_body(ngx_http_request_t *r)
{
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_imgbill_module);

    r->write_event_handler = ngx_http_core_run_phases;

    if (ngx_http_imgbill_keyring_limits(r, ctx, ctx->keyring) == NGX_OK
        && ngx_http_imgbill_keyring_new_key(r, ctx, ctx->keyring) == NGX_OK
        && ngx_http_imgbill_keyring_send(r, ctx, ctx->keyring) == NGX_AGAIN)
    {
        return;
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    ngx_http_core_run_phases(r);
}


/* the key, drawn and hashed; its raw form kept for the reply only */

static ngx_int_t
ngx_http_imgbill_keyring_new_key(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_key_ask_t *ask)
{
    u_char         *key, *p;
    ngx_uint_t      i;
    u_char          rnd[64];

    static u_char   base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "abcdefghijklmnopqrstuvwxyz";

    key = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_NEW_KEY_LEN);
    ask->new_hash = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_KEY_HASH_LEN);

    if (key == NULL || ask->new_hash == NULL) {
        goto failed;
    }

    p = ngx_cpymem(key, "sk-", 3);

    /* bytes of 248 and above would favour the first characters */

    while (p < key + NGX_HTTP_IMGBILL_NEW_KEY_LEN) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "imgbill: RAND_bytes() failed");
            goto failed;
        }

        for (i = 0; i < sizeof(rnd) && p < key + NGX_HTTP_IMGBILL_NEW_KEY_LEN;
             i++)
        {
            if (rnd[i] < 248) {
                *p++ = base62[rnd[i] % 62];
            }
        }
    }

    ngx_explicit_memzero(rnd, sizeof(rnd));

    if (ngx_http_imgbill_sha256(r, key, NGX_HTTP_IMGBILL_NEW_KEY_LEN,
                                ask->new_hash)
        != NGX_OK)
    {
        goto failed;
    }

    ctx->new_key = key;

    return NGX_OK;

failed:

    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               ngx_http_imgbill_err_server, "internal_error",
                               "cannot make a key");
    return NGX_ERROR;
}


static void
ngx_http_imgbill_keyring_done(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;
    ctx->cmd = NULL;
    rc = NGX_DECLINED;

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    if (reply->rc == NGX_HTTP_IMGBILL_REPLY_UNSENT
        || (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK
            && !(r->method & (NGX_HTTP_POST|NGX_HTTP_DELETE))))
    {
        ngx_http_imgbill_unavailable(r, ctx);

    } else if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "imgbill: a key's %s lost its reply",
                      r->method == NGX_HTTP_POST ? "making" : "deletion");
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_SERVICE_UNAVAILABLE,
                                   ngx_http_imgbill_err_server,
                                   "billing_unavailable",
                                   "billing did not answer: the key may "
                                   "have been %s; list the keys before "
                                   "trying again",
                                   r->method == NGX_HTTP_POST ? "made"
                                                              : "deleted");

    } else if (reply->status == NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY) {
        ngx_http_imgbill_invalid_key(r, ctx);

    } else if (ngx_http_imgbill_account(r, ctx, &reply->account) != NGX_OK) {
        /* the error is set */

    } else if (reply->status != NGX_HTTP_IMGBILL_KEYS_DONE) {
        ngx_http_imgbill_keyring_refused(r, ctx, reply);

    } else {
        rc = ngx_http_imgbill_keyring_reply(r, ctx, reply);
    }

    ngx_http_imgbill_answered(r, ctx, rc);
}


static void
ngx_http_imgbill_keyring_refused(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply)
{
    u_char  *p;
    u_char   buf[NGX_HTTP_IMGBILL_MONEY_LEN + NGX_HTTP_IMGBILL_TIME_LEN];

    switch (reply->status) {

    case NGX_HTTP_IMGBILL_ADMIT_KEY_EXPIRED:
    case NGX_HTTP_IMGBILL_ADMIT_KEY_ADDRESS:
        ngx_http_imgbill_key_refuse(r, ctx, reply);
        return;

    case NGX_HTTP_IMGBILL_KEYS_NOT_FOUND:
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_NOT_FOUND,
                                   ngx_http_imgbill_err_request,
                                   "key_not_found", "no such key");
        return;

    case NGX_HTTP_IMGBILL_KEYS_TOO_MANY:
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_FORBIDDEN,
                                   ngx_http_imgbill_err_request,
                                   "too_many_keys",
                                   "an account has at most %i keys: delete "
                                   "one first", reply->available);
        return;

    case NGX_HTTP_IMGBILL_KEYS_TAKEN:
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   ngx_http_imgbill_err_server,
                                   "internal_error",
                                   "the new key collided with one stored: "
                                   "try again");
        return;
    }

    /* NGX_HTTP_IMGBILL_KEYS_WIDER */

    switch (reply->limit) {

    case NGX_HTTP_IMGBILL_WIDER_LIMIT:
    case NGX_HTTP_IMGBILL_WIDER_DAILY:
        p = ngx_http_imgbill_format_money(buf, ngx_max(reply->available, 0));
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_FORBIDDEN,
                                   ngx_http_imgbill_err_request,
                                   "limits_too_wide",
                                   "this key has a %s spending limit: the "
                                   "new key needs \"%s\", at most %*s (what "
                                   "this key has left to give%s)",
                                   reply->limit == NGX_HTTP_IMGBILL_WIDER_LIMIT
                                   ? "total" : "daily",
                                   reply->limit == NGX_HTTP_IMGBILL_WIDER_LIMIT
                                   ? "limit" : "daily_limit",
                                   p - buf, buf,
                                   reply->limit == NGX_HTTP_IMGBILL_WIDER_LIMIT
                                   ? "" : " today");
        return;

    case NGX_HTTP_IMGBILL_WIDER_EXPIRES:
        p = ngx_http_imgbill_format_time(buf, reply->when);
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_FORBIDDEN,
                                   ngx_http_imgbill_err_request,
                                   "limits_too_wide",
                                   "this key expires at %*s: the new key's "
                                   "\"expires\" may be no later",
                                   p - buf, buf);
        return;

    default:
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_FORBIDDEN,
                                   ngx_http_imgbill_err_request,
                                   "limits_too_wide",
                                   reply->limit == NGX_HTTP_IMGBILL_WIDER_MODELS
                                   ? "the new key's \"models\" must be among "
                                     "this key's"
                                   : "the new key's \"ips\" must lie within "
                                     "this key's networks");
    }
}


/* the command's answer, as the JSON body, while the reply is alive */

static ngx_int_t
ngx_http_imgbill_keyring_reply(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply)
{
    u_char                      *p;
    size_t                       len;
    ngx_uint_t                   i;
    ngx_str_t                    row[ngx_http_imgbill_row_fields];
    ngx_http_imgbill_key_ask_t  *ask;

    ask = ctx->keyring;

    if (r->method == NGX_HTTP_DELETE) {
        p = ngx_pnalloc(r->pool, 128);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->body = p;
        ctx->last = ngx_sprintf(p, "{\"object\":\"key.deleted\",\"id\":\"%V\","
                                   "\"deleted\":true}\n", &ask->id);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "imgbill: \"%V\" deleted key %V", &ctx->account,
                      &ask->id);
        return NGX_OK;
    }

    len = 64 + NGX_HTTP_IMGBILL_NEW_KEY_LEN;

    for (i = 0; i < reply->nentries; i++) {
        if (ngx_http_imgbill_key_row(reply, i, row) != NGX_OK) {
            return NGX_ERROR;
        }

        len += NGX_HTTP_IMGBILL_ROW_LEN
               + 6 * (row[ngx_http_imgbill_row_name].len
                      + row[ngx_http_imgbill_row_models].len)
               + 2 * row[ngx_http_imgbill_row_ips].len;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->body = p;

    if (ask->id.len == 0 && r->method != NGX_HTTP_POST) {
        p = ngx_cpymem(p, "{\"object\":\"list\",\"data\":[",
                       sizeof("{\"object\":\"list\",\"data\":[") - 1);
    }

    for (i = 0; i < reply->nentries; i++) {
        (void) ngx_http_imgbill_key_row(reply, i, row);

        if (i) {
            *p++ = ',';
        }

        p = ngx_http_imgbill_keyring_row(p, row);

        if (r->method == NGX_HTTP_POST) {
            /* the raw key, in this reply only */
            p = ngx_sprintf(p - 1, ",\"key\":\"%*s\"}",
                            (size_t) NGX_HTTP_IMGBILL_NEW_KEY_LEN,
                            ctx->new_key);

            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "imgbill: \"%V\" made key %V", &ctx->account,
                          &row[ngx_http_imgbill_row_id]);
        }
    }

    if (ask->id.len == 0 && r->method != NGX_HTTP_POST) {
        p = ngx_cpymem(p, "]}", 2);
    }

    *p++ = LF;
    ctx->last = p;

    return NGX_OK;
}


static u_char *
ngx_http_imgbill_keyring_row(u_char *p, ngx_str_t *row)
{
    u_char     *s, *last, *c;
    ngx_str_t  *v;

    p = ngx_sprintf(p, "{\"object\":\"key\",\"id\":\"%V\",\"name\":",
                    &row[ngx_http_imgbill_row_id]);

    v = &row[ngx_http_imgbill_row_name];

    if (v->len) {
        *p++ = '"';
        p = (u_char *) ngx_escape_json(p, v->data, v->len);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_cpymem(p, ",\"created\":", sizeof(",\"created\":") - 1);
    p = ngx_http_imgbill_keyring_time(p, &row[ngx_http_imgbill_row_created]);
    p = ngx_cpymem(p, ",\"last_used\":", sizeof(",\"last_used\":") - 1);
    p = ngx_http_imgbill_keyring_time(p,
                                      &row[ngx_http_imgbill_row_last_used]);
    p = ngx_cpymem(p, ",\"limit\":", sizeof(",\"limit\":") - 1);
    p = ngx_http_imgbill_keyring_money(p, &row[ngx_http_imgbill_row_limit]);
    p = ngx_cpymem(p, ",\"spent\":", sizeof(",\"spent\":") - 1);
    p = ngx_http_imgbill_keyring_money(p, &row[ngx_http_imgbill_row_spent]);
    p = ngx_cpymem(p, ",\"daily_limit\":", sizeof(",\"daily_limit\":") - 1);
    p = ngx_http_imgbill_keyring_money(p,
                                       &row[ngx_http_imgbill_row_daily_limit]);
    p = ngx_cpymem(p, ",\"today\":", sizeof(",\"today\":") - 1);
    p = ngx_http_imgbill_keyring_money(p, &row[ngx_http_imgbill_row_today]);
    p = ngx_cpymem(p, ",\"expires\":", sizeof(",\"expires\":") - 1);
    p = ngx_http_imgbill_keyring_time(p, &row[ngx_http_imgbill_row_expires]);
    p = ngx_cpymem(p, ",\"models\":", sizeof(",\"models\":") - 1);

    v = &row[ngx_http_imgbill_row_models];

    if (v->len) {
        *p++ = '[';
        last = v->data + v->len;

        for (s = v->data; s < last; s = c + 1) {
            c = ngx_strlchr(s, last, ',');
            if (c == NULL) {
                c = last;
            }

            if (s != v->data) {
                *p++ = ',';
            }

            *p++ = '"';
            p = (u_char *) ngx_escape_json(p, s, c - s);
            *p++ = '"';
        }

        *p++ = ']';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_cpymem(p, ",\"ips\":", sizeof(",\"ips\":") - 1);
    p = ngx_http_imgbill_keyring_ips(p, &row[ngx_http_imgbill_row_ips]);
    p = ngx_cpymem(p, ",\"made_by\":", sizeof(",\"made_by\":") - 1);

    v = &row[ngx_http_imgbill_row_made_by];

    if (v->len == NGX_HTTP_IMGBILL_KEY_ID_LEN) {
        *p++ = '"';
        p = (u_char *) ngx_escape_json(p, v->data, v->len);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    return ngx_sprintf(p, ",\"current\":%s}",
                       (row[ngx_http_imgbill_row_current].len == 1
                        && row[ngx_http_imgbill_row_current].data[0] == '1')
                       ? "true" : "false");
}


/* unix seconds, or null */

static u_char *
ngx_http_imgbill_keyring_time(u_char *p, ngx_str_t *t)
{
    ngx_int_t  n;

    n = t->len ? ngx_atoi(t->data, t->len) : NGX_ERROR;

    if (n == NGX_ERROR) {
        return ngx_cpymem(p, "null", 4);
    }

    return ngx_sprintf(p, "%i", n);
}


/* units as a decimal string, or null */

static u_char *
ngx_http_imgbill_keyring_money(u_char *p, ngx_str_t *units)
{
    ngx_int_t   n;
    ngx_uint_t  neg;

    /* a key's spend, reversed, can dip below 0 */

    neg = (units->len > 1 && units->data[0] == '-');
    n = units->len ? ngx_atoi(units->data + neg, units->len - neg)
                   : NGX_ERROR;

    if (n == NGX_ERROR) {
        return ngx_cpymem(p, "null", 4);
    }

    *p++ = '"';
    p = ngx_http_imgbill_format_money(p, neg ? -n : n);
    *p++ = '"';

    return p;
}


/* networks as the CLI writes them: ["10.0.0.0/8", "2001:db8::/32"] */

static u_char *
ngx_http_imgbill_keyring_ips(u_char *p, ngx_str_t *ips)
{
    u_char     *s, *last, *c, *slash;
    size_t      n, i;
    ngx_int_t   byte;
    u_char      addr[16];

    if (ips->len == 0) {
        return ngx_cpymem(p, "null", 4);
    }

    *p++ = '[';
    last = ips->data + ips->len;

    for (s = ips->data; s < last; s = c + 1) {
        c = ngx_strlchr(s, last, ',');
        if (c == NULL) {
            c = last;
        }

        slash = ngx_strlchr(s, c, '/');
        n = (c - s > 2 && s[0] == '4') ? 4 : 16;

        if (slash == NULL || s[1] != ':' || (size_t) (slash - s - 2) != 2 * n)
        {
            continue;
        }

        for (i = 0; i < n; i++) {
            byte = ngx_hextoi(s + 2 + 2 * i, 2);
            addr[i] = (u_char) (byte < 0 ? 0 : byte);
        }

        if (p[-1] != '[') {
            *p++ = ',';
        }

        *p++ = '"';
        p += ngx_inet_ntop(n == 4 ? AF_INET : AF_INET6, addr, p,
                           NGX_INET6_ADDRSTRLEN);
        p = ngx_cpymem(p, slash, c - slash);
        *p++ = '"';
    }

    *p++ = ']';

    return p;
}
