
/*
 * The functions of nginx an API's files (ngx_imgbill_module/api/) call on
 * their HTTP side (buffers, arguments, JSON escaping, a directive), for
 * the programs that build a parser with its API's tables but without
 * nginx: the unit checks and the fuzzers.  None of them reaches these:
 * each aborts.  They are weak, so that a harness that does need one
 * (t/unit/request_check.c reads arguments) defines its own, which wins.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define ngx_http_stub  __attribute__((weak))


ngx_http_stub void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    abort();
}


ngx_http_stub void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    abort();
}


ngx_http_stub void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    abort();
}


ngx_http_stub ngx_chain_t *
ngx_alloc_chain_link(ngx_pool_t *pool)
{
    abort();
}


ngx_http_stub uintptr_t
ngx_escape_json(u_char *dst, u_char *src, size_t size)
{
    abort();
}


ngx_http_stub u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    abort();
}


ngx_http_stub ngx_int_t
ngx_http_arg(ngx_http_request_t *r, u_char *name, size_t len,
    ngx_str_t *value)
{
    abort();
}


ngx_http_stub u_char * ngx_cdecl
ngx_slprintf(u_char *buf, u_char *last, const char *fmt, ...)
{
    abort();
}


ngx_http_stub void ngx_cdecl
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
    abort();
}


ngx_http_stub ssize_t
ngx_write_file(ngx_file_t *file, u_char *buf, size_t size, off_t offset)
{
    abort();
}


ngx_http_stub void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    abort();
}
