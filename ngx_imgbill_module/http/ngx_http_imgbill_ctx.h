
/*
 * imgbill: a request's context, and the files of the request's path that
 * share it, in the order a request meets them:
 *
 *   ngx_http_imgbill_access.c    access phase: key, body, admission
 *   ngx_http_imgbill_key.c       the API's key: hashed, kept from the
 *                                upstream and the logs
 *   ngx_http_imgbill_body.c      what the request asks for, by its API
 *   ngx_http_imgbill_filter.c    header and body filters: hold the reply,
 *                                decide the charge, settle, emit
 *   ngx_http_imgbill_spool.c     where a held reply waits
 *   ngx_http_imgbill_stream.c    a streamed reply (ngx_http_imgbill_stream.h)
 *   ngx_http_imgbill_deliver.c   ... what of it reached the client
 *   ngx_http_imgbill_response.c  errors and X-Imgbill-* headers
 *   ngx_http_imgbill_ctx.c       the context, its states, its end
 *   ngx_http_imgbill_orphan.c    what a command does after its request
 *   ngx_http_imgbill_variables.c the $imgbill_* variables
 *   ngx_http_imgbill_models.c    the model lists imgbill serves
 *   ngx_http_imgbill_account.c   what a key holder reads of an account
 *   ngx_http_imgbill_redeem.c    a redemption code, credited
 *   ngx_http_imgbill_keyring.c   the keys a key holder lists, makes and
 *                                deletes
 *   ngx_http_imgbill_keyring_limits.c  ... the limits a new key asks for
 *   ngx_http_imgbill_metrics.c   Prometheus counters in a shared zone
 */


#ifndef _NGX_HTTP_IMGBILL_CTX_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_CTX_H_INCLUDED_


#include "ngx_http_imgbill_module.h"
#include "ngx_http_imgbill_scan.h"


/* r->buffered has four bits; 0x08 is the image filter's, which never
   shares a location with an API relay */
#define NGX_HTTP_IMGBILL_BUFFERED     0x08


typedef struct ngx_http_imgbill_stream_s     ngx_http_imgbill_stream_t;


/* why a request that reached the upstream was not charged (the metrics'
   reasons, from 1; 0 is "charged") */
typedef enum {
    ngx_http_imgbill_free_none = 0,
    ngx_http_imgbill_free_no_image,
    ngx_http_imgbill_free_no_usage,
    ngx_http_imgbill_free_upstream_error,
    ngx_http_imgbill_free_error_event,
    ngx_http_imgbill_free_bad_response,
    ngx_http_imgbill_free_client_gone,
    ngx_http_imgbill_free_upstream_cut,
    ngx_http_imgbill_free_unrecorded     /* neither Redis nor the journal
                                            could take the charge */
} ngx_http_imgbill_free_e;


/* how a request ended, beyond "charged" (0) and the free reasons */
#define NGX_HTTP_IMGBILL_END_REJECTED     100
#define NGX_HTTP_IMGBILL_END_LISTED       101
#define NGX_HTTP_IMGBILL_END_UNFINISHED   102

