
/*
 * Between the two files of a streamed reply: ngx_http_imgbill_stream.c
 * reads its events and decides what goes out, ngx_http_imgbill_deliver.c
 * knows what of that was written to the client, and what becomes of the
 * stream when the client leaves or the upstream dies.
 */


#ifndef _NGX_HTTP_IMGBILL_STREAM_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_STREAM_H_INCLUDED_


#include "ngx_http_imgbill_ctx.h"
#include "ngx_http_imgbill_sse.h"


/* a buffer handed to the next filter, until it is known written */
typedef struct ngx_http_imgbill_out_s  ngx_http_imgbill_out_t;

struct ngx_http_imgbill_out_s {
    ngx_http_imgbill_out_t         *next;
    ngx_buf_t                      *buf;
    u_char                         *last;      /* buf->last when handed on */
    off_t                           end;       /* its output offset */
};


struct ngx_http_imgbill_stream_s {
    ngx_http_imgbill_sse_t          sse;

    /* the held bytes: the tail (from a usage chunk on), then the event
       being read */
    u_char                         *hold;
    size_t                          len;
    size_t                          size;
    size_t                          event_at;
    size_t                          cost_at;   /* 0: nowhere */

    ngx_chain_t                    *free;
    ngx_chain_t                    *busy;

    /* an image's bytes gathered for one write a turn (ngx_http_imgbill_
       stream.c), and the event that writes them when the turn ends */
    ngx_buf_t                      *gather;
    ngx_event_t                     flush;

    off_t                           bytes;     /* of the stream, read */
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
    uint64_t                        indexes;   /* choices that showed an
                                                  image, by index */
    ngx_int_t                       image_tokens;  /* of the prompt; -1:
                                                      not told apart */
    ngx_uint_t                      finished;  /* finished events, where
                                                  they are the images */

    /* what reached the client: the output is the input less what was
       dropped (shift) */
    off_t                           queued;    /* handed on */
    off_t                           written;   /* of it, written */
    off_t                           shift;
    off_t                           image_at;  /* the output byte that
                                                  first showed an image;
                                                  -1: none yet */
    ngx_http_imgbill_out_t         *outs;      /* oldest first */
    ngx_http_imgbill_out_t        **outs_last;
    ngx_http_imgbill_out_t         *outs_free;

    /* the request's handlers the stream stands in front of */
    ngx_http_event_handler_pt       read_handler;
    ngx_http_event_handler_pt       write_handler;

    unsigned                        hold_events:1;
    unsigned                        finished_events:1;
    unsigned                        usage_lost:1;  /* a finished event
                                                      without a usage */
    unsigned                        passing:1;   /* the event being read */
    unsigned                        midway:1;    /* ... held from its
                                                    usage's '{' on */
    unsigned                        tail:1;
    unsigned                        image:1;
    unsigned                        usage:1;
    unsigned                        error:1;
    unsigned                        draining:1;  /* the client left after
                                                    an image: read on */
    unsigned                        cut:1;       /* decided, once: it
                                                    ended before its end */
    unsigned                        gathers:1;   /* unbuffered upstream */
};


/* ngx_http_imgbill_deliver.c */
void ngx_http_imgbill_deliver_start(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st);
void ngx_http_imgbill_deliver_watch(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st);
ngx_int_t ngx_http_imgbill_deliver_queue(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, ngx_buf_t *b);
void ngx_http_imgbill_deliver_image(ngx_http_request_t *r,
    ngx_http_imgbill_stream_t *st, off_t in);
ngx_uint_t ngx_http_imgbill_deliver_delivered(ngx_http_imgbill_stream_t *st);
ngx_int_t ngx_http_imgbill_deliver_sent(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t *out, ngx_int_t rc);
void ngx_http_imgbill_stream_found(ngx_http_imgbill_stream_t *st,
    ngx_http_imgbill_scan_t *found);


#endif /* _NGX_HTTP_IMGBILL_STREAM_H_INCLUDED_ */
