
/*
 * Cross-origin calls (imgbill_cors): a web app that calls the relay from
 * a browser.
 *
 * The browser first asks, with an OPTIONS preflight, whether the real
 * request may be sent.  The module answers it in the access phase: no key,
 * nothing held, nothing sent upstream.  Every reply of the location then
 * names the origin it may be read from and the headers it may read (the
 * charge, the balance, the request id).  Browsers give a page no way to
 * read trailers: a stream's page reads its charge in the stream's cost.
 *
 * "*" answers any origin, and so never varies; a list answers only its
 * own origins, each reply naming the one that asked (hence Vary: Origin).
 * Cookies are never asked for: the key is a header of the request.
 */


#include "ngx_http_imgbill_ctx.h"


/* the headers the SDKs send from a browser (the x-stainless-* are the
   openai SDK's, x-goog-api-* @google/genai's); a preflight that asks for
   others gets them too, its origin being allowed */
#define NGX_HTTP_IMGBILL_CORS_HEADERS                                       \
    "authorization, content-type, api-key, x-goog-api-key, "                \
    "x-goog-api-client, openai-organization, openai-project, openai-beta, " \
    "x-stainless-arch, x-stainless-lang, x-stainless-os, "                  \
    "x-stainless-package-version, x-stainless-retry-count, "                \
    "x-stainless-runtime, x-stainless-runtime-version, "                    \
    "x-stainless-timeout, x-stainless-async, x-stainless-helper-method"

/* Access-Control-Max-Age is 7200: Chromium keeps a preflight's answer two
   hours at most */

/* longer than any list of headers an SDK asks for */
#define NGX_HTTP_IMGBILL_CORS_ASKED_MAX  1024


static ngx_str_t  ngx_http_imgbill_cors_expose =
    ngx_string("X-Imgbill-Charge, X-Imgbill-Balance, X-Imgbill-Request-Id");
static ngx_str_t  ngx_http_imgbill_cors_reads =
    ngx_string("GET, HEAD, OPTIONS");
static ngx_str_t  ngx_http_imgbill_cors_posts = ngx_string("POST, OPTIONS");
static ngx_str_t  ngx_http_imgbill_cors_keys =
    ngx_string("GET, HEAD, POST, DELETE, OPTIONS");


static ngx_table_elt_t *ngx_http_imgbill_cors_find(ngx_list_t *headers,
    char *name, size_t len);
static ngx_str_t *ngx_http_imgbill_cors_origin(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf);
static ngx_uint_t ngx_http_imgbill_cors_token_list(ngx_str_t *s);


/* imgbill_cors off | * | ORIGIN ... */

char *
ngx_http_imgbill_cors_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_imgbill_loc_conf_t *lcf = conf;

    u_char      *p, *last;
    ngx_str_t   *value, *origin;
    ngx_uint_t   i;

    if (lcf->cors != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        lcf->cors = NULL;
        return NGX_CONF_OK;
    }

    lcf->cors = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                 sizeof(ngx_str_t));
    if (lcf->cors == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "*") == 0) {
            if (cf->args->nelts != 2) {
                return "takes \"*\" alone: any origin, or a list of them";
            }

        } else {
            /* an origin as a browser sends it: scheme://host[:port],
               without a path, not even "/" */

            p = value[i].data;
            last = p + value[i].len;

            if (ngx_strncmp(p, "http://", 7) == 0) {
                p += 7;

            } else if (ngx_strncmp(p, "https://", 8) == 0) {
                p += 8;

            } else {
                p = NULL;
            }

            /* a browser sends its origin in lowercase, without the
               scheme's own port, and compares the answer byte for byte */

            if (p == NULL || p == last
                || ngx_strlchr(p, last, '/') != NULL
                || ngx_strlchr(p, last, '*') != NULL
                || (value[i].data[4] == 's'
                    && last - p > 4
                    && ngx_strncmp(last - 4, ":443", 4) == 0)
                || (value[i].data[4] == ':'
                    && last - p > 3
                    && ngx_strncmp(last - 3, ":80", 3) == 0))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"imgbill_cors\": \"%V\" is no origin: "
                                   "write \"*\" or origins as browsers send "
                                   "them, \"https://app.example.com\" (a "
                                   "scheme and a host, no path, no default "
                                   "port)",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }
        }

        origin = ngx_array_push(lcf->cors);
        if (origin == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_strlow(value[i].data, value[i].data, value[i].len);
        *origin = value[i];
    }

    return NGX_CONF_OK;
}


/*
 * A preflight: NGX_DECLINED for any other request, NGX_OK with its
 * answer's headers set (the caller answers 204), NGX_ABORT where its
 * origin is not one allowed.
 */

