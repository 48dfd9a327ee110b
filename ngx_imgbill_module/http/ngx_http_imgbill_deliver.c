
/*
 * What of a stream reached its client, and what becomes of the stream when
 * the client leaves.
 *
 * An image that reached the client is paid for, and "reached" is what
 * nginx wrote to the connection, not what it queued: each buffer the
 * stream hands to the next filter is remembered with the output offset of
 * its end, and once the write filter (HTTP/2's frames, SSL) has moved its
 * pos to its last, it was written.  The byte that first showed an image
 * (see ngx_http_imgbill_scan_image()) has an output offset too: an image
 * is delivered once that byte was written.  An image half written is
 * delivered: its first bytes are the image's.
 *
 * A client that leaves after that is charged as if it had stayed: nothing
 * more is written, the upstream is read to its end (bounded by its read
 * timeout, as with proxy_ignore_client_abort), and the stream's end is
 * settled as usual.  Three things would close the upstream first, and the
 * stream stands in front of each: a write that fails (the body filter
 * answers NGX_OK instead), the client's close seen on its read event (the
 * upstream module's check is skipped), and the send timeout of a client
 * that stopped reading (taken as gone).  A client that leaves before that
 * byte was written pays nothing, and the upstream is closed at once.
 *
 * A stream that ends before its end is decided once, as its request is
 * freed: charged what it showed if its image reached the client, else
 * released, with a log line saying what it would have cost.
 */


#include "ngx_http_imgbill_stream.h"


static void ngx_http_imgbill_deliver_reading(ngx_http_request_t *r);
static void ngx_http_imgbill_deliver_writing(ngx_http_request_t *r);
static ngx_uint_t ngx_http_imgbill_deliver_at_stake(
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_deliver_written(ngx_http_imgbill_stream_t *st);
static void ngx_http_imgbill_deliver_drain(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);


/* the header went on: the upstream's check of a gone client is ours first */

void
ngx_http_imgbill_deliver_start(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st)
{
    st->image_at = -1;
    st->outs_last = &st->outs;

    st->read_handler = r->read_event_handler;
    r->read_event_handler = ngx_http_imgbill_deliver_reading;
}


/*
 * Every body filter call while the upstream sends: the upstream module set
 * its write handler after the header went through the filters, and its
 * send timeout is ours to see first.
 */

void
ngx_http_imgbill_deliver_watch(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st)
{
    if (r->write_event_handler != ngx_http_imgbill_deliver_writing) {
        st->write_handler = r->write_event_handler;
        r->write_event_handler = ngx_http_imgbill_deliver_writing;
    }
}


/* b goes to the next filter, at the end of the output so far */

ngx_int_t
ngx_http_imgbill_deliver_queue(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, ngx_buf_t *b)
{
    off_t                    size;
    ngx_http_imgbill_out_t  *o;

    size = b->last - b->pos;

    if (size == 0 || st->draining) {
        return NGX_OK;
    }

    o = st->outs_free;

    if (o) {
        st->outs_free = o->next;

    } else {
        o = ngx_palloc(r->pool, sizeof(ngx_http_imgbill_out_t));
        if (o == NULL) {
            return NGX_ERROR;
        }
    }

    st->queued += size;

    o->next = NULL;
    o->buf = b;
    o->last = b->last;
    o->end = st->queued;

    *st->outs_last = o;
    st->outs_last = &o->next;

    return NGX_OK;
}


/*
 * What was written: a buffer still as it was handed on, but for its pos,
 * is written up to its pos; one whose end changed went back to its owner
 * (ours, or the upstream's), which reuses a buffer only once it is empty.
 * No owner reuses a buffer before the body filter has seen it empty here:
 * the upstream module and the stream reuse theirs right after a call of
 * the body filter, which calls this after the next filter's.
 */

static void
ngx_http_imgbill_deliver_written(ngx_http_imgbill_stream_t *st)
{
    off_t                    at;
    ngx_buf_t               *b;
    ngx_http_imgbill_out_t  *o;

    while (st->outs) {
        o = st->outs;
        b = o->buf;

        if (b->last == o->last && b->pos < o->last) {
            at = o->end - (o->last - b->pos);

            if (at > st->written) {
                st->written = at;
            }

            return;
        }

        st->written = o->end;

        st->outs = o->next;
        o->next = st->outs_free;
        st->outs_free = o;
    }

    st->outs_last = &st->outs;
}


/* the first byte that showed an image was read at input offset "in" */

void
ngx_http_imgbill_deliver_image(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, off_t in)
{
    if (st->image_at >= 0) {
        return;
    }

    st->image_at = in + st->shift;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "imgbill: the stream's first image shows at its output "
                   "byte %O, %O queued", st->image_at, st->queued);
}


