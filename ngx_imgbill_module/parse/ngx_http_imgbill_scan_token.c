
/*
 * The reply scanner's tokens: strings, read in plain runs many bytes at a
 * time (a reply is mostly one base64 string), their escapes, the image a
 * message's text may name, an image's MIME type and the key a key names;
 * and numbers, by JSON's grammar.  Each token may be cut by the end of a
 * buffer anywhere and resumed with the next: where it was is kept in the
 * scanner (s->token).  What a token means where it stands is
 * ngx_http_imgbill_scan.c's business; the dialect's tables, what a key,
 * a container and a value are in it, are read here.
 */


#include "ngx_http_imgbill_scan.h"
#include "ngx_http_imgbill_scan_token.h"

#if (defined __SSE2__)
#include <emmintrin.h>
#endif

/* an AVX2 path, taken where the CPU has it: nginx is built for any x86-64 */
#if (defined __x86_64__ && defined __GNUC__ && !defined __AVX2__             \
     && !defined NGX_HTTP_IMGBILL_NO_AVX2)
#define NGX_HTTP_IMGBILL_AVX2  1
#include <immintrin.h>
#else
#define NGX_HTTP_IMGBILL_AVX2  0
#endif


static void ngx_http_imgbill_scan_watch(ngx_http_imgbill_scanner_t *s,
    u_char ch);
static ngx_inline ngx_int_t ngx_http_imgbill_scan_slash(
    ngx_http_imgbill_scanner_t *s, u_char ch, u_char *word, size_t len,
    u_char fold);


/* 1: a byte that ends the plain run of a string: '"', '\\', control */
static u_char  ngx_http_imgbill_string_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};


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


#if (NGX_HTTP_IMGBILL_AVX2)

/*
 * The SSE2 loop below, 32 bytes a compare: a 16 MB image's string is
 * skipped in about a third of the time (0.018 ns a byte in cache, against
 * 0.055).  Called once per plain run, so the CPU's answer, a bit libgcc
 * reads at load, costs nothing per byte.
 */

