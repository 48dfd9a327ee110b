/*
 * Direct checks of the event-stream reader (ngx_http_imgbill_sse.c) over
 * the reply scanner, built against the nginx tree that scripts/build
 * configured.  Prints TAP.
 *
 * Each stream is read whole and then byte by byte (each byte an exact-size
 * heap copy); both readings must give the events listed, each as its type,
 * its findings and, where "cost" would go, the bytes that follow.
 */

#include "ngx_http_imgbill_sse.h"

#include "ngx_http_imgbill_api.h"


/* the APIs' reply dialects, by the index the cases give them */
extern ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api;

#define DIALECT(d)  ((d) ? ngx_http_imgbill_gemini_api.dialect               \
                         : ngx_http_imgbill_openai_api.dialect)

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define NONE  NGX_HTTP_IMGBILL_EVENT_NONE
#define JSON  NGX_HTTP_IMGBILL_EVENT_JSON
#define DONE  NGX_HTTP_IMGBILL_EVENT_DONE

#define OPENAI  0
#define GEMINI  1

#define MAX_EVENTS  8

/* base64 long enough for the scanner's many-bytes-a-step skip */
#define B64_32   "QUJDQUJDQUJDQUJDQUJDQUJDQUJDQUJD"
#define B64_256  B64_32 B64_32 B64_32 B64_32 B64_32 B64_32 B64_32 B64_32


typedef struct {
    ngx_uint_t    type;
    int           image;
    int           usage;
    int           prompt;
    int           completion;
    int           no_choices;
    const char   *after_usage;   /* what follows usage_at; NULL: none */
    const char   *after_image;   /* what follows the byte that showed the
                                    event's first image; NULL: none */
} expect_t;


typedef struct {
    const char   *name;
    ngx_uint_t    dialect;
    const char   *stream;
    int           n;             /* events, the one finish() ends counted */
    expect_t      ev[MAX_EVENTS];
} case_t;


static case_t  cases[] = {

    { "OpenAI: chunks, a usage chunk, [DONE]", OPENAI,
      "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},"
      "\"finish_reason\":null}],\"usage\":null}\n\n"
      "data: {\"choices\":[{\"delta\":{\"images\":[{\"image_url\":"
      "{\"url\":\"data:image/png;base64,AAAA\"}}]}}]}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":560,"
      "\"completion_tokens\":1120}}\n\n"
      "data: [DONE]\n\n",
      4,
      { { JSON, 0, 0, -1, -1, 0, NULL },
        { JSON, 1, 0, -1, -1, 0, NULL, "\"image_url\":{\"url\":\"data" },
        { JSON, 0, 1, 560, 1120, 1, "\"prompt_tokens\":560," },
        { DONE, 0, 0, 0, 0, 0, NULL } } },

    { "CRLF and CR line ends, comments, other fields", OPENAI,
      ": keep-alive\r\n\r\n"
      "event: chunk\r\nid: 7\r\ndata:{\"choices\":[],\"usage\":"
      "{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n"
      "data: [DONE]\r\r",
      3,
      { { NONE, 0, 0, 0, 0, 0, NULL },
        { JSON, 0, 1, 1, 2, 1, "\"prompt_tokens\":1," },
        { DONE, 0, 0, 0, 0, 0, NULL } } },

    { "data lines of one event are one document", OPENAI,
      "data: {\"choices\":[],\n"
      "data: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
      1,
      { { JSON, 0, 1, 3, 4, 1, "\"prompt_tokens\":3," } } },

    { "\"[DONE]\" only alone; \"data\" without a colon", OPENAI,
      "data: [DONE] \n\ndata: [DO\ndata: NE]\n\ndata\n\n",
      3,
      { { JSON, 0, 0, -1, -1, 0, NULL },
        { JSON, 0, 0, -1, -1, 0, NULL },
        { JSON, 0, 0, -1, -1, 0, NULL } } },

    { "an event the stream ends without its blank line", OPENAI,
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
      "\"completion_tokens\":6}}",
      1,
      { { JSON, 0, 1, 5, 6, 1, "\"prompt_tokens\":5," } } },

    { "Gemini: thoughts are output, no cost anywhere", GEMINI,
      "data: {\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":"
      "{\"mimeType\":\"image/png\",\"data\":\"AAAA\"}}]}}],"
      "\"usageMetadata\":{\"promptTokenCount\":560,"
      "\"candidatesTokenCount\":1000,\"thoughtsTokenCount\":120}}\r\n\r\n",
      1,
      { { JSON, 1, 1, 560, 1120, 0, NULL, "png\",\"data\"" } } },

    { "an image over two data lines, shown on the second", OPENAI,
      "data: {\"choices\":[{\"delta\":{\"content\":\"see\"\n"
      "data: ,\"images\":[\"data:image/png;base64,AAAA\"]}}]}\n\n",
      1,
      { { JSON, 1, 0, -1, -1, 0, NULL, "data:image/png;base64" } } },

    { "a long image, then its usage, in one data line", OPENAI,
      "data: {\"choices\":[{\"delta\":{\"images\":[{\"image_url\":"
      "{\"url\":\"data:image/png;base64," B64_256 B64_256 "\"}}]},"
      "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":7,"
      "\"completion_tokens\":8}}\n\n"
      "data: [DONE]\n\n",
      2,
      { { JSON, 1, 1, 7, 8, 0, "\"prompt_tokens\":7,",
          "\"image_url\":{\"url\":\"data" },
        { DONE, 0, 0, 0, 0, 0, NULL } } },

    { "a long image's line ended by CRLF, its usage on the next", OPENAI,
      "data: {\"choices\":[{\"delta\":{\"images\":[{\"image_url\":"
      "{\"url\":\"data:image/png;base64," B64_256 "\"}}]}}],\r\n"
      "data: \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":10}}"
      "\r\n\r\n",
      1,
      { { JSON, 1, 1, 9, 10, 0, "\"prompt_tokens\":9,",
          "\"image_url\":{\"url\":\"data" } } },

    { "a CR inside a long string ends its line", OPENAI,
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,"
      "\"completion_tokens\":2},\"note\":\"" B64_256 "\r"
      "data: \"}\n\n",
      1,
      /* the string would close on the next line, were the CR in it: the
         counts read before it stand, the usage does not */
      { { JSON, 0, 0, 1, 2, 1, NULL } } }
};


