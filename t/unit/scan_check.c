/*
 * Direct checks of the reply scanner (ngx_http_imgbill_scan.c), built
 * against the nginx tree that scripts/build configured.  Prints TAP.
 *
 * Every case is scanned whole, then fed again cut in two at every point
 * and byte by byte, each piece an exact-size heap copy (a read past a
 * piece is an ASan error): the verdict must not depend on the cuts.
 * A case names its dialect, OpenAI's or Gemini's; whether the reply is
 * JSON must not depend on that.  Where the scanner says "cost" goes
 * (usage_at), it is put in, and the reply must read the same.
 */

#include "ngx_http_imgbill_scan.h"

#include "ngx_http_imgbill_api.h"


/* the APIs' reply dialects, by the index the cases give them */
extern ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_ideogram_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_ideogram_legacy_api;

#define DIALECT(d)  imgbill_dialect(d)

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int  tests, failed;


static ngx_http_imgbill_dialect_t *
imgbill_dialect(ngx_uint_t d)
{
    switch (d) {
    case 0:
        return ngx_http_imgbill_openai_api.dialect;
    case 1:
        return ngx_http_imgbill_gemini_api.dialect;
    case 2:
        return ngx_http_imgbill_ideogram_api.dialect;
    default:
        return ngx_http_imgbill_ideogram_legacy_api.dialect;
    }
}


/* the findings besides json, image and usage, as a bit mask */
#define KEY   1         /* usage_key */
#define ERR   2         /* error */
#define FIN   4         /* finished */
#define NOCH  8         /* no_choices */
#define ANY   -1        /* not checked */

#define OPENAI  0
#define GEMINI  1
#define IDEOGRAM  2
#define LEGACY  3

#define COST  "\"cost\":0.2465"

#define flags(r)                                                             \
    (((r)->usage_key ? KEY : 0) | ((r)->error ? ERR : 0)                     \
     | ((r)->finished ? FIN : 0) | ((r)->no_choices ? NOCH : 0))


/* the pieces [0, cut) and [cut, len), or (step) one byte at a time */

