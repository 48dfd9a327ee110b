
/*
 * The client's API key: where its API puts it (the API's row says, in
 * order: a header of its own, an argument of the URL, Authorization:
 * Bearer), and what becomes of it.  Only its SHA-256 is kept.  Every place
 * a key may travel in is scrubbed, whichever one was used: the proxy
 * forwards what is left, and nginx logs the request line.
 *
 * A key in the URL is masked where nginx logs it (the client's request
 * line) and, for a relay, taken out of the arguments the upstream is
 * sent.
 */


#include "ngx_http_imgbill_ctx.h"
#include <openssl/evp.h>


#define NGX_HTTP_IMGBILL_KEY_MAX     256


size_t ngx_http_imgbill_strip_args(u_char *dst, u_char *src, size_t len,
    ngx_str_t *name);

static ngx_int_t ngx_http_imgbill_key_from(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_key_source_t *k,
    ngx_str_t *key);
static ngx_int_t ngx_http_imgbill_key_bearer(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_int_t ngx_http_imgbill_key_header(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *key);
static ngx_int_t ngx_http_imgbill_key_query(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *key);
static void ngx_http_imgbill_mask_args(u_char *p, u_char *last,
    ngx_str_t *name);
static void ngx_http_imgbill_key_trim(ngx_str_t *key);


/*
 * NGX_OK and the hex SHA-256 in key_hash; NGX_DECLINED without a key.
 * The sources are scrubbed in every case, so call it before any rejection
 * that logs the request.
 */

ngx_int_t
ngx_http_imgbill_api_key(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, u_char *key_hash)
{
    ngx_int_t                       rc, n;
    ngx_str_t                       key;
    ngx_http_imgbill_key_source_t  *k;

    rc = NGX_DECLINED;

    for (k = lcf->api->keys; k->from != ngx_http_imgbill_key_in_none; k++) {
        n = ngx_http_imgbill_key_from(r, lcf, k,
                                      (rc == NGX_OK) ? NULL : &key);
        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (n == NGX_OK) {
            rc = NGX_OK;
        }
    }

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_imgbill_key_trim(&key);

    if (key.len == 0 || key.len > NGX_HTTP_IMGBILL_KEY_MAX) {
        return NGX_DECLINED;
    }

    return ngx_http_imgbill_sha256(r, key.data, key.len, key_hash);
}


/*
 * The hex SHA-256 of data, into hex (NGX_HTTP_IMGBILL_KEY_HASH_LEN bytes).
 * EVP_sha256() makes OpenSSL 3 look its implementation up again on every
 * digest, which cost more than hashing a key (two thirds of the worker's
 * time in libcrypto): a worker fetches it once.
 */

ngx_int_t
ngx_http_imgbill_sha256(ngx_http_request_t *r, u_char *data, size_t len,
    u_char *hex)
{
    u_char                         md[EVP_MAX_MD_SIZE];
    unsigned int                   n;
    const EVP_MD                  *sha256;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    sha256 = (mcf->worker && mcf->worker->sha256) ? mcf->worker->sha256
                                                  : EVP_sha256();

    if (EVP_Digest(data, len, md, &n, sha256, NULL) != 1) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "imgbill: EVP_Digest(sha256) failed");
        return NGX_ERROR;
    }

    ngx_hex_dump(hex, md, n);

    return NGX_OK;
}


void
ngx_http_imgbill_sha256_init(ngx_http_imgbill_worker_t *w)
{
#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
    /* NULL on failure: each digest looks it up then */
    w->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
#endif
}


void
ngx_http_imgbill_sha256_done(ngx_http_imgbill_worker_t *w)
{
#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
    EVP_MD_free(w->sha256);
    w->sha256 = NULL;
#endif
}


/*
 * One source: its key into *key, if key is not NULL (none was found
 * before), and scrubbed either way.  A relay's upstream never sees a key
 * of the URL; a model list is not proxied.
 */

static ngx_int_t
ngx_http_imgbill_key_from(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf, ngx_http_imgbill_key_source_t *k,
    ngx_str_t *key)
{
    ngx_int_t  rc;
    ngx_str_t  unused;

    switch (k->from) {

    case ngx_http_imgbill_key_in_header:
        return ngx_http_imgbill_key_header(r, &k->name, key ? key : &unused);

    case ngx_http_imgbill_key_in_query:
        if (key) {
            rc = ngx_http_imgbill_key_query(r, &k->name, key);

        } else {
            ngx_http_imgbill_mask_query(r, &k->name);
            rc = NGX_DECLINED;
        }

        if (rc != NGX_ERROR
            && !lcf->models
            && ngx_http_imgbill_strip_query_arg(r, &k->name) != NGX_OK)
        {
            return NGX_ERROR;
        }

        return rc;

    default: /* ngx_http_imgbill_key_in_bearer */
        return ngx_http_imgbill_key_bearer(r, key ? key : &unused);
    }
}


/*
 * Every "name=" argument's value, whatever case its name is in and
 * however percent-encoded, becomes "xxxx": in the arguments and, where
 * HTTP/2 built it apart, in the request line ($request, the error log's
 * context).  On HTTP/1 both are the client's header buffer.
 */

