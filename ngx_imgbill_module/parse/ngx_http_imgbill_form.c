
/*
 * imgbill: a multipart/form-data body read into what the APIs read of a
 * JSON one (see ngx_http_imgbill_request.h), as it streams in.
 *
 * A field (a part without a filename) becomes a string member of the
 * root; one longer than NGX_HTTP_IMGBILL_SHORT is only counted and
 * stands in the tree as a long string does in a compacted JSON body
 * ("\u0000<index>", its length in the table), so a prompt of megabytes
 * is never kept and a model's name cannot be one.  A file becomes an
 * entry of an array under its name, its size in bytes: "image[]" sent
 * three times is [size, size, size].  What the fields mean (that "n" is
 * a number) is the API's to say.
 *
 * A field the API names as JSON (Ideogram's "image_request") is kept
 * whole, within the bound of all the fields' text, and becomes the
 * object it is: a prompt inside it is the request's as much as a field.
 *
 * Every file is held to the image limit as its bytes go by: the first
 * one over it is the verdict, known at once, so the rest of the body is
 * read without being kept, and its size is still counted to its end for
 * the error.
 */


#include "ngx_http_imgbill_request.h"
#include "ngx_http_imgbill_multipart.h"


struct ngx_http_imgbill_form_s {
    ngx_http_imgbill_multipart_t   *mp;
    json_t                         *root;
    ngx_http_imgbill_long_t        *longs;
    ngx_uint_t                      nlongs;
    ngx_uint_t                      nalloc;
    size_t                          image_limit;
    off_t                           total;      /* the body's bytes */
    size_t                          text;       /* its fields' bytes */
    ngx_int_t                       verdict;    /* known before the end */
    const char                     *expected;
    const char                     *code;
    ngx_uint_t                      files;
    ngx_uint_t                      too_large;  /* the file over the
                                                   limit, from 1 */
    size_t                          image_size;
    ngx_log_t                      *log;
    const char *const              *json;       /* the JSON fields' names */
    u_char                         *jbuf;       /* ... the one being read */
    size_t                          jlen;
    size_t                          jalloc;
    unsigned                        in_json:1;
    size_t                          vlen;
    u_char                          value[NGX_HTTP_IMGBILL_SHORT];
    char                            param[NGX_HTTP_IMGBILL_PART_NAME_MAX
                                          + 1];
};


static ngx_int_t ngx_http_imgbill_form_part(void *data,
    ngx_http_imgbill_part_t *part, ngx_http_imgbill_mp_event_e event,
    u_char *p, size_t len);
static ngx_int_t ngx_http_imgbill_form_field(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_part_t *part);
static ngx_int_t ngx_http_imgbill_form_file(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_part_t *part);
static ngx_int_t ngx_http_imgbill_form_long(ngx_http_imgbill_form_t *f,
    size_t len, json_t **value);
static ngx_uint_t ngx_http_imgbill_form_is_json(ngx_http_imgbill_form_t *f,
    ngx_str_t *name);
static ngx_int_t ngx_http_imgbill_form_json(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_part_t *part, json_t **value);
static ngx_int_t ngx_http_imgbill_form_fail(ngx_http_imgbill_form_t *f,
    ngx_int_t verdict, ngx_str_t *param, const char *expected,
    const char *code);


/* what the client is told of each way the reading fails */
static const char  *ngx_http_imgbill_form_errors[] = {
    "",
    "it ends before its closing boundary",
    "a boundary is followed by neither CRLF nor \"--\"",
    "a part's header is too long, has no ':', is one of too many, or is "
    "a Content-Transfer-Encoding",
    "a part is not form-data with a name of at most 128 bytes",
    "it has more than 64 parts",
    ""
};


/* json: the names of the fields whose text is JSON, NULL-ended; NULL:
   none */

