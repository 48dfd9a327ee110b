
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
 *     <images> [<api>] k=<key id>[+] t=<decided at>    (+: the key has
 *                                             limits, its spend counts)
 *   R <request id> <sha256 of the API key>    an admission lost in flight
 *   V <request id>/v <account> <charged at> [k=<key id>]
 *                                             a charge to give back: its
 *                                             reply was never written
 *                                             (the key's, if it has limits)
 *   H <request id>@<pid> <account> <until>    a hold its worker had as it
 *                                             began to exit
 *   D <id>                                    replayed, nothing left to do
 *
 * A replay reads the whole file, sends every S, R, V and H line without a D,
 * and appends D for each that Redis confirmed; an H line waits while the
 * worker that wrote it lives (ngx_http_imgbill_journal_read.c).  A replay
 * runs whenever a worker connects, and every NGX_HTTP_IMGBILL_REPLAY_EVERY
 * while this worker knows of lines still owed or finds the file not empty:
 * money comes home without waiting for the next request.  Several workers
 * may replay the same line: harmless.
 *
 * A worker that exits with holds in flight writes an H line for each, so
 * that the next workers give the money back within seconds instead of
 * imgbill_hold_ttl: when a graceful exit begins (a KILL may end it before
 * its generations do), or from exit_process on a fast one.
 *
 * A replay that finds nothing owed empties the file, so it stays small.
 * Writers and the emptying hold a write lock on the shared descriptor
 * (fcntl locks are per process, unlike flock on an inherited descriptor),
 * so a line appended after the last read is never truncated away.
 */


#include "ngx_http_imgbill_journal.h"

#include <sys/statvfs.h>


#define NGX_HTTP_IMGBILL_LINE_MAX      1024
#define NGX_HTTP_IMGBILL_REPLAY_EVERY  1000


struct ngx_http_imgbill_replayer_s {
    ngx_http_imgbill_store_t      *store;
    ngx_event_t                    replay;     /* posted: replay now */
    ngx_event_t                    tick;       /* every second until the
                                                  worker exits */
    off_t                          size;       /* of the file, last tick */
    off_t                          bad_at;     /* past the last unreadable
                                                  line reported */
    ngx_uint_t                     sent;       /* replies still to come */
    ngx_uint_t                     applied;    /* D lines written since
                                                  lines were first owed */
    ngx_msec_t                     owed_since; /* 0: nothing owed */
    unsigned                       owed:1;
    unsigned                       failed:1;
    unsigned                       stuck:1;    /* nothing owed, yet the
                                                  file cannot be emptied */
    unsigned                       left:1;     /* H lines written: the
                                                  worker is exiting */
    unsigned                       short_of_space:1;  /* said so */
};


/* one replayed line, waiting for Redis */
typedef struct {
    ngx_http_imgbill_replayer_t   *rp;
    ngx_str_t                      request_id;
    u_char                         data[1];
} ngx_http_imgbill_replay_line_t;


static ngx_int_t ngx_http_imgbill_journal_write(
    ngx_http_imgbill_store_t *store, ngx_log_t *log, u_char *line,
    size_t len);
static void ngx_http_imgbill_journal_owed(ngx_http_imgbill_store_t *store);
static void ngx_http_imgbill_journal_tick(ngx_event_t *ev);
static void ngx_http_imgbill_journal_space(ngx_http_imgbill_replayer_t *rp,
    ngx_log_t *log);
static void ngx_http_imgbill_journal_left(ngx_http_imgbill_replayer_t *rp);
static void ngx_http_imgbill_journal_hold(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_held_t *h);
static void ngx_http_imgbill_journal_replay(ngx_event_t *ev);
static ngx_int_t ngx_http_imgbill_journal_send(ngx_http_imgbill_replayer_t *rp,
    u_char *p, u_char *eol, ngx_http_imgbill_journal_line_t *l);
static ngx_int_t ngx_http_imgbill_journal_send_hold(
    ngx_http_imgbill_replayer_t *rp, u_char *p, u_char *eol);
static ngx_int_t ngx_http_imgbill_journal_compact(
    ngx_http_imgbill_store_t *store, ngx_log_t *log);
static void ngx_http_imgbill_journal_replayed(
    ngx_http_imgbill_reply_t *reply, void *data);


ngx_int_t
ngx_http_imgbill_journal_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_store_t *store)
{
    ngx_file_info_t               fi;
    ngx_http_imgbill_replayer_t  *rp;

    if (store->conf->journal == NULL) {
        return NGX_OK;
    }

    rp = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_replayer_t));
    if (rp == NULL) {
        return NGX_ERROR;
    }

    rp->store = store;

    rp->replay.handler = ngx_http_imgbill_journal_replay;
    rp->replay.data = rp;
    rp->replay.log = cycle->log;

    rp->tick.handler = ngx_http_imgbill_journal_tick;
    rp->tick.data = rp;
    rp->tick.log = cycle->log;

    /* the file stays; a quitting worker leaves the rest to the next ones */
    rp->tick.cancelable = 1;

    store->replayer = rp;

    /* what earlier workers left, this one takes up without waiting */

    if (ngx_fd_info(store->conf->journal->fd, &fi) != NGX_FILE_ERROR) {
        rp->size = ngx_file_size(&fi);
        rp->owed = (rp->size > 0);
    }

    ngx_add_timer(&rp->tick, NGX_HTTP_IMGBILL_REPLAY_EVERY);

    ngx_http_imgbill_journal_space(rp, cycle->log);

    return NGX_OK;
}


