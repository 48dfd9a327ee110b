
/*
 * imgbill: a billing relay for OpenAI-compatible image generation.
 *
 * The internal API between the module's files, in the order a request
 * meets them:
 *
 *   ngx_http_imgbill_module.c    directives, configuration, the channels;
 *   ngx_http_imgbill_redis_conf.c  imgbill_redis, imgbill_redis_wait;
 *   ngx_http_imgbill_tariff.c    the prices and amounts as configured;
 *   ngx_http_imgbill_check.c     what "nginx -t" refuses after the merge;
 *   ngx_http_imgbill_ctx.c       a request's life: its context and state,
 *                                the $imgbill_* variables, the pool cleanup
 *                                and the orphans that outlive a request;
 *   ngx_http_imgbill_access.c    access phase: key, body, admission;
 *   ngx_http_imgbill_body.c      what the request asks for: Gemini's path,
 *                                the body read, validated, and made to
 *                                ask a stream's upstream for usage;
 *   ngx_http_imgbill_key.c       where each API puts its key, hashed and
 *                                kept from the upstream and the logs;
 *   ngx_http_imgbill_models.c    the model lists the module serves itself;
 *   ngx_http_imgbill_account.c   what a key holder reads of their account:
 *                                balance, ledger, OpenAI's billing pages;
 *   ngx_http_imgbill_request.c   the request validator: JSON, model, images;
 *   ngx_http_imgbill_filter.c    header and body filters: hold the reply,
 *                                decide the charge, settle, emit;
 *   ngx_http_imgbill_spool.c     where a held reply waits: memory, then a
 *                                temporary file; and how it goes out;
 *   ngx_http_imgbill_stream.c    a streamed reply: usage asked for, events
 *                                passed or held, the end settled, trailers;
 *   ngx_http_imgbill_sse.c       an event stream split into events, each
 *                                fed to the scanner;
 *   ngx_http_imgbill_response.c  the JSON error and X-Imgbill-* headers;
 *   ngx_http_imgbill_script.c    the Redis script's client: one function
 *                                per command (its keys, arguments and
 *                                reply);
 *   ngx_http_imgbill_script.lua  the script itself (built into
 *                                ngx_http_imgbill_script_lua.h);
 *   ngx_http_imgbill_batch.c     how commands travel: queued, sent as one
 *                                call per turn of the event loop;
 *   ngx_http_imgbill_wait.c      a call's settlements held until WAIT says
 *                                replicas have them;
 *   ngx_http_imgbill_redis.c     hiredis' async API on nginx's event loop:
 *                                connection, timeouts, reconnection;
 *   ngx_http_imgbill_redis_link.c  a hiredis context's events on nginx's;
 *   ngx_http_imgbill_sentinel.c  where the master is, asked of Sentinel;
 *   ngx_http_imgbill_journal.c   settlements Redis could not take, kept on
 *                                disk and replayed on reconnection;
 *   ngx_http_imgbill_scan.c      one-pass scanner of the upstream reply;
 *   ngx_http_imgbill_metrics.c   Prometheus counters in a shared zone;
 *   ngx_http_imgbill_money.c     fixed-point money: parse, hold, charge,
 *                                format.
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

#include "ngx_http_imgbill_api.h"
#include "ngx_http_imgbill_charge.h"
#include "ngx_http_imgbill_scan.h"
#include "ngx_http_imgbill_sse.h"


/* what a location serves itself to a key holder (imgbill_serve) */
#define NGX_HTTP_IMGBILL_SERVE_NONE          0
#define NGX_HTTP_IMGBILL_SERVE_ACCOUNT       1
#define NGX_HTTP_IMGBILL_SERVE_LEDGER        2
#define NGX_HTTP_IMGBILL_SERVE_SUBSCRIPTION  3
#define NGX_HTTP_IMGBILL_SERVE_USAGE         4

/* nginx names no constant for it */
#define NGX_HTTP_IMGBILL_PAYMENT_REQUIRED  402

#define NGX_HTTP_IMGBILL_BODY_LIMIT   (64 * 1024 * 1024)