ngx_uint_t
ngx_http_imgbill_deliver_delivered(ngx_http_imgbill_stream_t *st)
{
    if (st->image_at < 0) {
        return 0;
    }

    if (!st->draining) {
        ngx_http_imgbill_deliver_written(st);
    }

    return st->written > st->image_at;
}


/*
 * The next filter had "out" and answered rc: what it wrote is taken in
 * now, before the buffers' owners may reuse what was written whole.  A
 * write that failed for a client gone after its image leaves the stream
 * draining: NGX_OK, so that the upstream goes on.  While it drains,
 * nothing is handed on: what would have gone out is taken as written, and
 * its owners may reuse it.
 */

ngx_int_t
ngx_http_imgbill_deliver_sent(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t *out, ngx_int_t rc)
{
    ngx_chain_t                *cl;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;

    if (!st->draining) {
        ngx_http_imgbill_deliver_written(st);

        if (rc != NGX_ERROR || !r->connection->error
            || !ngx_http_imgbill_deliver_delivered(st))
        {
            return rc;
        }

        ngx_http_imgbill_deliver_drain(r, ctx);
    }

    for (cl = out; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
    }

    return NGX_OK;
}


static void
ngx_http_imgbill_deliver_drain(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_out_t     *o;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;
    st->draining = 1;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "imgbill: the client of request %V left after %O of %O "
                  "bytes, its image among them: the upstream is read to "
                  "its end and the generation charged",
                  &ctx->request_id, st->written, st->queued);

    /* what was handed on and not written never will be */

    for (o = st->outs; o; o = o->next) {
        if (o->buf->last == o->last) {
            o->buf->pos = o->buf->last;
        }
    }

    *st->outs_last = st->outs_free;
    st->outs_free = st->outs;
    st->outs = NULL;
    st->outs_last = &st->outs;
}


/*
 * The client's read event while the upstream sends: a close the upstream
 * module would take for the end of the request.  Once the client has its
 * image, it is not: the stream reads on, and the next write says whether
 * the client is gone.
 */

static void
ngx_http_imgbill_deliver_reading(ngx_http_request_t *r)
{
    ngx_http_imgbill_ctx_t  *ctx;

    ctx = ngx_http_imgbill_get_ctx(r);

    if (ngx_http_imgbill_deliver_at_stake(ctx)
        && ngx_http_imgbill_deliver_delivered(ctx->stream))
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "imgbill: a read event of a client with its image");
        ngx_http_block_reading(r);
        return;
    }

    ctx->stream->read_handler(r);
}


/* a client that stopped reading after its image is taken as gone */

static void
ngx_http_imgbill_deliver_writing(ngx_http_request_t *r)
{
    ngx_event_t                *wev;
    ngx_http_imgbill_ctx_t     *ctx;
    ngx_http_imgbill_stream_t  *st;

    ctx = ngx_http_imgbill_get_ctx(r);
    st = ctx->stream;
    wev = r->connection->write;

    if (wev->timedout && ngx_http_imgbill_deliver_at_stake(ctx)
        && (st->draining || ngx_http_imgbill_deliver_delivered(st)))
    {
        wev->timedout = 0;

        if (!r->connection->error) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, NGX_ETIMEDOUT,
                          "imgbill: the client of request %V stopped "
                          "reading after its image", &ctx->request_id);

            r->connection->timedout = 1;
            r->connection->error = 1;
        }
    }

    st->write_handler(r);
}


/* whether a stream's money is still undecided: read, or settling */

static ngx_uint_t
ngx_http_imgbill_deliver_at_stake(ngx_http_imgbill_ctx_t *ctx)
{
    return ctx->state == ngx_http_imgbill_streaming
           || ctx->state == ngx_http_imgbill_settling;
}


/*
 * A stream that ends before its end (the upstream died, or was silent past
 * its read timeout; the worker stopped): free, unless an image of it
 * reached the client, and then charged what it showed, as its end would
 * have been.  NGX_OK if charged.  Decided once, as the request is freed
 * (its log phase, its pool cleanup: no reference to it is left), never
 * while it may still go on, whatever reads a $imgbill_* variable early.
 */

