
/*
 * What a key holder reads of their own account, served by imgbill itself
 * (imgbill_serve): the balance, the ledger page by page, and the two
 * legacy OpenAI billing endpoints chat apps read to show a balance.
 *
 * The access phase resolves the key and reads Redis in one info command;
 * its reply is turned into the JSON body here while it is alive, and the
 * content handler sends that body.  Exact money travels as decimal
 * strings with 4 places; the billing endpoints' figures are numbers, as
 * the apps that read them parse numbers.
 */


#include "ngx_http_imgbill_ctx.h"


#define NGX_HTTP_IMGBILL_LEDGER_LIMIT     20
#define NGX_HTTP_IMGBILL_LEDGER_MAX       100

/* what one ledger entry takes besides its strings, escaped */
#define NGX_HTTP_IMGBILL_ENTRY_LEN        384


static ngx_int_t ngx_http_imgbill_serve_ledger_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info);
static ngx_int_t ngx_http_imgbill_id_part(u_char *p, u_char *last);
static ngx_int_t ngx_http_imgbill_serve_usage_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info);
static ngx_int_t ngx_http_imgbill_date(ngx_http_request_t *r, char *name,
    time_t dflt, ngx_str_t *id);
static u_char *ngx_http_imgbill_ledger_page(u_char *p,
    ngx_http_imgbill_reply_t *reply);
static u_char *ngx_http_imgbill_ledger_json(u_char *p,
    ngx_http_imgbill_reply_t *reply);


/* imgbill_serve account|ledger|subscription|usage; no channel needed */

char *
ngx_http_imgbill_serve_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_imgbill_loc_conf_t *lcf = conf;

    char                      *rv;
    ngx_http_core_loc_conf_t  *clcf;

    rv = ngx_conf_set_enum_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (lcf->models == 1) {
        return "cannot share a location with \"imgbill_models\"";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_imgbill_serve_handler;

    return NGX_CONF_OK;
}


/* the query, checked before Redis is asked: a bad one is a 400 */

ngx_int_t
ngx_http_imgbill_serve_args(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_info_t *info)
{
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    ngx_memzero(info, sizeof(ngx_http_imgbill_info_t));

    info->serve = lcf->serve;
    ngx_str_set(&info->from, "-");
    ngx_str_set(&info->to, "+");

    switch (lcf->serve) {

    case NGX_HTTP_IMGBILL_SERVE_LEDGER:
        return ngx_http_imgbill_serve_ledger_args(r, ctx, info);

    case NGX_HTTP_IMGBILL_SERVE_USAGE:
        return ngx_http_imgbill_serve_usage_args(r, ctx, info);

    default:
        return NGX_OK;
    }
}


static ngx_int_t
ngx_http_imgbill_serve_ledger_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info)
{
    u_char     *p, *dash;
    ngx_int_t   n;
    ngx_str_t   arg;

    info->limit = NGX_HTTP_IMGBILL_LEDGER_LIMIT;

    if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n < 1 || n > NGX_HTTP_IMGBILL_LEDGER_MAX) {
            ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                       ngx_http_imgbill_err_request,
                                       "invalid_limit",
                                       "limit must be a whole number from "
                                       "1 to %d",
                                       NGX_HTTP_IMGBILL_LEDGER_MAX);
            return NGX_ERROR;
        }

        info->limit = n;
    }

    if (ngx_http_arg(r, (u_char *) "after", 5, &arg) != NGX_OK
        || arg.len == 0)
    {
        return NGX_OK;
    }

    /*
     * The cursor goes into the script: a stream id, two numbers of 64 bits
     * and a dash, written as Redis writes them (no leading zero), so that
     * "0-0", before every entry, is seen for the empty page it asks for.
     */

    dash = ngx_strlchr(arg.data, arg.data + arg.len, '-');

    for (p = arg.data; p < arg.data + arg.len; p++) {
        if (p != dash && (*p < '0' || *p > '9')) {
            break;
        }
    }

    if (p != arg.data + arg.len || dash == NULL
        || ngx_http_imgbill_id_part(arg.data, dash) != NGX_OK
        || ngx_http_imgbill_id_part(dash + 1, arg.data + arg.len) != NGX_OK)
    {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request,
                                   "invalid_cursor",
                                   "after must be a \"next\" value of an "
                                   "earlier page");
        return NGX_ERROR;
    }

    info->cursor = arg;

    return NGX_OK;
}


/* digits of a number of 64 bits, the first not a 0 unless it is alone */

