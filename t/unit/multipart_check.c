/*
 * Direct checks of the multipart/form-data reader
 * (ngx_http_imgbill_multipart.c), built against the nginx tree that
 * scripts/build configured.  Prints TAP.
 *
 * Each body is read whole, byte by byte and in pieces of 7 (each piece an
 * exact-size heap copy, so that a read past it is AddressSanitizer's to
 * see); every reading must give the parts listed, rendered as
 * "name,filename,type,size:bytes" (filename and type "-" when absent, the
 * bytes only while short) and then the verdict.
 */

#include "ngx_http_imgbill_multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct {
    char          out[4096];
    size_t        len;
    char          bytes[64];
    size_t        nbytes;
    int           began;
    int           stop_at;      /* stop in the part of this index; -1 */
} render_t;


static int  tests;
static int  failed;


static void
ok(int cond, const char *name, const char *got, const char *want)
{
    tests++;

    if (cond) {
        printf("ok %d - %s\n", tests, name);
        return;
    }

    failed++;
    printf("not ok %d - %s\n", tests, name);

    if (got) {
        printf("#      got: %s\n#   wanted: %s\n", got, want);
    }
}


static void
put(render_t *r, const char *s, size_t n)
{
    n = (n < sizeof(r->out) - 1 - r->len) ? n : sizeof(r->out) - 1 - r->len;
    memcpy(r->out + r->len, s, n);
    r->len += n;
    r->out[r->len] = '\0';
}


static ngx_int_t
handler(void *data, ngx_http_imgbill_part_t *part,
    ngx_http_imgbill_mp_event_e event, u_char *p, size_t len)
{
    render_t  *r = data;
    char       buf[512];
    size_t     n;

    switch (event) {

    case NGX_HTTP_IMGBILL_MP_BEGIN:
        if (r->began) {
            put(r, "BEGIN-TWICE ", 12);
        }

        r->began = 1;
        r->nbytes = 0;

        if ((int) part->index == r->stop_at) {
            return NGX_ERROR;
        }

        break;

    case NGX_HTTP_IMGBILL_MP_DATA:
        if (!r->began || len == 0) {
            put(r, "DATA-OUTSIDE ", 13);
        }

        n = sizeof(r->bytes) - r->nbytes;
        n = (len < n) ? len : n;
        memcpy(r->bytes + r->nbytes, p, n);
        r->nbytes += n;
        break;

    default:
        if (!r->began) {
            put(r, "END-OUTSIDE ", 12);
        }

        r->began = 0;
        n = snprintf(buf, sizeof(buf), "%.*s,%.*s,%.*s,%lld:",
                     (int) part->name.len, part->name.data,
                     part->file ? (int) part->filename.len : 1,
                     part->file ? (char *) part->filename.data : "-",
                     part->type.len ? (int) part->type.len : 1,
                     part->type.len ? (char *) part->type.data : "-",
                     (long long) part->size);
        put(r, buf, n);

        if (part->size <= 16 && (size_t) part->size == r->nbytes) {
            put(r, r->bytes, r->nbytes);

        } else {
            put(r, "...", 3);
        }

        put(r, " ", 1);
    }

    return NGX_OK;
}


static const char *verdicts[] = {
    "OK", "NO_CLOSE", "BAD_DELIMITER", "BAD_HEADER", "NO_NAME", "TOO_MANY",
    "STOPPED"
};


/* the body read in pieces of `piece` bytes (0: whole) */

static void
read_body(const char *boundary, const char *body, size_t len, size_t piece,
    int stop_at, render_t *r)
{
    u_char                        *copy;
    size_t                         at, n;
    ngx_str_t                      b;
    ngx_http_imgbill_mp_error_e    e;
    ngx_http_imgbill_multipart_t  *mp;

    memset(r, 0, sizeof(render_t));
    r->stop_at = stop_at;

    b.data = (u_char *) boundary;
    b.len = strlen(boundary);

    mp = ngx_http_imgbill_multipart_create(&b, handler, r, NULL);
    if (mp == NULL) {
        put(r, "CREATE-FAILED", 13);
        return;
    }

    for (at = 0; at < len || (len == 0 && at == 0); at += n) {
        n = piece ? piece : len;
        n = (n < len - at) ? n : len - at;

        copy = malloc(n ? n : 1);
        memcpy(copy, body + at, n);
        ngx_http_imgbill_multipart_feed(mp, copy, copy + n);
        free(copy);

        if (n == 0) {
            break;
        }
    }

    e = ngx_http_imgbill_multipart_end(mp);
    put(r, verdicts[e], strlen(verdicts[e]));
    ngx_http_imgbill_multipart_free(mp);
}


typedef struct {
    const char   *name;
    const char   *boundary;
    const char   *body;
    const char   *want;
    int           stop_at;
} case_t;


#define CRLF "\r\n"

