
/*
 * imgbill: between the store's own files, under the one header the
 * request's path sees (ngx_http_imgbill_redis.h): a worker's store and
 * its parts, hiredis on nginx's event loop, the script's commands.
 *
 *   ngx_http_imgbill_store.c       a worker's store set up and torn down;
 *                                  its holds, refreshed while alive
 *   ngx_http_imgbill_script.c      one function per command of the script
 *   ngx_http_imgbill_ledger.c      the info command's ledger entries
 *   ngx_http_imgbill_client.c      a lane's commands queued, kept through
 *                                  an outage
 *   ngx_http_imgbill_batch.c       ... and sent, one call per turn
 *   ngx_http_imgbill_wait.c        WAIT behind a call that settles
 *   ngx_http_imgbill_redis.c       a lane's connection to the master
 *   ngx_http_imgbill_redis_link.c  a hiredis context's events on nginx's
 *   ngx_http_imgbill_sentinel.c    where the master is, asked of Sentinel
 *   ngx_http_imgbill_journal.c     settlements kept on disk, replayed
 *   ngx_http_imgbill_journal_read.c  ... and read back
 *   ngx_http_imgbill_redis_conf.c  the directives
 */


#ifndef _NGX_HTTP_IMGBILL_REDIS_INT_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_REDIS_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_imgbill_redis.h"
#include "ngx_http_imgbill_charge.h"


/* how long a settled request id stays known to the settle script: longer
   than any journal replay can be late */
#define NGX_HTTP_IMGBILL_SETTLED_TTL  "604800"


typedef struct ngx_http_imgbill_redis_s      ngx_http_imgbill_redis_t;
typedef struct ngx_http_imgbill_client_s     ngx_http_imgbill_client_t;
typedef struct ngx_http_imgbill_replayer_s   ngx_http_imgbill_replayer_t;
typedef struct ngx_http_imgbill_sentinel_s   ngx_http_imgbill_sentinel_t;


/*
 * A worker's connections to Redis, its lanes.  With imgbill_redis_wait,
 * settlements go on a lane of their own: WAIT blocks the connection it is
 * sent on, and counts only the writes made on it, so the settlements and
 * their WAIT share a connection that no admission waits behind.  Without,
 * both lanes are the one connection.
 */
#define NGX_HTTP_IMGBILL_LANE_ADMIT    0
#define NGX_HTTP_IMGBILL_LANE_SETTLE   1
#define NGX_HTTP_IMGBILL_LANES         2


/* a worker's store: its configuration, and its parts from init_process
   on */
struct ngx_http_imgbill_store_s {
    ngx_http_imgbill_redis_conf_t  *conf;
    ngx_http_imgbill_stats_t       *stats;     /* shared; NULL: none */
    ngx_http_imgbill_redis_t       *redis[NGX_HTTP_IMGBILL_LANES];
    ngx_http_imgbill_sentinel_t    *sentinel;  /* NULL: a fixed address */
    ngx_http_imgbill_client_t      *client[NGX_HTTP_IMGBILL_LANES];
    ngx_uint_t                      lanes;     /* connections: 1 or 2 */
    ngx_http_imgbill_replayer_t    *replayer;  /* NULL: no journal */
    ngx_queue_t                     held;      /* ngx_http_imgbill_held_t */
    ngx_event_t                     refresh;
    unsigned                        refusing:1;  /* NOREPLICAS or LOADING
                                                    said, until a write
                                                    goes through */
};


/* the script's commands, numbered as the .lua file's "run" table, from 1 */
typedef enum {
    ngx_http_imgbill_cmd_admit = 0,
    ngx_http_imgbill_cmd_settle,
    ngx_http_imgbill_cmd_release,
    ngx_http_imgbill_cmd_release_key,
    ngx_http_imgbill_cmd_lookup,
    ngx_http_imgbill_cmd_info,
    ngx_http_imgbill_cmd_refresh,
    ngx_http_imgbill_cmd_reverse,
    ngx_http_imgbill_cmd_redeem,
    ngx_http_imgbill_cmd_key_list,
    ngx_http_imgbill_cmd_key_new,
    ngx_http_imgbill_cmd_key_del,
    ngx_http_imgbill_cmd_key_drop       /* the CLI's "imgbill key-del" */
} ngx_http_imgbill_script_e;


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


