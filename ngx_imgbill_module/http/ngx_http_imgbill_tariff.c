
/*
 * The tariff as configured: the price directives and the amounts of yuan
 * the other money directives take.  Amounts are parsed with ngx_atofp()
 * into units of 0.0001 CNY; nothing here is ever written after
 * configuration.
 */


#include "ngx_http_imgbill_module.h"


static ngx_int_t ngx_http_imgbill_price_param(ngx_http_imgbill_price_t *price,
    ngx_str_t *value);
static char *ngx_http_imgbill_price_variant(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_http_imgbill_price_t *price, ngx_str_t *value);


/*
 * imgbill_metered_price MODEL INPUT OUTPUT [max_output=TOKENS] [hold=AMOUNT]
 *     [image_input=RATE];
 * imgbill_fast_price MODEL PRICE [SIZE[:QUALITY]=PRICE ...];
 * (the fast one's cmd->post is set: a price per call)
 */

char *
ngx_http_imgbill_price_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_int_t                  amount;
    ngx_str_t                 *value;
    ngx_uint_t                 i, n;
    ngx_array_t              **prices;
    ngx_http_imgbill_price_t  *price;

    value = cf->args->elts;
    prices = (ngx_array_t **) (p + cmd->offset);

    if (*prices == NGX_CONF_UNSET_PTR) {
        *prices = ngx_array_create(cf->pool, 4,
                                   sizeof(ngx_http_imgbill_price_t));
        if (*prices == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    price = (*prices)->elts;

    for (i = 0; i < (*prices)->nelts; i++) {
        if (price[i].model.len == value[1].len
            && ngx_strncmp(price[i].model.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate model \"%V\" in \"%V\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    price = ngx_array_push(*prices);
    if (price == NULL) {
        return NGX_CONF_ERROR;
    }

    price->model = value[1];

    if (ngx_http_imgbill_metrics_add_model(cf, &price->model) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    price->input = 0;
    price->output = 0;
    price->per_call = 0;
    price->hold = NGX_CONF_UNSET;
    price->max_output = NGX_HTTP_IMGBILL_MAX_OUTPUT;
    price->variants = NULL;
    price->image_input = NGX_CONF_UNSET;

    /* the fast channel's only amount is its per-call price */

    n = cmd->post ? 2 : 3;

    for (i = 2; i <= n; i++) {
        amount = ngx_http_imgbill_parse_money(value[i].data, value[i].len);

        if (amount == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid price \"%V\" in \"%V\": a decimal "
                               "amount of yuan, at most 4 decimals and "
                               "at most 100000", &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        if (n == 2) {
            price->per_call = amount;

        } else if (i == 2) {
            price->input = amount;

        } else {
            price->output = amount;
        }
    }

    for (i = n + 1; i < cf->args->nelts; i++) {
        if (cmd->post) {
            if (ngx_http_imgbill_price_variant(cf, cmd, price, &value[i])
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_http_imgbill_price_param(price, &value[i]) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\"",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* a metered price's hold=AMOUNT, max_output=TOKENS or image_input=RATE */

static ngx_int_t
ngx_http_imgbill_price_param(ngx_http_imgbill_price_t *price,
    ngx_str_t *value)
{
    if (ngx_strncmp(value->data, "image_input=", 12) == 0) {
        price->image_input = ngx_http_imgbill_parse_money(value->data + 12,
                                                          value->len - 12);
        return (price->image_input == NGX_ERROR) ? NGX_ERROR : NGX_OK;
    }

    if (ngx_strncmp(value->data, "hold=", 5) == 0) {
        price->hold = ngx_http_imgbill_parse_money(value->data + 5,
                                                   value->len - 5);
        return (price->hold == NGX_ERROR) ? NGX_ERROR : NGX_OK;
    }

    if (ngx_strncmp(value->data, "max_output=", 11) == 0) {
        price->max_output = ngx_atoi(value->data + 11, value->len - 11);

        if (price->max_output != NGX_ERROR
            && price->max_output <= NGX_HTTP_IMGBILL_TOKENS_MAX)
        {
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


/*
 * A per-call price's SIZE=PRICE, SIZE:QUALITY=PRICE or :QUALITY=PRICE: the
 * price of the images a request asks for in that size and quality
 * (ngx_http_imgbill_per_call()).
 */

static char *
ngx_http_imgbill_price_variant(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_imgbill_price_t *price, ngx_str_t *value)
{
    u_char                      *eq;
    ngx_str_t                    key;
    ngx_uint_t                   i;
    ngx_http_imgbill_variant_t  *v;

    eq = ngx_strlchr(value->data, value->data + value->len, '=');

    if (eq == NULL || eq == value->data || *value->data == '='
        || (eq - value->data == 1 && *value->data == ':')
        || (eq[-1] == ':'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\": a price "
                           "of a size or a quality is SIZE=PRICE, "
                           "SIZE:QUALITY=PRICE or :QUALITY=PRICE",
                           value, &cmd->name);
        return NGX_CONF_ERROR;
    }

    key.data = value->data;
    key.len = eq - value->data;

    if (price->variants == NULL) {
        price->variants = ngx_array_create(cf->pool, 4,
                                           sizeof(ngx_http_imgbill_variant_t));
        if (price->variants == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    v = price->variants->elts;

    for (i = 0; i < price->variants->nelts; i++) {
        if (v[i].key.len == key.len
            && ngx_strncasecmp(v[i].key.data, key.data, key.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" of model \"%V\" is priced twice in "
                               "\"%V\"", &key, &price->model, &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    v = ngx_array_push(price->variants);
    if (v == NULL) {
        return NGX_CONF_ERROR;
    }

    v->key = key;
    v->per_call = ngx_http_imgbill_parse_money(eq + 1,
                                               value->data + value->len
                                               - eq - 1);

    if (v->per_call == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid price \"%V\" in \"%V\": a decimal "
                           "amount of yuan, at most 4 decimals and at most "
                           "100000", value, &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_imgbill_money_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_int_t  *np;
    ngx_str_t  *value;

    np = (ngx_int_t *) (p + cmd->offset);

    if (*np != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    *np = ngx_http_imgbill_parse_money(value[1].data, value[1].len);

    if (*np == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid amount \"%V\" in \"%V\": a decimal "
                           "amount of yuan, at most 4 decimals and at most "
                           "100000", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
