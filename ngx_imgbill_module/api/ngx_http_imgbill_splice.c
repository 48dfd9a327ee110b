
/*
 * imgbill: a rewrite's tools.  The body stays where nginx read it (its
 * buffers, or its temporary file) and goes upstream from there; a rewrite
 * changes bytes in place or ends the body early with a tail of its own,
 * never copies it.  The chain the proxy sends must keep its file part
 * starting at offset 0: a retry on the next upstream sends it again from
 * there (ngx_http_upstream_reinit()).
 */


#include "ngx_http_imgbill_api.h"


static ngx_int_t ngx_http_imgbill_splice_write(ngx_http_request_t *r,
    ngx_buf_t *b, off_t at, u_char *p, size_t n);


/*
 * [start, end) of the body becomes with, padded with spaces: JSON takes
 * whitespace between any two tokens.  with may not be longer.
 */

ngx_int_t
ngx_http_imgbill_splice_overwrite(ngx_http_request_t *r, off_t start,
    off_t end, ngx_str_t *with)
{
    u_char       *p;
    off_t         pos, size, from, to;
    ngx_chain_t  *cl;

    if (start < 0 || end < start || (off_t) with->len > end - start) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, (size_t) (end - start));
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memset(ngx_cpymem(p, with->data, with->len), ' ',
               (size_t) (end - start) - with->len);

    pos = 0;

    for (cl = r->request_body->bufs; cl && pos < end; cl = cl->next) {
        size = ngx_buf_size(cl->buf);

        from = ngx_max(start, pos);
        to = ngx_min(end, pos + size);

        if (from < to
            && ngx_http_imgbill_splice_write(r, cl->buf, from - pos,
                                             p + (from - start),
                                             (size_t) (to - from))
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        pos += size;
    }

    return NGX_OK;
}


/* a marked member, blanked with a ',' that goes with it */

ngx_int_t
ngx_http_imgbill_splice_blank(ngx_http_request_t *r,
    ngx_http_imgbill_mark_t *mark)
{
    off_t      start, end;
    ngx_str_t  none = ngx_null_string;

    start = mark->key;
    end = mark->end;

    if (mark->comma >= 0 && mark->comma < start) {
        start = mark->comma;

    } else if (mark->comma >= end) {
        end = mark->comma + 1;
    }

    return ngx_http_imgbill_splice_overwrite(r, start, end, &none);
}


/*
 * The body up to at, then tail: the proxy sends these buffers, and their
 * length as Content-Length.
 */

ngx_int_t
ngx_http_imgbill_splice_end(ngx_http_request_t *r, off_t at, ngx_str_t *tail)
{
    off_t         pos, size, n;
    ngx_buf_t    *b, *nb;
    ngx_chain_t  *cl, *out, **ll;

    out = NULL;
    ll = &out;
    pos = 0;

    for (cl = r->request_body->bufs; cl && pos < at; cl = cl->next) {
        b = cl->buf;
        size = ngx_buf_size(b);
        n = ngx_min(size, at - pos);

        if (n == 0) {
            continue;
        }

        nb = ngx_calloc_buf(r->pool);
        if (nb == NULL) {
            return NGX_ERROR;
        }

        if (b->in_file) {
            nb->in_file = 1;
            nb->file = b->file;
            nb->file_pos = b->file_pos;
            nb->file_last = b->file_pos + n;

        } else {
            nb->memory = 1;
            nb->start = b->pos;
            nb->pos = b->pos;
            nb->last = b->pos + n;
            nb->end = nb->last;
        }

        *ll = ngx_alloc_chain_link(r->pool);
        if (*ll == NULL) {
            return NGX_ERROR;
        }

        (*ll)->buf = nb;
        ll = &(*ll)->next;
        pos += n;
    }

    if (pos != at) {
        return NGX_ERROR;
    }

    nb = ngx_calloc_buf(r->pool);
    *ll = ngx_alloc_chain_link(r->pool);

    if (nb == NULL || *ll == NULL) {
        return NGX_ERROR;
    }

    nb->memory = 1;
    nb->start = tail->data;
    nb->pos = tail->data;
    nb->last = tail->data + tail->len;
    nb->end = nb->last;
    nb->last_buf = 1;

    (*ll)->buf = nb;
    (*ll)->next = NULL;

    r->request_body->bufs = out;
    r->headers_in.content_length_n = at + tail->len;

    return NGX_OK;
}


/*
 * Bytes into a buffer of the body at its offset at: in memory, or in the
 * temporary file, whose offset nginx keeps for its own writes.
 */

static ngx_int_t
ngx_http_imgbill_splice_write(ngx_http_request_t *r, ngx_buf_t *b, off_t at,
    u_char *p, size_t n)
{
    off_t    offset;
    ssize_t  written;

    if (!b->in_file) {
        ngx_memcpy(b->pos + at, p, n);
        return NGX_OK;
    }

    offset = b->file->offset;

    written = ngx_write_file(b->file, p, n, b->file_pos + at);

    b->file->offset = offset;

    if (written != (ssize_t) n) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: cannot rewrite the request body in \"%V\"",
                      &b->file->name);
        return NGX_ERROR;
    }

    return NGX_OK;
}
