
/*
 * imgbill: multipart/form-data as it streams in (see the header).
 *
 * The delimiter is matched byte by byte only from a CR on: a part's bytes
 * up to the next CR go to the caller in one piece (memchr), so a file of
 * megabytes costs a few calls.  A CR can only start the delimiter (a
 * boundary has no CR in it), so a failed match restarts at the byte that
 * failed it, and the bytes it had matched are the part's: they are the
 * delimiter's own.
 */


#include "ngx_http_imgbill_multipart.h"


/* what ngx_http_imgbill_mp_param() says of a parameter (*ok) */
enum {
    ngx_http_imgbill_param_bad = 0,
    ngx_http_imgbill_param_ok,
    ngx_http_imgbill_param_escaped     /* quoted, with a backslash in it */
};


enum {
    sw_preamble = 0,    /* before the first delimiter */
    sw_after,           /* a delimiter: "--", or padding and CRLF */
    sw_close,           /* "-": the second one ends the body */
    sw_padding,         /* spaces or tabs before the CRLF */
    sw_padding_lf,
    sw_header,          /* a header line, up to its CR */
    sw_header_lf,
    sw_data,            /* a part's bytes */
    sw_epilogue,
    sw_failed
};


struct ngx_http_imgbill_multipart_s {
    ngx_http_imgbill_part_pt        handler;
    void                           *data;
    ngx_log_t                      *log;
    ngx_uint_t                      state;
    ngx_http_imgbill_mp_error_e     error;
    size_t                          dlen;
    size_t                          matched;   /* of the delimiter */
    size_t                          line_len;
    ngx_uint_t                      lines;
    ngx_uint_t                      parts;
    ngx_http_imgbill_part_t         part;
    unsigned                        closed:1;
    unsigned                        disposition:1;
    u_char                          delimiter[sizeof("\r\n--") - 1
                                              + NGX_HTTP_IMGBILL_BOUNDARY_MAX];
    u_char                          line[NGX_HTTP_IMGBILL_PART_LINE_MAX];
    u_char                          name[NGX_HTTP_IMGBILL_PART_NAME_MAX];
    u_char                          filename[NGX_HTTP_IMGBILL_PART_NAME_MAX];
    u_char                          type[NGX_HTTP_IMGBILL_PART_NAME_MAX];
};


static void ngx_http_imgbill_mp_after(ngx_http_imgbill_multipart_t *mp,
    u_char ch);
static u_char *ngx_http_imgbill_mp_header(ngx_http_imgbill_multipart_t *mp,
    u_char *p, u_char *last);
static u_char *ngx_http_imgbill_mp_data(ngx_http_imgbill_multipart_t *mp,
    u_char *p, u_char *last);
static void ngx_http_imgbill_mp_line(ngx_http_imgbill_multipart_t *mp);
static void ngx_http_imgbill_mp_disposition(ngx_http_imgbill_multipart_t *mp,
    u_char *p, u_char *last);
static u_char *ngx_http_imgbill_mp_param(u_char *p, u_char *last,
    ngx_str_t *name, u_char *value, size_t *len, u_char **raw,
    ngx_uint_t *ok);
static ngx_uint_t ngx_http_imgbill_mp_extended(ngx_str_t *name,
    const char *param);
static void ngx_http_imgbill_mp_copy(ngx_str_t *to, u_char *buf, u_char *p,
    size_t len);
static void ngx_http_imgbill_mp_tell(ngx_http_imgbill_multipart_t *mp,
    ngx_http_imgbill_mp_event_e event, u_char *p, size_t len);
static void ngx_http_imgbill_mp_fail(ngx_http_imgbill_multipart_t *mp,
    ngx_http_imgbill_mp_error_e error);
static u_char *ngx_http_imgbill_mp_value_is(u_char *p, u_char *last,
    u_char *word, size_t len);
static u_char *ngx_http_imgbill_mp_trim(u_char *p, u_char **last);


#define ngx_http_imgbill_mp_space(ch)  ((ch) == ' ' || (ch) == '\t')


/*
 * "multipart/form-data; boundary=...": the boundary, quoted or not, of
 * RFC 2046's characters, at most 70 and not ending in a space.  None of
 * them needs a backslash, so the boundary points into the header.  A
 * backslash in it, or a "boundary*" beside it, is refused, not read: the
 * upstream's parser may take "a\b" as it is, or the starred one instead,
 * and read another body than the one billed.  So is a charset but UTF-8:
 * an upstream may decode the part names and fields by it ("+AG4-" is an
 * "n" in UTF-7), and read members the relay never saw.
 */

