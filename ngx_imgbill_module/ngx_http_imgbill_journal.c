
/*
 * The journal: money whose settlement could not reach Redis.
 *
 * A charge is earned once the upstream has produced the image; if Redis is
 * unreachable at that moment the charge must not be lost.  It is appended
 * to the journal, a file nginx itself opens (the master creates it before
 * the workers start and reopens it on USR1, like a log), and applied when
 * the worker next connects to Redis.  The settle script is idempotent per
 * request id, so a settlement that did reach Redis after all (a timeout
 * with the command already sent) is not applied twice.
 *
 * One line per event, appended with a single write(2) to an O_APPEND file:
 *
 *   S <request id> <account> <charge> <channel> <prompt> <completion> <model>
 *   R <request id> <sha256 of the API key>    an admission lost in flight
 *   D <request id>                            replayed, nothing left to do
 *
 * Replay reads the file back (it only grows with failures, so it is small),
 * sends every S and R line without a later D, and appends D for each that
 * Redis confirmed.  Several workers may replay the same line: harmless.
 */


#include "ngx_http_imgbill_module.h"


/* replay reads at most this much of the journal per connection */
#define NGX_HTTP_IMGBILL_JOURNAL_MAX  (4 * 1024 * 1024)

#define NGX_HTTP_IMGBILL_LINE_MAX     1024


typedef struct {
    ngx_http_imgbill_main_conf_t  *mcf;
    ngx_str_t                      request_id;
    u_char                         data[1];
} ngx_http_imgbill_replay_t;


static void ngx_http_imgbill_journal_write(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, u_char *line, size_t len);
static ngx_uint_t ngx_http_imgbill_journal_done(u_char *start, u_char *last,
    ngx_str_t *request_id);
static void ngx_http_imgbill_journal_replayed(redisReply *reply, void *data);
static ngx_int_t ngx_http_imgbill_journal_field(u_char **p, u_char *last,
    ngx_str_t *field);


void
ngx_http_imgbill_journal_settle(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, ngx_http_imgbill_settle_t *s)
{
    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    p = ngx_slprintf(line, line + sizeof(line) - 1,
                     "S %V %V %i %s %i %i %V", &s->request_id, &s->account,
                     s->charge,
                     s->channel == NGX_HTTP_IMGBILL_FAST ? "fast" : "metered",
                     ngx_max(s->prompt_tokens, 0),
                     ngx_max(s->completion_tokens, 0), &s->model);
    *p++ = LF;

    ngx_http_imgbill_journal_write(mcf, log, line, p - line);
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
}


static void
ngx_http_imgbill_journal_write(ngx_http_imgbill_main_conf_t *mcf,
    ngx_log_t *log, u_char *line, size_t len)
{
    ssize_t  n;

    if (mcf->journal == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "imgbill: no imgbill_journal to keep \"%*s\"",
                      len - 1, line);
        return;
    }

    /* one write to an O_APPEND file: lines of several workers never mix */

    n = ngx_write_fd(mcf->journal->fd, line, len);

    if (n != (ssize_t) len) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "imgbill: cannot write \"%*s\" to the journal \"%V\"",
                      len - 1, line, &mcf->journal->name);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "imgbill: journaled \"%*s\" until redis is back",
                  len - 1, line);
}


/* posted by the Redis layer once a connection is up */

