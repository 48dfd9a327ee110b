
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


#include "ngx_http_imgbill_module.h"


#define NGX_HTTP_IMGBILL_LEDGER_LIMIT     20
#define NGX_HTTP_IMGBILL_LEDGER_MAX       100

/* a stream id: "<ms>-<seq>" */
#define NGX_HTTP_IMGBILL_STREAM_ID_MAX    41

/* what one ledger entry takes besides its strings, escaped */
#define NGX_HTTP_IMGBILL_ENTRY_LEN        352


typedef struct {
    ngx_str_t                       id;
    ngx_str_t                       type;
    ngx_str_t                       request_id;
    ngx_str_t                       channel;
    ngx_str_t                       model;
    ngx_str_t                       reason;
    ngx_int_t                       ts;
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
    ngx_int_t                       images;
    ngx_int_t                       amount;
    ngx_int_t                       balance;
} ngx_http_imgbill_entry_t;


static ngx_int_t ngx_http_imgbill_serve_ledger_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info);
static ngx_int_t ngx_http_imgbill_id_part(u_char *p, u_char *last);
static ngx_int_t ngx_http_imgbill_serve_usage_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info);
static ngx_int_t ngx_http_imgbill_date(ngx_http_request_t *r, char *name,
    time_t dflt, ngx_str_t *id);
static u_char *ngx_http_imgbill_ledger_json(u_char *p, redisReply *entries);
static ngx_int_t ngx_http_imgbill_entry(redisReply *e,
    ngx_http_imgbill_entry_t *entry);
