
/*
 * imgbill: the compactor's tokens (see ngx_http_imgbill_compact.c):
 * strings, each checked as jansson checks it, a key kept whole, a value
 * kept while it is short and set aside in the table of long strings once
 * it is not, with what it decodes to as a data URL and as base64; and
 * numbers, checked and kept as they are.
 */


#include "ngx_http_imgbill_compact.h"


static u_char *ngx_http_imgbill_compact_escape(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *start);
static void ngx_http_imgbill_compact_code(ngx_http_imgbill_compact_t *c,
    uint32_t code);
static void ngx_http_imgbill_compact_byte(ngx_http_imgbill_compact_t *c,
    u_char ch);
static void ngx_http_imgbill_compact_run(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *q);
static void ngx_http_imgbill_compact_string_end(
    ngx_http_imgbill_compact_t *c, off_t end);
static u_char *ngx_http_imgbill_plain_run(u_char *p, u_char *last);


/* bytes a string may hold as they are: printable ASCII but '"' and '\' */

static uint32_t  ngx_http_imgbill_plain[] = {
    0x00000000, /* 0000 0000 0000 0000  0000 0000 0000 0000 */
    0xfffffffb, /* 1111 1111 1111 1111  1111 1111 1111 1011 */
    0xefffffff, /* 1110 1111 1111 1111  1111 1111 1111 1111 */
    0xffffffff, /* 1111 1111 1111 1111  1111 1111 1111 1111 */
    0, 0, 0, 0
};

#define ngx_http_imgbill_is_plain(ch)                                        \
    (ngx_http_imgbill_plain[(ch) >> 5] & (1U << ((ch) & 0x1f)))

/*
 * The same test on eight bytes at once: any byte over 0x7f, under 0x20,
 * '"' or '\' (a byte equal to c is a zero byte of w ^ c).  It may also
 * flag a plain byte after one that is not; never the other way round.
 */

#define NGX_HTTP_IMGBILL_ONES  0x0101010101010101ULL
#define NGX_HTTP_IMGBILL_HIGH  0x8080808080808080ULL

#define ngx_http_imgbill_zero_in(w)                                           \
    (((w) - NGX_HTTP_IMGBILL_ONES) & ~(w) & NGX_HTTP_IMGBILL_HIGH)

#define ngx_http_imgbill_not_plain8(w)                                        \
    (((w) & NGX_HTTP_IMGBILL_HIGH)                                           \
     | ngx_http_imgbill_zero_in((w) & ~(NGX_HTTP_IMGBILL_ONES * 0x1f))       \
     | ngx_http_imgbill_zero_in((w) ^ (NGX_HTTP_IMGBILL_ONES * '"'))         \
     | ngx_http_imgbill_zero_in((w) ^ (NGX_HTTP_IMGBILL_ONES * '\\')))


/*
 * Inside a string.  Printable ASCII is taken in runs; the rest byte by
 * byte, checked as jansson checks it.  What a byte decodes to goes to
 * ngx_http_imgbill_compact_byte().
 */