ngx_http_imgbill_form_t *
ngx_http_imgbill_form_create(ngx_str_t *boundary, size_t image_limit,
    const char *const *json, ngx_log_t *log)
{
    ngx_http_imgbill_form_t  *f;

    f = ngx_alloc(sizeof(ngx_http_imgbill_form_t), log);
    if (f == NULL) {
        return NULL;
    }

    ngx_memzero(f, sizeof(ngx_http_imgbill_form_t));

    f->image_limit = image_limit;
    f->json = json;
    f->log = log;

    f->root = json_object();
    if (f->root == NULL) {
        goto failed;
    }

    f->mp = ngx_http_imgbill_multipart_create(boundary,
                                              ngx_http_imgbill_form_part, f,
                                              log);
    if (f->mp == NULL) {
        goto failed;
    }

    return f;

failed:

    ngx_http_imgbill_form_free(f);

    return NULL;
}


void
ngx_http_imgbill_form_feed(ngx_http_imgbill_form_t *f, u_char *p,
    u_char *last)
{
    f->total += last - p;

    ngx_http_imgbill_multipart_feed(f->mp, p, last);
}


/* a verdict before the end: the rest of the body need not be kept */

ngx_uint_t
ngx_http_imgbill_form_end_known(ngx_http_imgbill_form_t *f)
{
    return f->verdict != NGX_HTTP_IMGBILL_REQ_OK
           || f->too_large
           || ngx_http_imgbill_multipart_error(f->mp)
              != NGX_HTTP_IMGBILL_MP_OK;
}


/*
 * The whole body read: its fields and files in req, as a compacted JSON
 * body's are, and req->form set.  NGX_HTTP_IMGBILL_REQ_OK or a verdict;
 * req->root is the caller's to json_decref() in every case, and the
 * strings the verdict names are the form's, good until it is freed.
 */

ngx_int_t
ngx_http_imgbill_form_parse(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_request_t *req)
{
    ngx_http_imgbill_mp_error_e  err;

    ngx_memzero(req, sizeof(ngx_http_imgbill_request_t));

    req->asked = 1;
    req->form = 1;
    req->length = f->text;

    if (f->total == 0) {
        return NGX_HTTP_IMGBILL_REQ_EMPTY;
    }

    /* a file too large is what the client most needs to hear: the body
       was cut short because of it */

    if (f->too_large) {
        req->images = f->too_large;
        req->image_size = f->image_size;
        return NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE;
    }

    if (f->verdict != NGX_HTTP_IMGBILL_REQ_OK) {
        req->param = f->param;
        req->expected = f->expected;
        req->code = f->code;
        return f->verdict;
    }

    err = ngx_http_imgbill_multipart_end(f->mp);

    if (err == NGX_HTTP_IMGBILL_MP_STOPPED) {
        /* stopped without a verdict: out of memory */
        return NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX;
    }

    if (err != NGX_HTTP_IMGBILL_MP_OK) {
        req->expected = ngx_http_imgbill_form_errors[err];
        return NGX_HTTP_IMGBILL_REQ_BAD_FORM;
    }

    req->root = json_incref(f->root);
    req->longs = f->longs;
    req->nlongs = f->nlongs;

    return NGX_HTTP_IMGBILL_REQ_OK;
}


void
ngx_http_imgbill_form_free(ngx_http_imgbill_form_t *f)
{
    if (f->mp) {
        ngx_http_imgbill_multipart_free(f->mp);
    }

    if (f->longs) {
        ngx_free(f->longs);
    }

    if (f->jbuf) {
        ngx_free(f->jbuf);
    }

    json_decref(f->root);

    ngx_free(f);
}


