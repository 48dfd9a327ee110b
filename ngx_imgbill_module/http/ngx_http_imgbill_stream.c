
/*
 * A streamed reply (text/event-stream): OpenAI's chat completion chunks or
 * Gemini's streamGenerateContent events.
 *
 * The stream passes through as it comes.  An OpenAI event waits only for
 * its own end (it is usually one read), because the relay must see what
 * it is before the client does: the usage-only chunk the relay asked the
 * upstream for is dropped when the client did not ask for it, and the
 * usage chunk the client did ask for is held, with whatever follows it
 * ("[DONE]"), to carry "usage.cost".  An event longer than
 * NGX_HTTP_IMGBILL_EVENT_HOLD (an image) is no usage chunk: it goes out as
 * it comes.  Gemini's events carry no cost and wait for nothing.
 *
 * The end of the stream (its last buffer, with the charge in its
 * trailers) waits for the settlement, as a whole reply does.  A client
 * that leaves after its image is charged as if it had stayed, and one
 * that leaves before it pays nothing; a stream that never ends (the
 * upstream died) is charged by the pool cleanup if its image reached the
 * client, else released (ngx_http_imgbill_deliver.c).
 *
 * Under proxy_buffering off the upstream hands on each read as it comes,
 * a proxy_buffer_size at a time, and plain nginx writes each at once.
 * The bytes of an image passing through are gathered instead, and written
 * when NGX_HTTP_IMGBILL_GATHER of them are, before anything else goes, or
 * when the turn of the event loop that read them ends: one write, and one
 * wakeup of the client, for a turn's reads, not one a read, and no wait
 * beyond the turn (bench, 1.6 MB streams through 4 KB reads: 430 req/s
 * writing each read, 600 gathering, plain nginx 600).  Only while the
 * client takes everything it is given: behind a write that waits, the
 * upstream's own buffer goes on, and holds the upstream back.
 */


#include "ngx_http_imgbill_stream.h"


/* longer than any usage chunk; an event past it goes out as it comes */
#define NGX_HTTP_IMGBILL_EVENT_HOLD   (64 * 1024)
#define NGX_HTTP_IMGBILL_EVENT_START  4096

/* what one write of an image's bytes carries at most */
#define NGX_HTTP_IMGBILL_GATHER       (64 * 1024)

/* "cost": the charge in yuan as a JSON number, OpenRouter's convention */
#define NGX_HTTP_IMGBILL_COST_LEN                                           \
    (sizeof("\"cost\":,") - 1 + NGX_HTTP_IMGBILL_MONEY_LEN)


static ngx_int_t ngx_http_imgbill_stream_read(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_buf_t *b, ngx_chain_t ***ll);
static ngx_int_t ngx_http_imgbill_stream_hold(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, u_char *p, size_t n, ngx_chain_t ***ll);
static ngx_int_t ngx_http_imgbill_stream_event(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t ***ll);
static void ngx_http_imgbill_stream_finished(ngx_http_imgbill_stream_t *st,
    ngx_http_imgbill_scan_t *res);
static void ngx_http_imgbill_stream_end(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_int_t ngx_http_imgbill_stream_close(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t ***ll);
static ngx_int_t ngx_http_imgbill_stream_out(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, u_char *p, size_t n, ngx_chain_t ***ll);
static ngx_int_t ngx_http_imgbill_stream_link(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, ngx_buf_t *b, ngx_chain_t ***ll);
static ngx_chain_t *ngx_http_imgbill_stream_buf(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, size_t size);
static ngx_int_t ngx_http_imgbill_stream_gather(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, u_char *p, size_t n, ngx_chain_t ***ll);
static ngx_int_t ngx_http_imgbill_stream_gathered(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, ngx_chain_t ***ll);
static void ngx_http_imgbill_stream_flush(ngx_event_t *ev);
static void ngx_http_imgbill_stream_cleanup(void *data);


/* the reply is a stream: its header goes out now, its charge at its end */

ngx_int_t
ngx_http_imgbill_stream_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_imgbill_stream_t  *st;

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_imgbill_stream_t));
    if (st == NULL) {
        return NGX_ERROR;
    }

    ctx->stream = st;

    /* a buffering upstream hands on what it read in batches already */

    if (r->upstream && !r->upstream->buffering) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_imgbill_stream_cleanup;
        cln->data = &st->flush;

        st->flush.handler = ngx_http_imgbill_stream_flush;
        st->flush.data = r;
        st->flush.log = r->connection->log;
        st->gathers = 1;
    }

    ngx_http_imgbill_sse_init(&st->sse, ctx->api->dialect);

    st->hold_events = ctx->api->hold_events;
    st->finished_events = ctx->api->finished_events;
    st->passing = !st->hold_events;
    st->prompt_tokens = -1;
    st->completion_tokens = -1;
    st->image_tokens = -1;

    ngx_http_imgbill_deliver_start(r, st);

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);

    r->allow_ranges = 0;
    r->main_filter_need_in_memory = 1;

    /* chunked, even for a reply of known length: the charge is a trailer */
    r->expect_trailers = 1;

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_streaming);

    return ngx_http_imgbill_add_header(r, "X-Imgbill-Request-Id",
                                       ctx->request_id.data,
                                       ctx->request_id.len);
}


