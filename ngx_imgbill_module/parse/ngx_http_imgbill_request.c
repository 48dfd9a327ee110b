
/*
 * imgbill: the request validator.
 *
 * Everything imgbill believes about a request body before it asks Redis for
 * money: a JSON object, its "model" (OpenAI) or its "contents" (Gemini, whose
 * model is in the URL: ngx_http_imgbill_gemini_target()), its inline
 * reference images, how many images and how much output it asks for, and
 * whether the client asked for a stream, each read once, as the upstream
 * reads it (ngx_http_imgbill_reading.c).  Kept apart from the access
 * phase, which owns the HTTP side, so that it can be fuzzed on its own
 * (t/fuzz/).
 */


#include "ngx_http_imgbill_module.h"


#define NGX_HTTP_IMGBILL_MODEL_MAX  128


static ngx_int_t ngx_http_imgbill_parse(u_char *p, size_t len,
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_check_openai(size_t image_limit,
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_openai_output(
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_check_stream(ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_check_gemini(size_t image_limit,
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_gemini_content(json_t *content,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_gemini_parts(json_t *parts,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_gemini_blob(json_t *blob,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_count_image(json_t *s, size_t size,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_asked(json_t *n, const char *name,
    ngx_http_imgbill_request_t *req);
static size_t ngx_http_imgbill_data_url_size(u_char *url, size_t len);
static size_t ngx_http_imgbill_base64_size(u_char *p, size_t len);
static ngx_int_t ngx_http_imgbill_model_name(u_char *p, u_char *last);


ngx_int_t
ngx_http_imgbill_check_request(u_char *p, size_t len, ngx_uint_t api,
    size_t image_limit, ngx_http_imgbill_request_t *req)
{
    ngx_int_t  rc;

    ngx_memzero(req, sizeof(ngx_http_imgbill_request_t));

    req->asked = 1;

    rc = ngx_http_imgbill_parse(p, len, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    if (api == NGX_HTTP_IMGBILL_API_GEMINI) {
        rc = ngx_http_imgbill_check_gemini(image_limit, req);

    } else {
        rc = ngx_http_imgbill_check_openai(image_limit, req);
    }

    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    /*
     * What a metered hold assumes the prompt costs: every byte of the body
     * outside inline images may be a token of text, and each reference
     * image counts as NGX_HTTP_IMGBILL_IMAGE_TOKENS.  An image's string
     * never takes more bytes decoded than it took in the body, so this
     * cannot wrap.
     */

    req->tokens = len - req->image_bytes
                  + req->images * NGX_HTTP_IMGBILL_IMAGE_TOKENS;

    if (api == NGX_HTTP_IMGBILL_API_GEMINI) {
        /* streaming is the URL's method there, not the body's */
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    return ngx_http_imgbill_check_stream(req);
}


/* a JSON object, or why not */

static ngx_int_t
ngx_http_imgbill_parse(u_char *p, size_t len, ngx_http_imgbill_request_t *req)
{
    if (len == 0) {
        return NGX_HTTP_IMGBILL_REQ_EMPTY;
    }

    /*
     * JSON has no place for a raw NUL, yet jansson 2.14 takes one right
     * after a number ({"n":1<NUL>}); the upstream would see what imgbill
     * did not validate.
     */

    if (memchr(p, '\0', len) != NULL) {
        return NGX_HTTP_IMGBILL_REQ_NUL_BYTE;
    }

    /* two "model" keys would let the relay and the upstream disagree */

    req->root = json_loadb((char *) p, len, JSON_REJECT_DUPLICATES,
                           &req->error);

    if (req->root == NULL) {
        return NGX_HTTP_IMGBILL_REQ_INVALID_JSON;
    }

    if (!json_is_object(req->root)) {
        return NGX_HTTP_IMGBILL_REQ_NOT_OBJECT;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * The members each object of a request has that the relay reads, in the
 * spellings the upstream reads them by (ngx_http_imgbill_reading.c): an
 * OpenAI chat completion's...
 */

static const char  *ngx_http_imgbill_openai_root[] = {
    "model", "messages", "n", "stream", "stream_options", "max_tokens",
    "max_completion_tokens", "reasoning_effort", "extra_body", NULL
};

static const char  *ngx_http_imgbill_openai_options[] = {
    "include_usage", NULL
};

static const char  *ngx_http_imgbill_openai_message[] = { "content", NULL };
static const char  *ngx_http_imgbill_openai_part[] = { "image_url", NULL };
static const char  *ngx_http_imgbill_openai_url[] = { "url", NULL };

/* Google's OpenAI endpoint takes Gemini's thinking budget here */
static const char  *ngx_http_imgbill_openai_extra[] = { "google", NULL };
static const char  *ngx_http_imgbill_openai_google[] = {
    "thinking_config", NULL
};
static const char  *ngx_http_imgbill_openai_thinking[] = {
    "thinking_budget", NULL
};

/* ... and a GenerateContentRequest's, under both of their proto3 names */

static const char  *ngx_http_imgbill_gemini_root[] = {
    "contents", "systemInstruction", "system_instruction",
    "generationConfig", "generation_config", NULL
};

static const char  *ngx_http_imgbill_gemini_config[] = {
    "candidateCount", "candidate_count", "maxOutputTokens",
    "max_output_tokens", "thinkingConfig", "thinking_config", NULL
};

static const char  *ngx_http_imgbill_gemini_thinking[] = {
    "thinkingBudget", "thinking_budget", NULL
};

static const char  *ngx_http_imgbill_gemini_content_keys[] = {
    "parts", NULL
};
static const char  *ngx_http_imgbill_gemini_blob_keys[] = { "data", NULL };

static const char  *ngx_http_imgbill_system[] = {
    "systemInstruction", "system_instruction", NULL
};

static const char  *ngx_http_imgbill_inline[] = {
    "inlineData", "inline_data", NULL
};

static const char  *ngx_http_imgbill_generation[] = {
    "generationConfig", "generation_config", NULL
};

static const char  *ngx_http_imgbill_candidates[] = {
    "candidateCount", "candidate_count", NULL
};

static const char  *ngx_http_imgbill_max_output[] = {
    "maxOutputTokens", "max_output_tokens", NULL
};

static const char  *ngx_http_imgbill_thinking[] = {
    "thinkingConfig", "thinking_config", NULL
};


/*
 * The thinking OpenAI's reasoning_effort asks of Gemini, as Google's
 * OpenAI endpoint maps it; anything else is refused, not guessed.
 */

static struct {
    ngx_str_t   effort;
    ngx_int_t   budget;
} ngx_http_imgbill_efforts[] = {
    { ngx_string("none"), 0 },
    { ngx_string("minimal"), 0 },
    { ngx_string("low"), 1024 },
    { ngx_string("medium"), 8192 },
    { ngx_string("high"), 24576 },
    { ngx_null_string, 0 }
};


/*
 * Reference images arrive as content parts of messages:
 * {"type":"image_url","image_url":{"url":"data:image/png;base64,..."}}
 * (or with the URL string directly under "image_url").  Only inline data
 * URLs have a size here; their decoded size is known from the base64 length
 * alone, without decoding.
 */

static ngx_int_t
ngx_http_imgbill_check_openai(size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    size_t      i, j, size;
    json_t     *model, *messages, *message, *part, *image;
    ngx_int_t   rc;

    rc = ngx_http_imgbill_reading_keys(req->root,
                                       ngx_http_imgbill_openai_root, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    model = json_object_get(req->root, "model");

    if (!json_is_string(model) || json_string_length(model) == 0) {
        return NGX_HTTP_IMGBILL_REQ_NO_MODEL;
    }

    req->model.len = json_string_length(model);
    req->model.data = (u_char *) json_string_value(model);

    /* each of the n choices is a generation of its own */

    rc = ngx_http_imgbill_asked(json_object_get(req->root, "n"), "n", req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    rc = ngx_http_imgbill_openai_output(req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    messages = json_object_get(req->root, "messages");

    json_array_foreach(messages, i, message) {

        rc = ngx_http_imgbill_reading_keys(message,
                                           ngx_http_imgbill_openai_message,
                                           req);
        if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
            return rc;
        }

        json_array_foreach(json_object_get(message, "content"), j, part) {

            rc = ngx_http_imgbill_reading_keys(part,
                                               ngx_http_imgbill_openai_part,
                                               req);
            if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
                return rc;
            }

            image = json_object_get(part, "image_url");

            if (json_is_object(image)) {
                rc = ngx_http_imgbill_reading_keys(image,
                                                   ngx_http_imgbill_openai_url,
                                                   req);
                if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
                    return rc;
                }

                image = json_object_get(image, "url");
            }

            if (!json_is_string(image)) {
                continue;
            }

            size = ngx_http_imgbill_data_url_size(
                       (u_char *) json_string_value(image),
                       json_string_length(image));

            rc = ngx_http_imgbill_count_image(image, size, image_limit, req);
            if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
                return rc;
            }
        }
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * What an OpenAI request lets one image cost in output: max_tokens or
 * max_completion_tokens (the larger), and thinking, by reasoning_effort or
 * by Google's extra_body.google.thinking_config.thinking_budget.
 */

static ngx_int_t
ngx_http_imgbill_openai_output(ngx_http_imgbill_request_t *req)
{
    json_t      *v, *extra, *google, *config;
    ngx_int_t    rc, a, b;
    ngx_uint_t   i;

    rc = ngx_http_imgbill_reading_tokens(
             json_object_get(req->root, "max_tokens"), "max_tokens", 0, &a,
             req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    rc = ngx_http_imgbill_reading_tokens(
             json_object_get(req->root, "max_completion_tokens"),
             "max_completion_tokens", 0, &b, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    req->max_output = ngx_max(a, b);

    v = json_object_get(req->root, "reasoning_effort");

    if (v != NULL && !json_is_null(v)) {
        for (i = 0; ngx_http_imgbill_efforts[i].effort.len; i++) {
            if (json_is_string(v)
                && json_string_length(v)
                   == ngx_http_imgbill_efforts[i].effort.len
                && ngx_strncmp(json_string_value(v),
                               ngx_http_imgbill_efforts[i].effort.data,
                               json_string_length(v)) == 0)
            {
                break;
            }
        }

        if (ngx_http_imgbill_efforts[i].effort.len == 0) {
            req->param = "reasoning_effort";
            req->expected = "none, minimal, low, medium or high";
            return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
        }

        req->thinking = ngx_http_imgbill_efforts[i].budget;
    }

    extra = json_object_get(req->root, "extra_body");
    google = json_object_get(extra, "google");
    config = json_object_get(google, "thinking_config");

    if ((rc = ngx_http_imgbill_reading_keys(extra,
                                            ngx_http_imgbill_openai_extra, req))
           != NGX_HTTP_IMGBILL_REQ_OK
        || (rc = ngx_http_imgbill_reading_keys(google,
                                            ngx_http_imgbill_openai_google,
                                            req))
           != NGX_HTTP_IMGBILL_REQ_OK
        || (rc = ngx_http_imgbill_reading_keys(config,
                                          ngx_http_imgbill_openai_thinking,
                                          req))
           != NGX_HTTP_IMGBILL_REQ_OK
        || (rc = ngx_http_imgbill_reading_tokens(
                     json_object_get(config, "thinking_budget"),
                     "thinking_budget", -1, &a, req))
           != NGX_HTTP_IMGBILL_REQ_OK)
    {
        return rc;
    }

    req->thinking = ngx_max(req->thinking, a);

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * A streamed reply is billed from its last usage chunk, which only comes
 * with "stream_options": {"include_usage": true}: the filter asks for it
 * when the client did not, and must know what the client said.  "stream"
 * is a boolean or null, "stream_options" an object or null, its
 * include_usage a boolean or null: any other value would be read one way
 * by the relay and another by some upstream (1 and "true" stream there).
 */

static ngx_int_t
ngx_http_imgbill_check_stream(ngx_http_imgbill_request_t *req)
{
    json_t      *options, *usage;
    ngx_int_t    rc;
    ngx_uint_t   flag;

    rc = ngx_http_imgbill_reading_flag(json_object_get(req->root, "stream"),
                                       "stream", &flag, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    options = json_object_get(req->root, "stream_options");

    if (options != NULL && !json_is_object(options) && !json_is_null(options))
    {
        return NGX_HTTP_IMGBILL_REQ_STREAM_OPTIONS;
    }

    rc = ngx_http_imgbill_reading_keys(options,
                                       ngx_http_imgbill_openai_options, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    usage = json_object_get(options, "include_usage");

    if (usage != NULL && !json_is_boolean(usage) && !json_is_null(usage)) {
        return NGX_HTTP_IMGBILL_REQ_STREAM_OPTIONS;
    }

    req->stream = flag;
    req->stream_options = (options != NULL);
    req->usage_asked = json_is_true(usage);

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * A GenerateContentRequest: {"contents": [{"parts": [...]}, ...],
 * "systemInstruction": {"parts": [...]}, "generationConfig": {...}}.
 * Google reads its JSON by the proto3 mapping, which takes a field under
 * its lowerCamelCase name and under its proto name alike; both are read,
 * and both given is ambiguous.
 */

static ngx_int_t
ngx_http_imgbill_check_gemini(size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    size_t      i;
    json_t     *contents, *content, *config, *thinking;
    ngx_int_t   rc, budget;

    rc = ngx_http_imgbill_reading_keys(req->root,
                                       ngx_http_imgbill_gemini_root, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    contents = json_object_get(req->root, "contents");

    if (!json_is_array(contents)) {
        return NGX_HTTP_IMGBILL_REQ_NO_CONTENTS;
    }

    /* each candidate is a generation of its own; its output is bounded
       by maxOutputTokens, and raised by a thinking budget */

    config = ngx_http_imgbill_reading_member(req->root,
                                             ngx_http_imgbill_generation);
    thinking = ngx_http_imgbill_reading_member(config,
                                               ngx_http_imgbill_thinking);

    if ((rc = ngx_http_imgbill_reading_keys(config,
                                            ngx_http_imgbill_gemini_config,
                                            req))
           != NGX_HTTP_IMGBILL_REQ_OK
        || (rc = ngx_http_imgbill_reading_keys(thinking,
                                            ngx_http_imgbill_gemini_thinking,
                                            req))
           != NGX_HTTP_IMGBILL_REQ_OK
        || (rc = ngx_http_imgbill_asked(
                     ngx_http_imgbill_reading_member(config,
                                                 ngx_http_imgbill_candidates),
                     json_object_get(config, "candidate_count")
                     ? "candidate_count" : "candidateCount", req))
           != NGX_HTTP_IMGBILL_REQ_OK
        || (rc = ngx_http_imgbill_reading_tokens(
                     ngx_http_imgbill_reading_member(config,
                                                 ngx_http_imgbill_max_output),
                     "maxOutputTokens", 0, &req->max_output, req))
           != NGX_HTTP_IMGBILL_REQ_OK
        || (rc = ngx_http_imgbill_reading_tokens(
                     ngx_http_imgbill_reading_member(thinking,
                                            ngx_http_imgbill_gemini_thinking),
                     "thinkingBudget", -1, &budget, req))
           != NGX_HTTP_IMGBILL_REQ_OK)
    {
        return rc;
    }

    req->thinking = budget;

    json_array_foreach(contents, i, content) {
        rc = ngx_http_imgbill_gemini_content(content, image_limit, req);
        if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
            return rc;
        }
    }

    content = ngx_http_imgbill_reading_member(req->root,
                                              ngx_http_imgbill_system);

    return ngx_http_imgbill_gemini_content(content, image_limit, req);
}


/* a Content: {"role": ..., "parts": [...]} */

static ngx_int_t
ngx_http_imgbill_gemini_content(json_t *content, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    ngx_int_t  rc;

    rc = ngx_http_imgbill_reading_keys(content,
                                       ngx_http_imgbill_gemini_content_keys,
                                       req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    return ngx_http_imgbill_gemini_parts(json_object_get(content, "parts"),
                                         image_limit, req);
}


/* inline images only: a "fileData" part is a URI the upstream fetches */

static ngx_int_t
ngx_http_imgbill_gemini_parts(json_t *parts, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    size_t      i;
    json_t     *part;
    ngx_int_t   rc;

    json_array_foreach(parts, i, part) {

        rc = ngx_http_imgbill_reading_keys(part, ngx_http_imgbill_inline,
                                           req);
        if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
            return rc;
        }

        rc = ngx_http_imgbill_gemini_blob(
                 ngx_http_imgbill_reading_member(part, ngx_http_imgbill_inline),
                 image_limit, req);
        if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
            return rc;
        }
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* {"mimeType": "image/png", "data": "<base64>"} */

static ngx_int_t
ngx_http_imgbill_gemini_blob(json_t *blob, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    size_t      size;
    json_t     *data;
    ngx_int_t   rc;

    rc = ngx_http_imgbill_reading_keys(blob, ngx_http_imgbill_gemini_blob_keys,
                                       req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    data = json_object_get(blob, "data");

    if (!json_is_string(data)) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    size = ngx_http_imgbill_base64_size((u_char *) json_string_value(data),
                                        json_string_length(data));

    return ngx_http_imgbill_count_image(data, size, image_limit, req);
}


/*
 * How many images a request asks for: absent or null, one; else a JSON
 * integer of at least 1 ("2.0" or "2" would be read otherwise by some
 * upstream), capped just above what any location allows.
 */

static ngx_int_t
ngx_http_imgbill_asked(json_t *n, const char *name,
    ngx_http_imgbill_request_t *req)
{
    json_int_t  v;

    if (n == NULL || json_is_null(n)) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    req->count = name;

    if (!json_is_integer(n) || (v = json_integer_value(n)) < 1) {
        return NGX_HTTP_IMGBILL_REQ_BAD_COUNT;
    }

    req->asked = (ngx_uint_t) ngx_min(v, NGX_HTTP_IMGBILL_IMAGES_MAX + 1);

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* one reference image, s its string in the body, size its bytes decoded */

static ngx_int_t
ngx_http_imgbill_count_image(json_t *s, size_t size, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    req->images++;
    req->image_bytes += json_string_length(s);

    if (size > image_limit) {
        req->image_size = size;
        return NGX_HTTP_IMGBILL_REQ_IMAGE_TOO_LARGE;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/* the bytes a data URL carries; 0 for any other URL */

static size_t
ngx_http_imgbill_data_url_size(u_char *url, size_t len)
{
    u_char  *comma;

    if (len < sizeof("data:") - 1
        || ngx_strncasecmp(url, (u_char *) "data:", sizeof("data:") - 1) != 0)
    {
        return 0;
    }

    comma = ngx_strlchr(url, url + len, ',');
    if (comma == NULL) {
        return 0;
    }

    if (ngx_strlcasestrn(url, comma, (u_char *) ";base64",
                         sizeof(";base64") - 2)
        == NULL)
    {
        return url + len - (comma + 1);
    }

    return ngx_http_imgbill_base64_size(comma + 1, url + len - (comma + 1));
}


/*
 * Base64's payload without decoding it: 3 bytes for every 4 characters,
 * 1 or 2 for a last group of 2 or 3 (unpadded base64, which decoders
 * take), less one for each '=' among the last two characters.  Invalid
 * base64 is the upstream's to refuse.
 */

static size_t
ngx_http_imgbill_base64_size(u_char *p, size_t len)
{
    size_t  size, pad;

    pad = (len && p[len - 1] == '=') + (len > 1 && p[len - 2] == '=');
    size = len / 4 * 3 + len % 4 * 3 / 4;

    return size - ngx_min(pad, size);
}


/*
 * What Gemini's URL says: ".../models/<model>:generateContent" or
 * ":streamGenerateContent", whatever comes before the last "/models/" (a
 * version, a prefix such as "/fast").  Give it r->uri, decoded and
 * normalised: ngx_http_imgbill_strip_query_key() makes it the URI the
 * upstream receives too, so the model billed is the model run.  Only
 * [A-Za-z0-9._-] passes: the model is priced, logged and written to the
 * ledger.
 */

ngx_int_t
ngx_http_imgbill_gemini_target(ngx_str_t *uri, ngx_str_t *model,
    ngx_uint_t *stream)
{
    u_char  *start, *method, *last;
    size_t   i, n;

    n = sizeof("/models/") - 1;

    for (i = uri->len; i >= n; i--) {
        if (ngx_memcmp(uri->data + i - n, "/models/", n) == 0) {
            break;
        }
    }

    if (i < n) {
        return NGX_DECLINED;
    }

    start = uri->data + i;
    last = uri->data + uri->len;

    /* the method follows the last ':' */

    for (method = last; method > start && method[-1] != ':'; method--) {
        /* void */
    }

    if (method == start
        || ngx_http_imgbill_model_name(start, method - 1) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    n = last - method;

    if (n == sizeof("generateContent") - 1
        && ngx_memcmp(method, "generateContent", n) == 0)
    {
        *stream = 0;

    } else if (n == sizeof("streamGenerateContent") - 1
               && ngx_memcmp(method, "streamGenerateContent", n) == 0)
    {
        *stream = 1;

    } else {
        return NGX_DECLINED;
    }

    model->data = start;
    model->len = method - 1 - start;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_model_name(u_char *p, u_char *last)
{
    u_char  c;

    if (p == last || last - p > NGX_HTTP_IMGBILL_MODEL_MAX) {
        return NGX_DECLINED;
    }

    while (p < last) {
        c = *p++;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')
        {
            continue;
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}
