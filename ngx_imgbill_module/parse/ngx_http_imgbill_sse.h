
/*
 * imgbill: the event-stream reader's interface.  It splits a stream
 * (text/event-stream) into its events and scans the data of each with
 * the reply scanner, so it needs nothing of nginx but its core types:
 * the unit checks and the fuzzer build it alone.
 */


#ifndef _NGX_HTTP_IMGBILL_SSE_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_SSE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_imgbill_scan.h"


/* what an event was */
#define NGX_HTTP_IMGBILL_EVENT_NONE   0   /* no data: a comment, an id */
#define NGX_HTTP_IMGBILL_EVENT_JSON   1   /* data, scanned: see res */
#define NGX_HTTP_IMGBILL_EVENT_DONE   2   /* "data: [DONE]" */


typedef struct {
    ngx_http_imgbill_scanner_t      scan;     /* of the current event */
    ngx_http_imgbill_dialect_t     *dialect;
    ngx_uint_t                      state;    /* where in a line */
    ngx_uint_t                      field;    /* bytes of "data:" matched */
    ngx_uint_t                      done;     /* bytes of "[DONE]" matched,
                                                 or more: not [DONE] */
    ngx_uint_t                      lines;    /* data lines of the event */
    size_t                          event;    /* its bytes so far */
    size_t                          fed;      /* its data bytes scanned */

    /* where the event's last data line starts, in the event and in what
       the scanner was fed: usage_at is mapped back through it */
    size_t                          line_at;
    size_t                          line_fed;

    unsigned                        cr:1;     /* a line ended with CR */

    /* the byte after the one that first showed an image of the event,
       if that was in the bytes of the last call; NULL otherwise */
    u_char                         *image;

    /* ... and the byte after the '{' of its top-level usage, alike */
    u_char                         *usage;

    /* the event that ended last */
    ngx_uint_t                      type;
    ngx_http_imgbill_scan_t         res;
    size_t                          usage_at;  /* in the event; 0: none */
} ngx_http_imgbill_sse_t;


void ngx_http_imgbill_sse_init(ngx_http_imgbill_sse_t *sse,
    ngx_http_imgbill_dialect_t *dialect);

/*
 * Reads from p up to last, and stops after the blank line that ends an
 * event: NGX_OK, *end just past it, the event in type, res and usage_at.
 * NGX_AGAIN: all was read (*end == last) and the event goes on.
 */
ngx_int_t ngx_http_imgbill_sse_feed(ngx_http_imgbill_sse_t *sse, u_char *p,
    u_char *last, u_char **end);

/* the stream ended: ends an event left without its blank line; NGX_OK if
   there was one */
ngx_int_t ngx_http_imgbill_sse_finish(ngx_http_imgbill_sse_t *sse);


#endif /* _NGX_HTTP_IMGBILL_SSE_H_INCLUDED_ */
