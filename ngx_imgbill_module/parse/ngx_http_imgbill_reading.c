
/*
 * One reading of a request: what the relay prices must be what the
 * upstream acts on, and the upstream is not always the model's vendor.
 * Resellers put imgbill in front of relays written in Go, whose
 * encoding/json matches a key to a field without regard to case (and
 * folds U+017F to 's' and the Kelvin sign U+212A to 'k', as Unicode's
 * simple folding does), the last one winning; Google's own JSON takes a
 * field under its proto name ("generation_config") as under its
 * camelCase one.  So in every object the validator reads, keys are
 * compared folded: lower case, without '_'.  Two keys that fold alike
 * are ambiguous, and so is a key that folds like one the relay reads
 * without being one of its spellings ("Model", "Stream_Options"): the
 * request is refused, never guessed (NGX_HTTP_IMGBILL_REQ_AMBIGUOUS).
 *
 * A value the relay reads must be of its one type ("stream": a boolean,
 * a count: a JSON integer), or absent, or null where the APIs take null
 * for absent.  An argument of the URL is read as the upstream reads its
 * name: in any case, percent-decoded.  Pure, as the validator: the unit
 * check and the fuzzer build it.
 */


#include "ngx_http_imgbill_request.h"


/* a key longer than this is no key of the APIs'; it is compared whole
   with the others only if it fits */
#define NGX_HTTP_IMGBILL_KEY_FOLD  256

/* the keys an object may have to be compared without a set */
#define NGX_HTTP_IMGBILL_KEYS_FEW  32


static ssize_t ngx_http_imgbill_fold(const u_char *key, size_t len,
    u_char *buf);