static void
scan_pieces(ngx_uint_t dialect, const char *json, size_t len, size_t cut,
    int step, ngx_http_imgbill_scan_t *res)
{
    u_char                      *piece;
    size_t                       from, to;
    ngx_http_imgbill_scanner_t   s;

    ngx_http_imgbill_scan_init(&s, DIALECT(dialect));

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


/* every finding (finish() zeroes the whole, padding and all) */

static int
same(ngx_http_imgbill_scan_t *a, ngx_http_imgbill_scan_t *b)
{
    return memcmp(a, b, sizeof(ngx_http_imgbill_scan_t)) == 0;
}


/*
 * The reply with "cost" put in where the scanner says, as the filter does:
 * a malloc()ed string, or NULL without a usage_at.  A comma follows unless
 * the usage is empty.
 */

static char *
with_cost(const char *json, size_t len, size_t at)
{
    char    *out;
    size_t   i;

    if (at == 0) {
        return NULL;
    }

    for (i = at; i < len && memchr(" \t\r\n", json[i], 4) != NULL; i++) {
        /* void */
    }

    out = malloc(len + sizeof(COST ","));
    snprintf(out, len + sizeof(COST ","), "%.*s%s%.*s", (int) at, json,
             (i < len && json[i] == '}') ? COST : COST ",",
             (int) (len - at), json + at);

    return out;
}


/*
 * Where "cost" went in, the reply must read the same, its usage opening
 * at the same place: the filter's insertion breaks nothing.
 */

static int
cost_fits(ngx_uint_t dialect, const char *json, size_t len,
    ngx_http_imgbill_scan_t *res)
{
    int                       ok;
    char                     *out;
    ngx_http_imgbill_scan_t   again;

    if (res->usage_at == 0) {
        return 1;
    }

    if (res->usage_at > len || json[res->usage_at - 1] != '{'
        || dialect != OPENAI || !res->json || !res->usage_key)
    {
        return 0;
    }

    out = with_cost(json, len, res->usage_at);

    ngx_http_imgbill_scan((u_char *) out, (u_char *) out + strlen(out),
                          DIALECT(dialect), &again);

    /* an image after the usage moved by what went in */
    if (again.image_at > res->usage_at) {
        again.image_at -= strlen(out) - len;
    }

    ok = same(&again, res);

    free(out);

    return ok;
}


static void
check(const char *name, ngx_uint_t dialect, const char *json, size_t len,
    int json_ok, int image, int usage, long pt, long ct, int want)
{
    u_char                   *copy;
    size_t                    cut;
    ngx_http_imgbill_scan_t   res, split, other;
    int                       ok;
    char                      why[64];

    /* an exact-size heap copy, so a read past the end is caught by ASan
       or valgrind */
    copy = malloc(len ? len : 1);
    memcpy(copy, json, len);

    ngx_http_imgbill_scan(copy, copy + len, DIALECT(dialect), &res);

    ok = res.json == json_ok
         && (!json_ok || (res.image == image && res.usage == usage
                          && (!usage || (res.prompt_tokens == pt
                                         && res.completion_tokens == ct))))
         && (want == ANY || flags(&res) == want);
    why[0] = '\0';

    /* whether it is JSON does not depend on the dialect */
    ngx_http_imgbill_scan(copy, copy + len, DIALECT(!dialect), &other);
    ok = ok && other.json == res.json;

    if (ok && !cost_fits(dialect, json, len, &res)) {
        ok = 0;
        snprintf(why, sizeof(why), ", no cost fits at %zu", res.usage_at);
    }

    for (cut = 0; ok && cut <= len; cut++) {
        scan_pieces(dialect, json, len, cut, 0, &split);

        if (!same(&res, &split)) {
            ok = 0;
            snprintf(why, sizeof(why), ", differs cut at %zu", cut);
        }
    }

    if (ok) {
        scan_pieces(dialect, json, len, 0, 1, &split);

        if (!same(&res, &split)) {
            ok = 0;
            snprintf(why, sizeof(why), ", differs byte by byte");
        }
    }

    tests++;

    if (!ok) {
        failed++;
        printf("not ok %d - %s (json %d image %d usage %d pt %ld ct %ld "
               "flags %d at %zu%s)\n",
               tests, name, res.json, res.image, res.usage,
               (long) res.prompt_tokens, (long) res.completion_tokens,
               flags(&res), res.usage_at, why);

    } else {
        printf("ok %d - %s\n", tests, name);
    }

    free(copy);
}


/*
 * usage_at, exactly: "cost" put in where the scanner says gives the reply
 * expected (NULL: no usage_at), however the reply was cut.
 */

static void
check_at(const char *name, ngx_uint_t dialect, const char *json,
    const char *expected)
{
    int                       ok;
    char                     *out, why[64];
    size_t                    len, cut;
    ngx_http_imgbill_scan_t   res;

    len = strlen(json);
    ok = 1;
    why[0] = '\0';

    /* cut in two at every point, then byte by byte */

    for (cut = 0; ok && cut <= len + 1; cut++) {
        scan_pieces(dialect, json, len, cut, cut > len, &res);

        out = with_cost(json, len, res.usage_at);

        if (!(out == NULL ? expected == NULL
                          : expected != NULL && strcmp(out, expected) == 0))
        {
            ok = 0;
            snprintf(why, sizeof(why), " (usage_at %zu, cut at %zu)",
                     res.usage_at, cut);
        }

        free(out);
    }

    tests++;

    if (!ok) {
        failed++;
    }

    printf("%s %d - usage_at: %s%s\n", ok ? "ok" : "not ok", tests, name,
           why);
}


/*
 * The images of a reply: how many choices carry one, their indexes, and
 * where the first showed: upto is the reply up to and including the byte
 * that showed it (NULL: no image), however the reply was cut.
 */

static void
check_images(const char *name, ngx_uint_t dialect, const char *json,
    ngx_uint_t images, uint64_t indexes, const char *upto)
{
    int                       ok;
    char                      why[96];
    size_t                    len, cut, at;
    ngx_http_imgbill_scan_t   res;

    len = strlen(json);
    at = upto ? strlen(upto) : 0;
    ok = (upto == NULL || strncmp(json, upto, at) == 0);
    why[0] = '\0';

    for (cut = 0; ok && cut <= len + 1; cut++) {
        scan_pieces(dialect, json, len, cut, cut > len, &res);

        if (res.images != images || res.indexes != indexes
            || res.image_at != at || res.image != (upto != NULL))
        {
            ok = 0;
            snprintf(why, sizeof(why), " (images %lu indexes %#llx at %zu, "
                     "cut at %zu)", (unsigned long) res.images,
                     (unsigned long long) res.indexes, res.image_at, cut);
        }
    }

    tests++;

    if (!ok) {
        failed++;
    }

    printf("%s %d - images: %s%s\n", ok ? "ok" : "not ok", tests, name,
           why);
}


#define CHECK(name, s, j, i, u, pt, ct)                                      \
    check(name, OPENAI, s, sizeof(s) - 1, j, i, u, pt, ct, ANY)

#define OCHECK(name, s, j, i, u, pt, ct, f)                                  \
    check(name, OPENAI, s, sizeof(s) - 1, j, i, u, pt, ct, f)

#define GCHECK(name, s, j, i, u, pt, ct, f)                                  \
    check(name, GEMINI, s, sizeof(s) - 1, j, i, u, pt, ct, f)

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
    CHECK("no data URL across the digits of \\u", "{\"choices\":[{\"message\":"
          "{\"content\":\"\\u00data:image/png\"}}]}", 1, 0, 0, 0, 0);
    CHECK("image text outside choices", "{\"content\":\"data:image/png\"}",
          1, 0, 0, 0, 0);
    CHECK("whitespace", " \n{ \"a\" : [ 1 , 2 ] , \"b\" : { } }\r\n",
          1, 0, 0, 0, 0);
    CHECK("literals", "{\"a\":[true,false,null,-0.5e+3,0]}", 1, 0, 0, 0, 0);
    CHECK("unicode escape", "{\"a\":\"\\u00e9\\uD83D\"}", 1, 0, 0, 0, 0);

    /* OpenAI's stream: each chunk is one object, its choices a "delta" */

#define CHUNK  "{\"id\":\"x\",\"object\":\"chat.completion.chunk\","
#define DATA   "data:image/png;base64,iVBO"

    OCHECK("chunk: delta.images", CHUNK "\"choices\":[{\"index\":0,"
           "\"delta\":{\"role\":\"assistant\",\"images\":[{\"type\":"
           "\"image_url\",\"image_url\":{\"url\":\"" DATA "\"}}]},"
           "\"finish_reason\":null}],\"usage\":null}", 1, 1, 0, 0, 0, 0);
    OCHECK("chunk: usage only", CHUNK "\"choices\":[],\"usage\":"
           "{\"prompt_tokens\":560,\"completion_tokens\":1120,"
           "\"total_tokens\":1680}}", 1, 0, 1, 560, 1120, KEY | NOCH);
    OCHECK("chunk: markdown data URL in delta.content", CHUNK
           "\"choices\":[{\"delta\":{\"content\":\"![image](" DATA ")\"}}]}",
           1, 1, 0, 0, 0, 0);
    OCHECK("chunk: data URL in delta.content, escaped slash", CHUNK
           "\"choices\":[{\"delta\":{\"content\":\"data:image\\/png\"}}]}",
           1, 1, 0, 0, 0, 0);
    OCHECK("chunk: image_url part in delta.content", CHUNK
           "\"choices\":[{\"delta\":{\"content\":[{\"type\":\"text\","
           "\"text\":\"x\"},{\"type\":\"image_url\",\"image_url\":"
           "{\"url\":\"" DATA "\"}}]}}]}", 1, 1, 0, 0, 0, 0);
    OCHECK("chunk: text, finished", CHUNK "\"choices\":[{\"delta\":"
           "{\"content\":\"no image\"},\"finish_reason\":\"stop\"}]}",
           1, 0, 0, 0, 0, FIN);
    OCHECK("chunk: finish_reason in a second choice", CHUNK
           "\"choices\":[{\"delta\":{}},{\"delta\":{},"
           "\"finish_reason\":\"length\"}]}", 1, 0, 0, 0, 0, FIN);
    OCHECK("finish_reason empty string", "{\"choices\":[{\"message\":{},"
           "\"finish_reason\":\"\"}]}", 1, 0, 0, 0, 0, FIN);
    OCHECK("finish_reason not a string", "{\"choices\":[{\"message\":{},"
           "\"finish_reason\":1}]}", 1, 0, 0, 0, 0, 0);
    OCHECK("finish_reason outside a choice", "{\"finish_reason\":\"stop\","
           "\"choices\":[{\"message\":{\"finish_reason\":\"stop\"}},"
           "[{\"finish_reason\":\"stop\"}]],\"x\":{\"choices\":"
           "[{\"finish_reason\":\"stop\"}]}}", 1, 0, 0, 0, 0, 0);
    OCHECK("finish_reason under an escaped key",
           "{\"choices\":[{\"finish\\u005freason\":\"stop\"}]}",
           1, 0, 0, 0, 0, 0);
    OCHECK("finishReason is Gemini's", "{\"choices\":[{\"message\":{},"
           "\"finishReason\":\"STOP\"}]}", 1, 0, 0, 0, 0, 0);
    OCHECK("choices: [ ] with white space", "{\"choices\" : [ \n ] }",
           1, 0, 0, 0, 0, NOCH);
    OCHECK("choices not empty", "{\"choices\":[{}]}", 1, 0, 0, 0, 0, 0);
    OCHECK("choices: {} is no empty list", "{\"choices\":{}}",
           1, 0, 0, 0, 0, 0);
    OCHECK("choices: [] nested is not the reply's",
           "{\"x\":{\"choices\":[]},\"y\":[[]]}", 1, 0, 0, 0, 0, 0);
    OCHECK("error object", "{\"error\":{\"message\":\"quota\",\"type\":"
           "\"insufficient_quota\",\"code\":429}}", 1, 0, 0, 0, 0, ERR);
    OCHECK("error string", "{\"error\":\"x\"}", 1, 0, 0, 0, 0, ERR);
    OCHECK("error false is not null", "{\"error\":false}", 1, 0, 0, 0, 0,
           ERR);
    OCHECK("error null, or nested", "{\"error\":null,\"x\":{\"error\":{}},"
           IMG "}", 1, 1, 0, 0, 0, 0);
    OCHECK("usage empty: a usage key, no usage", "{\"usage\":{}}",
           1, 0, 0, 0, 0, KEY);
    OCHECK("usage null: no usage key", "{" IMG ",\"usage\":null}",
           1, 1, 0, 0, 0, 0);
    OCHECK("usage list, or nested: no usage key", "{\"usage\":[{"
           "\"prompt_tokens\":1,\"completion_tokens\":2}],\"x\":{\"usage\":"
           "{}}}", 1, 0, 0, 0, 0, 0);
    OCHECK("usage with a bad count: a usage key", "{\"usage\":"
           "{\"prompt_tokens\":\"1\",\"completion_tokens\":2}}",
           1, 0, 0, 0, 0, KEY);
    OCHECK("two usages: usage keys", "{\"usage\":{\"prompt_tokens\":1,"
           "\"completion_tokens\":2},\"usage\":{\"prompt_tokens\":1,"
           "\"completion_tokens\":2}}", 1, 0, 0, 0, 0, KEY);
    OCHECK("Gemini's names in OpenAI", "{\"candidates\":[{\"content\":"
           "{\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\","
           "\"data\":\"QUJD\"}}]},\"finishReason\":\"STOP\"}],"
           "\"usageMetadata\":{\"promptTokenCount\":1,"
           "\"candidatesTokenCount\":2}}", 1, 0, 0, 0, 0, 0);
    OCHECK("Gemini's counts in OpenAI's usage", "{\"usage\":"
           "{\"prompt_tokens\":1,\"completion_tokens\":2,"
           "\"thoughtsTokenCount\":5,\"promptTokenCount\":9}}",
           1, 0, 1, 1, 2, KEY);
    OCHECK("a Gemini part under OpenAI's choice.content",
           "{\"choices\":[{\"content\":{\"parts\":[{\"inlineData\":"
           "{\"mimeType\":\"image/png\"}}]}}]}", 1, 0, 0, 0, 0, 0);
    OCHECK("not JSON: findings as read", "{\"error\":{},\"choices\":[],"
           "\"usage\":{}", 0, 0, 0, 0, 0, KEY | ERR | NOCH);

    /* usage_at: where the filter puts "cost" in, exactly */

    check_at("seed reply", OPENAI,
             "{" IMG ",\"usage\":{\"prompt_tokens\":560,"
             "\"completion_tokens\":1120}}",
             "{" IMG ",\"usage\":{" COST ",\"prompt_tokens\":560,"
             "\"completion_tokens\":1120}}");
    check_at("usage first", OPENAI,
             "{\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":1}}",
             "{\"usage\":{" COST ",\"completion_tokens\":2,"
             "\"prompt_tokens\":1}}");
    check_at("stream's usage chunk", OPENAI,
             CHUNK "\"choices\":[],\"usage\":{\"prompt_tokens\":560,"
             "\"completion_tokens\":1120,\"total_tokens\":1680}}",
             CHUNK "\"choices\":[],\"usage\":{" COST ",\"prompt_tokens\":560,"
             "\"completion_tokens\":1120,\"total_tokens\":1680}}");
    check_at("pretty", OPENAI,
             "{\n  \"usage\" : {\n    \"prompt_tokens\" : 1,\n"
             "    \"completion_tokens\" : 2\n  }\n}\n",
             "{\n  \"usage\" : {" COST ",\n    \"prompt_tokens\" : 1,\n"
             "    \"completion_tokens\" : 2\n  }\n}\n");
    check_at("after a long string and escapes", OPENAI,
             "{\"a\":\"\\\"{\\u007b" DATA DATA DATA DATA DATA "\",\"b\":[{},"
             "-1.5e3,true],\"usage\":{\"prompt_tokens\":1,"
             "\"completion_tokens\":2}}",
             "{\"a\":\"\\\"{\\u007b" DATA DATA DATA DATA DATA "\",\"b\":[{},"
             "-1.5e3,true],\"usage\":{" COST ",\"prompt_tokens\":1,"
             "\"completion_tokens\":2}}");
    check_at("usage unusable, still its place", OPENAI,
             "{\"usage\":{\"prompt_tokens\":-1}}",
             "{\"usage\":{" COST ",\"prompt_tokens\":-1}}");
    check_at("usage empty", OPENAI, "{\"usage\":{ }}",
             "{\"usage\":{" COST " }}");
    check_at("usage nested: none", OPENAI,
             "{\"x\":{\"usage\":{\"prompt_tokens\":1}}}", NULL);
    check_at("usage null: none", OPENAI, "{\"usage\":null}", NULL);
    check_at("two usages: none", OPENAI,
             "{\"usage\":{\"prompt_tokens\":1},\"usage\":{}}", NULL);
    check_at("usage and an escaped key: none", OPENAI,
             "{\"usage\":{\"prompt_tokens\":1},\"\\u0075sage\":1}", NULL);
    check_at("not JSON: none", OPENAI,
             "{\"usage\":{\"prompt_tokens\":1}", NULL);
    check_at("Gemini: none", GEMINI,
             "{\"usageMetadata\":{\"promptTokenCount\":1,"
             "\"candidatesTokenCount\":2}}", NULL);

    /* images: counted once per choice, marked where they begin */

    check_images("one choice, one image", OPENAI, "{" IMG "}", 1, 1,
                 "{\"choices\":[{\"message\":{\"images\":[{");
    check_images("none", OPENAI, "{\"choices\":[{\"message\":{}}]}",
                 0, 0, NULL);
    check_images("two images in one choice count once", OPENAI,
                 "{\"choices\":[{\"message\":{\"images\":[\"a\",\"b\"]}}]}",
                 1, 1, "{\"choices\":[{\"message\":{\"images\":[\"");
    check_images("n: 3, the second without one", OPENAI,
                 "{\"choices\":[{\"index\":0,\"message\":{\"images\":"
                 "[\"a\"]}},{\"index\":1,\"message\":{\"content\":\"no\"}},"
                 "{\"message\":{\"images\":[\"c\"]},\"index\":2}]}", 2, 5,
                 "{\"choices\":[{\"index\":0,\"message\":{\"images\":[\"");
    check_images("an index past the last bit counts as the last", OPENAI,
                 "{\"choices\":[{\"index\":99,\"message\":{\"images\":"
                 "[\"a\"]}},{\"index\":-1,\"message\":{\"images\":[\"b\"]}},"
                 "{\"index\":2.5,\"message\":{\"images\":[\"b\"]}}]}",
                 3, ((uint64_t) 1 << 63) | 1,
                 "{\"choices\":[{\"index\":99,\"message\":{\"images\":[\"");
    check_images("an index elsewhere is no choice's", OPENAI,
                 "{\"index\":3,\"choices\":[{\"message\":{\"index\":5,"
                 "\"images\":[\"a\"]}}]}", 1, 1,
                 "{\"index\":3,\"choices\":[{\"message\":{\"index\":5,"
                 "\"images\":[\"");
    check_images("a data URL shows at its slash", OPENAI,
                 "{\"choices\":[{\"delta\":{\"content\":\"x data:image/png;"
                 "base64,QUJD\"},\"index\":1}]}", 1, 2,
                 "{\"choices\":[{\"delta\":{\"content\":\"x data:image/");
    check_images("a markdown image shows at its bracket", OPENAI,
                 "{\"choices\":[{\"delta\":{\"content\":\"see ![a](b)\"}}]}",
                 1, 1, "{\"choices\":[{\"delta\":{\"content\":\"see ![");
    check_images("an image_url part shows at its start", OPENAI,
                 "{\"choices\":[{\"message\":{\"content\":[{\"type\":"
                 "\"text\"},{\"image_url\":\"u\"}]}}]}", 1, 1,
                 "{\"choices\":[{\"message\":{\"content\":[{\"type\":"
                 "\"text\"},{\"image_url\":\"");
    check_images("cut inside the choice: it counts", OPENAI,
                 "{\"choices\":[{\"index\":3,\"message\":{\"images\":"
                 "[\"abc", 1, 8,
                 "{\"choices\":[{\"index\":3,\"message\":{\"images\":[\"");
    check_images("anything after the object: no image", OPENAI,
                 "{" IMG "} x", 0, 0, NULL);
    check_images("Gemini: two candidates, the first's index left out",
                 GEMINI, "{\"candidates\":[{\"content\":{\"parts\":["
                 "{\"inlineData\":{\"data\":\"QUJD\",\"mimeType\":"
                 "\"image/png\"}}]}},{\"index\":1,\"content\":{\"parts\":["
                 "{\"inlineData\":{\"mimeType\":\"image/png\"}}]}}]}", 2, 3,
                 "{\"candidates\":[{\"content\":{\"parts\":["
                 "{\"inlineData\":{\"data\":\"QUJD\",\"mimeType\":"
                 "\"image/");
    check_images("Gemini: text candidates carry none", GEMINI,
                 "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
                 "\"a\"}]},\"index\":0},{\"content\":{\"parts\":[]},"
                 "\"index\":1}]}", 0, 0, NULL);

    /* Gemini's GenerateContentResponse */

