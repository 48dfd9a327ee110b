
/*
 * imgbill: the reply scanner's interface.  It needs nothing of nginx
 * but its core types, so the unit checks and the fuzzer build it alone.
 */


#ifndef _NGX_HTTP_IMGBILL_SCAN_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_SCAN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* token counts above this are not believed (and cannot overflow a charge) */
#define NGX_HTTP_IMGBILL_TOKENS_MAX   2147483647


/* the reply scanner's findings */
typedef struct {
    unsigned                        json:1;    /* one well-formed object */
    unsigned                        image:1;
    unsigned                        usage:1;   /* both counts, plausible */
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
} ngx_http_imgbill_scan_t;


void ngx_http_imgbill_scan(u_char *p, u_char *last,
    ngx_http_imgbill_scan_t *res);


#endif /* _NGX_HTTP_IMGBILL_SCAN_H_INCLUDED_ */