#define NGX_HTTP_IMGBILL_IMAGE_LIMIT  (5 * 1024 * 1024)   /* the seed's */
/* the most of a whole reply held in memory; the rest waits in a file */
#define NGX_HTTP_IMGBILL_REPLY_BUFFER (256 * 1024)

/* r->buffered has four bits; 0x08 is the image filter's, which never
   shares a location with an API relay */
#define NGX_HTTP_IMGBILL_BUFFERED     0x08


#define NGX_HTTP_IMGBILL_KEY_HASH_LEN 64   /* sha256, hex */
#define NGX_HTTP_IMGBILL_ACCOUNT_MAX  64
#define NGX_HTTP_IMGBILL_REQUEST_ID_MAX  64
/* a request id: 16 random bytes in hex, as nginx's $request_id */
#define NGX_HTTP_IMGBILL_ID_BYTES  16
#define NGX_HTTP_IMGBILL_ID_BATCH  64

/* how long a settled request id stays known to the settle script: longer
   than any journal replay can be late */
#define NGX_HTTP_IMGBILL_SETTLED_TTL  "604800"


typedef struct ngx_http_imgbill_redis_s      ngx_http_imgbill_redis_t;
typedef struct ngx_http_imgbill_client_s     ngx_http_imgbill_client_t;
typedef struct ngx_http_imgbill_replayer_s   ngx_http_imgbill_replayer_t;
typedef struct ngx_http_imgbill_cmd_s        ngx_http_imgbill_cmd_t;
typedef struct ngx_http_imgbill_stream_s     ngx_http_imgbill_stream_t;
typedef struct ngx_http_imgbill_metrics_s    ngx_http_imgbill_metrics_t;
typedef struct ngx_http_imgbill_sentinel_s   ngx_http_imgbill_sentinel_t;


/* a Sentinel's address, resolved at configuration */
typedef struct {
    ngx_str_t                       host;      /* numeric, NUL-terminated */
    in_port_t                       port;
} ngx_http_imgbill_addr_t;


typedef struct {
    ngx_str_t                       host;      /* numeric, or a unix path;
                                                  under Sentinel the master's
                                                  name */
    in_port_t                       port;      /* 0 for a unix socket */
    ngx_str_t                       password;
    ngx_int_t                       db;
    ngx_msec_t                      timeout;

    ngx_array_t                    *sentinels;  /* ngx_http_imgbill_addr_t,
                                                   or NULL: host is the
                                                   master */
    ngx_str_t                       sentinel_password;
    ngx_int_t                       wait_replicas;  /* imgbill_redis_wait;
                                                       0: off */
    ngx_msec_t                      wait_timeout;
    time_t                          hold_ttl;
    ngx_msec_t                      trim;       /* imgbill_memory_trim;
                                                   0: off */

    ngx_int_t                       request_id_index;
    /* this worker's request ids to come, drawn in batches: see
       ngx_http_imgbill_access.c */
    ngx_uint_t                      request_ids_left;
    u_char                          request_ids[NGX_HTTP_IMGBILL_ID_BATCH
                                                * NGX_HTTP_IMGBILL_ID_BYTES];
    ngx_open_file_t                *journal;   /* NULL: off */
    ngx_array_t                    *billed;    /* locations naming
                                                  "imgbill", checked after
                                                  the merge */

    /* this worker's connection, script client and journal replay, from
       init_process on */
    ngx_http_imgbill_redis_t       *redis;
    ngx_http_imgbill_sentinel_t    *sentinel;  /* NULL: a fixed address */
    ngx_http_imgbill_client_t      *client;
    ngx_http_imgbill_replayer_t    *replayer;
    ngx_queue_t                     inflight;  /* contexts holding money */

    ngx_shm_zone_t                 *metrics_zone;
    ngx_http_imgbill_metrics_t     *metrics;   /* in the zone */
    ngx_array_t                    *models;    /* ngx_str_t: the priced
                                                  models, as metrics label
                                                  them */
} ngx_http_imgbill_main_conf_t;


/* read only once merged (ngx_http_imgbill_tariff_t says why) */