u_char *
ngx_http_imgbill_compact_string(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *last, u_char *start)
{
    u_char  *q, ch;

    while (p < last) {
        ch = *p;

        switch (c->sw) {

        case sw_text:
            q = ngx_http_imgbill_plain_run(p, last);

            if (q > p) {
                ngx_http_imgbill_compact_run(c, p, q);
                p = q;
                break;
            }

            if (ch == '"') {
                p++;
                ngx_http_imgbill_compact_string_end(c,
                                           ngx_http_imgbill_off(c, p, start));
                return p;
            }

            if (ch < 0x20) {
                return ngx_http_imgbill_compact_fail(c, p, start,
                                                     "control character",
                                                     ch);
            }

            if (!c->elided) {
                ngx_http_imgbill_compact_put(c, p, 1, c->key);
            }

            if (ch == '\\') {
                c->sw = sw_escape;
                p++;
                break;
            }

            /* a UTF-8 sequence's first byte, as jansson's utf8_check_first */

            if (ch < 0xc2 || ch > 0xf4) {
                return ngx_http_imgbill_compact_fail(c, p, start,
                                                     "unable to decode byte",
                                                     ch);
            }

            c->digits = (ch < 0xe0) ? 1 : (ch < 0xf0) ? 2 : 3;
            c->code = ch & ((ch < 0xe0) ? 0x1f : (ch < 0xf0) ? 0x0f : 0x07);
            c->min = (ch < 0xe0) ? 0x80 : (ch < 0xf0) ? 0x800 : 0x10000;
            c->sw = sw_utf8;
            ngx_http_imgbill_compact_byte(c, ch);
            p++;
            break;

        case sw_utf8:
            if ((ch & 0xc0) != 0x80) {
                return ngx_http_imgbill_compact_fail(c, p, start,
                                                     "unable to decode byte",
                                                     ch);
            }

            if (!c->elided) {
                ngx_http_imgbill_compact_put(c, p, 1, c->key);
            }

            c->code = (c->code << 6) | (ch & 0x3f);
            ngx_http_imgbill_compact_byte(c, ch);
            p++;

            if (--c->digits) {
                break;
            }

            if (c->code < c->min || c->code > 0x10ffff
                || (c->code >= 0xd800 && c->code <= 0xdfff))
            {
                return ngx_http_imgbill_compact_fail(c, p - 1, start,
                                                     "invalid UTF-8 for "
                                                     "character", c->code);
            }

            c->sw = sw_text;
            break;

        default:
            if (!c->elided) {
                ngx_http_imgbill_compact_put(c, p, 1, c->key);
            }

            p = ngx_http_imgbill_compact_escape(c, p, start);

            if (c->verdict == NGX_HTTP_IMGBILL_REQ_INVALID_JSON) {
                return p;
            }

            break;
        }
    }

    return p;
}


/* where a run of plain bytes ends: a base64 image is one run, megabytes
   long, so it is taken a word at a time */

static u_char *
ngx_http_imgbill_plain_run(u_char *p, u_char *last)
{
    uint64_t  w;

    for ( ;; ) {
        while (last - p >= 8) {
            ngx_memcpy(&w, p, 8);

            if (ngx_http_imgbill_not_plain8(w)) {
                break;
            }

            p += 8;
        }

        if (p == last || !ngx_http_imgbill_is_plain(*p)) {
            return p;
        }

        p++;
    }
}


/* a backslash's escape, and "\u"'s digits */

static u_char *
ngx_http_imgbill_compact_escape(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *start)
{
    u_char  ch, *e;

    static u_char  escapes[] = "\"\\/bfnrt";
    static u_char  decoded[] = "\"\\/\b\f\n\r\t";

    ch = *p;

    switch (c->sw) {

    case sw_escape:
        if (ch == 'u') {
            c->sw = sw_hex;
            c->code = 0;
            c->digits = 0;
            return p + 1;
        }

        e = ch ? (u_char *) ngx_strchr(escapes, ch) : NULL;

        if (e == NULL) {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "invalid escape", -1);
        }

        c->sw = sw_text;
        ngx_http_imgbill_compact_byte(c, decoded[e - escapes]);

        return p + 1;

    case sw_pair_backslash:
    case sw_pair_u:
        if (ch != (c->sw == sw_pair_backslash ? '\\' : 'u')) {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "a lone surrogate",
                                                 c->high);
        }

        c->sw = (c->sw == sw_pair_backslash) ? sw_pair_u : sw_hex;
        c->code = 0;
        c->digits = 0;

        return p + 1;

    default: /* sw_hex */
        if (ch >= '0' && ch <= '9') {
            c->code = (c->code << 4) | (ch - '0');

        } else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') {
            c->code = (c->code << 4) | ((ch | 0x20) - 'a' + 10);

        } else {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "invalid escape", -1);
        }

        if (++c->digits < 4) {
            return p + 1;
        }

        break;
    }

    if (c->high) {
        if (c->code < 0xdc00 || c->code > 0xdfff) {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "a lone surrogate",
                                                 c->high);
        }

        c->code = 0x10000 + ((c->high - 0xd800) << 10) + (c->code - 0xdc00);
        c->high = 0;

    } else if (c->code >= 0xd800 && c->code <= 0xdbff) {
        c->high = c->code;
        c->sw = sw_pair_backslash;
        return p + 1;

    } else if (c->code >= 0xdc00 && c->code <= 0xdfff) {
        return ngx_http_imgbill_compact_fail(c, p, start,
                                             "a lone surrogate", c->code);

    } else if (c->code == 0) {
        return ngx_http_imgbill_compact_fail(c, p, start,
                                             "\\u0000 is not allowed", -1);
    }

    c->sw = sw_text;
    ngx_http_imgbill_compact_code(c, c->code);

    return p + 1;
}


