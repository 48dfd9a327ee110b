
/*
 * imgbill: the $imgbill_* variables, what the access log and anything
 * else may read of a request's billing as it goes and once it ended.
 * None is cached: a request's figures change until its log phase.  But
 * the key's: $imgbill_key_id (the first 12 hex digits of its hash, for
 * limit_req and limit_conn, which run before the access phase) and the
 * hash itself, read once per request wherever it is asked for first,
 * since reading the key hides it from the upstream and the logs.
 */


#include "ngx_http_imgbill_ctx.h"


static ngx_int_t ngx_http_imgbill_string(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_imgbill_money(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_imgbill_count(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_imgbill_value(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, u_char *p, size_t len);
static const char *ngx_http_imgbill_outcome(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_key_hash(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_imgbill_key_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


typedef enum {
    ngx_http_imgbill_var_account = 0,
    ngx_http_imgbill_var_channel,
    ngx_http_imgbill_var_request_id,
    ngx_http_imgbill_var_outcome,
    ngx_http_imgbill_var_reason,
    ngx_http_imgbill_var_charge,
    ngx_http_imgbill_var_balance,
    ngx_http_imgbill_var_would_charge,
    ngx_http_imgbill_var_prompt_tokens,
    ngx_http_imgbill_var_completion_tokens,
    ngx_http_imgbill_var_images,
    ngx_http_imgbill_var_api
} ngx_http_imgbill_var_e;


static ngx_http_variable_t  ngx_http_imgbill_vars[] = {

    { ngx_string("imgbill_account"), NULL, ngx_http_imgbill_string,
      ngx_http_imgbill_var_account, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_channel"), NULL, ngx_http_imgbill_string,
      ngx_http_imgbill_var_channel, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_api"), NULL, ngx_http_imgbill_string,
      ngx_http_imgbill_var_api, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_charge"), NULL, ngx_http_imgbill_money,
      ngx_http_imgbill_var_charge, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_balance"), NULL, ngx_http_imgbill_money,
      ngx_http_imgbill_var_balance, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_prompt_tokens"), NULL, ngx_http_imgbill_count,
      ngx_http_imgbill_var_prompt_tokens, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_completion_tokens"), NULL, ngx_http_imgbill_count,
      ngx_http_imgbill_var_completion_tokens, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_request_id"), NULL, ngx_http_imgbill_string,
      ngx_http_imgbill_var_request_id, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_outcome"), NULL, ngx_http_imgbill_string,
      ngx_http_imgbill_var_outcome, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_would_charge"), NULL, ngx_http_imgbill_money,
      ngx_http_imgbill_var_would_charge, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_images"), NULL, ngx_http_imgbill_count,
      ngx_http_imgbill_var_images, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_reason"), NULL, ngx_http_imgbill_string,
      ngx_http_imgbill_var_reason, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("imgbill_key_hash"), NULL, ngx_http_imgbill_key_hash,
      0, NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("imgbill_key_id"), NULL, ngx_http_imgbill_key_id,
      0, 0, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_imgbill_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_imgbill_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_string(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t                s;
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_imgbill_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case ngx_http_imgbill_var_account:
        s = ctx->account;
        break;

    case ngx_http_imgbill_var_channel:
        s = *ngx_http_imgbill_channel_name(ctx->channel);
        break;

    case ngx_http_imgbill_var_request_id:
        s = ctx->request_id;
        break;

    case ngx_http_imgbill_var_api:
        s = ctx->api->name;
        break;

    case ngx_http_imgbill_var_outcome:
        s.data = (u_char *) ngx_http_imgbill_outcome(r, ctx);
        s.len = ngx_strlen(s.data);
        break;

    default: /* ngx_http_imgbill_var_reason */
        s.data = (u_char *) ngx_http_imgbill_reason(r, ctx);
        s.len = ngx_strlen(s.data);
        break;
    }

    /* no account before admission; no reason for what went as usual */

    if (s.len == 0 && data != ngx_http_imgbill_var_request_id) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_imgbill_value(r, v, s.data, s.len);
}


static ngx_int_t
ngx_http_imgbill_money(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                  *p;
    ngx_int_t                n;
    ngx_uint_t               found;
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_imgbill_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case ngx_http_imgbill_var_charge:
        n = ctx->charge;
        found = 1;
        break;

    case ngx_http_imgbill_var_balance:
        n = ctx->balance;
        found = ctx->balance_known;
        break;

    default: /* ngx_http_imgbill_var_would_charge */

        /* what an abandoned stream would have cost: the upstream's bill */

        n = (ctx->state == ngx_http_imgbill_streaming
             && ngx_http_imgbill_stream_cut(ctx) != NGX_OK)
            ? ngx_http_imgbill_stream_worth(ctx) : -1;
        found = (n >= 0);
        break;
    }

    if (!found) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_MONEY_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_imgbill_value(r, v, p,
                                  ngx_http_imgbill_format_money(p, n) - p);
}


static ngx_int_t
ngx_http_imgbill_count(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                  *p;
    ngx_int_t                n;
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_imgbill_get_ctx(r->main);

    n = (ctx == NULL) ? -1
        : (data == ngx_http_imgbill_var_prompt_tokens) ? ctx->prompt_tokens
        : (data == ngx_http_imgbill_var_completion_tokens)
          ? ctx->completion_tokens

          /* images: nothing before the body was read */
          : ctx->images_asked ? (ngx_int_t) ctx->images : -1;

    if (n < 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, 2 * NGX_INT_T_LEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* images: "delivered/asked for" */

    return ngx_http_imgbill_value(r, v, p,
                                  (data == ngx_http_imgbill_var_images)
                                  ? ngx_sprintf(p, "%ui/%ui", ctx->images,
                                                ctx->images_asked) - p
                                  : ngx_sprintf(p, "%i", n) - p);
}


static ngx_int_t
ngx_http_imgbill_value(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    u_char *p, size_t len)
{
    v->data = p;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static const char *
ngx_http_imgbill_outcome(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    switch (ngx_http_imgbill_ended(r, ctx)) {

    case ngx_http_imgbill_free_none:
        return "charged";

    case ngx_http_imgbill_free_client_gone:
        return "client_gone";

    case ngx_http_imgbill_free_upstream_cut:
        return "upstream_cut";

    case NGX_HTTP_IMGBILL_END_REJECTED:
        return "rejected";

    case NGX_HTTP_IMGBILL_END_LISTED:
        return "listed";

    case NGX_HTTP_IMGBILL_END_UNFINISHED:
        return "unfinished";

    default:
        return "free";
    }
}


/* the key's hash, where the location's API puts the key; not found: none */

static ngx_int_t
ngx_http_imgbill_key_hash(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                       *p;
    ngx_int_t                     rc;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    /* an OPTIONS is never billed, and its ?key= is masked before a
       limit_req reads it: no key, not everyone's "xxxx" */

    if (r->method == NGX_HTTP_OPTIONS) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_KEY_HASH_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_imgbill_api_key(r, lcf, p);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    (void) ngx_http_imgbill_value(r, v, p, NGX_HTTP_IMGBILL_KEY_HASH_LEN);

    /* read once: reading it again would find the key hidden */
    v->no_cacheable = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_key_id(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_http_variable_value_t     *vv;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    vv = ngx_http_get_indexed_variable(r, mcf->key_index);

    if (vv == NULL || vv->not_found) {
        v->not_found = 1;
        return (vv == NULL) ? NGX_ERROR : NGX_OK;
    }

    (void) ngx_http_imgbill_value(r, v, vv->data, NGX_HTTP_IMGBILL_KEY_ID_LEN);
    v->no_cacheable = 0;

    return NGX_OK;
}


/*
 * The request's key hash, read once ($imgbill_key_hash: a limit_req on
 * $imgbill_key_id may have read it before the access phase): NGX_OK,
 * NGX_DECLINED for no key, NGX_ERROR.
 */

ngx_int_t
ngx_http_imgbill_request_key(ngx_http_request_t *r, u_char *key_hash)
{
    ngx_http_variable_value_t     *vv;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    vv = ngx_http_get_indexed_variable(r, mcf->key_index);

    if (vv == NULL) {
        return NGX_ERROR;
    }

    if (vv->not_found || vv->len != NGX_HTTP_IMGBILL_KEY_HASH_LEN) {
        return NGX_DECLINED;
    }

    ngx_memcpy(key_hash, vv->data, NGX_HTTP_IMGBILL_KEY_HASH_LEN);

    return NGX_OK;
}