#define GIMG  "\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":" \
              "{\"mimeType\":\"image/png\",\"data\":\"iVBO\"}}]}}]"

    GCHECK("Gemini: real reply", "{\"candidates\":[{\"content\":{\"parts\":"
           "[{\"text\":\"Here you go\"},{\"inlineData\":{\"mimeType\":"
           "\"image/png\",\"data\":\"iVBORw0...\"}}],\"role\":\"model\"},"
           "\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":"
           "{\"promptTokenCount\":560,\"candidatesTokenCount\":1000,"
           "\"thoughtsTokenCount\":120,\"totalTokenCount\":1680,"
           "\"promptTokensDetails\":[{\"modality\":\"TEXT\","
           "\"tokenCount\":560}]},\"modelVersion\":"
           "\"gemini-2.5-flash-image\",\"responseId\":\"abc\"}",
           1, 1, 1, 560, 1120, KEY | FIN);
    GCHECK("Gemini: usage first, no thoughts", "{\"usageMetadata\":"
           "{\"candidatesTokenCount\":1290,\"promptTokenCount\":1210,"
           "\"cachedContentTokenCount\":7,\"candidatesTokensDetails\":"
           "[{\"modality\":\"IMAGE\",\"tokenCount\":1290}]}," GIMG "}",
           1, 1, 1, 1210, 1290, KEY);
    GCHECK("Gemini: thoughts 0", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":2,"
           "\"thoughtsTokenCount\":0}}", 1, 1, 1, 1, 2, KEY);
    GCHECK("Gemini: largest sum", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":2147483647,\"candidatesTokenCount\":"
           "2147483640,\"thoughtsTokenCount\":7}}",
           1, 1, 1, 2147483647, 2147483647, KEY);
    GCHECK("Gemini: sum beyond the cap", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":2147483640,"
           "\"thoughtsTokenCount\":8}}", 1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: thoughts beyond the cap", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":0,"
           "\"thoughtsTokenCount\":2147483648}}", 1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: no candidates count", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"thoughtsTokenCount\":2}}",
           1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: no prompt count", "{" GIMG ",\"usageMetadata\":"
           "{\"candidatesTokenCount\":1,\"totalTokenCount\":2}}",
           1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: thoughts twice", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":2,"
           "\"thoughtsTokenCount\":3,\"thoughtsTokenCount\":3}}",
           1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: prompt twice", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":2,"
           "\"promptTokenCount\":1}}", 1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: thoughts null", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":2,"
           "\"thoughtsTokenCount\":null}}", 1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: candidates count a string", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":\"2\"}}",
           1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: negative thoughts", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":2,"
           "\"thoughtsTokenCount\":-3}}", 1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: fractional prompt", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1.0,\"candidatesTokenCount\":2}}",
           1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: two usageMetadata", "{" GIMG ",\"usageMetadata\":"
           "{\"promptTokenCount\":1,\"candidatesTokenCount\":2},"
           "\"usageMetadata\":{\"promptTokenCount\":1,"
           "\"candidatesTokenCount\":2}}", 1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: usageMetadata under an escaped key", "{" GIMG ","
           "\"usage\\u004detadata\":{\"promptTokenCount\":1,"
           "\"candidatesTokenCount\":2}}", 1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: an escaped key in usageMetadata", "{" GIMG ","
           "\"usageMetadata\":{\"promptTokenCount\":1,"
           "\"candidatesTokenCount\":2,\"thoughts\\u0054okenCount\":9}}",
           1, 1, 0, 0, 0, KEY);
    GCHECK("Gemini: usageMetadata nested", "{\"candidates\":[{"
           "\"usageMetadata\":{\"promptTokenCount\":1,"
           "\"candidatesTokenCount\":2}}]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: usageMetadata null", "{" GIMG ",\"usageMetadata\":null}",
           1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: OpenAI's names", "{" IMG ",\"usage\":{"
           "\"prompt_tokens\":1,\"completion_tokens\":2},\"choices\":[],"
           "\"finish_reason\":\"stop\"}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: OpenAI's counts in usageMetadata", "{\"usageMetadata\":"
           "{\"prompt_tokens\":1,\"completion_tokens\":2}}",
           1, 0, 0, 0, 0, KEY);
    GCHECK("Gemini: snake case", "{\"candidates\":[{\"content\":"
           "{\"parts\":[{\"inline_data\":{\"data\":\"QUJD\","
           "\"mime_type\":\"image/jpeg\"}}]}}]}", 1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: mimeType in capitals", "{\"candidates\":[{\"content\":"
           "{\"parts\":[{\"inlineData\":{\"mimeType\":\"IMAGE/PNG\"}}]}}]}",
           1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: mimeType with an escaped slash", "{\"candidates\":[{"
           "\"content\":{\"parts\":[{\"inlineData\":{\"mimeType\":"
           "\"image\\/webp\"}}]}}]}", 1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: mimeType \"image/\"", "{\"candidates\":[{\"content\":"
           "{\"parts\":[{\"inlineData\":{\"mimeType\":\"image/\"}}]}}]}",
           1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: \"image\", \"images/png\", \"x-image/png\", "
           "\"image\\\\/png\" are no image MIME types", "{\"candidates\":[{"
           "\"content\":{\"parts\":[{\"inlineData\":{\"mimeType\":"
           "\"image\"}},{\"inlineData\":{\"mimeType\":\"images/png\"}},"
           "{\"inlineData\":{\"mimeType\":\"x-image/png\"}},{\"inlineData\":"
           "{\"mimeType\":\"image\\\\/png\"}}]}}]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: mimeType \"image\\u002fpng\" (hidden, free)",
           "{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":"
           "{\"mimeType\":\"image\\u002fpng\"}}]}}]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: mimeType not a string", "{\"candidates\":[{\"content\":"
           "{\"parts\":[{\"inlineData\":{\"mimeType\":[\"image/png\"]}}]}}]}",
           1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: data without an image MIME type", "{\"candidates\":[{"
           "\"content\":{\"parts\":[{\"inlineData\":{\"mimeType\":"
           "\"text/plain\",\"data\":\"aW1hZ2UvcG5n\"}},{\"inlineData\":"
           "{\"data\":\"iVBO\"}}]}}]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: a text part is no image", "{\"candidates\":[{"
           "\"content\":{\"parts\":[{\"text\":\"![x](" DATA ")\","
           "\"mimeType\":\"image/png\"}]}}]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: thought image counts", "{\"candidates\":[{\"content\":"
           "{\"parts\":[{\"thought\":true,\"inlineData\":{\"mimeType\":"
           "\"image/png\",\"data\":\"iVBO\"}}]}}]}", 1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: inlineData off the path", "{\"inlineData\":{\"mimeType\":"
           "\"image/png\"},\"parts\":[{\"inlineData\":{\"mimeType\":"
           "\"image/png\"}}],\"candidates\":[{\"inlineData\":{\"mimeType\":"
           "\"image/png\"},\"content\":[{\"parts\":[{\"inlineData\":"
           "{\"mimeType\":\"image/png\"}}]}]}]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: second candidate's image", "{\"candidates\":[{},"
           "{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"a\"},"
           "{\"inlineData\":{\"data\":\"" DATA "\",\"mimeType\":"
           "\"image/png\"}}]}}]}", 1, 1, 0, 0, 0, 0);
    GCHECK("Gemini: finishReason only", "{\"candidates\":[{\"finishReason\":"
           "\"IMAGE_SAFETY\",\"index\":0}],\"usageMetadata\":"
           "{\"promptTokenCount\":5,\"candidatesTokenCount\":0}}",
           1, 0, 1, 5, 0, KEY | FIN);
    GCHECK("Gemini: finishReason null", "{\"candidates\":[{\"finishReason\":"
           "null}]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: finishReason off the path", "{\"finishReason\":\"STOP\","
           "\"candidates\":[{\"content\":{\"finishReason\":\"STOP\"}}]}",
           1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: error", "{\"error\":{\"code\":429,\"message\":\"quota\","
           "\"status\":\"RESOURCE_EXHAUSTED\"}}", 1, 0, 0, 0, 0, ERR);
    GCHECK("Gemini: error null", "{\"error\":null}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: candidates [] is not no_choices",
           "{\"candidates\":[],\"choices\":[]}", 1, 0, 0, 0, 0, 0);
    GCHECK("Gemini: trailing garbage", "{" GIMG "} x", 0, 0, 0, 0, 0, 0);
    GCHECK("Gemini: truncated", "{" GIMG, 0, 1, 0, 0, 0, 0);

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
        check(name, OPENAI, buf, len, k < 128, 0, 0, 0, 0, 0);
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
                check(name, OPENAI, buf, len, !bad, 0, 0, 0, 0, 0);

                /* the same string cut before its closing quote */
                check("unterminated string", OPENAI, buf, 6 + n,
                      0, 0, 0, 0, 0, 0);
            }
        }
    }

    /* Ideogram: an entry is an image by a url (or a b64_json) that is
       not empty; a filtered one keeps its entry, with "url": "" */

    check_images("Ideogram, two delivered", IDEOGRAM,
                 "{\"data\":[{\"url\":\"h\",\"is_image_safe\":true},"
                 "{\"is_image_safe\":true,\"url\":\"i\"}]}", 2, 1,
                 "{\"data\":[{\"url\":\"h");
    check_images("Ideogram, the first filtered", IDEOGRAM,
                 "{\"data\":[{\"url\":\"\",\"is_image_safe\":false},"
                 "{\"url\":\"i\"}]}", 1, 1,
                 "{\"data\":[{\"url\":\"\",\"is_image_safe\":false},"
                 "{\"url\":\"i");
    check_images("Ideogram, all filtered or null", IDEOGRAM,
                 "{\"data\":[{\"url\":\"\"},{\"url\":null},{}]}", 0, 0,
                 NULL);
    check_images("Ideogram, a url of one escape", IDEOGRAM,
                 "{\"data\":[{\"url\":\"\\u0000\"}]}", 1, 1,
                 "{\"data\":[{\"url\":\"\\");
    check_images("Ideogram, a b64_json entry", IDEOGRAM,
                 "{\"data\":[{\"b64_json\":\"iVBO\"}]}", 1, 1,
                 "{\"data\":[{\"b64_json\":\"i");
    check_images("Ideogram, a url nested deeper is none", IDEOGRAM,
                 "{\"data\":[{\"meta\":{\"url\":\"x\"}}]}", 0, 0, NULL);
    check_images("Ideogram legacy, two descriptions", LEGACY,
                 "{\"descriptions\":[{\"text\":\"a\"},{\"text\":\"b\"}]}",
                 2, 1, "{\"descriptions\":[{\"text\":\"a");
    check_images("Ideogram legacy, an empty description", LEGACY,
                 "{\"descriptions\":[{\"text\":\"\"}]}", 0, 0, NULL);

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
