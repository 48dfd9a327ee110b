
/*
 * imgbill: money, and the ways of charging it.  A way of charging is one
 * row of hooks (hold, gate, cost, and what a delivered image costs when
 * the reply does not say), in ngx_http_imgbill_charging.c; a channel
 * ("imgbill metered") names its row.  One function, ngx_http_imgbill_bill(),
 * turns what the scanner found into a charge, for a whole reply, a stream,
 * its end cut short and what an abandoned stream would have cost alike.
 *
 * Money is an integer count of 0.0001 CNY ("units") everywhere.  Nothing
 * here needs more of nginx than its core types.
 */


#ifndef _NGX_HTTP_IMGBILL_CHARGE_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_CHARGE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_imgbill_request.h"
#include "ngx_http_imgbill_scan.h"


/* the channels, and the index of each in the table of channels */
#define NGX_HTTP_IMGBILL_OFF          0
#define NGX_HTTP_IMGBILL_METERED      1
#define NGX_HTTP_IMGBILL_FAST         2

/* the largest price or balance a directive accepts: 100000 CNY */
#define NGX_HTTP_IMGBILL_MONEY_MAX    1000000000
/* "-" + 19 digits + "." */
#define NGX_HTTP_IMGBILL_MONEY_LEN    (NGX_INT64_LEN + 1)

/* the defaults of the seed's rules, in units */
#define NGX_HTTP_IMGBILL_MIN_BALANCE  50000  /* 5.00: the metered gate */
#define NGX_HTTP_IMGBILL_MIN_CHARGE   100    /* 0.01 */

/* what a metered hold assumes when the configuration does not say */
#define NGX_HTTP_IMGBILL_MAX_OUTPUT   4096   /* tokens of one reply */

/* what a metered stream whose image reached its client costs when its
   usage never came (imgbill_usage_fallback) */
#define NGX_HTTP_IMGBILL_FALLBACK_MAX_OUTPUT  0
#define NGX_HTTP_IMGBILL_FALLBACK_HOLD        1


/* a per-call price for the images of one size (and quality): its key
   "SIZE", "SIZE:QUALITY" or ":QUALITY" */
typedef struct {
    ngx_str_t                       key;
    ngx_int_t                       per_call;
} ngx_http_imgbill_variant_t;

/* a model's price on a channel */
typedef struct {
    ngx_str_t                       model;
    ngx_int_t                       input;     /* by tokens: units per 1M */
    ngx_int_t                       output;    /* by tokens: units per 1M */
    ngx_int_t                       image_input;  /* by tokens: units per 1M
                                                     of image input, or
                                                     NGX_CONF_UNSET: the
                                                     input's rate */
    ngx_int_t                       per_call;  /* by call: units per image
                                                  asked for and delivered */
    ngx_int_t                       hold;      /* by tokens: "hold=", or
                                                  NGX_CONF_UNSET to bound
                                                  each request */
    ngx_int_t                       max_output;  /* by tokens: tokens */
    ngx_array_t                    *variants;  /* by call: the prices of
                                                  sizes and qualities
                                                  (ngx_http_imgbill_
                                                  variant_t), or NULL */
} ngx_http_imgbill_price_t;


/*
 * A location's tariff: its prices and its rules.  Read only once merged:
 * a location shares its parent's price arrays, so nothing derived per
 * location (the minimum charge) is ever written into them.
 */

typedef struct {
    ngx_array_t                    *metered;   /* ngx_http_imgbill_price_t */
    ngx_array_t                    *fast;      /* ngx_http_imgbill_price_t */
    ngx_int_t                       min_balance;
    ngx_int_t                       min_charge;
    ngx_uint_t                      usage_fallback;  /* NGX_HTTP_IMGBILL_
                                                        FALLBACK_* */
} ngx_http_imgbill_tariff_t;


/* what a charge was, for the ledger, the logs and the metrics */
typedef enum {
    ngx_http_imgbill_billed = 0,       /* charged what the reply says */
    ngx_http_imgbill_billed_no_image,  /* free: no image */
    ngx_http_imgbill_billed_no_usage,  /* free: the reply does not say */
    ngx_http_imgbill_billed_fallback   /* charged by the fallback: a
                                          delivered image, no usage */
} ngx_http_imgbill_billed_e;

