
/*
 * The journal: money whose settlement could not reach Redis.
 *
 * A charge is earned once the upstream has produced the image; if Redis is
 * unreachable at that moment the charge must not be lost.  It is appended
 * to the journal, a file nginx itself opens (the master creates it before
 * the workers start and reopens it on USR1, like a log), and applied once
 * Redis is back.  The settle script is idempotent per request id, so a
 * settlement that did reach Redis after all (a timeout with the command
 * already sent) is not applied twice.
 *
 * One line per event, appended with a single write(2) to an O_APPEND file:
 *
 *   S <request id> <account> <charge> <channel> <prompt> <completion> <model>
 *   R <request id> <sha256 of the API key>    an admission lost in flight
 *   D <request id>                            replayed, nothing left to do
 *
 * A replay reads the whole file, sends every S and R line without a D, and
 * appends D for each that Redis confirmed.  It runs whenever a worker
 * connects, and, while this worker knows of lines still owed, every
 * NGX_HTTP_IMGBILL_REPLAY_EVERY: money comes home without waiting for the
 * next request.  Several workers may replay the same line: harmless.
 *
 * A replay that finds nothing owed empties the file, so it stays small.
 * Writers and the emptying hold a write lock on the shared descriptor
 * (fcntl locks are per process, unlike flock on an inherited descriptor),
 * so a line appended after the last read is never truncated away.
 */


#include "ngx_http_imgbill_module.h"


/* beyond this a journal is not read: the operator must look (alert) */
#define NGX_HTTP_IMGBILL_JOURNAL_MAX   (256 * 1024 * 1024)

#define NGX_HTTP_IMGBILL_LINE_MAX      1024
#define NGX_HTTP_IMGBILL_REPLAY_EVERY  1000


struct ngx_http_imgbill_replayer_s {
    ngx_http_imgbill_main_conf_t  *mcf;
    ngx_event_t                    replay;     /* posted: replay now */
    ngx_event_t                    retry;      /* while lines are owed */
    ngx_uint_t                     sent;       /* replies still to come */
    unsigned                       owed:1;
    unsigned                       failed:1;
};


/* one replayed line, waiting for Redis */
typedef struct {
    ngx_http_imgbill_replayer_t   *rp;
    ngx_str_t                      request_id;
    u_char                         data[1];
} ngx_http_imgbill_replay_line_t;


/* the journal read back */
typedef struct {
    u_char                        *buf;
    u_char                        *last;
    ngx_str_t                     *done;       /* sorted ids of D lines */
    ngx_uint_t                     ndone;
    unsigned                       partial:1;  /* the file is larger */
} ngx_http_imgbill_journal_read_t;


static void ngx_http_imgbill_journal_write(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, u_char *line, size_t len);
static void ngx_http_imgbill_journal_owed(ngx_http_imgbill_main_conf_t *mcf);
static void ngx_http_imgbill_journal_retry(ngx_event_t *ev);
static void ngx_http_imgbill_journal_replay(ngx_event_t *ev);
static ngx_int_t ngx_http_imgbill_journal_send(ngx_http_imgbill_replayer_t *rp,
    u_char *p, u_char *eol);
static ngx_int_t ngx_http_imgbill_journal_read(
    ngx_http_imgbill_main_conf_t *mcf, ngx_log_t *log,
    ngx_http_imgbill_journal_read_t *jr);
static void ngx_http_imgbill_journal_free(ngx_http_imgbill_journal_read_t *jr);
static ngx_uint_t ngx_http_imgbill_journal_done(
    ngx_http_imgbill_journal_read_t *jr, ngx_str_t *request_id);
static int ngx_libc_cdecl ngx_http_imgbill_journal_cmp(const void *one,
    const void *two);
static ngx_uint_t ngx_http_imgbill_journal_owes(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_read_t *jr);
static void ngx_http_imgbill_journal_compact(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log);
static void ngx_http_imgbill_journal_replayed(
    ngx_http_imgbill_reply_t *reply, void *data);