ngx_int_t
ngx_http_imgbill_stream_cut(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_scan_t     found;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;

    if (!st->cut && ctx->request->count == 0) {
        st->cut = 1;

        if (!st->error && ngx_http_imgbill_deliver_delivered(st)) {
            ngx_http_imgbill_stream_found(st, &found);
            (void) ngx_http_imgbill_charge(ctx->request, ctx, &found);

            if (ctx->charge) {
                ctx->charge_reason = ctx->request->connection->error
                                     ? ngx_http_imgbill_free_client_gone
                                     : ngx_http_imgbill_free_upstream_cut;
            }
        }
    }

    return ctx->charge ? NGX_OK : NGX_DECLINED;
}


/* the pool cleanup found the stream unfinished: why, and what it cost */

void
ngx_http_imgbill_stream_abandoned(ngx_http_imgbill_ctx_t *ctx)
{
    u_char                      buf[NGX_HTTP_IMGBILL_MONEY_LEN], *p;
    ngx_int_t                   charge;
    ngx_uint_t                  level, image;
    ngx_connection_t           *c;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;
    c = ctx->request->connection;

    if (ngx_http_imgbill_stream_cut(ctx) == NGX_OK) {
        p = ngx_http_imgbill_format_money(buf, ctx->charge);

        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "imgbill: the %s ended the stream of request %V of "
                      "account \"%V\" after %O bytes, %O of them written, "
                      "its image among them: charged %*s",
                      c->error ? "client" : "upstream", &ctx->request_id,
                      &ctx->account, st->bytes, st->written, p - buf, buf);
        return;
    }

    charge = ngx_http_imgbill_stream_worth(ctx);

    p = buf;

    if (charge >= 0) {
        p = ngx_http_imgbill_format_money(buf, charge);
    }

    /* an image made is an upstream bill: at "error", which Debian shows */

    image = st->image || st->sse.scan.image;
    level = image ? NGX_LOG_ERR : NGX_LOG_WARN;

    ngx_log_error(level, c->log, 0,
                  "imgbill: the %s ended the stream of request %V of "
                  "account \"%V\" after %O bytes, %s; it would have cost "
                  "%*s; not charged, hold released",
                  c->error ? "client" : "upstream",
                  &ctx->request_id, &ctx->account, st->bytes,
                  st->finished_events
                  ? (image ? "before an image was finished, after a "
                             "partial one" : "before any image")
                  : image ? "before its image reached the client"
                          : "before any image",
                  charge >= 0 ? (size_t) (p - buf) : sizeof("unknown") - 1,
                  charge >= 0 ? buf : (u_char *) "unknown");
}


/*
 * What the stream read so far is worth, as its end would have billed it
 * (the upstream's bill for it), by the one charge function; -1 while
 * that is unknown: no image yet, or a metered stream without its usage
 * yet.
 */

ngx_int_t
ngx_http_imgbill_stream_worth(ngx_http_imgbill_ctx_t *ctx)
{
    ngx_http_imgbill_bill_t     bill;
    ngx_http_imgbill_scan_t     found;
    ngx_http_imgbill_stream_t  *st;

    st = ctx->stream;

    if (st == NULL || st->error) {
        return -1;
    }

    ngx_http_imgbill_stream_found(st, &found);
    ngx_http_imgbill_billing(ctx->request, ctx, &found, 0, &bill);

    return bill.charge ? bill.charge : -1;
}


/*
 * What the stream showed so far, as a whole reply's findings: every choice
 * that showed an image counts once, however many events it took, the
 * event being read included (a stream may end inside it); or every
 * finished event, where those are the images.
 */

void
ngx_http_imgbill_stream_found(ngx_http_imgbill_stream_t *st,
    ngx_http_imgbill_scan_t *found)
{
    uint64_t                     bits;
    ngx_http_imgbill_scanner_t  *s;

    s = &st->sse.scan;

    ngx_memzero(found, sizeof(ngx_http_imgbill_scan_t));

    found->json = 1;
    found->image = st->image | s->image;
    found->usage = st->usage;
    found->prompt_tokens = st->prompt_tokens;
    found->completion_tokens = st->completion_tokens;

    /* images that are finished events: only those that ended count */

    if (st->finished_events) {
        found->images = st->finished;
        found->usage = st->usage && !st->usage_lost;
        found->image_tokens = st->image_tokens;
        return;
    }

    bits = st->indexes | s->indexes;

    if (s->in_choice && s->choice_image) {
        bits |= (uint64_t) 1 << s->choice_index;
    }

    for ( /* void */ ; bits; bits &= bits - 1) {
        found->images++;
    }
}
