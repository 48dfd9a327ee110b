
/*
 * The model lists imgbill serves itself, for the clients that ask before
 * they generate (Open WebUI and LobeChat list /v1/models; Google's SDKs
 * list /v1beta/models): the models priced on the location's channel, in
 * the shape of its API.  The access phase has checked the key already.
 */


#include "ngx_http_imgbill_module.h"


/* what each entry costs beside its model's name (twice for Gemini) */
#define NGX_HTTP_IMGBILL_MODEL_ENTRY  160


static u_char *ngx_http_imgbill_model_entry(u_char *p, ngx_uint_t api,
    ngx_str_t *model, ngx_uint_t first);


ngx_int_t
ngx_http_imgbill_models_handler(ngx_http_request_t *r)
{
    size_t                        len;
    ngx_buf_t                    *b;
    ngx_uint_t                    i;
    ngx_array_t                  *prices;
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

    len = sizeof("{\"object\":\"list\",\"data\":[]}\n");

    for (i = 0; i < prices->nelts; i++) {
        len += NGX_HTTP_IMGBILL_MODEL_ENTRY + 2 * price[i].model.len
               + 2 * ngx_escape_json(NULL, price[i].model.data,
                                     price[i].model.len);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (lcf->api == NGX_HTTP_IMGBILL_API_GEMINI) {
        b->last = ngx_cpymem(b->last, "{\"models\":[",
                             sizeof("{\"models\":[") - 1);

    } else {
        b->last = ngx_cpymem(b->last, "{\"object\":\"list\",\"data\":[",
                             sizeof("{\"object\":\"list\",\"data\":[") - 1);
    }

    for (i = 0; i < prices->nelts; i++) {
        b->last = ngx_http_imgbill_model_entry(b->last, lcf->api,
                                               &price[i].model, i == 0);
    }

    b->last = ngx_cpymem(b->last, "]}\n", sizeof("]}\n") - 1);

    return ngx_http_imgbill_send_json(r, b);
}


static u_char *
ngx_http_imgbill_model_entry(u_char *p, ngx_uint_t api, ngx_str_t *model,
    ngx_uint_t first)
{
    if (!first) {
        *p++ = ',';
    }

    if (api == NGX_HTTP_IMGBILL_API_GEMINI) {
        p = ngx_cpymem(p, "{\"name\":\"models/", sizeof("{\"name\":\"models/")
                                                  - 1);
        p = (u_char *) ngx_escape_json(p, model->data, model->len);
        p = ngx_cpymem(p, "\",\"displayName\":\"",
                       sizeof("\",\"displayName\":\"") - 1);
        p = (u_char *) ngx_escape_json(p, model->data, model->len);

        return ngx_cpymem(p, "\",\"supportedGenerationMethods\":"
                             "[\"generateContent\","
                             "\"streamGenerateContent\"]}",
                          sizeof("\",\"supportedGenerationMethods\":"
                                 "[\"generateContent\","
                                 "\"streamGenerateContent\"]}") - 1);
    }

    p = ngx_cpymem(p, "{\"id\":\"", sizeof("{\"id\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, model->data, model->len);

    return ngx_cpymem(p, "\",\"object\":\"model\",\"created\":0,"
                         "\"owned_by\":\"imgbill\"}",
                      sizeof("\",\"object\":\"model\",\"created\":0,"
                             "\"owned_by\":\"imgbill\"}") - 1);
}
