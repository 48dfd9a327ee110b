
/*
 * imgbill: the module's configuration, and the files that read it at
 * configuration time.  The request's context and the request's path are
 * ngx_http_imgbill_ctx.h's; the layers below have a header each:
 * api/ngx_http_imgbill_api.h (the APIs), charge/ngx_http_imgbill_charge.h
 * (money, the ways of charging), redis/ngx_http_imgbill_redis.h (the
 * store), parse/ (the parsers).
 */


#ifndef _NGX_HTTP_IMGBILL_MODULE_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_imgbill_api.h"
#include "ngx_http_imgbill_charge.h"
#include "ngx_http_imgbill_redis.h"


/* nginx names no constant for it */
#define NGX_HTTP_IMGBILL_PAYMENT_REQUIRED  402

#define NGX_HTTP_IMGBILL_BODY_LIMIT   (64 * 1024 * 1024)

#define NGX_HTTP_IMGBILL_IMAGE_LIMIT  (5 * 1024 * 1024)   /* the seed's */
/* the whole replies one worker holds in memory at once; past it a reply
   waits in a file */
#define NGX_HTTP_IMGBILL_REPLY_MEMORY (64 * 1024 * 1024)

/* a time in an error's message: "2026-12-31T23:59:59Z" */
#define NGX_HTTP_IMGBILL_TIME_LEN  sizeof("-2147483648-12-31T23:59:59Z")

/* a request id: 16 random bytes in hex, as nginx's $request_id */
#define NGX_HTTP_IMGBILL_ID_BYTES  16
#define NGX_HTTP_IMGBILL_ID_BATCH  64


typedef struct ngx_http_imgbill_metrics_s    ngx_http_imgbill_metrics_t;
typedef struct ngx_http_imgbill_keys_s       ngx_http_imgbill_keys_t;


/* a worker's own, from init_process on: no configuration */
typedef struct {
    ngx_http_imgbill_store_t       *store;
    ngx_http_imgbill_keys_t        *keys;      /* seen valid lately */
    off_t                           reading;   /* bytes of the request
                                                  bodies being read */
    size_t                          replies;   /* bytes of whole replies
                                                  held in memory */
    ngx_queue_t                     spares;    /* reply buffers kept for
                                                  the next replies, newest
                                                  first (see
                                                  ngx_http_imgbill_spool.c) */
    size_t                          spare;     /* ... their bytes */
    struct evp_md_st               *sha256;    /* EVP_MD, fetched once
                                                  (ngx_http_imgbill_key.c)
                                                  or NULL */
    /* its request ids to come, drawn in batches: see
       ngx_http_imgbill_access.c */
    ngx_uint_t                      request_ids_left;
    u_char                          request_ids[NGX_HTTP_IMGBILL_ID_BATCH
                                                * NGX_HTTP_IMGBILL_ID_BYTES];
} ngx_http_imgbill_worker_t;


typedef struct {
    ngx_http_imgbill_redis_conf_t   redis;
    ngx_msec_t                      trim;      /* imgbill_memory_trim;
                                                  0: off */
    ngx_msec_t                      key_cache; /* imgbill_key_cache */
    off_t                           in_flight; /* imgbill_bodies_in_flight;
                                                  0: off */
    size_t                          reply_memory;  /* imgbill_reply_memory */
    ngx_int_t                       request_id_index;
    ngx_int_t                       key_index;  /* $imgbill_key_hash */
    ngx_array_t                    *billed;    /* locations naming
                                                  "imgbill", checked after
                                                  the merge, and those
                                                  serving a model list */

    ngx_shm_zone_t                 *metrics_zone;
    ngx_http_imgbill_metrics_t     *metrics;   /* in the zone */
    ngx_array_t                    *models;    /* ngx_str_t: the priced
                                                  models, as metrics label
                                                  them */

    ngx_http_imgbill_worker_t      *worker;    /* NULL outside a worker */
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
    ngx_array_t                    *listed;    /* imgbill_models: ngx_str_t,
                                                  the models it lists */
    ngx_array_t                    *cors;      /* imgbill_cors: ngx_str_t,
                                                  "*" or origins; NULL:
                                                  off */
    u_char                         *file;      /* its "imgbill", for what */
    ngx_uint_t                      line;      /* is checked after merging */
} ngx_http_imgbill_loc_conf_t;


