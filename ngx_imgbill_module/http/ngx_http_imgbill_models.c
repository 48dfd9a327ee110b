
/*
 * The model lists imgbill serves itself, for the clients that ask before
 * they generate (Open WebUI and LobeChat list /v1/models; Google's SDKs
 * list /v1beta/models): the models priced on the location's channel, in
 * the shape of its API.  The access phase has checked the key already.
 */


#include "ngx_http_imgbill_ctx.h"


ngx_int_t
ngx_http_imgbill_models_handler(ngx_http_request_t *r)
{
    size_t                        len;
    ngx_buf_t                    *b;
    ngx_uint_t                    i;
    ngx_array_t                  *prices;
    ngx_http_imgbill_api_t       *api;
    ngx_http_imgbill_ctx_t       *ctx;
    ngx_http_imgbill_price_t     *price;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);
    ctx = ngx_http_imgbill_get_ctx(r);

    /* the access phase lets nobody else through */
    if (ctx == NULL || ctx->state != ngx_http_imgbill_authorized) {
        return NGX_HTTP_FORBIDDEN;
    }

    prices = ngx_http_imgbill_prices(lcf);
    price = prices->elts;

    api = lcf->api;
    len = api->list_start.len + api->list_end.len;

    for (i = 0; i < prices->nelts; i++) {
        len += api->model_len + 2 * price[i].model.len
               + 2 * ngx_escape_json(NULL, price[i].model.data,
                                     price[i].model.len);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, api->list_start.data, api->list_start.len);

    for (i = 0; i < prices->nelts; i++) {
        if (i) {
            *b->last++ = ',';
        }

        b->last = api->model(b->last, &price[i].model);
    }

    b->last = ngx_cpymem(b->last, api->list_end.data, api->list_end.len);

    return ngx_http_imgbill_send_json(r, b);
}
