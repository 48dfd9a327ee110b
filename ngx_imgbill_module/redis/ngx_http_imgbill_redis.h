
/*
 * imgbill: the store, where money is held and settled, as the request's
 * path sees it.  Behind this header: the Redis script and its client, the
 * batch that sends its commands, WAIT, the connection and Sentinel, the
 * journal of what Redis could not take, and the refresh of long holds
 * (ngx_http_imgbill_redis_int.h joins them).  Nothing here names hiredis:
 * the request's path calls down into the store, which never calls up.
 */


#ifndef _NGX_HTTP_IMGBILL_REDIS_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_IMGBILL_KEY_HASH_LEN 64   /* sha256, hex */
#define NGX_HTTP_IMGBILL_KEY_ID_LEN   12   /* the hash's first digits: what
                                              operators and ledgers call a
                                              key or a code */
#define NGX_HTTP_IMGBILL_ACCOUNT_MAX  64
#define NGX_HTTP_IMGBILL_REQUEST_ID_MAX  64

/* what an account's info command serves (imgbill_serve) */
#define NGX_HTTP_IMGBILL_SERVE_NONE          0
#define NGX_HTTP_IMGBILL_SERVE_ACCOUNT       1
#define NGX_HTTP_IMGBILL_SERVE_LEDGER        2
#define NGX_HTTP_IMGBILL_SERVE_SUBSCRIPTION  3
#define NGX_HTTP_IMGBILL_SERVE_USAGE         4
#define NGX_HTTP_IMGBILL_SERVE_REDEEM        5   /* a POST: no info */
#define NGX_HTTP_IMGBILL_SERVE_KEYS          6   /* GET, POST, DELETE: no
                                                    info */

/* how a command ended */
#define NGX_HTTP_IMGBILL_REPLY_OK      0
#define NGX_HTTP_IMGBILL_REPLY_LOST    1   /* no answer: it may have run */
#define NGX_HTTP_IMGBILL_REPLY_ERROR   2   /* refused, or not understood */
#define NGX_HTTP_IMGBILL_REPLY_UNSENT  3   /* never written to Redis: it
                                              cannot have run */

/* the admit command's answers */
#define NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY  -1
#define NGX_HTTP_IMGBILL_ADMIT_REFUSED       0   /* the gate is not met */
#define NGX_HTTP_IMGBILL_ADMIT_HELD          1
/* ... refused by the key's own limits */
#define NGX_HTTP_IMGBILL_ADMIT_KEY_EXPIRED  -2
#define NGX_HTTP_IMGBILL_ADMIT_KEY_MODEL    -3
#define NGX_HTTP_IMGBILL_ADMIT_KEY_ADDRESS  -4
#define NGX_HTTP_IMGBILL_ADMIT_KEY_LIMIT    -5
/* the redeem command's answers, besides an unknown key */
#define NGX_HTTP_IMGBILL_REDEEM_UNKNOWN     -2
#define NGX_HTTP_IMGBILL_REDEEM_SPENT       -3
#define NGX_HTTP_IMGBILL_REDEEM_EXPIRED     -4
#define NGX_HTTP_IMGBILL_REDEEM_CREDITED     1
/* the key commands' answers, besides an unknown key, an expired caller
   and an address outside its networks (as admit's) */
#define NGX_HTTP_IMGBILL_KEYS_TAKEN          0   /* the new key's hash */
#define NGX_HTTP_IMGBILL_KEYS_DONE           1
#define NGX_HTTP_IMGBILL_KEYS_WIDER         -6   /* limit: what */
#define NGX_HTTP_IMGBILL_KEYS_TOO_MANY      -7   /* available: how many */
#define NGX_HTTP_IMGBILL_KEYS_NOT_FOUND     -8
/* ... what a new key asked wider than its maker */
#define NGX_HTTP_IMGBILL_WIDER_LIMIT         1   /* available: what is left */
#define NGX_HTTP_IMGBILL_WIDER_DAILY         2   /* available: likewise */
#define NGX_HTTP_IMGBILL_WIDER_EXPIRES       3   /* when: the maker's */
#define NGX_HTTP_IMGBILL_WIDER_MODELS        4
#define NGX_HTTP_IMGBILL_WIDER_IPS           5

