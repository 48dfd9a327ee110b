
/*
 * One pass over the upstream reply: is it a single well-formed JSON object,
 * does it carry an image, and what does its top-level "usage" say.
 *
 * No tree is built: a reply is mostly one multi-megabyte base64 string, so
 * the scanner walks strings with a table lookup per byte and remembers only
 * the few paths that matter (its "roles").  A key is recognised only where
 * it is a key, so a "usage" inside a string (a decoy) is just text.
 */


#include "ngx_http_imgbill_scan.h"

#if (defined __SSE2__)
#include <emmintrin.h>
#endif


#define NGX_HTTP_IMGBILL_DEPTH_MAX  128


typedef enum {
    ngx_http_imgbill_role_other = 0,
    ngx_http_imgbill_role_root,
    ngx_http_imgbill_role_usage,
    ngx_http_imgbill_role_choices,
    ngx_http_imgbill_role_choice,
    ngx_http_imgbill_role_message,
    ngx_http_imgbill_role_images,
    ngx_http_imgbill_role_parts,
    ngx_http_imgbill_role_part
} ngx_http_imgbill_role_e;


typedef enum {
    ngx_http_imgbill_key_other = 0,
    ngx_http_imgbill_key_usage,
    ngx_http_imgbill_key_choices,
    ngx_http_imgbill_key_message,
    ngx_http_imgbill_key_images,
    ngx_http_imgbill_key_content,
    ngx_http_imgbill_key_image_url,
    ngx_http_imgbill_key_prompt_tokens,
    ngx_http_imgbill_key_completion_tokens,
    ngx_http_imgbill_key_escaped         /* could be any of them */
} ngx_http_imgbill_key_e;


typedef struct {
    u_char                       close;   /* '}' or ']' */
    u_char                       role;
    u_char                       key;     /* of the member being read */
} ngx_http_imgbill_frame_t;


typedef struct {
    ngx_http_imgbill_frame_t     stack[NGX_HTTP_IMGBILL_DEPTH_MAX];
    ngx_uint_t                   depth;
    ngx_uint_t                   usages;
    ngx_uint_t                   prompt_seen;
    ngx_uint_t                   completion_seen;
    unsigned                     usage_bad:1;
} ngx_http_imgbill_scanner_t;


static u_char *ngx_http_imgbill_scan_string(u_char *p, u_char *last);
static u_char *ngx_http_imgbill_scan_number(u_char *p, u_char *last,
    ngx_int_t *value);
static ngx_uint_t ngx_http_imgbill_scan_key(u_char *p, u_char *last);
static ngx_uint_t ngx_http_imgbill_scan_role(ngx_http_imgbill_frame_t *parent,
    u_char open);
static ngx_uint_t ngx_http_imgbill_content_has_image(u_char *p, u_char *last);


/* 1: a byte that ends the plain run of a string: '"', '\\', control */
static u_char  ngx_http_imgbill_string_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};


#define ngx_http_imgbill_skip_ws(p, last)                                    \
    while (p < last                                                          \
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))         \
    {                                                                        \
        p++;                                                                 \
    }


