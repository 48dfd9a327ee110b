
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
#include "ngx_http_imgbill_scan_token.h"


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
static ngx_uint_t ngx_http_imgbill_scan_key(ngx_http_imgbill_scanner_t *s);


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


#define ngx_http_imgbill_is_space(ch)                                        \
    (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')

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

    /* a count of true, false or null is no count, and one given beside
       it is given twice */

    if (f->role == ngx_http_imgbill_role_usage
        && ngx_http_imgbill_is_count(key))
    {
        s->usage_bad = 1;
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


/* a key or a string value read: what it says where it is */

void
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


/* a number read: a count, if it is one of the usage's */

void
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