static case_t  cases[] = {

    { "two fields and a file, as the openai SDK sends them", "b0undary",
      "--b0undary" CRLF
      "Content-Disposition: form-data; name=\"model\"" CRLF CRLF
      "gpt-image-1" CRLF
      "--b0undary" CRLF
      "Content-Disposition: form-data; name=\"n\"" CRLF CRLF
      "2" CRLF
      "--b0undary" CRLF
      "Content-Disposition: form-data; name=\"image\"; filename=\"a.png\""
      CRLF "Content-Type: image/png" CRLF CRLF
      "\x89PNG\r\n\x1a\n" CRLF
      "--b0undary--" CRLF,
      "model,-,-,11:gpt-image-1 n,-,-,1:2 image,a.png,image/png,8:"
      "\x89PNG\r\n\x1a\n OK", -1 },

    { "a preamble, padding after a delimiter, an epilogue", "xyz",
      "ignored" CRLF "--xyz  \t" CRLF
      "content-disposition: FORM-DATA; NAME=a" CRLF CRLF
      "1" CRLF "--xyz--" CRLF "epilogue --xyz" CRLF,
      "a,-,-,1:1 OK", -1 },

    { "empty parts, a part of CRs and boundary prefixes", "B",
      "--B" CRLF "Content-Disposition: form-data; name=\"e\"" CRLF CRLF
      CRLF "--B" CRLF "Content-Disposition: form-data; name=\"f\"" CRLF CRLF
      "\r\r\n-\r\n--\r\n-B" CRLF "--B--",
      "e,-,-,0: f,-,-,12:\r\r\n-\r\n--\r\n-B OK", -1 },

    { "quoted names, filename*, an escaped filename, an empty one", "q",
      "--q" CRLF
      "Content-Disposition: form-data; name=\"image[]\"; filename=\"\""
      CRLF CRLF "x" CRLF
      "--q" CRLF
      "Content-Disposition: form-data; filename*=UTF-8''%E2%82%AC.png; "
      "name=\"ab\"" CRLF CRLF "y" CRLF
      "--q" CRLF
      "Content-Disposition: form-data; name=\"c\"; filename=\"d\\\"e\""
      CRLF CRLF "z" CRLF "--q--",
      "image[],,-,1:x ab,UTF-8''%E2%82%AC.png,-,1:y c,d\"e,-,1:z OK", -1 },

    /* the upstream may read these names otherwise: refused, not read */

    { "a quoted name with an escape", "q",
      "--q" CRLF "Content-Disposition: form-data; name=\"mo\\del\"" CRLF
      CRLF "1" CRLF "--q--",
      "NO_NAME", -1 },

    { "name* beside a name", "q",
      "--q" CRLF "Content-Disposition: form-data; name=\"zz\"; "
      "name*=UTF-8''model" CRLF CRLF "1" CRLF "--q--",
      "NO_NAME", -1 },

    { "name* alone", "q",
      "--q" CRLF "Content-Disposition: form-data; NAME*=UTF-8''model" CRLF
      CRLF "1" CRLF "--q--",
      "NO_NAME", -1 },

    { "no closing delimiter", "b",
      "--b" CRLF "Content-Disposition: form-data; name=\"a\"" CRLF CRLF
      "1" CRLF "--b" CRLF,
      "a,-,-,1:1 NO_CLOSE", -1 },

    { "the body ends inside a part", "b",
      "--b" CRLF "Content-Disposition: form-data; name=\"a\"" CRLF CRLF
      "12345" CRLF "--",
      "NO_CLOSE", -1 },

    { "no delimiter at all", "b", "just text", "NO_CLOSE", -1 },

    { "an empty body", "b", "", "NO_CLOSE", -1 },

    { "a part without a name", "b",
      "--b" CRLF "Content-Disposition: form-data; filename=\"x\"" CRLF CRLF
      "1" CRLF "--b--",
      "NO_NAME", -1 },

    { "a part with an empty name", "b",
      "--b" CRLF "Content-Disposition: form-data; name=\"\"" CRLF CRLF
      "1" CRLF "--b--",
      "NO_NAME", -1 },

    { "a part that is not form-data", "b",
      "--b" CRLF "Content-Disposition: attachment; name=\"a\"" CRLF CRLF
      "1" CRLF "--b--",
      "NO_NAME", -1 },

    { "a part without Content-Disposition", "b",
      "--b" CRLF "Content-Type: text/plain" CRLF CRLF "1" CRLF "--b--",
      "NO_NAME", -1 },

    { "a name given twice", "b",
      "--b" CRLF "Content-Disposition: form-data; name=a; name=b" CRLF CRLF
      "1" CRLF "--b--",
      "NO_NAME", -1 },

    { "two Content-Disposition lines", "b",
      "--b" CRLF "Content-Disposition: form-data; name=a" CRLF
      "Content-Disposition: form-data; name=b" CRLF CRLF "1" CRLF "--b--",
      "BAD_HEADER", -1 },

    { "a header line without a colon", "b",
      "--b" CRLF "Content-Disposition form-data" CRLF CRLF "1" CRLF "--b--",
      "BAD_HEADER", -1 },

    { "an unclosed quote", "b",
      "--b" CRLF "Content-Disposition: form-data; name=\"a" CRLF CRLF
      "1" CRLF "--b--",
      "BAD_HEADER", -1 },

    { "a bare LF in the headers", "b",
      "--b" CRLF "Content-Disposition: form-data; name=a\n" CRLF "1" CRLF
      "--b--",
      "BAD_HEADER", -1 },

    { "a delimiter followed by text", "b",
      "--b" CRLF "Content-Disposition: form-data; name=a" CRLF CRLF
      "1" CRLF "--bx" CRLF,
      "a,-,-,1:1 BAD_DELIMITER", -1 },

    { "the handler stops the reading", "b",
      "--b" CRLF "Content-Disposition: form-data; name=a" CRLF CRLF
      "1" CRLF "--b" CRLF "Content-Disposition: form-data; name=b" CRLF CRLF
      "2" CRLF "--b--",
      "a,-,-,1:1 STOPPED", 1 },
};


