/*
 * Direct checks of the reply scanner (ngx_http_imgbill_scan.c), built
 * against the nginx tree that scripts/build configured.  Prints TAP.
 *
 * Every case is scanned whole, then fed again cut in two at every point
 * and byte by byte, each piece an exact-size heap copy (a read past a
 * piece is an ASan error): the verdict must not depend on the cuts.
 */

#include "ngx_http_imgbill_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int  tests, failed;


/* the pieces [0, cut) and [cut, len), or (step) one byte at a time */

static void
scan_pieces(const char *json, size_t len, size_t cut, int step,
    ngx_http_imgbill_scan_t *res)
{
    u_char                      *piece;
    size_t                       from, to;
    ngx_http_imgbill_scanner_t   s;

    ngx_http_imgbill_scan_init(&s);

    for (from = 0; from < len || from == 0; from = to) {
        to = step ? from + 1 : (from < cut ? cut : len);
        to = (to > len) ? len : to;

        piece = malloc(to - from ? to - from : 1);
        memcpy(piece, json + from, to - from);
        (void) ngx_http_imgbill_scan_feed(&s, piece, piece + (to - from));
        free(piece);

        if (to == len) {
            break;
        }
    }

    ngx_http_imgbill_scan_finish(&s, res);
}


static int
same(ngx_http_imgbill_scan_t *a, ngx_http_imgbill_scan_t *b)
{
    return a->json == b->json && a->image == b->image
           && a->usage == b->usage && a->prompt_tokens == b->prompt_tokens
           && a->completion_tokens == b->completion_tokens;
}


static void
check(const char *name, const char *json, size_t len, int json_ok, int image,
    int usage, long pt, long ct)
{
    u_char                   *copy;
    size_t                    cut;
    ngx_http_imgbill_scan_t   res, split;
    int                       ok;
    char                      why[64];

    /* an exact-size heap copy, so a read past the end is caught by ASan
       or valgrind */
    copy = malloc(len ? len : 1);
    memcpy(copy, json, len);

    ngx_http_imgbill_scan(copy, copy + len, &res);

    ok = res.json == json_ok
         && (!json_ok || (res.image == image && res.usage == usage
                          && (!usage || (res.prompt_tokens == pt
                                         && res.completion_tokens == ct))));
    why[0] = '\0';

    for (cut = 0; ok && cut <= len; cut++) {
        scan_pieces(json, len, cut, 0, &split);

        if (!same(&res, &split)) {
            ok = 0;
            snprintf(why, sizeof(why), ", differs cut at %zu", cut);
        }
    }

    if (ok) {
        scan_pieces(json, len, 0, 1, &split);

        if (!same(&res, &split)) {
            ok = 0;
            snprintf(why, sizeof(why), ", differs byte by byte");
        }
    }

    tests++;

    if (!ok) {
        failed++;
        printf("not ok %d - %s (json %d image %d usage %d pt %ld ct %ld%s)\n",
               tests, name, res.json, res.image, res.usage,
               (long) res.prompt_tokens, (long) res.completion_tokens, why);

    } else {
        printf("ok %d - %s\n", tests, name);
    }

    free(copy);
}


#define CHECK(name, s, j, i, u, pt, ct)                                      \
    check(name, s, sizeof(s) - 1, j, i, u, pt, ct)

#define IMG  "\"choices\":[{\"message\":{\"images\":[{\"image_url\":{\"url\":\"x\"}}]}}]"