ngx_int_t
ngx_http_imgbill_cors_preflight(ngx_http_request_t *r, ngx_uint_t reads)
{
    u_char                       *p;
    size_t                        len;
    ngx_str_t                    *methods;
    ngx_table_elt_t              *asked;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    if (lcf->cors == NULL || r->method != NGX_HTTP_OPTIONS
        || ngx_http_imgbill_cors_find(&r->headers_in.headers,
                                      "access-control-request-method",
                                      sizeof("access-control-request-method")
                                      - 1)
           == NULL)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_imgbill_cors_origin(r, lcf) == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "imgbill: a preflight from an origin not in "
                      "\"imgbill_cors\", refused");
        return NGX_ABORT;
    }

    asked = ngx_http_imgbill_cors_find(&r->headers_in.headers,
                                       "access-control-request-headers",
                                       sizeof("access-control-request-"
                                              "headers") - 1);

    if (asked && asked->value.len
        && asked->value.len <= NGX_HTTP_IMGBILL_CORS_ASKED_MAX
        && ngx_http_imgbill_cors_token_list(&asked->value))
    {
        len = sizeof(NGX_HTTP_IMGBILL_CORS_HEADERS ", ") - 1
              + asked->value.len;

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, NGX_HTTP_IMGBILL_CORS_HEADERS ", ",
                   sizeof(NGX_HTTP_IMGBILL_CORS_HEADERS ", ") - 1);
        ngx_memcpy(p + sizeof(NGX_HTTP_IMGBILL_CORS_HEADERS ", ") - 1,
                   asked->value.data, asked->value.len);

    } else {
        p = (u_char *) NGX_HTTP_IMGBILL_CORS_HEADERS;
        len = sizeof(NGX_HTTP_IMGBILL_CORS_HEADERS) - 1;
    }

    methods = (lcf->serve == NGX_HTTP_IMGBILL_SERVE_KEYS)
              ? &ngx_http_imgbill_cors_keys
              : reads ? &ngx_http_imgbill_cors_reads
                      : &ngx_http_imgbill_cors_posts;

    if (ngx_http_imgbill_add_header(r, "Access-Control-Allow-Methods",
                                    methods->data, methods->len)
        != NGX_OK
        || ngx_http_imgbill_add_header(r, "Access-Control-Allow-Headers",
                                       p, len)
           != NGX_OK
        || ngx_http_imgbill_add_header(r, "Access-Control-Max-Age",
                                       (u_char *) "7200", 4)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* every reply of a location with imgbill_cors, the preflight's and the
   errors' included: who may read it, and what */

ngx_int_t
ngx_http_imgbill_cors_headers(ngx_http_request_t *r)
{
    ngx_str_t                    *origin;
    ngx_table_elt_t              *vary;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    if (lcf->cors == NULL) {
        return NGX_OK;
    }

    /*
     * The upstream's own answer would contradict the operator's (a
     * preflight, answered here, has none).  A reply nginx sends again
     * through the filters (a 416 of the range filter) had ours already.
     */

    ngx_http_imgbill_strip_headers(&r->headers_out.headers,
                                   r->upstream ? "access-control-"
                                               : "access-control-allow-origin",
                                   0);
    ngx_http_imgbill_strip_headers(&r->headers_out.headers,
                                   "access-control-expose-headers", 0);

    origin = ngx_http_imgbill_cors_origin(r, lcf);

    if (((ngx_str_t *) lcf->cors->elts)[0].data[0] != '*') {
        vary = ngx_http_imgbill_cors_find(&r->headers_out.headers, "vary",
                                          sizeof("vary") - 1);

        if ((vary == NULL || vary->value.len != 6
             || ngx_strncmp(vary->value.data, "Origin", 6) != 0)
            && ngx_http_imgbill_add_header(r, "Vary", (u_char *) "Origin", 6)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (origin == NULL) {
        return NGX_OK;
    }

    if (ngx_http_imgbill_add_header(r, "Access-Control-Allow-Origin",
                                    origin->data, origin->len)
        != NGX_OK
        || ngx_http_imgbill_add_header(r, "Access-Control-Expose-Headers",
                                       ngx_http_imgbill_cors_expose.data,
                                       ngx_http_imgbill_cors_expose.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a header by its lowercase name: nginx keeps none of these apart */

static ngx_table_elt_t *
ngx_http_imgbill_cors_find(ngx_list_t *headers, char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0
            && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* what Access-Control-Allow-Origin says for this request: "*", the
   request's own origin where the list has it, or NULL */

static ngx_str_t *
ngx_http_imgbill_cors_origin(ngx_http_request_t *r,
    ngx_http_imgbill_loc_conf_t *lcf)
{
    ngx_str_t        *allowed;
    ngx_uint_t        i;
    ngx_table_elt_t  *origin;

    allowed = lcf->cors->elts;

    if (allowed[0].data[0] == '*') {
        return &allowed[0];
    }

    origin = ngx_http_imgbill_cors_find(&r->headers_in.headers, "origin",
                                        sizeof("origin") - 1);

    if (origin == NULL) {
        return NULL;
    }

    for (i = 0; i < lcf->cors->nelts; i++) {
        if (allowed[i].len == origin->value.len
            && ngx_strncmp(allowed[i].data, origin->value.data,
                           origin->value.len)
               == 0)
        {
            return &allowed[i];
        }
    }

    return NULL;
}


/* header names, commas and spaces only: what is repeated must not be
   able to start a header of its own */

static ngx_uint_t
ngx_http_imgbill_cors_token_list(ngx_str_t *s)
{
    u_char      ch;
    ngx_uint_t  i;

    for (i = 0; i < s->len; i++) {
        ch = s->data[i];

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
            || (ch >= '0' && ch <= '9')
            || ch == '-' || ch == '_' || ch == ',' || ch == ' ')
        {
            continue;
        }

        return 0;
    }

    return 1;
}