static ngx_int_t ngx_http_imgbill_journal_field(u_char **p, u_char *last,
    ngx_str_t *field);


ngx_int_t
ngx_http_imgbill_journal_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_file_info_t               fi;
    ngx_http_imgbill_replayer_t  *rp;

    if (mcf->journal == NULL) {
        return NGX_OK;
    }

    rp = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_replayer_t));
    if (rp == NULL) {
        return NGX_ERROR;
    }

    rp->mcf = mcf;

    rp->replay.handler = ngx_http_imgbill_journal_replay;
    rp->replay.data = rp;
    rp->replay.log = cycle->log;

    rp->retry.handler = ngx_http_imgbill_journal_retry;
    rp->retry.data = rp;
    rp->retry.log = cycle->log;

    /* the file stays; a quitting worker leaves the rest to the next ones */
    rp->retry.cancelable = 1;

    mcf->replayer = rp;

    /* what earlier workers left, this one takes up without waiting */

    if (ngx_fd_info(mcf->journal->fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) > 0)
    {
        ngx_http_imgbill_journal_owed(mcf);
    }

    return NGX_OK;
}


/* called when a connection to Redis is up */

void
ngx_http_imgbill_journal_wake(ngx_http_imgbill_main_conf_t *mcf)
{
    if (mcf->replayer) {
        ngx_post_event(&mcf->replayer->replay, &ngx_posted_events);
    }
}


void
ngx_http_imgbill_journal_settle(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_http_imgbill_settle_t *s)
{
    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    p = ngx_slprintf(line, line + sizeof(line) - 1,
                     "S %V %V %i %V %i %i %V", &s->request_id, &s->account,
                     s->charge, ngx_http_imgbill_channel_name(s->channel),
                     ngx_max(s->prompt_tokens, 0),
                     ngx_max(s->completion_tokens, 0), &s->model);
    *p++ = LF;

    ngx_http_imgbill_journal_write(mcf, log, line, p - line);
    ngx_http_imgbill_journal_owed(mcf);
}


void
ngx_http_imgbill_journal_release(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_str_t *request_id, u_char *key_hash)
{
    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    p = ngx_slprintf(line, line + sizeof(line) - 1, "R %V %*s", request_id,
                     (size_t) NGX_HTTP_IMGBILL_KEY_HASH_LEN, key_hash);
    *p++ = LF;

    ngx_http_imgbill_journal_write(mcf, log, line, p - line);
    ngx_http_imgbill_journal_owed(mcf);
}


static void
ngx_http_imgbill_journal_write(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, u_char *line, size_t len)
{
    ssize_t    n;
    ngx_err_t  err;

    if (mcf->journal == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "imgbill: no imgbill_journal to keep \"%*s\"",
                      len - 1, line);
        return;
    }

    /*
     * One write to an O_APPEND file: lines of several workers never mix.
     * The lock only waits for a worker emptying the file, which holds it
     * for one read of a journal with nothing owed.
     */

    err = ngx_lock_fd(mcf->journal->fd);
    if (err) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      ngx_lock_fd_n " on the journal \"%V\" failed",
                      &mcf->journal->name);
    }

    n = ngx_write_fd(mcf->journal->fd, line, len);
    err = ngx_errno;

    (void) ngx_unlock_fd(mcf->journal->fd);

    if (n != (ssize_t) len) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      "imgbill: cannot write \"%*s\" to the journal \"%V\"",
                      len - 1, line, &mcf->journal->name);
        return;
    }

    if (line[0] != 'D') {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "imgbill: journaled \"%*s\" until redis is back",
                      len - 1, line);
    }
}


static void
ngx_http_imgbill_journal_owed(ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_http_imgbill_replayer_t  *rp;

    rp = mcf->replayer;

    if (rp == NULL) {
        return;
    }

    rp->owed = 1;

    if (!rp->retry.timer_set) {
        ngx_add_timer(&rp->retry, NGX_HTTP_IMGBILL_REPLAY_EVERY);
    }
}


