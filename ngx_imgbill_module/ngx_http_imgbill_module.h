
/*
 * imgbill: a billing relay for OpenAI-compatible image generation.
 *
 * The internal API between the module's files:
 *
 *   ngx_http_imgbill_module.c  directives, configuration, variables, the
 *                              request context and the JSON error response;
 *   ngx_http_imgbill_access.c  access phase: key, body, admission;
 *   ngx_http_imgbill_request.c the request validator: JSON, model, images;
 *   ngx_http_imgbill_filter.c  header and body filters: hold the reply,
 *                              decide the charge, settle, emit;
 *   ngx_http_imgbill_redis.c   hiredis' async API on nginx's event loop and
 *                              its one Lua script (admit, settle, release),
 *                              called once per loop turn for what it asked;
 *   ngx_http_imgbill_journal.c settlements Redis could not take, kept on
 *                              disk and replayed on reconnection;
 *   ngx_http_imgbill_scan.c    one-pass scanner of the upstream reply;
 *   ngx_http_imgbill_money.c   fixed-point money: parse, charge, format.
 *
 * Money is an integer count of 0.0001 CNY ("units") everywhere.
 */


#ifndef _NGX_HTTP_IMGBILL_MODULE_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <jansson.h>

#include "ngx_http_imgbill_scan.h"


#define NGX_HTTP_IMGBILL_OFF          0
#define NGX_HTTP_IMGBILL_METERED      1
#define NGX_HTTP_IMGBILL_FAST         2

/* nginx names no constant for it */
#define NGX_HTTP_IMGBILL_PAYMENT_REQUIRED  402

/* the largest price or balance a directive accepts: 100000 CNY */
#define NGX_HTTP_IMGBILL_MONEY_MAX    1000000000
/* "-" + 19 digits + "." */
#define NGX_HTTP_IMGBILL_MONEY_LEN    (NGX_INT64_LEN + 1)

/* what a metered hold assumes when the configuration does not say */
#define NGX_HTTP_IMGBILL_MAX_OUTPUT   4096   /* tokens of one reply */
#define NGX_HTTP_IMGBILL_IMAGE_TOKENS 1290   /* tokens of one reference image */

#define NGX_HTTP_IMGBILL_KEY_HASH_LEN 64   /* sha256, hex */
#define NGX_HTTP_IMGBILL_ACCOUNT_MAX  64
#define NGX_HTTP_IMGBILL_REQUEST_ID_MAX  64

/* how long a settled request id stays known to the settle script: longer
   than any journal replay can be late */
#define NGX_HTTP_IMGBILL_SETTLED_TTL  "604800"


typedef struct {
    ngx_str_t                       model;
    ngx_int_t                       input;   /* metered: units per 1M tokens */
    ngx_int_t                       output;  /* metered: units per 1M tokens;
                                                fast: units per call */
    ngx_int_t                       hold;    /* units reserved at admission:
                                                fast: the price; metered: as
                                                configured, or NGX_CONF_UNSET
                                                to bound each request */
    ngx_int_t                       max_output;  /* metered: tokens */
} ngx_http_imgbill_price_t;


typedef struct ngx_http_imgbill_redis_s      ngx_http_imgbill_redis_t;
typedef struct ngx_http_imgbill_replayer_s   ngx_http_imgbill_replayer_t;
typedef struct ngx_http_imgbill_redis_cmd_s  ngx_http_imgbill_redis_cmd_t;


typedef struct {
    ngx_str_t                       host;      /* numeric, or a unix path */
    in_port_t                       port;      /* 0 for a unix socket */
    ngx_str_t                       password;
    ngx_int_t                       db;
    ngx_msec_t                      timeout;
    time_t                          hold_ttl;

    ngx_int_t                       request_id_index;
    ngx_open_file_t                *journal;   /* NULL: off */

    /* this worker's connection and journal replay, from init_process on */
    ngx_http_imgbill_redis_t       *redis;
    ngx_http_imgbill_replayer_t    *replayer;
} ngx_http_imgbill_main_conf_t;