/* a request's life; ngx_http_imgbill_set_state() moves it on */
typedef enum {
    ngx_http_imgbill_reading = 0,  /* client body */
    ngx_http_imgbill_admitting,    /* admit script in flight */
    ngx_http_imgbill_rejected,     /* error response pending */
    ngx_http_imgbill_admitted,     /* hold placed, request relayed */
    ngx_http_imgbill_collecting,   /* reply header held, body buffered */
    ngx_http_imgbill_settling,     /* settle script in flight */
    ngx_http_imgbill_emitting,     /* settled: header and body go out */
    ngx_http_imgbill_passing,      /* all sent, let the rest through */
    ngx_http_imgbill_released,     /* hold given back unused */
    ngx_http_imgbill_looking_up,   /* lookup script in flight: a key only */
    ngx_http_imgbill_authorized,   /* the key is known; nothing held */
    ngx_http_imgbill_keyed,        /* the key is known; the body to read */
    ngx_http_imgbill_streaming     /* an event stream passing through */
} ngx_http_imgbill_state_e;


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_imgbill_state_e        state;
    ngx_http_imgbill_held_t         placed;    /* in the store while its
                                                  hold is placed */
    ngx_uint_t                      channel;
    ngx_http_imgbill_api_t         *api;

    ngx_str_t                       request_id;
    u_char                          key_hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t                       account;
    ngx_str_t                       model;
    ngx_str_t                       operation; /* what the path asks, as
                                                  the API's target reads
                                                  it */
    ngx_http_imgbill_price_t       *price;
    ngx_uint_t                      images_asked;  /* n, candidateCount */
    ngx_int_t                       hold;

    ngx_http_imgbill_error_t        error;

    ngx_http_imgbill_cmd_t         *cmd;       /* in flight, if any */
    ngx_http_imgbill_compact_t     *compact;   /* the body, as it is read */
    ngx_http_imgbill_form_t        *form;      /* ... or a form, so */
    off_t                           counted;   /* ... its bytes so far */
    off_t                           reserved;  /* ... in the worker's
                                                  bodies in flight */
    size_t                          slice;     /* ... read since the read
                                                  last gave way */

    /* the held reply: its bytes in memory, or all in file once it has
       one; read by the scanner as they come */
    ngx_uint_t                      upstream_status;
    u_char                         *body;
    u_char                         *last;
    u_char                         *end;
    off_t                           held;      /* bytes taken */
    size_t                          memory;    /* body's size, counted in
                                                  the worker's replies */
    ngx_temp_file_t                *file;
    ngx_output_chain_ctx_t         *output;    /* the file going out */
    ngx_http_imgbill_scanner_t     *scanner;
    ngx_http_imgbill_error_t        replace;   /* a 502 instead of the reply */

    ngx_http_imgbill_stream_t      *stream;    /* an event stream's reading */

    ngx_http_imgbill_key_ask_t     *keyring;   /* a key holder's POST of a
                                                  key: what it asks */
    u_char                         *new_key;   /* ... the key made, raw, for
                                                  the reply only */

    ngx_int_t                       prompt_tokens;      /* -1: unknown */
    ngx_int_t                       completion_tokens;  /* -1: unknown */
    ngx_uint_t                      images;    /* delivered, as billed */
    ngx_int_t                       charge;
    ngx_int_t                       balance;
    time_t                          settled_at;
    off_t                           sent_before;  /* c->sent as the held
                                                     reply went out */
    ngx_http_imgbill_free_e         free_reason;
    ngx_http_imgbill_free_e         charge_reason;  /* charged all the same:
                                                       no_usage, client_gone,
                                                       upstream_cut; or none */

    unsigned                        busy:1;         /* bodies in flight
                                                       past the limit */
    unsigned                        too_large:1;
    unsigned                        not_held:1;     /* the file failed */
    unsigned                        cut:1;          /* the upstream's reply
                                                       ended early: a 502
                                                       went out instead */
    unsigned                        whole:1;        /* the reply is in;
                                                       the charge waits for
                                                       the client's events */
    unsigned                        need_in_memory:1;  /* r->main_filter_
                                                          need_in_memory,
                                                          before ours */
    unsigned                        balance_known:1;
    unsigned                        settle_failed:1;
    unsigned                        reversed:1;     /* its charge given
                                                       back */
    unsigned                        unrecorded:1;   /* its charge could be
                                                       recorded nowhere */
    unsigned                        holding:1;      /* a hold was placed */
    unsigned                        key_limits:1;   /* the key has limits:
                                                       its hold and spend
                                                       count against them */
    unsigned                        once:1;    /* the call is priced,
                                                  not its results */
    unsigned                        usage_asked:1;  /* the client asked for
                                                       a stream's usage */
    unsigned                        usage_added:1;  /* imgbill asked the
                                                       upstream for usage */
} ngx_http_imgbill_ctx_t;


/* ngx_http_imgbill_ctx.c */
ngx_http_imgbill_ctx_t *ngx_http_imgbill_get_ctx(ngx_http_request_t *r);
ngx_http_imgbill_ctx_t *ngx_http_imgbill_create_ctx(ngx_http_request_t *r);
void ngx_http_imgbill_set_state(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_state_e state);
void ngx_http_imgbill_settlement(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_settle_t *s);
ngx_str_t *ngx_http_imgbill_limited_key(ngx_http_imgbill_ctx_t *ctx,
    ngx_str_t *key);