void
ngx_http_imgbill_mask_query(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char  *p, *last;

    if (r->args.len) {
        ngx_http_imgbill_mask_args(r->args.data,
                                   r->args.data + r->args.len, name);
    }

    p = r->request_line.data;
    last = p + r->request_line.len;

    if (p == NULL || (r->args.data >= p && r->args.data < last)) {
        return;
    }

    p = ngx_strlchr(p, last, '?');
    if (p == NULL) {
        return;
    }

    last = ngx_strlchr(p, last, ' ');
    if (last == NULL) {
        last = r->request_line.data + r->request_line.len;
    }

    ngx_http_imgbill_mask_args(p + 1, last, name);
}


static void
ngx_http_imgbill_mask_args(u_char *p, u_char *last, ngx_str_t *name)
{
    u_char  *end, *eq;

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');

        if (eq && ngx_http_imgbill_arg_is(p, eq, (char *) name->data)) {
            ngx_memset(eq + 1, 'x', end - eq - 1);
        }

        p = end + 1;
    }
}


/*
 * The keys leave the arguments proxy_pass forwards; $args no longer has
 * them.  The new arguments are a copy: on HTTP/1, r->args lies inside the
 * request line and r->unparsed_uri, which keep their length and the keys
 * masked, for $request and $request_uri.  Without valid_unparsed_uri,
 * proxy_pass without a URI part builds the upstream's request line from
 * r->uri and r->args instead of copying the client's, as nginx does after
 * "set $args" (ngx_http_variable_set_args); so the upstream also gets
 * the decoded URI an API's target read the model from.
 */

ngx_int_t
ngx_http_imgbill_strip_query_arg(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char  *p;

    ngx_http_imgbill_mask_query(r, name);

    r->valid_unparsed_uri = 0;

    if (r->args.len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, r->args.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    r->args.len = ngx_http_imgbill_strip_args(p, r->args.data, r->args.len,
                                              name);
    r->args.data = p;

    return NGX_OK;
}


/*
 * The arguments of src but those named name, in their order, each after
 * an '&' but the first: never longer than src.  Not static, for t/unit/.
 */

size_t
ngx_http_imgbill_strip_args(u_char *dst, u_char *src, size_t len,
    ngx_str_t *name)
{
    u_char      *p, *last, *end, *eq, *d;
    ngx_uint_t   first;

    d = dst;
    first = 1;
    last = src + len;

    for (p = src; /* void */; p = end + 1) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');

        if (!ngx_http_imgbill_arg_is(p, eq ? eq : end, (char *) name->data)) {
            if (!first) {
                *d++ = '&';
            }

            d = ngx_cpymem(d, p, end - p);
            first = 0;
        }

        if (end == last) {
            return d - dst;
        }
    }
}


/*
 * A location of an API whose key may be in the URL that imgbill does not
 * bill (conf.d's JSON 404 for unknown paths) still masks it: the key is
 * the customer's.  So does any OPTIONS: a browser's preflight goes to the
 * URL of the call it asks about, ?key= included, and is answered before
 * any key is read.
 */

ngx_int_t
ngx_http_imgbill_mask_handler(ngx_http_request_t *r)
{
    ngx_http_imgbill_loc_conf_t    *lcf;
    ngx_http_imgbill_key_source_t  *k;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    if (lcf->channel != NGX_HTTP_IMGBILL_OFF
        && r->method != NGX_HTTP_OPTIONS)
    {
        return NGX_DECLINED;
    }

    for (k = lcf->api->keys; k->from != ngx_http_imgbill_key_in_none; k++) {
        if (k->from == ngx_http_imgbill_key_in_query) {
            ngx_http_imgbill_mask_query(r, &k->name);
        }
    }

    return NGX_DECLINED;
}


/* the client's key is ours, never the upstream's */

static ngx_int_t
ngx_http_imgbill_key_bearer(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    if (h->value.len > sizeof("Bearer ") - 1
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1)
           == 0)
    {
        key->data = h->value.data + sizeof("Bearer ") - 1;
        key->len = h->value.len - (sizeof("Bearer ") - 1);
        rc = NGX_OK;
    }

    /* a credential of any scheme stays here; the value's bytes stay in
       place for the key, the renamed header no longer points at them */

    ngx_http_imgbill_hide_header(h);
    r->headers_in.authorization = NULL;

    return rc;
}


/* the first header of the name; every one is hidden: nginx keeps
   duplicates */

static ngx_int_t
ngx_http_imgbill_key_header(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *key)
{
    ngx_int_t         rc;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    rc = NGX_DECLINED;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return rc;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name->len
            && ngx_strncasecmp(h[i].key.data, name->data, name->len) == 0)
        {
            if (rc == NGX_DECLINED) {
                *key = h[i].value;
                rc = NGX_OK;
            }

            ngx_http_imgbill_hide_header(&h[i]);
        }
    }
}


/* the first argument of the name, copied before every one is masked */

static ngx_int_t
ngx_http_imgbill_key_query(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *key)
{
    u_char     *copy;
    ngx_str_t   value;

    if (ngx_http_arg(r, name->data, name->len, &value) != NGX_OK
        || value.len == 0)
    {
        ngx_http_imgbill_mask_query(r, name);
        return NGX_DECLINED;
    }

    copy = ngx_pnalloc(r->pool, value.len);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(copy, value.data, value.len);

    ngx_http_imgbill_mask_query(r, name);

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