/* a character from "\u", as the UTF-8 bytes it decodes to */

static void
ngx_http_imgbill_compact_code(ngx_http_imgbill_compact_t *c, uint32_t code)
{
    if (code < 0x80) {
        ngx_http_imgbill_compact_byte(c, (u_char) code);

    } else if (code < 0x800) {
        ngx_http_imgbill_compact_byte(c, (u_char) (0xc0 | (code >> 6)));
        ngx_http_imgbill_compact_byte(c, (u_char) (0x80 | (code & 0x3f)));

    } else if (code < 0x10000) {
        ngx_http_imgbill_compact_byte(c, (u_char) (0xe0 | (code >> 12)));
        ngx_http_imgbill_compact_byte(c,
                                      (u_char) (0x80 | ((code >> 6) & 0x3f)));
        ngx_http_imgbill_compact_byte(c, (u_char) (0x80 | (code & 0x3f)));

    } else {
        ngx_http_imgbill_compact_byte(c, (u_char) (0xf0 | (code >> 18)));
        ngx_http_imgbill_compact_byte(c,
                                      (u_char) (0x80 | ((code >> 12) & 0x3f)));
        ngx_http_imgbill_compact_byte(c,
                                      (u_char) (0x80 | ((code >> 6) & 0x3f)));
        ngx_http_imgbill_compact_byte(c, (u_char) (0x80 | (code & 0x3f)));
    }
}


/*
 * One decoded byte of a string: counted, and read as a data URL's would
 * be (ngx_http_imgbill_data_url_size(): "data:", then ";base64" before
 * the first ','), and as base64's last two.  A key's is kept apart to be
 * matched with the marked members.
 */

static void
ngx_http_imgbill_compact_byte(ngx_http_imgbill_compact_t *c, u_char ch)
{
    static u_char  prefix[] = "data:";
    static u_char  base64[] = ";base64";

    if (c->key) {
        if (c->keylen < NGX_HTTP_IMGBILL_MARK_KEY) {
            c->keybuf[c->keylen] = ch;
        }

        c->keylen++;
        return;
    }

    if (c->str.len < sizeof(prefix) - 1) {
        c->data = c->data && ngx_tolower(ch) == prefix[c->str.len];

    } else if (c->data && c->comma == 0) {
        if (ch == ',') {
            c->comma = c->str.len + 1;

        } else if (c->base64 < sizeof(base64) - 1) {
            c->base64 = (ngx_tolower(ch) == base64[c->base64])
                        ? c->base64 + 1 : (ch == ';');
        }
    }

    c->tail[0] = c->tail[1];
    c->tail[1] = ch;
    c->str.len++;

    if (!c->elided && c->str.len > NGX_HTTP_IMGBILL_SHORT) {
        /* long: out of the text, into the table at its end */
        c->elided = 1;
        c->len = c->str_at + 1;
    }
}


/* a run of printable ASCII: as it is, both in the text and decoded */

static void
ngx_http_imgbill_compact_run(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *q)
{
    if (!c->elided) {
        ngx_http_imgbill_compact_put(c, p, q - p, c->key);
    }

    /* byte by byte only while it may still be a data URL's header, or a
       key (short) */

    while (p < q && (c->key || c->str.len < 5 || (c->data && !c->comma)
                     || !c->elided))
    {
        ngx_http_imgbill_compact_byte(c, *p++);
    }

    if (p == q) {
        return;
    }

    c->str.len += q - p;

    if (q - p == 1) {
        c->tail[0] = c->tail[1];
        c->tail[1] = q[-1];

    } else {
        c->tail[0] = q[-2];
        c->tail[1] = q[-1];
    }
}


