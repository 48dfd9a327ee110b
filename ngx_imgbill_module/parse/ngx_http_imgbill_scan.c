
/*
 * One pass over the upstream reply: is it a single well-formed JSON object,
 * does it carry an image, and what does its top-level usage say.
 *
 * No tree is built: a reply is mostly one multi-megabyte base64 string, so
 * the scanner skips plain runs of strings many bytes at a time and
 * remembers only the few paths that matter (its "roles").  A key is
 * recognised only where it is a key, so a "usage" inside a string (a decoy)
 * is just text.
 *
 * The caller names the dialect, the shape of its API's replies (each
 * API's file under api/ has one): APIs name the same things differently
 * (a usage object, an array of choices), so a key is looked up in its
 * dialect's names, and from there every dialect shares one set of rules
 * for the usage and the choices; the paths from a choice to its images,
 * and where an image shows, are the dialect's.
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


static ngx_inline ngx_int_t ngx_http_imgbill_scan_mark(
    ngx_http_imgbill_scanner_t *s, u_char ch);
static ngx_int_t ngx_http_imgbill_scan_value(ngx_http_imgbill_scanner_t *s,
    u_char ch, size_t at);
static void ngx_http_imgbill_scan_push(ngx_http_imgbill_scanner_t *s,
    u_char open, ngx_uint_t role);
static void ngx_http_imgbill_scan_pop(ngx_http_imgbill_scanner_t *s);
static void ngx_http_imgbill_scan_empty(ngx_http_imgbill_scanner_t *s);
static void ngx_http_imgbill_scan_choice_end(ngx_http_imgbill_scanner_t *s);


#define ngx_http_imgbill_is_space(ch)                                        \
    (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')

#define ngx_http_imgbill_top(s)  (&(s)->stack[(s)->depth - 1])

/* whether the value being read is one of the usage's counts */
#define ngx_http_imgbill_is_count(f)                                         \
    (((f)->role == ngx_http_imgbill_role_usage                               \
      && ((f)->key == ngx_http_imgbill_key_prompt                            \
          || (f)->key == ngx_http_imgbill_key_completion                     \
          || (f)->key == ngx_http_imgbill_key_thoughts))                     \
     || ((f)->role == ngx_http_imgbill_role_details                          \
         && (f)->key == ngx_http_imgbill_key_image_input))


void
ngx_http_imgbill_scan_init(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_dialect_t *dialect)
{
    ngx_memzero(s, sizeof(ngx_http_imgbill_scanner_t));

    s->state = sw_start;
    s->dialect = dialect;
    s->prompt_tokens = -1;
    s->completion_tokens = -1;
    s->thoughts_tokens = -1;
    s->image_input_tokens = -1;
}


/*
 * Takes the whole buffer.  After NGX_ERROR the machine stays put: the
 * input is not one object, whatever may follow.
 */

ngx_int_t
ngx_http_imgbill_scan_feed(ngx_http_imgbill_scanner_t *s, u_char *p,
    u_char *last)
{
    u_char     *start;
    ngx_int_t   rc;

    start = p;
    s->start = p;

    while (p < last) {

        if (s->state <= sw_done && ngx_http_imgbill_is_space(*p)) {
            p++;
            continue;
        }

        switch (s->state) {

        case sw_value:
            if (ngx_http_imgbill_scan_value(s, *p, s->fed + (p + 1 - start))
                != NGX_OK)
            {
                goto failed;
            }

            p++;
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
            s->images = 0;
            s->indexes = 0;
            s->image_at = 0;
            goto failed;

        case sw_error:
            return NGX_ERROR;

        default:
            rc = ngx_http_imgbill_scan_mark(s, *p);

            if (rc == NGX_ERROR) {
                goto failed;
            }

            /* NGX_DECLINED: the byte begins what comes inside */
            p += (rc == NGX_OK);
            break;
        }
    }

    s->fed += last - start;

    return (s->state == sw_error) ? NGX_ERROR : NGX_OK;

failed:

    s->state = sw_error;

    return NGX_ERROR;
}


/*
 * Takes the plain bytes of an unwatched string value from p, if the
 * machine is in one (an image's base64), and returns the first byte that
 * is not plain (a quote, a backslash or a control byte) or last: a caller
 * that looks for bytes of its own among JSON's control bytes (the event
 * stream's line ends) reads the image once, not once for itself and once
 * for the machine.  The bytes count as fed.
 */

u_char *
ngx_http_imgbill_scan_skip(ngx_http_imgbill_scanner_t *s, u_char *p,
    u_char *last)
{
    u_char  *q;

    if (s->state != sw_string) {
        return p;
    }

    q = ngx_http_imgbill_scan_string_plain(s, p, last);
    s->fed += q - p;

    return q;
}


/* the one byte of JSON's punctuation the state expects: NGX_OK once read,
   NGX_DECLINED where it is not that and is left to the next state */