ngx_int_t
ngx_http_imgbill_multipart_boundary(u_char *type, size_t len,
    ngx_str_t *boundary)
{
    u_char      *p, *last, *raw, ch;
    u_char       value[NGX_HTTP_IMGBILL_BOUNDARY_MAX];
    size_t       n, i;
    ngx_str_t    name;
    ngx_uint_t   ok, found;

    static u_char  form[] = "multipart/form-data";
    static char    bchars[] = "'()+_,-./:=? ";

    last = type + len;

    p = ngx_http_imgbill_mp_value_is(type, last, form, sizeof(form) - 1);
    if (p == NULL) {
        return NGX_DECLINED;
    }

    found = 0;

    while (p < last) {
        n = sizeof(value);
        p = ngx_http_imgbill_mp_param(p + 1, last, &name, value, &n, &raw,
                                      &ok);
        if (ok != ngx_http_imgbill_param_ok
            || ngx_http_imgbill_mp_extended(&name, "boundary"))
        {
            return NGX_ERROR;
        }

        if (ngx_http_imgbill_mp_extended(&name, "charset")
            || (name.len == sizeof("charset") - 1
                && ngx_strncasecmp(name.data, (u_char *) "charset",
                                   sizeof("charset") - 1) == 0
                && !((n == sizeof("utf-8") - 1
                      && ngx_strncasecmp(value, (u_char *) "utf-8", n) == 0)
                     || (n == sizeof("utf8") - 1
                         && ngx_strncasecmp(value, (u_char *) "utf8", n)
                            == 0))))
        {
            return NGX_ERROR;
        }

        if (name.len != sizeof("boundary") - 1
            || ngx_strncasecmp(name.data, (u_char *) "boundary",
                               sizeof("boundary") - 1) != 0)
        {
            continue;
        }

        if (found || n == 0 || n > sizeof(value) || value[n - 1] == ' ') {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            ch = value[i];

            if (!(ch >= '0' && ch <= '9') && !(ch >= 'a' && ch <= 'z')
                && !(ch >= 'A' && ch <= 'Z')
                && (ch == '\0' || ngx_strchr(bchars, ch) == NULL))
            {
                return NGX_ERROR;
            }
        }

        boundary->data = raw;
        boundary->len = n;
        found = 1;
    }

    return found ? NGX_OK : NGX_ERROR;
}


ngx_http_imgbill_multipart_t *
ngx_http_imgbill_multipart_create(ngx_str_t *boundary,
    ngx_http_imgbill_part_pt handler, void *data, ngx_log_t *log)
{
    ngx_http_imgbill_multipart_t  *mp;

    if (boundary->len == 0 || boundary->len > NGX_HTTP_IMGBILL_BOUNDARY_MAX) {
        return NULL;
    }

    mp = ngx_alloc(sizeof(ngx_http_imgbill_multipart_t), log);
    if (mp == NULL) {
        return NULL;
    }

    ngx_memzero(mp, sizeof(ngx_http_imgbill_multipart_t));

    mp->handler = handler;
    mp->data = data;
    mp->log = log;

    mp->dlen = ngx_cpymem(ngx_cpymem(mp->delimiter, "\r\n--", 4),
                          boundary->data, boundary->len)
               - mp->delimiter;

    /* the body may start with the first delimiter, without its CRLF */

    mp->matched = 2;
    mp->state = sw_preamble;

    return mp;
}


void
ngx_http_imgbill_multipart_feed(ngx_http_imgbill_multipart_t *mp, u_char *p,
    u_char *last)
{
    u_char  ch;

    while (p < last) {

        switch (mp->state) {

        case sw_preamble:
            ch = *p++;

            if (ch != mp->delimiter[mp->matched]) {
                mp->matched = (ch == '\r');
                break;
            }

            if (++mp->matched == mp->dlen) {
                mp->matched = 0;
                mp->state = sw_after;
            }

            break;

        case sw_after:
        case sw_close:
        case sw_padding:
        case sw_padding_lf:
            ngx_http_imgbill_mp_after(mp, *p++);
            break;

        case sw_header:
        case sw_header_lf:
            p = ngx_http_imgbill_mp_header(mp, p, last);
            break;

        case sw_data:
            p = ngx_http_imgbill_mp_data(mp, p, last);
            break;

        default:    /* sw_epilogue, sw_failed */
            return;
        }
    }
}