static int  tests, failed;


static void
ok(int pass, const char *name, const char *what)
{
    tests++;

    if (!pass) {
        failed++;
    }

    printf("%sok %d - %s: %s\n", pass ? "" : "not ", tests, name, what);
}


/* the stream in pieces of "step" bytes (0: whole); the events' checks */

static void
check(case_t *c, size_t step)
{
    u_char                  *buf, *p, *end, *piece;
    size_t                   len, start, n;
    ngx_int_t                rc;
    int                      i, pass;
    size_t                   image;
    expect_t                *e;
    char                     what[64];
    ngx_http_imgbill_sse_t   sse;

    len = strlen(c->stream);
    buf = (u_char *) c->stream;
    start = 0;
    image = 0;
    i = 0;
    pass = 1;

    ngx_http_imgbill_sse_init(&sse, DIALECT(c->dialect));

    for (p = buf; p < buf + len; /* void */) {
        n = step ? step : len;
        n = (n > (size_t) (buf + len - p)) ? (size_t) (buf + len - p) : n;

        piece = malloc(n);
        memcpy(piece, p, n);

        for (end = piece; end < piece + n; /* void */) {
            rc = ngx_http_imgbill_sse_feed(&sse, end, piece + n, &end);

            if (sse.image != NULL) {
                /* more than once an event would be a second mark */
                pass = pass && image == 0;
                image = (p - buf) + (sse.image - piece);
            }

            if (rc != NGX_OK) {
                continue;
            }

            e = &c->ev[i];

            if (i < c->n
                && (e->after_image
                    ? image == 0
                      || strncmp((char *) buf + image, e->after_image,
                                 strlen(e->after_image))
                    : image != 0))
            {
                pass = 0;
            }

            image = 0;

            if (i >= c->n || sse.type != e->type) {
                pass = 0;

            } else if (e->type == JSON
                       && (sse.res.image != (unsigned) e->image
                           || sse.res.usage != (unsigned) e->usage
                           || sse.res.prompt_tokens != e->prompt
                           || sse.res.completion_tokens != e->completion
                           || sse.res.no_choices != (unsigned) e->no_choices))
            {
                pass = 0;

            } else if (e->after_usage
                       ? (sse.usage_at == 0
                          || strncmp((char *) buf + start + sse.usage_at,
                                     e->after_usage, strlen(e->after_usage)))
                       : sse.usage_at != 0)
            {
                pass = 0;
            }

            i++;
            start = (p - buf) + (end - piece);
        }

        free(piece);
        p += n;
    }

    if (ngx_http_imgbill_sse_finish(&sse) == NGX_OK) {
        e = &c->ev[i];

        if (i >= c->n || sse.type != e->type
            || (e->after_usage
                && (sse.usage_at == 0
                    || strncmp((char *) buf + start + sse.usage_at,
                               e->after_usage, strlen(e->after_usage)))))
        {
            pass = 0;
        }

        i++;
    }

    snprintf(what, sizeof(what), "%s, %d events as listed",
             step == 0 ? "whole" : step == 1 ? "byte by byte"
                                             : "in pieces of 61 bytes",
             c->n);

    ok(pass && i == c->n, c->name, what);
}


int
main(void)
{
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check(&cases[i], 0);
        check(&cases[i], 1);
        check(&cases[i], 61);
    }

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
