
/*
 * Header and body filters of an admitted request.
 *
 * The header is held back (as the image filter does) while the body is
 * collected; at the last buffer the reply is scanned, the charge decided
 * and the settle script sent.  Until it answers the request stays open
 * through r->buffered: nginx's writer keeps calling the body filter, which
 * answers NGX_AGAIN.  The reply wakes the request's write event and the
 * next call emits the header, with the X-Imgbill-* headers, and the body.
 *
 * The request pool's cleanup gives back a hold that was never settled:
 * the client went away, the upstream failed mid-reply, a later phase
 * finalized the request.
 */


#include "ngx_http_imgbill_module.h"


/* r->buffered has four bits; 0x08 is the image filter's, which never
   shares a location with an API relay */
#define NGX_HTTP_IMGBILL_BUFFERED     0x08

#define NGX_HTTP_IMGBILL_BODY_START   (64 * 1024)

/* what a command needs to finish its work after its request is gone */
typedef struct {
    ngx_http_imgbill_main_conf_t  *mcf;
    ngx_http_imgbill_settle_t      settle;
    u_char                         key_hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
} ngx_http_imgbill_orphan_t;


static ngx_int_t ngx_http_imgbill_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_imgbill_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_imgbill_collect(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t *in);
static void ngx_http_imgbill_decide(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_settle(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_settle_done(redisReply *reply, void *data);
static ngx_int_t ngx_http_imgbill_emit(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_money_header(ngx_http_request_t *r,
    char *name, ngx_int_t units);
static void ngx_http_imgbill_settlement(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_settle_t *s);
static void ngx_http_imgbill_release(ngx_http_imgbill_ctx_t *ctx);
static ngx_http_imgbill_orphan_t *ngx_http_imgbill_orphan(
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_orphan_admitted(redisReply *reply, void *data);
static void ngx_http_imgbill_orphan_settled(redisReply *reply, void *data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_http_imgbill_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_imgbill_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_imgbill_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_header_filter(ngx_http_request_t *r)
{
    off_t                         len;
    ngx_http_imgbill_ctx_t       *ctx;
    ngx_http_imgbill_loc_conf_t  *lcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_imgbill_get_ctx(r);

    if (ctx == NULL || ctx->state != ngx_http_imgbill_admitted) {
        return ngx_http_next_header_filter(r);
    }

    /* what the upstream says under X-Imgbill-* is not ours to repeat */
    ngx_http_imgbill_strip_headers(&r->headers_out.headers, 0);

    ctx->upstream_status = r->headers_out.status;

    if (r->header_only) {
        /* no body will follow: nothing to bill */
        ngx_http_imgbill_release(ctx);
        ctx->state = ngx_http_imgbill_released;

        if (ngx_http_imgbill_money_header(r, "X-Imgbill-Charge", 0) != NGX_OK
            || ngx_http_imgbill_add_header(r, "X-Imgbill-Request-Id",
                                           ctx->request_id.data,
                                           ctx->request_id.len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        return ngx_http_next_header_filter(r);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    len = r->headers_out.content_length_n;

    if (len > (off_t) lcf->body_limit) {
        ctx->too_large = 1;

    } else if (len > 0) {
        ctx->body = ngx_palloc(r->pool, (size_t) len);
        if (ctx->body == NULL) {
            return NGX_ERROR;
        }

        ctx->last = ctx->body;
        ctx->end = ctx->body + len;
    }

    ctx->state = ngx_http_imgbill_collecting;

    r->main_filter_need_in_memory = 1;
    r->allow_ranges = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                rc;
    ngx_http_imgbill_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_imgbill_module);

    if (ctx == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    switch (ctx->state) {

    case ngx_http_imgbill_collecting:

        rc = ngx_http_imgbill_collect(r, ctx, in);

        if (rc != NGX_OK) {
            return rc;
        }

        ngx_http_imgbill_decide(r, ctx);

        if (ngx_http_imgbill_settle(r, ctx) == NGX_OK) {
            ctx->state = ngx_http_imgbill_settling;
            r->buffered |= NGX_HTTP_IMGBILL_BUFFERED;
            return NGX_AGAIN;
        }

        /* the image goes out all the same; the charge is journaled */

        /* fall through */

    case ngx_http_imgbill_emitting:

        return ngx_http_imgbill_emit(r, ctx);

    case ngx_http_imgbill_settling:

        return NGX_AGAIN;

    default:

        return ngx_http_next_body_filter(r, in);
    }
}


/* NGX_OK once the last buffer is in, NGX_AGAIN before */

static ngx_int_t
ngx_http_imgbill_collect(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_chain_t *in)
{
    u_char                       *p;
    size_t                        size, need, have;
    ngx_buf_t                    *b;
    ngx_uint_t                    last;
    ngx_chain_t                  *cl;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            last = 1;
        }

        if (!ngx_buf_in_memory(b)) {
            if (ngx_buf_size(b)) {
                /* main_filter_need_in_memory should prevent this */
                ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                              "imgbill: file buffer in the reply");
                ctx->too_large = 1;
                b->file_pos = b->file_last;
            }

            continue;
        }

        size = b->last - b->pos;

        if (size == 0 || ctx->too_large) {
            b->pos = b->last;
            continue;
        }

        have = ctx->last - ctx->body;
        need = have + size;

        if (need > lcf->body_limit) {
            ctx->too_large = 1;
            b->pos = b->last;
            continue;
        }

        if (ctx->last + size > ctx->end) {

            /* no Content-Length, or a wrong one: grow by doubling */

            need = ngx_max(need, 2 * (size_t) (ctx->end - ctx->body));
            need = ngx_max(need, NGX_HTTP_IMGBILL_BODY_START);
            need = ngx_min(need, lcf->body_limit);

            p = ngx_palloc(r->pool, need);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (ctx->body) {
                ngx_memcpy(p, ctx->body, have);
                ngx_pfree(r->pool, ctx->body);
            }

            ctx->body = p;
            ctx->last = p + have;
            ctx->end = p + need;
        }

        ctx->last = ngx_cpymem(ctx->last, b->pos, size);
        b->pos = b->last;
    }

    return last ? NGX_OK : NGX_AGAIN;
}


static void
ngx_http_imgbill_decide(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_table_elt_t              *ce;
    ngx_http_imgbill_scan_t       scan;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    ctx->charge = 0;

    if (ctx->too_large) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: upstream reply exceeds imgbill_body_limit "
                      "%uz, not charged", lcf->body_limit);
        ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_BAD_GATEWAY,
                                   "upstream_error",
                                   "upstream_response_too_large",
                                   "the upstream reply is too large to "
                                   "bill; nothing was charged");
        return;
    }

    if (ctx->upstream_status < 200 || ctx->upstream_status >= 300) {
        /* the upstream's own error goes to the client as it is, free */
        return;
    }

    ce = r->headers_out.content_encoding;

    if (ce && ce->hash && !(ce->value.len == sizeof("identity") - 1
                            && ngx_strncasecmp(ce->value.data,
                                               (u_char *) "identity",
                                               ce->value.len) == 0))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: upstream reply is \"%V\" encoded; "
                      "set proxy_set_header Accept-Encoding \"\"",
                      &ce->value);
        ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_BAD_GATEWAY,
                                   "upstream_error", "bad_upstream_response",
                                   "the upstream reply cannot be read; "
                                   "nothing was charged");
        return;
    }

    ngx_http_imgbill_scan(ctx->body, ctx->last, &scan);

    if (!scan.json) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: upstream %ui reply of %uz bytes is not a "
                      "JSON object, not charged",
                      ctx->upstream_status, (size_t) (ctx->last - ctx->body));
        ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_BAD_GATEWAY,
                                   "upstream_error", "bad_upstream_response",
                                   "the upstream reply is not valid JSON; "
                                   "nothing was charged");
        return;
    }

    ctx->prompt_tokens = scan.prompt_tokens;
    ctx->completion_tokens = scan.completion_tokens;

    if (!scan.image) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "imgbill: no image in the reply, not charged");
        return;
    }

    if (ctx->channel == NGX_HTTP_IMGBILL_FAST) {
        ctx->charge = ctx->price->output;

    } else if (scan.usage) {
        ctx->charge = ngx_http_imgbill_metered_charge(ctx->price,
                                                      scan.prompt_tokens,
                                                      scan.completion_tokens);

    } else {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "imgbill: metered reply without a usable \"usage\", "
                      "not charged");
        return;
    }

    ctx->charge = ngx_max(ctx->charge, lcf->min_charge);

    /*
     * The hold is what admission reserved as the most this request can
     * cost, and what the gate let through.  A reply that claims more (an
     * upstream past max_output, a broken count) is billed the hold, so no
     * account is charged money the gate never saw.
     */

    if (ctx->charge > ctx->hold) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "imgbill: a reply of %i + %i tokens of \"%V\" would "
                      "cost %i units, more than the %i held; charging the "
                      "hold (is max_output too low?)",
                      scan.prompt_tokens, scan.completion_tokens,
                      &ctx->model, ctx->charge, ctx->hold);

        ctx->charge = ctx->hold;
    }
}