typedef struct {
    ngx_uint_t                      channel;
    ngx_array_t                    *metered;   /* ngx_http_imgbill_price_t */
    ngx_array_t                    *fast;      /* ngx_http_imgbill_price_t */
    ngx_int_t                       min_balance;
    ngx_int_t                       min_charge;
    size_t                          body_limit;
    size_t                          image_limit;
} ngx_http_imgbill_loc_conf_t;


typedef enum {
    ngx_http_imgbill_reading = 0,  /* client body */
    ngx_http_imgbill_admitting,    /* admit script in flight */
    ngx_http_imgbill_rejected,     /* error response pending */
    ngx_http_imgbill_admitted,     /* hold placed, request relayed */
    ngx_http_imgbill_collecting,   /* reply header held, body buffered */
    ngx_http_imgbill_settling,     /* settle script in flight */
    ngx_http_imgbill_emitting,     /* settled: header and body go out */
    ngx_http_imgbill_passing,      /* all sent, let the rest through */
    ngx_http_imgbill_released      /* hold given back unused */
} ngx_http_imgbill_state_e;


typedef struct {
    ngx_uint_t                      status;
    const char                     *type;
    const char                     *code;
    ngx_str_t                       message;
} ngx_http_imgbill_error_t;


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_imgbill_state_e        state;
    ngx_uint_t                      channel;

    ngx_str_t                       request_id;
    u_char                          key_hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t                       account;
    ngx_str_t                       model;
    ngx_http_imgbill_price_t       *price;
    ngx_int_t                       hold;

    ngx_http_imgbill_error_t        error;

    ngx_http_imgbill_redis_cmd_t   *cmd;       /* in flight, if any */

    /* the held reply */
    ngx_uint_t                      upstream_status;
    u_char                         *body;
    u_char                         *last;
    u_char                         *end;
    ngx_http_imgbill_error_t        replace;   /* a 502 instead of the reply */

    ngx_int_t                       prompt_tokens;      /* -1: unknown */
    ngx_int_t                       completion_tokens;  /* -1: unknown */
    ngx_int_t                       charge;
    ngx_int_t                       balance;

    unsigned                        too_large:1;
    unsigned                        balance_known:1;
    unsigned                        settle_failed:1;
} ngx_http_imgbill_ctx_t;


/* the request validator's verdicts */
#define NGX_HTTP_IMGBILL_REQ_OK               0
#define NGX_HTTP_IMGBILL_REQ_EMPTY            1
#define NGX_HTTP_IMGBILL_REQ_INVALID_JSON     2
#define NGX_HTTP_IMGBILL_REQ_NOT_OBJECT       3
#define NGX_HTTP_IMGBILL_REQ_NO_MODEL         4
#define NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE  5
#define NGX_HTTP_IMGBILL_REQ_NUL_BYTE         6

/* ... and its findings; the caller json_decref()s root in every case */
typedef struct {
    json_t                         *root;
    json_error_t                    error;        /* INVALID_JSON: where */
    ngx_str_t                       model;        /* inside root */
    size_t                          images;       /* reference images seen */
    size_t                          image_bytes;  /* their URLs, decoded */
    size_t                          image_size;   /* IMAGE_TOO_LARGE: the
                                                     last one's size */
    size_t                          tokens;       /* OK: the prompt's bound */
} ngx_http_imgbill_request_t;


/* one settlement, as the settle script and the journal see it */
typedef struct {
    ngx_str_t                       request_id;
    ngx_str_t                       account;
    ngx_str_t                       model;
    ngx_uint_t                      channel;
    ngx_int_t                       charge;
    ngx_int_t                       hold;     /* 0: not known */
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
} ngx_http_imgbill_settle_t;


typedef void (*ngx_http_imgbill_redis_handler_pt)(redisReply *reply,
    void *data);

typedef enum {
    ngx_http_imgbill_script_admit = 0,
    ngx_http_imgbill_script_settle,
    ngx_http_imgbill_script_release,
    ngx_http_imgbill_script_release_key
} ngx_http_imgbill_script_e;


