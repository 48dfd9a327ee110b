
/*
 * Freed heap back to the kernel, after a burst.
 *
 * jansson and hiredis make many small allocations per request.  After a
 * burst, glibc keeps some of the freed ones in its per-thread cache, and
 * those chunks are never merged into the top of the heap, so the heap
 * cannot shrink: after 3000 generations held 5 s at once, a worker's heap
 * was 29.9 MB from the system with 0.5 MB in use, and its RSS stayed at
 * 37.8 MB where plain proxying went back to 8.5 MB.  malloc_trim() gives
 * back every free page, wherever it is in the heap; a worker timer calls
 * it while the free part of the heap is large.  Only glibc has it: with
 * another libc the directive is accepted and does nothing.
 */


#include "ngx_http_imgbill_module.h"

#if (NGX_LINUX && defined __GLIBC__)
#if (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define NGX_HTTP_IMGBILL_HAVE_TRIM  1
#endif
#endif


/* below this much free heap, a trim gives back too little to bother */
#define NGX_HTTP_IMGBILL_TRIM_MIN   (1024 * 1024)


char *
ngx_http_imgbill_trim_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_imgbill_main_conf_t *mcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   ms;

    if (mcf->trim != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        mcf->trim = 0;
        return NGX_CONF_OK;
    }

    ms = ngx_parse_time(&value[1], 0);

    if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": a time above "
                           "0, or \"off\" to keep the freed heap",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    mcf->trim = ms;

    return NGX_CONF_OK;
}


#if (NGX_HTTP_IMGBILL_HAVE_TRIM)

static void
ngx_http_imgbill_trim_handler(ngx_event_t *ev)
{
    ngx_http_imgbill_main_conf_t *mcf = ev->data;

    struct mallinfo2  mi;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    /* reply buffers that waited a whole tick for a reply go first */
    if (mcf->worker) {
        ngx_http_imgbill_spares_free(mcf->worker, mcf->trim);
    }

    mi = mallinfo2();

    if (mi.fordblks >= NGX_HTTP_IMGBILL_TRIM_MIN) {
        (void) malloc_trim(0);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "imgbill: heap trimmed, %uz of %uz bytes free",
                       mi.fordblks, mi.arena);
    }

    ngx_add_timer(ev, mcf->trim);
}

#endif


ngx_int_t
ngx_http_imgbill_trim_init(ngx_cycle_t *cycle,
    ngx_http_imgbill_main_conf_t *mcf)
{
#if (NGX_HTTP_IMGBILL_HAVE_TRIM)

    ngx_event_t  *ev;

    if (mcf->trim == 0) {
        return NGX_OK;
    }

    ev = ngx_pcalloc(cycle->pool, sizeof(ngx_event_t));
    if (ev == NULL) {
        return NGX_ERROR;
    }

    ev->handler = ngx_http_imgbill_trim_handler;
    ev->data = mcf;
    ev->log = cycle->log;

    /* a worker that is shutting down does not wait for it */
    ev->cancelable = 1;

    ngx_add_timer(ev, mcf->trim);

#endif

    return NGX_OK;
}
