
/*
 * Header and body filters of an admitted request.
 *
 * The header is held back (as the image filter does) while the body is
 * collected (ngx_http_imgbill_spool.c keeps it, in memory or in a file)
 * and scanned as it comes; at the last buffer the charge is decided and
 * the settle script sent.  Until it answers the request stays open
 * through r->buffered: nginx's writer keeps calling the body filter, which
 * answers NGX_AGAIN.  The reply wakes the request's write event and the
 * next call emits the header, with the X-Imgbill-* headers, and the body.
 */


#include "ngx_http_imgbill_ctx.h"


static ngx_int_t ngx_http_imgbill_header_filter(ngx_http_request_t *r);
static void ngx_http_imgbill_upstream_error(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_imgbill_collect(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t *in);
static void ngx_http_imgbill_decide(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_uint_t ngx_http_imgbill_event_stream(ngx_http_request_t *r);
static ngx_uint_t ngx_http_imgbill_client_gone(ngx_http_request_t *r);
static void ngx_http_imgbill_unrecorded(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_unwritten(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_imgbill_settle_done(ngx_http_imgbill_reply_t *reply,
    void *data);
static ngx_uint_t ngx_http_imgbill_upstream_cut(ngx_http_request_t *r);
static ngx_int_t ngx_http_imgbill_cut(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_send(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_emit(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);


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

    if (ngx_http_imgbill_cors_headers(r) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx = ngx_http_imgbill_get_ctx(r);

    if (ctx == NULL || ctx->state != ngx_http_imgbill_admitted) {
        return ngx_http_next_header_filter(r);
    }

    /* what the upstream says under X-Imgbill-* is not ours to repeat */
    ngx_http_imgbill_strip_headers(&r->headers_out.headers, "x-imgbill-", 0);

    ctx->upstream_status = r->headers_out.status;

    /* a stream is read as one even where the client asked for none: the
       upstream's reply is what is billed */

    if (!r->header_only
        && ctx->upstream_status >= 200 && ctx->upstream_status < 300
        && ngx_http_imgbill_event_stream(r))
    {
        if (ngx_http_imgbill_stream_start(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_next_header_filter(r);
    }

    /* an upstream error, or a whole reply to a streamed request, is
       collected and billed as a whole reply */

    if (r->header_only) {
        /* no body will follow: nothing to bill */
        ngx_http_imgbill_release(ctx);
        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_released);

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

    } else {
        ctx->scanner = ngx_palloc(r->pool,
                                  sizeof(ngx_http_imgbill_scanner_t));
        if (ctx->scanner == NULL
            || ngx_http_imgbill_spool_start(r, ctx, len) != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_imgbill_scan_init(ctx->scanner, ctx->api->dialect);
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_collecting);

    /* the scanner reads memory; what later filters need is theirs to say
       once the header goes on */
    ctx->need_in_memory = r->main_filter_need_in_memory;
    r->main_filter_need_in_memory = 1;
    r->allow_ranges = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                rc;
    ngx_chain_t             *cl;
    ngx_http_imgbill_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_imgbill_module);

    if (ctx == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->stream) {
        return ngx_http_imgbill_stream_body(r, ctx, in,
                                            ngx_http_next_body_filter);
    }

    switch (ctx->state) {

    case ngx_http_imgbill_collecting:

        if (ctx->cut) {
            /* what comes after the 502 (nginx's flush, the writer's empty
               calls) goes down, for the 502 to be sent */
            for (cl = in; cl; cl = cl->next) {
                cl->buf->pos = cl->buf->last;
                cl->buf->file_pos = cl->buf->file_last;
            }

            return ngx_http_next_body_filter(r, NULL);
        }

        if (!ctx->whole) {
            rc = ngx_http_imgbill_collect(r, ctx, in);

            if (rc == NGX_AGAIN && ngx_http_imgbill_upstream_cut(r)) {
                return ngx_http_imgbill_cut(r, ctx);
            }

            if (rc != NGX_OK) {
                return rc;
            }

            /*
             * The charge is decided once the events this one came with
             * are handled: a client's FIN read in the same epoll_wait()
             * as the upstream's last bytes then has its connection
             * marked (ngx_http_test_reading()), and no socket needs to
             * be asked.  The writer brings the request back here.
             */
            ctx->whole = 1;
            r->buffered |= NGX_HTTP_IMGBILL_BUFFERED;
            ngx_post_event(r->connection->write, &ngx_posted_events);

            return NGX_AGAIN;
        }

        /* nothing follows a whole reply but nginx's empty calls */
        for (cl = in; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
        }

        ngx_http_imgbill_decide(r, ctx);

        if (ctx->charge > 0 && ngx_http_imgbill_client_gone(r)) {
            /*
             * Free, so nothing of the reply may go out: a client that only
             * shut its sending side could read the image.  nginx's own
             * check takes that for gone too, but only if it runs before
             * the reply is sent (not when the charge goes to the journal
             * at once).
             */
            r->connection->error = 1;
            ctx->charge = 0;
            ctx->free_reason = ngx_http_imgbill_free_client_gone;
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "imgbill: the client of request %V left before "
                          "its reply, not charged", &ctx->request_id);
        }

        if (ngx_http_imgbill_settle(r, ctx) == NGX_OK) {
            ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_settling);
            r->buffered |= NGX_HTTP_IMGBILL_BUFFERED;

            if (ctx->charge > 0) {
                ngx_http_imgbill_reverse_watch(r, ctx);
            }

            return NGX_AGAIN;
        }

        /* the image goes out all the same; the charge is journaled */

        /* fall through */

    case ngx_http_imgbill_emitting:

        return ngx_http_imgbill_emit(r, ctx);

    case ngx_http_imgbill_settling:

        return NGX_AGAIN;

    default:

        if (ctx->output) {
            return ngx_http_imgbill_spool_send(r, ctx, in,
                                               ngx_http_next_body_filter);
        }

        return ngx_http_next_body_filter(r, in);
    }
}


/* NGX_OK once the last buffer is in, NGX_AGAIN before */

static ngx_int_t
ngx_http_imgbill_collect(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_chain_t *in)
{
    size_t                        size;
    ngx_int_t                     rc;
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

        if (size == 0 || ctx->too_large || ctx->not_held) {
            b->pos = b->last;
            continue;
        }

        if ((off_t) size > (off_t) lcf->body_limit - ctx->held) {
            ctx->too_large = 1;
            b->pos = b->last;
            continue;
        }

        (void) ngx_http_imgbill_scan_feed(ctx->scanner, b->pos, b->last);

        rc = ngx_http_imgbill_spool_add(r, ctx, b->pos, size);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            ctx->not_held = 1;
        }

        b->pos = b->last;
    }

    if (!last) {
        return NGX_AGAIN;
    }

    if (!ctx->too_large && !ctx->not_held) {
        rc = ngx_http_imgbill_spool_end(r, ctx);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            ctx->not_held = 1;
        }
    }

    return NGX_OK;
}


static void
ngx_http_imgbill_decide(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_table_elt_t              *ce;
    ngx_http_imgbill_scan_t       scan;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    ctx->charge = 0;

    /* what the metrics say of any 502 of ours below */
    ctx->free_reason = ngx_http_imgbill_free_bad_response;

    if (ctx->too_large) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: upstream reply exceeds imgbill_body_limit "
                      "%uz, not charged", lcf->body_limit);
        ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_BAD_GATEWAY,
                                   ngx_http_imgbill_err_upstream,
                                   "upstream_response_too_large",
                                   "the upstream reply is too large to "
                                   "bill; nothing was charged");
        return;
    }

    if (ctx->not_held) {
        ngx_http_imgbill_set_error(r, &ctx->replace,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   ngx_http_imgbill_err_server,
                                   "reply_not_held",
                                   "the relay could not hold the reply; "
                                   "nothing was charged");
        return;
    }

    if (ctx->upstream_status < 200 || ctx->upstream_status >= 300) {
        /* the upstream's own error goes to the client as it is, free */
        ctx->free_reason = ngx_http_imgbill_free_upstream_error;
        ngx_http_imgbill_upstream_error(r, ctx);
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
                                   ngx_http_imgbill_err_upstream,
                                   "bad_upstream_response",
                                   "the upstream reply cannot be read; "
                                   "nothing was charged");
        return;
    }

    ngx_http_imgbill_scan_finish(ctx->scanner, &scan);

    if (!scan.json) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: upstream %ui reply of %O bytes is not a "
                      "JSON object, not charged",
                      ctx->upstream_status, ctx->held);
        ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_BAD_GATEWAY,
                                   ngx_http_imgbill_err_upstream,
                                   "bad_upstream_response",
                                   "the upstream reply is not valid JSON; "
                                   "nothing was charged");
        return;
    }

    (void) ngx_http_imgbill_charge(r, ctx, &scan);
}