static void
ngx_http_imgbill_compact_string_end(ngx_http_imgbill_compact_t *c, off_t end)
{
    u_char                    buf[NGX_INT_T_LEN + sizeof("\\u0000\"")];
    u_char                   *d;
    size_t                    n, pad, size;
    ngx_http_imgbill_long_t  *l;

    if (c->key) {
        ngx_http_imgbill_compact_put(c, (u_char *) "\"", 1, 1);
        ngx_http_imgbill_compact_key_end(c);
        c->state = sw_colon;
        return;
    }

    if (!c->elided) {
        ngx_http_imgbill_compact_put(c, (u_char *) "\"", 1, 1);
        ngx_http_imgbill_compact_value_end(c, end);
        return;
    }

    /* what it decodes to, as a data URL and as base64 */

    n = c->comma ? c->str.len - c->comma : 0;

    if (c->data && c->comma) {
        if (c->base64 == sizeof(";base64") - 1) {
            pad = (n && c->tail[1] == '=') + (n > 1 && c->tail[0] == '=');
            size = n / 4 * 3 + n % 4 * 3 / 4;
            c->str.url_size = size - ngx_min(pad, size);

        } else {
            c->str.url_size = n;
        }
    }

    n = c->str.len;
    pad = (n && c->tail[1] == '=') + (n > 1 && c->tail[0] == '=');
    size = n / 4 * 3 + n % 4 * 3 / 4;
    c->str.base64_size = size - ngx_min(pad, size);

    if (c->nlongs == c->nalloc) {
        n = c->nalloc ? 2 * c->nalloc : 16;

        l = ngx_alloc(n * sizeof(ngx_http_imgbill_long_t), c->log);
        if (l == NULL) {
            c->full = 1;
            c->room = 0;
            c->verdict = NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX;
            return;
        }

        if (c->longs) {
            ngx_memcpy(l, c->longs,
                       c->nlongs * sizeof(ngx_http_imgbill_long_t));
            ngx_free(c->longs);
        }

        c->longs = l;
        c->nalloc = n;
    }

    c->longs[c->nlongs] = c->str;
    c->room = (c->room > sizeof(ngx_http_imgbill_long_t))
              ? c->room - sizeof(ngx_http_imgbill_long_t) : 0;

    /* "\u0000<index>", the digits written backwards from the end */

    d = buf + sizeof(buf);
    *--d = '"';
    n = c->nlongs++;

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    d -= sizeof("\\u0000") - 1;
    ngx_memcpy(d, "\\u0000", sizeof("\\u0000") - 1);

    ngx_http_imgbill_compact_put(c, d, buf + sizeof(buf) - d, 1);
    ngx_http_imgbill_compact_value_end(c, end);
}


/* a number ends at the first byte that cannot be in it */

u_char *
ngx_http_imgbill_compact_number(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *last, u_char *start)
{
    u_char   ch, *q;
    ngx_uint_t  digit;

    for (q = p; q < last; q++) {
        ch = *q;
        digit = (ch >= '0' && ch <= '9');

        switch (c->sw) {

        case sw_num_minus:
            if (!digit) {
                goto invalid;
            }

            c->sw = (ch == '0') ? sw_num_zero : sw_num_int;
            continue;

        case sw_num_zero:
        case sw_num_int:
            if (digit && c->sw == sw_num_int) {
                continue;
            }

            if (digit) {
                goto invalid;
            }

            if (ch == '.') {
                c->sw = sw_num_dot;
                continue;
            }

            if (ch == 'e' || ch == 'E') {
                c->sw = sw_num_e;
                continue;
            }

            goto end;

        case sw_num_dot:
            if (!digit) {
                goto invalid;
            }

            c->sw = sw_num_frac;
            continue;

        case sw_num_frac:
            if (digit) {
                continue;
            }

            if (ch == 'e' || ch == 'E') {
                c->sw = sw_num_e;
                continue;
            }

            goto end;

        case sw_num_e:
            if (ch == '+' || ch == '-') {
                c->sw = sw_num_e_sign;
                continue;
            }

            /* fall through */

        case sw_num_e_sign:
            if (!digit) {
                goto invalid;
            }

            c->sw = sw_num_exp;
            continue;

        default: /* sw_num_exp */
            if (digit) {
                continue;
            }

            goto end;
        }
    }

    ngx_http_imgbill_compact_put(c, p, q - p, 1);

    return q;

end:

    if (q > p) {
        ngx_http_imgbill_compact_put(c, p, q - p, 1);
    }

    ngx_http_imgbill_compact_value_end(c, ngx_http_imgbill_off(c, q, start));

    return q;

invalid:

    return ngx_http_imgbill_compact_fail(c, q, start, "invalid number", -1);
}
