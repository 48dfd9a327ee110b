
/*
 * Direct checks of the request side: the validator and Gemini's URL
 * (ngx_http_imgbill_request.c), and where a ?key= goes
 * (ngx_http_imgbill_key.c), built against the nginx tree that
 * scripts/build configured.  Prints TAP.
 *
 * key.c runs on a request made by hand: the few libnginx functions it
 * calls beyond t/stub/ngx_stubs.c are below, ngx_http_arg() and
 * ngx_hex_dump() copied from nginx 1.22.1 so that the key is read as nginx
 * reads it.
 */

#include "ngx_http_imgbill_ctx.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


size_t ngx_http_imgbill_strip_args(u_char *dst, u_char *src, size_t len,
    ngx_str_t *name);
ngx_int_t ngx_http_imgbill_gemini_target(ngx_str_t *uri, ngx_str_t *model,
    ngx_uint_t *stream);

extern ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api;
extern ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api;


static ngx_str_t  key_arg = ngx_string("key");

static int     tests, failed;
static void   *allocs[256];
static size_t  nallocs;

ngx_module_t   ngx_http_imgbill_module;


static void
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (!cond) {
        failed++;
    }

    printf("%sok %d - ", cond ? "" : "not ", tests);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
}


/* --- libnginx, as much as key.c needs ------------------------------- */

void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    if (nallocs == sizeof(allocs) / sizeof(allocs[0])) {
        abort();
    }

    p = malloc(size ? size : 1);
    allocs[nallocs++] = p;

    return p;
}


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    static u_char  hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }

    return dst;
}


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


void
ngx_http_imgbill_hide_header(ngx_table_elt_t *h)
{
    ngx_str_set(&h->key, "Connection");
    ngx_str_null(&h->value);
}