static ngx_int_t ngx_http_imgbill_signed(ngx_str_t *s);
static size_t ngx_http_imgbill_ledger_len(redisReply *entries);


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

        /* days from the civil date (H. Hinnant's algorithm) */

        y -= (m <= 2);
        t = (time_t) (365 * y + y / 4 - y / 100 + y / 400
                      + (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
                      - 719468)
            * 86400;
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
        len += ngx_http_imgbill_ledger_len(reply->entries);
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
        p = ngx_cpymem(p, "{\"object\":\"list\",\"data\":[",
                       sizeof("{\"object\":\"list\",\"data\":[") - 1);
        p = ngx_http_imgbill_ledger_json(p, reply->entries);
        p = ngx_sprintf(p, "],\"has_more\":%s,\"next\":",
                        reply->more ? "true" : "false");

        if (reply->more && reply->entries->elements) {
            p = ngx_sprintf(p, "\"%s\"",
                 reply->entries->element[reply->entries->elements - 1]
                     ->element[0]->str);

        } else {
            p = ngx_cpymem(p, "null", 4);
        }

        *p++ = '}';
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


/* the entries of XREVRANGE, newest first, as the API's objects */

static u_char *
ngx_http_imgbill_ledger_json(u_char *p, redisReply *entries)
{
    ngx_uint_t                i, n;
    ngx_http_imgbill_entry_t  e;

    n = 0;

    for (i = 0; i < entries->elements; i++) {
        if (ngx_http_imgbill_entry(entries->element[i], &e) != NGX_OK) {
            continue;
        }

        if (n++) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"id\":\"", sizeof("{\"id\":\"") - 1);

        if (e.request_id.len) {
            p = (u_char *) ngx_escape_json(p, e.request_id.data,
                                           e.request_id.len);
        } else {
            p = ngx_cpymem(p, e.id.data, e.id.len);
        }

        p = ngx_sprintf(p, "\",\"created\":%i,\"type\":\"", e.ts);
        p = (u_char *) ngx_escape_json(p, e.type.data, e.type.len);
        *p++ = '"';

        if (e.request_id.len) {
            p = ngx_cpymem(p, ",\"channel\":\"", sizeof(",\"channel\":\"")
                                                 - 1);
            p = (u_char *) ngx_escape_json(p, e.channel.data, e.channel.len);
            p = ngx_cpymem(p, "\",\"model\":\"", sizeof("\",\"model\":\"")
                                                 - 1);
            p = (u_char *) ngx_escape_json(p, e.model.data, e.model.len);
            p = ngx_sprintf(p, "\",\"prompt_tokens\":%i,"
                               "\"completion_tokens\":%i,\"images\":%i",
                            e.prompt_tokens, e.completion_tokens, e.images);

        } else {
            p = ngx_cpymem(p, ",\"reason\":\"", sizeof(",\"reason\":\"") - 1);
            p = (u_char *) ngx_escape_json(p, e.reason.data, e.reason.len);
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


/*
 * One entry: {id, {field, value, ...}}.  A charge may predate the "type"
 * field; its amount is minus its charge.  An entry that cannot be read
 * is left out rather than shown wrong.
 */

static ngx_int_t
ngx_http_imgbill_entry(redisReply *e, ngx_http_imgbill_entry_t *entry)
{
    ngx_str_t    name, value;
    ngx_uint_t   i;
    redisReply  *f;

    ngx_memzero(entry, sizeof(ngx_http_imgbill_entry_t));
    ngx_str_set(&entry->type, "charge");
    entry->images = 1;          /* a charge from before they were counted */
    entry->amount = NGX_ERROR;
    entry->balance = NGX_ERROR;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
        || e->element[0]->type != REDIS_REPLY_STRING
        || e->element[0]->len > NGX_HTTP_IMGBILL_STREAM_ID_MAX
        || e->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    entry->id.data = (u_char *) e->element[0]->str;
    entry->id.len = e->element[0]->len;

    f = e->element[1];

    for (i = 0; i + 1 < f->elements; i += 2) {
        if (f->element[i]->type != REDIS_REPLY_STRING
            || f->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            return NGX_ERROR;
        }

        name.data = (u_char *) f->element[i]->str;
        name.len = f->element[i]->len;
        value.data = (u_char *) f->element[i + 1]->str;
        value.len = f->element[i + 1]->len;

#define ngx_http_imgbill_field(s)                                            \
        (name.len == sizeof(s) - 1 && ngx_strncmp(name.data, s, name.len) == 0)

        if (ngx_http_imgbill_field("type")) {
            entry->type = value;

        } else if (ngx_http_imgbill_field("request_id")) {
            entry->request_id = value;

        } else if (ngx_http_imgbill_field("channel")) {
            entry->channel = value;

        } else if (ngx_http_imgbill_field("model")) {
            entry->model = value;

        } else if (ngx_http_imgbill_field("reason")) {
            entry->reason = value;

        } else if (ngx_http_imgbill_field("ts")) {
            entry->ts = ngx_atoi(value.data, value.len);

        } else if (ngx_http_imgbill_field("prompt_tokens")) {
            entry->prompt_tokens = ngx_atoi(value.data, value.len);

        } else if (ngx_http_imgbill_field("completion_tokens")) {
            entry->completion_tokens = ngx_atoi(value.data, value.len);

        } else if (ngx_http_imgbill_field("images")) {
            entry->images = ngx_atoi(value.data, value.len);

        } else if (ngx_http_imgbill_field("charge")) {
            entry->amount = ngx_atoi(value.data, value.len);
            entry->amount = (entry->amount == NGX_ERROR) ? NGX_ERROR
                                                         : -entry->amount;

        } else if (ngx_http_imgbill_field("amount")) {
            entry->amount = ngx_http_imgbill_signed(&value);

        } else if (ngx_http_imgbill_field("balance_after")) {
            entry->balance = ngx_http_imgbill_signed(&value);
        }

#undef ngx_http_imgbill_field
    }

    if (entry->amount == NGX_ERROR || entry->balance == NGX_ERROR
        || entry->ts == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    if (!(entry->type.len == sizeof("charge") - 1
          && ngx_strncmp(entry->type.data, "charge", entry->type.len) == 0))
    {
        entry->request_id.len = 0;

    } else if (entry->request_id.len == 0
               || entry->prompt_tokens == NGX_ERROR
               || entry->completion_tokens == NGX_ERROR
               || entry->images == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the most the entries can take as JSON, escapes included */

static size_t
ngx_http_imgbill_ledger_len(redisReply *entries)
{
    size_t       len;
    ngx_uint_t   i, j;
    redisReply  *e, *f;

    len = 0;

    for (i = 0; i < entries->elements; i++) {
        e = entries->element[i];
        len += NGX_HTTP_IMGBILL_ENTRY_LEN;

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        f = e->element[1];

        for (j = 1; j < f->elements; j += 2) {
            if (f->element[j]->type == REDIS_REPLY_STRING) {
                len += 6 * f->element[j]->len;
            }
        }
    }

    return len;
}


static ngx_int_t
ngx_http_imgbill_signed(ngx_str_t *s)
{
    ngx_int_t  n;

    if (s->len > 1 && s->data[0] == '-') {
        n = ngx_atoi(s->data + 1, s->len - 1);
        return (n == NGX_ERROR) ? NGX_ERROR : -n;
    }

    return ngx_atoi(s->data, s->len);
}