void
ngx_http_imgbill_scan(u_char *p, u_char *last, ngx_http_imgbill_scan_t *res)
{
    u_char                      *start;
    ngx_int_t                    value;
    ngx_uint_t                   key, role;
    ngx_http_imgbill_frame_t    *f;
    ngx_http_imgbill_scanner_t   s;

    ngx_memzero(res, sizeof(ngx_http_imgbill_scan_t));
    res->prompt_tokens = -1;
    res->completion_tokens = -1;

    s.depth = 0;
    s.usages = 0;
    s.prompt_seen = 0;
    s.completion_seen = 0;
    s.usage_bad = 0;

    ngx_http_imgbill_skip_ws(p, last);

    if (p == last || *p != '{') {
        return;
    }

    f = &s.stack[0];
    f->close = '}';
    f->role = ngx_http_imgbill_role_root;
    f->key = ngx_http_imgbill_key_other;
    s.depth = 1;
    p++;

    /* at the top of the loop: inside f, before a member or an element */

    for ( ;; ) {
        ngx_http_imgbill_skip_ws(p, last);

        if (p == last) {
            return;
        }

        if (*p == f->close) {
            goto close;
        }

    member:

        if (f->close == '}') {
            if (*p != '"') {
                return;
            }

            start = p + 1;
            p = ngx_http_imgbill_scan_string(p, last);
            if (p == NULL) {
                return;
            }

            f->key = (u_char) ngx_http_imgbill_scan_key(start, p - 1);

            ngx_http_imgbill_skip_ws(p, last);

            if (p == last || *p != ':') {
                return;
            }

            p++;
            ngx_http_imgbill_skip_ws(p, last);

            if (p == last) {
                return;
            }

            key = f->key;

            /*
             * A key spelled with escapes ("us\u0061ge") may be "usage" or
             * one of its counts: a usage it might duplicate is ambiguous.
             */

            if (f->role == ngx_http_imgbill_role_root
                && (key == ngx_http_imgbill_key_usage
                    || key == ngx_http_imgbill_key_escaped))
            {
                s.usages++;
            }

            if (f->role == ngx_http_imgbill_role_usage
                && key == ngx_http_imgbill_key_escaped)
            {
                s.usage_bad = 1;
            }

        } else {
            key = ngx_http_imgbill_key_other;
        }

        /* a value */

        switch (*p) {

        case '{':
        case '[':
            if (s.depth == NGX_HTTP_IMGBILL_DEPTH_MAX) {
                return;
            }

            role = ngx_http_imgbill_scan_role(f, *p);

            if (role == ngx_http_imgbill_role_other
                && ((f->role == ngx_http_imgbill_role_images)
                    || (f->role == ngx_http_imgbill_role_part
                        && key == ngx_http_imgbill_key_image_url)))
            {
                res->image = 1;
            }

            if (f->role == ngx_http_imgbill_role_usage
                && (key == ngx_http_imgbill_key_prompt_tokens
                    || key == ngx_http_imgbill_key_completion_tokens))
            {
                s.usage_bad = 1;
            }

            f = &s.stack[s.depth++];
            f->close = (*p == '{') ? '}' : ']';
            f->role = (u_char) role;
            f->key = ngx_http_imgbill_key_other;
            p++;

            continue;

        case '"':
            start = p + 1;
            p = ngx_http_imgbill_scan_string(p, last);
            if (p == NULL) {
                return;
            }

            if (f->role == ngx_http_imgbill_role_images
                || (f->role == ngx_http_imgbill_role_part
                    && key == ngx_http_imgbill_key_image_url)
                || (f->role == ngx_http_imgbill_role_message
                    && key == ngx_http_imgbill_key_content
                    && ngx_http_imgbill_content_has_image(start, p - 1)))
            {
                res->image = 1;
            }

            break;

        case 't':
        case 'f':
        case 'n':
            if ((size_t) (last - p) >= 4 && ngx_strncmp(p, "true", 4) == 0) {
                p += 4;

            } else if ((size_t) (last - p) >= 5
                       && ngx_strncmp(p, "false", 5) == 0)
            {
                p += 5;

            } else if ((size_t) (last - p) >= 4
                       && ngx_strncmp(p, "null", 4) == 0)
            {
                p += 4;

            } else {
                return;
            }

            break;

        default:
            p = ngx_http_imgbill_scan_number(p, last, &value);
            if (p == NULL) {
                return;
            }

            if (f->role != ngx_http_imgbill_role_usage) {
                break;
            }

            if (key == ngx_http_imgbill_key_prompt_tokens) {
                s.prompt_seen++;
                res->prompt_tokens = value;

            } else if (key == ngx_http_imgbill_key_completion_tokens) {
                s.completion_seen++;
                res->completion_tokens = value;

            } else {
                break;
            }

            if (value < 0) {
                s.usage_bad = 1;
            }

            break;
        }

        /* after a value */

        if (f->role == ngx_http_imgbill_role_usage
            && (key == ngx_http_imgbill_key_prompt_tokens
                || key == ngx_http_imgbill_key_completion_tokens)
            && p[-1] == '"')
        {
            /* a count sent as a string is not a count */
            s.usage_bad = 1;
        }

    next:

        /* after a value, or a closed container: ',' or this one's end */

        ngx_http_imgbill_skip_ws(p, last);

        if (p == last) {
            return;
        }

        if (*p == ',') {
            p++;
            ngx_http_imgbill_skip_ws(p, last);

            if (p == last) {
                return;
            }

            goto member;
        }

        if (*p != f->close) {
            return;
        }

    close:

        p++;

        if (--s.depth == 0) {
            break;
        }

        f = &s.stack[s.depth - 1];

        goto next;
    }

    ngx_http_imgbill_skip_ws(p, last);

    if (p != last) {
        res->image = 0;
        return;
    }

    res->json = 1;

    /*
     * One usage, with each count once: two top-level "usage" keys, or a
     * count given twice, leave it unknown which one the upstream meant.
     */

    if (s.usages == 1 && s.prompt_seen == 1 && s.completion_seen == 1
        && !s.usage_bad)
    {
        res->usage = 1;

    } else {
        res->prompt_tokens = -1;
        res->completion_tokens = -1;
    }
}