static ngx_int_t
ngx_http_imgbill_settle(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_settle_t      s;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    ngx_http_imgbill_settlement(ctx, &s);

    ctx->cmd = ngx_http_imgbill_redis_settle(mcf, &s,
                                             ngx_http_imgbill_settle_done,
                                             ctx);
    if (ctx->cmd) {
        return NGX_OK;
    }

    ctx->settle_failed = 1;
    ngx_http_imgbill_journal_settle(mcf, r->connection->log, &s);

    return NGX_ERROR;
}


static void
ngx_http_imgbill_settlement(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_settle_t *s)
{
    s->request_id = ctx->request_id;
    s->account = ctx->account;
    s->model = ctx->model;
    s->channel = ctx->channel;
    s->charge = ctx->charge;
    s->hold = ctx->hold;
    s->prompt_tokens = ctx->prompt_tokens;
    s->completion_tokens = ctx->completion_tokens;
}


static void
ngx_http_imgbill_settle_done(redisReply *reply, void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    u_char                     buf[NGX_HTTP_IMGBILL_MONEY_LEN], *p;
    ngx_int_t                  applied;
    ngx_http_request_t        *r;
    ngx_http_imgbill_settle_t  s;

    r = ctx->request;
    ctx->cmd = NULL;

    if (ngx_http_imgbill_redis_integer(reply, 0, &applied) == NGX_OK
        && ngx_http_imgbill_redis_integer(reply, 1, &ctx->balance) == NGX_OK)
    {
        ctx->balance_known = 1;

        if (!applied) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "imgbill: request %V was settled before, "
                          "not charged again", &ctx->request_id);
        }

    } else {
        ctx->settle_failed = 1;

        p = ngx_http_imgbill_format_money(buf, ctx->charge);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: settle of request %V failed, charge %*s "
                      "of account \"%V\" goes to the journal",
                      &ctx->request_id, p - buf, buf, &ctx->account);

        ngx_http_imgbill_settlement(ctx, &s);
        ngx_http_imgbill_journal_settle(
                      ngx_http_get_module_main_conf(r, ngx_http_imgbill_module),
                      r->connection->log, &s);
    }

    ctx->state = ngx_http_imgbill_emitting;

    ngx_post_event(r->connection->write, &ngx_posted_events);
}


