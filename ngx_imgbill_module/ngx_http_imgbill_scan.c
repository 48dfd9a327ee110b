
/*
 * One pass over the upstream reply: is it a single well-formed JSON object,
 * does it carry an image, and what does its top-level "usage" say.
 *
 * No tree is built: a reply is mostly one multi-megabyte base64 string, so
 * the scanner skips plain runs of strings many bytes at a time and
 * remembers only the few paths that matter (its "roles").  A key is
 * recognised only where it is a key, so a "usage" inside a string (a decoy)
 * is just text.
 *
 * A state machine, as nginx's own parsers are: the reply comes one buffer
 * at a time, cut anywhere (inside a key, an escape, a number), and only a
 * fixed-size state is kept between buffers.
 */


#include "ngx_http_imgbill_scan.h"

#if (defined __SSE2__)
#include <emmintrin.h>
#endif


/* where in the document; white space is skipped up to sw_done */
enum {
    sw_start = 0,       /* before the root object */
    sw_open,            /* just inside a '{' or a '[' */
    sw_key_start,       /* where a key must begin: after ',' in an object */
    sw_colon,
    sw_value,
    sw_after_value,     /* ',' or the container's end */
    sw_done,            /* the root closed: only white space may follow */
    sw_key,
    sw_string,
    sw_number,
    sw_literal,
    sw_error
};


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
    ngx_http_imgbill_watch_text       /* searched for an image */
};


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


static ngx_int_t ngx_http_imgbill_scan_value(ngx_http_imgbill_scanner_t *s,
    u_char ch);
static void ngx_http_imgbill_scan_push(ngx_http_imgbill_scanner_t *s,
    u_char open, ngx_uint_t role);
static void ngx_http_imgbill_scan_pop(ngx_http_imgbill_scanner_t *s);
static ngx_uint_t ngx_http_imgbill_scan_role(
    ngx_http_imgbill_scan_frame_t *parent, u_char open);
static void ngx_http_imgbill_scan_string_start(ngx_http_imgbill_scanner_t *s,
    ngx_uint_t watch);
static u_char *ngx_http_imgbill_scan_string(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
static void ngx_http_imgbill_scan_watch(ngx_http_imgbill_scanner_t *s,
    u_char ch);
static void ngx_http_imgbill_scan_string_end(ngx_http_imgbill_scanner_t *s);
static ngx_uint_t ngx_http_imgbill_scan_key(ngx_http_imgbill_scanner_t *s);
static u_char *ngx_http_imgbill_scan_number(ngx_http_imgbill_scanner_t *s,
    u_char *p, u_char *last);
static void ngx_http_imgbill_scan_number_end(ngx_http_imgbill_scanner_t *s);


/* the keys the scanner tells apart, as sent */
static ngx_str_t  ngx_http_imgbill_keys[] = {
    ngx_null_string,
    ngx_string("usage"),
    ngx_string("choices"),
    ngx_string("message"),
    ngx_string("images"),
    ngx_string("content"),
    ngx_string("image_url"),
    ngx_string("prompt_tokens"),
    ngx_string("completion_tokens")
};


/* the paths that matter: a container opened in parent, under key */
static struct {
    u_char  parent;
    u_char  key;
    u_char  open;
    u_char  role;
} ngx_http_imgbill_paths[] = {
    { ngx_http_imgbill_role_root, ngx_http_imgbill_key_usage, '{',
      ngx_http_imgbill_role_usage },
    { ngx_http_imgbill_role_root, ngx_http_imgbill_key_choices, '[',
      ngx_http_imgbill_role_choices },
    { ngx_http_imgbill_role_choices, ngx_http_imgbill_key_other, '{',
      ngx_http_imgbill_role_choice },
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_key_message, '{',
      ngx_http_imgbill_role_message },
    { ngx_http_imgbill_role_message, ngx_http_imgbill_key_images, '[',
      ngx_http_imgbill_role_images },
    { ngx_http_imgbill_role_message, ngx_http_imgbill_key_content, '[',
      ngx_http_imgbill_role_parts },
    { ngx_http_imgbill_role_parts, ngx_http_imgbill_key_other, '{',
      ngx_http_imgbill_role_part }
};


/* 1: a byte that ends the plain run of a string: '"', '\\', control */
static u_char  ngx_http_imgbill_string_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};


