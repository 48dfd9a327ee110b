
/*
 * imgbill: a request body read as it streams through, in pieces of any
 * size, never held whole.  What the validator needs of it is small: its
 * structure, its keys and short values, and of each long string (a
 * reference image, a long prompt) only its length and what it would
 * decode to.  So the body is checked byte by byte for everything jansson
 * would refuse (its syntax, UTF-8, escapes, depth), and written out
 * compact: whitespace dropped, each string value longer than
 * NGX_HTTP_IMGBILL_SHORT decoded bytes replaced by "\u0000<n>", the n-th
 * entry of a table of what it was.  A body has no "\u0000" of its own (it
 * is refused here, as jansson refuses it), so the placeholders cannot be
 * forged.  jansson then reads the compact text, a few kilobytes whatever
 * the body's size.
 *
 * The places of a few members' values in the body are kept for a rewrite
 * (OpenAI's stream_options): the body goes upstream from where nginx put
 * it, spliced, never copied.
 */


#include "ngx_http_imgbill_compact.h"


static u_char *ngx_http_imgbill_compact_structure(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *last, u_char *start);
static u_char *ngx_http_imgbill_compact_value(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *start);
static u_char *ngx_http_imgbill_compact_close(ngx_http_imgbill_compact_t *c,
    u_char *p, u_char *start);


#define ngx_http_imgbill_is_space(ch)                                        \
    ((ch) == ' ' || (ch) == '\t' || (ch) == '\n' || (ch) == '\r')


ngx_http_imgbill_compact_t *
ngx_http_imgbill_compact_create(size_t max,
    const ngx_http_imgbill_mark_path_t *paths, ngx_log_t *log)
{
    ngx_uint_t                   i;
    ngx_http_imgbill_compact_t  *c;

    c = ngx_alloc(sizeof(ngx_http_imgbill_compact_t), log);
    if (c == NULL) {
        return NULL;
    }

    ngx_memzero(c, sizeof(ngx_http_imgbill_compact_t));

    c->max = max;
    c->room = max;
    c->log = log;
    c->line = 1;
    c->state = sw_value;
    c->after = sw_end;
    c->paths = paths;
    c->value_mark = -1;
    c->token_mark = -1;
    c->ended_mark = -1;
    c->root_close = -1;

    for (i = 0; i < NGX_HTTP_IMGBILL_MARKS; i++) {
        c->marks[i].key = -1;
        c->marks[i].start = -1;
        c->marks[i].end = -1;
        c->marks[i].comma = -1;
    }

    return c;
}


void
ngx_http_imgbill_compact_free(ngx_http_imgbill_compact_t *c)
{
    if (c == NULL) {
        return;
    }

    if (c->text) {
        ngx_free(c->text);
    }

    if (c->longs) {
        ngx_free(c->longs);
    }

    ngx_free(c);
}


/*
 * The next piece of the body.  Once the body is refused (not JSON, or
 * more structure than the text may hold) the rest is only searched for a
 * NUL byte, which is refused first, whatever else is wrong: a refused body
 * of 32 MB costs the worker a memchr(), not a walk byte by byte.
 */

void
ngx_http_imgbill_compact_feed(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *last)
{
    u_char  *start;

    start = p;

    if (c->verdict == NGX_HTTP_IMGBILL_REQ_NUL_BYTE) {
        goto done;
    }

    while (p < last) {

        if (c->verdict != NGX_HTTP_IMGBILL_REQ_OK) {
            if (memchr(p, '\0', last - p) != NULL) {
                c->verdict = NGX_HTTP_IMGBILL_REQ_NUL_BYTE;
            }

            goto done;
        }

        if (*p == '\0') {
            c->verdict = NGX_HTTP_IMGBILL_REQ_NUL_BYTE;
            goto done;
        }

        p = (c->state == sw_string)
            ? ngx_http_imgbill_compact_string(c, p, last, start)
            : ngx_http_imgbill_compact_structure(c, p, last, start);
    }

done:

    c->total += last - start;
}


/* whether the verdict is known before the body's end: a refusal */