/* what ngx_http_imgbill_stats_count() counts beside the Redis events */
#define NGX_HTTP_IMGBILL_JOURNAL_LINE     10
#define NGX_HTTP_IMGBILL_UNRECORDED       11


/* ngx_http_imgbill_store.c */
void ngx_http_imgbill_stats_count(ngx_http_imgbill_store_t *store,
    ngx_uint_t what);
void ngx_http_imgbill_stats_rtt(ngx_http_imgbill_store_t *store,
    ngx_msec_t usec);
void ngx_http_imgbill_stats_owed(ngx_http_imgbill_store_t *store,
    ngx_uint_t owed);
void ngx_http_imgbill_stats_owed_add(ngx_http_imgbill_store_t *store);
const char *ngx_http_imgbill_redis_hint(const char *error);

/* ngx_http_imgbill_script.c */
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_release_key(
    ngx_http_imgbill_store_t *store, ngx_str_t *request_id,
    u_char *key_hash, ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_refresh(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_held_t *h);
ngx_str_t *ngx_http_imgbill_script_name(ngx_http_imgbill_script_e script);
ngx_uint_t ngx_http_imgbill_script_parse(ngx_http_imgbill_script_e script,
    redisReply *e, ngx_http_imgbill_reply_t *reply);

/* ngx_http_imgbill_client.c */
ngx_int_t ngx_http_imgbill_batch_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_batch_done(ngx_http_imgbill_store_t *store);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_batch_queue(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_script_e script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_imgbill_reply_pt handler, void *data);
void ngx_http_imgbill_batch_wake(ngx_http_imgbill_client_t *cl,
    ngx_int_t rc);
void ngx_http_imgbill_batch_nowait(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_cmd_t *cmd);

/* ngx_http_imgbill_redis.c: one lane's connection */
ngx_int_t ngx_http_imgbill_redis_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_redis_done(ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_redis_bind(ngx_http_imgbill_redis_t *rd,
    ngx_http_imgbill_client_t *cl);
ngx_int_t ngx_http_imgbill_redis_ready(ngx_http_imgbill_redis_t *rd);
ngx_int_t ngx_http_imgbill_redis_open(ngx_http_imgbill_redis_t *rd);
ngx_int_t ngx_http_imgbill_redis_call(ngx_http_imgbill_redis_t *rd,
    ngx_http_imgbill_redis_call_t *call, int argc, const char **argv,
    const size_t *argvlen);
ngx_int_t ngx_http_imgbill_redis_master(ngx_http_imgbill_store_t *store,
    char *host, in_port_t port);
void ngx_http_imgbill_redis_failed(ngx_http_imgbill_store_t *store);
ngx_uint_t ngx_http_imgbill_redis_demoted(ngx_http_imgbill_redis_t *rd,
    char *error);

/* ngx_http_imgbill_redis_link.c */
ngx_int_t ngx_http_imgbill_redis_attach(ngx_http_imgbill_redis_link_t *link,
    redisAsyncContext *ac);

/* ngx_http_imgbill_sentinel.c */
ngx_int_t ngx_http_imgbill_sentinel_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_sentinel_done(ngx_http_imgbill_store_t *store);
ngx_int_t ngx_http_imgbill_sentinel_lookup(ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_sentinel_skip(ngx_http_imgbill_store_t *store);

/* ngx_http_imgbill_journal.c */
ngx_int_t ngx_http_imgbill_journal_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_journal_wake(ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_journal_holding(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_held_t *h);
void ngx_http_imgbill_journal_leave(ngx_http_imgbill_store_t *store);


#endif /* _NGX_HTTP_IMGBILL_REDIS_INT_H_INCLUDED_ */