/*
 * Whether any of the 8 bytes of w is '"', '\\' or below 0x20: the classic
 * "has a zero byte" test applied to w ^ '"', w ^ '\\' and (for "less than")
 * to w itself.  Exact for "any", which is all the caller asks.
 */

#define NGX_HTTP_IMGBILL_ONES   0x0101010101010101ULL
#define NGX_HTTP_IMGBILL_HIGHS  0x8080808080808080ULL

#define ngx_http_imgbill_has_zero(w)                                         \
    (((w) - NGX_HTTP_IMGBILL_ONES) & ~(w) & NGX_HTTP_IMGBILL_HIGHS)

#define ngx_http_imgbill_needs_look(w)                                       \
    (ngx_http_imgbill_has_zero((w) ^ (NGX_HTTP_IMGBILL_ONES * '"'))          \
     | ngx_http_imgbill_has_zero((w) ^ (NGX_HTTP_IMGBILL_ONES * '\\'))        \
     | (((w) - NGX_HTTP_IMGBILL_ONES * 0x20) & ~(w) & NGX_HTTP_IMGBILL_HIGHS))


#if (defined __SSE2__)

/*
 * The same question for 64 bytes at once, where SSE2 is there (every
 * x86-64): max(x, 0x1f) == 0x1f is an unsigned "x <= 0x1f".
 */

static ngx_inline ngx_uint_t
ngx_http_imgbill_plain64(u_char *p)
{
    __m128i     x, m, quote, bslash, ctl;
    ngx_uint_t  i;

    quote = _mm_set1_epi8('"');
    bslash = _mm_set1_epi8('\\');
    ctl = _mm_set1_epi8(0x1f);
    m = _mm_setzero_si128();

    for (i = 0; i < 64; i += 16) {
        x = _mm_loadu_si128((const __m128i *) (p + i));

        m = _mm_or_si128(m, _mm_cmpeq_epi8(x, quote));
        m = _mm_or_si128(m, _mm_cmpeq_epi8(x, bslash));
        m = _mm_or_si128(m, _mm_cmpeq_epi8(_mm_max_epu8(x, ctl), ctl));
    }

    return _mm_movemask_epi8(m) == 0;
}

#endif


/*
 * p points at the opening quote; returns the byte after the closing one.
 * A reply is mostly base64 inside one string, so plain runs are skipped
 * a word at a time and only the neighbourhood of a quote, a backslash or
 * a control byte is looked at byte by byte.
 */

static u_char *
ngx_http_imgbill_scan_string(u_char *p, u_char *last)
{
    uint64_t  w, v;

    for (p++; p < last; p++) {

#if (defined __SSE2__)
        while (last - p >= 64 && ngx_http_imgbill_plain64(p)) {
            p += 64;
        }
#endif

        while (last - p >= 16) {
            ngx_memcpy(&w, p, 8);
            ngx_memcpy(&v, p + 8, 8);

            if (ngx_http_imgbill_needs_look(w)
                | ngx_http_imgbill_needs_look(v))
            {
                break;
            }

            p += 16;
        }

        if (p == last) {
            break;
        }

        if (!ngx_http_imgbill_string_stop[*p]) {
            continue;
        }

        if (*p == '"') {
            return p + 1;
        }

        if (*p != '\\') {
            return NULL;            /* a raw control character */
        }

        if (++p == last) {
            return NULL;
        }

        switch (*p) {
        case '"': case '\\': case '/': case 'b':
        case 'f': case 'n': case 'r': case 't':
            break;

        case 'u':
            if (last - p < 5
                || ngx_hextoi(p + 1, 4) == NGX_ERROR)
            {
                return NULL;
            }

            p += 4;
            break;

        default:
            return NULL;
        }
    }

    return NULL;
}


/*
 * JSON number grammar.  *value is the number when it is a plain
 * non-negative integer that fits a token count, -1 otherwise.
 */