ngx_uint_t
ngx_http_imgbill_compact_end_known(ngx_http_imgbill_compact_t *c)
{
    return c->verdict != NGX_HTTP_IMGBILL_REQ_OK;
}


/* the body's end: a verdict on its form */

ngx_int_t
ngx_http_imgbill_compact_end(ngx_http_imgbill_compact_t *c)
{
    if (c->verdict != NGX_HTTP_IMGBILL_REQ_OK) {
        return c->verdict;
    }

    if (c->total == 0) {
        return NGX_HTTP_IMGBILL_REQ_EMPTY;
    }

    if (c->state != sw_end) {
        (void) ngx_http_imgbill_compact_fail(c, NULL, NULL,
                                             "unexpected end of input", -1);
    }

    return c->verdict;
}


/*
 * The compact text, parsed: the tree the APIs read, the table of long
 * strings, the places of the marked members.  NGX_HTTP_IMGBILL_REQ_OK or
 * a verdict; req->root is the caller's to json_decref() in every case.
 */

ngx_int_t
ngx_http_imgbill_compact_parse(ngx_http_imgbill_compact_t *c,
    ngx_http_imgbill_request_t *req)
{
    ngx_int_t  rc;

    ngx_memzero(req, sizeof(ngx_http_imgbill_request_t));

    req->asked = 1;
    req->length = c->total;

    rc = ngx_http_imgbill_compact_end(c);

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        req->error = c->error;
        return rc;
    }

    req->root = json_loadb((char *) c->text, c->len,
                           JSON_REJECT_DUPLICATES|JSON_ALLOW_NUL, &req->error);

    if (req->root == NULL) {
        /* a number too large, a key twice: where is the compact text's */
        return NGX_HTTP_IMGBILL_REQ_INVALID_JSON;
    }

    if (!json_is_object(req->root)) {
        return NGX_HTTP_IMGBILL_REQ_NOT_OBJECT;
    }

    req->longs = c->longs;
    req->nlongs = c->nlongs;
    req->root_close = c->root_close;
    ngx_memcpy(req->marks, c->marks, sizeof(c->marks));

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* outside strings: structure, numbers, literals */

static u_char *
ngx_http_imgbill_compact_structure(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *last, u_char *start)
{
    u_char  ch;

    if (c->state == sw_number) {
        return ngx_http_imgbill_compact_number(c, p, last, start);
    }

    if (c->state == sw_literal) {
        for ( /* void */ ; p < last && *c->literal; p++, c->literal++) {
            if (*p != (u_char) *c->literal) {
                return ngx_http_imgbill_compact_fail(c, p, start,
                                                     "invalid literal", -1);
            }
        }

        if (*c->literal == '\0') {
            ngx_http_imgbill_compact_value_end(c,
                                      ngx_http_imgbill_off(c, p, start));
        }

        return p;
    }

    ch = *p;

    if (ngx_http_imgbill_is_space(ch)) {
        if (ch == '\n') {
            c->line++;
            c->line_start = ngx_http_imgbill_off(c, p, start) + 1;
        }

        return p + 1;
    }

    switch (c->state) {

    case sw_value_or_close:
        if (ch == ']') {
            return ngx_http_imgbill_compact_close(c, p, start);
        }

        /* fall through */

    case sw_value:
        return ngx_http_imgbill_compact_value(c, p, start);

    case sw_key_or_close:
        if (ch == '}') {
            return ngx_http_imgbill_compact_close(c, p, start);
        }

        /* fall through */

    case sw_key:
        if (ch != '"') {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "string or '}' expected", -1);
        }

        c->key_at = ngx_http_imgbill_off(c, p, start);
        c->key_comma = (c->state == sw_key) ? c->key_comma : -1;
        c->key = 1;
        c->elided = 0;
        c->keylen = 0;
        c->state = sw_string;
        c->sw = sw_text;
        ngx_memzero(&c->str, sizeof(ngx_http_imgbill_long_t));
        ngx_http_imgbill_compact_put1(c, p);

        return p + 1;

    case sw_colon:
        if (ch != ':') {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "':' expected", -1);
        }

        c->state = sw_value;
        ngx_http_imgbill_compact_put1(c, p);

        return p + 1;

    case sw_comma_or_close:
        if (ch == ']' || ch == '}') {
            return ngx_http_imgbill_compact_close(c, p, start);
        }

        if (ch != ',') {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "',' or a closing bracket "
                                                 "expected", -1);
        }

        /* a marked member goes with the ',' before it, or with this one
           when it is the first */

        if (c->ended_mark >= 0 && c->marks[c->ended_mark].comma < 0) {
            c->marks[c->ended_mark].comma = ngx_http_imgbill_off(c, p, start);
        }

        c->ended_mark = -1;
        c->key_comma = ngx_http_imgbill_off(c, p, start);
        c->state = (c->stack[c->depth] & NGX_HTTP_IMGBILL_OBJECT) ? sw_key
                                                                : sw_value;
        ngx_http_imgbill_compact_put1(c, p);

        return p + 1;

    default: /* sw_end */
        return ngx_http_imgbill_compact_fail(c, p, start,
                                             "end of input expected", -1);
    }
}


