
/*
 * imgbill: the APIs a location may speak, one row each (adding an API is
 * a file of this folder and a row here), and what every API's request
 * goes through: parsed, read by its API, bounded.
 */


#include "ngx_http_imgbill_api.h"


extern ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_images_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_ideogram_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_ideogram_legacy_api;


static ngx_int_t ngx_http_imgbill_check_parsed(ngx_int_t rc,
    ngx_http_imgbill_api_t *api, ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req);


/* the first is a location's when it names none */

static ngx_http_imgbill_api_t  *ngx_http_imgbill_apis[NGX_HTTP_IMGBILL_APIS
                                                      + 1] = {
    &ngx_http_imgbill_openai_api,
    &ngx_http_imgbill_gemini_api,
    &ngx_http_imgbill_images_api,
    &ngx_http_imgbill_ideogram_api,
    &ngx_http_imgbill_ideogram_legacy_api,
    NULL
};


/* imgbill_api NAME: the location's row, or an error that lists them */

char *
ngx_http_imgbill_api_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    u_char                   names[NGX_MAX_CONF_ERRSTR], *last;
    ngx_str_t               *value;
    ngx_uint_t               i;
    ngx_http_imgbill_api_t  **api;

    api = (ngx_http_imgbill_api_t **) (p + cmd->offset);

    if (*api != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; ngx_http_imgbill_apis[i]; i++) {
        if (ngx_http_imgbill_apis[i]->name.len == value[1].len
            && ngx_strncasecmp(ngx_http_imgbill_apis[i]->name.data,
                               value[1].data, value[1].len)
               == 0)
        {
            *api = ngx_http_imgbill_apis[i];
            return NGX_CONF_OK;
        }
    }

    last = names;

    for (i = 0; ngx_http_imgbill_apis[i]; i++) {
        last = ngx_slprintf(last, names + sizeof(names), "%s\"%V\"",
                            i ? ", " : "", &ngx_http_imgbill_apis[i]->name);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\" directive, "
                       "it must be %*s", &value[1], &cmd->name,
                       last - names, names);

    return NGX_CONF_ERROR;
}


ngx_http_imgbill_api_t *
ngx_http_imgbill_api_default(void)
{
    return ngx_http_imgbill_apis[0];
}


/* the table's rows by number, for what counts by API (the metrics); NULL
   past the last */

ngx_http_imgbill_api_t *
ngx_http_imgbill_api_at(ngx_uint_t i)
{
    return (i < NGX_HTTP_IMGBILL_APIS) ? ngx_http_imgbill_apis[i] : NULL;
}


ngx_uint_t
ngx_http_imgbill_api_index(ngx_http_imgbill_api_t *api)
{
    ngx_uint_t  i;

    for (i = 0; ngx_http_imgbill_apis[i] != api; i++) {
        /* void */
    }

    return i;
}


/*
 * The request body, read as it came (ngx_http_imgbill_compact.c), for the
 * API: a JSON object read by the API's check into req, and the bound of
 * its prompt.  NGX_HTTP_IMGBILL_REQ_OK or a verdict; the caller
 * json_decref()s req->root in every case.  The long strings' table is the
 * compactor's, read only here; the marks are copied into req.
 */

ngx_int_t
ngx_http_imgbill_check_compact(ngx_http_imgbill_compact_t *c,
    ngx_http_imgbill_api_t *api, ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    return ngx_http_imgbill_check_parsed(
                               ngx_http_imgbill_compact_parse(c, req),
                               api, operation, image_limit, req);
}


/* ... and a form's; the strings its verdict names live as long as it */

ngx_int_t
ngx_http_imgbill_check_form(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_api_t *api, ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    return ngx_http_imgbill_check_parsed(ngx_http_imgbill_form_parse(f, req),
                                         api, operation, image_limit, req);
}


/* operation: what the path asked, as the API's target read it (NULL:
   nothing) */

static ngx_int_t
ngx_http_imgbill_check_parsed(ngx_int_t rc, ngx_http_imgbill_api_t *api,
    ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    if (operation) {
        req->operation = *operation;
    }

    if (rc == NGX_HTTP_IMGBILL_REQ_OK) {
        rc = api->check(req, image_limit);
    }

    if (rc == NGX_HTTP_IMGBILL_REQ_OK) {
        ngx_http_imgbill_request_bound(req);
    }

    req->longs = NULL;
    req->nlongs = 0;

    return rc;
}


/* a body in one piece (the unit checks, the fuzzer) */

ngx_int_t
ngx_http_imgbill_check_request(u_char *p, size_t len,
    ngx_http_imgbill_api_t *api, ngx_str_t *operation, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    ngx_int_t                    rc;
    ngx_http_imgbill_compact_t  *c;

    c = ngx_http_imgbill_compact_create(NGX_HTTP_IMGBILL_COMPACT_MAX,
                                        api->marks, NULL);
    if (c == NULL) {
        ngx_memzero(req, sizeof(ngx_http_imgbill_request_t));
        return NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX;
    }

    ngx_http_imgbill_compact_feed(c, p, p + len);

    rc = ngx_http_imgbill_check_compact(c, api, operation, image_limit,
                                        req);

    ngx_http_imgbill_compact_free(c);

    return rc;
}


/* whether the API's key may come in the URL, which nginx logs */

ngx_uint_t
ngx_http_imgbill_api_query_key(ngx_http_imgbill_api_t *api)
{
    ngx_http_imgbill_key_source_t  *k;

    for (k = api->keys; k->from != ngx_http_imgbill_key_in_none; k++) {
        if (k->from == ngx_http_imgbill_key_in_query) {
            return 1;
        }
    }

    return 0;
}
