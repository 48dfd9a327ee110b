
/*
 * The body of a key holder's POST of a key (ngx_http_imgbill_keyring.c):
 * {"name", "limit", "daily_limit", "expires", "models", "ips"}, each
 * optional, checked for form and turned into what Redis stores, as the
 * CLI's key-new stores it.  Whether the calling key may give them is the
 * key_new command's to say.
 */


#include "ngx_http_imgbill_ctx.h"

#include <jansson.h>


#define NGX_HTTP_IMGBILL_NAME_MAX          64     /* characters */
#define NGX_HTTP_IMGBILL_MODELS_MAX        64
#define NGX_HTTP_IMGBILL_MODEL_MAX         128
#define NGX_HTTP_IMGBILL_IPS_MAX           32


/* the order of ngx_http_imgbill_key_ask_t's limits */
typedef enum {
    ngx_http_imgbill_limit_name = 0,
    ngx_http_imgbill_limit_limit,
    ngx_http_imgbill_limit_daily,
    ngx_http_imgbill_limit_expires,
    ngx_http_imgbill_limit_models,
    ngx_http_imgbill_limit_ips
} ngx_http_imgbill_limit_e;


static ngx_int_t ngx_http_imgbill_keyring_field(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_uint_t i, json_t *v, ngx_str_t *out);
static ngx_int_t ngx_http_imgbill_keyring_list(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_uint_t i, json_t *v, ngx_str_t *out);
static ngx_int_t ngx_http_imgbill_keyring_invalid(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_uint_t i, const char *why);
static u_char *ngx_http_imgbill_keyring_network(u_char *p, ngx_str_t *text);
static ngx_int_t ngx_http_imgbill_keyring_expires(ngx_str_t *text,
    time_t *t);


static const char  *ngx_http_imgbill_limit_names[] = {
    "name", "limit", "daily_limit", "expires", "models", "ips"
};


/* the body's fields, checked for form; NGX_ERROR with the error set */

ngx_int_t
ngx_http_imgbill_keyring_limits(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_key_ask_t *ask)
{
    u_char       buf[NGX_HTTP_IMGBILL_KEYRING_BODY_MAX];
    size_t       len;
    json_t      *root, *v;
    ngx_int_t    rc;
    const char  *name;
    ngx_uint_t   i;

    if (ngx_http_imgbill_small_body(r, buf, sizeof(buf), &len) != NGX_OK) {
        ngx_http_imgbill_small_body_too_large(r, ctx, sizeof(buf));
        return NGX_ERROR;
    }

    root = (len == 0) ? json_object()
                      : json_loadb((char *) buf, len, JSON_REJECT_DUPLICATES,
                                   NULL);

    if (root == NULL || !json_is_object(root)) {
        if (root) {
            json_decref(root);
        }

        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request,
                                   "invalid_request",
                                   "send a JSON object: {\"name\", \"limit\", "
                                   "\"daily_limit\", \"expires\", \"models\", "
                                   "\"ips\"}, each optional");
        return NGX_ERROR;
    }

    json_object_foreach(root, name, v) {
        for (i = 0; i < 6; i++) {
            if (ngx_strcmp(name, ngx_http_imgbill_limit_names[i]) == 0) {
                break;
            }
        }

        if (i == 6) {
            ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                       ngx_http_imgbill_err_request,
                                       "unknown_parameter",
                                       "unknown parameter \"%s\": a key takes "
                                       "name, limit, daily_limit, expires, "
                                       "models and ips", name);
            json_decref(root);
            return NGX_ERROR;
        }

        if (json_is_null(v)) {
            continue;
        }

        rc = (i >= ngx_http_imgbill_limit_models)
             ? ngx_http_imgbill_keyring_list(r, ctx, i, v, &ask->limits[i])
             : ngx_http_imgbill_keyring_field(r, ctx, i, v, &ask->limits[i]);

        if (rc != NGX_OK) {
            json_decref(root);
            return NGX_ERROR;
        }
    }

    json_decref(root);

    return NGX_OK;
}


/* a name, an amount or a time, as Redis stores it; NGX_ERROR with the
   error set */

