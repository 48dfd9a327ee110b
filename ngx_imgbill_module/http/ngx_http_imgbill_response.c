
/*
 * What imgbill says to the client itself: its errors, in the shape of the
 * location's API, and its X-Imgbill-* headers, a namespace it keeps to
 * itself in both directions.
 */


#include "ngx_http_imgbill_ctx.h"


static ngx_int_t ngx_http_imgbill_push(ngx_list_t *list, char *name,
    u_char *value, size_t len);
static ngx_int_t ngx_http_imgbill_push_money(ngx_http_request_t *r,
    ngx_list_t *list, char *name, ngx_int_t units);


void
ngx_http_imgbill_set_error(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err, ngx_uint_t status,
    ngx_http_imgbill_err_e kind, const char *code, const char *fmt, ...)
{
    u_char   *p, buf[NGX_MAX_ERROR_STR];
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    err->status = status;
    err->kind = kind;
    err->code = code;

    err->message.data = ngx_pnalloc(r->pool, p - buf);
    if (err->message.data == NULL) {
        err->message.len = 0;
        return;
    }

    err->message.len = ngx_cpymem(err->message.data, buf, p - buf)
                       - err->message.data;
}


/* the error in the shape of the location's API */

ngx_buf_t *
ngx_http_imgbill_error_body(ngx_http_request_t *r,
    ngx_http_imgbill_error_t *err)
{
    size_t                        len;
    ngx_buf_t                    *b;
    ngx_http_imgbill_api_t       *api;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);
    api = lcf->api;

    len = api->error_len + err->message.len
          + ngx_escape_json(NULL, err->message.data, err->message.len)
          + ngx_strlen(err->code);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    b->last = api->error(b->last, err);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return b;
}


ngx_int_t
ngx_http_imgbill_add_header(ngx_http_request_t *r, char *name, u_char *value,
    size_t len)
{
    return ngx_http_imgbill_push(&r->headers_out.headers, name, value, len);
}


static ngx_int_t
ngx_http_imgbill_push(ngx_list_t *list, char *name, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(list);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.len = ngx_strlen(name);
    h->key.data = (u_char *) name;
    h->value.len = len;
    h->value.data = value;
    h->lowcase_key = NULL;

    return NGX_OK;
}


/* a time as ISO 8601 says it, UTC, for the messages of errors */

u_char *
ngx_http_imgbill_format_time(u_char *p, time_t t)
{
    ngx_tm_t  tm;

    ngx_gmtime(t, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02dZ", tm.ngx_tm_year,
                       tm.ngx_tm_mon, tm.ngx_tm_mday, tm.ngx_tm_hour,
                       tm.ngx_tm_min, tm.ngx_tm_sec);
}


ngx_int_t
ngx_http_imgbill_money_header(ngx_http_request_t *r, char *name,
    ngx_int_t units)
{
    return ngx_http_imgbill_push_money(r, &r->headers_out.headers, name,
                                       units);
}


/* a stream's charge comes after its body: the chunked and HTTP/2 filters
   send r->headers_out.trailers with the last buffer */

ngx_int_t
ngx_http_imgbill_money_trailer(ngx_http_request_t *r, char *name,
    ngx_int_t units)
{
    return ngx_http_imgbill_push_money(r, &r->headers_out.trailers, name,
                                       units);
}


static ngx_int_t
ngx_http_imgbill_push_money(ngx_http_request_t *r, ngx_list_t *list,
    char *name, ngx_int_t units)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, NGX_HTTP_IMGBILL_MONEY_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = ngx_http_imgbill_format_money(p, units);

    return ngx_http_imgbill_push(list, name, p, last - p);
}


/*
 * X-Imgbill-* is this module's namespace: what a client sends under it must
 * not reach the upstream, and what the upstream sends must not reach the
 * client (nor, under imgbill_cors, its Access-Control-*).  The headers
 * whose names start with the prefix (lowercase) go.  A response header is
 * dropped by clearing its hash.  The proxy
 * module forwards every request header it has no replacement for, and
 * request headers cannot be unlinked (builtin headers point into the
 * list), so one is renamed in place to "Connection", a hop-by-hop header
 * the proxy always replaces, and emptied.
 */

void
ngx_http_imgbill_strip_headers(ngx_list_t *headers, char *prefix,
    ngx_uint_t request)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(prefix);

    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len < len
            || ngx_strncasecmp(h[i].key.data, (u_char *) prefix, len) != 0)
        {
            continue;
        }

        if (request) {
            ngx_http_imgbill_hide_header(&h[i]);

        } else {
            h[i].hash = 0;
        }
    }
}


void
ngx_http_imgbill_hide_header(ngx_table_elt_t *h)
{
    ngx_str_set(&h->key, "Connection");
    h->lowcase_key = (u_char *) "connection";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);
    ngx_str_null(&h->value);
}


/*
 * A body of the module's own (a model list, an account, the metrics, the
 * health) as a 200 reply, or the status given; one's money is nobody's
 * cache.
 */

ngx_int_t
ngx_http_imgbill_send_json(ngx_http_request_t *r, ngx_buf_t *b)
{
    return ngx_http_imgbill_send_text(r, NGX_HTTP_OK, b, "application/json");
}


ngx_int_t
ngx_http_imgbill_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b, char *type)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_imgbill_add_header(r, "Cache-Control",
                                    (u_char *) "no-store", 8)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