static ngx_int_t
ngx_http_imgbill_form_part(void *data, ngx_http_imgbill_part_t *part,
    ngx_http_imgbill_mp_event_e event, u_char *p, size_t len)
{
    ngx_http_imgbill_form_t  *f = data;

    size_t  n;

    switch (event) {

    case NGX_HTTP_IMGBILL_MP_BEGIN:
        f->vlen = 0;
        f->jlen = 0;
        f->in_json = !part->file
                     && ngx_http_imgbill_form_is_json(f, &part->name);

        if (part->file) {
            f->files++;
        }

        return NGX_OK;

    case NGX_HTTP_IMGBILL_MP_DATA:

        if (part->file) {
            if ((size_t) part->size > f->image_limit && f->too_large == 0) {
                f->too_large = f->files;
            }

            /* its size so far, should the body end inside it */

            if (f->too_large == f->files) {
                f->image_size = (size_t) part->size;
            }

            return NGX_OK;
        }

        f->text += len;

        if (f->text > NGX_HTTP_IMGBILL_COMPACT_MAX) {
            return ngx_http_imgbill_form_fail(f,
                                            NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX,
                                            NULL, NULL, NULL);
        }

        /* a JSON field is kept: all the fields' text is bounded, so is
           it */

        if (f->in_json) {
            return ngx_http_imgbill_append(&f->jbuf, &f->jlen, &f->jalloc,
                                           p, len, f->log);
        }

        if ((size_t) part->size <= NGX_HTTP_IMGBILL_SHORT) {
            n = ngx_min(len, NGX_HTTP_IMGBILL_SHORT - f->vlen);
            ngx_memcpy(f->value + f->vlen, p, n);
            f->vlen += n;
        }

        return NGX_OK;

    default: /* NGX_HTTP_IMGBILL_MP_END */

        if (ngx_strlchr(part->name.data, part->name.data + part->name.len,
                        '\0'))
        {
            return ngx_http_imgbill_form_fail(f,
                                       NGX_HTTP_IMGBILL_REQ_BAD_FORM,
                                       NULL, "a part's name has a NUL byte",
                                       NULL);
        }

        if (part->file) {
            return f->too_large ? NGX_OK
                                : ngx_http_imgbill_form_file(f, part);
        }

        return ngx_http_imgbill_form_field(f, part);
    }
}


