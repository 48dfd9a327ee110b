
/*
 * imgbill: the ways of charging, one row each, and the channels that name
 * them.  A new way of charging is a row here, a channel, its price
 * directive and a place for its prices in the tariff.
 *
 *   by tokens (metered)  the usage: input and output tokens at ¥/1M each,
 *                        rounded half up per term; the hold bounds what
 *                        the request allows
 *   by call (fast)       the price of each image delivered; the hold, of
 *                        each image asked for
 */


#include "ngx_http_imgbill_charge.h"


static ngx_int_t ngx_http_imgbill_tokens_hold(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_tokens_gate(ngx_http_imgbill_tariff_t *t,
    ngx_int_t hold);
static ngx_int_t ngx_http_imgbill_tokens_cost(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_scan_t *found);
static ngx_int_t ngx_http_imgbill_tokens_fallback(
    ngx_http_imgbill_tariff_t *t, ngx_http_imgbill_price_t *price,
    ngx_http_imgbill_scan_t *found, ngx_int_t hold,
    ngx_http_imgbill_bill_t *bill);
static ngx_int_t ngx_http_imgbill_call_hold(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_call_gate(ngx_http_imgbill_tariff_t *t,
    ngx_int_t hold);
static ngx_int_t ngx_http_imgbill_call_cost(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_scan_t *found);


/* images counted in money: a request may ask for one more than any
   location allows, so that it is refused; no product wraps */
#define ngx_http_imgbill_images(n)                                           \
    ((ngx_int_t) ngx_min(n, NGX_HTTP_IMGBILL_IMAGES_MAX + 1))


static ngx_http_imgbill_charging_t  ngx_http_imgbill_by_tokens = {
    ngx_http_imgbill_tokens_hold,
    ngx_http_imgbill_tokens_gate,
    ngx_http_imgbill_tokens_cost,
    ngx_http_imgbill_tokens_fallback
};


static ngx_http_imgbill_charging_t  ngx_http_imgbill_by_call = {
    ngx_http_imgbill_call_hold,
    ngx_http_imgbill_call_gate,
    ngx_http_imgbill_call_cost,
    NULL
};


/*
 * Indexed by NGX_HTTP_IMGBILL_OFF, _METERED, _FAST: the "imgbill" directive
 * and the journal read channels by these names, the ledger and the log
 * write them.
 */

static ngx_http_imgbill_channel_t  ngx_http_imgbill_channels[] = {
    { ngx_string("off"), NULL, ngx_null_string, 0 },
    { ngx_string("metered"), &ngx_http_imgbill_by_tokens,
      ngx_string("imgbill_metered_price"),
      offsetof(ngx_http_imgbill_tariff_t, metered) },
    { ngx_string("fast"), &ngx_http_imgbill_by_call,
      ngx_string("imgbill_fast_price"),
      offsetof(ngx_http_imgbill_tariff_t, fast) }
};


/*
 * The per-call price of the images a request asks for, by their size and
 * quality: the price of "SIZE:QUALITY", else of "SIZE", else of
 * ":QUALITY", else the model's own (dall-e-3: standard 1024x1024 is the
 * model's price, hd and the wide sizes are its variants).  Without regard
 * to case: an upstream that takes "HD" for "hd" must not make it cheap.
 */

ngx_int_t
ngx_http_imgbill_per_call(ngx_http_imgbill_price_t *price, ngx_str_t *size,
    ngx_str_t *quality)
{
    u_char                      key[128], *p;
    size_t                      len;
    ngx_uint_t                  i, k;
    ngx_http_imgbill_variant_t  *v;

    if (price->variants == NULL || size->len + quality->len + 1 > sizeof(key))
    {
        return price->per_call;
    }

    v = price->variants->elts;

    for (k = 0; k < 3; k++) {

        if ((k < 2 && size->len == 0) || (k != 1 && quality->len == 0)) {
            continue;
        }

        p = key;

        if (k < 2) {
            p = ngx_cpymem(p, size->data, size->len);
        }

        if (k != 1) {
            *p++ = ':';
            p = ngx_cpymem(p, quality->data, quality->len);
        }

        len = p - key;

        for (i = 0; i < price->variants->nelts; i++) {
            if (v[i].key.len == len
                && ngx_strncasecmp(v[i].key.data, key, len) == 0)
            {
                return v[i].per_call;
            }
        }
    }

    return price->per_call;
}


ngx_http_imgbill_channel_t *
ngx_http_imgbill_channel(ngx_uint_t channel)
{
    return &ngx_http_imgbill_channels[channel];
}


ngx_str_t *
ngx_http_imgbill_channel_name(ngx_uint_t channel)
{
    return &ngx_http_imgbill_channels[channel].name;
}


/* NGX_ERROR if no channel has that name */

ngx_int_t
ngx_http_imgbill_channel_find(u_char *name, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < sizeof(ngx_http_imgbill_channels)
                    / sizeof(ngx_http_imgbill_channel_t); i++)
    {
        if (ngx_http_imgbill_channels[i].name.len == len
            && ngx_strncasecmp(ngx_http_imgbill_channels[i].name.data, name,
                               len)
               == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


/* the channel's price list in a tariff, once merged; NULL: none */

ngx_array_t *
ngx_http_imgbill_channel_prices(ngx_http_imgbill_tariff_t *t,
    ngx_uint_t channel)
{
    ngx_http_imgbill_channel_t  *ch;

    ch = &ngx_http_imgbill_channels[channel];

    if (ch->charging == NULL) {
        return NULL;
    }

    return *(ngx_array_t **) ((u_char *) t + ch->prices);
}


ngx_http_imgbill_price_t *
ngx_http_imgbill_find_price(ngx_http_imgbill_tariff_t *t, ngx_uint_t channel,
    ngx_str_t *model)
{
    ngx_uint_t                 i;
    ngx_array_t               *prices;
    ngx_http_imgbill_price_t  *price;

    prices = ngx_http_imgbill_channel_prices(t, channel);
    if (prices == NULL) {
        return NULL;
    }

    price = prices->elts;

    for (i = 0; i < prices->nelts; i++) {
        if (price[i].model.len == model->len
            && ngx_strncmp(price[i].model.data, model->data, model->len) == 0)
        {
            return &price[i];
        }
    }

    return NULL;
}


/* never below the minimum charge, which is the location's own: the price
   may be inherited */

ngx_int_t
ngx_http_imgbill_hold(ngx_http_imgbill_tariff_t *t, ngx_uint_t channel,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_request_t *req)
{
    ngx_int_t  hold;

    hold = ngx_http_imgbill_channels[channel].charging->hold(t, price, req);

    return ngx_max(hold, t->min_charge);
}


ngx_int_t
ngx_http_imgbill_gate(ngx_http_imgbill_tariff_t *t, ngx_uint_t channel,
    ngx_int_t hold)
{
    return ngx_http_imgbill_channels[channel].charging->gate(t, hold);
}


/*
 * What a reply's findings cost: free without an image; a reply that does
 * not say (no usage) free unless its image was delivered as it came (a
 * stream), and then what the way of charging makes of it.  Never less
 * than the minimum charge, and never more than the hold: the hold is what
 * admission reserved as the most this request can cost, and what the
 * gate let through, so a reply that claims more (an upstream past
 * max_output, more images than asked, a broken count) is billed the hold
 * and no account is charged money the gate never saw.
 */

void
ngx_http_imgbill_bill(ngx_http_imgbill_tariff_t *t, ngx_uint_t channel,
    ngx_http_imgbill_price_t *price, ngx_int_t hold,
    ngx_http_imgbill_scan_t *found, ngx_uint_t delivered,
    ngx_http_imgbill_bill_t *bill)
{
    ngx_int_t                     cost;
    ngx_http_imgbill_charging_t  *c;

    c = ngx_http_imgbill_channels[channel].charging;

    ngx_memzero(bill, sizeof(ngx_http_imgbill_bill_t));

    bill->images = found->images;
    bill->prompt_tokens = found->prompt_tokens;
    bill->completion_tokens = found->completion_tokens;

    if (found->images == 0) {
        bill->billed = ngx_http_imgbill_billed_no_image;
        return;
    }

    cost = c->cost(t, price, found);

    if (cost == 0 && t->min_charge == 0) {
        /* a price of nothing charges nothing: free, as without an image */
        bill->billed = ngx_http_imgbill_billed_no_image;
        return;
    }

    if (cost == NGX_DECLINED) {

        if (!delivered || c->fallback == NULL) {
            bill->billed = ngx_http_imgbill_billed_no_usage;
            return;
        }

        cost = c->fallback(t, price, found, hold, bill);
        bill->billed = ngx_http_imgbill_billed_fallback;
    }

    cost = ngx_max(cost, t->min_charge);

    bill->cost = cost;
    bill->capped = (cost > hold);
    bill->charge = ngx_min(cost, hold);
}


/*
 * By tokens, the hold: "hold=" per image if configured, else the
 * request's input bound and, per image, its output bound, each term
 * rounded up, so that no half-up charge of fewer tokens exceeds it.  An
 * image's output is the model's largest reply (max_output) and any
 * thinking the request asks for, or an output cap it sets, if larger:
 * never less, an upstream may not keep to a cap (an image model's image is
 * its size whatever the cap).  Tokens are capped at 2^31 - 1 each and
 * prices at 1e9 units, so no product wraps.
 */

static ngx_int_t
ngx_http_imgbill_tokens_hold(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_request_t *req)
{
    ngx_int_t  n, tokens, output;

    n = ngx_http_imgbill_images(req->asked);

    if (price->hold != NGX_CONF_UNSET) {
        return n * price->hold;
    }

    tokens = (ngx_int_t) ngx_min(req->tokens, NGX_HTTP_IMGBILL_TOKENS_MAX);
    output = ngx_max(price->max_output + ngx_max(req->thinking, 0),
                     req->max_output);

    /* an input token may be an image's, at its own rate */

    return ngx_http_imgbill_per_million_up(tokens,
                                           ngx_max(price->input,
                                                   price->image_input))
           + n * ngx_http_imgbill_per_million_up(output, price->output);
}


/* the seed's 5 yuan floor, and never less than the request's own hold,
   so the holds of an account never add up to more than its balance */

static ngx_int_t
ngx_http_imgbill_tokens_gate(ngx_http_imgbill_tariff_t *t, ngx_int_t hold)
{
    return ngx_max(t->min_balance, hold);
}


/* the usage, which covers every image; the seed's worked examples round
   each term on its own */

static ngx_int_t
ngx_http_imgbill_tokens_cost(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_scan_t *found)
{
    ngx_int_t  image;

    if (!found->usage) {
        return NGX_DECLINED;
    }

    /*
     * With an image-input rate, the input's image tokens cost it, each of
     * the three terms rounded on its own; a usage that does not tell them
     * apart bills all its input at the input (text) rate.
     */

    image = (price->image_input != NGX_CONF_UNSET && found->image_tokens > 0)
            ? found->image_tokens : 0;

    return ngx_http_imgbill_per_million(found->prompt_tokens - image,
                                        price->input)
           + (image ? ngx_http_imgbill_per_million(image, price->image_input)
                    : 0)
           + ngx_http_imgbill_per_million(found->completion_tokens,
                                          price->output);
}


/*
 * A metered stream whose image reached its client and whose usage never
 * came (the upstream died after it, or sends none) is not free: the
 * upstream bills the operator all the same.  "max_output" charges each
 * image delivered as the model's largest reply of output tokens, and the
 * prompt as nothing (those tokens go into the ledger as the usage);
 * "hold" charges the hold.
 */

static ngx_int_t
ngx_http_imgbill_tokens_fallback(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_scan_t *found,
    ngx_int_t hold, ngx_http_imgbill_bill_t *bill)
{
    ngx_int_t  tokens;

    bill->prompt_tokens = -1;

    if (t->usage_fallback == NGX_HTTP_IMGBILL_FALLBACK_HOLD) {
        bill->completion_tokens = -1;
        return hold;
    }

    tokens = ngx_http_imgbill_images(found->images) * price->max_output;
    tokens = ngx_min(tokens, NGX_HTTP_IMGBILL_TOKENS_MAX);

    bill->completion_tokens = tokens;

    return ngx_http_imgbill_per_million(tokens, price->output);
}


/* by call: each image asked for may be a call the upstream bills */

static ngx_int_t
ngx_http_imgbill_call_hold(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_request_t *req)
{
    return ngx_http_imgbill_images(req->asked) * price->per_call;
}


static ngx_int_t
ngx_http_imgbill_call_gate(ngx_http_imgbill_tariff_t *t, ngx_int_t hold)
{
    return hold;
}


/* each image delivered, whatever the usage says */

static ngx_int_t
ngx_http_imgbill_call_cost(ngx_http_imgbill_tariff_t *t,
    ngx_http_imgbill_price_t *price, ngx_http_imgbill_scan_t *found)
{
    return ngx_http_imgbill_images(found->images) * price->per_call;
}
