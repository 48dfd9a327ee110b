
/*
 * libFuzzer target: the multipart/form-data reader
 * (ngx_http_imgbill_multipart.c).  Built by t/fuzz/run like the others.
 *
 * The first byte picks the mode and the seed of the cuts.
 *
 * Even: the rest is a boundary's length (a byte, 1 to 70), the boundary
 * and a body, read twice: whole, and cut into pieces where a generator
 * seeded with the input says.  Both readings must tell the same parts
 * with the same bytes and the same verdict, because a body comes cut
 * anywhere; every part's bytes must add up to its size, and nothing may
 * come outside a part.
 *
 * Odd: the rest describes parts (a byte: bit 0 a file, the rest a name's
 * length; the name; two bytes of length, little endian; the bytes), which
 * are written as a browser writes them, with a boundary that none of the
 * bytes holds, and read back cut into pieces: every part must come back
 * as written, and the verdict must be OK.
 *
 * Even inputs are also read by the form reader (ngx_http_imgbill_form.c),
 * with an image limit the first byte picks: whole and cut, it must reach
 * the same verdict and, when OK, the same tree (compared as sorted JSON)
 * and the same long fields; every member of the tree is a short string, a
 * long one's stand-in, an array of file sizes within the limit, or, for
 * the field "j" the reader is told is JSON, an object.
 *
 * -DIMGBILL_FUZZ_SELFTEST builds a deliberately broken variant (a part
 * one byte longer than it is), which t/95-fuzz.t expects to fail on the
 * seed corpus.
 */


#include "ngx_http_imgbill_multipart.h"
#include "ngx_http_imgbill_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define IMGBILL_FUZZ_PARTS  (NGX_HTTP_IMGBILL_PARTS_MAX + 1)


typedef struct {
    u_char                        name[NGX_HTTP_IMGBILL_PART_NAME_MAX];
    size_t                        name_len;
    int                           file;
    uint64_t                      size;
    uint64_t                      seen;       /* DATA bytes told */
    uint64_t                      hash;       /* FNV-1a of its bytes */
} imgbill_fuzz_part_t;


typedef struct {
    imgbill_fuzz_part_t           part[IMGBILL_FUZZ_PARTS];
    ngx_uint_t                    n;
    int                           open;
    ngx_http_imgbill_mp_error_e   verdict;
} imgbill_fuzz_reading_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void imgbill_fuzz_read(ngx_str_t *boundary, u_char *body, size_t len,
    unsigned seed, imgbill_fuzz_reading_t *rd);
static ngx_int_t imgbill_fuzz_handler(void *data,
    ngx_http_imgbill_part_t *part, ngx_http_imgbill_mp_event_e event,
    u_char *p, size_t len);
static void imgbill_fuzz_compare(imgbill_fuzz_reading_t *a,
    imgbill_fuzz_reading_t *b);
static void imgbill_fuzz_generated(const uint8_t *data, size_t size,
    unsigned seed);
static void imgbill_fuzz_forms(ngx_str_t *boundary, u_char *body,
    size_t len, unsigned seed);
/* a field read as JSON, a name short enough for the fuzzer to find */
static const char  *imgbill_fuzz_json[] = { "j", NULL };


static char *imgbill_fuzz_form(ngx_str_t *boundary, u_char *body,
    size_t len, unsigned seed, size_t limit, ngx_int_t *verdict);