/*
 * The journal's filesystem, before the journal needs it: a warning when
 * its free space falls under imgbill_journal_reserve, and a notice when
 * it is back (checked at start and every tick; once per crossing).
 */

static void
ngx_http_imgbill_journal_space(ngx_http_imgbill_replayer_t *rp,
    ngx_log_t *log)
{
    off_t           avail;
    struct statvfs  fs;

    if (rp->store->conf->journal_reserve <= 0) {
        return;
    }

    if (fstatvfs(rp->store->conf->journal->fd, &fs) == -1) {
        if (!rp->short_of_space) {
            rp->short_of_space = 1;
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          "imgbill: fstatvfs() of the journal \"%V\" failed",
                          &rp->store->conf->journal->name);
        }

        return;
    }

    avail = (off_t) fs.f_bavail * fs.f_frsize;

    if (avail < rp->store->conf->journal_reserve) {
        if (!rp->short_of_space) {
            rp->short_of_space = 1;
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "imgbill: the journal \"%V\" has %O bytes free, "
                          "under imgbill_journal_reserve (%O): a Redis "
                          "outage could not be journaled for long",
                          &rp->store->conf->journal->name, avail,
                          rp->store->conf->journal_reserve);
        }

        return;
    }

    if (rp->short_of_space) {
        rp->short_of_space = 0;
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "imgbill: the journal \"%V\" has %O bytes free again",
                      &rp->store->conf->journal->name, avail);
    }
}


/* called when a connection to Redis is up */

void
ngx_http_imgbill_journal_wake(ngx_http_imgbill_store_t *store)
{
    if (store->replayer) {
        ngx_post_event(&store->replayer->replay, &ngx_posted_events);
    }
}


ngx_int_t
ngx_http_imgbill_journal_settle(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_http_imgbill_settle_t *s)
{
    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    /* the images, then the API, the key, then the time, last: each was
       added in its time, and a line without them is read as from before;
       the key and the time are marked, as the API may be absent */

    p = ngx_slprintf(line, line + sizeof(line) - 1,
                     "S %V %V %i %V %i %i %V %ui%s%V k=%V%s t=%T",
                     &s->request_id, &s->account, s->charge,
                     ngx_http_imgbill_channel_name(s->channel),
                     ngx_max(s->prompt_tokens, 0),
                     ngx_max(s->completion_tokens, 0), &s->model, s->images,
                     s->api.len ? " " : "", &s->api, &s->key,
                     s->key_limits ? "+" : "",
                     s->decided ? s->decided : ngx_time());
    *p++ = LF;

    return ngx_http_imgbill_journal_write(store, log, line, p - line);
}