int
main(void)
{
    char    buf[512], name[128], str[256];
    size_t  n, k, len;
    int     c, bad;

    CHECK("seed reply", "{" IMG ",\"usage\":{\"prompt_tokens\":560,"
          "\"completion_tokens\":1120}}", 1, 1, 1, 560, 1120);
    CHECK("usage first", "{\"usage\":{\"completion_tokens\":2000,"
          "\"prompt_tokens\":1210}," IMG "}", 1, 1, 1, 1210, 2000);
    CHECK("decoy usage inside a string",
          "{\"choices\":[{\"message\":{\"content\":\"x \\\"usage\\\":"
          "{\\\"prompt_tokens\\\":999}\",\"images\":[\"i\"]}}],"
          "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
          1, 1, 1, 1, 2);
    CHECK("nested usage is not the usage",
          "{" IMG ",\"x\":{\"usage\":{\"prompt_tokens\":1,"
          "\"completion_tokens\":2}}}", 1, 1, 0, 0, 0);
    CHECK("two usages", "{" IMG ",\"usage\":{\"prompt_tokens\":1,"
          "\"completion_tokens\":2},\"usage\":{\"prompt_tokens\":3,"
          "\"completion_tokens\":4}}", 1, 1, 0, 0, 0);
    CHECK("count twice", "{" IMG ",\"usage\":{\"prompt_tokens\":1,"
          "\"prompt_tokens\":5,\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("count twice, the first null", "{" IMG ",\"usage\":{"
          "\"prompt_tokens\":null,\"prompt_tokens\":5,"
          "\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("count twice, the last false", "{" IMG ",\"usage\":{"
          "\"completion_tokens\":2,\"prompt_tokens\":5,"
          "\"completion_tokens\":false}}", 1, 1, 0, 0, 0);
    CHECK("negative count", "{" IMG ",\"usage\":{\"prompt_tokens\":-1,"
          "\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("fractional count", "{" IMG ",\"usage\":{\"prompt_tokens\":1.5,"
          "\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("exponent count", "{" IMG ",\"usage\":{\"prompt_tokens\":1e3,"
          "\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("string count", "{" IMG ",\"usage\":{\"prompt_tokens\":\"1\","
          "\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("huge count", "{" IMG ",\"usage\":{\"prompt_tokens\":"
          "99999999999999999999999,\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("largest count", "{" IMG ",\"usage\":{\"prompt_tokens\":"
          "2147483647,\"completion_tokens\":0}}", 1, 1, 1, 2147483647, 0);
    CHECK("count as object", "{" IMG ",\"usage\":{\"prompt_tokens\":{},"
          "\"completion_tokens\":2}}", 1, 1, 0, 0, 0);
    CHECK("usage null", "{" IMG ",\"usage\":null}", 1, 1, 0, 0, 0);
    CHECK("markdown image", "{\"choices\":[{\"message\":{\"content\":"
          "\"![img](data:image/png;base64,QUJD)\"}}]}", 1, 1, 0, 0, 0);
    CHECK("content parts", "{\"choices\":[{\"message\":{\"content\":"
          "[{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}}]}}]}",
          1, 1, 0, 0, 0);
    CHECK("text only", "{\"choices\":[{\"message\":{\"content\":\"no\"}}]}",
          1, 0, 0, 0, 0);
    CHECK("empty images", "{\"choices\":[{\"message\":{\"images\":[]}}]}",
          1, 0, 0, 0, 0);
    CHECK("usage under an escaped key: ambiguous",
          "{\"choices\":[{\"message\":{\"images\":[\"i\"]}}],"
          "\"us\\u0061ge\":{\"prompt_tokens\":5,\"completion_tokens\":6}}",
          1, 1, 0, 0, 0);
    CHECK("a second usage under an escaped key: ambiguous",
          "{\"choices\":[{\"message\":{\"images\":[\"i\"]}}],"
          "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},"
          "\"us\\u0061ge\":{\"prompt_tokens\":5,\"completion_tokens\":6}}",
          1, 1, 0, 0, 0);
    CHECK("an escaped key inside usage: ambiguous",
          "{\"choices\":[{\"message\":{\"images\":[\"i\"]}}],"
          "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
          "\"prompt\\u005ftokens\":9}}",
          1, 1, 0, 0, 0);
    CHECK("an escaped key elsewhere is just a key",
          "{\"choices\":[{\"message\":{\"images\":[\"i\"],"
          "\"a\\\"b\":1}}],"
          "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
          1, 1, 1, 1, 2);
    CHECK("data URL with an escaped slash", "{\"choices\":[{\"message\":"
          "{\"content\":\"data:image\\/png;base64,QUJD\"}}]}",
          1, 1, 0, 0, 0);
    CHECK("image text outside choices", "{\"content\":\"data:image/png\"}",
          1, 0, 0, 0, 0);
    CHECK("whitespace", " \n{ \"a\" : [ 1 , 2 ] , \"b\" : { } }\r\n",
          1, 0, 0, 0, 0);
    CHECK("literals", "{\"a\":[true,false,null,-0.5e+3,0]}", 1, 0, 0, 0, 0);
    CHECK("unicode escape", "{\"a\":\"\\u00e9\\uD83D\"}", 1, 0, 0, 0, 0);

    CHECK("empty", "", 0, 0, 0, 0, 0);
    CHECK("array", "[1]", 0, 0, 0, 0, 0);
    CHECK("truncated", "{\"a\":\"bc", 0, 0, 0, 0, 0);
    CHECK("trailing garbage", "{} x", 0, 0, 0, 0, 0);
    CHECK("two objects", "{}{}", 0, 0, 0, 0, 0);
    CHECK("trailing comma", "{\"a\":1,}", 0, 0, 0, 0, 0);
    CHECK("array trailing comma", "{\"a\":[1,]}", 0, 0, 0, 0, 0);
    CHECK("leading zero", "{\"a\":01}", 0, 0, 0, 0, 0);
    CHECK("bad escape", "{\"a\":\"\\q\"}", 0, 0, 0, 0, 0);
    CHECK("bad unicode escape", "{\"a\":\"\\u12G4\"}", 0, 0, 0, 0, 0);
    CHECK("short unicode escape", "{\"a\":\"\\u12\"}", 0, 0, 0, 0, 0);
    CHECK("mismatched close", "{\"a\":[1}", 0, 0, 0, 0, 0);
    CHECK("single quotes", "{'a':1}", 0, 0, 0, 0, 0);
    CHECK("bare word", "{\"a\":nul}", 0, 0, 0, 0, 0);
    CHECK("key not string", "{1:2}", 0, 0, 0, 0, 0);
    CHECK("missing colon", "{\"a\" 1}", 0, 0, 0, 0, 0);
    CHECK("NUL byte in string", "{\"a\":\"x\0y\"}", 0, 0, 0, 0, 0);

    /* nesting: 127 levels inside the root object pass, 128 do not */
    for (k = 127; k <= 128; k++) {
        len = 0;
        buf[len++] = '{';
        buf[len++] = '"'; buf[len++] = 'a'; buf[len++] = '"';
        buf[len++] = ':';
        for (n = 0; n < k; n++) buf[len++] = '[';
        for (n = 0; n < k; n++) buf[len++] = ']';
        buf[len++] = '}';
        snprintf(name, sizeof(name), "nesting %zu", k);
        check(name, buf, len, k < 128, 0, 0, 0, 0);
    }

    /*
     * The block-at-a-time string loops (64 bytes with SSE2, then 16): every
     * length around their windows, with a control byte (0x01, 0x1f), a
     * backslash escape or a plain byte just outside the control range
     * (0x20, 0x7f, 0xc3, 0xff) at every position, and the string ending
     * exactly at the buffer's end.
     */

    for (n = 0; n <= 200; n += (n < 40 || (n % 64) > 60 || (n % 64) < 4)
                              ? 1 : 7)
    {
        for (k = 0; k <= n; k++) {
            for (c = 0; c < 8; c++) {
                memset(str, 'A', n);

                if (k < n) {
                    str[k] = "A\x01\x1f\\ \x7f\xc3\xff"[c];
                }

                if (c == 3 && k + 1 < n) {
                    str[k + 1] = 'n';         /* a valid escape */
                }

                bad = k < n && (c == 1 || c == 2 || (c == 3 && k + 1 == n));

                len = snprintf(buf, sizeof(buf), "{\"s\":\"%.*s\"}",
                               (int) n, str);
                snprintf(name, sizeof(name), "string len %zu, case %d at %zu",
                         n, c, k);
                check(name, buf, len, !bad, 0, 0, 0, 0);

                /* the same string cut before its closing quote */
                check("unterminated string", buf, 6 + n, 0, 0, 0, 0, 0);
            }
        }
    }

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