/* what follows a delimiter: "--" ends the body, spaces or tabs and CRLF
   begin a part */

static void
ngx_http_imgbill_mp_after(ngx_http_imgbill_multipart_t *mp, u_char ch)
{
    switch (mp->state) {

    case sw_after:
        if (ch == '-') {
            mp->state = sw_close;
            return;
        }

        /* fall through */

    case sw_padding:
        if (ngx_http_imgbill_mp_space(ch)) {
            mp->state = sw_padding;
            return;
        }

        if (ch == '\r') {
            mp->state = sw_padding_lf;
            return;
        }

        break;

    case sw_close:
        if (ch == '-') {
            mp->closed = 1;
            mp->state = sw_epilogue;
            return;
        }

        break;

    default:    /* sw_padding_lf */
        if (ch != LF) {
            break;
        }

        if (mp->parts == NGX_HTTP_IMGBILL_PARTS_MAX) {
            ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_TOO_MANY);
            return;
        }

        ngx_memzero(&mp->part, sizeof(ngx_http_imgbill_part_t));
        mp->part.index = mp->parts;
        mp->line_len = 0;
        mp->lines = 0;
        mp->disposition = 0;
        mp->state = sw_header;
        return;
    }

    ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_DELIMITER);
}


/* a header line, gathered up to its CRLF; an empty one ends them */

static u_char *
ngx_http_imgbill_mp_header(ngx_http_imgbill_multipart_t *mp, u_char *p,
    u_char *last)
{
    u_char  ch;

    if (mp->state == sw_header_lf) {
        if (*p++ != LF) {
            ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_HEADER);
            return p;
        }

        if (mp->line_len) {
            ngx_http_imgbill_mp_line(mp);
            mp->line_len = 0;

            if (mp->state != sw_failed) {
                mp->state = sw_header;
            }

            return p;
        }

        if (mp->part.name.len == 0) {
            ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_NO_NAME);
            return p;
        }

        mp->matched = 0;
        mp->state = sw_data;
        ngx_http_imgbill_mp_tell(mp, NGX_HTTP_IMGBILL_MP_BEGIN, NULL, 0);

        return p;
    }

    while (p < last) {
        ch = *p++;

        if (ch == '\r') {
            mp->state = sw_header_lf;
            return p;
        }

        if (ch == LF || mp->line_len == NGX_HTTP_IMGBILL_PART_LINE_MAX) {
            ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_HEADER);
            return p;
        }

        mp->line[mp->line_len++] = ch;
    }

    return p;
}


/* a part's bytes, up to the delimiter */

static u_char *
ngx_http_imgbill_mp_data(ngx_http_imgbill_multipart_t *mp, u_char *p,
    u_char *last)
{
    u_char  *q;
    size_t   n;

    if (mp->matched == 0) {
        q = ngx_strlchr(p, last, '\r');

        if (q == NULL) {
            q = last;
        }

        if (q > p) {
            ngx_http_imgbill_mp_tell(mp, NGX_HTTP_IMGBILL_MP_DATA, p, q - p);
            return q;
        }
    }

    if (*p == mp->delimiter[mp->matched]) {
        p++;

        if (++mp->matched == mp->dlen) {
            mp->matched = 0;
            mp->state = sw_after;
            mp->parts++;
            ngx_http_imgbill_mp_tell(mp, NGX_HTTP_IMGBILL_MP_END, NULL, 0);
        }

        return p;
    }

    /* no delimiter after all: what matched of it was the part's, and the
       byte that failed it is looked at again */

    n = mp->matched;
    mp->matched = 0;
    ngx_http_imgbill_mp_tell(mp, NGX_HTTP_IMGBILL_MP_DATA, mp->delimiter, n);

    return p;
}


/* one header line: Content-Disposition and Content-Type are read; a
   Content-Transfer-Encoding (RFC 7578 retired it) is refused, as an
   upstream that decodes it reads other bytes than the ones counted */