/*
 * The V line's id is its own ("/v" after the request id), so that the D
 * line answering the request's S line does not answer it too.
 */

ngx_int_t
ngx_http_imgbill_journal_reverse(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_str_t *account, ngx_str_t *request_id,
    time_t charged_at, ngx_str_t *key)
{
    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    p = ngx_slprintf(line, line + sizeof(line) - 1, "V %V/v %V %T",
                     request_id, account, charged_at);

    if (key) {
        p = ngx_slprintf(p, line + sizeof(line) - 1, " k=%V", key);
    }
    *p++ = LF;

    return ngx_http_imgbill_journal_write(store, log, line, p - line);
}


ngx_int_t
ngx_http_imgbill_journal_release(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_str_t *request_id, u_char *key_hash)
{
    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    p = ngx_slprintf(line, line + sizeof(line) - 1, "R %V %*s", request_id,
                     (size_t) NGX_HTTP_IMGBILL_KEY_HASH_LEN, key_hash);
    *p++ = LF;

    return ngx_http_imgbill_journal_write(store, log, line, p - line);
}


/*
 * One line, whole or not at all.  One write to an O_APPEND file: lines of
 * several workers never mix.  A short write (the disk full) is finished if
 * it can be, else cut back to where the line began, under the lock every
 * writer and the emptying take: a line without its end would swallow the
 * next one written.  NGX_ERROR: the line is not in the journal, and the
 * error log says why with the errno of the failure.
 */

static ngx_int_t
ngx_http_imgbill_journal_write(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, u_char *line, size_t len)
{
    off_t        start;
    size_t       done;
    ssize_t      n;
    ngx_fd_t     fd;
    ngx_err_t    err;
    ngx_uint_t   whole;

    if (store == NULL || store->conf->journal == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "imgbill: no imgbill_journal to keep \"%*s\"",
                      len - 1, line);

        if (store) {
            ngx_http_imgbill_stats_count(store, NGX_HTTP_IMGBILL_UNRECORDED);
        }

        return NGX_ERROR;
    }

    fd = store->conf->journal->fd;

    err = ngx_lock_fd(fd);
    if (err) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      ngx_lock_fd_n " on the journal \"%V\" failed",
                      &store->conf->journal->name);
    }

    start = lseek(fd, 0, SEEK_END);
    done = 0;
    err = 0;

    while (done < len) {
        n = ngx_write_fd(fd, line + done, len - done);

        if (n == -1) {
            err = ngx_errno;

            if (err == NGX_EINTR) {
                continue;
            }

            break;
        }

        if (n == 0) {
            err = NGX_ENOSPC;
            break;
        }

        done += n;
    }

    whole = (done == len);

    if (!whole && done && (start == -1 || ftruncate(fd, start) == -1)) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "imgbill: cannot cut the journal \"%V\" back to %O "
                      "after a short write: its last line is partial",
                      &store->conf->journal->name, start);
    }

    (void) ngx_unlock_fd(fd);

    if (!whole) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      "imgbill: cannot write \"%*s\" to the journal \"%V\"",
                      len - 1, line, &store->conf->journal->name);

        if (line[0] != 'D') {
            ngx_http_imgbill_stats_count(store, NGX_HTTP_IMGBILL_UNRECORDED);
        }

        return NGX_ERROR;
    }

    if (line[0] != 'D') {
        ngx_http_imgbill_stats_count(store, NGX_HTTP_IMGBILL_JOURNAL_LINE);
    }

    if (line[0] == 'S' || line[0] == 'R' || line[0] == 'V') {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "imgbill: journaled \"%*s\" until redis is back",
                      len - 1, line);

        /* owed from now, not from the next replay that Redis answers:
           an alert on the gauge fires during the outage */
        ngx_http_imgbill_stats_owed_add(store);

        ngx_http_imgbill_journal_owed(store);
    }

    return NGX_OK;
}