ngx_int_t
ngx_http_arg(ngx_http_request_t *r, u_char *name, size_t len,
    ngx_str_t *value)
{
    u_char  *p, *last;

    if (r->args.len == 0) {
        return NGX_DECLINED;
    }

    p = r->args.data;
    last = p + r->args.len;

    for ( /* void */ ; p < last; p++) {

        /* we need '=' after name, so drop one char from last */

        p = ngx_strlcasestrn(p, last - 1, name, len - 1);

        if (p == NULL) {
            return NGX_DECLINED;
        }

        if ((p == r->args.data || *(p - 1) == '&') && *(p + len) == '=') {

            value->data = p + len + 1;

            p = ngx_strlchr(p, last, '&');

            if (p == NULL) {
                p = r->args.data + r->args.len;
            }

            value->len = p - value->data;

            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* --- the validator -------------------------------------------------- */

#define GEMINI    (&ngx_http_imgbill_gemini_api)
#define OPENAI    (&ngx_http_imgbill_openai_api)
#define OK        NGX_HTTP_IMGBILL_REQ_OK
#define LARGE     NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE
#define OPTIONS   NGX_HTTP_IMGBILL_REQ_BAD_VALUE
#define CONTENTS  NGX_HTTP_IMGBILL_REQ_MISSING
#define NONE      0, 0, 0, 0, 0     /* no image, no flags */


/* bodies are written with ' for ", and checked with the flags s, o, u:
   stream, stream_options, usage_asked */

typedef struct {
    const char  *name;
    void        *api;
    const char  *body;
    size_t       limit;
    ngx_int_t    rc;
    size_t       images;
    size_t       size;        /* LARGE: the image's */
    unsigned     s, o, u;
} body_case_t;


static body_case_t  body_cases[] = {

    { "stream with include_usage", OPENAI, "{'model':'m','stream':true,"
      "'stream_options':{'include_usage':true}}", 0, OK, 0, 0, 1, 1, 1 },
    { "stream without stream_options", OPENAI,
      "{'model':'m','stream':true}", 0, OK, 0, 0, 1, 0, 0 },
    { "include_usage false", OPENAI, "{'model':'m','stream':true,"
      "'stream_options':{'include_usage':false}}", 0, OK, 0, 0, 1, 1, 0 },
    { "include_usage not a boolean", OPENAI, "{'model':'m','stream':true,"
      "'stream_options':{'include_usage':1}}", 0, OPTIONS, NONE },
    { "empty stream_options", OPENAI, "{'model':'m','stream_options':{}}",
      0, OK, 0, 0, 0, 1, 0 },
    { "stream_options null: there, to be replaced", OPENAI,
      "{'model':'m','stream':true,'stream_options':null}", 0, OK,
      0, 0, 1, 1, 0 },
    { "stream false", OPENAI, "{'model':'m','stream':false}", 0, OK, NONE },
    { "stream a string", OPENAI, "{'model':'m','stream':'true'}", 0,
      NGX_HTTP_IMGBILL_REQ_BAD_VALUE, NONE },
    { "stream 1", OPENAI, "{'model':'m','stream':1}", 0,
      NGX_HTTP_IMGBILL_REQ_BAD_VALUE, NONE },
    { "stream null", OPENAI, "{'model':'m','stream':null}", 0, OK, NONE },
    { "stream_options a string", OPENAI,
      "{'model':'m','stream':true,'stream_options':'x'}", 0, OPTIONS, NONE },
    { "stream_options an array", OPENAI,
      "{'model':'m','stream_options':[]}", 0, OPTIONS, NONE },
    { "stream_options true", OPENAI,
      "{'model':'m','stream_options':true}", 0, OPTIONS, NONE },
    { "stream_options 0", OPENAI, "{'model':'m','stream_options':0}", 0,
      OPTIONS, NONE },
    { "the model before stream_options", OPENAI, "{'stream_options':0}", 0,
      NGX_HTTP_IMGBILL_REQ_MISSING, NONE },
    { "stream_options after the images", OPENAI, "{'model':'m',"
      "'stream_options':0,'messages':[{'content':[{'image_url':"
      "'data:;base64,QUFB'}]}]}", 3, OPTIONS, 1, 0, 0, 0, 0 },
    { "an image too large before stream_options", OPENAI, "{'model':'m',"
      "'stream_options':0,'messages':[{'content':[{'image_url':"
      "'data:;base64,QUFBQQ=='}]}]}", 3, LARGE, 1, 4, 0, 0, 0 },
    { "OpenAI: unpadded base64 of 4 bytes", OPENAI, "{'model':'m',"
      "'messages':[{'content':[{'image_url':{'url':"
      "'data:image/png;base64,QUJDRA'}}]}]}", 3, LARGE, 1, 4, 0, 0, 0 },
    { "OpenAI: a data URL without base64", OPENAI, "{'model':'m',"
      "'messages':[{'content':[{'image_url':'data:,hello'}]}]}", 4, LARGE,
      1, 5, 0, 0, 0 },

    { "Gemini: the seed's shape", GEMINI, "{'contents':[{'role':'user',"
      "'parts':[{'text':'a cat'}]}],'generationConfig':"
      "{'responseModalities':['IMAGE']}}", 0, OK, NONE },
    { "Gemini: unpadded base64", GEMINI, "{'contents':[{'parts':"
      "[{'inlineData':{'data':'QUI'}}]}]}", 1, LARGE, 1, 2, 0, 0, 0 },
    { "Gemini: padded base64", GEMINI, "{'contents':[{'parts':"
      "[{'inlineData':{'data':'QQ=='}}]}]}", 0, LARGE, 1, 1, 0, 0, 0 },
    { "Gemini: both spellings in one part are ambiguous", GEMINI,
      "{'contents':[{'parts':[{'inlineData':{'data':'QUJD'},"
      "'inline_data':{'data':'QUJD'}}]}]}", 3,
      NGX_HTTP_IMGBILL_REQ_AMBIGUOUS, NONE },
    { "Gemini: fileData has no size", GEMINI, "{'contents':[{'parts':"
      "[{'fileData':{'mimeType':'image/png','fileUri':'gs://b/c.png'}}]}]}",
      0, OK, NONE },
    { "Gemini: data not a string", GEMINI, "{'contents':[{'parts':"
      "[{'inlineData':{'data':1}},{'inlineData':'QUJD'},7]},{'parts':{}},3]}",
      0, OK, NONE },
    { "Gemini: the second content's image", GEMINI, "{'contents':"
      "[{'parts':[]},{'parts':[{'inlineData':{'data':'QUJDRA=='}}]}]}", 3,
      LARGE, 1, 4, 0, 0, 0 },
    { "Gemini: no contents", GEMINI, "{}", 0, CONTENTS, NONE },
    { "Gemini: contents {}", GEMINI, "{'contents':{}}", 0, CONTENTS, NONE },
    { "Gemini: contents null", GEMINI, "{'contents':null}", 0, CONTENTS, NONE },
    { "Gemini: a model in the body is not needed", GEMINI,
      "{'model':'x','contents':[]}", 0, OK, NONE },
    { "Gemini: two contents", GEMINI, "{'contents':[],'contents':[]}", 0,
      NGX_HTTP_IMGBILL_REQ_INVALID_JSON, NONE },
    { "Gemini: an array", GEMINI, "[{'contents':[]}]", 0,
      NGX_HTTP_IMGBILL_REQ_NOT_OBJECT, NONE },
    { "Gemini: empty", GEMINI, "", 0, NGX_HTTP_IMGBILL_REQ_EMPTY, NONE },
    { "Gemini: stream in the body means nothing", GEMINI,
      "{'contents':[],'stream':true,'stream_options':1}", 0, OK, NONE }
};


static ngx_int_t
check(ngx_http_imgbill_api_t *api, const char *body, size_t limit,
    ngx_http_imgbill_request_t *req)
{
    u_char     *copy;
    size_t      i, len;
    ngx_int_t   rc;

    /* an exact-size heap copy: a read past the body is an ASan error */

    len = strlen(body);
    copy = malloc(len ? len : 1);

    for (i = 0; i < len; i++) {
        copy[i] = (body[i] == '\'') ? '"' : body[i];
    }

    rc = ngx_http_imgbill_check_request(copy, len, api, NULL, limit, req);

    json_decref(req->root);
    req->root = NULL;
    free(copy);

    return rc;
}


static void
check_bodies(void)
{
    size_t                       i;
    ngx_int_t                    rc;
    body_case_t                 *c;
    ngx_http_imgbill_request_t   req;

    for (i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
        c = &body_cases[i];

        rc = check(c->api, c->body, c->limit, &req);

        ok(rc == c->rc && req.images == c->images
           && (rc != LARGE || req.image_size == c->size)
           && req.stream == c->s && req.stream_options == c->o
           && req.usage_asked == c->u
           && (c->api == OPENAI || req.model.len == 0),
           "%s (rc %ld, images %zu, size %zu, flags %d%d%d)", c->name,
           (long) rc, req.images, req.image_size, req.stream,
           req.stream_options, req.usage_asked);
    }
}


/*
 * One reading: keys that fold alike, keys that stand for one the relay
 * reads, and values it reads; what a refusal names, and the output asked
 * for (max_output, thinking) when it passes.
 */

typedef struct {
    const char  *name;
    void        *api;
    const char  *body;
    ngx_int_t    rc;
    const char  *key;         /* AMBIGUOUS: the key; BAD_VALUE: the member */
    const char  *spelling;    /* AMBIGUOUS: what it stands for, or NULL */
    ngx_int_t    max_output;
    ngx_int_t    thinking;
} reading_case_t;

#define AMBIG  NGX_HTTP_IMGBILL_REQ_AMBIGUOUS
#define BADVAL NGX_HTTP_IMGBILL_REQ_BAD_VALUE


static reading_case_t  reading_cases[] = {

    { "model and MODEL", OPENAI, "{'model':'a','MODEL':'b'}", AMBIG,
      "MODEL", NULL, 0, 0 },
    { "Model alone stands for model", OPENAI, "{'Model':'b'}", AMBIG,
      "Model", "model", 0, 0 },
    { "Stream: not stream", OPENAI, "{'model':'a','Stream':true}", AMBIG,
      "Stream", "stream", 0, 0 },
    { "Stream_Options", OPENAI, "{'model':'a','stream':true,"
      "'Stream_Options':{'include_usage':false}}", AMBIG, "Stream_Options",
      "stream_options", 0, 0 },
    { "streamoptions (no underscore)", OPENAI, "{'model':'a',"
      "'streamoptions':{}}", AMBIG, "streamoptions", "stream_options", 0, 0 },
    { "include_usage twice, cased", OPENAI, "{'model':'a','stream':true,"
      "'stream_options':{'include_usage':false,'INCLUDE_USAGE':false}}",
      AMBIG, "INCLUDE_USAGE", NULL, 0, 0 },
    { "a long s (U+017F) folds to s", OPENAI,
      "{'model':'a','\xc5\xbftream':true}", AMBIG, "\xc5\xbftream", "stream",
      0, 0 },
    { "the Kelvin sign folds to k", OPENAI, "{'model':'a',"
      "'max_to\xe2\x84\xaa" "ens':5}", AMBIG, "max_to\xe2\x84\xaa" "ens",
      "max_tokens", 0, 0 },
    { "an unknown pair that folds alike", OPENAI,
      "{'model':'a','foo':1,'F_O_O':2}", AMBIG, "F_O_O", NULL, 0, 0 },
    { "keys of a message's part", OPENAI, "{'model':'a','messages':[{"
      "'content':[{'image_url':'u','Image_URL':'v'}]}]}", AMBIG, "Image_URL",
      NULL, 0, 0 },
    { "unread objects are not compared", OPENAI, "{'model':'a','tools':[{"
      "'parameters':{'properties':{'Name':{},'name':{}}}}]}", OK, NULL, NULL,
      0, 0 },
    { "max_tokens and max_completion_tokens: the larger", OPENAI,
      "{'model':'a','max_tokens':500,'max_completion_tokens':9000}", OK,
      NULL, NULL, 9000, 0 },
    { "max_tokens a string", OPENAI, "{'model':'a','max_tokens':'4000'}",
      BADVAL, "max_tokens", NULL, 0, 0 },
    { "max_tokens negative", OPENAI, "{'model':'a','max_tokens':-1}", BADVAL,
      "max_tokens", NULL, 0, 0 },
    { "reasoning_effort high", OPENAI,
      "{'model':'a','reasoning_effort':'high'}", OK, NULL, NULL, 0, 24576 },
    { "reasoning_effort unknown", OPENAI,
      "{'model':'a','reasoning_effort':'max'}", BADVAL, "reasoning_effort",
      NULL, 0, 0 },
    { "Google's thinking budget through OpenAI", OPENAI, "{'model':'a',"
      "'extra_body':{'google':{'thinking_config':{'thinking_budget':800}}}}",
      OK, NULL, NULL, 0, 800 },
    { "... spelled otherwise", OPENAI, "{'model':'a','extra_body':{'google':"
      "{'thinking_config':{'thinkingBudget':800}}}}", AMBIG, "thinkingBudget",
      "thinking_budget", 0, 0 },
    { "Gemini: generationConfig and generation_config", GEMINI,
      "{'contents':[],'generationConfig':{},'generation_config':{}}", AMBIG,
      "generation_config", NULL, 0, 0 },
    { "Gemini: GenerationConfig", GEMINI,
      "{'contents':[],'GenerationConfig':{'candidateCount':2}}", AMBIG,
      "GenerationConfig", "generationConfig", 0, 0 },
    { "Gemini: proto names are Google's too", GEMINI,
      "{'contents':[],'generation_config':{'max_output_tokens':3000,"
      "'thinking_config':{'thinking_budget':30000}}}", OK, NULL, NULL,
      3000, 30000 },
    { "Gemini: thinkingBudget -1 (dynamic) raises nothing", GEMINI,
      "{'contents':[],'generationConfig':{'thinkingConfig':"
      "{'thinkingBudget':-1}}}", OK, NULL, NULL, 0, 0 },
    { "Gemini: thinkingBudget 1.5", GEMINI, "{'contents':[],"
      "'generationConfig':{'thinkingConfig':{'thinkingBudget':1.5}}}",
      BADVAL, "thinkingBudget", NULL, 0, 0 },
    { "Gemini: two thinkingConfig spellings", GEMINI, "{'contents':[],"
      "'generationConfig':{'thinkingConfig':{},'thinking_config':{}}}",
      AMBIG, "thinking_config", NULL, 0, 0 },
    { "Gemini: mimetype twice in a blob", GEMINI, "{'contents':[{'parts':"
      "[{'inlineData':{'mimeType':'a','MimeType':'b','data':'QQ=='}}]}]}",
      AMBIG, "MimeType", NULL, 0, 0 },
    { "Gemini: Contents", GEMINI, "{'contents':[],'Contents':[]}", AMBIG,
      "Contents", NULL, 0, 0 }
};


static void
check_reading(void)
{
    size_t                       i, len;
    u_char                      *copy;
    ngx_int_t                    rc;
    const char                  *named;
    reading_case_t              *c;
    ngx_http_imgbill_request_t   req;

    for (i = 0; i < sizeof(reading_cases) / sizeof(reading_cases[0]); i++) {
        c = &reading_cases[i];

        len = strlen(c->body);
        copy = malloc(len);

        for (named = c->body; *named; named++) {
            copy[named - c->body] = (*named == '\'') ? '"' : *named;
        }

        rc = ngx_http_imgbill_check_request(copy, len, c->api, NULL, 1 << 20,
                                            &req);

        named = (rc == AMBIG) ? req.key : (rc == BADVAL) ? req.param : NULL;

        ok(rc == c->rc
           && (c->key == NULL ? named == NULL
                              : named != NULL && strcmp(named, c->key) == 0)
           && (rc != AMBIG
               || (c->spelling == NULL ? req.spelling == NULL
                                       : req.spelling != NULL
                                         && strcmp(req.spelling,
                                                   c->spelling) == 0))
           && (rc != OK || (req.max_output == c->max_output
                            && req.thinking == c->thinking)),
           "one reading: %s (rc %ld, %s, %s, %ld, %ld)", c->name, (long) rc,
           named ? named : "-", req.spelling ? req.spelling : "-",
           (long) req.max_output, (long) req.thinking);

        json_decref(req.root);
        free(copy);
    }

    /* an object of more keys than are compared on the stack: a set */

    for (i = 0; i < 2; i++) {
        char   body[1024], *p;
        int    k;

        p = body + sprintf(body, "{\"model\":\"m\"");

        for (k = 0; k < 40; k++) {
            p += sprintf(p, ",\"key%d\":%d", k, k);
        }

        sprintf(p, "%s}", i ? ",\"KEY_39\":1" : "");

        rc = ngx_http_imgbill_check_request((u_char *) body, strlen(body),
                                            OPENAI, NULL, 1 << 20, &req);

        ok(i ? rc == AMBIG && strcmp(req.key, "KEY_39") == 0 : rc == OK,
           "one reading: 41 keys, %s (rc %ld)",
           i ? "KEY_39 after key39: ambiguous" : "all apart", (long) rc);

        json_decref(req.root);
    }
}


/* a Gemini body: head, one inline image of size bytes under name, tail */

static char *
gemini_body(const char *head, const char *name, size_t size,
    const char *tail)
{
    char    *body, *p;
    size_t   n;

    n = (size + 2) / 3 * 4;
    body = malloc(n + 256);

    p = body + sprintf(body, "%s{'text':'edit'},{'%s':{'mimeType':"
                       "'image/png','data':'", head, name);
    memset(p, 'A', n);

    if (size % 3) {
        memset(p + n - (3 - size % 3), '=', 3 - size % 3);
    }

    sprintf(p + n, "'}}]%s", tail);

    return body;
}


static void
gemini_image(const char *name, const char *head, const char *key,
    size_t size, const char *tail, ngx_int_t want)
{
    char                        *body;
    ngx_int_t                    rc;
    ngx_http_imgbill_request_t   req;

    body = gemini_body(head, key, size, tail);

    rc = check(GEMINI, body, NGX_HTTP_IMGBILL_IMAGE_LIMIT, &req);

    ok(rc == want && req.images == 1
       && req.image_bytes == (size + 2) / 3 * 4
       && (rc == OK ? req.tokens == strlen(body) - req.image_bytes
                                    + NGX_HTTP_IMGBILL_IMAGE_TOKENS
                    : req.image_size == size),
       "%s (rc %ld, images %zu, size %zu, tokens %zu)", name, (long) rc,
       req.images, req.image_size, req.tokens);

    free(body);
}


static void
check_gemini_limit(void)
{
    size_t  five = NGX_HTTP_IMGBILL_IMAGE_LIMIT;

    gemini_image("Gemini: an image of exactly 5 MiB",
                 "{'contents':[{'role':'user','parts':[", "inlineData", five,
                 "}]}", OK);
    gemini_image("Gemini: 5 MiB + 1 byte",
                 "{'contents':[{'role':'user','parts':[", "inlineData",
                 five + 1, "}]}", LARGE);
    gemini_image("Gemini: 5 MiB + 2 bytes, as inline_data",
                 "{'contents':[{'parts':[", "inline_data", five + 2, "}]}",
                 LARGE);
    gemini_image("Gemini: 6 MB in systemInstruction",
                 "{'systemInstruction':{'parts':[", "inlineData", 6000000,
                 "},'contents':[]}", LARGE);
    gemini_image("Gemini: a small one in system_instruction",
                 "{'system_instruction':{'parts':[", "inline_data", 1000,
                 "},'contents':[]}", OK);
}


/* --- Gemini's URL --------------------------------------------------- */

static void
target(const char *uri, ngx_int_t want, const char *model, ngx_uint_t stream)
{
    u_char      *copy;
    size_t       len;
    ngx_int_t    rc;
    ngx_str_t    u, m;
    ngx_uint_t   s;

    len = strlen(uri);
    copy = malloc(len ? len : 1);
    memcpy(copy, uri, len);

    u.data = copy;
    u.len = len;
    m.data = NULL;
    m.len = 0;
    s = 9;

    rc = ngx_http_imgbill_gemini_target(&u, &m, &s);

    if (want == NGX_OK) {
        ok(rc == NGX_OK && m.len == strlen(model)
           && memcmp(m.data, model, m.len) == 0
           && m.data >= copy && m.data + m.len <= copy + len && s == stream,
           "target %.64s: %.32s, stream %lu (rc %ld, %zu bytes, %lu)", uri,
           model, (unsigned long) stream, (long) rc, m.len,
           (unsigned long) s);

    } else {
        ok(rc == NGX_DECLINED && m.data == NULL && s == 9,
           "target %.64s: declined (rc %ld)", uri, (long) rc);
    }

    free(copy);
}


static const char  *declined[] = {
    "/v1beta/models/gemini-2.5-flash-image:countTokens",
    "/v1beta/models/gemini-2.5-flash-image:generatecontent",
    "/v1beta/models/gemini-2.5-flash-image:generateContent/",
    "/v1beta/models/gemini-2.5-flash-image:generateContents",
    "/v1beta/models/gemini-2.5-flash-image:",
    "/v1beta/models/gemini-2.5-flash-image",
    "/v1beta/models/:generateContent",
    "/v1beta/models/gemini 2.5:generateContent",
    "/v1beta/models/a/b:generateContent",
    "/v1beta/models/gemini%2D2:generateContent",
    "/v1beta/models/caf\xc3\xa9:generateContent",
    "/v1beta/models/a:b:generateContent",
    "/v1beta/models/gemini-2.5-flash-image:generateContent:x",
    "/v1beta/gemini-2.5-flash-image:generateContent",
    "/v1beta/tunedModels/x:generateContent",
    "/v1beta/Models/x:generateContent",
    "/v1:generateContent/models/x",
    "/models/",
    ""
};


static void
check_target(void)
{
    char    uri[300], model[129];
    size_t  i;

    target("/v1beta/models/gemini-2.5-flash-image:generateContent",
           NGX_OK, "gemini-2.5-flash-image", 0);
    target("/v1beta/models/gemini-3-pro-image-preview:streamGenerateContent",
           NGX_OK, "gemini-3-pro-image-preview", 1);
    target("/fast/v1beta/models/gemini-3-pro-image-preview"
           ":streamGenerateContent", NGX_OK, "gemini-3-pro-image-preview", 1);
    target("/fast/v1beta/models/gemini-2.5-flash-image:generateContent",
           NGX_OK, "gemini-2.5-flash-image", 0);
    target("/models/a_b.C-9:generateContent", NGX_OK, "a_b.C-9", 0);
    target("/v1beta/models/x/models/y:generateContent", NGX_OK, "y", 0);

    for (i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
        target(declined[i], NGX_DECLINED, NULL, 0);
    }

    memset(model, 'm', 128);
    model[128] = '\0';
    sprintf(uri, "/models/%s:generateContent", model);
    target(uri, NGX_OK, model, 0);

    memset(uri + 8, 'm', 129);
    strcpy(uri + 137, ":generateContent");
    target(uri, NGX_DECLINED, NULL, 0);
}


/* --- ?key= ---------------------------------------------------------- */

static const char  *strip_cases[][2] = {
    { "alt=sse&key=K", "alt=sse" },        { "key=K&alt=sse", "alt=sse" },
    { "key=K", "" },                       { "a=1&key=K&b=2", "a=1&b=2" },
    { "key=a&key=b", "" },                 { "KEY=a&Key=b&alt=sse", "alt=sse" },
    { "%6Bey=K&alt=sse", "alt=sse" },      { "%6b%65%79=K", "" },
    { "%6Bey%3DK", "%6Bey%3DK" },          { "%256Bey=K", "%256Bey=K" },
    { "%zzey=K&ke%", "%zzey=K&ke%" },      { "key&alt=sse", "alt=sse" },
    { "key=&alt=sse", "alt=sse" },         { "a=key=1", "a=key=1" },
    { "a&&key=K&b", "a&&b" },              { "&key=K", "" },
    { "key=K&", "" },                      { "&", "&" },
    { "alt=sse", "alt=sse" },
    { "apikey=K&key=K2&monkey=1&key2=2&keys", "apikey=K&monkey=1&key2=2&keys" }
};


static void
check_strip_args(void)
{
    u_char       buf[64];
    size_t       i, n;
    const char  *args, *want;

    for (i = 0; i < sizeof(strip_cases) / sizeof(strip_cases[0]); i++) {
        args = strip_cases[i][0];
        want = strip_cases[i][1];

        n = ngx_http_imgbill_strip_args(buf, (u_char *) args, strlen(args),
                                        &key_arg);

        ok(n == strlen(want) && memcmp(buf, want, n) == 0,
           "strip \"%s\" -> \"%s\" (\"%.*s\")", args, want, (int) n, buf);
    }
}


/* a request as nginx's HTTP/1 parser leaves it: one buffer for all */

typedef struct {
    ngx_http_request_t            r;
    ngx_table_elt_t               h[2];
    u_char                        line[256];
    u_char                        hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_http_imgbill_loc_conf_t   lcf;
    ngx_http_imgbill_main_conf_t  mcf;    /* no worker: the digest is
                                             looked up on each call */
    void                         *main_conf[1];
} fake_t;


static void
fake_request(fake_t *f, ngx_http_imgbill_api_t *api, ngx_flag_t models,
    const char *uri, const char *header)
{
    u_char  *q;
    size_t   n;

    memset(f, 0, sizeof(fake_t));

    n = sprintf((char *) f->line, "POST %s HTTP/1.1", uri);

    f->r.request_line.data = f->line;
    f->r.request_line.len = n;
    f->r.unparsed_uri.data = f->line + 5;
    f->r.unparsed_uri.len = strlen(uri);
    f->r.valid_unparsed_uri = 1;

    q = (u_char *) strchr((char *) f->line, '?');

    if (q) {
        f->r.args.data = q + 1;
        f->r.args.len = f->line + 5 + strlen(uri) - (q + 1);
    }

    f->r.headers_in.headers.part.elts = f->h;

    if (header) {
        ngx_str_set(&f->h[0].key, "X-Goog-Api-Key");
        f->h[0].value.data = (u_char *) header;
        f->h[0].value.len = strlen(header);
        f->r.headers_in.headers.part.nelts = 1;
    }

    f->lcf.api = api;
    f->lcf.models = models;

    f->main_conf[ngx_http_imgbill_module.ctx_index] = &f->mcf;
    f->r.main_conf = f->main_conf;
}


static int
sha256_is(u_char *hash, const char *key)
{
    u_char        md[EVP_MAX_MD_SIZE], hex[2 * EVP_MAX_MD_SIZE];
    unsigned int  len;

    EVP_Digest(key, strlen(key), md, &len, EVP_sha256(), NULL);
    ngx_hex_dump(hex, md, len);

    return memcmp(hash, hex, NGX_HTTP_IMGBILL_KEY_HASH_LEN) == 0;
}


static int
has(ngx_str_t *s, const char *needle)
{
    size_t  n;

    n = strlen(needle);

    return s->len >= n && memmem(s->data, s->len, needle, n) != NULL;
}


static int
args_are(ngx_http_request_t *r, const char *want)
{
    return r->args.len == strlen(want)
           && memcmp(r->args.data, want, r->args.len) == 0;
}


static void
check_api_key(void)
{
    ngx_int_t  rc;
    fake_t     f;

    fake_request(&f, GEMINI, 0,
                 "/v1beta/models/m:streamGenerateContent?alt=sse&key=SECRET",
                 NULL);
    rc = ngx_http_imgbill_api_key(&f.r, &f.lcf, f.hash);

    ok(rc == NGX_OK && sha256_is(f.hash, "SECRET"),
       "relay: the ?key= is the client's key");
    ok(args_are(&f.r, "alt=sse") && !f.r.valid_unparsed_uri,
       "relay: the upstream gets r->uri and \"alt=sse\" (\"%.*s\", %d)",
       (int) f.r.args.len, f.r.args.data, f.r.valid_unparsed_uri);
    ok(has(&f.r.request_line, "?alt=sse&key=xxxxxx HTTP/1.1")
       && !has(&f.r.request_line, "SECRET")
       && !has(&f.r.unparsed_uri, "SECRET"),
       "relay: $request and $request_uri show it masked (\"%.*s\")",
       (int) f.r.request_line.len, f.r.request_line.data);

    fake_request(&f, GEMINI, 0,
                 "/v1beta/models/m:generateContent?key=junk&KEY=x&a=1",
                 "HEADERKEY");
    rc = ngx_http_imgbill_api_key(&f.r, &f.lcf, f.hash);

    ok(rc == NGX_OK && sha256_is(f.hash, "HEADERKEY")
       && f.h[0].value.len == 0 && args_are(&f.r, "a=1")
       && has(&f.r.request_line, "?key=xxxx&KEY=x&a=1 "),
       "relay: a header key, every ?key= still stripped and masked "
       "(\"%.*s\")", (int) f.r.request_line.len, f.r.request_line.data);

    fake_request(&f, GEMINI, 0,
                 "/v1beta/models/m:generateContent", NULL);
    rc = ngx_http_imgbill_api_key(&f.r, &f.lcf, f.hash);

    ok(rc == NGX_DECLINED && f.r.args.len == 0 && !f.r.valid_unparsed_uri,
       "relay: no key, no arguments");

    fake_request(&f, GEMINI, 1,
                 "/v1beta/models?key=SECRET&pageSize=5", NULL);
    rc = ngx_http_imgbill_api_key(&f.r, &f.lcf, f.hash);

    ok(rc == NGX_OK && sha256_is(f.hash, "SECRET")
       && args_are(&f.r, "key=xxxxxx&pageSize=5") && f.r.valid_unparsed_uri,
       "model list: masked, not stripped: nothing is proxied");

    fake_request(&f, OPENAI, 0,
                 "/v1/chat/completions?key=x", NULL);
    rc = ngx_http_imgbill_api_key(&f.r, &f.lcf, f.hash);

    ok(rc == NGX_DECLINED && args_are(&f.r, "key=x") && f.r.valid_unparsed_uri,
       "OpenAI: the arguments are not Gemini's");
}


/* HTTP/2: the request line is built apart from the path */

static void
check_http2(void)
{
    u_char      path[] = "/v1beta/models/m:generateContent?key=SECRET&alt=sse";
    u_char      line[] = "POST /v1beta/models/m:generateContent"
                         "?key=SECRET&alt=sse HTTP/2.0";
    fake_t      f;
    ngx_int_t   rc;

    fake_request(&f, GEMINI, 0, "/", NULL);

    f.r.request_line.data = line;
    f.r.request_line.len = sizeof(line) - 1;
    f.r.unparsed_uri.data = path;
    f.r.unparsed_uri.len = sizeof(path) - 1;
    f.r.args.data = (u_char *) strchr((char *) path, '?') + 1;
    f.r.args.len = path + sizeof(path) - 1 - f.r.args.data;

    rc = ngx_http_imgbill_api_key(&f.r, &f.lcf, f.hash);

    ok(rc == NGX_OK && sha256_is(f.hash, "SECRET")
       && args_are(&f.r, "alt=sse")
       && !has(&f.r.request_line, "SECRET")
       && !has(&f.r.unparsed_uri, "SECRET"),
       "HTTP/2: stripped, and masked in both buffers (\"%.*s\")",
       (int) f.r.request_line.len, f.r.request_line.data);

    /* twice is harmless: the access handler may call it too */

    rc = ngx_http_imgbill_strip_query_arg(&f.r, &key_arg);

    ok(rc == NGX_OK && args_are(&f.r, "alt=sse")
       && !has(&f.r.request_line, "SECRET"),
       "strip_query_key twice");
}


/*
 * The compactor: a body read in pieces, cut anywhere, finds what it finds
 * whole; long strings are counted as they decode; the marked members'
 * places are exact; the limits hold.
 */

static ngx_int_t
pieces(ngx_http_imgbill_api_t *api, const char *body, size_t *cuts,
    ngx_uint_t ncuts, ngx_http_imgbill_request_t *req)
{
    u_char                      *copy;
    size_t                       at, to, len;
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_http_imgbill_compact_t  *c;

    len = strlen(body);
    c = ngx_http_imgbill_compact_create(NGX_HTTP_IMGBILL_COMPACT_MAX,
                                        api->marks, NULL);

    for (at = 0, i = 0; at < len; at = to, i++) {
        to = (i < ncuts && cuts[i] < len) ? cuts[i] : len;

        /* each piece an exact-size heap copy, as nginx's buffers are */

        copy = malloc(to - at ? to - at : 1);
        memcpy(copy, body + at, to - at);
        ngx_http_imgbill_compact_feed(c, copy, copy + (to - at));
        free(copy);
    }

    rc = ngx_http_imgbill_check_compact(c, api, NULL, 1 << 20, req);

    ngx_http_imgbill_compact_free(c);
    json_decref(req->root);
    req->root = NULL;

    return rc;
}


static int
same(ngx_http_imgbill_request_t *a, ngx_http_imgbill_request_t *b)
{
    return a->images == b->images && a->image_bytes == b->image_bytes
           && a->image_size == b->image_size && a->tokens == b->tokens
           && a->stream == b->stream && a->usage_asked == b->usage_asked
           && a->root_close == b->root_close
           && memcmp(a->marks, b->marks, sizeof(a->marks)) == 0;
}


static void
check_compact(void)
{
    char                        *body, *big, *url;
    size_t                       i, j, len, cuts[2], n;
    ngx_int_t                    rc, prc;
    ngx_uint_t                   all;
    ngx_http_imgbill_request_t   whole, part;

    /* a data URL of 600 base64 characters, '/' escaped as PHP sends it,
       one "A" as "\u0041", ending "==" */

    url = malloc(4096);
    n = sprintf(url, "data:image\\/png;base64,");

    for (i = 0; i < 597; i++) {
        url[n++] = (i == 10) ? '\\' : (i % 7 == 0) ? '/' : 'Q';

        if (i == 10) {
            n += sprintf(url + n, "u0041");
        }
    }

    memcpy(url + n, "A==", 4);

    body = malloc(8192);
    sprintf(body, "{\"model\":\"m\",\"stream\":true,\"stream_options\":"
            "{\"include_usage\":false},\"messages\":[{\"role\":\"user\","
            "\"content\":[{\"type\":\"text\",\"text\":\"draw\"},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"%s\"}}]}]}\n",
            url);
    len = strlen(body);

    rc = pieces(&ngx_http_imgbill_openai_api, body, NULL, 0, &whole);

    /* 600 characters after the comma, each escape counted once decoded;
       450 bytes, less 2 for "==" */

    ok(rc == OK && whole.images == 1 && whole.image_size == 0
       && whole.image_bytes == sizeof("data:image/png;base64,") - 1 + 600
       && whole.tokens == len - whole.image_bytes
                          + NGX_HTTP_IMGBILL_IMAGE_TOKENS,
       "compact: a long data URL counted decoded (rc %d, %zu bytes)",
       (int) rc, whole.image_bytes);

    rc = pieces(&ngx_http_imgbill_openai_api, body, NULL, 0, &whole);

    ok(whole.marks[0].key == (off_t) (strstr(body, "\"stream_options\"")
                                      - body)
       && whole.marks[0].start == whole.marks[0].key
                                  + (off_t) sizeof("\"stream_options\":") - 1
       && whole.marks[1].start == (off_t) (strstr(body, "false") - body)
       && whole.marks[1].end == whole.marks[1].start + 5
       && whole.marks[0].end == whole.marks[1].end + 1
       && whole.marks[0].comma == whole.marks[0].key - 1
       && whole.root_close == (off_t) len - 2,
       "compact: stream_options and include_usage found where they are");

    /* cut once at every byte, and in pieces of one */

    all = 1;

    for (i = 1; i < len; i++) {
        cuts[0] = i;
        prc = pieces(&ngx_http_imgbill_openai_api, body, cuts, 1, &part);
        all = all && prc == rc && same(&part, &whole);
    }

    for (i = 1; i < len && all; i += 37) {
        for (j = i + 1; j < len; j += 5) {
            cuts[0] = i;
            cuts[1] = j;
            prc = pieces(&ngx_http_imgbill_openai_api, body, cuts, 2, &part);
            all = all && prc == rc && same(&part, &whole);
        }
    }

    ok(all, "compact: cut at every byte, and twice, as whole");

    /* a limit too small lets the same image through... too large */

    rc = check(&ngx_http_imgbill_openai_api, body, 100, &part);
    ok(rc == LARGE && part.image_size == 448,
       "compact: a long image over the limit (rc %d, %zu)", (int) rc,
       part.image_size);

    /* Gemini's inline data, long, as base64 */

    sprintf(body, "{'contents':[{'parts':[{'inline_data':"
            "{'mime_type':'image/png','data':'%s'}}]}]}", url + 23);
    rc = check(&ngx_http_imgbill_gemini_api, body, 100, &part);
    ok(rc == LARGE && part.image_size == 448,
       "compact: Gemini's long base64 over the limit (rc %d, %zu)",
       (int) rc, part.image_size);

    /* what jansson refuses, refused as the body streams */

    rc = check(&ngx_http_imgbill_openai_api,
               "{'model':'m','messages':[],'x':'\\u0000'}", 0, &part);
    ok(rc == NGX_HTTP_IMGBILL_REQ_INVALID_JSON,
       "compact: \\u0000 refused (rc %d)", (int) rc);

    rc = check(&ngx_http_imgbill_openai_api,
               "{'model':'m','messages':[],'x':'\\ud800x'}", 0, &part);
    ok(rc == NGX_HTTP_IMGBILL_REQ_INVALID_JSON,
       "compact: a lone surrogate refused (rc %d)", (int) rc);

    /* a model too long to be one */

    memset(url, 'm', 300);
    url[300] = '\0';
    sprintf(body, "{'model':'%s','messages':[]}", url);
    rc = check(&ngx_http_imgbill_openai_api, body, 0, &part);
    ok(rc == NGX_HTTP_IMGBILL_REQ_BAD_VALUE && part.param
       && strcmp(part.param, "model") == 0,
       "compact: a 300-byte model is a bad value (rc %d)", (int) rc);

    /* structure past the limit: 413, however valid */

    n = NGX_HTTP_IMGBILL_COMPACT_MAX;
    big = malloc(n + 64);
    len = sprintf(big, "{'model':'m','messages':[],'x':[");

    while (len < n) {
        big[len++] = '1';
        big[len++] = ',';
    }

    memcpy(big + len, "1]}", 4);
    rc = check(&ngx_http_imgbill_openai_api, big, 0, &part);
    ok(rc == NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX,
       "compact: %zu bytes of structure: TOO_COMPLEX (rc %d)", len,
       (int) rc);

    /* past the limit the rest is not read: cut short, the same 413; a
       NUL byte after it is still found */

    big[len + 1] = '\0';
    rc = check(&ngx_http_imgbill_openai_api, big, 0, &part);
    ok(rc == NGX_HTTP_IMGBILL_REQ_TOO_COMPLEX,
       "compact: ... cut short: TOO_COMPLEX all the same (rc %d)", (int) rc);

    for (i = 0; i < len; i++) {
        big[i] = (big[i] == '\'') ? '"' : big[i];
    }

    rc = ngx_http_imgbill_check_request((u_char *) big, len + 2,
                                        &ngx_http_imgbill_openai_api, NULL,
                                        0, &part);
    json_decref(part.root);
    ok(rc == NGX_HTTP_IMGBILL_REQ_NUL_BYTE,
       "compact: ... and with a NUL at its end, NUL_BYTE (rc %d)", (int) rc);

    free(big);
    free(body);
    free(url);
}


int
main(void)
{
    check_bodies();
    check_compact();
    check_reading();
    check_gemini_limit();
    check_target();
    check_strip_args();
    check_api_key();
    check_http2();

    while (nallocs) {
        free(allocs[--nallocs]);
    }

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