/* while lines are owed: get a connection, whose callback replays */

static void
ngx_http_imgbill_journal_retry(ngx_event_t *ev)
{
    ngx_http_imgbill_replayer_t *rp = ev->data;

    if (!rp->owed || ngx_exiting) {
        return;
    }

    ngx_add_timer(&rp->retry, NGX_HTTP_IMGBILL_REPLAY_EVERY);

    if (rp->sent == 0 && ngx_http_imgbill_redis_ready(rp->mcf) == NGX_OK) {
        ngx_http_imgbill_journal_replay(&rp->replay);
    }
}


static void
ngx_http_imgbill_journal_replay(ngx_event_t *ev)
{
    ngx_http_imgbill_replayer_t *rp = ev->data;

    u_char                           *p, *eol, *next;
    ngx_uint_t                        owed, sent;
    ngx_http_imgbill_journal_read_t   jr;

    if (rp->sent) {
        /* the previous replay's replies are still coming */
        return;
    }

    if (ngx_http_imgbill_journal_read(rp->mcf, ev->log, &jr) != NGX_OK) {
        return;
    }

    owed = 0;
    sent = 0;
    rp->failed = 0;

    for (p = jr.buf; p < jr.last; p = next) {

        eol = ngx_strlchr(p, jr.last, LF);
        if (eol == NULL) {
            break;                  /* a line still being written */
        }

        next = eol + 1;

        if (!ngx_http_imgbill_journal_owes(p, eol, &jr)) {
            continue;
        }

        owed++;

        if (ngx_http_imgbill_journal_send(rp, p, eol) == NGX_OK) {
            sent++;
        }
    }

    rp->sent = sent;

    if (owed == 0) {
        rp->owed = 0;

        /* what lies past a partial read stays for the operator (alert) */

        if (!jr.partial) {
            ngx_http_imgbill_journal_compact(rp->mcf, ev->log);
        }

        ngx_http_imgbill_journal_free(&jr);
        return;
    }

    ngx_http_imgbill_journal_free(&jr);
    ngx_http_imgbill_journal_owed(rp->mcf);

    if (sent) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "imgbill: replaying %ui of %ui owed journal line(s) "
                      "from \"%V\"", sent, owed, &rp->mcf->journal->name);
    }
}


static ngx_int_t
ngx_http_imgbill_journal_send(ngx_http_imgbill_replayer_t *rp, u_char *p,
    u_char *eol)
{
    ngx_int_t                        channel_id;
    ngx_str_t                        type, hash, charge, channel, pt, ct;
    ngx_http_imgbill_settle_t        s;
    ngx_http_imgbill_replay_line_t  *rl;

    /* journal_owes() has checked the type and the id */

    s.hold = 0;             /* the journal does not keep it */

    (void) ngx_http_imgbill_journal_field(&p, eol, &type);
    (void) ngx_http_imgbill_journal_field(&p, eol, &s.request_id);

    rl = ngx_alloc(sizeof(ngx_http_imgbill_replay_line_t) + s.request_id.len,
                   rp->replay.log);
    if (rl == NULL) {
        return NGX_ERROR;
    }

    rl->rp = rp;
    rl->request_id.data = rl->data;
    rl->request_id.len = s.request_id.len;
    ngx_memcpy(rl->data, s.request_id.data, s.request_id.len);

    if (*type.data == 'R'
        && ngx_http_imgbill_journal_field(&p, eol, &hash) == NGX_OK
        && hash.len == NGX_HTTP_IMGBILL_KEY_HASH_LEN
        && ngx_http_imgbill_script_release_key(rp->mcf, &s.request_id,
                                   hash.data,
                                   ngx_http_imgbill_journal_replayed, rl)
           != NULL)
    {
        return NGX_OK;
    }

    if (*type.data == 'S'
        && ngx_http_imgbill_journal_field(&p, eol, &s.account) == NGX_OK
        && ngx_http_imgbill_journal_field(&p, eol, &charge) == NGX_OK
        && ngx_http_imgbill_journal_field(&p, eol, &channel) == NGX_OK
        && ngx_http_imgbill_journal_field(&p, eol, &pt) == NGX_OK
        && ngx_http_imgbill_journal_field(&p, eol, &ct) == NGX_OK
        && ngx_http_imgbill_journal_field(&p, eol, &s.model) == NGX_OK
        && (s.charge = ngx_atoi(charge.data, charge.len)) != NGX_ERROR
        && (s.prompt_tokens = ngx_atoi(pt.data, pt.len)) != NGX_ERROR
        && (s.completion_tokens = ngx_atoi(ct.data, ct.len)) != NGX_ERROR
        && (channel_id = ngx_http_imgbill_channel_find(channel.data,
                                                       channel.len))
           != NGX_ERROR)
    {
        s.channel = channel_id;

        if (ngx_http_imgbill_script_settle(rp->mcf, &s,
                                       ngx_http_imgbill_journal_replayed, rl)
            != NULL)
        {
            return NGX_OK;
        }
    }

    ngx_free(rl);

    return NGX_ERROR;
}