void
ngx_http_imgbill_journal_replay(ngx_event_t *ev)
{
    ngx_http_imgbill_main_conf_t *mcf = ev->data;

    u_char                     *buf, *p, *last, *eol, *next;
    off_t                       size;
    ssize_t                     n;
    ngx_fd_t                    fd;
    ngx_str_t                   type, hash, charge, channel, pt, ct;
    ngx_uint_t                  sent;
    ngx_file_t                  file;
    ngx_file_info_t             fi;
    ngx_http_imgbill_replay_t  *rp;
    ngx_http_imgbill_settle_t   s;

    if (mcf->journal == NULL) {
        return;
    }

    fd = ngx_open_file(mcf->journal->name.data, NGX_FILE_RDONLY,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, ngx_errno,
                      "imgbill: cannot open the journal \"%V\"",
                      &mcf->journal->name);
        return;
    }

    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        goto done;
    }

    size = ngx_min(ngx_file_size(&fi), NGX_HTTP_IMGBILL_JOURNAL_MAX);

    if (size == 0) {
        goto done;
    }

    buf = ngx_alloc((size_t) size, ev->log);
    if (buf == NULL) {
        goto done;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = mcf->journal->name;
    file.log = ev->log;

    n = ngx_read_file(&file, buf, (size_t) size, 0);
    if (n <= 0) {
        goto done;
    }

    last = buf + n;
    sent = 0;

    for (p = buf; p < last; p = next) {

        eol = ngx_strlchr(p, last, LF);
        if (eol == NULL) {
            break;                  /* a line still being written */
        }

        next = eol + 1;

        if (ngx_http_imgbill_journal_field(&p, eol, &type) != NGX_OK
            || type.len != 1 || *type.data == 'D'
            || ngx_http_imgbill_journal_field(&p, eol, &s.request_id)
               != NGX_OK
            || ngx_http_imgbill_journal_done(next, last, &s.request_id))
        {
            continue;
        }

        rp = ngx_alloc(sizeof(ngx_http_imgbill_replay_t) + s.request_id.len,
                       ev->log);
        if (rp == NULL) {
            break;
        }

        rp->mcf = mcf;
        rp->request_id.data = rp->data;
        rp->request_id.len = s.request_id.len;
        ngx_memcpy(rp->data, s.request_id.data, s.request_id.len);

        if (*type.data == 'R'
            && ngx_http_imgbill_journal_field(&p, eol, &hash) == NGX_OK
            && hash.len == NGX_HTTP_IMGBILL_KEY_HASH_LEN
            && ngx_http_imgbill_redis_release_key(mcf, &s.request_id,
                                       hash.data,
                                       ngx_http_imgbill_journal_replayed, rp)
               == NGX_OK)
        {
            sent++;
            continue;
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
            && (s.completion_tokens = ngx_atoi(ct.data, ct.len))
               != NGX_ERROR)
        {
            s.channel = (channel.len == 4) ? NGX_HTTP_IMGBILL_FAST
                                           : NGX_HTTP_IMGBILL_METERED;

            if (ngx_http_imgbill_redis_settle(mcf, &s,
                                       ngx_http_imgbill_journal_replayed, rp)
                != NULL)
            {
                sent++;
                continue;
            }
        }

        ngx_free(rp);
    }

    if (sent) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "imgbill: replaying %ui journal line(s) from \"%V\"",
                      sent, &mcf->journal->name);
    }

done:

    if (buf) {
        ngx_free(buf);
    }

    (void) ngx_close_file(fd);
}


/* whether a "D <request id>" line follows */

static ngx_uint_t
ngx_http_imgbill_journal_done(u_char *p, u_char *last, ngx_str_t *request_id)
{
    u_char  *eol;

    for ( /* void */ ; p < last; p = eol + 1) {

        eol = ngx_strlchr(p, last, LF);
        if (eol == NULL) {
            return 0;
        }

        if (p[0] == 'D' && p[1] == ' '
            && (size_t) (eol - p - 2) == request_id->len
            && ngx_strncmp(p + 2, request_id->data, request_id->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_imgbill_journal_replayed(redisReply *reply, void *data)
{
    ngx_http_imgbill_replay_t *rp = data;

    u_char  *p, line[NGX_HTTP_IMGBILL_LINE_MAX];

    if (reply && reply->type != REDIS_REPLY_ERROR) {
        p = ngx_slprintf(line, line + sizeof(line) - 1, "D %V",
                         &rp->request_id);
        *p++ = LF;

        ngx_http_imgbill_journal_write(rp->mcf, ngx_cycle->log, line,
                                       p - line);
    }

    ngx_free(rp);
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
