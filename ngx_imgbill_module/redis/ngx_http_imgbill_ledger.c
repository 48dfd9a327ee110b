
/*
 * imgbill: an account's ledger as the info command returns it, the
 * entries of its stream (XREVRANGE), newest first, read one at a time
 * while the command's handler runs: their strings stay in the reply.
 */


#include "ngx_http_imgbill_redis_int.h"


/* a stream id: "<ms>-<seq>" */
#define NGX_HTTP_IMGBILL_STREAM_ID_MAX    41


static ngx_int_t ngx_http_imgbill_ledger_field(ngx_http_imgbill_entry_t *e,
    ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_imgbill_ledger_check(ngx_http_imgbill_entry_t *e);
static ngx_int_t ngx_http_imgbill_signed(ngx_str_t *s);


/*
 * The i-th entry: {id, {field, value, ...}}.  NGX_DECLINED for one that
 * cannot be read, which is left out rather than shown wrong.
 */

ngx_int_t
ngx_http_imgbill_ledger_entry(ngx_http_imgbill_reply_t *reply, ngx_uint_t i,
    ngx_http_imgbill_entry_t *entry)
{
    ngx_str_t    name, value;
    ngx_uint_t   j;
    redisReply  *e, *f;

    e = ((redisReply *) reply->entries)->element[i];

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
        return NGX_DECLINED;
    }

    entry->id.data = (u_char *) e->element[0]->str;
    entry->id.len = e->element[0]->len;

    f = e->element[1];

    for (j = 0; j + 1 < f->elements; j += 2) {
        if (f->element[j]->type != REDIS_REPLY_STRING
            || f->element[j + 1]->type != REDIS_REPLY_STRING)
        {
            return NGX_DECLINED;
        }

        name.data = (u_char *) f->element[j]->str;
        name.len = f->element[j]->len;
        value.data = (u_char *) f->element[j + 1]->str;
        value.len = f->element[j + 1]->len;

        (void) ngx_http_imgbill_ledger_field(entry, &name, &value);
    }

    return ngx_http_imgbill_ledger_check(entry);
}


/* the bytes the entries' values take, which a caller escapes */

size_t
ngx_http_imgbill_ledger_size(ngx_http_imgbill_reply_t *reply)
{
    size_t       len;
    ngx_uint_t   i, j;
    redisReply  *e, *f;

    len = 0;

    for (i = 0; i < reply->nentries; i++) {
        e = ((redisReply *) reply->entries)->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        f = e->element[1];

        for (j = 1; j < f->elements; j += 2) {
            if (f->element[j]->type == REDIS_REPLY_STRING) {
                len += f->element[j]->len;
            }
        }
    }

    return len;
}


/* a field the ledger names; others are left for later versions */

static ngx_int_t
ngx_http_imgbill_ledger_field(ngx_http_imgbill_entry_t *e, ngx_str_t *name,
    ngx_str_t *value)
{
#define ngx_http_imgbill_field(s)                                            \
    (name->len == sizeof(s) - 1 && ngx_strncmp(name->data, s, name->len) == 0)

    if (ngx_http_imgbill_field("type")) {
        e->type = *value;

    } else if (ngx_http_imgbill_field("request_id")) {
        e->request_id = *value;

    } else if (ngx_http_imgbill_field("channel")) {
        e->channel = *value;

    } else if (ngx_http_imgbill_field("model")) {
        e->model = *value;

    } else if (ngx_http_imgbill_field("api")) {
        e->api = *value;

    } else if (ngx_http_imgbill_field("key")) {
        e->key = *value;

    } else if (ngx_http_imgbill_field("reason")) {
        e->reason = *value;

    } else if (ngx_http_imgbill_field("ts")) {
        e->ts = ngx_atoi(value->data, value->len);

    } else if (ngx_http_imgbill_field("prompt_tokens")) {
        e->prompt_tokens = ngx_atoi(value->data, value->len);

    } else if (ngx_http_imgbill_field("completion_tokens")) {
        e->completion_tokens = ngx_atoi(value->data, value->len);

    } else if (ngx_http_imgbill_field("images")) {
        e->images = ngx_atoi(value->data, value->len);

    } else if (ngx_http_imgbill_field("charge")) {
        /* a charge may predate "amount": its amount is minus its charge */
        e->amount = ngx_atoi(value->data, value->len);
        e->amount = (e->amount == NGX_ERROR) ? NGX_ERROR : -e->amount;

    } else if (ngx_http_imgbill_field("amount")) {
        e->amount = ngx_http_imgbill_signed(value);

    } else if (ngx_http_imgbill_field("balance_after")) {
        e->balance = ngx_http_imgbill_signed(value);

    } else {
        return NGX_DECLINED;
    }

#undef ngx_http_imgbill_field

    return NGX_OK;
}


/*
 * A charge may predate the "type" field; only a charge has a request, and
 * a reversal, the request whose charge it gives back.
 */

static ngx_int_t
ngx_http_imgbill_ledger_check(ngx_http_imgbill_entry_t *e)
{
    if (e->amount == NGX_ERROR || e->balance == NGX_ERROR
        || e->ts == NGX_ERROR)
    {
        return NGX_DECLINED;
    }

    if (e->type.len == sizeof("reversal") - 1
        && ngx_strncmp(e->type.data, "reversal", e->type.len) == 0)
    {
        e->reversal = 1;

    } else if (!(e->type.len == sizeof("charge") - 1
                 && ngx_strncmp(e->type.data, "charge", e->type.len) == 0))
    {
        e->request_id.len = 0;

    } else if (e->request_id.len == 0
               || e->prompt_tokens == NGX_ERROR
               || e->completion_tokens == NGX_ERROR
               || e->images == NGX_ERROR)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
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