static ngx_int_t
ngx_http_imgbill_keyring_field(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_uint_t i, json_t *v, ngx_str_t *out)
{
    u_char      *p, *s;
    size_t       len, chars;
    time_t       t;
    ngx_int_t    units;
    ngx_str_t    text;

    if (!json_is_string(v)) {
        return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                                                "must be a string");
    }

    s = (u_char *) json_string_value(v);
    len = json_string_length(v);

    switch (i) {

    case ngx_http_imgbill_limit_name:

        /* jansson has checked the UTF-8: its characters are the bytes
           that do not continue one */

        chars = 0;

        for (p = s; p < s + len; p++) {
            if (*p < ' ' || *p == 0x7f) {
                break;
            }

            chars += ((*p & 0xc0) != 0x80);
        }

        if (p != s + len || chars == 0
            || chars > NGX_HTTP_IMGBILL_NAME_MAX)
        {
            return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                                                    "is 1 to 64 characters, "
                                                    "no control characters");
        }

        out->data = ngx_pnalloc(r->pool, len);
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        out->len = ngx_cpymem(out->data, s, len) - out->data;
        return NGX_OK;

    case ngx_http_imgbill_limit_expires:
        text.data = s;
        text.len = len;

        if (ngx_http_imgbill_keyring_expires(&text, &t) != NGX_OK) {
            return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                                                    "is a UTC time: "
                                                    "YYYY-MM-DDTHH:MM:SSZ");
        }

        if (t <= ngx_time()) {
            return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                                                    "is in the past");
        }

        out->data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        out->len = ngx_sprintf(out->data, "%T", t) - out->data;
        return NGX_OK;

    default: /* limit, daily_limit */
        units = ngx_http_imgbill_parse_money(s, len);

        if (units == NGX_ERROR || units == 0) {
            return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                                                    "is an amount above 0 "
                                                    "as a decimal string, "
                                                    "at most 4 decimals: "
                                                    "\"0.50\"");
        }

        out->data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        out->len = ngx_sprintf(out->data, "%i", units) - out->data;
        return NGX_OK;
    }
}


/* models or networks: a JSON array, stored comma separated */

static ngx_int_t
ngx_http_imgbill_keyring_list(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_uint_t i, json_t *v, ngx_str_t *out)
{
    u_char     *p, *s, *q;
    size_t      len, n, max;
    json_t     *e;
    ngx_str_t   text;

    max = (i == ngx_http_imgbill_limit_models) ? NGX_HTTP_IMGBILL_MODELS_MAX
                                               : NGX_HTTP_IMGBILL_IPS_MAX;
    n = json_is_array(v) ? json_array_size(v) : 0;

    if (n == 0 || n > max) {
        return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                   (i == ngx_http_imgbill_limit_models)
                   ? "is an array of 1 to 64 model names"
                   : "is an array of 1 to 32 networks");
    }

    /* a network takes at most "6:", 32 digits and "/128" */

    p = ngx_pnalloc(r->pool, n * (NGX_HTTP_IMGBILL_MODEL_MAX + 1));
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    for (n = 0; n < json_array_size(v); n++) {
        e = json_array_get(v, n);

        if (!json_is_string(e)) {
            return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                                                    "has an item that is "
                                                    "not a string");
        }

        s = (u_char *) json_string_value(e);
        len = json_string_length(e);

        if (n) {
            *p++ = ',';
        }

        if (i == ngx_http_imgbill_limit_ips) {
            text.data = s;
            text.len = len;

            q = ngx_http_imgbill_keyring_network(p, &text);

            if (q == NULL) {
                ngx_http_imgbill_set_error(r, &ctx->error,
                                           NGX_HTTP_BAD_REQUEST,
                                           ngx_http_imgbill_err_request,
                                           "invalid_ips",
                                           "\"%*s\" in \"ips\" is no network "
                                           "(10.0.0.0/8, 2001:db8::/32), or "
                                           "has host bits set",
                                           (size_t) ngx_min(len, 64), s);
                return NGX_ERROR;
            }

            p = q;
            continue;
        }

        for (q = s; q < s + len; q++) {
            if (!((*q >= '0' && *q <= '9') || (*q >= 'A' && *q <= 'Z')
                  || (*q >= 'a' && *q <= 'z') || *q == '.' || *q == '_'
                  || *q == ':' || *q == '/' || *q == '-'))
            {
                break;
            }
        }

        if (len == 0 || len > NGX_HTTP_IMGBILL_MODEL_MAX || q != s + len) {
            return ngx_http_imgbill_keyring_invalid(r, ctx, i,
                                                    "has a name that is not "
                                                    "a model's (letters, "
                                                    "digits and ._:/-, up to "
                                                    "128)");
        }

        p = ngx_cpymem(p, s, len);
    }

    out->len = p - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_keyring_invalid(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_uint_t i, const char *why)
{
    static const char  *codes[] = {
        "invalid_name", "invalid_limit", "invalid_daily_limit",
        "invalid_expires", "invalid_models", "invalid_ips"
    };

    ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                               ngx_http_imgbill_err_request, codes[i],
                               "\"%s\" %s", ngx_http_imgbill_limit_names[i],
                               why);
    return NGX_ERROR;
}


