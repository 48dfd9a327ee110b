
/*
 * imgbill: between the compactor's two files, the structure
 * (ngx_http_imgbill_compact.c) and the tokens, strings and numbers
 * (ngx_http_imgbill_compact_token.c).
 */


#ifndef _NGX_HTTP_IMGBILL_COMPACT_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_COMPACT_H_INCLUDED_


#include "ngx_http_imgbill_request.h"

/* a number's states (sw_num_*), as the reply scanner's */
#include "ngx_http_imgbill_scan_token.h"


/* what comes next, outside strings */
enum {
    sw_value = 0,          /* the root, or after ':' or an array's ',' */
    sw_value_or_close,     /* after '[' */
    sw_key_or_close,       /* after '{' */
    sw_key,                /* after an object's ',' */
    sw_colon,
    sw_comma_or_close,
    sw_end,                /* after the root: only whitespace */
    sw_number,
    sw_literal,
    sw_string
};

/* where in a string */
enum {
    sw_text = 0,
    sw_utf8,               /* among a character's continuation bytes */
    sw_escape,             /* after a backslash */
    sw_hex,                /* among the four digits of "\u" */
    sw_pair_backslash,     /* after a high surrogate: "\" must follow */
    sw_pair_u              /* ... then "u" */
};

#define NGX_HTTP_IMGBILL_OBJECT  0x80   /* in stack[]: an object */


struct ngx_http_imgbill_compact_s {
    u_char                         *text;
    size_t                          len;
    size_t                          size;
    size_t                          max;
    size_t                          room;       /* max, less the table */
    ngx_http_imgbill_long_t        *longs;
    ngx_uint_t                      nlongs;
    ngx_uint_t                      nalloc;
    ngx_log_t                      *log;

    off_t                           total;      /* bytes fed */
    off_t                           line_start;
    ngx_uint_t                      line;
    ngx_int_t                       verdict;
    json_error_t                    error;

    ngx_uint_t                      state;
    ngx_uint_t                      after;      /* sw_comma_or_close or
                                                   sw_end, after a value */
    ngx_uint_t                      depth;
    u_char                          stack[NGX_HTTP_IMGBILL_DEPTH + 1];

    /* the token being read */
    ngx_uint_t                      sw;
    ngx_uint_t                      hex;
    ngx_uint_t                      digits;
    uint32_t                        code;       /* a \u's, a character's */
    uint32_t                        high;       /* a surrogate pair's */
    uint32_t                        min;        /* an overlong's bound */
    const char                     *literal;
    ngx_uint_t                      key:1;
    ngx_uint_t                      elided:1;
    ngx_uint_t                      full:1;
    size_t                          str_at;     /* its '"' in text */
    ngx_http_imgbill_long_t         str;        /* what it decodes to */
    ngx_uint_t                      data;       /* "data:" matched */
    ngx_uint_t                      base64;     /* ";base64" matched */
    size_t                          comma;      /* after the first ',' */
    u_char                          tail[2];    /* its last two bytes */

    /* the members whose places are kept */
    const ngx_http_imgbill_mark_path_t  *paths;
    ngx_http_imgbill_mark_t         marks[NGX_HTTP_IMGBILL_MARKS];
    ngx_int_t                       value_mark;  /* the value to come */
    ngx_int_t                       token_mark;  /* the scalar being read */
    ngx_int_t                       ended_mark;  /* the value just read */
    off_t                           key_at;      /* the key being read */
    off_t                           key_comma;   /* ... the ',' before it */
    off_t                           root_close;
    u_char                          keybuf[NGX_HTTP_IMGBILL_MARK_KEY];
    size_t                          keylen;
};


#define ngx_http_imgbill_off(c, p, start)  ((c)->total + ((p) - (start)))

/* one byte of structure into the text, in place while it fits: most of a
   body's structure is bytes taken one at a time */
#define ngx_http_imgbill_compact_put1(c, p)                                  \
    if ((c)->len < (c)->room && (c)->len < (c)->size) {                      \
        (c)->text[(c)->len++] = *(p);                                        \
                                                                             \
    } else {                                                                 \
        ngx_http_imgbill_compact_put(c, p, 1, 1);                            \
    }


/* ngx_http_imgbill_compact_token.c */
u_char *ngx_http_imgbill_compact_string(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *last, u_char *start);
u_char *ngx_http_imgbill_compact_number(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *last, u_char *start);

/* ngx_http_imgbill_compact.c */
void ngx_http_imgbill_compact_value_end(ngx_http_imgbill_compact_t *c,
    off_t end);
void ngx_http_imgbill_compact_key_end(ngx_http_imgbill_compact_t *c);
void ngx_http_imgbill_compact_put(ngx_http_imgbill_compact_t *c, u_char *p,
    size_t n, ngx_uint_t capped);
u_char *ngx_http_imgbill_compact_fail(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *start, const char *what, ngx_int_t code);


#endif /* _NGX_HTTP_IMGBILL_COMPACT_H_INCLUDED_ */