static ngx_int_t
ngx_http_imgbill_form_field(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_part_t *part)
{
    json_t  *v;

    if (json_object_getn(f->root, (char *) part->name.data, part->name.len))
    {
        return ngx_http_imgbill_form_fail(f, NGX_HTTP_IMGBILL_REQ_BAD_VALUE,
                                          &part->name, "given once",
                                          "duplicate_field");
    }

    /* HTML's "_charset_" makes some upstreams decode the fields after it
       by another charset than the UTF-8 they were read in */

    if (part->name.len == sizeof("_charset_") - 1
        && ngx_strncasecmp(part->name.data, (u_char *) "_charset_",
                           sizeof("_charset_") - 1) == 0)
    {
        return ngx_http_imgbill_form_fail(f, NGX_HTTP_IMGBILL_REQ_BAD_VALUE,
                                          &part->name,
                                          "absent: fields are read as UTF-8",
                                          NULL);
    }

    if (f->in_json) {
        if (ngx_http_imgbill_form_json(f, part, &v) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if ((size_t) part->size > NGX_HTTP_IMGBILL_SHORT) {
        if (ngx_http_imgbill_form_long(f, (size_t) part->size, &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        /* the tree's strings are the client's text, whole: a NUL would
           make a short one read as a long one's stand-in */

        if (ngx_strlchr(f->value, f->value + f->vlen, '\0')) {
            return ngx_http_imgbill_form_fail(f,
                                       NGX_HTTP_IMGBILL_REQ_BAD_VALUE,
                                       &part->name, "text without NUL bytes",
                                       NULL);
        }

        v = json_stringn((char *) f->value, f->vlen);

        if (v == NULL) {
            return ngx_http_imgbill_form_fail(f,
                                       NGX_HTTP_IMGBILL_REQ_BAD_VALUE,
                                       &part->name, "UTF-8 text", NULL);
        }
    }

    if (json_object_setn_new(f->root, (char *) part->name.data,
                             part->name.len, v)
        != 0)
    {
        /* (a name that is no UTF-8 is not echoed into the error) */
        return ngx_http_imgbill_form_fail(f, NGX_HTTP_IMGBILL_REQ_BAD_FORM,
                                          NULL, "a part's name is not UTF-8",
                                          NULL);
    }

    return NGX_OK;
}


/* a file: its size in the array of its name */

static ngx_int_t
ngx_http_imgbill_form_file(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_part_t *part)
{
    json_t  *a;

    a = json_object_getn(f->root, (char *) part->name.data, part->name.len);

    if (a == NULL) {
        a = json_array();

        if (a == NULL) {
            return NGX_ERROR;
        }

        if (json_object_setn_new(f->root, (char *) part->name.data,
                                 part->name.len, a)
            != 0)
        {
            return ngx_http_imgbill_form_fail(f,
                                       NGX_HTTP_IMGBILL_REQ_BAD_FORM, NULL,
                                       "a part's name is not UTF-8", NULL);
        }

    } else if (!json_is_array(a)) {
        return ngx_http_imgbill_form_fail(f, NGX_HTTP_IMGBILL_REQ_BAD_VALUE,
                                          &part->name,
                                          "either a field or files",
                                          "duplicate_field");
    }

    if (json_array_append_new(a, json_integer(part->size)) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_imgbill_form_is_json(ngx_http_imgbill_form_t *f, ngx_str_t *name)
{
    ngx_uint_t  i;

    for (i = 0; f->json && f->json[i]; i++) {
        if (ngx_strlen(f->json[i]) == name->len
            && ngx_strncmp(f->json[i], name->data, name->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* ... read as one object, a key given twice refused as in a JSON body */

static ngx_int_t
ngx_http_imgbill_form_json(ngx_http_imgbill_form_t *f,
    ngx_http_imgbill_part_t *part, json_t **value)
{
    json_t        *v;
    json_error_t   err;

    v = json_loadb((char *) f->jbuf, f->jlen, JSON_REJECT_DUPLICATES, &err);

    if (!json_is_object(v)) {
        json_decref(v);
        return ngx_http_imgbill_form_fail(f, NGX_HTTP_IMGBILL_REQ_BAD_VALUE,
                                          &part->name, "a JSON object",
                                          NULL);
    }

    *value = v;

    return NGX_OK;
}


/* a field too long to keep: counted, and named in the tree by its index */

static ngx_int_t
ngx_http_imgbill_form_long(ngx_http_imgbill_form_t *f, size_t len,
    json_t **value)
{
    u_char                   *d;
    u_char                    ref[1 + NGX_INT_T_LEN];
    ngx_uint_t                i;
    ngx_http_imgbill_long_t  *longs;

    if (f->nlongs == f->nalloc) {
        f->nalloc = f->nalloc ? 2 * f->nalloc : 4;

        longs = ngx_alloc(f->nalloc * sizeof(ngx_http_imgbill_long_t),
                          f->log);
        if (longs == NULL) {
            return NGX_ERROR;
        }

        if (f->longs) {
            ngx_memcpy(longs, f->longs,
                       f->nlongs * sizeof(ngx_http_imgbill_long_t));
            ngx_free(f->longs);
        }

        f->longs = longs;
    }

    ngx_memzero(&f->longs[f->nlongs], sizeof(ngx_http_imgbill_long_t));
    f->longs[f->nlongs].len = len;

    /* "\0<index>", the digits written backwards from the end (the unit
       checks and the fuzzer have no ngx_sprintf) */

    d = ref + sizeof(ref);
    i = f->nlongs++;

    do {
        *--d = (u_char) ('0' + i % 10);
        i /= 10;
    } while (i);

    *--d = '\0';

    *value = json_stringn((char *) d, ref + sizeof(ref) - d);

    return *value ? NGX_OK : NGX_ERROR;
}


/* the first verdict stands; the name it is about is kept for the error */

static ngx_int_t
ngx_http_imgbill_form_fail(ngx_http_imgbill_form_t *f, ngx_int_t verdict,
    ngx_str_t *param, const char *expected, const char *code)
{
    size_t  n;

    if (f->verdict == NGX_HTTP_IMGBILL_REQ_OK) {
        f->verdict = verdict;
        f->expected = expected;
        f->code = code;

        if (param) {
            n = ngx_min(param->len, NGX_HTTP_IMGBILL_PART_NAME_MAX);
            ngx_memcpy(f->param, param->data, n);
            f->param[n] = '\0';
        }
    }

    return NGX_ERROR;
}