static ngx_int_t
ngx_http_imgbill_id_part(u_char *p, u_char *last)
{
    static u_char  max[] = "18446744073709551615";

    if (p == last || (*p == '0' && last - p > 1)
        || last - p > (ssize_t) sizeof(max) - 1
        || (last - p == sizeof(max) - 1
            && ngx_memcmp(p, max, sizeof(max) - 1) > 0))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* OpenAI's usage takes whole UTC days: [start_date, end_date) */

static ngx_int_t
ngx_http_imgbill_serve_usage_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info)
{
    time_t     now;
    ngx_tm_t   tm;

    now = ngx_time();
    ngx_gmtime(now, &tm);

    /* by default this month, today included, as NextChat asks */

    if (ngx_http_imgbill_date(r, "start_date",
                              now - (tm.ngx_tm_mday - 1) * 86400
                              - now % 86400,
                              &info->from)
        != NGX_OK
        || ngx_http_imgbill_date(r, "end_date", now - now % 86400 + 86400,
                                 &info->to)
           != NGX_OK
        || ngx_atoi(info->from.data, info->from.len - 2)
           > ngx_atoi(info->to.data, info->to.len - 2))
    {
        ngx_http_imgbill_set_error(r, &ctx->error, NGX_HTTP_BAD_REQUEST,
                                   ngx_http_imgbill_err_request, "invalid_date",
                                   "start_date and end_date must be dates "
                                   "(YYYY-MM-DD), the start not after the "
                                   "end");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a date argument as the first stream id of its day, "<ms>-0" */

static ngx_int_t
ngx_http_imgbill_date(ngx_http_request_t *r, char *name, time_t dflt,
    ngx_str_t *id)
{
    u_char     *p;
    time_t      t;
    ngx_int_t   y, m, d;
    ngx_str_t   arg;

    t = dflt;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &arg) == NGX_OK) {
        p = arg.data;

        if (arg.len != 10 || p[4] != '-' || p[7] != '-') {
            return NGX_ERROR;
        }

        y = ngx_atoi(p, 4);
        m = ngx_atoi(p + 5, 2);
        d = ngx_atoi(p + 8, 2);

        if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31) {
            return NGX_ERROR;
        }

        t = ngx_http_imgbill_civil_day(y, m, d);
    }

    id->data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 5);
    if (id->data == NULL) {
        return NGX_ERROR;
    }

    id->len = ngx_sprintf(id->data, "%T000-0", t) - id->data;

    return NGX_OK;
}


/* the info command's answer, as the JSON body, while it is alive */