/*
 * The whole file, and the ids of its D lines sorted, so that finding what
 * is owed stays n log n however long an outage made the journal.
 */

static ngx_int_t
ngx_http_imgbill_journal_read(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_http_imgbill_journal_read_t *jr)
{
    u_char           *p, *eol;
    off_t             size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_uint_t        lines;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    ngx_memzero(jr, sizeof(ngx_http_imgbill_journal_read_t));

    fd = ngx_open_file(mcf->journal->name.data, NGX_FILE_RDONLY,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "imgbill: cannot open the journal \"%V\"",
                      &mcf->journal->name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_fd_info_n " \"%V\" failed", &mcf->journal->name);
        goto failed;
    }

    size = ngx_file_size(&fi);

    if (size > NGX_HTTP_IMGBILL_JOURNAL_MAX) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "imgbill: the journal \"%V\" has grown to %O bytes; "
                      "only the first %d are replayed",
                      &mcf->journal->name, size, NGX_HTTP_IMGBILL_JOURNAL_MAX);
        size = NGX_HTTP_IMGBILL_JOURNAL_MAX;
        jr->partial = 1;
    }

    if (size == 0) {
        (void) ngx_close_file(fd);
        return NGX_OK;
    }

    jr->buf = ngx_alloc((size_t) size, log);
    if (jr->buf == NULL) {
        goto failed;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = mcf->journal->name;
    file.log = log;

    n = ngx_read_file(&file, jr->buf, (size_t) size, 0);
    if (n == NGX_ERROR) {
        goto failed;
    }

    (void) ngx_close_file(fd);
    fd = NGX_INVALID_FILE;

    jr->last = jr->buf + n;

    lines = 0;
    for (p = jr->buf; p < jr->last; p++) {
        lines += (*p == LF);
    }

    jr->done = ngx_alloc((lines + 1) * sizeof(ngx_str_t), log);
    if (jr->done == NULL) {
        goto failed;
    }

    for (p = jr->buf; p < jr->last; p = eol + 1) {

        eol = ngx_strlchr(p, jr->last, LF);
        if (eol == NULL) {
            break;
        }

        if (eol - p > 2 && p[0] == 'D' && p[1] == ' ') {
            jr->done[jr->ndone].data = p + 2;
            jr->done[jr->ndone].len = eol - p - 2;
            jr->ndone++;
        }
    }

    ngx_qsort(jr->done, jr->ndone, sizeof(ngx_str_t),
              ngx_http_imgbill_journal_cmp);

    return NGX_OK;

failed:

    if (fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(fd);
    }

    ngx_http_imgbill_journal_free(jr);

    return NGX_ERROR;
}


static void
ngx_http_imgbill_journal_free(ngx_http_imgbill_journal_read_t *jr)
{
    if (jr->buf) {
        ngx_free(jr->buf);
    }

    if (jr->done) {
        ngx_free(jr->done);
    }

    ngx_memzero(jr, sizeof(ngx_http_imgbill_journal_read_t));
}