static void
ngx_http_imgbill_mp_line(ngx_http_imgbill_multipart_t *mp)
{
    u_char  *p, *last, *colon;

    static u_char  disposition[] = "content-disposition";
    static u_char  type[] = "content-type";
    static u_char  encoding[] = "content-transfer-encoding";

    if (++mp->lines > NGX_HTTP_IMGBILL_PART_LINES_MAX) {
        ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_HEADER);
        return;
    }

    p = mp->line;
    last = mp->line + mp->line_len;

    colon = ngx_strlchr(p, last, ':');
    if (colon == NULL) {
        ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_HEADER);
        return;
    }

    p = ngx_http_imgbill_mp_trim(p, &colon);

    if ((size_t) (colon - p) == sizeof(encoding) - 1
        && ngx_strncasecmp(p, encoding, sizeof(encoding) - 1) == 0)
    {
        ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_HEADER);
        return;
    }

    if ((size_t) (colon - p) == sizeof(disposition) - 1
        && ngx_strncasecmp(p, disposition, sizeof(disposition) - 1) == 0)
    {
        if (mp->disposition) {
            ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_HEADER);
            return;
        }

        mp->disposition = 1;
        ngx_http_imgbill_mp_disposition(mp, colon + 1, last);
        return;
    }

    if ((size_t) (colon - p) == sizeof(type) - 1
        && ngx_strncasecmp(p, type, sizeof(type) - 1) == 0)
    {
        p = ngx_http_imgbill_mp_trim(colon + 1, &last);
        ngx_http_imgbill_mp_copy(&mp->part.type, mp->type, p, last - p);
    }
}


/* "form-data; name=...; filename=..." */

static void
ngx_http_imgbill_mp_disposition(ngx_http_imgbill_multipart_t *mp, u_char *p,
    u_char *last)
{
    u_char      *raw, value[NGX_HTTP_IMGBILL_PART_NAME_MAX];
    size_t       n;
    ngx_str_t    name;
    ngx_uint_t   ok;

    static u_char  form[] = "form-data";

    p = ngx_http_imgbill_mp_value_is(p, last, form, sizeof(form) - 1);
    if (p == NULL) {
        ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_NO_NAME);
        return;
    }

    while (p < last) {
        n = sizeof(value);
        p = ngx_http_imgbill_mp_param(p + 1, last, &name, value, &n, &raw,
                                      &ok);
        if (ok == ngx_http_imgbill_param_bad) {
            ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_BAD_HEADER);
            return;
        }

        /* a name the upstream may read otherwise (escaped, or RFC 5987's
           "name*" beside it) is no name the relay can price by */

        if (ngx_http_imgbill_mp_extended(&name, "name")) {
            ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_NO_NAME);
            return;
        }

        if (name.len == sizeof("name") - 1
            && ngx_strncasecmp(name.data, (u_char *) "name", name.len) == 0)
        {
            if (mp->part.name.len || n == 0 || n > sizeof(value)
                || ok == ngx_http_imgbill_param_escaped)
            {
                ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_NO_NAME);
                return;
            }

            ngx_http_imgbill_mp_copy(&mp->part.name, mp->name, value, n);

        } else if ((name.len == sizeof("filename") - 1
                    || name.len == sizeof("filename*") - 1)
                   && ngx_strncasecmp(name.data, (u_char *) "filename*",
                                      name.len) == 0)
        {
            /* a file however its name is spelled; its name, as far as it
               fits, is for the logs */

            mp->part.file = 1;
            ngx_http_imgbill_mp_copy(&mp->part.filename, mp->filename, value,
                                     ngx_min(n, sizeof(value)));
        }
    }
}


/*
 * One parameter, "name=value" after a ';': its name; its value, unquoted,
 * into value (*len: its room, then the value's length, more than the room
 * if it did not fit); where the value starts in the input (after a
 * quote); and p at the next ';' or at last.  *ok is
 * ngx_http_imgbill_param_bad when it is malformed: no '=', a quote not
 * closed, or something after it; _escaped when a backslash escaped a
 * byte of its quoted value.
 */