/* info usage: the ledger before the per-day totals is too long to sum */
#define NGX_HTTP_IMGBILL_INFO_UNSUMMED       2

/* what the store counts (ngx_http_imgbill_stats_t.redis) */
#define NGX_HTTP_IMGBILL_REDIS_ERROR      0
#define NGX_HTTP_IMGBILL_REDIS_TIMEOUT    1
#define NGX_HTTP_IMGBILL_REDIS_RECONNECT  2
#define NGX_HTTP_IMGBILL_REDIS_EVENTS     3

/* Redis round trips, in microseconds: the upper bounds of the buckets */
#define NGX_HTTP_IMGBILL_RTT_BUCKETS      12


/* a Sentinel's address, resolved at configuration */
typedef struct {
    ngx_str_t                       host;      /* numeric, NUL-terminated */
    in_port_t                       port;
} ngx_http_imgbill_addr_t;


/* imgbill_redis and its company, as configured */
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
    ngx_msec_t                      outage_wait;  /* imgbill_redis_outage_
                                                     wait; 0: off */
    ngx_uint_t                      outage_max;   /* admissions waiting,
                                                     per worker */
    u_char                         *wait_file;  /* where it was said, for
                                                   what is checked after the
                                                   configuration is read */
    ngx_uint_t                      wait_line;
    time_t                          hold_ttl;
    ngx_open_file_t                *journal;   /* NULL: off */
    off_t                           journal_reserve;  /* free space below
                                                         which to warn */
} ngx_http_imgbill_redis_conf_t;


/* what the store counts, in the metrics' shared zone: atomic adds */
typedef struct {
    ngx_atomic_t                    redis[NGX_HTTP_IMGBILL_REDIS_EVENTS];
    ngx_atomic_t                    rtt[NGX_HTTP_IMGBILL_RTT_BUCKETS + 1];
    ngx_atomic_t                    rtt_sum;   /* microseconds */
    ngx_atomic_t                    journal_lines;
    ngx_atomic_t                    journal_owed;  /* at the last replay,
                                                      and written since */
    ngx_atomic_t                    unrecorded;  /* lines neither Redis
                                                    nor the journal took */
} ngx_http_imgbill_stats_t;


typedef struct ngx_http_imgbill_store_s  ngx_http_imgbill_store_t;
typedef struct ngx_http_imgbill_cmd_s    ngx_http_imgbill_cmd_t;


/* a hold placed and not yet settled, as its request keeps it */
typedef struct {
    ngx_queue_t                     queue;
    ngx_str_t                       request_id;
    ngx_str_t                       account;
    ngx_int_t                       hold;
    time_t                          since;     /* placed, or last
                                                  refreshed */
    ngx_str_t                       key;       /* the key's id if it has
                                                  limits, else empty */
    unsigned                        settling:1;  /* its settlement, in
                                                    flight, ends it */
} ngx_http_imgbill_held_t;


/* an API's name, as the journal takes it */
#define NGX_HTTP_IMGBILL_API_NAME_MAX  32


/* one settlement, as the settle script and the journal see it */
typedef struct {
    ngx_str_t                       request_id;
    ngx_str_t                       account;
    ngx_str_t                       model;
    ngx_uint_t                      channel;  /* NGX_HTTP_IMGBILL_METERED,
                                                 _FAST */
    ngx_int_t                       charge;
    ngx_int_t                       hold;     /* 0: not known */
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
    ngx_uint_t                      images;   /* delivered; a journal line
                                                 without: 1 */
    ngx_str_t                       api;      /* the API's name; empty:
                                                 not known (a journal line
                                                 from before) */
    time_t                          decided;  /* when the charge was
                                                 decided: the ledger
                                                 entry's time, replayed or
                                                 not; 0: now */
    ngx_str_t                       key;      /* the key's id, for the
                                                 ledger; empty: not known
                                                 (a journal line from
                                                 before) */
    ngx_uint_t                      key_limits;  /* the key has limits:
                                                    its spend counts */
} ngx_http_imgbill_settle_t;


