
/*
 * Between a lane's client (ngx_http_imgbill_client.c: its commands
 * queued, and kept through an outage), the batch (ngx_http_imgbill_
 * batch.c: them sent as one script call) and WAIT (ngx_http_imgbill_
 * wait.c: the settlements of a call held until replicas have them).
 */


#ifndef _NGX_HTTP_IMGBILL_BATCH_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_BATCH_H_INCLUDED_


#include "ngx_http_imgbill_redis_int.h"


/* per command: its number, how many keys, how many arguments */
#define NGX_HTTP_IMGBILL_CMD_HEAD     3


/* a lane's commands (ngx_http_imgbill_redis_int.h) */
struct ngx_http_imgbill_client_s {
    ngx_event_t                        flush;     /* posted: sends queue */
    ngx_event_t                        fail;      /* posted: no connection
                                                     for the queue */
    ngx_event_t                        retry;     /* the connection tried
                                                     again for what waits */
    ngx_queue_t                        queue;     /* commands not yet sent */
    ngx_uint_t                         inflight;  /* script calls awaited */
    ngx_uint_t                         depth;     /* ... at most */
    ngx_uint_t                         waiting;   /* commands in the queue
                                                     that may wait out an
                                                     outage */
    ngx_msec_t                         backoff;   /* WAIT: 0, or how long
                                                     it only glances */
    ngx_msec_t                         probe;     /* ... until then */
    unsigned                           paused:1;  /* the master turned
                                                     commands back: none
                                                     goes before retry */
    ngx_log_t                         *log;
    ngx_http_imgbill_store_t          *store;
    ngx_http_imgbill_redis_t          *redis;    /* its connection */
};


struct ngx_http_imgbill_cmd_s {
    ngx_queue_t                        queue;
    ngx_http_imgbill_reply_pt          handler;
    void                              *data;
    ngx_http_imgbill_script_e          script;
    ngx_uint_t                         nkeys;
    ngx_uint_t                         argc;
    ngx_str_t                         *argv;    /* keys, then arguments */
    ngx_str_t                          head[NGX_HTTP_IMGBILL_CMD_HEAD];
    ngx_msec_t                         queued;
    unsigned                           waits:1; /* may wait out an outage */
    ngx_http_imgbill_reply_t           reply;   /* a settlement's, until
                                                   WAIT answers */
};


/* one script call: the commands it carries and its argument vector */
typedef struct {
    ngx_http_imgbill_redis_call_t      call;    /* first: the adapter's */
    ngx_http_imgbill_redis_call_t      wait;    /* WAIT's */
    ngx_http_imgbill_client_t         *client;
    ngx_queue_t                        cmds;
    ngx_queue_t                        settled; /* answered, awaiting WAIT */
    ngx_uint_t                         n;
    ngx_uint_t                         waits;   /* WAITs not yet answered */
    unsigned                           settles:1;   /* WAIT wanted */
    unsigned                           evaluated:1; /* the script answered */
    unsigned                           glance:1;    /* WAIT 1 ms */
    int                                argc;
    const char                       **argv;
    size_t                            *argvlen;
    u_char                             nkeys[NGX_INT_T_LEN];
    struct timespec                    sent;    /* for the metrics */
} ngx_http_imgbill_batch_t;


/* ngx_http_imgbill_client.c */
void ngx_http_imgbill_batch_again(ngx_http_imgbill_client_t *cl,
    ngx_queue_t *cmds);

/* ngx_http_imgbill_batch.c */
ngx_int_t ngx_http_imgbill_batch_send(ngx_http_imgbill_client_t *cl,
    ngx_queue_t *cmds, ngx_uint_t n);
void ngx_http_imgbill_batch_fail(ngx_queue_t *cmds);
void ngx_http_imgbill_batch_next(ngx_http_imgbill_client_t *cl);

/* ngx_http_imgbill_wait.c */
ngx_int_t ngx_http_imgbill_batch_wait(ngx_http_imgbill_batch_t *b);
void ngx_http_imgbill_batch_confirm(ngx_http_imgbill_batch_t *b,
    redisReply *reply);


#endif /* _NGX_HTTP_IMGBILL_BATCH_H_INCLUDED_ */
