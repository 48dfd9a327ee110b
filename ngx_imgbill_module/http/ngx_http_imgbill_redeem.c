
/*
 * A redemption code credits the caller's account (imgbill_serve redeem):
 * POST {"code": "..."}.  The body is a few bytes and is read whole, the
 * code hashed as a key is (Redis keeps only its SHA-256), and one redeem
 * command spends the code and writes the credit at once.  Nothing of the
 * code is logged; its id (the hash's first digits) is in the ledger.
 *
 * A reply that never came may still have been applied: the client is told
 * to look at the balance before trying again, since a second try finds
 * the code spent.
 */


#include "ngx_http_imgbill_ctx.h"

#include <jansson.h>


/* a code's JSON body, and the code in it: far more than one needs */
#define NGX_HTTP_IMGBILL_REDEEM_BODY_MAX  1024
#define NGX_HTTP_IMGBILL_CODE_MAX         128

/* nginx names no 410 */
#define NGX_HTTP_IMGBILL_GONE             410


static void ngx_http_imgbill_redeem_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_imgbill_redeem_code(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, u_char *code_hash);
static void ngx_http_imgbill_redeem_done(ngx_http_imgbill_reply_t *reply,
    void *data);
static void ngx_http_imgbill_redeem_refused(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply);
static ngx_int_t ngx_http_imgbill_redeem_reply(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply);


/*
 * For a key Redis knows (seen lately, or just looked up, as a relay's):
 * the body, then Redis.  NGX_DECLINED with an error in ctx->error to
 * reject; NGX_DONE while the body is read.
 */

ngx_int_t
ngx_http_imgbill_redeem_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    return ngx_http_imgbill_small_body_read(r, ctx,
                                            NGX_HTTP_IMGBILL_REDEEM_BODY_MAX,
                                            ngx_http_imgbill_redeem_body);
}


static void
ngx_http_imgbill_redeem_body(ngx_http_request_t *r)
{
    u_char                   code_hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_imgbill_module);

    r->write_event_handler = ngx_http_core_run_phases;

    if (ngx_http_imgbill_redeem_code(r, ctx, code_hash) == NGX_OK) {
        ctx->cmd = ngx_http_imgbill_script_redeem(ngx_http_imgbill_store(r),
                                                  ctx->key_hash, code_hash,
                                                  ngx_http_imgbill_redeem_done,
                                                  ctx);
        if (ctx->cmd) {
            ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_looking_up);
            return;
        }

        ngx_http_imgbill_unavailable(r, ctx);
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    ngx_http_core_run_phases(r);
}


/* the body's code, hashed; NGX_ERROR with the error set */

static ngx_int_t
ngx_http_imgbill_redeem_code(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, u_char *code_hash)
{
    u_char        *p, *code;
    size_t         len, n;
    json_t        *root, *v;
    u_char         buf[NGX_HTTP_IMGBILL_REDEEM_BODY_MAX];

    if (ngx_http_imgbill_small_body(r, buf, sizeof(buf), &len) != NGX_OK) {
        ngx_http_imgbill_small_body_too_large(r, ctx, sizeof(buf));
        return NGX_ERROR;
    }

    root = json_loadb((char *) buf, len, JSON_REJECT_DUPLICATES, NULL);
    v = root ? json_object_get(root, "code") : NULL;

    if (v == NULL || !json_is_string(v)) {
        if (root) {
            json_decref(root);
        }

        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request,
                                   "invalid_request",
                                   "send a JSON object with the code: "
                                   "{\"code\": \"...\"}");
        return NGX_ERROR;
    }

    code = (u_char *) json_string_value(v);
    n = json_string_length(v);

    for (p = code; p < code + n; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            break;
        }
    }

    if (n == 0 || n > NGX_HTTP_IMGBILL_CODE_MAX || p != code + n) {
        json_decref(root);

        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request,
                                   "invalid_code",
                                   "a code is up to %d printable characters, "
                                   "without spaces",
                                   NGX_HTTP_IMGBILL_CODE_MAX);
        return NGX_ERROR;
    }

    if (ngx_http_imgbill_sha256(r, code, n, code_hash) != NGX_OK) {
        json_decref(root);

        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   ngx_http_imgbill_err_server,
                                   "internal_error", "cannot hash the code");
        return NGX_ERROR;
    }

    json_decref(root);

    return NGX_OK;
}


static void
ngx_http_imgbill_redeem_done(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;
    ctx->cmd = NULL;
    rc = NGX_DECLINED;

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_rejected);

    if (reply->rc == NGX_HTTP_IMGBILL_REPLY_UNSENT) {
        ngx_http_imgbill_unavailable(r, ctx);

    } else if (reply->rc != NGX_HTTP_IMGBILL_REPLY_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "imgbill: a redeem's reply was lost; the code may "
                      "have been spent");
        ngx_http_imgbill_set_error(r, &ctx->error,
                                   NGX_HTTP_SERVICE_UNAVAILABLE,
                                   ngx_http_imgbill_err_server,
                                   "billing_unavailable",
                                   "billing did not answer: the code may "
                                   "have been redeemed; look at the "
                                   "balance before trying again");

    } else if (reply->status == NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY) {
        ngx_http_imgbill_invalid_key(r, ctx);

    } else if (reply->status != NGX_HTTP_IMGBILL_REDEEM_CREDITED) {
        ngx_http_imgbill_redeem_refused(r, ctx, reply);

    } else {
        rc = ngx_http_imgbill_redeem_reply(r, ctx, reply);
    }

    ngx_http_imgbill_answered(r, ctx, rc);
}


static void
ngx_http_imgbill_redeem_refused(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply)
{
    u_char  *p, when[NGX_HTTP_IMGBILL_TIME_LEN];

    if (reply->status == NGX_HTTP_IMGBILL_REDEEM_UNKNOWN) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_NOT_FOUND,
                                   ngx_http_imgbill_err_request,
                                   "code_not_found",
                                   "no such redemption code");
        return;
    }

    p = ngx_http_imgbill_format_time(when, reply->when);

    if (reply->status == NGX_HTTP_IMGBILL_REDEEM_SPENT) {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_CONFLICT,
                                   ngx_http_imgbill_err_request,
                                   "code_already_used",
                                   "this code was redeemed at %*s",
                                   p - when, when);
        return;
    }

    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_IMGBILL_GONE,
                               ngx_http_imgbill_err_request, "code_expired",
                               "this code expired at %*s", p - when, when);
}


/* the credit, as the JSON body, while the reply is alive */

static ngx_int_t
ngx_http_imgbill_redeem_reply(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply)
{
    u_char  *p;

    if (ngx_http_imgbill_account(r, ctx, &reply->account) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, 256 + 6 * ctx->account.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->body = p;

    p = ngx_cpymem(p, "{\"object\":\"redemption\",\"account\":\"",
                   sizeof("{\"object\":\"redemption\",\"account\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, ctx->account.data, ctx->account.len);
    p = ngx_cpymem(p, "\",\"amount\":\"", sizeof("\",\"amount\":\"") - 1);
    p = ngx_http_imgbill_format_money(p, reply->charged);
    p = ngx_cpymem(p, "\",\"balance\":\"", sizeof("\",\"balance\":\"") - 1);
    p = ngx_http_imgbill_format_money(p, reply->balance);
    p = ngx_cpymem(p, "\",\"currency\":\"CNY\"}\n",
                   sizeof("\",\"currency\":\"CNY\"}\n") - 1);

    ctx->last = p;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "imgbill: \"%V\" redeemed a code for %i units",
                  &ctx->account, reply->charged);

    return NGX_OK;
}
