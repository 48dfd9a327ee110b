
/*
 * imgbill: what a request asks for, read before any money moves.  The
 * parts every API shares: the body parsed (ngx_http_imgbill_request.c),
 * its members read once, as the upstream reads them
 * (ngx_http_imgbill_reading.c).  What each API's body holds is its own
 * file's (api/).  Nothing here needs more of nginx than its core types
 * and jansson, so the unit checks and the fuzzer build it alone.
 */


#ifndef _NGX_HTTP_IMGBILL_REQUEST_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_REQUEST_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_imgbill_scan.h"


/* images one request may ask for: the default, and the most a location
   may allow (Google's candidateCount stops at 8) */
#define NGX_HTTP_IMGBILL_MAX_IMAGES   4
#define NGX_HTTP_IMGBILL_IMAGES_MAX   64

/* what a metered hold assumes of one reference image, in tokens */
#define NGX_HTTP_IMGBILL_IMAGE_TOKENS 1290


/* the verdicts on a request; ngx_http_imgbill_body.c maps each to its
   HTTP status and error */
typedef enum {
    NGX_HTTP_IMGBILL_REQ_OK = 0,
    NGX_HTTP_IMGBILL_REQ_EMPTY,
    NGX_HTTP_IMGBILL_REQ_INVALID_JSON,
    NGX_HTTP_IMGBILL_REQ_NOT_OBJECT,
    NGX_HTTP_IMGBILL_REQ_MISSING,          /* a member the API needs: param,
                                              expected, code */
    NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE,
    NGX_HTTP_IMGBILL_REQ_NUL_BYTE,
    NGX_HTTP_IMGBILL_REQ_BAD_COUNT,        /* the images asked for: not a
                                              positive integer */
    NGX_HTTP_IMGBILL_REQ_AMBIGUOUS,        /* keys that fold alike */
    NGX_HTTP_IMGBILL_REQ_BAD_VALUE,        /* a value the relay reads, of
                                              another type: param,
                                              expected, code if not
                                              "invalid_value" */
    NGX_HTTP_IMGBILL_REQ_NO_TARGET,        /* the path names no method of
                                              the API: expected */
    NGX_HTTP_IMGBILL_REQ_AMBIGUOUS_QUERY,  /* an argument given twice, or
                                              spelled otherwise: param */
    NGX_HTTP_IMGBILL_REQ_STREAM_FORMAT     /* a stream asked for in a form
                                              not relayed: expected */
} ngx_http_imgbill_verdict_e;


/* ... and its findings; the caller json_decref()s root in every case */
typedef struct {
    json_t                         *root;
    json_error_t                    error;        /* INVALID_JSON: where */
    ngx_str_t                       model;        /* inside root, or the
                                                     path's */
    size_t                          images;       /* reference images seen */
    ngx_uint_t                      asked;        /* images asked for (1
                                                     unless said); above
                                                     NGX_HTTP_IMGBILL_IMAGES_MAX
                                                     it is that + 1 */
    const char                     *count;        /* the member that asks */
    ngx_int_t                       max_output;   /* an output cap asked for,
                                                     per image (0: none) */
    ngx_int_t                       thinking;     /* a thinking budget asked
                                                     for, per image */
    const char                     *key;          /* AMBIGUOUS: the key */
    const char                     *spelling;     /* ... the one it stands
                                                     for; NULL: two collide */
    const char                     *param;        /* the member, or the
                                                     argument */
    const char                     *expected;     /* ... and what it takes */
    const char                     *code;         /* ... the error's code */
    size_t                          image_bytes;  /* their URLs, decoded */
    size_t                          image_size;   /* IMAGE_TOO_LARGE: the
                                                     last one's size */
    size_t                          tokens;       /* OK: the prompt's bound */
    unsigned                        stream:1;     /* the body asks for a
                                                     stream */
    unsigned                        usage_asked:1;  /* ... and for its
                                                       usage */
    unsigned                        stream_options:1;  /* the stream's
                                                          options given,
                                                          whatever they say */
    unsigned                        usage_added:1;  /* the body was made to
                                                       ask for the usage */
} ngx_http_imgbill_request_t;


/* ngx_http_imgbill_request.c */
ngx_int_t ngx_http_imgbill_request_parse(u_char *p, size_t len,
    ngx_http_imgbill_request_t *req);
void ngx_http_imgbill_request_bound(size_t len,
    ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_request_asked(json_t *n, const char *name,
    ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_request_image(json_t *s, size_t size,
    size_t image_limit, ngx_http_imgbill_request_t *req);
size_t ngx_http_imgbill_data_url_size(u_char *url, size_t len);
size_t ngx_http_imgbill_base64_size(u_char *p, size_t len);

/* ngx_http_imgbill_reading.c */
ngx_int_t ngx_http_imgbill_reading_keys(json_t *obj, const char *const *known,
    ngx_http_imgbill_request_t *req);
json_t *ngx_http_imgbill_reading_member(json_t *obj,
    const char *const *names);
ngx_int_t ngx_http_imgbill_reading_tokens(json_t *v, const char *name,
    ngx_int_t min, ngx_int_t *tokens, ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_reading_flag(json_t *v, const char *name,
    ngx_uint_t *flag, ngx_http_imgbill_request_t *req);
ngx_uint_t ngx_http_imgbill_arg_is(u_char *p, u_char *last, const char *name);


#endif /* _NGX_HTTP_IMGBILL_REQUEST_H_INCLUDED_ */