/*
 * An error the client should not see as it came: nginx's own HTML page
 * for an upstream it could not reach or read (the cause is in error.log
 * already), a JSON 502 or 504; the upstream's 401 or 403, which refuses
 * the relay's own key, not the client's: the operator's to fix, so it is
 * said to the operator, a 502; a reply that is no JSON (an http:// URL to
 * an HTTPS upstream, a proxy's page), the same status if a client error,
 * else a 502.  All in the API's shape; free either way.
 */

static void
ngx_http_imgbill_upstream_error(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_uint_t                status;
    ngx_http_upstream_t      *u;
    ngx_http_imgbill_scan_t   scan;

    u = r->upstream;

    if (u == NULL) {
        /* never relayed (an access rule of nginx's refused it): nginx's
           own answer, free */
        return;
    }

    ngx_http_imgbill_scan_finish(ctx->scanner, &scan);

    if (u->headers_in.status_n == 0
        || (ngx_uint_t) u->headers_in.status_n != ctx->upstream_status)
    {
        /* nginx's page: no answer, or one it could not take (a timeout
           keeps its 504); an operator's own JSON error_page stays */

        if (scan.json) {
            return;
        }

        ngx_http_imgbill_set_error(r, &ctx->replace,
                                   ctx->upstream_status >= 500
                                   ? ctx->upstream_status
                                   : NGX_HTTP_BAD_GATEWAY,
                                   ngx_http_imgbill_err_upstream,
                                   "upstream_unavailable",
                                   "the upstream failed before it answered "
                                   "in full (unreachable, refused, timed "
                                   "out, or an answer nginx could not "
                                   "read); nothing was charged");
        return;
    }

    if (ctx->upstream_status == NGX_HTTP_UNAUTHORIZED
        || ctx->upstream_status == NGX_HTTP_FORBIDDEN)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: the upstream refused the relay's own key "
                      "(%ui): check the upstream key this location sends "
                      "(proxy_set_header); answered 502, not charged",
                      ctx->upstream_status);
        ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_BAD_GATEWAY,
                                   ngx_http_imgbill_err_upstream,
                                   "upstream_auth_failed",
                                   "the upstream refused the relay's "
                                   "credentials; nothing was charged");

        /* its challenge is to the relay, not to the client's key */
        if (r->headers_out.www_authenticate) {
            r->headers_out.www_authenticate->hash = 0;
            r->headers_out.www_authenticate = NULL;
        }

        return;
    }

    if (scan.json) {
        /* the upstream's own error, as it came */
        return;
    }

    /* a page that is no JSON: a client error keeps its status (a 429
       with its Retry-After is still one), a server error is a 502 */

    status = (ctx->upstream_status >= 400 && ctx->upstream_status < 500)
             ? ctx->upstream_status : NGX_HTTP_BAD_GATEWAY;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "imgbill: upstream %ui reply of %O bytes is not a JSON "
                  "object (an http:// proxy_pass to an HTTPS upstream? a "
                  "proxy's own page?): answered %ui, not charged",
                  ctx->upstream_status, ctx->held, status);
    ngx_http_imgbill_set_error(r, &ctx->replace, status,
                               ngx_http_imgbill_err_upstream,
                               "bad_upstream_response",
                               "the upstream failed with a reply that is "
                               "not JSON (%ui); nothing was charged",
                               ctx->upstream_status);
}


