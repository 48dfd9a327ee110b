
/*
 * Fixed-point money.  A unit is 0.0001 CNY, the seed's precision; nothing
 * here ever touches a float.
 */


#include "ngx_http_imgbill_module.h"


#define NGX_HTTP_IMGBILL_PER_MILLION  1000000


ngx_int_t
ngx_http_imgbill_parse_money(u_char *p, size_t len)
{
    ngx_int_t  units;

    units = ngx_atofp(p, len, 4);

    if (units == NGX_ERROR || units > NGX_HTTP_IMGBILL_MONEY_MAX) {
        return NGX_ERROR;
    }

    return units;
}


/*
 * Each term is rounded half up on its own, as the seed's worked examples
 * do: 560 x 2.2 / 1M = 0.001232 -> 0.0012, 1120 x 219 / 1M = 0.24528 ->
 * 0.2453, total 0.2465.  Tokens are capped at 2^31 - 1 and prices at 1e9
 * units, so a product stays below 2^62.
 */

static ngx_int_t
ngx_http_imgbill_per_million(ngx_int_t tokens, ngx_int_t price)
{
    return (tokens * price + NGX_HTTP_IMGBILL_PER_MILLION / 2)
           / NGX_HTTP_IMGBILL_PER_MILLION;
}


ngx_int_t
ngx_http_imgbill_metered_charge(ngx_http_imgbill_price_t *price,
    ngx_int_t prompt_tokens, ngx_int_t completion_tokens)
{
    return ngx_http_imgbill_per_million(prompt_tokens, price->input)
           + ngx_http_imgbill_per_million(completion_tokens, price->output);
}


/*
 * What admission holds, and so the most a request can be charged, for all
 * the request allows.  Fast: the call, per image asked for.  Metered:
 * "hold=" per image if configured, else the request's input bound and,
 * per image, its output bound, each term rounded up, so that no half-up
 * charge of fewer tokens exceeds it.  An image's output is the model's
 * largest reply (max_output) and any thinking the request asks for, or an
 * output cap it sets, if larger: never less, an upstream may not keep to
 * a cap (an image model's image is its size whatever the cap).  Never
 * below the minimum charge, which is the location's own: the price may be
 * inherited.  Tokens are capped at 2^31 - 1 each, prices at 1e9 units and
 * images at NGX_HTTP_IMGBILL_IMAGES_MAX + 1, so no product wraps.
 */

ngx_int_t
ngx_http_imgbill_hold(ngx_http_imgbill_loc_conf_t *lcf,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_request_t *req)
{
    ngx_int_t  hold, n, tokens, output;

    n = (ngx_int_t) ngx_min(req->asked, NGX_HTTP_IMGBILL_IMAGES_MAX + 1);

    if (lcf->channel == NGX_HTTP_IMGBILL_FAST) {
        hold = n * price->output;

    } else if (price->hold != NGX_CONF_UNSET) {
        hold = n * price->hold;

    } else {
        tokens = (ngx_int_t) ngx_min(req->tokens, NGX_HTTP_IMGBILL_TOKENS_MAX);
        output = ngx_max(price->max_output + ngx_max(req->thinking, 0),
                         req->max_output);

        hold = (tokens * price->input + NGX_HTTP_IMGBILL_PER_MILLION - 1)
               / NGX_HTTP_IMGBILL_PER_MILLION
               + n * ((output * price->output
                       + NGX_HTTP_IMGBILL_PER_MILLION - 1)
                      / NGX_HTTP_IMGBILL_PER_MILLION);
    }

    return ngx_max(hold, lcf->min_charge);
}


/*
 * What the available balance must cover.  Fast: the hold.  Metered: the
 * seed's 5 yuan floor, and never less than the request's own hold, so the
 * holds of an account never add up to more than its balance.
 */

ngx_int_t
ngx_http_imgbill_gate(ngx_http_imgbill_loc_conf_t *lcf, ngx_int_t hold)
{
    if (lcf->channel == NGX_HTTP_IMGBILL_FAST) {
        return hold;
    }

    return ngx_max(lcf->min_balance, hold);
}


/*
 * What a reply's findings cost, before the hold caps it: fast, the price
 * of each image delivered; metered, its usage.  Whole replies, streams and
 * what an abandoned stream would have cost all come here.  0 when no
 * image came; NGX_DECLINED for a metered reply without a usable usage.
 */

ngx_int_t
ngx_http_imgbill_cost(ngx_http_imgbill_loc_conf_t *lcf,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_scan_t *found)
{
    ngx_int_t  charge, n;

    if (found->images == 0) {
        return 0;
    }

    n = (ngx_int_t) ngx_min(found->images, NGX_HTTP_IMGBILL_IMAGES_MAX + 1);

    if (lcf->channel == NGX_HTTP_IMGBILL_FAST) {
        charge = n * price->output;

    } else if (found->usage) {
        charge = ngx_http_imgbill_metered_charge(price, found->prompt_tokens,
                                                 found->completion_tokens);
    } else {
        return NGX_DECLINED;
    }

    return ngx_max(charge, lcf->min_charge);
}


/*
 * A metered stream whose image reached its client and whose usage never
 * came (the upstream died after it, or sends none) is not free: the
 * upstream bills the operator all the same.  "max_output" charges each
 * image delivered as the model's largest reply of output tokens, and the
 * prompt as nothing (those tokens go into the ledger as the usage); "hold"
 * charges the hold.  Never less than the minimum charge; the caller caps
 * it by the hold.
 */

ngx_int_t
ngx_http_imgbill_fallback(ngx_http_imgbill_loc_conf_t *lcf,
    ngx_http_imgbill_price_t *price, ngx_uint_t images, ngx_int_t hold,
    ngx_int_t *completion_tokens)
{
    ngx_int_t  tokens;

    if (lcf->usage_fallback == NGX_HTTP_IMGBILL_FALLBACK_HOLD) {
        *completion_tokens = -1;
        return ngx_max(hold, lcf->min_charge);
    }

    tokens = (ngx_int_t) ngx_min(images, NGX_HTTP_IMGBILL_IMAGES_MAX + 1)
             * price->max_output;
    tokens = ngx_min(tokens, NGX_HTTP_IMGBILL_TOKENS_MAX);

    *completion_tokens = tokens;

    return ngx_max(ngx_http_imgbill_metered_charge(price, 0, tokens),
                   lcf->min_charge);
}


u_char *
ngx_http_imgbill_format_money(u_char *buf, ngx_int_t units)
{
    ngx_uint_t  abs;

    if (units < 0) {
        *buf++ = '-';
        abs = (ngx_uint_t) -units;

    } else {
        abs = (ngx_uint_t) units;
    }

    return ngx_sprintf(buf, "%ui.%04ui", abs / 10000, abs % 10000);
}
