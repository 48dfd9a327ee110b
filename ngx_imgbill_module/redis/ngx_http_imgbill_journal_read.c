
/*
 * The journal read back: the whole file, the ids of its D lines, what each
 * line still owes, and whether the worker that wrote an H line is gone.
 *
 * An H line is written when a worker begins to exit (gracefully: a reload
 * or a quit, perhaps cut short by KILL; or at once: TERM) while it holds
 * money for generations in flight.  While that worker lives, a generation
 * may still finish and settle: the line waits.  Once the worker is gone
 * the hold is released.  A hold that was settled is gone already, so the
 * release then changes nothing: it removes a hold, never a charge.  The
 * line's id, "<request id>@<pid>", is its own, so that the D line which
 * answers it never answers an S line of the same request.
 */


#include "ngx_http_imgbill_journal.h"


/* beyond this a journal is not read: the operator must look (alert) */
#define NGX_HTTP_IMGBILL_JOURNAL_MAX   (256 * 1024 * 1024)


static ngx_uint_t ngx_http_imgbill_journal_done(
    ngx_http_imgbill_journal_read_t *jr, ngx_str_t *request_id);
static int ngx_libc_cdecl ngx_http_imgbill_journal_cmp(const void *one,
    const void *two);
static ngx_uint_t ngx_http_imgbill_journal_alive(ngx_pid_t pid);
static ngx_int_t ngx_http_imgbill_journal_number(ngx_str_t *f);
static ngx_int_t ngx_http_imgbill_journal_key(ngx_str_t *f,
    ngx_http_imgbill_settle_t *s);
static ngx_int_t ngx_http_imgbill_journal_index(
    ngx_http_imgbill_journal_read_t *jr, ngx_log_t *log);


/*
 * The whole file, and the ids of its D lines sorted, so that finding what
 * is owed stays n log n however long an outage made the journal.
 */

ngx_int_t
ngx_http_imgbill_journal_read(ngx_http_imgbill_store_t *store,
    ngx_log_t *log, ngx_http_imgbill_journal_read_t *jr)
{
    off_t             size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    ngx_memzero(jr, sizeof(ngx_http_imgbill_journal_read_t));

    fd = ngx_open_file(store->conf->journal->name.data, NGX_FILE_RDONLY,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "imgbill: cannot open the journal \"%V\"",
                      &store->conf->journal->name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_fd_info_n " \"%V\" failed",
                      &store->conf->journal->name);
        goto failed;
    }

    size = ngx_file_size(&fi);

    if (size > NGX_HTTP_IMGBILL_JOURNAL_MAX) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "imgbill: the journal \"%V\" has grown to %O bytes; "
                      "only the first %d are replayed",
                      &store->conf->journal->name, size,
                      NGX_HTTP_IMGBILL_JOURNAL_MAX);
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
    file.name = store->conf->journal->name;
    file.log = log;

    n = ngx_read_file(&file, jr->buf, (size_t) size, 0);
    if (n == NGX_ERROR) {
        goto failed;
    }

    (void) ngx_close_file(fd);
    fd = NGX_INVALID_FILE;

    jr->last = jr->buf + n;

    if (ngx_http_imgbill_journal_index(jr, log) == NGX_OK) {
        return NGX_OK;
    }

failed:

    if (fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(fd);
    }

    ngx_http_imgbill_journal_free(jr);

    return NGX_ERROR;
}


/* the ids of the D lines, sorted */