/* a value starts; the root must be an object or an array, as jansson's */

static u_char *
ngx_http_imgbill_compact_value(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *start)
{
    u_char      ch;
    ngx_int_t   mark;

    ch = *p;
    mark = c->value_mark;
    c->value_mark = -1;

    if (c->depth == 0 && ch != '{' && ch != '[') {
        return ngx_http_imgbill_compact_fail(c, p, start,
                                             "'[' or '{' expected", -1);
    }

    if (mark >= 0) {
        c->marks[mark].start = ngx_http_imgbill_off(c, p, start);
    }

    switch (ch) {

    case '{':
    case '[':
        if (c->depth == NGX_HTTP_IMGBILL_DEPTH) {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "maximum parsing depth "
                                                 "reached", -1);
        }

        c->stack[++c->depth] = (u_char) ((ch == '{' ? NGX_HTTP_IMGBILL_OBJECT
                                                    : 0)
                                         | (mark + 1));

        c->state = (ch == '{') ? sw_key_or_close : sw_value_or_close;
        ngx_http_imgbill_compact_put1(c, p);

        return p + 1;

    case '"':
        c->key = 0;
        c->elided = 0;
        c->token_mark = mark;
        c->state = sw_string;
        c->sw = sw_text;
        c->str_at = c->len;
        c->data = 1;
        c->base64 = 0;
        c->comma = 0;
        ngx_memzero(&c->str, sizeof(ngx_http_imgbill_long_t));
        ngx_http_imgbill_compact_put(c, p, 1, 0);

        return p + 1;

    case 't':
    case 'f':
    case 'n':
        c->literal = (ch == 't') ? "true" : (ch == 'f') ? "false" : "null";
        c->token_mark = mark;
        c->state = sw_literal;
        ngx_http_imgbill_compact_put(c, (u_char *) c->literal,
                                     ngx_strlen(c->literal), 1);
        c->literal++;

        return p + 1;

    default:
        if (ch != '-' && !(ch >= '0' && ch <= '9')) {
            return ngx_http_imgbill_compact_fail(c, p, start,
                                                 "invalid token", -1);
        }

        c->token_mark = mark;
        c->state = sw_number;
        c->sw = (ch == '-') ? sw_num_minus
                            : (ch == '0') ? sw_num_zero : sw_num_int;
        ngx_http_imgbill_compact_put1(c, p);

        return p + 1;
    }
}


static u_char *
ngx_http_imgbill_compact_close(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *start)
{
    u_char      top;
    ngx_int_t   mark;

    top = c->stack[c->depth];

    if ((*p == '}') != ((top & NGX_HTTP_IMGBILL_OBJECT) != 0)) {
        return ngx_http_imgbill_compact_fail(c, p, start,
                                             "mismatched closing bracket", -1);
    }

    mark = (ngx_int_t) (top & ~NGX_HTTP_IMGBILL_OBJECT) - 1;

    if (mark >= 0) {
        c->marks[mark].end = ngx_http_imgbill_off(c, p, start) + 1;
    }

    c->ended_mark = mark;

    if (c->depth == 1) {
        c->root_close = ngx_http_imgbill_off(c, p, start);
    }

    c->depth--;
    c->state = c->depth ? sw_comma_or_close : sw_end;
    ngx_http_imgbill_compact_put1(c, p);

    return p + 1;
}


