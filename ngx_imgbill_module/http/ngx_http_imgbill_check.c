
/*
 * What "nginx -t" refuses beyond each directive's own syntax: the
 * mistakes that pass a test but cost money at run time.
 *
 *   - a location that names "imgbill" but has nothing to relay to (no
 *     proxy_pass): every request would be admitted, held and answered by
 *     nginx's HTML 404;
 *   - imgbill_hold_ttl not longer than the location's proxy_read_timeout:
 *     a generation still running when its hold expires lets the account
 *     spend the same money twice.
 *
 * The merge notes each location that names "imgbill" itself (and each
 * that serves a model list, which ngx_http_imgbill_models.c fills from
 * them); after all merges (postconfiguration) the notes are checked, when
 * every module's configuration of the location is final.
 */


#include "ngx_http_imgbill_module.h"


ngx_int_t
ngx_http_imgbill_check_note(ngx_conf_t *cf, ngx_http_imgbill_main_conf_t *mcf,
    ngx_uint_t list)
{
    ngx_http_imgbill_billed_t  *b;
    ngx_http_core_loc_conf_t   *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->name.len == 0) {
        /* http{} or server{}: its locations are what relay */
        return NGX_OK;
    }

    if (mcf->billed == NULL) {
        mcf->billed = ngx_array_create(cf->pool, 8,
                                       sizeof(ngx_http_imgbill_billed_t));
        if (mcf->billed == NULL) {
            return NGX_ERROR;
        }
    }

    b = ngx_array_push(mcf->billed);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->clcf = clcf;
    b->cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    b->lcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_imgbill_module);
    b->list = list;

    return NGX_OK;
}


ngx_int_t
ngx_http_imgbill_check(ngx_conf_t *cf, ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_uint_t                  i;
    ngx_msec_t                  timeout;
    ngx_http_upstream_conf_t   *ucf;
    ngx_http_imgbill_billed_t  *b;

    if (mcf->billed == NULL) {
        return NGX_OK;
    }

    b = mcf->billed->elts;

    for (i = 0; i < mcf->billed->nelts; i++) {

        if (b[i].list) {
            continue;
        }

        if (b[i].clcf->handler == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"imgbill\" in location \"%V\" has nothing to "
                          "relay to: add \"proxy_pass\" in %s:%ui",
                          &b[i].clcf->name, b[i].lcf->file, b[i].lcf->line);
            return NGX_ERROR;
        }

        ucf = ngx_http_imgbill_proxy_conf(cf, b[i].clcf);
        timeout = ucf ? ucf->read_timeout : NGX_CONF_UNSET_MSEC;

        if (timeout != NGX_CONF_UNSET_MSEC
            && (ngx_msec_t) mcf->redis.hold_ttl * 1000 <= timeout)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"imgbill_hold_ttl\" %T s is not longer than "
                          "\"proxy_read_timeout\" %M.%03M s of location "
                          "\"%V\": a hold would expire under a generation "
                          "still running in %s:%ui", mcf->redis.hold_ttl,
                          timeout / 1000, timeout % 1000, &b[i].clcf->name,
                          b[i].lcf->file, b[i].lcf->line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The proxy module's configuration of a location starts with its
 * ngx_http_upstream_conf_t (as fastcgi's, uwsgi's and grpc's do); the
 * module is found by name, so an nginx built without it loads imgbill
 * all the same: NULL then.
 */

ngx_http_upstream_conf_t *
ngx_http_imgbill_proxy_conf(ngx_conf_t *cf, ngx_http_core_loc_conf_t *clcf)
{
    ngx_uint_t     i;
    ngx_module_t  *m;

    for (i = 0; cf->cycle->modules[i]; i++) {
        m = cf->cycle->modules[i];

        if (m->type == NGX_HTTP_MODULE
            && ngx_strcmp(m->name, "ngx_http_proxy_module") == 0)
        {
            return clcf->loc_conf[m->ctx_index];
        }
    }

    return NULL;
}