/* a command's reply, parsed; account points into it during the handler */
typedef struct {
    ngx_uint_t                      rc;
    ngx_int_t                       status;     /* admit: as above; settle:
                                                   1 applied, 0 earlier;
                                                   reverse: 1 given back,
                                                   0 earlier, 2 never
                                                   settled;
                                                   release: 1 released;
                                                   lookup: as admit */
    ngx_str_t                       account;    /* admit, lookup */
    ngx_int_t                       balance;    /* admit, settle,
                                                   reverse */
    ngx_int_t                       available;  /* admit; refused by the
                                                   key's limit: what it
                                                   leaves */
    ngx_int_t                       limit;      /* admit: 1 the key has
                                                   limits; refused by one:
                                                   1 total, 2 daily; keys:
                                                   NGX_HTTP_IMGBILL_WIDER_* */
    ngx_int_t                       held;       /* info */
    ngx_int_t                       more;       /* info, ledger: 1 if more
                                                   entries follow */
    ngx_int_t                       charged;    /* info, usage; redeem:
                                                   the amount credited */
    ngx_int_t                       when;       /* redeem: when the code
                                                   was spent, or expired;
                                                   admit: when the key
                                                   expired */
    ngx_uint_t                      nentries;   /* info, ledger: read them
                                                   with
                                                   ngx_http_imgbill_ledger_
                                                   entry(); keys: with
                                                   ngx_http_imgbill_key_
                                                   row() */
    void                           *entries;
} ngx_http_imgbill_reply_t;


/* what a key holder asks of the info command */
typedef struct {
    ngx_uint_t                      serve;      /* NGX_HTTP_IMGBILL_SERVE_* */
    ngx_uint_t                      limit;
    ngx_str_t                       cursor;     /* a stream id, or empty */
    ngx_str_t                       from;       /* stream ids (ms) */
    ngx_str_t                       to;
} ngx_http_imgbill_info_t;


/* one entry of an account's ledger, its strings inside the reply */
typedef struct {
    ngx_str_t                       id;
    ngx_str_t                       type;
    ngx_str_t                       request_id;  /* a charge's or a
                                                    reversal's; empty for
                                                    other entries */
    ngx_str_t                       channel;
    ngx_str_t                       model;
    ngx_str_t                       api;         /* empty: not recorded */
    ngx_str_t                       key;         /* the id of the key that
                                                    spent (or redeemed);
                                                    empty: not recorded */
    ngx_str_t                       reason;
    ngx_int_t                       ts;
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
    ngx_int_t                       images;
    ngx_int_t                       amount;
    ngx_int_t                       balance;
    unsigned                        reversal:1;  /* request_id's charge
                                                    given back */
} ngx_http_imgbill_entry_t;


/* a key as the key commands show it, its strings inside the reply ("":
   none); amounts in units, times in unix seconds, networks as "4:" or
   "6:", the address's hex digits, "/" and the prefix length */
typedef enum {
    ngx_http_imgbill_row_id = 0,
    ngx_http_imgbill_row_name,
    ngx_http_imgbill_row_created,
    ngx_http_imgbill_row_limit,
    ngx_http_imgbill_row_spent,
    ngx_http_imgbill_row_daily_limit,
    ngx_http_imgbill_row_today,
    ngx_http_imgbill_row_expires,
    ngx_http_imgbill_row_models,        /* comma separated */
    ngx_http_imgbill_row_ips,           /* comma separated */
    ngx_http_imgbill_row_last_used,
    ngx_http_imgbill_row_made_by,
    ngx_http_imgbill_row_current,       /* "1": the caller */
    ngx_http_imgbill_row_fields
} ngx_http_imgbill_row_e;


/* what a key holder asks of their keys */
typedef struct {
    u_char                         *key_hash;  /* the caller's */
    ngx_str_t                       address;   /* as an admission's */
    ngx_str_t                       id;        /* list: one key (empty:
                                                  all); delete: the key */
    u_char                         *new_hash;  /* new: the new key's */
    ngx_str_t                       limits[6]; /* new: name, limit, daily
                                                  limit, expires, models,
                                                  networks ("": none) */
} ngx_http_imgbill_key_ask_t;


typedef void (*ngx_http_imgbill_reply_pt)(ngx_http_imgbill_reply_t *reply,
    void *data);


/* ngx_http_imgbill_redis_conf.c: the directives, with their offset to
   the configuration in the module's main conf */
