
/*
 * imgbill: between the reply scanner's two files, the machine
 * (ngx_http_imgbill_scan.c) and its tokens (ngx_http_imgbill_scan_token.c).
 */


#ifndef _NGX_HTTP_IMGBILL_SCAN_TOKEN_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_SCAN_TOKEN_H_INCLUDED_


#include "ngx_http_imgbill_scan.h"


/* where in a string or a number (s->token) */
enum {
    sw_str_text = 0,
    sw_str_escape,      /* after a backslash */
    sw_str_hex          /* among the four digits of "\u" */
};

enum {
    sw_num_minus = 0,
    sw_num_zero,        /* a leading 0: no digit may follow */
    sw_num_int,
    sw_num_dot,
    sw_num_frac,
    sw_num_e,
    sw_num_e_sign,
    sw_num_exp
};


/* what the bytes of a string are looked at for (s->watch) */
enum {
    ngx_http_imgbill_watch_none = 0,
    ngx_http_imgbill_watch_key,       /* kept, to name the key */
    ngx_http_imgbill_watch_text,      /* searched for an image */
    ngx_http_imgbill_watch_mime,      /* an image's MIME type? */
    ngx_http_imgbill_watch_done,      /* does it end in ".completed"? */
    ngx_http_imgbill_watch_any        /* has it a byte at all? */
};


#define ngx_http_imgbill_is_digit(ch)  (ch >= '0' && ch <= '9')

/* the key of the value being read: an array's elements have none */
#define ngx_http_imgbill_value_key(f)                                        \
    ((f)->close == '}' ? (ngx_uint_t) (f)->key : ngx_http_imgbill_key_other)


/* ngx_http_imgbill_scan_token.c */
void ngx_http_imgbill_scan_string_start(ngx_http_imgbill_scanner_t *s,
    ngx_uint_t watch);
u_char *ngx_http_imgbill_scan_string(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
u_char *ngx_http_imgbill_scan_string_plain(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
u_char *ngx_http_imgbill_scan_number(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
ngx_uint_t ngx_http_imgbill_scan_key(ngx_http_imgbill_scanner_t *s);
ngx_uint_t ngx_http_imgbill_scan_role(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_frame_t *parent, u_char open);
ngx_uint_t ngx_http_imgbill_scan_shows(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_frame_t *f);

/* ngx_http_imgbill_scan.c: what a token means where it stands */
void ngx_http_imgbill_scan_image(ngx_http_imgbill_scanner_t *s, size_t at);
void ngx_http_imgbill_scan_string_end(ngx_http_imgbill_scanner_t *s);
void ngx_http_imgbill_scan_number_end(ngx_http_imgbill_scanner_t *s);


#endif /* _NGX_HTTP_IMGBILL_SCAN_TOKEN_H_INCLUDED_ */
