
/*
 * imgbill: an API clients speak, as one table of what the relay needs to
 * know of it, in the way nginx's upstream module takes a protocol as its
 * hooks (create_request, process_header, input_filter).  Each API is one
 * file of this folder and one row of ngx_http_imgbill_api.c's table; a
 * location names its API ("imgbill_api") and every other file reaches the
 * API through its row, never by its name: no file outside an API's own
 * names its fields, headers or error shapes.
 *
 * The hooks take the request and what is read of it, and answer with a
 * verdict (ngx_http_imgbill_request.h); the HTTP side (http/) turns
 * verdicts into errors, keys into hashes, and a row into a reply.
 */


#ifndef _NGX_HTTP_IMGBILL_API_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_imgbill_request.h"
#include "ngx_http_imgbill_scan.h"


/* what kind of error imgbill answers; each API names the kinds its way */
typedef enum {
    ngx_http_imgbill_err_request = 0,   /* the client's request */
    ngx_http_imgbill_err_quota,         /* the balance */
    ngx_http_imgbill_err_server,        /* the relay, or its billing */
    ngx_http_imgbill_err_upstream       /* the upstream's reply */
} ngx_http_imgbill_err_e;


/* an error imgbill answers itself, before it is put in an API's shape */
typedef struct {
    ngx_uint_t                      status;
    ngx_http_imgbill_err_e          kind;
    const char                     *code;
    ngx_str_t                       message;
} ngx_http_imgbill_error_t;


/* where an API's client puts its key; the first one found is the key,
   and every one is kept from the upstream and the logs */
typedef enum {
    ngx_http_imgbill_key_in_none = 0,   /* ends a list */
    ngx_http_imgbill_key_in_bearer,     /* Authorization: Bearer <key> */
    ngx_http_imgbill_key_in_header,     /* a header of the API's own */
    ngx_http_imgbill_key_in_query       /* an argument of the URL */
} ngx_http_imgbill_key_from_e;

typedef struct {
    ngx_http_imgbill_key_from_e     from;
    ngx_str_t                       name;      /* the header or argument */
} ngx_http_imgbill_key_source_t;


typedef struct {
    ngx_str_t                       name;      /* imgbill_api's value */

    /* the key: where it may be, in order, and what a client is told to
       send when there is none */
    ngx_http_imgbill_key_source_t  *keys;
    const char                     *key_hint;

    /*
     * The model (and the method) from the request's path, before the
     * body is read: a verdict, the model in *model and what the path asks
     * in req->operation (for check), inside r->uri.  An empty model: the
     * body names it.  NULL: the body names the model.
     */
    ngx_int_t                     (*target)(ngx_http_request_t *r,
                                      ngx_str_t *model,
                                      ngx_http_imgbill_request_t *req);

    /* the body, parsed: read into req (the model, the images asked for,
       the output it allows, a stream), or a verdict */
    ngx_int_t                     (*check)(ngx_http_imgbill_request_t *req,
                                      size_t image_limit);

    /* the members of the body whose places its rewrite needs (req->marks,
       in this order); NULL: none */
    const ngx_http_imgbill_mark_path_t  *marks;

    /* the body made to ask the upstream for what billing needs (a
       stream's usage), in r->request_body, with the helpers below; NULL:
       it goes as it came */
    ngx_int_t                     (*rewrite)(ngx_http_request_t *r,
                                      ngx_http_imgbill_request_t *req);

    /* an error in the API's shape: a buffer of at most error_len bytes
       beside the message, escaped */
    u_char                       *(*error)(u_char *p,
                                      ngx_http_imgbill_error_t *err);
    size_t                          error_len;

    /* the model list imgbill serves: its start, one entry of at most
       model_len bytes beside the name (twice, escaped), its end */
    ngx_str_t                       list_start;
    u_char                       *(*model)(u_char *p, ngx_str_t *name);
    size_t                          model_len;
    ngx_str_t                       list_end;

    /* its replies, whole or one event of a stream, to the scanner */
    ngx_http_imgbill_dialect_t     *dialect;

    /* the fields of a form whose text is JSON, read as the object it
       is (Ideogram's "image_request"); NULL: none */
    const char *const              *form_json;

    /* a stream's event waits for its end before it goes: it may be the
       usage the relay asked for (dropped) or carry the cost */
    unsigned                        hold_events:1;

    /* it takes multipart/form-data bodies too, read by
       ngx_http_imgbill_form.c for check to read (req->form) */
    unsigned                        forms:1;

    /* a stream's images are its finished events (the dialect's
       shows_done), one each, and their usages add up; otherwise an image
       is a choice, however many events it spans, and the last usage is
       the stream's */
    unsigned                        finished_events:1;
} ngx_http_imgbill_api_t;