static u_char *
ngx_http_imgbill_scan_number(u_char *p, u_char *last, ngx_int_t *value)
{
    ngx_int_t   n;
    ngx_uint_t  integer;

    n = 0;
    integer = 1;

    if (*p == '-') {
        integer = 0;
        if (++p == last) {
            return NULL;
        }
    }

    if (*p == '0') {
        p++;

    } else if (*p >= '1' && *p <= '9') {
        while (p < last && *p >= '0' && *p <= '9') {
            if (n <= NGX_HTTP_IMGBILL_TOKENS_MAX) {
                n = n * 10 + (*p - '0');
            }
            p++;
        }

    } else {
        return NULL;
    }

    if (p < last && *p == '.') {
        integer = 0;
        if (++p == last || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        integer = 0;
        if (++p < last && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == last || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    *value = (integer && n <= NGX_HTTP_IMGBILL_TOKENS_MAX) ? n : -1;

    return p;
}


static ngx_uint_t
ngx_http_imgbill_scan_key(u_char *p, u_char *last)
{
    size_t  len;

    len = last - p;

    if (memchr(p, '\\', len) != NULL) {
        return ngx_http_imgbill_key_escaped;
    }

#define ngx_http_imgbill_is(name)                                            \
    (len == sizeof(name) - 1 && ngx_strncmp(p, name, len) == 0)

    if (ngx_http_imgbill_is("usage")) {
        return ngx_http_imgbill_key_usage;
    }

    if (ngx_http_imgbill_is("choices")) {
        return ngx_http_imgbill_key_choices;
    }

    if (ngx_http_imgbill_is("message")) {
        return ngx_http_imgbill_key_message;
    }

    if (ngx_http_imgbill_is("images")) {
        return ngx_http_imgbill_key_images;
    }

    if (ngx_http_imgbill_is("content")) {
        return ngx_http_imgbill_key_content;
    }

    if (ngx_http_imgbill_is("image_url")) {
        return ngx_http_imgbill_key_image_url;
    }

    if (ngx_http_imgbill_is("prompt_tokens")) {
        return ngx_http_imgbill_key_prompt_tokens;
    }

    if (ngx_http_imgbill_is("completion_tokens")) {
        return ngx_http_imgbill_key_completion_tokens;
    }

#undef ngx_http_imgbill_is

    return ngx_http_imgbill_key_other;
}


/* the role of a container opened by "open" as a value inside parent */

static ngx_uint_t
ngx_http_imgbill_scan_role(ngx_http_imgbill_frame_t *parent, u_char open)
{
    ngx_uint_t  key;

    key = (parent->close == '}') ? parent->key : ngx_http_imgbill_key_other;

    switch (parent->role) {

    case ngx_http_imgbill_role_root:
        if (key == ngx_http_imgbill_key_usage && open == '{') {
            return ngx_http_imgbill_role_usage;
        }

        if (key == ngx_http_imgbill_key_choices && open == '[') {
            return ngx_http_imgbill_role_choices;
        }

        break;

    case ngx_http_imgbill_role_choices:
        if (open == '{') {
            return ngx_http_imgbill_role_choice;
        }

        break;

    case ngx_http_imgbill_role_choice:
        if (key == ngx_http_imgbill_key_message && open == '{') {
            return ngx_http_imgbill_role_message;
        }

        break;

    case ngx_http_imgbill_role_message:
        if (key == ngx_http_imgbill_key_images && open == '[') {
            return ngx_http_imgbill_role_images;
        }

        if (key == ngx_http_imgbill_key_content && open == '[') {
            return ngx_http_imgbill_role_parts;
        }

        break;

    case ngx_http_imgbill_role_parts:
        if (open == '{') {
            return ngx_http_imgbill_role_part;
        }

        break;
    }

    return ngx_http_imgbill_role_other;
}


/*
 * A data URL, or a markdown image, in the message text.  The text is still
 * JSON-escaped here, and some encoders (PHP's by default) escape "/".
 */

static ngx_uint_t
ngx_http_imgbill_content_has_image(u_char *p, u_char *last)
{
    size_t  len;

    len = last - p;

    return memmem(p, len, "data:image/", sizeof("data:image/") - 1) != NULL
           || memmem(p, len, "data:image\\/", sizeof("data:image\\/") - 1)
              != NULL
           || memmem(p, len, "![", 2) != NULL;
}
