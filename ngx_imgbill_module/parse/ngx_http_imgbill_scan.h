
/*
 * imgbill: the reply scanner's interface.  It needs nothing of nginx
 * but its core types, so the unit checks and the fuzzer build it alone.
 */


#ifndef _NGX_HTTP_IMGBILL_SCAN_H_INCLUDED_
#define _NGX_HTTP_IMGBILL_SCAN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* token counts above this are not believed (and cannot overflow a charge) */
#define NGX_HTTP_IMGBILL_TOKENS_MAX      2147483647

/* containers open at once, the root included: a reply is never that deep */
#define NGX_HTTP_IMGBILL_SCAN_DEPTH      128

/* the longest key a dialect may name ("candidatesTokenCount") */
#define NGX_HTTP_IMGBILL_SCAN_KEY_LEN    20

/* choice indexes told apart; a larger one counts as the last */
#define NGX_HTTP_IMGBILL_SCAN_INDEXES    64


/*
 * The keys the scanner itself gives a meaning to, whatever a dialect
 * spells them; a dialect numbers the keys of its own paths from
 * NGX_HTTP_IMGBILL_SCAN_KEY_API on.
 */

enum {
    ngx_http_imgbill_key_other = 0,
    ngx_http_imgbill_key_escaped,       /* could be any of them */
    ngx_http_imgbill_key_usage,         /* the root's usage object */
    ngx_http_imgbill_key_choices,       /* the root's array of choices */
    ngx_http_imgbill_key_finish,        /* a choice's finish reason */
    ngx_http_imgbill_key_error,         /* the root's error */
    ngx_http_imgbill_key_prompt,        /* the usage's counts */
    ngx_http_imgbill_key_completion,
    ngx_http_imgbill_key_thoughts,      /* output, beside the completion */
    ngx_http_imgbill_key_index,         /* a choice's index */
    ngx_http_imgbill_key_details,       /* the usage's input details */
    ngx_http_imgbill_key_image_input,   /* ... their image tokens */
    NGX_HTTP_IMGBILL_SCAN_KEY_API
};

/* ... and the containers ("roles"), numbered alike from _ROLE_API on */
enum {
    ngx_http_imgbill_role_other = 0,
    ngx_http_imgbill_role_root,
    ngx_http_imgbill_role_usage,
    ngx_http_imgbill_role_choices,
    ngx_http_imgbill_role_choice,
    ngx_http_imgbill_role_details,      /* the usage's input details, where
                                           a dialect's path opens them */
    NGX_HTTP_IMGBILL_SCAN_ROLE_API
};

/* what a value shows, where a dialect marks it */
enum {
    ngx_http_imgbill_shows_image = 1,   /* an image, whatever it holds */
    ngx_http_imgbill_shows_text,        /* a string that may name one: a
                                           data URL, a markdown image */
    ngx_http_imgbill_shows_mime,        /* a string that may be an image
                                           MIME type */
    ngx_http_imgbill_shows_done,        /* a string that, ending in
                                           ".completed", makes the document
                                           a finished image (the Images
                                           API's stream events) */
    ngx_http_imgbill_shows_url          /* an image unless an empty string
                                           (Ideogram's filtered images keep
                                           their entry, with "url": "") */
};


typedef struct {
    ngx_str_t                       name;      /* as sent */
    ngx_uint_t                      key;
} ngx_http_imgbill_scan_key_t;

/* a container opened by "open" under key in a parent of the role */
typedef struct {
    u_char                          parent;
    u_char                          key;       /* _other: an element */
    u_char                          open;      /* '{' or '[' */
    u_char                          role;
} ngx_http_imgbill_scan_path_t;

/* a value under key in a container of the role */
typedef struct {
    u_char                          role;
    u_char                          key;       /* _other: an element */
    u_char                          shows;
} ngx_http_imgbill_scan_mark_t;


/*
 * The shape of an API's replies, as the scanner reads them: the keys it
 * tells apart, the paths from a choice to its images, and where an image
 * shows.  A path outside the root's usage and choices is the dialect's
 * own; each API's file (api/) has its dialect.
 */

typedef struct {
    ngx_http_imgbill_scan_key_t    *keys;      /* an empty name ends it */
    ngx_http_imgbill_scan_path_t   *paths;     /* a zero role ends it */
    ngx_http_imgbill_scan_mark_t   *marks;     /* a zero "shows" ends it */
    unsigned                        cost:1;    /* the usage may take a
                                                  "cost": usage_at */
    unsigned                        usage_chunk:1;  /* an empty choices
                                                       array is a stream's
                                                       usage chunk */
} ngx_http_imgbill_dialect_t;