static u_char *
ngx_http_imgbill_mp_param(u_char *p, u_char *last, ngx_str_t *name,
    u_char *value, size_t *len, u_char **raw, ngx_uint_t *ok)
{
    u_char      *end, *eq, ch;
    size_t       room, n;
    ngx_uint_t   esc;

    room = *len;
    n = 0;
    *ok = ngx_http_imgbill_param_bad;
    esc = 0;

    end = p;

    while (end < last && *end != '=' && *end != ';') {
        end++;
    }

    if (end == last || *end != '=') {
        return end;
    }

    eq = end;
    name->data = ngx_http_imgbill_mp_trim(p, &end);
    name->len = end - name->data;

    for (p = eq + 1; p < last && ngx_http_imgbill_mp_space(*p); p++) {
        /* void */
    }

    if (p < last && *p == '"') {
        *raw = ++p;

        for ( ;; ) {
            if (p == last) {
                return p;
            }

            ch = *p++;

            if (ch == '"') {
                break;
            }

            if (ch == '\\') {
                if (p == last) {
                    return p;
                }

                ch = *p++;
                esc = 1;
            }

            if (n < room) {
                value[n] = ch;
            }

            n++;
        }

        while (p < last && ngx_http_imgbill_mp_space(*p)) {
            p++;
        }

        if (p < last && *p != ';') {
            return p;
        }

    } else {
        end = ngx_strlchr(p, last, ';');
        if (end == NULL) {
            end = last;
        }

        *raw = p;
        p = ngx_http_imgbill_mp_trim(p, &end);
        n = end - p;
        ngx_memcpy(value, p, ngx_min(n, room));
        p = end;

        while (p < last && *p != ';') {
            p++;
        }
    }

    *len = n;
    *ok = esc ? ngx_http_imgbill_param_escaped : ngx_http_imgbill_param_ok;

    return p;
}


/* "param*" (RFC 5987's extended form), in any case */

static ngx_uint_t
ngx_http_imgbill_mp_extended(ngx_str_t *name, const char *param)
{
    size_t  len;

    len = ngx_strlen(param);

    return name->len == len + 1 && name->data[len] == '*'
           && ngx_strncasecmp(name->data, (u_char *) param, len) == 0;
}


static void
ngx_http_imgbill_mp_copy(ngx_str_t *to, u_char *buf, u_char *p, size_t len)
{
    len = ngx_min(len, NGX_HTTP_IMGBILL_PART_NAME_MAX);

    ngx_memcpy(buf, p, len);
    to->data = buf;
    to->len = len;
}


static void
ngx_http_imgbill_mp_tell(ngx_http_imgbill_multipart_t *mp,
    ngx_http_imgbill_mp_event_e event, u_char *p, size_t len)
{
    if (event == NGX_HTTP_IMGBILL_MP_DATA) {
        if (len == 0) {
            return;
        }

        mp->part.size += len;
    }

    if (mp->handler(mp->data, &mp->part, event, p, len) != NGX_OK) {
        ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_STOPPED);
    }
}


static void
ngx_http_imgbill_mp_fail(ngx_http_imgbill_multipart_t *mp,
    ngx_http_imgbill_mp_error_e error)
{
    mp->error = error;
    mp->state = sw_failed;
}


/* whether a header's value is word (any case) before its parameters:
   where they start (a ';', or last), or NULL */

static u_char *
ngx_http_imgbill_mp_value_is(u_char *p, u_char *last, u_char *word,
    size_t len)
{
    u_char  *end, *params;

    params = ngx_strlchr(p, last, ';');
    if (params == NULL) {
        params = last;
    }

    end = params;
    p = ngx_http_imgbill_mp_trim(p, &end);

    if ((size_t) (end - p) != len || ngx_strncasecmp(p, word, len) != 0) {
        return NULL;
    }

    return params;
}


/* [p, *last) without spaces or tabs around it */

static u_char *
ngx_http_imgbill_mp_trim(u_char *p, u_char **last)
{
    while (p < *last && ngx_http_imgbill_mp_space(*p)) {
        p++;
    }

    while (*last > p && ngx_http_imgbill_mp_space((*last)[-1])) {
        (*last)--;
    }

    return p;
}


ngx_http_imgbill_mp_error_e
ngx_http_imgbill_multipart_end(ngx_http_imgbill_multipart_t *mp)
{
    if (mp->state != sw_failed && !mp->closed) {
        ngx_http_imgbill_mp_fail(mp, NGX_HTTP_IMGBILL_MP_NO_CLOSE);
    }

    return mp->error;
}


ngx_http_imgbill_mp_error_e
ngx_http_imgbill_multipart_error(ngx_http_imgbill_multipart_t *mp)
{
    return mp->error;
}


ngx_uint_t
ngx_http_imgbill_multipart_closed(ngx_http_imgbill_multipart_t *mp)
{
    return mp->closed;
}


void
ngx_http_imgbill_multipart_free(ngx_http_imgbill_multipart_t *mp)
{
    ngx_free(mp);
}
