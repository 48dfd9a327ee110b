
/*
 * The event-stream reader: splits text/event-stream into events as the
 * bytes come, cut anywhere, and feeds the data of each event to the reply
 * scanner.  Only "data" fields matter; comments (": keep-alive"), "event",
 * "id" and "retry" lines are read past.  Lines end with LF, CRLF or CR
 * (Google's streams use CRLF), and a blank line ends an event.  The data
 * lines of one event are one document, joined with LF, as a browser's
 * EventSource joins them.
 */


#include "ngx_http_imgbill_sse.h"


enum {
    sw_line = 0,        /* at the start of a line */
    sw_field,           /* in a field name */
    sw_space,           /* after "data:", an optional space */
    sw_value,           /* in the value of a data line */
    sw_skip             /* in a line that is not data */
};


/* "[DONE]" matched in full; more than that is any other data */
#define NGX_HTTP_IMGBILL_DONE_LEN  (sizeof("[DONE]") - 1)


static void ngx_http_imgbill_sse_line(ngx_http_imgbill_sse_t *sse,
    size_t at);
static void ngx_http_imgbill_sse_value(ngx_http_imgbill_sse_t *sse,
    u_char *p, u_char *last);
static void ngx_http_imgbill_sse_event(ngx_http_imgbill_sse_t *sse);
static void ngx_http_imgbill_sse_field(ngx_http_imgbill_sse_t *sse,
    u_char ch, size_t at);
static u_char *ngx_http_imgbill_sse_data(ngx_http_imgbill_sse_t *sse,
    u_char *p, u_char *last);


void
ngx_http_imgbill_sse_init(ngx_http_imgbill_sse_t *sse,
    ngx_http_imgbill_dialect_t *dialect)
{
    ngx_memzero(sse, sizeof(ngx_http_imgbill_sse_t));

    sse->dialect = dialect;
    sse->state = sw_line;

    ngx_http_imgbill_scan_init(&sse->scan, dialect);
}


ngx_int_t
ngx_http_imgbill_sse_feed(ngx_http_imgbill_sse_t *sse, u_char *p,
    u_char *last, u_char **end)
{
    u_char  ch, *start;

    start = p;
    sse->image = NULL;
    sse->usage = NULL;

    while (p < last) {
        ch = *p;

        if (sse->cr) {
            sse->cr = 0;

            if (ch == LF) {
                /* the LF of a CRLF already counted as a line end */
                p++;
                continue;
            }
        }

        switch (sse->state) {

        case sw_line:
            if (ch == CR || ch == LF) {
                p++;
                sse->cr = (ch == CR);
                sse->event += p - start;

                ngx_http_imgbill_sse_event(sse);

                *end = p;
                return NGX_OK;
            }

            sse->field = 0;
            sse->state = sw_field;
            break;

        case sw_field:
            ngx_http_imgbill_sse_field(sse, ch, sse->event + (p - start));
            p++;
            break;

        case sw_space:
            if (ch == ' ') {
                p++;
            }

            ngx_http_imgbill_sse_line(sse, sse->event + (p - start));
            sse->state = sw_value;
            break;

        case sw_value:
            p = ngx_http_imgbill_sse_data(sse, p, last);
            break;

        default: /* sw_skip */
            if (ch == CR || ch == LF) {
                sse->cr = (ch == CR);
                sse->state = sw_line;
            }

            p++;
            break;
        }
    }

    sse->event += p - start;
    *end = p;

    return NGX_AGAIN;
}


/* a byte of a line's field name, at "at" in the event: "data" or not */

static void
ngx_http_imgbill_sse_field(ngx_http_imgbill_sse_t *sse, u_char ch, size_t at)
{
    if (ch == CR || ch == LF) {
        if (sse->field == sizeof("data") - 1) {
            /* "data" alone: a data line, empty */
            ngx_http_imgbill_sse_line(sse, at);
        }

        sse->cr = (ch == CR);
        sse->state = sw_line;
        return;
    }

    if (sse->field < sizeof("data") - 1 && ch == "data"[sse->field]) {
        sse->field++;
        return;
    }

    if (sse->field == sizeof("data") - 1 && ch == ':') {
        sse->state = sw_space;
        return;
    }

    sse->state = sw_skip;
}