static ngx_int_t
ngx_http_imgbill_emit(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->buffered &= ~NGX_HTTP_IMGBILL_BUFFERED;
    ctx->state = ngx_http_imgbill_passing;

    if (ctx->replace.status) {
        b = ngx_http_imgbill_error_body(r, &ctx->replace);
        if (b == NULL) {
            return NGX_ERROR;
        }

        r->headers_out.status = ctx->replace.status;
        r->headers_out.status_line.len = 0;

        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
        r->headers_out.charset.len = 0;

        if (r->headers_out.content_encoding) {
            r->headers_out.content_encoding->hash = 0;
            r->headers_out.content_encoding = NULL;
        }

        ngx_http_clear_last_modified(r);
        ngx_http_clear_etag(r);

    } else {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->pos = ctx->body;
        b->last = ctx->last;
        b->memory = (b->last > b->pos) ? 1 : 0;
        b->last_buf = 1;
    }

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    r->headers_out.content_length_n = b->last - b->pos;

    if (ngx_http_imgbill_money_header(r, "X-Imgbill-Charge", ctx->charge)
        != NGX_OK
        || (ctx->balance_known
            && ngx_http_imgbill_money_header(r, "X-Imgbill-Balance",
                                             ctx->balance)
               != NGX_OK)
        || ngx_http_imgbill_add_header(r, "X-Imgbill-Request-Id",
                                       ctx->request_id.data,
                                       ctx->request_id.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_next_header_filter(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}


static ngx_int_t
ngx_http_imgbill_money_header(ngx_http_request_t *r, char *name,
    ngx_int_t units)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_MONEY_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = ngx_http_imgbill_format_money(p, units);

    return ngx_http_imgbill_add_header(r, name, p, last - p);
}


void
ngx_http_imgbill_cleanup(void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    ngx_http_imgbill_orphan_t  *o;

    switch (ctx->state) {

    case ngx_http_imgbill_admitting:

        /* the reply may still place a hold: give it back when it comes */
        o = ngx_http_imgbill_orphan(ctx);
        ngx_http_imgbill_redis_rebind(ctx->cmd,
                                      o ? ngx_http_imgbill_orphan_admitted
                                        : NULL, o);
        break;

    case ngx_http_imgbill_admitted:
    case ngx_http_imgbill_collecting:

        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "imgbill: request %V ended unsettled, "
                      "releasing its hold", &ctx->request_id);

        ngx_http_imgbill_release(ctx);
        break;

    case ngx_http_imgbill_settling:

        /* the settle goes on without the request; if it fails, the
           journal keeps it */
        o = ngx_http_imgbill_orphan(ctx);
        ngx_http_imgbill_redis_rebind(ctx->cmd,
                                      o ? ngx_http_imgbill_orphan_settled
                                        : NULL, o);
        break;

    default:
        break;
    }
}


/* an unused hold goes back: a free settlement, journaled if it fails */

static void
ngx_http_imgbill_release(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_orphan_t     *o;
    ngx_http_imgbill_main_conf_t  *mcf;

    ctx->charge = 0;

    o = ngx_http_imgbill_orphan(ctx);
    if (o == NULL) {
        return;
    }

    mcf = o->mcf;

    if (ngx_http_imgbill_redis_release(mcf, &o->settle.account,
                                       &o->settle.request_id, o->settle.hold,
                                       ngx_http_imgbill_orphan_settled, o)
        == NULL)
    {
        ngx_http_imgbill_journal_settle(mcf, ngx_cycle->log, &o->settle);
        ngx_free(o);
    }
}


static ngx_http_imgbill_orphan_t *
ngx_http_imgbill_orphan(ngx_http_imgbill_ctx_t *ctx)
{
    u_char                     *p;
    ngx_http_imgbill_orphan_t  *o;

    o = ngx_alloc(sizeof(ngx_http_imgbill_orphan_t) + ctx->account.len
                  + ctx->request_id.len + ctx->model.len, ngx_cycle->log);
    if (o == NULL) {
        return NULL;
    }

    o->mcf = ngx_http_get_module_main_conf(ctx->request,
                                           ngx_http_imgbill_module);

    ngx_http_imgbill_settlement(ctx, &o->settle);
    ngx_memcpy(o->key_hash, ctx->key_hash, NGX_HTTP_IMGBILL_KEY_HASH_LEN);

    p = (u_char *) (o + 1);

    o->settle.account.data = p;
    p = ngx_cpymem(p, ctx->account.data, ctx->account.len);

    o->settle.request_id.data = p;
    p = ngx_cpymem(p, ctx->request_id.data, ctx->request_id.len);

    o->settle.model.data = p;
    ngx_memcpy(p, ctx->model.data, ctx->model.len);

    return o;
}


static void
ngx_http_imgbill_orphan_admitted(redisReply *reply, void *data)
{
    ngx_http_imgbill_orphan_t *o = data;

    ngx_int_t    status;
    redisReply  *acct;

    if (reply == NULL) {
        /* lost in flight: a hold may exist; only the key says whose */
        ngx_http_imgbill_journal_release(o->mcf, ngx_cycle->log,
                                         &o->settle.request_id, o->key_hash);
        ngx_free(o);
        return;
    }

    if (ngx_http_imgbill_redis_integer(reply, 0, &status) == NGX_OK
        && status == 1 && reply->elements == 4)
    {
        acct = reply->element[1];

        if (acct->type == REDIS_REPLY_STRING
            && acct->len <= NGX_HTTP_IMGBILL_ACCOUNT_MAX)
        {
            /* o's own copy of the account is empty: admission never
               came back to the request */
            o->settle.account.data = (u_char *) acct->str;
            o->settle.account.len = acct->len;

            if (ngx_http_imgbill_redis_release(o->mcf, &o->settle.account,
                                               &o->settle.request_id,
                                               o->settle.hold,
                                               ngx_http_imgbill_orphan_settled,
                                               o)
                != NULL)
            {
                return;             /* o goes with the release */
            }

            ngx_http_imgbill_journal_settle(o->mcf, ngx_cycle->log,
                                            &o->settle);
        }
    }

    ngx_free(o);
}


static void
ngx_http_imgbill_orphan_settled(redisReply *reply, void *data)
{
    ngx_http_imgbill_orphan_t *o = data;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_imgbill_journal_settle(o->mcf, ngx_cycle->log, &o->settle);
    }

    ngx_free(o);
}