static ngx_inline ngx_int_t
ngx_http_imgbill_scan_mark(ngx_http_imgbill_scanner_t *s, u_char ch)
{
    ngx_http_imgbill_scan_frame_t  *f;

    switch (s->state) {

    case sw_start:
        if (ch != '{') {
            return NGX_ERROR;
        }

        ngx_http_imgbill_scan_push(s, '{', ngx_http_imgbill_role_root);
        return NGX_OK;

    case sw_open:
        f = ngx_http_imgbill_top(s);

        if (ch == f->close) {
            ngx_http_imgbill_scan_empty(s);
            return NGX_OK;
        }

        /* not the close: the first key or value, read again as such */
        s->state = (f->close == '}') ? sw_key_start : sw_value;
        return NGX_DECLINED;

    case sw_key_start:
        if (ch != '"') {
            return NGX_ERROR;
        }

        ngx_http_imgbill_scan_string_start(s, ngx_http_imgbill_watch_key);
        s->state = sw_key;
        return NGX_OK;

    case sw_colon:
        if (ch != ':') {
            return NGX_ERROR;
        }

        s->state = sw_value;
        return NGX_OK;

    default: /* sw_after_value */
        f = ngx_http_imgbill_top(s);

        if (ch == ',') {
            s->state = (f->close == '}') ? sw_key_start : sw_value;
            return NGX_OK;
        }

        if (ch != f->close) {
            return NGX_ERROR;
        }

        ngx_http_imgbill_scan_pop(s);
        return NGX_OK;
    }
}


void
ngx_http_imgbill_scan_finish(ngx_http_imgbill_scanner_t *s,
    ngx_http_imgbill_scan_t *res)
{
    ngx_int_t  output;

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

    /* the output is the completion's tokens and the thinking's */

    output = s->completion_tokens;

    if (s->thoughts_seen) {
        output = (output < 0 || s->thoughts_tokens < 0
                  || s->thoughts_tokens > NGX_HTTP_IMGBILL_TOKENS_MAX - output)
                 ? -1 : output + s->thoughts_tokens;
    }

    res->image = s->image;
    res->image_at = s->image_at;
    res->images = s->images;
    res->indexes = s->indexes;

    /* a reply cut inside a choice: what that choice showed counts */

    if (s->in_choice && s->choice_image) {
        res->images++;
        res->indexes |= (uint64_t) 1 << s->choice_index;
    }

    res->usage_key = s->usage_key;
    res->error = s->error;
    res->finished = s->finished;
    res->no_choices = s->no_choices;
    res->prompt_tokens = s->prompt_tokens;
    res->completion_tokens = output;
    res->image_tokens = -1;

    if (s->state != sw_done) {
        return;
    }

    res->json = 1;
    res->done = s->done;

    /*
     * One usage, with each count once: two top-level usage keys, or a
     * count given twice, leave it unknown which one the upstream meant.
     * An output beyond the cap is disbelieved as a count would be.
     */

    if (s->usages == 1 && s->prompt_seen == 1 && s->completion_seen == 1
        && s->thoughts_seen <= 1 && s->image_input_seen <= 1
        && !s->usage_bad && output >= 0)
    {
        res->usage = 1;

        /* image input tokens are part of the prompt's, or not believed */

        if (s->image_input_seen && s->image_input_tokens <= s->prompt_tokens) {
            res->image_tokens = s->image_input_tokens;
        }

    } else {
        res->prompt_tokens = -1;
        res->completion_tokens = -1;
    }

    /* "cost" goes into the one usage there is, where the dialect has one */

    if (s->usages == 1 && s->dialect->cost) {
        res->usage_at = s->usage_at;
    }
}


void
ngx_http_imgbill_scan(u_char *p, u_char *last,
    ngx_http_imgbill_dialect_t *dialect, ngx_http_imgbill_scan_t *res)
{
    ngx_http_imgbill_scanner_t  s;

    ngx_http_imgbill_scan_init(&s, dialect);
    (void) ngx_http_imgbill_scan_feed(&s, p, last);
    ngx_http_imgbill_scan_finish(&s, res);
}


/* the first byte of a value; at is the offset of the byte after it, from
   the first byte fed (where "cost" goes, if it opens the usage) */