static void
ngx_http_imgbill_journal_owed(ngx_http_imgbill_store_t *store)
{
    ngx_http_imgbill_replayer_t  *rp;

    rp = store ? store->replayer : NULL;

    if (rp == NULL) {
        return;
    }

    rp->owed = 1;

    if (!rp->tick.timer_set) {
        ngx_add_timer(&rp->tick, NGX_HTTP_IMGBILL_REPLAY_EVERY);
    }
}


/*
 * Every second, with or without traffic.  A worker that has begun to exit
 * journals the holds it still has, and leaves the replay to the next
 * workers.  The others replay while lines are owed, and while the file is
 * not empty: what another process appended (an exiting worker's H lines,
 * written after this one started) is owed until a replay finds it is not,
 * and then empties the file.  A file that cannot be emptied (too large to
 * read whole, or refused: both alert) is read again only when it grows.
 * A replay starts by getting a connection, whose callback replays.
 */

static void
ngx_http_imgbill_journal_tick(ngx_event_t *ev)
{
    ngx_http_imgbill_replayer_t *rp = ev->data;

    off_t            size;
    ngx_file_info_t  fi;

    if (ngx_exiting) {
        ngx_http_imgbill_journal_left(rp);
        return;
    }

    ngx_add_timer(&rp->tick, NGX_HTTP_IMGBILL_REPLAY_EVERY);

    ngx_http_imgbill_journal_space(rp, ev->log);

    if (ngx_fd_info(rp->store->conf->journal->fd, &fi) != NGX_FILE_ERROR) {
        size = ngx_file_size(&fi);

        if (size > 0 && !(rp->stuck && size == rp->size)) {
            rp->owed = 1;
        }

        rp->size = size;
    }

    if (rp->owed && rp->sent == 0
        && ngx_http_imgbill_redis_ready(
               rp->store->redis[NGX_HTTP_IMGBILL_LANE_SETTLE]) == NGX_OK)
    {
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
    ngx_http_imgbill_journal_line_t   l;

    if (rp->sent) {
        /* the previous replay's replies are still coming */
        return;
    }

    if (ngx_http_imgbill_journal_read(rp->store, ev->log, &jr) != NGX_OK) {
        return;
    }

    if (jr.last - jr.buf < rp->bad_at) {
        rp->bad_at = 0;             /* emptied since */
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

        switch (ngx_http_imgbill_journal_owes(p, eol, &jr, &l)) {

        case NGX_HTTP_IMGBILL_JOURNAL_NOTHING:
            continue;

        case NGX_HTTP_IMGBILL_JOURNAL_BAD:

            /* once per line: the file only grows until it is emptied */

            if (p - jr.buf >= rp->bad_at) {
                rp->bad_at = next - jr.buf;
                ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                              "imgbill: the journal line \"%*s\" cannot be "
                              "read: skipped; if it owes money, apply it by "
                              "hand", eol - p, p);
            }

            continue;
        }

        owed++;

        if (ngx_http_imgbill_journal_send(rp, p, eol, &l) == NGX_OK) {
            sent++;
        }
    }

    rp->sent = sent;

    ngx_http_imgbill_stats_owed(rp->store, owed);

    if (owed && rp->owed_since == 0) {
        rp->owed_since = ngx_current_msec;
        rp->applied = 0;
    }

    if (owed == 0 && rp->owed_since) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "imgbill: the journal is drained: %ui line(s) applied "
                      "by this worker, %M ms after it first found one owed",
                      rp->applied, ngx_current_msec - rp->owed_since);
        rp->owed_since = 0;
    }

    if (owed == 0) {
        rp->owed = 0;

        /* what lies past a partial read stays for the operator (alert) */

        rp->stuck = jr.partial
                    || ngx_http_imgbill_journal_compact(rp->store, ev->log)
                       != NGX_OK;

        ngx_http_imgbill_journal_free(&jr);
        return;
    }

    ngx_http_imgbill_journal_free(&jr);
    ngx_http_imgbill_journal_owed(rp->store);

    if (sent) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "imgbill: replaying %ui of %ui owed journal line(s) "
                      "from \"%V\"", sent, owed,
                      &rp->store->conf->journal->name);
    }
}