static ngx_int_t ngx_http_imgbill_reading_stands(const char *key,
    u_char *fold, ssize_t n, const char *const *known,
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_hex(u_char c);


/*
 * The keys of obj, against each other and against known, the spellings
 * of the members the relay reads (NULL-terminated).  On a refusal
 * req->key is the key, and req->spelling the known spelling it stands
 * for (NULL: two keys collide).  An object of a few keys (all a request
 * has) is compared on the stack, by the folds' hashes; a larger one
 * through a set of its folds.
 */

ngx_int_t
ngx_http_imgbill_reading_keys(json_t *obj, const char *const *known,
    ngx_http_imgbill_request_t *req)
{
    u_char       fold[NGX_HTTP_IMGBILL_KEY_FOLD],
                 other[NGX_HTTP_IMGBILL_KEY_FOLD];
    json_t      *seen, *value;
    ssize_t      n;
    uint32_t     hash, hashes[NGX_HTTP_IMGBILL_KEYS_FEW];
    ngx_uint_t   i, nkeys;
    const char  *key, *keys[NGX_HTTP_IMGBILL_KEYS_FEW];

    if (!json_is_object(obj)) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    seen = NULL;
    nkeys = 0;

    if (json_object_size(obj) > NGX_HTTP_IMGBILL_KEYS_FEW) {
        seen = json_object();
        if (seen == NULL) {
            return NGX_HTTP_IMGBILL_REQ_INVALID_JSON;
        }
    }

    json_object_foreach(obj, key, value) {

        n = ngx_http_imgbill_fold((u_char *) key, ngx_strlen(key), fold);

        if (n < 0) {
            continue;
        }

        if (seen) {
            if (json_object_getn(seen, (char *) fold, n) != NULL) {
                goto collide;
            }

            if (json_object_setn_new_nocheck(seen, (char *) fold, n,
                                             json_null())
                != 0)
            {
                json_decref(seen);
                return NGX_HTTP_IMGBILL_REQ_INVALID_JSON;
            }

        } else {
            /* FNV-1a */

            for (hash = 2166136261u, i = 0; i < (ngx_uint_t) n; i++) {
                hash = (hash ^ fold[i]) * 16777619u;
            }

            for (i = 0; i < nkeys; i++) {
                if (hashes[i] == hash
                    && ngx_http_imgbill_fold((u_char *) keys[i],
                                             ngx_strlen(keys[i]), other) == n
                    && ngx_memcmp(other, fold, n) == 0)
                {
                    goto collide;
                }
            }

            hashes[nkeys] = hash;
            keys[nkeys++] = key;
        }

        if (ngx_http_imgbill_reading_stands(key, fold, n, known, req)
            != NGX_OK)
        {
            goto collide;
        }
    }

    if (seen) {
        json_decref(seen);
    }

    return NGX_HTTP_IMGBILL_REQ_OK;

collide:

    if (seen) {
        json_decref(seen);
    }

    req->key = key;

    return NGX_HTTP_IMGBILL_REQ_AMBIGUOUS;
}


/* a spelling of its own, or one that stands for a known one: NGX_DECLINED,
   and which in req->spelling */

static ngx_int_t
ngx_http_imgbill_reading_stands(const char *key, u_char *fold, ssize_t n,
    const char *const *known, ngx_http_imgbill_request_t *req)
{
    u_char              other[NGX_HTTP_IMGBILL_KEY_FOLD];
    ssize_t             kn;
    const char *const  *k;

    for (k = known; *k; k++) {
        if (ngx_strcmp(*k, key) == 0) {
            return NGX_OK;
        }
    }

    for (k = known; *k; k++) {
        kn = ngx_http_imgbill_fold((u_char *) *k, ngx_strlen(*k), other);

        if (kn == n && ngx_memcmp(other, fold, n) == 0) {
            req->spelling = *k;
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * Lower case, without '_', and the two non-ASCII letters Unicode folds
 * to ASCII ones: U+017F LATIN SMALL LETTER LONG S (C5 BF) to 's', U+212A
 * KELVIN SIGN (E2 84 AA) to 'k'.  -1 if it does not fit.
 */

static ssize_t
ngx_http_imgbill_fold(const u_char *key, size_t len, u_char *buf)
{
    u_char        c;
    size_t        n;
    const u_char  *last;

    n = 0;
    last = key + len;

    while (key < last) {
        c = *key++;

        if (c == '_') {
            continue;
        }

        if (c == 0xc5 && key < last && *key == 0xbf) {
            key++;
            c = 's';

        } else if (c == 0xe2 && last - key >= 2 && key[0] == 0x84
                   && key[1] == 0xaa)
        {
            key += 2;
            c = 'k';

        } else if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (n == NGX_HTTP_IMGBILL_KEY_FOLD) {
            return -1;
        }

        buf[n++] = c;
    }

    return n;
}


/* the member of obj under the first of its spellings that is there */

json_t *
ngx_http_imgbill_reading_member(json_t *obj, const char *const *names)
{
    json_t  *v;

    for ( /* void */ ; *names; names++) {
        v = json_object_get(obj, *names);

        if (v != NULL) {
            return v;
        }
    }

    return NULL;
}


/*
 * A count of tokens the relay bounds a hold by: absent or null, none (0);
 * else a JSON integer from min, capped at the largest count believed.
 */

ngx_int_t
ngx_http_imgbill_reading_tokens(json_t *v, const char *name, ngx_int_t min,
    ngx_int_t *tokens, ngx_http_imgbill_request_t *req)
{
    json_int_t  n;

    *tokens = 0;

    if (v == NULL || json_is_null(v)) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    if (!json_is_integer(v) || (n = json_integer_value(v)) < min) {
        req->param = name;
        req->expected = (min < 0) ? "an integer of at least -1"
                                  : "an integer of at least 0";
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    *tokens = (ngx_int_t) ngx_min(ngx_max(n, 0), NGX_HTTP_IMGBILL_TOKENS_MAX);

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * What OpenAI's APIs share at the root of a body: its members read once
 * (known), a "model" that is a short non-empty string, and "n", the
 * images asked for.
 */

ngx_int_t
ngx_http_imgbill_reading_openai(ngx_http_imgbill_request_t *req,
    const char *const *known)
{
    json_t     *model;
    ngx_int_t   rc;

    rc = ngx_http_imgbill_reading_keys(req->root, known, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    model = json_object_get(req->root, "model");

    if (!json_is_string(model) || json_string_length(model) == 0) {
        req->param = "model";
        req->expected = "a string";
        req->code = "missing_model";
        return NGX_HTTP_IMGBILL_REQ_MISSING;
    }

    if (ngx_http_imgbill_request_long(req, model)) {
        req->param = "model";
        req->expected = "a model's name";
        return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
    }

    req->model.len = json_string_length(model);
    req->model.data = (u_char *) json_string_value(model);

    /* each image of the n is a generation the upstream bills */

    return ngx_http_imgbill_request_asked(json_object_get(req->root, "n"),
                                          "n", req);
}


/* a flag: absent or null, false; else true or false */

ngx_int_t
ngx_http_imgbill_reading_flag(json_t *v, const char *name, ngx_uint_t *flag,
    ngx_http_imgbill_request_t *req)
{
    *flag = json_is_true(v);

    if (v == NULL || json_is_null(v) || json_is_boolean(v)) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    req->param = name;
    req->expected = "true or false";

    return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
}


/*
 * Whether an argument's name is "name" (lower case) as the upstream reads
 * it, in any case and, as the upstream decodes names, percent-encoded:
 * 0 if not, 1 if sent so, plain, 2 if spelled otherwise.  ngx_http_arg()
 * reads only the plain one, but every spelling that may be the name is
 * kept from the logs and the upstream (a key), or refused (an "alt").
 */

ngx_uint_t
ngx_http_imgbill_arg_is(u_char *p, u_char *last, const char *name)
{
    u_char      c;
    ngx_int_t   hi, lo;
    ngx_uint_t  n, plain;

    plain = 1;

    for (n = 0; p < last; n++) {
        c = *p++;

        if (c == '%' && last - p >= 2) {
            hi = ngx_http_imgbill_hex(p[0]);
            lo = ngx_http_imgbill_hex(p[1]);

            if (hi >= 0 && lo >= 0) {
                c = (u_char) (hi << 4 | lo);
                p += 2;
                plain = 0;
            }
        }

        if (name[n] == '\0' || (c | 0x20) != (u_char) name[n]) {
            return 0;
        }

        if (c != (u_char) name[n]) {
            plain = 0;
        }
    }

    return (name[n] == '\0') ? 2 - plain : 0;
}


static ngx_int_t
ngx_http_imgbill_hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* a form's count: a decimal of at most three digits, without a leading
   zero, as a JSON integer; anything else is left for the check to
   refuse */

void
ngx_http_imgbill_reading_number(json_t *root, const char *name)
{
    json_t      *v;
    size_t       len, i;
    json_int_t   n;
    const char  *s;

    v = json_object_get(root, name);

    if (!json_is_string(v)) {
        return;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len == 0 || len > 3 || (s[0] == '0' && len > 1)) {
        return;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return;
        }

        n = n * 10 + (s[i] - '0');
    }

    json_object_set_new(root, name, json_integer(n));
}
