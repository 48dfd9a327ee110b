
/*
 * imgbill: a multipart/form-data body (RFC 7578) read as it streams in,
 * as the compactor reads JSON: fed one buffer at a time, a boundary split
 * anywhere, nothing of the body gathered.  Each part's headers are read
 * (its name, its filename, its type) and its bytes handed to the caller
 * as they come; what a field says is the caller's to keep, and a file's
 * bytes are only counted.  Nothing here needs more of nginx than its core
 * types, so the unit checks and the fuzzer build it alone.
 *
 * The body's reading is the one servers agree on: a preamble before the
 * first "--boundary", which may start the body; a delimiter is CRLF
 * "--boundary" (the CRLF belongs to it, not to the part before), then
 * spaces or tabs and CRLF before a part's headers, or "--" for the end;
 * an epilogue after the end is ignored.  A delimiter followed by anything
 * else is malformed: a boundary must not occur in what it separates.
 */


#ifndef _NGX_HTTP_IMGBILL_MULTIPART_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_MULTIPART_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_IMGBILL_BOUNDARY_MAX     70     /* RFC 2046 */
#define NGX_HTTP_IMGBILL_PART_LINE_MAX    1024   /* one header line */
#define NGX_HTTP_IMGBILL_PART_LINES_MAX   16     /* header lines a part has */
#define NGX_HTTP_IMGBILL_PART_NAME_MAX    128    /* name, filename, type */
#define NGX_HTTP_IMGBILL_PARTS_MAX        64


/* why a body is not read to its end (what the client hears of it is the
   caller's) */
typedef enum {
    NGX_HTTP_IMGBILL_MP_OK = 0,
    NGX_HTTP_IMGBILL_MP_NO_CLOSE,      /* it ends before its last delimiter */
    NGX_HTTP_IMGBILL_MP_BAD_DELIMITER, /* a delimiter followed by neither
                                          CRLF nor "--" */
    NGX_HTTP_IMGBILL_MP_BAD_HEADER,    /* a header line too long, without
                                          ':', or too many of them */
    NGX_HTTP_IMGBILL_MP_NO_NAME,       /* a part that is no form-data with
                                          a name, or a name too long */
    NGX_HTTP_IMGBILL_MP_TOO_MANY,      /* over NGX_HTTP_IMGBILL_PARTS_MAX */
    NGX_HTTP_IMGBILL_MP_STOPPED        /* the caller's handler said so */
} ngx_http_imgbill_mp_error_e;


/* what the handler is told */
typedef enum {
    NGX_HTTP_IMGBILL_MP_BEGIN = 0,     /* a part's headers are read */
    NGX_HTTP_IMGBILL_MP_DATA,          /* some of its bytes, in order */
    NGX_HTTP_IMGBILL_MP_END            /* its last byte came */
} ngx_http_imgbill_mp_event_e;


/* a part; its strings are the reader's, good until the part ends */
typedef struct {
    ngx_str_t                       name;
    ngx_str_t                       filename;
    ngx_str_t                       type;      /* its Content-Type, if any */
    off_t                           size;      /* its bytes so far */
    ngx_uint_t                      index;     /* from 0 */
    unsigned                        file:1;    /* it has a filename, even
                                                  an empty one */
} ngx_http_imgbill_part_t;


/* NGX_OK goes on; anything else stops the reading (NGX_HTTP_IMGBILL_MP_
   STOPPED) */
typedef ngx_int_t (*ngx_http_imgbill_part_pt)(void *data,
    ngx_http_imgbill_part_t *part, ngx_http_imgbill_mp_event_e event,
    u_char *p, size_t len);

typedef struct ngx_http_imgbill_multipart_s  ngx_http_imgbill_multipart_t;


/* the boundary of a Content-Type: NGX_OK, NGX_DECLINED (not
   multipart/form-data) or NGX_ERROR (one without a usable boundary) */
ngx_int_t ngx_http_imgbill_multipart_boundary(u_char *type, size_t len,
    ngx_str_t *boundary);

ngx_http_imgbill_multipart_t *ngx_http_imgbill_multipart_create(
    ngx_str_t *boundary, ngx_http_imgbill_part_pt handler, void *data,
    ngx_log_t *log);
void ngx_http_imgbill_multipart_feed(ngx_http_imgbill_multipart_t *mp,
    u_char *p, u_char *last);
/* the verdict once the body is all fed; also as soon as it is known */
ngx_http_imgbill_mp_error_e ngx_http_imgbill_multipart_end(
    ngx_http_imgbill_multipart_t *mp);
ngx_http_imgbill_mp_error_e ngx_http_imgbill_multipart_error(
    ngx_http_imgbill_multipart_t *mp);
ngx_uint_t ngx_http_imgbill_multipart_closed(
    ngx_http_imgbill_multipart_t *mp);
void ngx_http_imgbill_multipart_free(ngx_http_imgbill_multipart_t *mp);


#endif /* _NGX_HTTP_IMGBILL_MULTIPART_H_INCLUDED_ */