typedef struct {
    ngx_uint_t                      channel;
    ngx_http_imgbill_api_t         *api;
    ngx_flag_t                      models;    /* serves the model list */
    ngx_uint_t                      serve;     /* NGX_HTTP_IMGBILL_SERVE_* */
    ngx_http_imgbill_tariff_t       tariff;
    size_t                          body_limit;
    size_t                          image_limit;
    ngx_uint_t                      max_images;    /* per request */
    size_t                          reply_buffer;  /* 0: off */
    ngx_path_t                     *temp_path;
} ngx_http_imgbill_loc_conf_t;


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
    ngx_http_imgbill_free_upstream_cut
} ngx_http_imgbill_free_e;


/* how a request ended, beyond "charged" (0) and the free reasons */
#define NGX_HTTP_IMGBILL_END_REJECTED     100
#define NGX_HTTP_IMGBILL_END_LISTED       101
#define NGX_HTTP_IMGBILL_END_UNFINISHED   102

/* what ngx_http_imgbill_metrics_count() counts */
#define NGX_HTTP_IMGBILL_REDIS_ERROR      0
#define NGX_HTTP_IMGBILL_REDIS_TIMEOUT    1
#define NGX_HTTP_IMGBILL_REDIS_RECONNECT  2
#define NGX_HTTP_IMGBILL_REDIS_EVENTS     3
#define NGX_HTTP_IMGBILL_HOLD_PLACED      10
#define NGX_HTTP_IMGBILL_JOURNAL_LINE     11


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
    ngx_http_imgbill_streaming     /* an event stream passing through */
} ngx_http_imgbill_state_e;


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_imgbill_state_e        state;
    ngx_queue_t                     inflight;  /* in mcf->inflight while its
                                                  hold is placed */
    ngx_uint_t                      channel;
    ngx_http_imgbill_api_t         *api;

    ngx_str_t                       request_id;
    u_char                          key_hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t                       account;
    ngx_str_t                       model;
    ngx_http_imgbill_price_t       *price;
    ngx_uint_t                      images_asked;  /* n, candidateCount */
    ngx_int_t                       hold;
    time_t                          held_since;    /* placed, or last
                                                      refreshed */

    ngx_http_imgbill_error_t        error;

    ngx_http_imgbill_cmd_t         *cmd;       /* in flight, if any */

    /* the held reply: its bytes in memory, or all in file once it has
       one; read by the scanner as they come */
    ngx_uint_t                      upstream_status;
    u_char                         *body;
    u_char                         *last;
    u_char                         *end;
    off_t                           held;      /* bytes taken */
    ngx_temp_file_t                *file;
    ngx_output_chain_ctx_t         *output;    /* the file going out */
    ngx_http_imgbill_scanner_t     *scanner;
    ngx_http_imgbill_error_t        replace;   /* a 502 instead of the reply */

    ngx_http_imgbill_stream_t      *stream;    /* an event stream's reading */

    ngx_int_t                       prompt_tokens;      /* -1: unknown */
    ngx_int_t                       completion_tokens;  /* -1: unknown */
    ngx_uint_t                      images;    /* delivered, as billed */
    ngx_int_t                       charge;
    ngx_int_t                       balance;
    ngx_http_imgbill_free_e         free_reason;
    ngx_http_imgbill_free_e         charge_reason;  /* charged all the same:
                                                       no_usage, client_gone,
                                                       upstream_cut; or none */

    unsigned                        too_large:1;
    unsigned                        not_held:1;     /* the file failed */
    unsigned                        need_in_memory:1;  /* r->main_filter_
                                                          need_in_memory,
                                                          before ours */
    unsigned                        balance_known:1;
    unsigned                        settle_failed:1;
    unsigned                        holding:1;      /* a hold was placed */
    unsigned                        usage_asked:1;  /* the client asked for
                                                       a stream's usage */
    unsigned                        usage_added:1;  /* imgbill asked the
                                                       upstream for usage */
} ngx_http_imgbill_ctx_t;


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
    ngx_uint_t                      images;   /* delivered; a journal line
                                                 without: 1 */
} ngx_http_imgbill_settle_t;