/*
 * A network as the admission matches it, "4:0a000000/8": written at p,
 * NULL if it is none or has host bits set.  An IPv4 network written in
 * IPv6 (::ffff:10.0.0.0/104) is the IPv4 one, as the client's address is.
 */

static u_char *
ngx_http_imgbill_keyring_network(u_char *p, ngx_str_t *text)
{
    u_char      *a;
    uint32_t     mask;
    ngx_uint_t   bits, n, i;
    ngx_cidr_t   cidr;
#if (NGX_HAVE_INET6)
    u_char       b;
#endif

    if (text->len == 0 || ngx_ptocidr(text, &cidr) != NGX_OK) {
        return NULL;
    }

    switch (cidr.family) {

    case AF_INET:
        mask = ntohl(cidr.u.in.mask);

        for (bits = 0; bits < 32 && (mask & (0x80000000u >> bits)); bits++) {
            /* void */
        }

        a = (u_char *) &cidr.u.in.addr;
        n = 4;
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        bits = 0;

        for (i = 0; i < 16; i++) {
            for (b = cidr.u.in6.mask.s6_addr[i]; b & 0x80; b <<= 1) {
                bits++;
            }
        }

        a = cidr.u.in6.addr.s6_addr;
        n = 16;

        if (bits >= 96 && IN6_IS_ADDR_V4MAPPED(&cidr.u.in6.addr)) {
            a += 12;
            n = 4;
            bits -= 96;
        }

        break;
#endif

    default:
        return NULL;
    }

    *p++ = (n == 4) ? '4' : '6';
    *p++ = ':';
    p = ngx_hex_dump(p, a, n);

    return ngx_sprintf(p, "/%ui", bits);
}


/* "2027-01-31T00:00:00Z", a time that exists, as unix seconds */

static ngx_int_t
ngx_http_imgbill_keyring_expires(ngx_str_t *text, time_t *t)
{
    u_char     *p;
    ngx_tm_t    tm;
    ngx_int_t   y, mo, d, h, mi, s;

    p = text->data;

    if (text->len != sizeof("YYYY-MM-DDTHH:MM:SSZ") - 1
        || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':'
        || p[16] != ':' || p[19] != 'Z')
    {
        return NGX_ERROR;
    }

    y = ngx_atoi(p, 4);
    mo = ngx_atoi(p + 5, 2);
    d = ngx_atoi(p + 8, 2);
    h = ngx_atoi(p + 11, 2);
    mi = ngx_atoi(p + 14, 2);
    s = ngx_atoi(p + 17, 2);

    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23
        || mi < 0 || mi > 59 || s < 0 || s > 59)
    {
        return NGX_ERROR;
    }

    *t = ngx_http_imgbill_civil_day(y, mo, d) + h * 3600 + mi * 60 + s;

    /* February 30th comes back as March 2nd */

    ngx_gmtime(*t, &tm);

    return (tm.ngx_tm_mday == d) ? NGX_OK : NGX_ERROR;
}