#define ngx_http_imgbill_is_space(ch)                                        \
    (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')

#define ngx_http_imgbill_is_digit(ch)  (ch >= '0' && ch <= '9')

#define ngx_http_imgbill_is_count(key)                                       \
    (key == ngx_http_imgbill_key_prompt_tokens                               \
     || key == ngx_http_imgbill_key_completion_tokens)

#define ngx_http_imgbill_top(s)  (&(s)->stack[(s)->depth - 1])

/* the key of the value being read: an array's elements have none */
#define ngx_http_imgbill_value_key(f)                                        \
    ((f)->close == '}' ? (ngx_uint_t) (f)->key : ngx_http_imgbill_key_other)


void
ngx_http_imgbill_scan_init(ngx_http_imgbill_scanner_t *s)
{
    ngx_memzero(s, sizeof(ngx_http_imgbill_scanner_t));

    s->state = sw_start;
    s->prompt_tokens = -1;
    s->completion_tokens = -1;
}


/*
 * Takes the whole buffer.  After NGX_ERROR the machine stays put: the
 * input is not one object, whatever may follow.
 */

ngx_int_t
ngx_http_imgbill_scan_feed(ngx_http_imgbill_scanner_t *s, u_char *p,
    u_char *last)
{
    u_char                          ch;
    ngx_http_imgbill_scan_frame_t  *f;

    while (p < last) {

        if (s->state <= sw_done && ngx_http_imgbill_is_space(*p)) {
            p++;
            continue;
        }

        switch (s->state) {

        case sw_start:
            if (*p++ != '{') {
                goto failed;
            }

            ngx_http_imgbill_scan_push(s, '{', ngx_http_imgbill_role_root);
            break;

        case sw_open:
            f = ngx_http_imgbill_top(s);

            if (*p == f->close) {
                p++;
                ngx_http_imgbill_scan_pop(s);
                break;
            }

            s->state = (f->close == '}') ? sw_key_start : sw_value;
            break;

        case sw_key_start:
            if (*p++ != '"') {
                goto failed;
            }

            ngx_http_imgbill_scan_string_start(s, ngx_http_imgbill_watch_key);
            s->state = sw_key;
            break;

        case sw_colon:
            if (*p++ != ':') {
                goto failed;
            }

            s->state = sw_value;
            break;

        case sw_value:
            if (ngx_http_imgbill_scan_value(s, *p++) != NGX_OK) {
                goto failed;
            }

            break;

        case sw_after_value:
            ch = *p++;
            f = ngx_http_imgbill_top(s);

            if (ch == ',') {
                s->state = (f->close == '}') ? sw_key_start : sw_value;
                break;
            }

            if (ch != f->close) {
                goto failed;
            }

            ngx_http_imgbill_scan_pop(s);
            break;

        case sw_key:
        case sw_string:
            p = ngx_http_imgbill_scan_string(s, p, last);
            if (p == NULL) {
                goto failed;
            }

            break;

        case sw_number:
            p = ngx_http_imgbill_scan_number(s, p, last);
            if (p == NULL) {
                goto failed;
            }

            break;

        case sw_literal:
            if (*p++ != *s->literal++) {
                goto failed;
            }

            if (*s->literal == '\0') {
                s->state = sw_after_value;
            }

            break;

        case sw_done:
            /* a reply with anything after its object shows no image */
            s->image = 0;
            goto failed;

        default: /* sw_error */
            return NGX_ERROR;
        }
    }

    return (s->state == sw_error) ? NGX_ERROR : NGX_OK;

failed:

    s->state = sw_error;

    return NGX_ERROR;
}


void
ngx_http_imgbill_scan_finish(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_t *res)
{
    ngx_memzero(res, sizeof(ngx_http_imgbill_scan_t));

    /*
     * A number that ends the input was read whole: like any count read,
     * it is reported, though the reply is not JSON.
     */

    if (s->state == sw_number
        && s->token != sw_num_minus && s->token != sw_num_dot
        && s->token != sw_num_e && s->token != sw_num_e_sign)
    {
        ngx_http_imgbill_scan_number_end(s);
        s->state = sw_error;
    }

    res->image = s->image;
    res->prompt_tokens = s->prompt_tokens;
    res->completion_tokens = s->completion_tokens;

    if (s->state != sw_done) {
        return;
    }

    res->json = 1;

    /*
     * One usage, with each count once: two top-level "usage" keys, or a
     * count given twice, leave it unknown which one the upstream meant.
     */

    if (s->usages == 1 && s->prompt_seen == 1 && s->completion_seen == 1
        && !s->usage_bad)
    {
        res->usage = 1;

    } else {
        res->prompt_tokens = -1;
        res->completion_tokens = -1;
    }
}


void
ngx_http_imgbill_scan(u_char *p, u_char *last, ngx_http_imgbill_scan_t *res)
{
    ngx_http_imgbill_scanner_t  s;

    ngx_http_imgbill_scan_init(&s);
    (void) ngx_http_imgbill_scan_feed(&s, p, last);
    ngx_http_imgbill_scan_finish(&s, res);
}


/* the first byte of a value, consumed */

static ngx_int_t
ngx_http_imgbill_scan_value(ngx_http_imgbill_scanner_t *s, u_char ch)
{
    ngx_uint_t                      key, role;
    ngx_http_imgbill_scan_frame_t  *f;

    f = ngx_http_imgbill_top(s);
    key = ngx_http_imgbill_value_key(f);

    switch (ch) {

    case '{':
    case '[':
        if (s->depth == NGX_HTTP_IMGBILL_SCAN_DEPTH) {
            return NGX_ERROR;
        }

        role = ngx_http_imgbill_scan_role(f, ch);

        if (role == ngx_http_imgbill_role_other
            && (f->role == ngx_http_imgbill_role_images
                || (f->role == ngx_http_imgbill_role_part
                    && key == ngx_http_imgbill_key_image_url)))
        {
            s->image = 1;
        }

        if (f->role == ngx_http_imgbill_role_usage
            && ngx_http_imgbill_is_count(key))
        {
            s->usage_bad = 1;
        }

        ngx_http_imgbill_scan_push(s, ch, role);
        return NGX_OK;

    case '"':
        ngx_http_imgbill_scan_string_start(s,
            (f->role == ngx_http_imgbill_role_message
             && key == ngx_http_imgbill_key_content)
            ? ngx_http_imgbill_watch_text : ngx_http_imgbill_watch_none);
        s->state = sw_string;
        return NGX_OK;

    case 't':
        s->literal = (u_char *) "rue";
        break;

    case 'f':
        s->literal = (u_char *) "alse";
        break;

    case 'n':
        s->literal = (u_char *) "ull";
        break;

    default:
        if (ch != '-' && !ngx_http_imgbill_is_digit(ch)) {
            return NGX_ERROR;
        }

        s->token = (ch == '-') ? sw_num_minus
                   : (ch == '0') ? sw_num_zero : sw_num_int;
        s->number = (ch == '-') ? 0 : ch - '0';
        s->integer = (ch != '-');
        s->state = sw_number;
        return NGX_OK;
    }

    s->state = sw_literal;
    return NGX_OK;
}


static void
ngx_http_imgbill_scan_push(ngx_http_imgbill_scanner_t *s, u_char open,
    ngx_uint_t role)
{
    ngx_http_imgbill_scan_frame_t  *f;

    f = &s->stack[s->depth++];
    f->close = (open == '{') ? '}' : ']';
    f->role = (u_char) role;
    f->key = ngx_http_imgbill_key_other;

    s->state = sw_open;
}


static void
ngx_http_imgbill_scan_pop(ngx_http_imgbill_scanner_t *s)
{
    s->state = (--s->depth == 0) ? sw_done : sw_after_value;
}


/* the role of a container opened by "open" as a value inside parent */

static ngx_uint_t
ngx_http_imgbill_scan_role(ngx_http_imgbill_scan_frame_t *parent, u_char open)
{
    ngx_uint_t  i, key;

    key = ngx_http_imgbill_value_key(parent);

    for (i = 0; i < sizeof(ngx_http_imgbill_paths)
                    / sizeof(ngx_http_imgbill_paths[0]); i++)
    {
        if (ngx_http_imgbill_paths[i].parent == parent->role
            && ngx_http_imgbill_paths[i].key == key
            && ngx_http_imgbill_paths[i].open == open)
        {
            return ngx_http_imgbill_paths[i].role;
        }
    }

    return ngx_http_imgbill_role_other;
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
 * The plain run of a string from p: a reply is mostly base64 inside one
 * string, so it is skipped 64 or 16 bytes at a time, and only the
 * neighbourhood of a quote, a backslash or a control byte is looked at
 * byte by byte.  Returns the first byte that is not plain, or last.
 */

static ngx_inline u_char *
ngx_http_imgbill_skip_plain(u_char *p, u_char *last)
{
    uint64_t  w, v;

#if (defined __SSE2__)
    while (last - p >= 64 && ngx_http_imgbill_plain64(p)) {
        p += 64;
    }
#endif

    while (last - p >= 16) {
        ngx_memcpy(&w, p, 8);
        ngx_memcpy(&v, p + 8, 8);

        if (ngx_http_imgbill_needs_look(w) | ngx_http_imgbill_needs_look(v)) {
            break;
        }

        p += 16;
    }

    while (p < last && !ngx_http_imgbill_string_stop[*p]) {
        p++;
    }

    return p;
}


/* after the opening quote */

static void
ngx_http_imgbill_scan_string_start(ngx_http_imgbill_scanner_t *s,
    ngx_uint_t watch)
{
    s->token = sw_str_text;
    s->watch = watch;
    s->key_len = 0;
    s->match = 0;
    s->escaped = 0;
    s->bang = 0;
    s->found = 0;
}


/*
 * Returns the byte after the closing quote, last if the string goes on in
 * the next buffer, or NULL if it is no JSON string.  Bytes are looked at
 * one by one only while they are watched.
 */

static u_char *
ngx_http_imgbill_scan_string(ngx_http_imgbill_scanner_t *s, u_char *p,
    u_char *last)
{
    u_char  ch, lc;

    while (p < last) {

        if (s->token == sw_str_text
            && s->watch == ngx_http_imgbill_watch_none)
        {
            p = ngx_http_imgbill_skip_plain(p, last);
            if (p == last) {
                break;
            }
        }

        ch = *p++;

        switch (s->token) {

        case sw_str_text:
            if (!ngx_http_imgbill_string_stop[ch]) {
                break;
            }

            if (ch == '"') {
                ngx_http_imgbill_scan_string_end(s);
                return p;
            }

            if (ch != '\\') {
                return NULL;            /* a raw control character */
            }

            s->escaped = 1;
            s->token = sw_str_escape;
            break;

        case sw_str_escape:
            switch (ch) {
            case '"': case '\\': case '/': case 'b':
            case 'f': case 'n': case 'r': case 't':
                s->token = sw_str_text;
                break;

            case 'u':
                s->hex = 4;
                s->token = sw_str_hex;
                break;

            default:
                return NULL;
            }

            break;

        default: /* sw_str_hex */
            lc = (u_char) (ch | 0x20);

            if (!ngx_http_imgbill_is_digit(ch) && (lc < 'a' || lc > 'f')) {
                return NULL;
            }

            if (--s->hex == 0) {
                s->token = sw_str_text;
            }

            break;
        }

        if (s->watch != ngx_http_imgbill_watch_none) {
            ngx_http_imgbill_scan_watch(s, ch);
        }
    }

    return p;
}


/*
 * One byte of a watched string, as sent (escapes included).  A key is
 * kept while it may still be one the scanner knows.  The message text is
 * searched for a data URL or a markdown image: "data:image/", or
 * "data:image\/" (some encoders, PHP's by default, escape "/"), or "![".
 * No proper prefix of "data:image" recurs inside it, so a mismatch
 * restarts the match at the byte itself.
 */

static void
ngx_http_imgbill_scan_watch(ngx_http_imgbill_scanner_t *s, u_char ch)
{
    static u_char  data[] = "data:image";

    if (s->watch == ngx_http_imgbill_watch_key) {

        if (s->escaped || s->key_len == NGX_HTTP_IMGBILL_SCAN_KEY_LEN) {
            /* escaped, or longer than any known: the rest does not matter */
            s->key_len = NGX_HTTP_IMGBILL_SCAN_KEY_LEN + 1;
            s->watch = ngx_http_imgbill_watch_none;
            return;
        }

        s->key[s->key_len++] = ch;
        return;
    }

    if (s->bang && ch == '[') {
        goto found;
    }

    s->bang = (ch == '!');

    if (s->match < sizeof(data) - 1) {
        if (ch == data[s->match]) {
            s->match++;
            return;
        }

    } else if (ch == '/') {
        goto found;

    } else if (ch == '\\' && s->match == sizeof(data) - 1) {
        s->match++;
        return;
    }

    s->match = (ch == data[0]);
    return;

found:

    s->found = 1;
    s->watch = ngx_http_imgbill_watch_none;
}


/* a key or a string value read: what it says where it is */

static void
ngx_http_imgbill_scan_string_end(ngx_http_imgbill_scanner_t *s)
{
    ngx_uint_t                      key;
    ngx_http_imgbill_scan_frame_t  *f;

    f = ngx_http_imgbill_top(s);

    if (s->state == sw_key) {
        f->key = (u_char) ngx_http_imgbill_scan_key(s);
        s->state = sw_colon;

        /*
         * A key spelled with escapes ("us\u0061ge") may be "usage" or one
         * of its counts: a usage it might duplicate is ambiguous.
         */

        if (f->role == ngx_http_imgbill_role_root
            && (f->key == ngx_http_imgbill_key_usage
                || f->key == ngx_http_imgbill_key_escaped))
        {
            s->usages++;
        }

        if (f->role == ngx_http_imgbill_role_usage
            && f->key == ngx_http_imgbill_key_escaped)
        {
            s->usage_bad = 1;
        }

        return;
    }

    s->state = sw_after_value;
    key = ngx_http_imgbill_value_key(f);

    if (f->role == ngx_http_imgbill_role_images
        || (f->role == ngx_http_imgbill_role_part
            && key == ngx_http_imgbill_key_image_url)
        || (f->role == ngx_http_imgbill_role_message
            && key == ngx_http_imgbill_key_content
            && s->found))
    {
        s->image = 1;
    }

    if (f->role == ngx_http_imgbill_role_usage
        && ngx_http_imgbill_is_count(key))
    {
        /* a count sent as a string is not a count */
        s->usage_bad = 1;
    }
}


static ngx_uint_t
ngx_http_imgbill_scan_key(ngx_http_imgbill_scanner_t *s)
{
    ngx_uint_t  i;

    if (s->escaped) {
        return ngx_http_imgbill_key_escaped;
    }

    for (i = 1; i < sizeof(ngx_http_imgbill_keys) / sizeof(ngx_str_t); i++) {
        if (s->key_len == ngx_http_imgbill_keys[i].len
            && ngx_strncmp(s->key, ngx_http_imgbill_keys[i].data, s->key_len)
               == 0)
        {
            return i;
        }
    }

    return ngx_http_imgbill_key_other;
}


/*
 * JSON number grammar, from the byte after the first.  Returns the byte
 * after the number, last if the number may go on in the next buffer, or
 * NULL if it is no JSON number.
 */

static u_char *
ngx_http_imgbill_scan_number(ngx_http_imgbill_scanner_t *s, u_char *p,
    u_char *last)
{
    u_char  ch;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        switch (s->token) {

        case sw_num_int:
            if (ngx_http_imgbill_is_digit(ch)) {

                /* capped: a count beyond the cap is disbelieved anyway */
                if (s->number <= NGX_HTTP_IMGBILL_TOKENS_MAX) {
                    s->number = s->number * 10 + (ch - '0');
                }

                continue;
            }

            /* fall through */

        case sw_num_zero:
            if (ch == '.') {
                s->integer = 0;
                s->token = sw_num_dot;
                continue;
            }

            break;

        case sw_num_frac:
        case sw_num_exp:
            if (ngx_http_imgbill_is_digit(ch)) {
                continue;
            }

            break;

        case sw_num_e:
            if (ch == '+' || ch == '-') {
                s->token = sw_num_e_sign;
                continue;
            }

            /* fall through */

        default: /* sw_num_minus, sw_num_dot, sw_num_e_sign: a digit */
            if (!ngx_http_imgbill_is_digit(ch)) {
                return NULL;
            }

            s->token = (s->token == sw_num_minus)
                       ? ((ch == '0') ? sw_num_zero : sw_num_int)
                       : (s->token == sw_num_dot) ? sw_num_frac : sw_num_exp;
            continue;
        }

        /* after the digits of the integer or of the fraction */

        if ((ch == 'e' || ch == 'E') && s->token != sw_num_exp) {
            s->integer = 0;
            s->token = sw_num_e;
            continue;
        }

        ngx_http_imgbill_scan_number_end(s);
        return p;
    }

    return p;
}


/* a number read: a count, if it is one of the usage's */

static void
ngx_http_imgbill_scan_number_end(ngx_http_imgbill_scanner_t *s)
{
    ngx_int_t                       value;
    ngx_http_imgbill_scan_frame_t  *f;

    s->state = sw_after_value;

    value = (s->integer && s->number <= NGX_HTTP_IMGBILL_TOKENS_MAX)
            ? s->number : -1;

    f = ngx_http_imgbill_top(s);

    if (f->role != ngx_http_imgbill_role_usage) {
        return;
    }

    if (f->key == ngx_http_imgbill_key_prompt_tokens) {
        s->prompt_seen++;
        s->prompt_tokens = value;

    } else if (f->key == ngx_http_imgbill_key_completion_tokens) {
        s->completion_seen++;
        s->completion_tokens = value;

    } else {
        return;
    }

    if (value < 0) {
        s->usage_bad = 1;
    }
}