void
ngx_http_imgbill_compact_value_end(ngx_http_imgbill_compact_t *c, off_t end)
{
    if (c->token_mark >= 0) {
        c->marks[c->token_mark].end = end;
    }

    c->ended_mark = c->token_mark;
    c->token_mark = -1;

    c->state = c->depth ? sw_comma_or_close : sw_end;
}


/* a key of an object: is it a marked member's? */

void
ngx_http_imgbill_compact_key_end(ngx_http_imgbill_compact_t *c)
{
    ngx_int_t                            parent;
    ngx_uint_t                           i;
    const ngx_http_imgbill_mark_path_t  *m;

    c->value_mark = -1;

    if (c->paths == NULL || c->keylen > NGX_HTTP_IMGBILL_MARK_KEY) {
        return;
    }

    /* the object's own mark; the root is -1, any other unmarked -2 */

    parent = (c->depth == 1)
             ? -1
             : (ngx_int_t) (c->stack[c->depth] & ~NGX_HTTP_IMGBILL_OBJECT) - 1;

    if (c->depth > 1 && parent < 0) {
        return;
    }

    for (i = 0, m = c->paths; m->key && i < NGX_HTTP_IMGBILL_MARKS; i++, m++)
    {
        if (m->parent == parent && ngx_strlen(m->key) == c->keylen
            && ngx_strncmp(m->key, c->keybuf, c->keylen) == 0)
        {
            c->value_mark = i;
            c->marks[i].key = c->key_at;
            c->marks[i].comma = c->key_comma;
            return;
        }
    }
}


/*
 * Into the text.  capped: the text may not grow past the limit here; a
 * string's bytes are checked at its end instead, as a long one leaves the
 * text before that.
 */

void
ngx_http_imgbill_compact_put(ngx_http_imgbill_compact_t *c, u_char *p,
    size_t n, ngx_uint_t capped)
{
    if (c->full) {
        c->room = 0;
        return;
    }

    if (capped && c->len + n > c->room) {
        c->full = 1;
        c->room = 0;

        if (c->verdict == NGX_HTTP_IMGBILL_REQ_OK) {
            c->verdict = NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX;
        }

        return;
    }

    if (ngx_http_imgbill_append(&c->text, &c->len, &c->size, p, n, c->log)
        != NGX_OK)
    {
        c->full = 1;
        c->room = 0;
        c->verdict = NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX;
    }
}


/* not JSON: where, and why, with the byte or character in hex if any */

u_char *
ngx_http_imgbill_compact_fail(ngx_http_imgbill_compact_t *c, u_char *p,
    u_char *start, const char *what, ngx_int_t code)
{
    off_t     at;
    u_char   *t, *last, hex[NGX_INT_T_LEN], *h;
    size_t    n;

    static u_char  digits[] = "0123456789abcdef";

    if (c->verdict == NGX_HTTP_IMGBILL_REQ_OK
        || c->verdict == NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX)
    {
        t = (u_char *) c->error.text;
        last = t + sizeof(c->error.text) - 1;

        n = ngx_min(ngx_strlen(what), (size_t) (last - t));
        t = ngx_cpymem(t, what, n);

        if (code >= 0 && last - t > (ptrdiff_t) sizeof(hex) + 3) {
            h = hex + sizeof(hex);

            do {
                *--h = digits[code & 0xf];
                code >>= 4;
            } while (code);

            t = ngx_cpymem(t, " 0x", 3);
            t = ngx_cpymem(t, h, hex + sizeof(hex) - h);
        }

        *t = '\0';

        at = p ? ngx_http_imgbill_off(c, p, start) : c->total;

        c->error.line = (int) c->line;
        c->error.column = (int) (at - c->line_start + 1);
        c->error.position = (int) ngx_min(at, NGX_MAX_INT32_VALUE);
        c->verdict = NGX_HTTP_IMGBILL_REQ_INVALID_JSON;
    }

    c->full = 1;
    c->room = 0;

    return p;
}