ngx_uint_t ngx_http_imgbill_ended(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_orphan.c */
void ngx_http_imgbill_release(ngx_http_imgbill_ctx_t *ctx);
void ngx_http_imgbill_orphan_settle(ngx_http_imgbill_ctx_t *ctx);
void ngx_http_imgbill_orphan_adopt(ngx_http_imgbill_ctx_t *ctx);

/* what a location answers GET with: a model list, a key holder's reads */
#define ngx_http_imgbill_reads(lcf)                                           \
    ((lcf)->models                                                            \
     || ((lcf)->serve && (lcf)->serve != NGX_HTTP_IMGBILL_SERVE_REDEEM        \
         && (lcf)->serve != NGX_HTTP_IMGBILL_SERVE_KEYS))

/* ngx_http_imgbill_access.c */
ngx_int_t ngx_http_imgbill_access_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_imgbill_account(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_str_t *account);
void ngx_http_imgbill_invalid_key(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
void ngx_http_imgbill_unavailable(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
void ngx_http_imgbill_answered(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_int_t rc);
ngx_http_variable_value_t *ngx_http_imgbill_request_id(ngx_http_request_t *r,
    ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_address(ngx_http_request_t *r, ngx_str_t *addr);
void ngx_http_imgbill_key_refuse(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply);

/* ngx_http_imgbill_body.c */
ngx_int_t ngx_http_imgbill_body_init(ngx_conf_t *cf);
ngx_int_t ngx_http_imgbill_body_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_request_target(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_read_request(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_small_body_read(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, size_t size,
    ngx_http_client_body_handler_pt handler);
ngx_int_t ngx_http_imgbill_small_body(ngx_http_request_t *r, u_char *buf,
    size_t size, size_t *len);
void ngx_http_imgbill_small_body_too_large(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, size_t size);

/* ngx_http_imgbill_variables.c */
ngx_int_t ngx_http_imgbill_request_key(ngx_http_request_t *r,
    u_char *key_hash);

/* ngx_http_imgbill_key.c */
ngx_int_t ngx_http_imgbill_api_key(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, u_char *key_hash);
ngx_int_t ngx_http_imgbill_sha256(ngx_http_request_t *r, u_char *data,
    size_t len, u_char *hex);
void ngx_http_imgbill_mask_query(ngx_http_request_t *r, ngx_str_t *name);
ngx_int_t ngx_http_imgbill_strip_query_arg(ngx_http_request_t *r,
    ngx_str_t *name);
ngx_int_t ngx_http_imgbill_mask_handler(ngx_http_request_t *r);

/* ngx_http_imgbill_models.c */
ngx_int_t ngx_http_imgbill_models_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_imgbill_models_lists(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_account.c */
ngx_int_t ngx_http_imgbill_serve_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info);
ngx_int_t ngx_http_imgbill_serve_reply(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply);
ngx_int_t ngx_http_imgbill_serve_handler(ngx_http_request_t *r);
time_t ngx_http_imgbill_civil_day(ngx_int_t y, ngx_int_t m, ngx_int_t d);

/* ngx_http_imgbill_redeem.c */
ngx_int_t ngx_http_imgbill_redeem_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_keyring.c */
ngx_int_t ngx_http_imgbill_keyring_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_keyring_limits.c: a POST's body, at most this long */
#define NGX_HTTP_IMGBILL_KEYRING_BODY_MAX  8192
ngx_int_t ngx_http_imgbill_keyring_limits(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_key_ask_t *ask);

/* ngx_http_imgbill_metrics.c */
ngx_int_t ngx_http_imgbill_metrics_log(ngx_http_request_t *r);
const char *ngx_http_imgbill_reason(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_metrics_handler(ngx_http_request_t *r);
void ngx_http_imgbill_metrics_hold(ngx_http_request_t *r);

/* ngx_http_imgbill_filter.c */
void ngx_http_imgbill_billing(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_scan_t *found,
    ngx_uint_t delivered, ngx_http_imgbill_bill_t *bill);
ngx_int_t ngx_http_imgbill_charge(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_scan_t *scan);
ngx_int_t ngx_http_imgbill_settle(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_reverse.c */
void ngx_http_imgbill_reverse(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, const char *why);
void ngx_http_imgbill_reverse_watch(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_spool.c */
ngx_int_t ngx_http_imgbill_spool_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, off_t len);
ngx_int_t ngx_http_imgbill_spool_add(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, u_char *p, size_t size);
ngx_int_t ngx_http_imgbill_spool_end(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_buf_t *ngx_http_imgbill_spool_buf(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_spool_send(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t *in,
    ngx_http_output_body_filter_pt next);

/* ngx_http_imgbill_stream.c */
ngx_int_t ngx_http_imgbill_stream_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_stream_body(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_chain_t *in,
    ngx_http_output_body_filter_pt next);

/* ngx_http_imgbill_deliver.c */
void ngx_http_imgbill_stream_abandoned(ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_stream_cut(ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_stream_worth(ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_response.c */
void ngx_http_imgbill_set_error(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err, ngx_uint_t status,
    ngx_http_imgbill_err_e kind, const char *code, const char *fmt, ...);
u_char *ngx_http_imgbill_format_time(u_char *p, time_t t);
ngx_buf_t *ngx_http_imgbill_error_body(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err);
ngx_int_t ngx_http_imgbill_add_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len);
ngx_int_t ngx_http_imgbill_money_header(ngx_http_request_t *r, char *name,
    ngx_int_t units);
void ngx_http_imgbill_strip_headers(ngx_list_t *headers, char *prefix,
    ngx_uint_t request);
void ngx_http_imgbill_hide_header(ngx_table_elt_t *h);
ngx_int_t ngx_http_imgbill_money_trailer(ngx_http_request_t *r, char *name,
    ngx_int_t units);
ngx_int_t ngx_http_imgbill_send_json(ngx_http_request_t *r, ngx_buf_t *b);
ngx_int_t ngx_http_imgbill_send_text(ngx_http_request_t *r,
    ngx_uint_t status, ngx_buf_t *b, char *type);



#endif /* _NGX_HTTP_IMGBILL_CTX_H_INCLUDED_ */