/* the script's commands, numbered as the .lua file's "run" table, from 1 */
typedef enum {
    ngx_http_imgbill_cmd_admit = 0,
    ngx_http_imgbill_cmd_settle,
    ngx_http_imgbill_cmd_release,
    ngx_http_imgbill_cmd_release_key,
    ngx_http_imgbill_cmd_lookup,
    ngx_http_imgbill_cmd_info,
    ngx_http_imgbill_cmd_refresh
} ngx_http_imgbill_script_e;


/* how a command ended */
#define NGX_HTTP_IMGBILL_REPLY_OK      0
#define NGX_HTTP_IMGBILL_REPLY_LOST    1   /* no answer: it may have run */
#define NGX_HTTP_IMGBILL_REPLY_ERROR   2   /* refused, or not understood */

/* the admit command's answers */
#define NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY  -1
#define NGX_HTTP_IMGBILL_ADMIT_REFUSED       0   /* the gate is not met */
#define NGX_HTTP_IMGBILL_ADMIT_HELD          1

/* a command's reply, parsed; account points into it during the handler */
typedef struct {
    ngx_uint_t                      rc;
    ngx_int_t                       status;     /* admit: as above; settle:
                                                   1 applied, 0 earlier;
                                                   release: 1 released;
                                                   lookup: as admit */
    ngx_str_t                       account;    /* admit, lookup */
    ngx_int_t                       balance;    /* admit, settle */
    ngx_int_t                       available;  /* admit */
    ngx_int_t                       held;       /* info */
    ngx_int_t                       more;       /* info, ledger: 1 if more
                                                   entries follow */
    ngx_int_t                       charged;    /* info, usage */
    redisReply                     *entries;    /* info, ledger: XREVRANGE's
                                                   reply, during the
                                                   handler */
} ngx_http_imgbill_reply_t;


/* what a key holder asks of the info command */
typedef struct {
    ngx_uint_t                      serve;      /* NGX_HTTP_IMGBILL_SERVE_* */
    ngx_uint_t                      limit;
    ngx_str_t                       cursor;     /* a stream id, or empty */
    ngx_str_t                       from;       /* stream ids (ms) */
    ngx_str_t                       to;
} ngx_http_imgbill_info_t;

typedef void (*ngx_http_imgbill_reply_pt)(ngx_http_imgbill_reply_t *reply,
    void *data);


/* one call through the Redis connection; its handler gets NULL if lost */
typedef struct ngx_http_imgbill_redis_call_s  ngx_http_imgbill_redis_call_t;

typedef void (*ngx_http_imgbill_redis_pt)(ngx_http_imgbill_redis_call_t *call,
    redisReply *reply);

struct ngx_http_imgbill_redis_call_s {
    ngx_http_imgbill_redis_pt       handler;
};


/* one hiredis connection on nginx's event loop: the master's, or the one
   asking a Sentinel; closed() runs once hiredis has let it go */
typedef struct ngx_http_imgbill_redis_link_s  ngx_http_imgbill_redis_link_t;

struct ngx_http_imgbill_redis_link_s {
    redisAsyncContext              *ac;
    ngx_connection_t               *connection;
    ngx_log_t                      *log;
    void                          (*closed)(ngx_http_imgbill_redis_link_t *l);
    unsigned                        writing:1;
};


/* ngx_http_imgbill_module.c */
ngx_array_t *ngx_http_imgbill_prices(ngx_http_imgbill_loc_conf_t *lcf);

/* ngx_http_imgbill_redis_conf.c */
char *ngx_http_imgbill_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_imgbill_redis_wait_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