/*
 * What findings cost by the location's tariff and the request's hold
 * (ngx_http_imgbill_bill()); delivered: an image of them reached the
 * client as it came (a stream).  A call priced once is one result,
 * however many it gave.
 */

void
ngx_http_imgbill_billing(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_scan_t *found, ngx_uint_t delivered,
    ngx_http_imgbill_bill_t *bill)
{
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    if (ctx->once && found->images > 1) {
        found->images = 1;
    }

    ngx_http_imgbill_bill(&lcf->tariff, ctx->channel, ctx->price, ctx->hold,
                          found, delivered, bill);
}


/*
 * What a reply's findings cost, into ctx->charge: a whole reply's, or a
 * stream's (its images anywhere, its last usage), with what the operator
 * should hear of it.
 */

ngx_int_t
ngx_http_imgbill_charge(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_scan_t *scan)
{
    ngx_http_imgbill_bill_t       bill;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    ngx_http_imgbill_billing(r, ctx, scan, ctx->stream != NULL, &bill);

    ctx->charge = bill.charge;
    ctx->images = bill.images;
    ctx->prompt_tokens = bill.prompt_tokens;
    ctx->completion_tokens = bill.completion_tokens;

    switch (bill.billed) {

    case ngx_http_imgbill_billed_no_image:
        ctx->free_reason = ngx_http_imgbill_free_no_image;
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "imgbill: no image in the reply of request %V, "
                      "not charged", &ctx->request_id);
        return NGX_OK;

    case ngx_http_imgbill_billed_no_usage:
        /* at "error": Debian's default level shows what costs money */
        ctx->free_reason = ngx_http_imgbill_free_no_usage;
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: metered reply of request %V without a "
                      "usable usage, not charged", &ctx->request_id);
        return NGX_OK;

    case ngx_http_imgbill_billed_fallback:

        /*
         * A stream hands its image over as it comes: an image it showed
         * reached the client, or does with the stream's end.  Paid for,
         * by the location's rule, since the usage says nothing.
         */

        ctx->charge_reason = ngx_http_imgbill_free_no_usage;
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: metered stream of request %V without a "
                      "usable usage after its image: charged %i units by "
                      "imgbill_usage_fallback %s", &ctx->request_id,
                      bill.charge,
                      lcf->tariff.usage_fallback
                      == NGX_HTTP_IMGBILL_FALLBACK_HOLD
                      ? "hold" : "max_output");
        break;

    default: /* ngx_http_imgbill_billed */
        break;
    }

    if (bill.capped) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: a reply of %ui image(s) and %i + %i tokens "
                      "of \"%V\" would cost %i units, more than the %i held "
                      "for %ui image(s); charging the hold (is max_output "
                      "too low?)", scan->images, scan->prompt_tokens,
                      scan->completion_tokens, &ctx->model, bill.cost,
                      ctx->hold, ctx->images_asked);
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_imgbill_settle(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_settle_t   s;
    ngx_http_imgbill_store_t   *store;

    store = ngx_http_imgbill_store(r);

    ctx->settled_at = ngx_time();
    ngx_http_imgbill_settlement(ctx, &s);

    ctx->cmd = ngx_http_imgbill_script_settle(store, &s,
                                              ngx_http_imgbill_settle_done,
                                              ctx);
    if (ctx->cmd) {
        return NGX_OK;
    }

    ctx->settle_failed = 1;

    if (ngx_http_imgbill_journal_settle(store, r->connection->log, &s)
        != NGX_OK)
    {
        ngx_http_imgbill_unrecorded(r, ctx);
    }

    return NGX_ERROR;
}


