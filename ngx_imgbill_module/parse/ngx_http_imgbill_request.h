
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

/*
 * A string value longer than this (decoded) is read as it streams by and
 * kept out of the compact text (ngx_http_imgbill_compact.c); the compact
 * text, with the table of such strings, may take at most
 * NGX_HTTP_IMGBILL_COMPACT_MAX bytes: a request is a prompt and images,
 * not a quarter megabyte of structure.  Containers nest as deep as
 * jansson lets them.
 */
#define NGX_HTTP_IMGBILL_SHORT        256
#define NGX_HTTP_IMGBILL_COMPACT_MAX  (256 * 1024)
#define NGX_HTTP_IMGBILL_DEPTH        2048

/* the members whose places in the body an API's rewrite may need */
#define NGX_HTTP_IMGBILL_MARKS        4
#define NGX_HTTP_IMGBILL_MARK_KEY     32


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
    NGX_HTTP_IMGBILL_REQ_STREAM_FORMAT,    /* a stream asked for in a form
                                              not relayed: expected */
    NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX,      /* over
                                              NGX_HTTP_IMGBILL_COMPACT_MAX
                                              outside its long strings */
    NGX_HTTP_IMGBILL_REQ_BAD_FORM          /* a multipart body that cannot
                                              be read: expected, why */
} ngx_http_imgbill_verdict_e;


/* what a long string decodes to; the compact text has "\u0000<index>" */
typedef struct {
    size_t                          len;          /* bytes, decoded */
    size_t                          url_size;     /* as a data URL; 0: not
                                                     one */
    size_t                          base64_size;  /* as base64 */
} ngx_http_imgbill_long_t;

/* a member to find: its key, in the root (parent -1) or in the object of
   another mark; a list ends with a NULL key */
typedef struct {
    ngx_int_t                       parent;
    const char                     *key;
} ngx_http_imgbill_mark_path_t;

/* ... and where it is in the body: offsets, -1 for none */
typedef struct {
    off_t                           key;          /* its key's '"'; -1:
                                                     not there */
    off_t                           start;        /* its value: [start, */
    off_t                           end;          /*   end) */
    off_t                           comma;        /* a ',' that goes with
                                                     it, before or after;
                                                     -1: the only member */
} ngx_http_imgbill_mark_t;

typedef struct ngx_http_imgbill_compact_s  ngx_http_imgbill_compact_t;
typedef struct ngx_http_imgbill_form_s     ngx_http_imgbill_form_t;


/* ... and its findings; the caller json_decref()s root in every case */
typedef struct {
    json_t                         *root;
    json_error_t                    error;        /* INVALID_JSON: where */
    off_t                           length;       /* the body's bytes */
    ngx_http_imgbill_long_t        *longs;        /* root's long strings,
                                                     while it is read */
    ngx_uint_t                      nlongs;
    ngx_http_imgbill_mark_t         marks[NGX_HTTP_IMGBILL_MARKS];
    off_t                           root_close;   /* the root's '}' */
    ngx_str_t                       model;        /* inside root, or the
                                                     path's */
    ngx_str_t                       operation;    /* what the path asks of
                                                     the API (its target),
                                                     for its check */
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
    ngx_str_t                       size;         /* the images' size and */
    ngx_str_t                       quality;      /* quality, inside root:
                                                     a per-call price may
                                                     depend on them */
    unsigned                        stream:1;     /* the body asks for a
                                                     stream */
    unsigned                        usage_asked:1;  /* ... and for its
                                                       usage */
    unsigned                        stream_options:1;  /* the stream's
                                                          options given,
                                                          whatever they say */
    unsigned                        usage_added:1;  /* the body was made to
                                                       ask for the usage */
    unsigned                        once:1;       /* priced once for the
                                                     call, however many
                                                     results it gives (a
                                                     description) */
    unsigned                        form:1;       /* multipart/form-data:
                                                     its fields are strings,
                                                     its files arrays of
                                                     their sizes */
} ngx_http_imgbill_request_t;


/* ngx_http_imgbill_compact.c */
ngx_http_imgbill_compact_t *ngx_http_imgbill_compact_create(size_t max,
    const ngx_http_imgbill_mark_path_t *paths, ngx_log_t *log);
void ngx_http_imgbill_compact_feed(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *last);
ngx_uint_t ngx_http_imgbill_compact_end_known(ngx_http_imgbill_compact_t *c);
ngx_int_t ngx_http_imgbill_compact_end(ngx_http_imgbill_compact_t *c);
ngx_int_t ngx_http_imgbill_compact_parse(ngx_http_imgbill_compact_t *c,
    ngx_http_imgbill_request_t *req);
void ngx_http_imgbill_compact_free(ngx_http_imgbill_compact_t *c);

/* ngx_http_imgbill_form.c: a multipart/form-data body, read so */
ngx_http_imgbill_form_t *ngx_http_imgbill_form_create(ngx_str_t *boundary,
    size_t image_limit, const char *const *json, ngx_log_t *log);
void ngx_http_imgbill_form_feed(ngx_http_imgbill_form_t *f, u_char *p,
    u_char *last);
ngx_uint_t ngx_http_imgbill_form_end_known(ngx_http_imgbill_form_t *f);
ngx_int_t ngx_http_imgbill_form_parse(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_request_t *req);
void ngx_http_imgbill_form_free(ngx_http_imgbill_form_t *f);

/* ngx_http_imgbill_request.c */
void ngx_http_imgbill_request_bound(ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_request_asked(json_t *n, const char *name,
    ngx_http_imgbill_request_t *req);
ngx_http_imgbill_long_t *ngx_http_imgbill_request_long(
    ngx_http_imgbill_request_t *req, json_t *s);
size_t ngx_http_imgbill_request_url_size(ngx_http_imgbill_request_t *req,
    json_t *s);
size_t ngx_http_imgbill_request_base64_size(ngx_http_imgbill_request_t *req,
    json_t *s);
ngx_int_t ngx_http_imgbill_request_image(json_t *s, size_t size,
    size_t image_limit, ngx_http_imgbill_request_t *req);
size_t ngx_http_imgbill_data_url_size(u_char *url, size_t len);
size_t ngx_http_imgbill_base64_size(u_char *p, size_t len);
ngx_int_t ngx_http_imgbill_append(u_char **buf, size_t *len, size_t *size,
    u_char *p, size_t n, ngx_log_t *log);

/* ngx_http_imgbill_reading.c */
ngx_int_t ngx_http_imgbill_reading_keys(json_t *obj, const char *const *known,
    ngx_http_imgbill_request_t *req);
json_t *ngx_http_imgbill_reading_member(json_t *obj,
    const char *const *names);
ngx_int_t ngx_http_imgbill_reading_tokens(json_t *v, const char *name,
    ngx_int_t min, ngx_int_t *tokens, ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_reading_openai(ngx_http_imgbill_request_t *req,
    const char *const *known);
ngx_int_t ngx_http_imgbill_reading_flag(json_t *v, const char *name,
    ngx_uint_t *flag, ngx_http_imgbill_request_t *req);
ngx_uint_t ngx_http_imgbill_arg_is(u_char *p, u_char *last, const char *name);
void ngx_http_imgbill_reading_number(json_t *root, const char *name);


#endif /* _NGX_HTTP_IMGBILL_REQUEST_H_INCLUDED_ */