/* ngx_http_imgbill_module.c */
ngx_http_imgbill_ctx_t *ngx_http_imgbill_get_ctx(ngx_http_request_t *r);
ngx_http_imgbill_ctx_t *ngx_http_imgbill_create_ctx(ngx_http_request_t *r);
void ngx_http_imgbill_set_error(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err, ngx_uint_t status, const char *type,
    const char *code, const char *fmt, ...);
ngx_buf_t *ngx_http_imgbill_error_body(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err);
ngx_int_t ngx_http_imgbill_add_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len);
void ngx_http_imgbill_strip_headers(ngx_list_t *headers, ngx_uint_t request);
void ngx_http_imgbill_hide_header(ngx_table_elt_t *h);
ngx_http_imgbill_price_t *ngx_http_imgbill_find_price(
    ngx_http_imgbill_loc_conf_t *lcf, ngx_str_t *model);

/* ngx_http_imgbill_access.c */
ngx_int_t ngx_http_imgbill_access_handler(ngx_http_request_t *r);

/* ngx_http_imgbill_request.c */
ngx_int_t ngx_http_imgbill_check_request(u_char *p, size_t len,
    size_t image_limit, ngx_http_imgbill_request_t *req);

/* ngx_http_imgbill_filter.c */
ngx_int_t ngx_http_imgbill_filter_init(ngx_conf_t *cf);
void ngx_http_imgbill_cleanup(void *data);

/* ngx_http_imgbill_redis.c */
ngx_int_t ngx_http_imgbill_redis_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_redis_done(ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_redis_ready(ngx_http_imgbill_main_conf_t *mcf);
ngx_http_imgbill_redis_cmd_t *ngx_http_imgbill_redis_send(
    ngx_http_imgbill_main_conf_t *mcf, ngx_int_t script, ngx_uint_t nkeys,
    ngx_uint_t argc, ngx_str_t *argv, ngx_http_imgbill_redis_handler_pt handler,
    void *data);
void ngx_http_imgbill_redis_rebind(ngx_http_imgbill_redis_cmd_t *cmd,
    ngx_http_imgbill_redis_handler_pt handler, void *data);
ngx_int_t ngx_http_imgbill_redis_integer(redisReply *reply, ngx_uint_t i,
    ngx_int_t *value);
ngx_http_imgbill_redis_cmd_t *ngx_http_imgbill_redis_settle(
    ngx_http_imgbill_main_conf_t *mcf, ngx_http_imgbill_settle_t *s,
    ngx_http_imgbill_redis_handler_pt handler, void *data);
ngx_http_imgbill_redis_cmd_t *ngx_http_imgbill_redis_release(
    ngx_http_imgbill_main_conf_t *mcf, ngx_str_t *account,
    ngx_str_t *request_id, ngx_int_t hold,
    ngx_http_imgbill_redis_handler_pt handler, void *data);
ngx_int_t ngx_http_imgbill_redis_release_key(
    ngx_http_imgbill_main_conf_t *mcf, ngx_str_t *request_id,
    u_char *key_hash, ngx_http_imgbill_redis_handler_pt handler, void *data);

/* ngx_http_imgbill_journal.c */
void ngx_http_imgbill_journal_settle(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_http_imgbill_settle_t *s);
void ngx_http_imgbill_journal_release(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_str_t *request_id, u_char *key_hash);
ngx_int_t ngx_http_imgbill_journal_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_journal_wake(ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_money.c */
ngx_int_t ngx_http_imgbill_parse_money(u_char *p, size_t len);
ngx_int_t ngx_http_imgbill_metered_charge(ngx_http_imgbill_price_t *price,
    ngx_int_t prompt_tokens, ngx_int_t completion_tokens);
ngx_int_t ngx_http_imgbill_metered_hold(ngx_http_imgbill_price_t *price,
    ngx_int_t prompt_tokens);
u_char *ngx_http_imgbill_format_money(u_char *buf, ngx_int_t units);


extern ngx_module_t  ngx_http_imgbill_module;


#endif /* _NGX_HTTP_IMGBILL_MODULE_H_INCLUDED_ */