static void
ngx_http_imgbill_settle_done(ngx_http_imgbill_reply_t *reply, void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    u_char                     buf[NGX_HTTP_IMGBILL_MONEY_LEN], *p;
    ngx_http_request_t        *r;
    ngx_http_imgbill_settle_t  s;

    r = ctx->request;
    ctx->cmd = NULL;

    if (reply->rc == NGX_HTTP_IMGBILL_REPLY_OK) {
        ctx->balance = reply->balance;
        ctx->balance_known = 1;

        if (!reply->status) {
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

        if (ngx_http_imgbill_journal_settle(ngx_http_imgbill_store(r),
                                            r->connection->log, &s)
            != NGX_OK)
        {
            ngx_http_imgbill_unrecorded(r, ctx);
        }
    }

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_emitting);

    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * Whether the upstream's reply ended before its length or its last chunk:
 * nginx then ends the request with an error, and has only a flush
 * through the filters before it does.  Buffered or not, as nginx's
 * upstream itself tells it.
 */

static ngx_uint_t
ngx_http_imgbill_upstream_cut(ngx_http_request_t *r)
{
    ngx_event_pipe_t     *p;
    ngx_connection_t     *c;
    ngx_http_upstream_t  *u;

    u = r->upstream;

    if (u == NULL) {
        return 0;
    }

    if (u->buffering) {
        p = u->pipe;

        return p && !p->upstream_done
               && (p->upstream_error || (p->upstream_eof && p->length != -1));
    }

    if (u->length == 0) {
        return 0;
    }

    /* nginx closes the upstream's connection before the flush: a reply
       still short of its end then was ended by an error */

    c = u->peer.connection;

    return c == NULL || u->error || c->read->error
           || (c->read->eof && u->length != -1);
}


/*
 * The reply is cut: nothing of it went out, so the client gets a JSON 502
 * in its place, and nginx closes the connection behind it.  The request
 * stays "collecting": its hold is released as any unfinished request's,
 * when nginx frees it.
 */

static ngx_int_t
ngx_http_imgbill_cut(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ctx->cut = 1;
    ctx->charge = 0;
    ctx->free_reason = ngx_http_imgbill_free_bad_response;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "imgbill: the upstream's %ui reply ended after %O bytes, "
                  "before its end; answered 502, not charged",
                  ctx->upstream_status, ctx->held);

    ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_BAD_GATEWAY,
                               ngx_http_imgbill_err_upstream,
                               "upstream_response_incomplete",
                               "the upstream reply was cut off; nothing "
                               "was charged");

    ctx->sent_before = r->connection->sent;

    return ngx_http_imgbill_send(r, ctx);
}


