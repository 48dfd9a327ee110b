
/*
 * The model lists imgbill serves itself, for the clients that ask before
 * they generate (Open WebUI and LobeChat list /v1/models; Google's SDKs
 * list /v1beta/models): the models priced on the location's channel, in
 * the shape of its API, and those its server's other locations price on
 * that channel for clients of the same list (OpenAI's chat completions
 * and its Images API share one: a client lists /v1/models for both).  The
 * access phase has checked the key already.
 */


#include "ngx_http_imgbill_ctx.h"


static ngx_int_t ngx_http_imgbill_models_add(ngx_array_t *listed,
    ngx_array_t *prices);


ngx_int_t
ngx_http_imgbill_models_handler(ngx_http_request_t *r)
{
    size_t                        len;
    ngx_buf_t                    *b;
    ngx_str_t                    *name;
    ngx_uint_t                    i;
    ngx_array_t                  *listed;
    ngx_http_imgbill_api_t       *api;
    ngx_http_imgbill_ctx_t       *ctx;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);
    ctx = ngx_http_imgbill_get_ctx(r);

    /* the access phase lets nobody else through */
    if (ctx == NULL || ctx->state != ngx_http_imgbill_authorized) {
        return NGX_HTTP_FORBIDDEN;
    }

    /* (imgbill_models is a location's only: the merge noted it) */

    listed = lcf->listed;
    name = listed->elts;

    api = lcf->api;
    len = api->list_start.len + api->list_end.len;

    for (i = 0; i < listed->nelts; i++) {
        len += api->model_len + 2 * name[i].len
               + 2 * ngx_escape_json(NULL, name[i].data, name[i].len);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, api->list_start.data, api->list_start.len);

    for (i = 0; i < listed->nelts; i++) {
        if (i) {
            *b->last++ = ',';
        }

        b->last = api->model(b->last, &name[i]);
    }

    b->last = ngx_cpymem(b->last, api->list_end.data, api->list_end.len);

    return ngx_http_imgbill_send_json(r, b);
}


/*
 * After the merge: each list, its location's models first, then those of
 * the relaying locations of its server on its channel whose API lists in
 * the same shape (an entry written by the same function), each model
 * once, in the order the configuration prices them.
 */

ngx_int_t
ngx_http_imgbill_models_lists(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_uint_t                    i, j;
    ngx_http_imgbill_billed_t    *b;
    ngx_http_imgbill_loc_conf_t  *lcf, *other;

    if (mcf->billed == NULL) {
        return NGX_OK;
    }

    b = mcf->billed->elts;

    for (i = 0; i < mcf->billed->nelts; i++) {

        if (!b[i].list) {
            continue;
        }

        lcf = b[i].lcf;

        lcf->listed = ngx_array_create(cf->pool, 8, sizeof(ngx_str_t));
        if (lcf->listed == NULL
            || ngx_http_imgbill_models_add(lcf->listed,
                                           ngx_http_imgbill_prices(lcf))
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (j = 0; j < mcf->billed->nelts; j++) {
            other = b[j].lcf;

            if (b[j].list || b[j].cscf != b[i].cscf
                || other->channel != lcf->channel
                || other->api->model != lcf->api->model)
            {
                continue;
            }

            if (ngx_http_imgbill_models_add(lcf->listed,
                                            ngx_http_imgbill_prices(other))
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* the models of prices not listed yet: a list is a few dozen models */

static ngx_int_t
ngx_http_imgbill_models_add(ngx_array_t *listed, ngx_array_t *prices)
{
    ngx_str_t                 *name, *n;
    ngx_uint_t                 i, j;
    ngx_http_imgbill_price_t  *price;

    if (prices == NULL) {
        return NGX_OK;
    }

    price = prices->elts;

    for (i = 0; i < prices->nelts; i++) {
        name = listed->elts;

        for (j = 0; j < listed->nelts; j++) {
            if (name[j].len == price[i].model.len
                && ngx_strncmp(name[j].data, price[i].model.data,
                               name[j].len) == 0)
            {
                break;
            }
        }

        if (j < listed->nelts) {
            continue;
        }

        n = ngx_array_push(listed);
        if (n == NULL) {
            return NGX_ERROR;
        }

        *n = price[i].model;
    }

    return NGX_OK;
}