static uint64_t imgbill_fuzz_hash(uint64_t h, u_char *p, size_t len);
static void imgbill_fuzz_fail(const char *what, ngx_uint_t i);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                   blen;
    ngx_str_t                boundary;
    imgbill_fuzz_reading_t  *whole, *cut;

    if (size < 2) {
        return 0;
    }

    if (data[0] & 1) {
        imgbill_fuzz_generated(data + 1, size - 1, data[0] >> 1);
        return 0;
    }

    blen = data[1] % NGX_HTTP_IMGBILL_BOUNDARY_MAX + 1;

    if (size < 2 + blen) {
        return 0;
    }

    boundary.data = malloc(blen);
    boundary.len = blen;
    memcpy(boundary.data, data + 2, blen);

    whole = calloc(1, sizeof(imgbill_fuzz_reading_t));
    cut = calloc(1, sizeof(imgbill_fuzz_reading_t));

    imgbill_fuzz_read(&boundary, (u_char *) data + 2 + blen,
                      size - 2 - blen, 0, whole);
    imgbill_fuzz_read(&boundary, (u_char *) data + 2 + blen,
                      size - 2 - blen, data[0] | 1, cut);

    imgbill_fuzz_compare(whole, cut);

    imgbill_fuzz_forms(&boundary, (u_char *) data + 2 + blen,
                       size - 2 - blen, data[0] | 1);

    free(whole);
    free(cut);
    free(boundary.data);

    return 0;
}


/* the body fed whole (seed 0), or in pieces of 1 to 64 bytes, each an
   exact-size heap copy */

static void
imgbill_fuzz_read(ngx_str_t *boundary, u_char *body, size_t len,
    unsigned seed, imgbill_fuzz_reading_t *rd)
{
    u_char                        *copy;
    size_t                         at, n;
    ngx_http_imgbill_multipart_t  *mp;

    mp = ngx_http_imgbill_multipart_create(boundary, imgbill_fuzz_handler,
                                           rd, NULL);
    if (mp == NULL) {
        imgbill_fuzz_fail("create failed", 0);
    }

    for (at = 0; at < len; at += n) {
        if (seed == 0) {
            n = len;

        } else {
            seed = seed * 1103515245 + 12345;
            n = (seed >> 16) % 64 + 1;
            n = (n < len - at) ? n : len - at;
        }

        copy = malloc(n);
        memcpy(copy, body + at, n);
        ngx_http_imgbill_multipart_feed(mp, copy, copy + n);
        free(copy);
    }

    rd->verdict = ngx_http_imgbill_multipart_end(mp);

    if (rd->verdict == NGX_HTTP_IMGBILL_MP_OK && rd->open) {
        imgbill_fuzz_fail("OK with a part not ended", rd->n);
    }

    ngx_http_imgbill_multipart_free(mp);
}


static ngx_int_t
imgbill_fuzz_handler(void *data, ngx_http_imgbill_part_t *part,
    ngx_http_imgbill_mp_event_e event, u_char *p, size_t len)
{
    imgbill_fuzz_reading_t *rd = data;

    imgbill_fuzz_part_t  *fp;

    if (rd->n == IMGBILL_FUZZ_PARTS) {
        imgbill_fuzz_fail("more parts than the most", rd->n);
    }

    fp = &rd->part[rd->n];

    switch (event) {

    case NGX_HTTP_IMGBILL_MP_BEGIN:
        if (rd->open) {
            imgbill_fuzz_fail("a part begins inside another", rd->n);
        }

        if (part->name.len == 0
            || part->name.len > NGX_HTTP_IMGBILL_PART_NAME_MAX
            || part->index != rd->n || part->size != 0)
        {
            imgbill_fuzz_fail("a part begins badly", rd->n);
        }

        rd->open = 1;
        fp->name_len = part->name.len;
        memcpy(fp->name, part->name.data, part->name.len);
        fp->file = part->file;
        fp->hash = 14695981039346656037ULL;
        break;

    case NGX_HTTP_IMGBILL_MP_DATA:
        if (!rd->open || len == 0) {
            imgbill_fuzz_fail("bytes outside a part, or none", rd->n);
        }

        fp->seen += len;
        fp->hash = imgbill_fuzz_hash(fp->hash, p, len);

        if ((uint64_t) part->size != fp->seen) {
            imgbill_fuzz_fail("a part's size is not its bytes", rd->n);
        }

        break;

    default:
        if (!rd->open) {
            imgbill_fuzz_fail("a part ends that did not begin", rd->n);
        }

        rd->open = 0;
        fp->size = part->size;

#ifdef IMGBILL_FUZZ_SELFTEST
        fp->size++;
#endif

        if (fp->size != fp->seen) {
            imgbill_fuzz_fail("a part's size is not its bytes", rd->n);
        }

        rd->n++;
    }

    return NGX_OK;
}