static ngx_int_t
ngx_http_imgbill_emit(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    r->buffered &= ~NGX_HTTP_IMGBILL_BUFFERED;
    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_passing);

    r->main_filter_need_in_memory = ctx->need_in_memory;

    /* asked again: the client may have left while the charge settled */

    if (ctx->charge > 0 && ngx_http_imgbill_client_gone(r)) {
        r->connection->error = 1;
        ngx_http_imgbill_reverse(r, ctx, "left while it was charged");
    }

    ctx->sent_before = r->connection->sent;

    return ngx_http_imgbill_send(r, ctx);
}


/* the reply, or what replaces it, with the charge's headers */

static ngx_int_t
ngx_http_imgbill_send(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

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
        b = ngx_http_imgbill_spool_buf(r, ctx);
        if (b == NULL) {
            return NGX_ERROR;
        }
    }

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    r->headers_out.content_length_n = ngx_buf_size(b);

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
        return ngx_http_imgbill_unwritten(r, ctx, rc);
    }

    out.buf = b;
    out.next = NULL;

    if (b->in_file) {
        rc = ngx_http_imgbill_spool_send(r, ctx, &out,
                                         ngx_http_next_body_filter);

    } else {
        rc = ngx_http_next_body_filter(r, &out);
    }

    return ngx_http_imgbill_unwritten(r, ctx, rc);
}


/*
 * Neither Redis nor the journal took the charge: nothing would ever make
 * the key holder pay it.  A whole reply is not released: the client gets
 * a 503, free, as when Redis is down at admission.  A stream's images
 * went out already: it ends without the charge, and the operator reads
 * what it owes in the alert.
 */