/* a location noted by the merge, for what is decided after it */
typedef struct {
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_core_srv_conf_t       *cscf;      /* its server */
    ngx_http_imgbill_loc_conf_t    *lcf;
    unsigned                        list:1;    /* it serves a model list;
                                                  else it relays */
} ngx_http_imgbill_billed_t;


/* ngx_http_imgbill_module.c */
ngx_array_t *ngx_http_imgbill_prices(ngx_http_imgbill_loc_conf_t *lcf);
ngx_http_imgbill_store_t *ngx_http_imgbill_store(ngx_http_request_t *r);

/* ngx_http_imgbill_health.c */
char *ngx_http_imgbill_health_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_imgbill_check.c */
ngx_int_t ngx_http_imgbill_check_note(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf, ngx_uint_t list);
ngx_int_t ngx_http_imgbill_check(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf);
ngx_http_upstream_conf_t *ngx_http_imgbill_proxy_conf(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf);

/* ngx_http_imgbill_tariff.c */
char *ngx_http_imgbill_price_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_imgbill_money_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_imgbill_metrics.c */
char *ngx_http_imgbill_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_imgbill_metrics_zone(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf);
ngx_int_t ngx_http_imgbill_metrics_add_model(ngx_conf_t *cf,
    ngx_str_t *model);
ngx_http_imgbill_stats_t *ngx_http_imgbill_metrics_stats(
    ngx_http_imgbill_main_conf_t *mcf);

/* ngx_http_imgbill_account.c */
char *ngx_http_imgbill_serve_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_imgbill_spool.c */
char *ngx_http_imgbill_reply_buffer_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_imgbill_spool_merge(ngx_conf_t *cf,
    ngx_http_imgbill_loc_conf_t *conf);

/* ngx_http_imgbill_cors.c */
char *ngx_http_imgbill_cors_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_imgbill_cors_preflight(ngx_http_request_t *r,
    ngx_uint_t reads);
ngx_int_t ngx_http_imgbill_cors_headers(ngx_http_request_t *r);

/* ngx_http_imgbill_filter.c */
ngx_int_t ngx_http_imgbill_filter_init(ngx_conf_t *cf);

/* ngx_http_imgbill_variables.c */
ngx_int_t ngx_http_imgbill_add_variables(ngx_conf_t *cf);

/* ngx_http_imgbill_keys.c */
ngx_http_imgbill_keys_t *ngx_http_imgbill_keys_init(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_imgbill_keys_known(ngx_http_imgbill_main_conf_t *mcf,
    u_char *hash);
void ngx_http_imgbill_keys_seen(ngx_http_imgbill_main_conf_t *mcf,
    u_char *hash);
void ngx_http_imgbill_keys_forget(ngx_http_imgbill_main_conf_t *mcf,
    u_char *hash);

/* ngx_http_imgbill_spool.c: a worker's spare reply buffers freed, those
   no reply took for idle ms (0: all) */
void ngx_http_imgbill_spares_free(ngx_http_imgbill_worker_t *w,
    ngx_msec_t idle);

/* ngx_http_imgbill_key.c: the worker's SHA-256 fetched, and let go */
void ngx_http_imgbill_sha256_init(ngx_http_imgbill_worker_t *w);
void ngx_http_imgbill_sha256_done(ngx_http_imgbill_worker_t *w);

/* ngx_http_imgbill_trim.c */
char *ngx_http_imgbill_trim_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_imgbill_trim_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf);

extern ngx_module_t  ngx_http_imgbill_module;


#endif /* _NGX_HTTP_IMGBILL_MODULE_H_INCLUDED_ */