static void
imgbill_fuzz_compare(imgbill_fuzz_reading_t *a, imgbill_fuzz_reading_t *b)
{
    ngx_uint_t  i;

    if (a->verdict != b->verdict) {
        imgbill_fuzz_fail("the verdicts differ", 0);
    }

    if (a->n != b->n) {
        imgbill_fuzz_fail("the parts differ in number", a->n);
    }

    for (i = 0; i < a->n; i++) {
        if (a->part[i].name_len != b->part[i].name_len
            || memcmp(a->part[i].name, b->part[i].name, a->part[i].name_len)
            || a->part[i].file != b->part[i].file
            || a->part[i].size != b->part[i].size
            || a->part[i].hash != b->part[i].hash)
        {
            imgbill_fuzz_fail("a part differs", i);
        }
    }
}


/* parts written as a browser writes them, read back */

static void
imgbill_fuzz_generated(const uint8_t *data, size_t size, unsigned seed)
{
    u_char                  *body, *p, *q, *d;
    size_t                   at, nlen, blen, room, dlen;
    ngx_str_t                boundary;
    ngx_uint_t               i, n;
    imgbill_fuzz_reading_t  *want, *got;

    static u_char  b[] = "----imgbillFuzzBoundaryZq8";

    boundary.data = b;
    boundary.len = sizeof(b) - 1;

    want = calloc(1, sizeof(imgbill_fuzz_reading_t));
    got = calloc(1, sizeof(imgbill_fuzz_reading_t));

    room = 2 * size + 256 * (NGX_HTTP_IMGBILL_PARTS_MAX + 1);
    body = malloc(room);
    p = body;
    n = 0;

    for (at = 0; at < size && n < NGX_HTTP_IMGBILL_PARTS_MAX; n++) {
        want->part[n].file = data[at] & 1;
        nlen = (data[at] >> 1) % 16 + 1;
        at++;

        if (at + nlen + 2 > size) {
            break;
        }

        /* a name as a browser escapes it: no quote, CR or LF in it */

        for (i = 0; i < nlen; i++) {
            want->part[n].name[i] = (data[at + i] == '"'
                                     || data[at + i] == '\\'
                                     || data[at + i] == '\r'
                                     || data[at + i] == '\n')
                                    ? 'x' : data[at + i];
        }

        want->part[n].name_len = nlen;
        at += nlen;

        blen = data[at] | (data[at + 1] << 8);
        at += 2;
        blen = (blen < size - at) ? blen : size - at;

        p += sprintf((char *) p, "--%s\r\nContent-Disposition: form-data; "
                     "name=\"", b);
        p = (u_char *) memcpy(p, want->part[n].name, nlen) + nlen;
        p += sprintf((char *) p, "\"%s\r\n%s\r\n",
                     want->part[n].file ? "; filename=\"f.png\"" : "",
                     want->part[n].file ? "Content-Type: image/png\r\n" : "");

        d = p;
        p = (u_char *) memcpy(p, data + at, blen) + blen;
        at += blen;

        /* the boundary must not be in what it separates: it is not */

        for (q = d; q + 4 + boundary.len <= p; q++) {
            if (q[0] == '\r' && q[1] == '\n' && q[2] == '-' && q[3] == '-'
                && memcmp(q + 4, b, boundary.len) == 0)
            {
                q[4] = 'X';
            }
        }

        want->part[n].size = p - d;
        want->part[n].seen = p - d;
        want->part[n].hash = imgbill_fuzz_hash(14695981039346656037ULL, d,
                                               p - d);

        p = (u_char *) memcpy(p, "\r\n", 2) + 2;
    }

    want->n = n;

    dlen = sprintf((char *) p, "--%s--\r\n", b);
    p += dlen;

    imgbill_fuzz_read(&boundary, body, p - body, seed | 1, got);

    if (got->verdict != NGX_HTTP_IMGBILL_MP_OK) {
        imgbill_fuzz_fail("a body written as browsers do is refused",
                          got->verdict);
    }

    imgbill_fuzz_compare(want, got);

    free(body);
    free(want);
    free(got);
}