/*
 * A data line's value, up to its end or the buffer's.  A value may be
 * megabytes of one image: the scanner skips its base64 many bytes a step
 * and stops at any control byte, CR and LF among them, so the line's end
 * is looked for only past it, with memchr(); a loop over the bytes took a
 * third of a millisecond per megabyte.
 */

static u_char *
ngx_http_imgbill_sse_data(ngx_http_imgbill_sse_t *sse, u_char *p,
    u_char *last)
{
    u_char  *q, *lf;

    q = ngx_http_imgbill_scan_skip(&sse->scan, p, last);

    if (q != p) {
        /* inside a string: no "[DONE]" */
        sse->done = NGX_HTTP_IMGBILL_DONE_LEN + 1;
        sse->fed += q - p;
        p = q;
    }

    q = memchr(p, LF, last - p);

    if (q == NULL) {
        q = last;
    }

    lf = q;
    q = memchr(p, CR, lf - p);

    if (q == NULL) {
        q = lf;
    }

    ngx_http_imgbill_sse_value(sse, p, q);
    p = q;

    if (p < last) {
        sse->cr = (*p == CR);
        p++;
        sse->state = sw_line;
    }

    return p;
}


ngx_int_t
ngx_http_imgbill_sse_finish(ngx_http_imgbill_sse_t *sse)
{
    if (sse->state == sw_field && sse->field == sizeof("data") - 1) {
        ngx_http_imgbill_sse_line(sse, sse->event);
    }

    if (sse->lines == 0) {
        return NGX_DECLINED;
    }

    ngx_http_imgbill_sse_event(sse);

    return NGX_OK;
}


/* a data line starts at "at" in the event */

static void
ngx_http_imgbill_sse_line(ngx_http_imgbill_sse_t *sse, size_t at)
{
    static u_char  lf = LF;

    if (sse->lines++) {
        (void) ngx_http_imgbill_scan_feed(&sse->scan, &lf, &lf + 1);
        sse->fed++;

        /* two lines are never "[DONE]" */
        sse->done = NGX_HTTP_IMGBILL_DONE_LEN + 1;
    }

    sse->line_at = at;
    sse->line_fed = sse->fed;
}


static void
ngx_http_imgbill_sse_value(ngx_http_imgbill_sse_t *sse, u_char *p,
    u_char *last)
{
    size_t  n, had, had_usage;

    n = last - p;

    if (n == 0) {
        return;
    }

    if (sse->done <= NGX_HTTP_IMGBILL_DONE_LEN) {
        if (n <= NGX_HTTP_IMGBILL_DONE_LEN - sse->done
            && ngx_strncmp(p, "[DONE]" + sse->done, n) == 0)
        {
            sse->done += n;

        } else {
            sse->done = NGX_HTTP_IMGBILL_DONE_LEN + 1;
        }
    }

    had = sse->scan.image_at;
    had_usage = sse->scan.usage_at;

    (void) ngx_http_imgbill_scan_feed(&sse->scan, p, last);

    if (had == 0 && sse->scan.image_at) {
        sse->image = p + (sse->scan.image_at - sse->fed);
    }

    if (had_usage == 0 && sse->scan.usage_at) {
        sse->usage = p + (sse->scan.usage_at - sse->fed);
    }

    sse->fed += n;
}


/* an event ended: what it was, then a clean slate for the next */

static void
ngx_http_imgbill_sse_event(ngx_http_imgbill_sse_t *sse)
{
    ngx_http_imgbill_scan_t  *res;

    res = &sse->res;
    sse->usage_at = 0;

    if (sse->lines == 0) {
        sse->type = NGX_HTTP_IMGBILL_EVENT_NONE;

    } else if (sse->done == NGX_HTTP_IMGBILL_DONE_LEN) {
        sse->type = NGX_HTTP_IMGBILL_EVENT_DONE;

    } else {
        sse->type = NGX_HTTP_IMGBILL_EVENT_JSON;
        ngx_http_imgbill_scan_finish(&sse->scan, res);

        /* only a usage in the last data line maps back to the event */

        if (res->usage_at && res->usage_at >= sse->line_fed) {
            sse->usage_at = sse->line_at + (res->usage_at - sse->line_fed);
        }
    }

    sse->state = sw_line;
    sse->field = 0;
    sse->done = 0;
    sse->lines = 0;
    sse->event = 0;
    sse->fed = 0;

    ngx_http_imgbill_scan_init(&sse->scan, sse->dialect);
}