typedef struct {
    ngx_int_t                       charge;    /* units, capped by the
                                                  hold */
    ngx_int_t                       cost;      /* ... before the cap */
    ngx_int_t                       prompt_tokens;      /* as billed; -1:
                                                           unknown */
    ngx_int_t                       completion_tokens;
    ngx_uint_t                      images;
    ngx_http_imgbill_billed_e       billed;
    unsigned                        capped:1;  /* the cost passed the
                                                  hold */
} ngx_http_imgbill_bill_t;


/* a way of charging */
typedef struct {
    /* what admission holds: the most the request can cost */
    ngx_int_t                     (*hold)(ngx_http_imgbill_tariff_t *t,
                                      ngx_http_imgbill_price_t *price,
                                      ngx_http_imgbill_request_t *req);

    /* what the available balance must cover to be admitted */
    ngx_int_t                     (*gate)(ngx_http_imgbill_tariff_t *t,
                                      ngx_int_t hold);

    /* what the findings cost, with images in them, before the hold caps
       it; NGX_DECLINED when they do not say (no usage) */
    ngx_int_t                     (*cost)(ngx_http_imgbill_tariff_t *t,
                                      ngx_http_imgbill_price_t *price,
                                      ngx_http_imgbill_scan_t *found);

    /* what a delivered image costs when the findings do not say, its
       tokens into bill; NULL: cost never declines */
    ngx_int_t                     (*fallback)(ngx_http_imgbill_tariff_t *t,
                                      ngx_http_imgbill_price_t *price,
                                      ngx_http_imgbill_scan_t *found,
                                      ngx_int_t hold,
                                      ngx_http_imgbill_bill_t *bill);
} ngx_http_imgbill_charging_t;


/* a channel: its name (the "imgbill" directive's value, the ledger's),
   its way of charging, and where its prices are */
typedef struct {
    ngx_str_t                       name;
    ngx_http_imgbill_charging_t    *charging;  /* NULL: off */
    ngx_str_t                       price_directive;
    size_t                          prices;    /* offset in the tariff */
} ngx_http_imgbill_channel_t;


/* ngx_http_imgbill_charging.c */
ngx_http_imgbill_channel_t *ngx_http_imgbill_channel(ngx_uint_t channel);
ngx_str_t *ngx_http_imgbill_channel_name(ngx_uint_t channel);
ngx_int_t ngx_http_imgbill_channel_find(u_char *name, size_t len);
ngx_array_t *ngx_http_imgbill_channel_prices(ngx_http_imgbill_tariff_t *t,
    ngx_uint_t channel);
ngx_http_imgbill_price_t *ngx_http_imgbill_find_price(
    ngx_http_imgbill_tariff_t *t, ngx_uint_t channel, ngx_str_t *model);
ngx_int_t ngx_http_imgbill_per_call(ngx_http_imgbill_price_t *price,
    ngx_str_t *size, ngx_str_t *quality);
ngx_int_t ngx_http_imgbill_hold(ngx_http_imgbill_tariff_t *t,
    ngx_uint_t channel, ngx_http_imgbill_price_t *price,
    ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_gate(ngx_http_imgbill_tariff_t *t,
    ngx_uint_t channel, ngx_int_t hold);
void ngx_http_imgbill_bill(ngx_http_imgbill_tariff_t *t, ngx_uint_t channel,
    ngx_http_imgbill_price_t *price, ngx_int_t hold,
    ngx_http_imgbill_scan_t *found, ngx_uint_t delivered,
    ngx_http_imgbill_bill_t *bill);

/* ngx_http_imgbill_money.c */
ngx_int_t ngx_http_imgbill_parse_money(u_char *p, size_t len);
ngx_int_t ngx_http_imgbill_per_million(ngx_int_t tokens, ngx_int_t price);
ngx_int_t ngx_http_imgbill_per_million_up(ngx_int_t tokens, ngx_int_t price);
u_char *ngx_http_imgbill_format_money(u_char *buf, ngx_int_t units);


#endif /* _NGX_HTTP_IMGBILL_CHARGE_H_INCLUDED_ */