static ngx_int_t
ngx_http_imgbill_scan_value(ngx_http_imgbill_scanner_t *s, u_char ch,
    size_t at)
{
    ngx_uint_t                      key, role, watch, shows;
    ngx_http_imgbill_scan_frame_t  *f;

    f = ngx_http_imgbill_top(s);
    key = ngx_http_imgbill_value_key(f);
    shows = ngx_http_imgbill_scan_shows(s, f);

    /* an error of any shape but null: the APIs' errors are objects */

    if (f->role == ngx_http_imgbill_role_root
        && key == ngx_http_imgbill_key_error && ch != 'n')
    {
        s->error = 1;
    }

    /* a count of anything but a number (a string, a literal, an object) is
       no count, and one given beside it is given twice */

    if (ngx_http_imgbill_is_count(f) && ch != '-'
        && !ngx_http_imgbill_is_digit(ch))
    {
        s->usage_bad = 1;
    }

    /* a value that is an image (an entry of an array of images, a URL):
       the image starts with it */

    if (shows == ngx_http_imgbill_shows_image
        && (ch == '{' || ch == '[' || ch == '"'))
    {
        ngx_http_imgbill_scan_image(s, at);
    }

    switch (ch) {

    case '{':
    case '[':
        if (s->depth == NGX_HTTP_IMGBILL_SCAN_DEPTH) {
            return NGX_ERROR;
        }

        role = ngx_http_imgbill_scan_role(s, f, ch);

        if (role == ngx_http_imgbill_role_choice) {
            s->in_choice = 1;
            s->choice_image = 0;
            s->choice_index = 0;
        }

        if (role == ngx_http_imgbill_role_usage) {
            s->usage_key = 1;
            s->usage_at = at;
        }

        ngx_http_imgbill_scan_push(s, ch, role);
        return NGX_OK;

    case '"':
        watch = (shows == ngx_http_imgbill_shows_text)
                ? ngx_http_imgbill_watch_text
                : (shows == ngx_http_imgbill_shows_mime)
                  ? ngx_http_imgbill_watch_mime
                  : (shows == ngx_http_imgbill_shows_done)
                    ? ngx_http_imgbill_watch_done
                    : (shows == ngx_http_imgbill_shows_url)
                      ? ngx_http_imgbill_watch_any
                      : ngx_http_imgbill_watch_none;

        ngx_http_imgbill_scan_string_start(s, watch);
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
    if (ngx_http_imgbill_top(s)->role == ngx_http_imgbill_role_choice) {
        ngx_http_imgbill_scan_choice_end(s);
    }

    s->state = (--s->depth == 0) ? sw_done : sw_after_value;
}


/*
 * A choice (candidate) ended: it counts once if it showed an image, however
 * many; its "index" (absent, as Google leaves a 0 out: 0) says which of a
 * stream's choices it was.
 */

static void
ngx_http_imgbill_scan_choice_end(ngx_http_imgbill_scanner_t *s)
{
    if (s->choice_image) {
        s->images++;
        s->indexes |= (uint64_t) 1 << s->choice_index;
    }

    s->in_choice = 0;
    s->choice_image = 0;
}


/* an image shows; "at" is the offset of the byte after the one that
   showed it, from the first byte fed */

void
ngx_http_imgbill_scan_image(ngx_http_imgbill_scanner_t *s, size_t at)
{
    s->image = 1;
    s->choice_image = 1;

    if (s->image_at == 0) {
        s->image_at = at;
    }
}


/* an empty container closed */

static void
ngx_http_imgbill_scan_empty(ngx_http_imgbill_scanner_t *s)
{
    /* a stream's last chunk: the usage, and no choice */

    if (ngx_http_imgbill_top(s)->role == ngx_http_imgbill_role_choices
        && s->dialect->usage_chunk)
    {
        s->no_choices = 1;
    }

    ngx_http_imgbill_scan_pop(s);
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
         * A key spelled with escapes ("us\u0061ge") may be the usage or
         * one of its counts: a usage it might duplicate is ambiguous.
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

    /*
     * Images were marked where they began (ngx_http_imgbill_scan_value()
     * and the watch of a string).  An image MIME type makes its part an
     * image, with its data or not; a part a thinking model marks as a
     * thought is an interim image rather than its answer, and counts all
     * the same for now (a part's keys come in any order, so telling it
     * apart would take keeping the part's verdict until its end).
     */

    if (f->role == ngx_http_imgbill_role_choice
        && key == ngx_http_imgbill_key_finish)
    {
        s->finished = 1;
    }

    /* the whole of ".completed" ended it, none of it escaped */

    if (s->watch == ngx_http_imgbill_watch_done && !s->escaped
        && s->match == sizeof(".completed") - 1)
    {
        s->done = 1;
    }
}


/* a number read: a count, if it is one of the usage's */

void
ngx_http_imgbill_scan_number_end(ngx_http_imgbill_scanner_t *s)
{
    ngx_int_t                       value;
    ngx_http_imgbill_scan_frame_t  *f;

    s->state = sw_after_value;

    f = ngx_http_imgbill_top(s);

    if (f->role == ngx_http_imgbill_role_choice
        && f->key == ngx_http_imgbill_key_index)
    {
        /* a negative or fractional index is no index: the first */
        s->choice_index = !s->integer ? 0
                          : (ngx_uint_t) ngx_min(s->number,
                                            NGX_HTTP_IMGBILL_SCAN_INDEXES - 1);
        return;
    }

    if (!ngx_http_imgbill_is_count(f)) {
        return;
    }

    value = (s->integer && s->number <= NGX_HTTP_IMGBILL_TOKENS_MAX)
            ? s->number : -1;

    switch (f->key) {

    case ngx_http_imgbill_key_prompt:
        s->prompt_seen++;
        s->prompt_tokens = value;
        break;

    case ngx_http_imgbill_key_completion:
        s->completion_seen++;
        s->completion_tokens = value;
        break;

    case ngx_http_imgbill_key_image_input:
        s->image_input_seen++;
        s->image_input_tokens = value;
        break;

    default: /* ngx_http_imgbill_key_thoughts */
        s->thoughts_seen++;
        s->thoughts_tokens = value;
        break;
    }

    if (value < 0) {
        s->usage_bad = 1;
    }
}