/* the form reader, whole against cut */

static void
imgbill_fuzz_forms(ngx_str_t *boundary, u_char *body, size_t len,
    unsigned seed)
{
    char       *whole, *cut;
    size_t      limit;
    ngx_int_t   v1, v2;

    limit = (seed >> 1) * 37;

    whole = imgbill_fuzz_form(boundary, body, len, 0, limit, &v1);
    cut = imgbill_fuzz_form(boundary, body, len, seed, limit, &v2);

    if (v1 != v2) {
        imgbill_fuzz_fail("the form's verdict depends on the cuts",
                          (ngx_uint_t) v1);
    }

    if ((whole == NULL) != (cut == NULL)
        || (whole && strcmp(whole, cut) != 0))
    {
        imgbill_fuzz_fail("the form's tree depends on the cuts", 0);
    }

    free(whole);
    free(cut);
}


/* the tree of a form read so, as sorted JSON with its long fields'
   lengths, or NULL if it was refused */

static char *
imgbill_fuzz_form(ngx_str_t *boundary, u_char *body, size_t len,
    unsigned seed, size_t limit, ngx_int_t *verdict)
{
    u_char                      *copy;
    char                        *dump, *out;
    size_t                       at, n, i, k;
    json_t                      *v, *e;
    const char                  *key;
    ngx_http_imgbill_form_t     *f;
    ngx_http_imgbill_request_t   req;

    f = ngx_http_imgbill_form_create(boundary, limit, imgbill_fuzz_json,
                                     NULL);
    if (f == NULL) {
        imgbill_fuzz_fail("form create failed", 0);
    }

    for (at = 0; at < len; at += n) {
        n = len - at;

        if (seed) {
            seed = seed * 1103515245 + 12345;
            n = ngx_min((seed >> 16) % 64 + 1, n);
        }

        copy = malloc(n);
        memcpy(copy, body + at, n);
        ngx_http_imgbill_form_feed(f, copy, copy + n);
        free(copy);
    }

    *verdict = ngx_http_imgbill_form_parse(f, &req);
    out = NULL;

    if (*verdict == NGX_HTTP_IMGBILL_REQ_OK) {
        if (!json_is_object(req.root) || !req.form) {
            imgbill_fuzz_fail("an OK form without its tree", 0);
        }

        json_object_foreach(req.root, key, v) {
            if (strcmp(key, "j") == 0 && json_is_object(v)) {
                continue;
            }

            if (json_is_string(v)) {
                if (json_string_length(v) > NGX_HTTP_IMGBILL_SHORT) {
                    imgbill_fuzz_fail("a long field kept", 0);
                }

                continue;
            }

            if (!json_is_array(v)) {
                imgbill_fuzz_fail("a member neither a field nor files", 0);
            }

            json_array_foreach(v, i, e) {
                if (!json_is_integer(e)
                    || (size_t) json_integer_value(e) > limit)
                {
                    imgbill_fuzz_fail("a file's size over the limit", i);
                }
            }
        }

        dump = json_dumps(req.root, JSON_SORT_KEYS|JSON_COMPACT);
        if (dump == NULL) {
            imgbill_fuzz_fail("the tree does not print", 0);
        }

        n = strlen(dump) + 1 + req.nlongs * (NGX_SIZE_T_LEN + 1);
        out = malloc(n);
        k = snprintf(out, n, "%s", dump);

        for (i = 0; i < req.nlongs; i++) {
            k += snprintf(out + k, n - k, " %zu", req.longs[i].len);
        }

        free(dump);
    }

    json_decref(req.root);
    ngx_http_imgbill_form_free(f);

    return out;
}


static uint64_t
imgbill_fuzz_hash(uint64_t h, u_char *p, size_t len)
{
    while (len--) {
        h = (h ^ *p++) * 1099511628211ULL;
    }

    return h;
}


static void
imgbill_fuzz_fail(const char *what, ngx_uint_t i)
{
    fprintf(stderr, "multipart_fuzz: invariant failed: %s (%u)\n", what,
            (unsigned) i);
    abort();
}