static ngx_uint_t
ngx_http_imgbill_journal_done(ngx_http_imgbill_journal_read_t *jr,
    ngx_str_t *request_id)
{
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = jr->ndone;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ngx_http_imgbill_journal_cmp(request_id, &jr->done[mid]);

        if (rc == 0) {
            return 1;
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return 0;
}


static int ngx_libc_cdecl
ngx_http_imgbill_journal_cmp(const void *one, const void *two)
{
    const ngx_str_t  *a = one;
    const ngx_str_t  *b = two;

    ngx_int_t  rc;

    rc = ngx_memn2cmp(a->data, b->data, a->len, b->len);

    return (rc > 0) - (rc < 0);
}


/* whether the line at p is an S or R line that no D line answers */

static ngx_uint_t
ngx_http_imgbill_journal_owes(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_read_t *jr)
{
    ngx_str_t  type, id;

    return ngx_http_imgbill_journal_field(&p, eol, &type) == NGX_OK
           && type.len == 1 && (*type.data == 'S' || *type.data == 'R')
           && ngx_http_imgbill_journal_field(&p, eol, &id) == NGX_OK
           && !ngx_http_imgbill_journal_done(jr, &id);
}


/*
 * Nothing was owed at the last read; under the lock, make sure nothing
 * came since, and empty the file.  Another worker holding the lock will
 * get its own chance.
 */

static void
ngx_http_imgbill_journal_compact(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log)
{
    u_char                           *p, *eol;
    ngx_fd_t                          fd;
    ngx_uint_t                        owed;
    ngx_http_imgbill_journal_read_t   jr;

    fd = mcf->journal->fd;

    if (ngx_trylock_fd(fd) != 0) {
        return;
    }

    if (ngx_http_imgbill_journal_read(mcf, log, &jr) != NGX_OK) {
        goto done;
    }

    owed = 0;

    for (p = jr.buf; p < jr.last; p = eol + 1) {
        eol = ngx_strlchr(p, jr.last, LF);
        if (eol == NULL) {
            break;
        }

        owed += ngx_http_imgbill_journal_owes(p, eol, &jr);
    }

    if (owed == 0 && jr.buf && !jr.partial && ftruncate(fd, 0) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "imgbill: cannot empty the journal \"%V\"",
                      &mcf->journal->name);
    }

    if (owed) {
        /* lines came in meanwhile: they are owed */
        ngx_http_imgbill_journal_owed(mcf);
    }

    ngx_http_imgbill_journal_free(&jr);

done:

    (void) ngx_unlock_fd(fd);
}


static void
ngx_http_imgbill_journal_replayed(ngx_http_imgbill_reply_t *reply,
    void *data)
{
    ngx_http_imgbill_replay_line_t *rl = data;

    u_char                       *p, line[NGX_HTTP_IMGBILL_LINE_MAX];
    ngx_http_imgbill_replayer_t  *rp;

    rp = rl->rp;

    if (reply->rc == NGX_HTTP_IMGBILL_REPLY_OK) {
        p = ngx_slprintf(line, line + sizeof(line) - 1, "D %V",
                         &rl->request_id);
        *p++ = LF;

        ngx_http_imgbill_journal_write(rp->mcf, ngx_cycle->log, line,
                                       p - line);

    } else {
        rp->failed = 1;
    }

    ngx_free(rl);

    /* all answered: one more read confirms nothing is owed and compacts */

    if (--rp->sent == 0 && !rp->failed) {
        ngx_post_event(&rp->replay, &ngx_posted_events);
    }
}


static ngx_int_t
ngx_http_imgbill_journal_field(u_char **p, u_char *last, ngx_str_t *field)
{
    u_char  *start;

    start = *p;

    while (*p < last && **p != ' ') {
        (*p)++;
    }

    if (*p == start) {
        return NGX_ERROR;
    }

    field->data = start;
    field->len = *p - start;

    if (*p < last) {
        (*p)++;
    }

    return NGX_OK;
}
