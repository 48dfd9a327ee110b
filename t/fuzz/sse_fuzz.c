
/*
 * libFuzzer target: the event-stream reader (ngx_http_imgbill_sse.c) over
 * the reply scanner.  Built by t/fuzz/run like the other targets.
 *
 * The first byte picks the dialect (the Images API's too: its finished
 * events, "done"), the second the seed of the cuts; the
 * rest is a stream.  It is read twice: whole, and cut into pieces where a
 * generator seeded with the input says.  Both readings must find the same
 * events at the same offsets with the same findings, because an upstream's
 * stream comes cut anywhere.  Every event's bytes must add up to the
 * stream, and where an event says its usage object opens (usage_at, where
 * the filter writes "cost"), the byte before must be that '{'; so must
 * the byte before the reader's usage pointer, which the filter holds a
 * long event from.
 *
 * -DIMGBILL_FUZZ_SELFTEST builds a deliberately broken variant (usage_at
 * one byte late), which t/95-fuzz.t expects to fail on the seed corpus.
 */


#include "ngx_http_imgbill_sse.h"
#include "ngx_http_imgbill_api.h"


/* the APIs' reply dialects: 0 OpenAI's, 1 Gemini's, 2 the Images API's */
extern ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_images_api;

#define DIALECT(d)  ((d) == 2 ? ngx_http_imgbill_images_api.dialect           \
                     : (d) ? ngx_http_imgbill_gemini_api.dialect              \
                     : ngx_http_imgbill_openai_api.dialect)

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define IMGBILL_FUZZ_EVENTS  256


typedef struct {
    size_t                    at;        /* where the event ends */
    ngx_uint_t                type;
    ngx_http_imgbill_scan_t   res;
    size_t                    usage_at;
} imgbill_fuzz_event_t;


typedef struct {
    imgbill_fuzz_event_t      ev[IMGBILL_FUZZ_EVENTS];
    ngx_uint_t                n;
    ngx_uint_t                finished;  /* one left without a blank line */
} imgbill_fuzz_reading_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void imgbill_fuzz_read(u_char *buf, size_t size, ngx_uint_t dialect,
    unsigned seed, imgbill_fuzz_reading_t *rd);
static void imgbill_fuzz_record(ngx_http_imgbill_sse_t *sse, size_t at,
    imgbill_fuzz_reading_t *rd);
static void imgbill_fuzz_fail(const char *what, ngx_uint_t i);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                  *buf;
    size_t                   start, at;
    ngx_uint_t               i, dialect;
    imgbill_fuzz_event_t    *a, *b;
    imgbill_fuzz_reading_t  *whole, *cut;

    if (size < 2) {
        return 0;
    }

    dialect = ((data[0] & 3) == 2) ? 2 : data[0] & 1;

    /* an exact-size copy: a read past the stream is an ASan error */

    buf = malloc(size - 2 ? size - 2 : 1);
    if (buf == NULL) {
        return 0;
    }

    memcpy(buf, data + 2, size - 2);

    whole = calloc(1, sizeof(imgbill_fuzz_reading_t));
    cut = calloc(1, sizeof(imgbill_fuzz_reading_t));
    if (whole == NULL || cut == NULL) {
        abort();
    }

    imgbill_fuzz_read(buf, size - 2, dialect, 0, whole);
    imgbill_fuzz_read(buf, size - 2, dialect, data[1] | 1, cut);

    if (whole->n != cut->n || whole->finished != cut->finished) {
        imgbill_fuzz_fail("event count differs when cut", whole->n);
    }

    start = 0;

    for (i = 0; i < whole->n; i++) {
        a = &whole->ev[i];
        b = &cut->ev[i];

        if (a->at != b->at || a->type != b->type
            || a->usage_at != b->usage_at)
        {
            imgbill_fuzz_fail("event differs when cut", i);
        }

        if (a->type == NGX_HTTP_IMGBILL_EVENT_JSON
            && (a->res.json != b->res.json || a->res.image != b->res.image
                || a->res.usage != b->res.usage
                || a->res.usage_key != b->res.usage_key
                || a->res.error != b->res.error
                || a->res.finished != b->res.finished
                || a->res.no_choices != b->res.no_choices
                || a->res.done != b->res.done
                || a->res.prompt_tokens != b->res.prompt_tokens
                || a->res.completion_tokens != b->res.completion_tokens))
        {
            imgbill_fuzz_fail("findings differ when cut", i);
        }

        if (a->at < start || a->at > size - 2) {
            imgbill_fuzz_fail("event outside the stream", i);
        }

        if (a->usage_at) {
            at = start + a->usage_at;

#ifdef IMGBILL_FUZZ_SELFTEST
            at++;
#endif

            if (at > a->at || at == 0 || buf[at - 1] != '{') {
                imgbill_fuzz_fail("usage_at is not after a '{'", i);
            }

            if (!a->res.usage_key || a->type != NGX_HTTP_IMGBILL_EVENT_JSON)
            {
                imgbill_fuzz_fail("usage_at without a usage", i);
            }
        }

        start = a->at;
    }

    free(whole);
    free(cut);
    free(buf);

    return 0;
}


static void
imgbill_fuzz_read(u_char *buf, size_t size, ngx_uint_t dialect,
    unsigned seed, imgbill_fuzz_reading_t *rd)
{
    u_char                  *p, *last, *end;
    size_t                   n;
    ngx_int_t                rc;
    ngx_http_imgbill_sse_t   sse;

    ngx_http_imgbill_sse_init(&sse, DIALECT(dialect));

    p = buf;

    while (p < buf + size) {
        if (seed) {
            seed = seed * 1103515245 + 12345;
            n = 1 + (seed >> 16) % 17;
            last = p + ngx_min(n, (size_t) (buf + size - p));

        } else {
            last = buf + size;
        }

        while (p < last) {
            rc = ngx_http_imgbill_sse_feed(&sse, p, last, &end);

            if (end <= p || end > last) {
                imgbill_fuzz_fail("feed did not move", rd->n);
            }

            if (sse.usage
                && (sse.usage <= p || sse.usage > end || sse.usage[-1] != '{'))
            {
                imgbill_fuzz_fail("the usage pointer is not after a '{'",
                                  rd->n);
            }

            p = end;

            if (rc == NGX_OK) {
                imgbill_fuzz_record(&sse, p - buf, rd);
            }
        }
    }

    if (ngx_http_imgbill_sse_finish(&sse) == NGX_OK) {
        rd->finished = 1;
        imgbill_fuzz_record(&sse, size, rd);
    }
}


static void
imgbill_fuzz_record(ngx_http_imgbill_sse_t *sse, size_t at,
    imgbill_fuzz_reading_t *rd)
{
    imgbill_fuzz_event_t  *ev;

    if (rd->n == IMGBILL_FUZZ_EVENTS) {
        return;
    }

    ev = &rd->ev[rd->n++];

    ev->at = at;
    ev->type = sse->type;
    ev->res = sse->res;
    ev->usage_at = sse->usage_at;
}


static void
imgbill_fuzz_fail(const char *what, ngx_uint_t i)
{
    fprintf(stderr, "invariant failed: %s (event %lu)\n", what,
            (unsigned long) i);
    abort();
}