ngx_int_t
ngx_http_imgbill_serve_reply(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_reply_t *reply)
{
    u_char                       *p;
    size_t                        len;
    ngx_int_t                     available;
    ngx_http_imgbill_loc_conf_t  *lcf;

    len = 512 + 6 * ctx->account.len;

    if (reply->entries) {
        len += reply->nentries * NGX_HTTP_IMGBILL_ENTRY_LEN
               + 6 * ngx_http_imgbill_ledger_size(reply);
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->body = p;
    available = reply->balance - reply->held;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    switch (lcf->serve) {

    case NGX_HTTP_IMGBILL_SERVE_LEDGER:
        p = ngx_http_imgbill_ledger_page(p, reply);
        break;

    case NGX_HTTP_IMGBILL_SERVE_SUBSCRIPTION:

        /* what the apps show as the limit: what the key can still spend,
           in yuan, a JSON number as they parse it */

        p = ngx_cpymem(p, "{\"object\":\"billing_subscription\","
                          "\"has_payment_method\":true,\"soft_limit_usd\":",
                       sizeof("{\"object\":\"billing_subscription\","
                              "\"has_payment_method\":true,"
                              "\"soft_limit_usd\":") - 1);
        p = ngx_http_imgbill_format_money(p, available);
        p = ngx_cpymem(p, ",\"hard_limit_usd\":",
                       sizeof(",\"hard_limit_usd\":") - 1);
        p = ngx_http_imgbill_format_money(p, available);
        p = ngx_cpymem(p, ",\"system_hard_limit_usd\":",
                       sizeof(",\"system_hard_limit_usd\":") - 1);
        p = ngx_http_imgbill_format_money(p, available);
        p = ngx_cpymem(p, ",\"access_until\":0,\"currency\":\"CNY\"}",
                       sizeof(",\"access_until\":0,\"currency\":\"CNY\"}")
                       - 1);
        break;

    case NGX_HTTP_IMGBILL_SERVE_USAGE:

        /* hundredths of the currency, as OpenAI's "cents" */

        p = ngx_sprintf(p, "{\"object\":\"list\",\"total_usage\":%i.%02i,"
                           "\"currency\":\"CNY\"}",
                        reply->charged / 100, reply->charged % 100);
        break;

    default:
        p = ngx_cpymem(p, "{\"object\":\"account\",\"id\":\"",
                       sizeof("{\"object\":\"account\",\"id\":\"") - 1);
        p = (u_char *) ngx_escape_json(p, ctx->account.data,
                                       ctx->account.len);
        p = ngx_cpymem(p, "\",\"balance\":\"", sizeof("\",\"balance\":\"") - 1);
        p = ngx_http_imgbill_format_money(p, reply->balance);
        p = ngx_cpymem(p, "\",\"available\":\"",
                       sizeof("\",\"available\":\"") - 1);
        p = ngx_http_imgbill_format_money(p, available);
        p = ngx_cpymem(p, "\",\"held\":\"", sizeof("\",\"held\":\"") - 1);
        p = ngx_http_imgbill_format_money(p, reply->held);
        p = ngx_cpymem(p, "\",\"currency\":\"CNY\"}",
                       sizeof("\",\"currency\":\"CNY\"}") - 1);
        break;
    }

    *p++ = LF;
    ctx->last = p;

    return NGX_OK;
}


ngx_int_t
ngx_http_imgbill_serve_handler(ngx_http_request_t *r)
{
    ngx_buf_t               *b;
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_imgbill_get_ctx(r);

    /* the access phase lets nobody else through */
    if (ctx == NULL || ctx->state != ngx_http_imgbill_authorized
        || ctx->body == NULL)
    {
        return NGX_HTTP_FORBIDDEN;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = ctx->body;
    b->last = ctx->last;
    b->memory = 1;

    return ngx_http_imgbill_send_json(r, b);
}


/* a page of the ledger, and where the next one starts */

static u_char *
ngx_http_imgbill_ledger_page(u_char *p, ngx_http_imgbill_reply_t *reply)
{
    ngx_http_imgbill_entry_t  e;

    p = ngx_cpymem(p, "{\"object\":\"list\",\"data\":[",
                   sizeof("{\"object\":\"list\",\"data\":[") - 1);
    p = ngx_http_imgbill_ledger_json(p, reply);
    p = ngx_sprintf(p, "],\"has_more\":%s,\"next\":",
                    reply->more ? "true" : "false");

    if (reply->more && reply->nentries) {
        (void) ngx_http_imgbill_ledger_entry(reply, reply->nentries - 1, &e);
        p = ngx_sprintf(p, "\"%V\"", &e.id);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    *p++ = '}';

    return p;
}


/* the entries of XREVRANGE, newest first, as the API's objects */

static u_char *
ngx_http_imgbill_ledger_json(u_char *p, ngx_http_imgbill_reply_t *reply)
{
    ngx_uint_t                i, n;
    ngx_http_imgbill_entry_t  e;

    n = 0;

    for (i = 0; i < reply->nentries; i++) {
        if (ngx_http_imgbill_ledger_entry(reply, i, &e) != NGX_OK) {
            continue;
        }

        if (n++) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"id\":\"", sizeof("{\"id\":\"") - 1);

        if (e.request_id.len && !e.reversal) {
            p = (u_char *) ngx_escape_json(p, e.request_id.data,
                                           e.request_id.len);
        } else {
            p = ngx_cpymem(p, e.id.data, e.id.len);
        }

        p = ngx_sprintf(p, "\",\"created\":%i,\"type\":\"", e.ts);
        p = (u_char *) ngx_escape_json(p, e.type.data, e.type.len);
        *p++ = '"';

        if (e.reversal) {
            p = ngx_cpymem(p, ",\"request_id\":\"",
                           sizeof(",\"request_id\":\"") - 1);
            p = (u_char *) ngx_escape_json(p, e.request_id.data,
                                           e.request_id.len);
            *p++ = '"';

        } else if (e.request_id.len) {
            p = ngx_cpymem(p, ",\"channel\":\"", sizeof(",\"channel\":\"")
                                                 - 1);
            p = (u_char *) ngx_escape_json(p, e.channel.data, e.channel.len);
            p = ngx_cpymem(p, "\",\"model\":\"", sizeof("\",\"model\":\"")
                                                 - 1);
            p = (u_char *) ngx_escape_json(p, e.model.data, e.model.len);
            p = ngx_sprintf(p, "\",\"prompt_tokens\":%i,"
                               "\"completion_tokens\":%i,\"images\":%i",
                            e.prompt_tokens, e.completion_tokens, e.images);

            /* the API the client spoke, where the entry records it */

            if (e.api.len) {
                p = ngx_cpymem(p, ",\"api\":\"", sizeof(",\"api\":\"") - 1);
                p = (u_char *) ngx_escape_json(p, e.api.data, e.api.len);
                *p++ = '"';
            }

        } else {
            p = ngx_cpymem(p, ",\"reason\":\"", sizeof(",\"reason\":\"") - 1);
            p = (u_char *) ngx_escape_json(p, e.reason.data, e.reason.len);
            *p++ = '"';
        }

        /* the key that spent, or redeemed, where the entry records it */

        if (e.key.len) {
            p = ngx_cpymem(p, ",\"key\":\"", sizeof(",\"key\":\"") - 1);
            p = (u_char *) ngx_escape_json(p, e.key.data, e.key.len);
            *p++ = '"';
        }

        p = ngx_cpymem(p, ",\"amount\":\"", sizeof(",\"amount\":\"") - 1);
        p = ngx_http_imgbill_format_money(p, e.amount);
        p = ngx_cpymem(p, "\",\"balance\":\"", sizeof("\",\"balance\":\"") - 1);
        p = ngx_http_imgbill_format_money(p, e.balance);
        p = ngx_cpymem(p, "\"}", 2);
    }

    return p;
}


/* a civil date's midnight, UTC (H. Hinnant's days_from_civil) */

time_t
ngx_http_imgbill_civil_day(ngx_int_t y, ngx_int_t m, ngx_int_t d)
{
    y -= (m <= 2);

    return (time_t) (365 * y + y / 4 - y / 100 + y / 400
                     + (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
                     - 719468)
           * 86400;
}
