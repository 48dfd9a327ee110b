
/*
 * Between the journal's files: ngx_http_imgbill_journal.c writes and
 * replays, ngx_http_imgbill_journal_read.c reads back.
 */


#ifndef _NGX_HTTP_IMGBILL_JOURNAL_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_JOURNAL_H_INCLUDED_


#include "ngx_http_imgbill_redis_int.h"


/* the journal read back */
typedef struct {
    u_char                        *buf;
    u_char                        *last;
    ngx_str_t                     *done;       /* sorted ids of D lines */
    ngx_uint_t                     ndone;
    unsigned                       partial:1;  /* the file is larger */
} ngx_http_imgbill_journal_read_t;


/* an H line: a hold its worker left when it began to exit */
typedef struct {
    ngx_str_t                      id;         /* "<request id>@<pid>" */
    ngx_str_t                      request_id;
    ngx_str_t                      account;
    ngx_pid_t                      pid;
    time_t                         until;      /* the hold has expired */
} ngx_http_imgbill_journal_hold_t;


/* an S, R or V line, parsed; its strings point into the journal read */
typedef struct {
    u_char                         type;
    ngx_str_t                      id;         /* what its D line says */
    ngx_http_imgbill_settle_t      settle;     /* S: all of it; V: the
                                                  request id, account */
    ngx_str_t                      key_hash;   /* R */
    time_t                         charged_at; /* V */
} ngx_http_imgbill_journal_line_t;

/* what a line owes: ngx_http_imgbill_journal_owes() */
#define NGX_HTTP_IMGBILL_JOURNAL_NOTHING  0    /* answered, or not ours */
#define NGX_HTTP_IMGBILL_JOURNAL_OWED     1
#define NGX_HTTP_IMGBILL_JOURNAL_BAD      2    /* unanswered, unreadable */


/* ngx_http_imgbill_journal_read.c */
ngx_int_t ngx_http_imgbill_journal_read(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_http_imgbill_journal_read_t *jr);
void ngx_http_imgbill_journal_free(ngx_http_imgbill_journal_read_t *jr);
ngx_uint_t ngx_http_imgbill_journal_owes(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_read_t *jr, ngx_http_imgbill_journal_line_t *l);
ngx_int_t ngx_http_imgbill_journal_line(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_line_t *l);
ngx_int_t ngx_http_imgbill_journal_field(u_char **p, u_char *last,
    ngx_str_t *field);
ngx_int_t ngx_http_imgbill_journal_hold_line(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_hold_t *h);
ngx_uint_t ngx_http_imgbill_journal_hold_due(
    ngx_http_imgbill_journal_hold_t *h);


#endif /* _NGX_HTTP_IMGBILL_JOURNAL_H_INCLUDED_ */
