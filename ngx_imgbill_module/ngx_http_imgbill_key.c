
/*
 * The client's API key: where each API puts it, and what becomes of it.
 * Only its SHA-256 is kept; the key itself is taken out of what the proxy
 * forwards and, for a key in the query string, masked where nginx's logs
 * would otherwise print it.
 *
 *   OpenAI   Authorization: Bearer <key>
 *   Gemini   x-goog-api-key: <key>, then ?key=<key>, then Bearer
 */


#include "ngx_http_imgbill_module.h"
#include <openssl/evp.h>


#define NGX_HTTP_IMGBILL_KEY_MAX     256


static ngx_int_t ngx_http_imgbill_key_bearer(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_int_t ngx_http_imgbill_key_header(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_int_t ngx_http_imgbill_key_query(ngx_http_request_t *r,
    ngx_str_t *key);
static void ngx_http_imgbill_key_trim(ngx_str_t *key);


/* NGX_OK and the hex SHA-256 in key_hash; NGX_DECLINED without a key */

ngx_int_t
ngx_http_imgbill_api_key(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, u_char *key_hash)
{
    u_char        md[EVP_MAX_MD_SIZE];
    ngx_int_t     rc;
    ngx_str_t     key;
    unsigned int  len;

    rc = NGX_DECLINED;

    if (lcf->api == NGX_HTTP_IMGBILL_API_GEMINI) {
        rc = ngx_http_imgbill_key_header(r, &key);

        if (rc == NGX_DECLINED) {
            rc = ngx_http_imgbill_key_query(r, &key);
        }
    }

    if (rc == NGX_DECLINED) {
        rc = ngx_http_imgbill_key_bearer(r, &key);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_imgbill_key_trim(&key);

    if (key.len == 0 || key.len > NGX_HTTP_IMGBILL_KEY_MAX) {
        return NGX_DECLINED;
    }

    if (EVP_Digest(key.data, key.len, md, &len, EVP_sha256(), NULL) != 1) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "imgbill: EVP_Digest(sha256) failed");
        return NGX_ERROR;
    }

    ngx_hex_dump(key_hash, md, len);

    return NGX_OK;
}


/*
 * The client's key is ours, never the upstream's: each source is dropped
 * here rather than trusting every location to override it.
 */

static ngx_int_t
ngx_http_imgbill_key_bearer(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL || h->value.len <= sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1)
           != 0)
    {
        return NGX_DECLINED;
    }

    key->data = h->value.data + sizeof("Bearer ") - 1;
    key->len = h->value.len - (sizeof("Bearer ") - 1);

    /* the renamed header no longer points at the value, which stays */

    ngx_http_imgbill_hide_header(h);
    r->headers_in.authorization = NULL;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_key_header(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_DECLINED;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("x-goog-api-key") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "x-goog-api-key",
                               sizeof("x-goog-api-key") - 1)
               == 0)
        {
            *key = h[i].value;
            ngx_http_imgbill_hide_header(&h[i]);
            return NGX_OK;
        }
    }
}


/*
 * ?key= is read, then masked in place: the request line and the arguments
 * share the client's header buffer (HTTP/1), so $request and $args in an
 * access log show "key=xxxx"; HTTP/2 builds its request line apart, and
 * it is masked there too.
 */

static ngx_int_t
ngx_http_imgbill_key_query(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char     *p, *last, *copy;
    ngx_str_t   value;

    if (ngx_http_arg(r, (u_char *) "key", 3, &value) != NGX_OK
        || value.len == 0)
    {
        return NGX_DECLINED;
    }

    copy = ngx_pnalloc(r->pool, value.len);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(copy, value.data, value.len);

    last = r->request_line.data + r->request_line.len;

    for (p = r->request_line.data; p + 4 + value.len <= last; p++) {
        if (ngx_strncmp(p, "key=", 4) == 0
            && ngx_strncmp(p + 4, copy, value.len) == 0)
        {
            ngx_memset(p + 4, 'x', value.len);
        }
    }

    ngx_memset(value.data, 'x', value.len);

    key->data = copy;
    key->len = value.len;

    return NGX_OK;
}


static void
ngx_http_imgbill_key_trim(ngx_str_t *key)
{
    while (key->len && key->data[0] == ' ') {
        key->data++;
        key->len--;
    }

    while (key->len && key->data[key->len - 1] == ' ') {
        key->len--;
    }
}