/*
 * The reply scanner's findings.  Tokens are the bill's: the output is
 * the completion's count and the thinking's, where a dialect counts
 * them apart.
 */
typedef struct {
    unsigned                        json:1;    /* one well-formed object */
    unsigned                        image:1;
    unsigned                        usage:1;   /* both counts, plausible */
    unsigned                        usage_key:1;  /* a top-level usage
                                                     object, usable or
                                                     not */
    unsigned                        error:1;   /* a top-level "error" that
                                                  is not null */
    unsigned                        finished:1;  /* a choice's finish
                                                    reason, a string */
    unsigned                        no_choices:1;  /* a usage chunk's
                                                      empty choices */
    unsigned                        done:1;    /* a finished image, where
                                                  the dialect marks one */
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
    ngx_int_t                       image_tokens;  /* of the prompt, where
                                                      the usage tells them
                                                      apart; -1: it does
                                                      not */

    /* the choices (candidates) carrying an image, and their "index"es as
       bits (an index past the last bit counts as the last): a stream's
       events are told apart by them */
    ngx_uint_t                      images;
    uint64_t                        indexes;

    /* where the dialect takes a cost: the offset, from the first byte
       fed, of the byte after the top-level usage object's '{' (0: none);
       where "cost" goes in */
    size_t                          usage_at;

    /* the offset of the byte after the one that first showed an image (0:
       none): the start of an images[] entry or an image_url, the "/" of
       "data:image/" or "image/", the "[" of "![" */
    size_t                          image_at;
} ngx_http_imgbill_scan_t;


/* an open object or array */
typedef struct {
    u_char                          close;     /* '}' or ']' */
    u_char                          role;      /* the path it is on */
    u_char                          key;       /* of the member being read */
} ngx_http_imgbill_scan_frame_t;


/*
 * Everything the scanner knows between two buffers: a fixed size, so that
 * a caller embeds it and the input may be any size, cut anywhere.
 */

typedef struct {
    ngx_http_imgbill_scan_frame_t   stack[NGX_HTTP_IMGBILL_SCAN_DEPTH];
    ngx_uint_t                      depth;
    ngx_uint_t                      state;     /* where in the document */
    ngx_http_imgbill_dialect_t     *dialect;
    size_t                          fed;       /* bytes before this buffer */
    u_char                         *start;     /* this buffer, while fed */

    /* the token being read: a string, a number or a literal */
    ngx_uint_t                      token;     /* where in the token */
    ngx_uint_t                      watch;     /* what its bytes are for */
    ngx_uint_t                      hex;       /* digits of "\u" to come */
    ngx_uint_t                      match;     /* of "data:image\/" or of
                                                  a MIME type's "image/" */
    ngx_int_t                       number;
    u_char                         *literal;   /* of "true" etc., to come */
    size_t                          key_len;
    u_char                          key[NGX_HTTP_IMGBILL_SCAN_KEY_LEN];
    unsigned                        escaped:1;
    unsigned                        bang:1;    /* the last byte was '!' */
    unsigned                        found:1;   /* an image named in it */
    unsigned                        integer:1;

    /* what the document said so far */
    ngx_uint_t                      usages;
    ngx_uint_t                      prompt_seen;
    ngx_uint_t                      completion_seen;
    ngx_uint_t                      thoughts_seen;
    ngx_uint_t                      image_input_seen;
    ngx_int_t                       image_input_tokens;
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;
    ngx_int_t                       thoughts_tokens;
    size_t                          usage_at;
    size_t                          image_at;
    ngx_uint_t                      images;
    uint64_t                        indexes;
    ngx_uint_t                      choice_index;  /* of the choice read */
    unsigned                        in_choice:1;
    unsigned                        choice_image:1;
    unsigned                        usage_bad:1;
    unsigned                        image:1;
    unsigned                        usage_key:1;
    unsigned                        error:1;
    unsigned                        finished:1;
    unsigned                        no_choices:1;
    unsigned                        done:1;
} ngx_http_imgbill_scanner_t;


void ngx_http_imgbill_scan_init(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_dialect_t *dialect);
ngx_int_t ngx_http_imgbill_scan_feed(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
u_char *ngx_http_imgbill_scan_skip(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
void ngx_http_imgbill_scan_finish(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_t *res);

/* the whole reply in one buffer: init, feed and finish */
void ngx_http_imgbill_scan(u_char *p, u_char *last,
    ngx_http_imgbill_dialect_t *dialect, ngx_http_imgbill_scan_t *res);


#endif /* _NGX_HTTP_IMGBILL_SCAN_H_INCLUDED_ */