__attribute__((target("avx2")))
static u_char *
ngx_http_imgbill_skip_plain_avx2(u_char *p, u_char *last)
{
    __m256i  a, b, m, quote, bslash, ctl;

    quote = _mm256_set1_epi8('"');
    bslash = _mm256_set1_epi8('\\');
    ctl = _mm256_set1_epi8(0x1f);

    while (last - p >= 64) {
        a = _mm256_loadu_si256((const __m256i *) p);
        b = _mm256_loadu_si256((const __m256i *) (p + 32));

        m = _mm256_or_si256(_mm256_cmpeq_epi8(a, quote),
                            _mm256_cmpeq_epi8(a, bslash));
        m = _mm256_or_si256(m, _mm256_cmpeq_epi8(_mm256_max_epu8(a, ctl),
                                                 ctl));
        m = _mm256_or_si256(m, _mm256_cmpeq_epi8(b, quote));
        m = _mm256_or_si256(m, _mm256_cmpeq_epi8(b, bslash));
        m = _mm256_or_si256(m, _mm256_cmpeq_epi8(_mm256_max_epu8(b, ctl),
                                                 ctl));

        if (!_mm256_testz_si256(m, m)) {
            break;
        }

        p += 64;
    }

    return p;
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

#if (NGX_HTTP_IMGBILL_AVX2)
    if (__builtin_cpu_supports("avx2")) {
        p = ngx_http_imgbill_skip_plain_avx2(p, last);

    } else
#endif
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


/* the plain run from p where the string is in one and unwatched, else p */

u_char *
ngx_http_imgbill_scan_string_plain(ngx_http_imgbill_scanner_t *s, u_char *p,
    u_char *last)
{
    if (s->token != sw_str_text || s->watch != ngx_http_imgbill_watch_none) {
        return p;
    }

    return ngx_http_imgbill_skip_plain(p, last);
}


/* after the opening quote */

void
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

u_char *
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

            /* the digits are no text: "\u00da" and "ta:image/" make no
               "data:image/" (a watched key is escaped, and ignored) */
            ch = '\0';
            break;
        }

        if (s->watch != ngx_http_imgbill_watch_none) {
            ngx_http_imgbill_scan_watch(s, ch);

            if (s->found) {
                /* the image shows here, not at the string's end: a
                   stream's client may have its data before then */
                ngx_http_imgbill_scan_image(s, s->fed + (p - s->start));
            }
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
 * restarts the match at the byte itself.  A MIME type must begin with
 * "image/" (or "image\/"), in any case, as RFC 2045 compares them: its
 * first byte that does not fit ends the watch.  Either found (s->found)
 * is an image, from the byte that completed it.  A type that ends in
 * ".completed" is watched to its end.  A URL is an image from its first
 * byte: only an empty one is none.
 */

static void
ngx_http_imgbill_scan_watch(ngx_http_imgbill_scanner_t *s, u_char ch)
{
    ngx_int_t      rc;
    static u_char  data[] = "data:image";
    static u_char  image[] = "image";
    static u_char  done[] = ".completed";

    switch (s->watch) {

    case ngx_http_imgbill_watch_any:
        goto found;

    case ngx_http_imgbill_watch_done:

        /* a suffix: no byte of ".completed" but its first is a '.', so a
           mismatch restarts the match at the byte itself */

        if (s->match < sizeof(done) - 1 && ch == done[s->match]) {
            s->match++;

        } else {
            s->match = (ch == '.');
        }

        return;

    case ngx_http_imgbill_watch_key:

        if (s->escaped || s->key_len == NGX_HTTP_IMGBILL_SCAN_KEY_LEN) {
            /* escaped, or longer than any known: the rest does not matter */
            s->key_len = NGX_HTTP_IMGBILL_SCAN_KEY_LEN + 1;
            s->watch = ngx_http_imgbill_watch_none;
            return;
        }

        s->key[s->key_len++] = ch;
        return;

    case ngx_http_imgbill_watch_mime:
        rc = ngx_http_imgbill_scan_slash(s, ch, image, sizeof(image) - 1,
                                         0x20);
        if (rc == NGX_DONE) {
            goto found;
        }

        if (rc == NGX_DECLINED) {
            s->watch = ngx_http_imgbill_watch_none;
        }

        return;
    }

    if (s->bang && ch == '[') {
        goto found;
    }

    s->bang = (ch == '!');

    rc = ngx_http_imgbill_scan_slash(s, ch, data, sizeof(data) - 1, 0);
    if (rc == NGX_DONE) {
        goto found;
    }

    if (rc == NGX_DECLINED) {
        s->match = (ch == data[0]);
    }

    return;

found:

    s->found = 1;
    s->watch = ngx_http_imgbill_watch_none;
}


/*
 * One byte against word, then "/" or "\/": NGX_OK while they may still
 * match (s->match counts the bytes matched), NGX_DONE once they have,
 * NGX_DECLINED when they cannot.  fold 0x20 makes the word's letters
 * match in any case: ch | 0x20 is the lower case of a letter, and no byte
 * but a letter gives one.
 */

static ngx_inline ngx_int_t
ngx_http_imgbill_scan_slash(ngx_http_imgbill_scanner_t *s, u_char ch,
    u_char *word, size_t len, u_char fold)
{
    if (s->match < len) {
        if ((u_char) (ch | fold) != word[s->match]) {
            return NGX_DECLINED;
        }

        s->match++;
        return NGX_OK;
    }

    if (ch == '/') {
        return NGX_DONE;
    }

    if (ch == '\\' && s->match == len) {
        s->match++;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * JSON number grammar, from the byte after the first.  Returns the byte
 * after the number, last if the number may go on in the next buffer, or
 * NULL if it is no JSON number.
 */

u_char *
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


/* the paths every dialect shares: the root's usage and its choices */

static ngx_http_imgbill_scan_path_t  ngx_http_imgbill_paths[] = {
    { ngx_http_imgbill_role_root, ngx_http_imgbill_key_usage, '{',
      ngx_http_imgbill_role_usage },
    { ngx_http_imgbill_role_root, ngx_http_imgbill_key_choices, '[',
      ngx_http_imgbill_role_choices },
    { ngx_http_imgbill_role_choices, ngx_http_imgbill_key_other, '{',
      ngx_http_imgbill_role_choice },
    { 0, 0, 0, 0 }
};


/* the key a key token names in the dialect read (its bytes as sent) */

ngx_uint_t
ngx_http_imgbill_scan_key(ngx_http_imgbill_scanner_t *s)
{
    ngx_http_imgbill_scan_key_t  *k;

    if (s->escaped) {
        return ngx_http_imgbill_key_escaped;
    }

    for (k = s->dialect->keys; k->name.len; k++) {
        if (s->key_len == k->name.len
            && ngx_strncmp(s->key, k->name.data, s->key_len) == 0)
        {
            return k->key;
        }
    }

    return ngx_http_imgbill_key_other;
}


/* the role of a container opened by "open" as a value inside parent: the
   paths all share first, then the dialect's */

ngx_uint_t
ngx_http_imgbill_scan_role(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_frame_t *parent, u_char open)
{
    ngx_uint_t                     key;
    ngx_http_imgbill_scan_path_t  *p;

    /* nothing inside what does not matter matters: the bulk of a reply's
       containers (logprobs, safety ratings) end here */

    if (parent->role == ngx_http_imgbill_role_other) {
        return ngx_http_imgbill_role_other;
    }

    key = ngx_http_imgbill_value_key(parent);

    for (p = ngx_http_imgbill_paths; p->role; p++) {
        if (p->parent == parent->role && p->key == key && p->open == open) {
            return p->role;
        }
    }

    for (p = s->dialect->paths; p->role; p++) {
        if (p->parent == parent->role && p->key == key && p->open == open) {
            return p->role;
        }
    }

    return ngx_http_imgbill_role_other;
}


/* what the value being read in f shows, by the dialect's marks */

ngx_uint_t
ngx_http_imgbill_scan_shows(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_frame_t *f)
{
    ngx_uint_t                     key;
    ngx_http_imgbill_scan_mark_t  *m;

    if (f->role == ngx_http_imgbill_role_other) {
        return 0;
    }

    key = ngx_http_imgbill_value_key(f);

    for (m = s->dialect->marks; m->shows; m++) {
        if (m->role == f->role && m->key == key) {
            return m->shows;
        }
    }

    return 0;
}