/*
 * The line owes() has read whole into l.  NGX_OK: sent; NGX_DECLINED: an
 * H line waits; NGX_ERROR: not sent now.
 */

static ngx_int_t
ngx_http_imgbill_journal_send(ngx_http_imgbill_replayer_t *rp, u_char *p,
    u_char *eol, ngx_http_imgbill_journal_line_t *l)
{
    ngx_http_imgbill_cmd_t          *cmd;
    ngx_http_imgbill_replay_line_t  *rl;

    if (l->type == 'H') {
        return ngx_http_imgbill_journal_send_hold(rp, p + 2, eol);
    }

    rl = ngx_alloc(sizeof(ngx_http_imgbill_replay_line_t) + l->id.len,
                   rp->replay.log);
    if (rl == NULL) {
        return NGX_ERROR;
    }

    rl->rp = rp;
    rl->request_id.data = rl->data;
    rl->request_id.len = l->id.len;
    ngx_memcpy(rl->data, l->id.data, l->id.len);

    switch (l->type) {

    case 'R':
        cmd = ngx_http_imgbill_script_release_key(rp->store,
                                        &l->settle.request_id,
                                        l->key_hash.data,
                                        ngx_http_imgbill_journal_replayed, rl);
        break;

    case 'V':
        cmd = ngx_http_imgbill_script_reverse(rp->store, &l->settle.account,
                                        &l->settle.request_id, l->charged_at,
                                        l->settle.key.len ? &l->settle.key
                                                          : NULL,
                                        ngx_http_imgbill_journal_replayed, rl);
        break;

    default:    /* 'S'; the journal does not keep the hold */
        cmd = ngx_http_imgbill_script_settle(rp->store, &l->settle,
                                        ngx_http_imgbill_journal_replayed, rl);
    }

    if (cmd == NULL) {
        ngx_free(rl);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* an H line: NGX_DECLINED while its worker lives, it may yet settle */

static ngx_int_t
ngx_http_imgbill_journal_send_hold(ngx_http_imgbill_replayer_t *rp,
    u_char *p, u_char *eol)
{
    ngx_http_imgbill_replay_line_t   *rl;
    ngx_http_imgbill_journal_hold_t   h;

    if (ngx_http_imgbill_journal_hold_line(p, eol, &h) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!ngx_http_imgbill_journal_hold_due(&h)) {
        return NGX_DECLINED;
    }

    /* the D line names the whole id: it answers this line only */

    rl = ngx_alloc(sizeof(ngx_http_imgbill_replay_line_t) + h.id.len,
                   rp->replay.log);
    if (rl == NULL) {
        return NGX_ERROR;
    }

    rl->rp = rp;
    rl->request_id.data = rl->data;
    rl->request_id.len = h.id.len;
    ngx_memcpy(rl->data, h.id.data, h.id.len);

    /* a key's own hold, if any, expires: on the side of refusing */

    if (ngx_http_imgbill_script_release(rp->store, &h.account, &h.request_id, 0,
                                        NULL,
                                        ngx_http_imgbill_journal_replayed, rl)
        != NULL)
    {
        return NGX_OK;
    }

    ngx_free(rl);

    return NGX_ERROR;
}


/*
 * Nothing was owed at the last read; under the lock, make sure nothing
 * came since, and empty the file.  Another worker holding the lock will
 * get its own chance.  NGX_ERROR: the file refuses to be emptied.
 */

static ngx_int_t
ngx_http_imgbill_journal_compact(ngx_http_imgbill_store_t *store,
    ngx_log_t *log)
{
    u_char                           *p, *eol;
    ngx_fd_t                          fd;
    ngx_int_t                         rc;
    ngx_uint_t                        owed;
    ngx_http_imgbill_journal_read_t   jr;
    ngx_http_imgbill_journal_line_t   l;

    fd = store->conf->journal->fd;

    if (ngx_trylock_fd(fd) != 0) {
        return NGX_OK;
    }

    rc = NGX_OK;

    if (ngx_http_imgbill_journal_read(store, log, &jr) != NGX_OK) {
        goto done;
    }

    owed = 0;

    for (p = jr.buf; p < jr.last; p = eol + 1) {
        eol = ngx_strlchr(p, jr.last, LF);
        if (eol == NULL) {
            break;
        }

        /* an unreadable line was reported by the replay: it goes */

        owed += (ngx_http_imgbill_journal_owes(p, eol, &jr, &l)
                 == NGX_HTTP_IMGBILL_JOURNAL_OWED);
    }

    if (owed == 0 && jr.buf && !jr.partial && ftruncate(fd, 0) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "imgbill: cannot empty the journal \"%V\"",
                      &store->conf->journal->name);
        rc = NGX_ERROR;
    }

    if (owed) {
        /* lines came in meanwhile: they are owed */
        ngx_http_imgbill_journal_owed(store);
    }

    ngx_http_imgbill_journal_free(&jr);

done:

    (void) ngx_unlock_fd(fd);

    return rc;
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

        if (ngx_http_imgbill_journal_write(rp->store, ngx_cycle->log, line,
                                           p - line)
            == NGX_OK)
        {
            rp->applied++;
        }

    } else {
        rp->failed = 1;
    }

    ngx_free(rl);

    /* all answered: one more read confirms nothing is owed and compacts */

    if (--rp->sent == 0 && !rp->failed) {
        ngx_post_event(&rp->replay, &ngx_posted_events);
    }
}