/* OpenAI's error and model list, which its APIs share (at most _LEN bytes
   beside the message, or the name twice) */
#define NGX_HTTP_IMGBILL_OPENAI_ERROR                                        \
    "{\"error\":{\"message\":\"\",\"type\":\"\",\"param\":null,"               \
    "\"code\":\"\"}}\n"
#define NGX_HTTP_IMGBILL_OPENAI_ERROR_LEN                                    \
    (sizeof(NGX_HTTP_IMGBILL_OPENAI_ERROR) - 1                               \
     + sizeof("invalid_request_error") - 1)

#define NGX_HTTP_IMGBILL_OPENAI_MODEL                                        \
    ",{\"id\":\"\",\"object\":\"model\",\"created\":0,\"owned_by\":\"imgbill\"}"
#define NGX_HTTP_IMGBILL_OPENAI_MODEL_LEN                                    \
    (sizeof(NGX_HTTP_IMGBILL_OPENAI_MODEL) - 1)


/* ngx_http_imgbill_openai.c */
extern ngx_http_imgbill_key_source_t  ngx_http_imgbill_openai_key[];
u_char *ngx_http_imgbill_openai_error(u_char *p,
    ngx_http_imgbill_error_t *err);
u_char *ngx_http_imgbill_openai_model(u_char *p, ngx_str_t *name);

/* ngx_http_imgbill_ideogram.c: what Ideogram's two APIs share (its
   error: _LEN bytes beside the message and the code) */
#define NGX_HTTP_IMGBILL_IDEOGRAM_ERROR_LEN                                  \
    (sizeof("{\"error\":\"\",\"code\":\"\"}\n") - 1)

extern ngx_http_imgbill_key_source_t  ngx_http_imgbill_ideogram_key[];
extern ngx_http_imgbill_dialect_t     ngx_http_imgbill_ideogram_dialect;
u_char *ngx_http_imgbill_ideogram_error(u_char *p,
    ngx_http_imgbill_error_t *err);
u_char *ngx_http_imgbill_ideogram_model(u_char *p, ngx_str_t *name);
ngx_int_t ngx_http_imgbill_ideogram_files_read(
    ngx_http_imgbill_request_t *req, const char *const *files);
ngx_int_t ngx_http_imgbill_ideogram_op(ngx_str_t *path, ngx_str_t *ops,
    ngx_str_t *op);

/* ngx_http_imgbill_api.c: the table, of this many rows */
#define NGX_HTTP_IMGBILL_APIS  5

char *ngx_http_imgbill_api_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_imgbill_api_t *ngx_http_imgbill_api_default(void);
ngx_http_imgbill_api_t *ngx_http_imgbill_api_at(ngx_uint_t i);
ngx_uint_t ngx_http_imgbill_api_index(ngx_http_imgbill_api_t *api);
ngx_int_t ngx_http_imgbill_check_compact(ngx_http_imgbill_compact_t *c,
    ngx_http_imgbill_api_t *api, ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_check_form(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_api_t *api, ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req);
ngx_int_t ngx_http_imgbill_check_request(u_char *p, size_t len,
    ngx_http_imgbill_api_t *api, ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req);
ngx_uint_t ngx_http_imgbill_api_query_key(ngx_http_imgbill_api_t *api);

/* ngx_http_imgbill_splice.c: a rewrite's tools */
ngx_int_t ngx_http_imgbill_splice_overwrite(ngx_http_request_t *r,
    off_t start, off_t end, ngx_str_t *with);
ngx_int_t ngx_http_imgbill_splice_blank(ngx_http_request_t *r,
    ngx_http_imgbill_mark_t *mark);
ngx_int_t ngx_http_imgbill_splice_end(ngx_http_request_t *r, off_t at,
    ngx_str_t *tail);


#endif /* _NGX_HTTP_IMGBILL_API_H_INCLUDED_ */