static ngx_int_t
ngx_http_imgbill_journal_index(ngx_http_imgbill_journal_read_t *jr,
    ngx_log_t *log)
{
    u_char      *p, *eol;
    ngx_uint_t   lines;

    lines = 0;
    for (p = jr->buf; p < jr->last; p++) {
        lines += (*p == LF);
    }

    jr->done = ngx_alloc((lines + 1) * sizeof(ngx_str_t), log);
    if (jr->done == NULL) {
        return NGX_ERROR;
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
}


void
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


/*
 * What the line at p owes, read into l (an H line's type only): an S, R,
 * V or H line that no D line answers is owed, or unreadable (a line cut
 * short by a full disk before lines were written whole, or edited by
 * hand: replay skips it, and says so).
 */

ngx_uint_t
ngx_http_imgbill_journal_owes(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_read_t *jr, ngx_http_imgbill_journal_line_t *l)
{
    u_char                           *line;
    ngx_str_t                         type, id;
    ngx_http_imgbill_journal_hold_t   h;

    line = p;

    if (ngx_http_imgbill_journal_field(&p, eol, &type) != NGX_OK
        || type.len != 1
        || (*type.data != 'S' && *type.data != 'R' && *type.data != 'V'
            && *type.data != 'H')
        || ngx_http_imgbill_journal_field(&p, eol, &id) != NGX_OK
        || ngx_http_imgbill_journal_done(jr, &id))
    {
        return NGX_HTTP_IMGBILL_JOURNAL_NOTHING;
    }

    l->type = *type.data;

    if (*type.data == 'H'
        ? ngx_http_imgbill_journal_hold_line(line + 2, eol, &h) != NGX_OK
        : ngx_http_imgbill_journal_line(line, eol, l) != NGX_OK)
    {
        return NGX_HTTP_IMGBILL_JOURNAL_BAD;
    }

    return NGX_HTTP_IMGBILL_JOURNAL_OWED;
}


/*
 * An S, R or V line, every field checked:
 *   S <request id> <account> <charge> <channel> <prompt> <completion>
 *     <model> [<images> [<api>]] [k=<key id>[+]] [t=<decided at>]    (a
 *     line from before images were counted: one; from before the API or
 *     the key was written: not known; from before the time was: the
 *     replay's)
 *   R <request id> <key hash>
 *   V <request id>/v <account> <charged at> [k=<key id>]
 */

ngx_int_t
ngx_http_imgbill_journal_line(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_line_t *l)
{
    ngx_int_t                   n;
    ngx_str_t                   type, f[11];
    ngx_uint_t                  nf, i;
    ngx_http_imgbill_settle_t  *s;

    s = &l->settle;
    ngx_memzero(l, sizeof(ngx_http_imgbill_journal_line_t));

    if (ngx_http_imgbill_journal_field(&p, eol, &type) != NGX_OK
        || type.len != 1
        || ngx_http_imgbill_journal_field(&p, eol, &l->id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (nf = 0; nf < 11; nf++) {
        if (ngx_http_imgbill_journal_field(&p, eol, &f[nf]) != NGX_OK) {
            break;
        }
    }

    l->type = *type.data;
    s->request_id = l->id;

    switch (l->type) {

    case 'R':
        l->key_hash = f[0];
        return (nf == 1 && f[0].len == NGX_HTTP_IMGBILL_KEY_HASH_LEN)
               ? NGX_OK : NGX_ERROR;

    case 'V':
        if (nf < 2 || nf > 3 || l->id.len <= 2
            || ngx_strncmp(l->id.data + l->id.len - 2, "/v", 2) != 0
            || (nf == 3
                && ngx_http_imgbill_journal_key(&f[2], s) != NGX_OK))
        {
            return NGX_ERROR;
        }

        s->request_id.len -= 2;
        s->account = f[0];
        l->charged_at = ngx_http_imgbill_journal_number(&f[1]);

        return (l->charged_at <= 0) ? NGX_ERROR : NGX_OK;

    case 'S':
        break;

    default:
        return NGX_ERROR;
    }

    /* the time the charge was decided, marked, last */

    if (nf > 6 && f[nf - 1].len > 2 && f[nf - 1].data[0] == 't'
        && f[nf - 1].data[1] == '=')
    {
        f[nf - 1].data += 2;
        f[nf - 1].len -= 2;

        s->decided = ngx_http_imgbill_journal_number(&f[nf - 1]);

        if (s->decided <= 0) {
            return NGX_ERROR;
        }

        nf--;
    }

    /* the key, marked, before the time */

    if (nf > 6 && f[nf - 1].len > 2 && f[nf - 1].data[0] == 'k'
        && f[nf - 1].data[1] == '=')
    {
        if (ngx_http_imgbill_journal_key(&f[nf - 1], s) != NGX_OK) {
            return NGX_ERROR;
        }

        nf--;
    }

    if (nf < 6 || nf > 8) {
        return NGX_ERROR;
    }

    s->account = f[0];
    s->model = f[5];
    s->charge = ngx_http_imgbill_journal_number(&f[1]);
    s->prompt_tokens = ngx_http_imgbill_journal_number(&f[3]);
    s->completion_tokens = ngx_http_imgbill_journal_number(&f[4]);
    n = ngx_http_imgbill_channel_find(f[2].data, f[2].len);

    if (s->charge == NGX_ERROR || s->prompt_tokens == NGX_ERROR
        || s->completion_tokens == NGX_ERROR || n == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    s->channel = n;

    /* a line from before images were counted: one */

    n = (nf >= 7) ? ngx_http_imgbill_journal_number(&f[6]) : 1;

    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    s->images = n;

    /* an API's name, as its table spells them */

    if (nf == 8) {
        if (f[7].len > NGX_HTTP_IMGBILL_API_NAME_MAX) {
            return NGX_ERROR;
        }

        for (i = 0; i < f[7].len; i++) {
            if ((f[7].data[i] < 'a' || f[7].data[i] > 'z')
                && f[7].data[i] != '_')
            {
                return NGX_ERROR;
            }
        }

        s->api = f[7];
    }

    return NGX_OK;
}


/* "k=<key id>", "+" after it if the key has limits */

static ngx_int_t
ngx_http_imgbill_journal_key(ngx_str_t *f, ngx_http_imgbill_settle_t *s)
{
    ngx_uint_t  i;

    if (f->len < 2 || f->data[0] != 'k' || f->data[1] != '=') {
        return NGX_ERROR;
    }

    s->key.data = f->data + 2;
    s->key.len = f->len - 2;

    if (s->key.len && s->key.data[s->key.len - 1] == '+') {
        s->key_limits = 1;
        s->key.len--;
    }

    if (s->key.len != NGX_HTTP_IMGBILL_KEY_ID_LEN) {
        return NGX_ERROR;
    }

    /* lowercase hex, as the relay writes it */

    for (i = 0; i < s->key.len; i++) {
        if ((s->key.data[i] < '0' || s->key.data[i] > '9')
            && (s->key.data[i] < 'a' || s->key.data[i] > 'f'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A number as the journal writes it (%i, %T): digits, no leading zero.
 * A line cut short with the next one written onto it must not pass a
 * hex id's digits for one.
 */

static ngx_int_t
ngx_http_imgbill_journal_number(ngx_str_t *f)
{
    if (f->len > 1 && f->data[0] == '0') {
        return NGX_ERROR;
    }

    return ngx_atoi(f->data, f->len);
}


/* the next field of a line: what lies before the next space */

ngx_int_t
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


/* "H <request id>@<pid> <account> <until>", from after the "H " */

ngx_int_t
ngx_http_imgbill_journal_hold_line(u_char *p, u_char *eol,
    ngx_http_imgbill_journal_hold_t *h)
{
    u_char     *at;
    ngx_int_t   pid;
    ngx_str_t   until;

    /* three fields, and nothing after them: a line cut short with the
       next one written onto it must not read as an H line */

    if (ngx_http_imgbill_journal_field(&p, eol, &h->id) != NGX_OK
        || ngx_http_imgbill_journal_field(&p, eol, &h->account) != NGX_OK
        || ngx_http_imgbill_journal_field(&p, eol, &until) != NGX_OK
        || p < eol)
    {
        return NGX_ERROR;
    }

    for (at = h->id.data + h->id.len - 1; at > h->id.data; at--) {
        if (*at == '@') {
            break;
        }
    }

    if (at == h->id.data) {
        return NGX_ERROR;
    }

    h->request_id.data = h->id.data;
    h->request_id.len = at - h->id.data;

    pid = ngx_atoi(at + 1, h->id.data + h->id.len - at - 1);
    h->until = ngx_http_imgbill_journal_number(&until);

    if (pid <= 0 || pid > NGX_MAX_INT32_VALUE || h->until <= 0) {
        return NGX_ERROR;
    }

    h->pid = (ngx_pid_t) pid;

    return NGX_OK;
}


/*
 * An H line is due once its worker is gone: its generation can no longer
 * settle.  Past "until" the hold has expired anyway; the line is applied
 * then whatever the pid says, so that a pid taken over by another process
 * does not keep it owed for good.
 */

ngx_uint_t
ngx_http_imgbill_journal_hold_due(ngx_http_imgbill_journal_hold_t *h)
{
    return ngx_time() >= h->until || !ngx_http_imgbill_journal_alive(h->pid);
}


static ngx_uint_t
ngx_http_imgbill_journal_alive(ngx_pid_t pid)
{
#if (NGX_LINUX)
    u_char    *p, name[NGX_INT64_LEN + sizeof("/proc//stat")];
    u_char     buf[128];
    ssize_t    n;
    ngx_fd_t   fd;
#endif

    if (pid == ngx_pid) {
        return 1;
    }

    if (kill(pid, 0) == -1 && ngx_errno != NGX_EPERM) {
        return 0;
    }

#if (NGX_LINUX)

    /*
     * A worker killed after its master is an orphan: it stays a zombie
     * until init collects it, which some inits (a container's) do late
     * or never.  A zombie settles nothing: it is gone.
     */

    (void) ngx_sprintf(name, "/proc/%P/stat%Z", pid);

    fd = ngx_open_file(name, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        return 1;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));

    (void) ngx_close_file(fd);

    if (n <= 0) {
        return 1;
    }

    /* "pid (comm) state ...": comm may hold anything, a ")" too, but
       no field after it does */

    p = buf + n;

    while (p > buf && p[-1] != ')') {
        p--;
    }

    if (p > buf && p + 1 < buf + n && (p[1] == 'Z' || p[1] == 'X')) {
        return 0;
    }

#endif

    return 1;
}