ngx_int_t
ngx_http_imgbill_stream_body(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t *in,
    ngx_http_output_body_filter_pt next)
{
    ngx_int_t                   rc;
    ngx_uint_t                  last;
    ngx_chain_t                *cl, *out, **ll;
    ngx_http_imgbill_stream_t  *st;

    if (ctx->state == ngx_http_imgbill_passing) {
        return next(r, in);
    }

    st = ctx->stream;
    out = NULL;
    ll = &out;
    last = 0;

    if (ctx->state == ngx_http_imgbill_streaming) {

        ngx_http_imgbill_deliver_watch(r, st);

        for (cl = in; cl; cl = cl->next) {
            if (cl->buf->last_buf) {
                last = 1;
            }

            if (ngx_http_imgbill_stream_read(r, ctx, cl->buf, &ll)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        /* the upstream's end, or no input: the client can take more, or
           the turn ended */

        if ((last || in == NULL)
            && ngx_http_imgbill_stream_gathered(r, st, &ll) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (last) {
            ngx_http_imgbill_stream_end(r, ctx);
        }
    }

    if (ctx->state == ngx_http_imgbill_emitting) {
        r->buffered &= ~NGX_HTTP_IMGBILL_BUFFERED;

        if (ngx_http_imgbill_stream_close(r, ctx, &ll) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    rc = st->draining ? NGX_OK : next(r, out);
    rc = ngx_http_imgbill_deliver_sent(r, ctx, out, rc);

    ngx_chain_update_chains(r->pool, &st->free, &st->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_imgbill_module);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (st->gather && st->gather->last > st->gather->pos) {
        r->connection->buffered |= NGX_HTTP_IMGBILL_BUFFERED;

        if (!st->flush.posted) {
            ngx_post_event(&st->flush, &ngx_posted_events);
        }
    }

    if (ctx->state == ngx_http_imgbill_settling) {
        r->buffered |= NGX_HTTP_IMGBILL_BUFFERED;
        return NGX_AGAIN;
    }

    return rc;
}


/* one buffer of the stream: its events read, its bytes passed or held */

static ngx_int_t
ngx_http_imgbill_stream_read(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_buf_t *b, ngx_chain_t ***ll)
{
    u_char                     *p, *start, *end;
    off_t                       in;
    ngx_int_t                   rc;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;

    if (!ngx_buf_in_memory(b)) {
        if (ngx_buf_size(b)) {
            /* main_filter_need_in_memory should prevent this */
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "imgbill: file buffer in a stream");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    in = st->bytes;
    start = b->pos;
    st->bytes += b->last - b->pos;
    p = b->pos;

    while (p < b->last) {
        rc = ngx_http_imgbill_sse_feed(&st->sse, p, b->last, &end);

        if (st->sse.image) {
            ngx_http_imgbill_deliver_image(r, st,
                                           in + (st->sse.image - start) - 1);
        }

        if (!st->passing
            && st->len + (end - p) > NGX_HTTP_IMGBILL_EVENT_HOLD)
        {
            /* no usage chunk is this long: what is held goes, as it is */

            if (ngx_http_imgbill_stream_out(r, st, st->hold, st->len, ll)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            st->len = 0;
            st->event_at = 0;
            st->tail = 0;
            st->cost_at = 0;
            st->passing = 1;
            st->midway = 0;
        }

        if (st->passing && st->finished_events && st->sse.usage) {

            /* a finished image's usage, after megabytes of it: what came
               before goes, the rest of the event waits to carry the cost */

            if (ngx_http_imgbill_stream_out(r, st, p, st->sse.usage - 1 - p,
                                            ll)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            p = st->sse.usage - 1;
            st->event_at = st->len;
            st->passing = 0;
            st->midway = 1;
        }

        if (!st->passing) {
            if (ngx_http_imgbill_stream_hold(r, st, p, end - p, ll)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (end == b->last && !b->last_buf && !b->last_in_chain) {

            /* the rest of the buffer goes as it is, or gathered while
               the client takes all it is given: a client that does not
               holds the upstream's buffer, and so the upstream, back */

            if (st->gathers && st->busy == NULL) {
                if (ngx_http_imgbill_stream_gather(r, st, p, b->last - p, ll)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                b->pos = b->last;

            } else {
                b->pos = p;

                if (ngx_http_imgbill_stream_link(r, st, b, ll) != NGX_OK) {
                    return NGX_ERROR;
                }
            }

            if (rc == NGX_OK
                && ngx_http_imgbill_stream_event(r, ctx, ll) != NGX_OK)
            {
                return NGX_ERROR;
            }

            return NGX_OK;

        } else if (ngx_http_imgbill_stream_out(r, st, p, end - p, ll)
                   != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (rc == NGX_OK
            && ngx_http_imgbill_stream_event(r, ctx, ll) != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = end;
    }

    b->pos = b->last;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_stream_hold(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, u_char *p, size_t n, ngx_chain_t ***ll)
{
    u_char  *hold;
    size_t   size;

    if (st->len + n > st->size) {
        size = ngx_max(st->size * 2, NGX_HTTP_IMGBILL_EVENT_START);
        size = ngx_max(size, st->len + n);

        hold = ngx_palloc(r->pool, size);
        if (hold == NULL) {
            return NGX_ERROR;
        }

        if (st->len) {
            ngx_memcpy(hold, st->hold, st->len);
        }

        if (st->hold) {
            ngx_pfree(r->pool, st->hold);
        }

        st->hold = hold;
        st->size = size;
    }

    ngx_memcpy(st->hold + st->len, p, n);
    st->len += n;

    return NGX_OK;
}


/* an event ended: what it says, and whether it goes, waits or is dropped */

static ngx_int_t
ngx_http_imgbill_stream_event(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t ***ll)
{
    ngx_http_imgbill_sse_t     *sse;
    ngx_http_imgbill_scan_t    *res;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;
    sse = &st->sse;
    res = &sse->res;

    if (sse->type == NGX_HTTP_IMGBILL_EVENT_JSON) {
        st->image |= res->image;
        st->indexes |= res->indexes;
        st->error |= res->error;

        /* the last usage wins: Google repeats a growing one on every
           chunk, and adding them would bill it many times over */

        if (st->finished_events) {
            ngx_http_imgbill_stream_finished(st, res);

        } else if (res->usage_key) {
            st->usage = res->usage;
            st->prompt_tokens = res->prompt_tokens;
            st->completion_tokens = res->completion_tokens;
        }
    }

    if (st->passing) {
        st->passing = !st->hold_events;
        return NGX_OK;
    }

    if (sse->type == NGX_HTTP_IMGBILL_EVENT_JSON && res->usage_key) {

        if (ctx->usage_added && res->no_choices) {
            /* the chunk imgbill asked for, not the client */
            st->shift -= st->len - st->event_at;
            st->len = st->event_at;
            return NGX_OK;
        }

        if (res->usage && sse->usage_at
            && (st->finished_events
                ? res->done
                : ctx->usage_asked && (res->no_choices || res->finished)))
        {
            /* maybe the last usage: it waits, to carry the cost (an
               event held from its usage's '{' on has it at 1) */

            if (ngx_http_imgbill_stream_out(r, st, st->hold, st->event_at,
                                            ll)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            st->len -= st->event_at;
            ngx_memmove(st->hold, st->hold + st->event_at, st->len);

            st->cost_at = st->midway ? 1 : sse->usage_at;
            st->tail = 1;
            st->event_at = st->len;
            st->midway = 0;
            return NGX_OK;
        }
    }

    st->midway = 0;

    if (st->tail) {
        st->event_at = st->len;
        return NGX_OK;
    }

    if (ngx_http_imgbill_stream_out(r, st, st->hold, st->len, ll) != NGX_OK) {
        return NGX_ERROR;
    }

    st->len = 0;
    st->event_at = 0;

    return NGX_OK;
}


/*
 * Where a stream's images are its finished events (the Images API's
 * "*.completed"), each is an image and carries that image's usage, the
 * input counted in the first: the usages add up.  One finished without a
 * usage leaves the stream's unknown.
 */

static void
ngx_http_imgbill_stream_finished(ngx_http_imgbill_stream_t *st,
    ngx_http_imgbill_scan_t *res)
{
    if (!res->done) {
        return;
    }

    st->finished++;

    if (!res->usage
        || res->prompt_tokens > NGX_HTTP_IMGBILL_TOKENS_MAX
                                - ngx_max(st->prompt_tokens, 0)
        || res->completion_tokens > NGX_HTTP_IMGBILL_TOKENS_MAX
                                    - ngx_max(st->completion_tokens, 0))
    {
        st->usage_lost = 1;
        return;
    }

    st->usage = 1;
    st->prompt_tokens = ngx_max(st->prompt_tokens, 0) + res->prompt_tokens;
    st->completion_tokens = ngx_max(st->completion_tokens, 0)
                            + res->completion_tokens;

    if (res->image_tokens >= 0) {
        st->image_tokens = ngx_max(st->image_tokens, 0) + res->image_tokens;
    }
}


/* the stream's last buffer came: what it costs, then the settlement */

static void
ngx_http_imgbill_stream_end(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_chain_t                *out, **ll;
    ngx_http_imgbill_scan_t     scan;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;

    /* an event without its blank line is an event all the same; what it
       leaves to send goes with the end */

    out = NULL;
    ll = &out;

    if (ngx_http_imgbill_sse_finish(&st->sse) == NGX_OK) {
        (void) ngx_http_imgbill_stream_event(r, ctx, &ll);
    }

    if (out) {
        /* held again behind the tail: sent by stream_close */
        for ( /* void */ ; out; out = out->next) {
            (void) ngx_http_imgbill_stream_hold(r, st, out->buf->pos,
                                               out->buf->last - out->buf->pos,
                                               &ll);
        }
    }

    ngx_http_imgbill_stream_found(st, &scan);

    ctx->upstream_status = r->headers_out.status;

    if (st->error) {
        ctx->charge = 0;
        ctx->free_reason = ngx_http_imgbill_free_error_event;
        ctx->prompt_tokens = st->prompt_tokens;
        ctx->completion_tokens = st->completion_tokens;

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "imgbill: the upstream sent an error in the stream "
                      "of request %V, not charged", &ctx->request_id);

    } else {
        (void) ngx_http_imgbill_charge(r, ctx, &scan);

        if (st->draining && ctx->charge) {
            ctx->charge_reason = ngx_http_imgbill_free_client_gone;
        }
    }

    if (ngx_http_imgbill_settle(r, ctx) == NGX_OK) {
        ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_settling);
        return;
    }

    /* the charge is journaled; the end goes out all the same */

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_emitting);
}


/* settled: the held end, the cost in it, the charge in the trailers */

static ngx_int_t
ngx_http_imgbill_stream_close(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t ***ll)
{
    u_char                     *p;
    ngx_buf_t                  *b;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;

    ngx_http_imgbill_set_state(ctx, ngx_http_imgbill_passing);

    /* a charge recorded nowhere is not told (the alert tells it) */

    if (st->tail && st->cost_at && st->cost_at <= st->len
        && !ctx->unrecorded)
    {
        if (ngx_http_imgbill_stream_out(r, st, st->hold, st->cost_at, ll)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_COST_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->pos = p;
        p = ngx_cpymem(p, "\"cost\":", sizeof("\"cost\":") - 1);
        p = ngx_http_imgbill_format_money(p, ctx->charge);
        *p++ = ',';
        b->last = p;
        b->memory = 1;

        if (ngx_http_imgbill_stream_link(r, st, b, ll) != NGX_OK) {
            return NGX_ERROR;
        }

        st->len -= st->cost_at;
        ngx_memmove(st->hold, st->hold + st->cost_at, st->len);
    }

    if (ngx_http_imgbill_stream_out(r, st, st->hold, st->len, ll) != NGX_OK) {
        return NGX_ERROR;
    }

    st->len = 0;

    if (!ctx->unrecorded
        && (ngx_http_imgbill_money_trailer(r, "X-Imgbill-Charge",
                                           ctx->charge)
            != NGX_OK
            || (ctx->balance_known
                && ngx_http_imgbill_money_trailer(r, "X-Imgbill-Balance",
                                                  ctx->balance)
                   != NGX_OK)))
    {
        return NGX_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last_buf = 1;

    return ngx_http_imgbill_stream_link(r, st, b, ll);
}


/* n bytes go out, copied into a buffer of the module's own */

static ngx_int_t
ngx_http_imgbill_stream_out(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, u_char *p, size_t n, ngx_chain_t ***ll)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (ngx_http_imgbill_stream_gathered(r, st, ll) != NGX_OK) {
        return NGX_ERROR;
    }

    if (n == 0) {
        return NGX_OK;
    }

    cl = ngx_http_imgbill_stream_buf(r, st,
                                     ngx_max(n, NGX_HTTP_IMGBILL_EVENT_START));
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;
    b->last = ngx_cpymem(b->pos, p, n);

    **ll = cl;
    *ll = &cl->next;

    return ngx_http_imgbill_deliver_queue(r, st, b);
}


/* b goes at the end of a chain being built */

static ngx_int_t
ngx_http_imgbill_stream_link(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, ngx_buf_t *b, ngx_chain_t ***ll)
{
    ngx_chain_t  *cl;

    if (ngx_http_imgbill_stream_gathered(r, st, ll) != NGX_OK) {
        return NGX_ERROR;
    }

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;
    **ll = cl;
    *ll = &cl->next;

    return ngx_http_imgbill_deliver_queue(r, st, b);
}


/* an empty buffer of the stream's own, of size bytes at least */

static ngx_chain_t *
ngx_http_imgbill_stream_buf(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = ngx_chain_get_free_buf(r->pool, &st->free);
    if (cl == NULL) {
        return NULL;
    }

    b = cl->buf;

    if (b->start == NULL || (size_t) (b->end - b->start) < size) {
        b->start = ngx_palloc(r->pool, size);
        if (b->start == NULL) {
            return NULL;
        }

        b->end = b->start + size;
    }

    b->pos = b->start;
    b->last = b->start;
    b->temporary = 1;
    b->flush = 1;
    b->tag = (ngx_buf_tag_t) &ngx_http_imgbill_module;

    return cl;
}


/* bytes of an image, to go out with the rest of the turn's */

static ngx_int_t
ngx_http_imgbill_stream_gather(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, u_char *p, size_t n, ngx_chain_t ***ll)
{
    size_t        k;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    while (n) {
        if (st->gather == NULL) {
            cl = ngx_http_imgbill_stream_buf(r, st, NGX_HTTP_IMGBILL_GATHER);
            if (cl == NULL) {
                return NGX_ERROR;
            }

            /* ngx_http_imgbill_stream_gathered() links it when it goes */
            st->gather = cl->buf;
            ngx_free_chain(r->pool, cl);
        }

        b = st->gather;

        k = ngx_min(n, (size_t) (b->end - b->last));
        b->last = ngx_cpymem(b->last, p, k);
        p += k;
        n -= k;

        if (b->last == b->end
            && ngx_http_imgbill_stream_gathered(r, st, ll) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* what was gathered goes on, before anything that came after it */

static ngx_int_t
ngx_http_imgbill_stream_gathered(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, ngx_chain_t ***ll)
{
    ngx_buf_t  *b;

    b = st->gather;

    if (b == NULL) {
        return NGX_OK;
    }

    st->gather = NULL;
    r->connection->buffered &= ~NGX_HTTP_IMGBILL_BUFFERED;

    if (b->last == b->pos) {
        return NGX_OK;
    }

    return ngx_http_imgbill_stream_link(r, st, b, ll);
}


/*
 * The turn that gathered bytes ended: they go as a write event would send
 * them, through the upstream's handler, which calls the body filters while
 * the connection is buffered and deals with what the write brings.
 */

static void
ngx_http_imgbill_stream_flush(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ev->data;
    c = r->connection;

    if (!(c->buffered & NGX_HTTP_IMGBILL_BUFFERED)) {
        return;
    }

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler(r);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_imgbill_stream_cleanup(void *data)
{
    ngx_event_t *ev = data;

    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }
}