char *ngx_http_imgbill_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_imgbill_redis_wait_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_imgbill_redis_outage_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_imgbill_journal_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_imgbill_redis_create_conf(ngx_http_imgbill_redis_conf_t *rc);
char *ngx_http_imgbill_redis_init_conf(ngx_conf_t *cf,
    ngx_http_imgbill_redis_conf_t *rc);

/* ngx_http_imgbill_store.c: a worker's store, and its holds */
ngx_http_imgbill_store_t *ngx_http_imgbill_store_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_redis_conf_t *rc, ngx_http_imgbill_stats_t *stats);
void ngx_http_imgbill_store_exit(ngx_http_imgbill_store_t *store);
void ngx_http_imgbill_store_hold(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_held_t *h);
void ngx_http_imgbill_store_unhold(ngx_http_imgbill_held_t *h);

/* ngx_http_imgbill_redis.c: the Redis a worker uses */
ngx_str_t *ngx_http_imgbill_store_redis(ngx_http_imgbill_store_t *store);
extern ngx_msec_t  ngx_http_imgbill_rtt_buckets[];

/* ngx_http_imgbill_script.c: one function per command */
/* what an admission asks for, besides the money */
typedef struct {
    u_char                         *key_hash;
    ngx_str_t                       model;
    ngx_str_t                       address;   /* "4:" or "6:" and the
                                                  client's address in hex */
} ngx_http_imgbill_asker_t;

ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_admit(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_asker_t *asker,
    ngx_str_t *request_id, ngx_int_t gate, ngx_int_t hold,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_reverse(
    ngx_http_imgbill_store_t *store, ngx_str_t *account,
    ngx_str_t *request_id, time_t charged_at, ngx_str_t *key,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_settle(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_settle_t *s,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_release(
    ngx_http_imgbill_store_t *store, ngx_str_t *account,
    ngx_str_t *request_id, ngx_int_t hold, ngx_str_t *key,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_lookup(
    ngx_http_imgbill_store_t *store, u_char *key_hash,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_probe(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_reply_pt handler,
    void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_info(
    ngx_http_imgbill_store_t *store, u_char *key_hash,
    ngx_http_imgbill_info_t *info, ngx_http_imgbill_reply_pt handler,
    void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_redeem(
    ngx_http_imgbill_store_t *store, u_char *key_hash, u_char *code_hash,
    ngx_http_imgbill_reply_pt handler, void *data);

ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_key_list(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_key_ask_t *ask,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_key_new(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_key_ask_t *ask,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_http_imgbill_cmd_t *ngx_http_imgbill_script_key_del(
    ngx_http_imgbill_store_t *store, ngx_http_imgbill_key_ask_t *ask,
    ngx_http_imgbill_reply_pt handler, void *data);
ngx_int_t ngx_http_imgbill_key_row(ngx_http_imgbill_reply_t *reply,
    ngx_uint_t i, ngx_str_t *row);

/* ngx_http_imgbill_batch.c: a command in flight gets another handler
   (NULL: none) when its request goes */
void ngx_http_imgbill_batch_rebind(ngx_http_imgbill_cmd_t *cmd,
    ngx_http_imgbill_reply_pt handler, void *data);

/* ngx_http_imgbill_journal.c: what Redis could not take, kept on disk;
   NGX_ERROR: not kept either (the error log says why) */
ngx_int_t ngx_http_imgbill_journal_settle(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_http_imgbill_settle_t *s);
ngx_int_t ngx_http_imgbill_journal_reverse(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_str_t *account, ngx_str_t *request_id,
    time_t charged_at, ngx_str_t *key);
ngx_int_t ngx_http_imgbill_journal_release(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_str_t *request_id, u_char *key_hash);

/* ngx_http_imgbill_ledger.c: the info command's ledger, during its
   handler */
ngx_int_t ngx_http_imgbill_ledger_entry(ngx_http_imgbill_reply_t *reply,
    ngx_uint_t i, ngx_http_imgbill_entry_t *entry);
size_t ngx_http_imgbill_ledger_size(ngx_http_imgbill_reply_t *reply);


#endif /* _NGX_HTTP_IMGBILL_REDIS_H_INCLUDED_ */
