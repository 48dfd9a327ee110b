
/*
 * Fixed-point money.  A unit is 0.0001 CNY, the seed's precision; nothing
 * here ever touches a float.
 */


#include "ngx_http_imgbill_charge.h"


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
 * Tokens at a price per million, rounded half up, as the seed's worked
 * examples round each term on its own: 560 x 2.2 / 1M = 0.001232 ->
 * 0.0012, 1120 x 219 / 1M = 0.24528 -> 0.2453, total 0.2465.  Tokens are
 * capped at 2^31 - 1 and prices at 1e9 units, so a product stays below
 * 2^62.
 */

ngx_int_t
ngx_http_imgbill_per_million(ngx_int_t tokens, ngx_int_t price)
{
    return (tokens * price + NGX_HTTP_IMGBILL_PER_MILLION / 2)
           / NGX_HTTP_IMGBILL_PER_MILLION;
}


/* ... rounded up: a bound no half-up charge of as many tokens exceeds */

ngx_int_t
ngx_http_imgbill_per_million_up(ngx_int_t tokens, ngx_int_t price)
{
    return (tokens * price + NGX_HTTP_IMGBILL_PER_MILLION - 1)
           / NGX_HTTP_IMGBILL_PER_MILLION;
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