/* ngx_http_imgbill_check.c */
ngx_int_t ngx_http_imgbill_check_note(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_check(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf);
ngx_http_upstream_conf_t *ngx_http_imgbill_proxy_conf(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf);

/* ngx_http_imgbill_tariff.c */
char *ngx_http_imgbill_price_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_imgbill_money_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_imgbill_ctx.c */
ngx_int_t ngx_http_imgbill_add_variables(ngx_conf_t *cf);
ngx_http_imgbill_ctx_t *ngx_http_imgbill_get_ctx(ngx_http_request_t *r);
ngx_http_imgbill_ctx_t *ngx_http_imgbill_create_ctx(ngx_http_request_t *r);
void ngx_http_imgbill_set_state(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_state_e state);
void ngx_http_imgbill_settlement(ngx_http_imgbill_ctx_t *ctx,
    ngx_http_imgbill_settle_t *s);
void ngx_http_imgbill_release(ngx_http_imgbill_ctx_t *ctx);
ngx_uint_t ngx_http_imgbill_ended(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
void ngx_http_imgbill_inflight_init(ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_inflight_exit(ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_access.c */
ngx_int_t ngx_http_imgbill_access_handler(ngx_http_request_t *r);
ngx_http_variable_value_t *ngx_http_imgbill_request_id(ngx_http_request_t *r,
    ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_body.c */
ngx_int_t ngx_http_imgbill_request_target(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_read_request(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_key.c */
ngx_int_t ngx_http_imgbill_api_key(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, u_char *key_hash);
void ngx_http_imgbill_mask_query(ngx_http_request_t *r, ngx_str_t *name);
ngx_int_t ngx_http_imgbill_strip_query_arg(ngx_http_request_t *r,
    ngx_str_t *name);
ngx_int_t ngx_http_imgbill_mask_handler(ngx_http_request_t *r);

/* ngx_http_imgbill_models.c */
ngx_int_t ngx_http_imgbill_models_handler(ngx_http_request_t *r);

/* ngx_http_imgbill_account.c */
char *ngx_http_imgbill_serve_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_imgbill_serve_args(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_info_t *info);
ngx_int_t ngx_http_imgbill_serve_reply(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_reply_t *reply);
ngx_int_t ngx_http_imgbill_serve_handler(ngx_http_request_t *r);

/* ngx_http_imgbill_metrics.c */
char *ngx_http_imgbill_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_imgbill_metrics_zone(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_metrics_add_model(ngx_conf_t *cf,
    ngx_str_t *model);
ngx_int_t ngx_http_imgbill_metrics_log(ngx_http_request_t *r);
const char *ngx_http_imgbill_reason(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_metrics_handler(ngx_http_request_t *r);
void ngx_http_imgbill_metrics_count(ngx_http_imgbill_main_conf_t *mcf,
    ngx_uint_t what);
void ngx_http_imgbill_metrics_rtt(ngx_http_imgbill_main_conf_t *mcf,
    ngx_msec_t usec);
void ngx_http_imgbill_metrics_owed(ngx_http_imgbill_main_conf_t *mcf,
    ngx_uint_t owed);

/* ngx_http_imgbill_filter.c */
ngx_int_t ngx_http_imgbill_filter_init(ngx_conf_t *cf);
void ngx_http_imgbill_billing(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_scan_t *found,
    ngx_uint_t delivered, ngx_http_imgbill_bill_t *bill);
ngx_int_t ngx_http_imgbill_charge(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, ngx_http_imgbill_scan_t *scan);
ngx_int_t ngx_http_imgbill_settle(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_spool.c */
char *ngx_http_imgbill_reply_buffer_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_imgbill_spool_merge(ngx_conf_t *cf,
    ngx_http_imgbill_loc_conf_t *conf);
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
void ngx_http_imgbill_stream_abandoned(ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_stream_cut(ngx_http_imgbill_ctx_t *ctx);
ngx_int_t ngx_http_imgbill_stream_worth(ngx_http_imgbill_ctx_t *ctx);

/* ngx_http_imgbill_response.c */
void ngx_http_imgbill_set_error(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err, ngx_uint_t status,
    ngx_http_imgbill_err_e kind, const char *code, const char *fmt, ...);
ngx_buf_t *ngx_http_imgbill_error_body(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err);
ngx_int_t ngx_http_imgbill_add_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len);
ngx_int_t ngx_http_imgbill_money_header(ngx_http_request_t *r, char *name,
    ngx_int_t units);
void ngx_http_imgbill_strip_headers(ngx_list_t *headers, ngx_uint_t request);
void ngx_http_imgbill_hide_header(ngx_table_elt_t *h);
ngx_int_t ngx_http_imgbill_money_trailer(ngx_http_request_t *r, char *name,
    ngx_int_t units);
ngx_int_t ngx_http_imgbill_send_json(ngx_http_request_t *r, ngx_buf_t *b);
ngx_int_t ngx_http_imgbill_send_text(ngx_http_request_t *r, ngx_buf_t *b,
    char *type);

/* ngx_http_imgbill_script.c */
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_admit(
    ngx_http_imgbill_main_conf_t *mcf, u_char *key_hash,
    ngx_str_t *request_id, ngx_int_t gate, ngx_int_t hold,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_settle(
    ngx_http_imgbill_main_conf_t *mcf, ngx_http_imgbill_settle_t *s,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_release(
    ngx_http_imgbill_main_conf_t *mcf, ngx_str_t *account,
    ngx_str_t *request_id, ngx_int_t hold, ngx_http_imgbill_reply_pt handler,
    void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_release_key(
    ngx_http_imgbill_main_conf_t *mcf, ngx_str_t *request_id,
    u_char *key_hash, ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_refresh(
    ngx_http_imgbill_main_conf_t *mcf, ngx_str_t *account,
    ngx_str_t *request_id, ngx_int_t hold);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_lookup(
    ngx_http_imgbill_main_conf_t *mcf, u_char *key_hash,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_info(
    ngx_http_imgbill_main_conf_t *mcf, u_char *key_hash,
    ngx_http_imgbill_info_t *info, ngx_http_imgbill_reply_pt handler,
    void *data);
ngx_str_t *ngx_http_imgbill_script_name(ngx_http_imgbill_script_e script);
ngx_uint_t ngx_http_imgbill_script_parse(ngx_http_imgbill_script_e script,
    redisReply *e, ngx_http_imgbill_reply_t *reply);

/* ngx_http_imgbill_batch.c */
ngx_int_t ngx_http_imgbill_batch_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_batch_done(ngx_http_imgbill_main_conf_t *mcf);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_batch_queue(
    ngx_http_imgbill_main_conf_t *mcf, ngx_http_imgbill_script_e script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_imgbill_reply_pt handler, void *data);
void ngx_http_imgbill_batch_rebind(ngx_http_imgbill_cmd_t *cmd,
    ngx_http_imgbill_reply_pt handler, void *data);
void ngx_http_imgbill_batch_wake(ngx_http_imgbill_main_conf_t *mcf,
    ngx_int_t rc);

/* ngx_http_imgbill_redis.c */
ngx_int_t ngx_http_imgbill_redis_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_redis_done(ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_redis_ready(ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_redis_open(ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_redis_call(ngx_http_imgbill_main_conf_t *mcf,
    ngx_http_imgbill_redis_call_t *call, int argc, const char **argv,
    const size_t *argvlen);
ngx_int_t ngx_http_imgbill_redis_master(ngx_http_imgbill_main_conf_t *mcf,
    char *host, in_port_t port);
void ngx_http_imgbill_redis_failed(ngx_http_imgbill_main_conf_t *mcf);
ngx_uint_t ngx_http_imgbill_redis_demoted(ngx_http_imgbill_main_conf_t *mcf,
    char *error);

/* ngx_http_imgbill_redis_link.c */
ngx_int_t ngx_http_imgbill_redis_attach(ngx_http_imgbill_redis_link_t *link,
    redisAsyncContext *ac);

/* ngx_http_imgbill_lifetime.c */
ngx_int_t ngx_http_imgbill_lifetime_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_trim.c */
char *ngx_http_imgbill_trim_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_imgbill_trim_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_sentinel.c */
ngx_int_t ngx_http_imgbill_sentinel_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_sentinel_done(ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_sentinel_lookup(ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_sentinel_skip(ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_journal.c */
void ngx_http_imgbill_journal_settle(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_http_imgbill_settle_t *s);
void ngx_http_imgbill_journal_release(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_str_t *request_id, u_char *key_hash);
ngx_int_t ngx_http_imgbill_journal_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);
void ngx_http_imgbill_journal_wake(ngx_http_imgbill_main_conf_t *mcf);

extern ngx_module_t  ngx_http_imgbill_module;


#endif /* _NGX_HTTP_IMGBILL_MODULE_H_INCLUDED_ */