typedef struct {
    const char   *type;
    ngx_int_t     rc;
    const char   *boundary;
} type_case_t;


static type_case_t  types[] = {
    { "multipart/form-data; boundary=abc", NGX_OK, "abc" },
    { "Multipart/Form-Data;boundary=\"a b'c\"", NGX_OK, "a b'c" },
    { "multipart/form-data; charset=utf-8; BOUNDARY=----x.y", NGX_OK,
      "----x.y" },
    { "multipart/form-data ; boundary = z ", NGX_OK, "z" },
    { "application/json", NGX_DECLINED, NULL },
    { "multipart/mixed; boundary=abc", NGX_DECLINED, NULL },
    { "multipart/form-data", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=\"ends in space \"", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=a\\b", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=\"a\\b\"", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=\"a\\\\\"", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=A; boundary*=UTF-8''B", NGX_ERROR, NULL },
    { "multipart/form-data; Boundary*=UTF-8''B; boundary=A", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=a;boundary=b", NGX_ERROR, NULL },
    { "multipart/form-data; boundary=\"open", NGX_ERROR, NULL },
    { "multipart/form-data; boundary="
      "12345678901234567890123456789012345678901234567890123456789012345678901",
      NGX_ERROR, NULL },
};


int
main(void)
{
    char         name[256], many[8192], want[4096];
    size_t       i, len, pieces[] = { 0, 1, 7 };
    ngx_int_t    rc;
    ngx_str_t    b;
    render_t     r;
    ngx_uint_t   k, n;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = strlen(cases[i].body);

        for (k = 0; k < 3; k++) {
            read_body(cases[i].boundary, cases[i].body, len, pieces[k],
                      cases[i].stop_at, &r);
            snprintf(name, sizeof(name), "%s (pieces of %zu)", cases[i].name,
                     pieces[k] ? pieces[k] : len);
            ok(strcmp(r.out, cases[i].want) == 0, name, r.out,
               cases[i].want);
        }
    }

    /* NGX_HTTP_IMGBILL_PARTS_MAX parts are read, one more is refused */

    for (n = NGX_HTTP_IMGBILL_PARTS_MAX; n <= NGX_HTTP_IMGBILL_PARTS_MAX + 1;
         n++)
    {
        len = 0;
        want[0] = '\0';

        for (k = 0; k < n; k++) {
            len += snprintf(many + len, sizeof(many) - len,
                            "--b\r\nContent-Disposition: form-data; "
                            "name=p\r\n\r\n%c\r\n", (int) ('a' + k % 26));

            if (k < NGX_HTTP_IMGBILL_PARTS_MAX) {
                snprintf(want + strlen(want), sizeof(want) - strlen(want),
                         "p,-,-,1:%c ", (int) ('a' + k % 26));
            }
        }

        len += snprintf(many + len, sizeof(many) - len, "--b--");
        strcat(want, n > NGX_HTTP_IMGBILL_PARTS_MAX ? "TOO_MANY" : "OK");

        read_body("b", many, len, 5, -1, &r);
        snprintf(name, sizeof(name), "%u parts", (unsigned) n);
        ok(strcmp(r.out, want) == 0, name, r.out, want);
    }

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        b.len = 0;
        b.data = NULL;
        rc = ngx_http_imgbill_multipart_boundary((u_char *) types[i].type,
                                                 strlen(types[i].type), &b);
        snprintf(name, sizeof(name), "Content-Type: %s", types[i].type);
        ok(rc == types[i].rc
           && (types[i].boundary == NULL
               || (b.len == strlen(types[i].boundary)
                   && memcmp(b.data, types[i].boundary, b.len) == 0)),
           name, NULL, NULL);
    }

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