static void
ngx_http_imgbill_unrecorded(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    u_char  buf[NGX_HTTP_IMGBILL_MONEY_LEN], *p;

    if (ctx->charge <= 0) {
        return;
    }

    ctx->unrecorded = 1;
    p = ngx_http_imgbill_format_money(buf, ctx->charge);

    if (ctx->stream) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "imgbill: the charge %*s of request %V, account "
                      "\"%V\", could be recorded nowhere; its stream ends "
                      "without it: apply it by hand",
                      p - buf, buf, &ctx->request_id, &ctx->account);
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "imgbill: the charge %*s of request %V, account \"%V\", "
                  "could be recorded nowhere; its reply is withheld (503), "
                  "nothing charged", p - buf, buf, &ctx->request_id,
                  &ctx->account);

    /* a settle that timed out may still be applied once Redis reads it:
       its reversal goes after it, as far as it can */

    ngx_http_imgbill_reverse(r, ctx, "gets a 503 instead of its reply");
    ctx->free_reason = ngx_http_imgbill_free_unrecorded;

    ngx_http_imgbill_set_error(r, &ctx->replace, NGX_HTTP_SERVICE_UNAVAILABLE,
                               ngx_http_imgbill_err_server,
                               "billing_unavailable",
                               "the relay could not record the charge of "
                               "this request; nothing was charged, please "
                               "retry");
}


/*
 * The first write of a held reply failed with not a byte of it taken by
 * the socket (the client reset the connection): the image never left, its
 * charge goes back.  A write that waits (NGX_AGAIN) and fails later, and
 * bytes the kernel took for a client that is gone, stay charged.  An
 * HTTP/2 stream's bytes are not counted in its connection: a reset stream
 * is found by ngx_http_imgbill_client_gone().
 */

static ngx_int_t
ngx_http_imgbill_unwritten(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_int_t rc)
{
    if (rc == NGX_ERROR
        && ctx->charge > 0
        && r->connection->sent == ctx->sent_before
#if (NGX_HTTP_V2)
        && r->stream == NULL
#endif
        )
    {
        ngx_http_imgbill_reverse(r, ctx, "refused its reply's first write");
    }

    return rc;
}


static ngx_uint_t
ngx_http_imgbill_event_stream(ngx_http_request_t *r)
{
    ngx_str_t  *type;

    type = &r->headers_out.content_type;

    return type->len >= sizeof("text/event-stream") - 1
           && ngx_strncasecmp(type->data, (u_char *) "text/event-stream",
                              sizeof("text/event-stream") - 1) == 0;
}


/*
 * Whether the client left while its reply was held.  It is asked from a
 * posted event, after every event of its epoll_wait() was handled: a
 * client's FIN that came with the upstream's last bytes (which a busy
 * worker may read first) has set pending_eof by then, as nginx's own
 * broken-connection check reads it, at no system call.  Where the event
 * method reports no EOF, the socket is asked.  What remains is a FIN
 * within the microseconds since, and a client that leaves while its
 * reply is being written (a reply whose first bytes went out is paid
 * for).  On HTTP/2 a stream the client reset has its connection's error
 * set.
 */

static ngx_uint_t
ngx_http_imgbill_client_gone(ngx_http_request_t *r)
{
    int                n;
    char               buf[1];
    ngx_err_t          err;
    ngx_connection_t  *c;

    c = r->connection;

    if (c->error) {
        return 1;
    }

#if (NGX_HTTP_V2)
    if (r->stream) {
        return 0;
    }
#endif

#if (NGX_HAVE_KQUEUE)
    if (ngx_event_flags & NGX_USE_KQUEUE_EVENT) {
        return c->read->pending_eof || c->read->eof;
    }
#endif

#if (NGX_HAVE_EPOLLRDHUP)
    if ((ngx_event_flags & NGX_USE_EPOLL_EVENT) && ngx_use_epoll_rdhup) {
        return c->read->pending_eof || c->read->eof;
    }
#endif

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == 0) {
        return 1;
    }

    if (n == -1) {
        err = ngx_socket_errno;
        return err != NGX_EAGAIN && err != NGX_EINTR;
    }

    return 0;
}
