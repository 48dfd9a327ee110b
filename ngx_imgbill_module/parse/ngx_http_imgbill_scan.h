
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

/* the longest key the scanner tells apart, "candidatesTokenCount" */
#define NGX_HTTP_IMGBILL_SCAN_KEY_LEN    20

/* choice indexes told apart; a larger one counts as the last */
#define NGX_HTTP_IMGBILL_SCAN_INDEXES    64

/* the shape of the reply: OpenAI's chat completion (a whole one, or one
   chunk of a stream), or Gemini's GenerateContentResponse */
#define NGX_HTTP_IMGBILL_DIALECT_OPENAI  0
#define NGX_HTTP_IMGBILL_DIALECT_GEMINI  1


/*
 * The reply scanner's findings.  Tokens are the bill's: Gemini's output
 * is candidatesTokenCount + thoughtsTokenCount.
 */
typedef struct {
    unsigned                        json:1;    /* one well-formed object */
    unsigned                        image:1;
    unsigned                        usage:1;   /* both counts, plausible */
    unsigned                        usage_key:1;  /* a top-level "usage"
                                                     (usageMetadata) object,
                                                     usable or not */
    unsigned                        error:1;   /* a top-level "error" that
                                                  is not null */
    unsigned                        finished:1;  /* a finish_reason
                                                    (finishReason) string */
    unsigned                        no_choices:1;  /* "choices": [] */
    ngx_int_t                       prompt_tokens;
    ngx_int_t                       completion_tokens;

    /* the choices (candidates) carrying an image, and their "index"es as
       bits (an index past the last bit counts as the last): a stream's
       events are told apart by them */
    ngx_uint_t                      images;
    uint64_t                        indexes;

    /* OpenAI: the offset, from the first byte fed, of the byte after the
       top-level usage object's '{' (0: none); where "cost" goes in */
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
    ngx_uint_t                      dialect;
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
} ngx_http_imgbill_scanner_t;


void ngx_http_imgbill_scan_init(ngx_http_imgbill_scanner_t *s,
    ngx_uint_t dialect);
ngx_int_t ngx_http_imgbill_scan_feed(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
void ngx_http_imgbill_scan_finish(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_t *res);

/* the whole reply in one buffer: init, feed and finish */
void ngx_http_imgbill_scan(u_char *p, u_char *last, ngx_uint_t dialect,
    ngx_http_imgbill_scan_t *res);


#endif /* _NGX_HTTP_IMGBILL_SCAN_H_INCLUDED_ */