/*
 * A worker's holds in flight as it exits: one H line each, in the journal
 * before a KILL can come.  A graceful exit (reload, quit) writes them when
 * its tick first sees ngx_exiting, then one for each hold placed after
 * that; a fast exit (TERM) writes them from exit_process.
 */

void
ngx_http_imgbill_journal_holding(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_held_t *h)
{
    if (store->replayer && store->replayer->left) {
        ngx_http_imgbill_journal_hold(store, h);
    }
}


void
ngx_http_imgbill_journal_leave(ngx_http_imgbill_store_t *store)
{
    ngx_uint_t    n;
    ngx_queue_t  *q;

    if (store->replayer) {
        ngx_http_imgbill_journal_left(store->replayer);
        return;
    }

    n = 0;

    for (q = ngx_queue_head(&store->held);
         q != ngx_queue_sentinel(&store->held);
         q = ngx_queue_next(q))
    {
        n++;
    }

    if (n) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "imgbill: exiting with %ui hold(s) in flight and no "
                      "imgbill_journal: they expire after imgbill_hold_ttl",
                      n);
    }
}


static void
ngx_http_imgbill_journal_left(ngx_http_imgbill_replayer_t *rp)
{
    ngx_uint_t                n;
    ngx_queue_t              *q, *held;
    ngx_http_imgbill_held_t  *h;

    if (rp->left) {
        return;
    }

    rp->left = 1;

    held = &rp->store->held;
    n = 0;

    for (q = ngx_queue_head(held);
         q != ngx_queue_sentinel(held);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_http_imgbill_held_t, queue);
        ngx_http_imgbill_journal_hold(rp->store, h);
        n++;
    }

    if (n && ngx_terminate) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "imgbill: exiting with %ui generation(s) unfinished; "
                      "their holds are journaled for the next workers to "
                      "release", n);
    }
}


/* "H <request id>@<pid> <account> <until>" */

static void
ngx_http_imgbill_journal_hold(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_held_t *h)
{
    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    p = ngx_slprintf(line, line + sizeof(line) - 1, "H %V@%P %V %T",
                     &h->request_id, ngx_pid, &h->account,
                     ngx_time() + store->conf->hold_ttl);
    *p++ = LF;

    ngx_http_imgbill_journal_write(store, ngx_cycle->log, line, p - line);

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "imgbill: journaled \"%*s\": the hold goes back once "
                  "this worker is gone, unless it settles first",
                  (size_t) (p - line - 1), line);
}
