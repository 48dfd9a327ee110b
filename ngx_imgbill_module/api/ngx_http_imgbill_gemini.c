
/*
 * imgbill: Gemini's native API (generateContent, streamGenerateContent),
 * as the relay reads it.
 *
 *   the key     x-goog-api-key: <key>, then ?key=<key>, then Bearer
 *   the model   the path's ".../models/{model}:generateContent"; the
 *               images asked for, generationConfig.candidateCount
 *   a stream    the path's ":streamGenerateContent", as server-sent
 *               events only (?alt=sse); every event carries the usage
 *   a reply     candidates[].content.parts[].inlineData with an image
 *               MIME type; "usageMetadata", whose output is
 *               candidatesTokenCount + thoughtsTokenCount
 *   an error    {"error":{"code","message","status"}}
 *
 * Google reads its JSON by the proto3 mapping, which takes a field under
 * its lowerCamelCase name and under its proto name alike: both are read,
 * in requests and replies, and both given is ambiguous.
 */


#include "ngx_http_imgbill_api.h"


/* the longest model name a path may give */
#define NGX_HTTP_IMGBILL_MODEL_MAX  128


/* the reply's keys and paths beyond the root's usage and choices */
enum {
    ngx_http_imgbill_gemini_key_content = NGX_HTTP_IMGBILL_SCAN_KEY_API,
    ngx_http_imgbill_gemini_key_parts,
    ngx_http_imgbill_gemini_key_inline_data,
    ngx_http_imgbill_gemini_key_mime_type
};

enum {
    ngx_http_imgbill_gemini_role_content = NGX_HTTP_IMGBILL_SCAN_ROLE_API,
    ngx_http_imgbill_gemini_role_parts,
    ngx_http_imgbill_gemini_role_part,
    ngx_http_imgbill_gemini_role_inline_data
};


ngx_int_t ngx_http_imgbill_gemini_target(ngx_str_t *uri, ngx_str_t *model,
    ngx_uint_t *stream);

static ngx_int_t ngx_http_imgbill_gemini_request_target(
    ngx_http_request_t *r, ngx_str_t *model, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_gemini_query(ngx_http_request_t *r,
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_gemini_model_name(u_char *p, u_char *last);
static ngx_int_t ngx_http_imgbill_gemini_check(
    ngx_http_imgbill_request_t *req, size_t image_limit);
static ngx_int_t ngx_http_imgbill_gemini_content_of(json_t *content,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_gemini_parts_of(json_t *parts,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_gemini_blob(json_t *blob,
    size_t image_limit, ngx_http_imgbill_request_t *req);
static u_char *ngx_http_imgbill_gemini_error(u_char *p,
    ngx_http_imgbill_error_t *err);
static const char *ngx_http_imgbill_gemini_status(ngx_uint_t status);
static u_char *ngx_http_imgbill_gemini_model(u_char *p, ngx_str_t *name);


/* the keys the scanner tells apart, in both of the mapping's spellings:
   Google's replies use the first, but a proxy in between may send the
   other */

static ngx_http_imgbill_scan_key_t  ngx_http_imgbill_gemini_keys[] = {
    { ngx_string("usageMetadata"), ngx_http_imgbill_key_usage },
    { ngx_string("candidates"), ngx_http_imgbill_key_choices },
    { ngx_string("finishReason"), ngx_http_imgbill_key_finish },
    { ngx_string("error"), ngx_http_imgbill_key_error },
    { ngx_string("promptTokenCount"), ngx_http_imgbill_key_prompt },
    { ngx_string("candidatesTokenCount"), ngx_http_imgbill_key_completion },
    { ngx_string("thoughtsTokenCount"), ngx_http_imgbill_key_thoughts },
    { ngx_string("index"), ngx_http_imgbill_key_index },
    { ngx_string("content"), ngx_http_imgbill_gemini_key_content },
    { ngx_string("parts"), ngx_http_imgbill_gemini_key_parts },
    { ngx_string("inlineData"), ngx_http_imgbill_gemini_key_inline_data },
    { ngx_string("inline_data"), ngx_http_imgbill_gemini_key_inline_data },
    { ngx_string("mimeType"), ngx_http_imgbill_gemini_key_mime_type },
    { ngx_string("mime_type"), ngx_http_imgbill_gemini_key_mime_type },
    { ngx_null_string, 0 }
};


/* candidates[].content.parts[].inlineData */

static ngx_http_imgbill_scan_path_t  ngx_http_imgbill_gemini_paths[] = {
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_gemini_key_content, '{',
      ngx_http_imgbill_gemini_role_content },
    { ngx_http_imgbill_gemini_role_content, ngx_http_imgbill_gemini_key_parts,
      '[', ngx_http_imgbill_gemini_role_parts },
    { ngx_http_imgbill_gemini_role_parts, ngx_http_imgbill_key_other, '{',
      ngx_http_imgbill_gemini_role_part },
    { ngx_http_imgbill_gemini_role_part,
      ngx_http_imgbill_gemini_key_inline_data, '{',
      ngx_http_imgbill_gemini_role_inline_data },
    { 0, 0, 0, 0 }
};


/* a part whose inline data has an image MIME type is an image */

static ngx_http_imgbill_scan_mark_t  ngx_http_imgbill_gemini_marks[] = {
    { ngx_http_imgbill_gemini_role_inline_data,
      ngx_http_imgbill_gemini_key_mime_type, ngx_http_imgbill_shows_mime },
    { 0, 0, 0 }
};


/* no "cost" in the usage, no usage chunk of its own */

static ngx_http_imgbill_dialect_t  ngx_http_imgbill_gemini_dialect = {
    ngx_http_imgbill_gemini_keys,
    ngx_http_imgbill_gemini_paths,
    ngx_http_imgbill_gemini_marks,
    0,
    0
};


static ngx_http_imgbill_key_source_t  ngx_http_imgbill_gemini_key[] = {
    { ngx_http_imgbill_key_in_header, ngx_string("x-goog-api-key") },
    { ngx_http_imgbill_key_in_query, ngx_string("key") },
    { ngx_http_imgbill_key_in_bearer, ngx_string("Authorization") },
    { ngx_http_imgbill_key_in_none, ngx_null_string }
};


#define NGX_HTTP_IMGBILL_GEMINI_ERROR                                        \
    "{\"error\":{\"code\":,\"message\":\"\",\"status\":\"\"}}\n"

#define NGX_HTTP_IMGBILL_GEMINI_MODEL                                        \
    ",{\"name\":\"models/\",\"displayName\":\"\","                          \
    "\"supportedGenerationMethods\":"                                         \
    "[\"generateContent\",\"streamGenerateContent\"]}"


/* Gemini's errors leave the kind out: their status names it */

ngx_http_imgbill_api_t  ngx_http_imgbill_gemini_api = {
    ngx_string("gemini"),
    ngx_http_imgbill_gemini_key,
    "x-goog-api-key: <key>",
    ngx_http_imgbill_gemini_request_target,
    ngx_http_imgbill_gemini_check,
    NULL,
    NULL,
    ngx_http_imgbill_gemini_error,
    sizeof(NGX_HTTP_IMGBILL_GEMINI_ERROR) - 1 + NGX_INT_T_LEN
        + sizeof("RESOURCE_EXHAUSTED") - 1,
    ngx_string("{\"models\":["),
    ngx_http_imgbill_gemini_model,
    sizeof(NGX_HTTP_IMGBILL_GEMINI_MODEL) - 1,
    ngx_string("]}\n"),
    &ngx_http_imgbill_gemini_dialect,
    NULL,
    0,
    0,
    0
};


/*
 * The path names the model and whether it streams; the key was taken out
 * of the query with the key itself (ngx_http_imgbill_key.c).
 */

static ngx_int_t
ngx_http_imgbill_gemini_request_target(ngx_http_request_t *r,
    ngx_str_t *model, ngx_http_imgbill_request_t *req)
{
    ngx_int_t   rc;
    ngx_str_t   alt;
    ngx_uint_t  stream;

    if (ngx_http_imgbill_gemini_target(&r->uri, model, &stream) != NGX_OK) {
        req->expected = ".../models/{model}:generateContent or "
                        ":streamGenerateContent";
        return NGX_HTTP_IMGBILL_REQ_NO_TARGET;
    }

    rc = ngx_http_imgbill_gemini_query(r, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    /* without alt=sse Google streams one JSON array, which is not read */

    if (stream
        && (ngx_http_arg(r, (u_char *) "alt", 3, &alt) != NGX_OK
            || alt.len != 3 || ngx_strncmp(alt.data, "sse", 3) != 0))
    {
        req->expected = "streamGenerateContent is relayed as server-sent "
                        "events only: add ?alt=sse";
        return NGX_HTTP_IMGBILL_REQ_STREAM_FORMAT;
    }

    return NGX_HTTP_IMGBILL_REQ_OK;
}


/*
 * The arguments the relay acts on, "alt" and "key", are read once: given
 * twice they could be read two ways, and so could an "alt" spelled
 * otherwise than so (nginx's arguments ignore case, Google's do not, and
 * Google decodes names).  The client's query is the unparsed URI's: the
 * keys are masked there, their names as sent.
 */

static ngx_int_t
ngx_http_imgbill_gemini_query(ngx_http_request_t *r,
    ngx_http_imgbill_request_t *req)
{
    u_char      *p, *last, *end, *eq;
    ngx_uint_t   alts, keys, spelled;

    alts = 0;
    keys = 0;
    spelled = 0;

    last = r->unparsed_uri.data + r->unparsed_uri.len;
    p = ngx_strlchr(r->unparsed_uri.data, last, '?');

    for (p = p ? p + 1 : last; p < last; p = end + 1) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');
        eq = eq ? eq : end;

        switch (ngx_http_imgbill_arg_is(p, eq, "alt")) {
        case 2:
            spelled = 1;
            /* fall through */
        case 1:
            alts++;
            break;
        }

        if (ngx_http_imgbill_arg_is(p, eq, "key")) {
            keys++;
        }
    }

    if (alts < 2 && keys < 2 && !spelled) {
        return NGX_HTTP_IMGBILL_REQ_OK;
    }

    req->param = (alts > 1 || spelled) ? "alt" : "key";

    return NGX_HTTP_IMGBILL_REQ_AMBIGUOUS_QUERY;
}


/*
 * The members each object of a request has that the relay reads, in the
 * spellings the upstream reads them by (ngx_http_imgbill_reading.c).
 */

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
 * A GenerateContentRequest: {"contents": [{"parts": [...]}, ...],
 * "systemInstruction": {"parts": [...]}, "generationConfig": {...}}.
 * Google reads its JSON by the proto3 mapping, which takes a field under
 * its lowerCamelCase name and under its proto name alike; both are read,
 * and both given is ambiguous.
 */

static ngx_int_t
ngx_http_imgbill_gemini_check(ngx_http_imgbill_request_t *req,
    size_t image_limit)
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
        req->param = "contents";
        req->expected = "an array";
        req->code = "missing_contents";
        return NGX_HTTP_IMGBILL_REQ_MISSING;
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
        || (rc = ngx_http_imgbill_request_asked(
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
        rc = ngx_http_imgbill_gemini_content_of(content, image_limit, req);
        if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
            return rc;
        }
    }

    content = ngx_http_imgbill_reading_member(req->root,
                                              ngx_http_imgbill_system);

    return ngx_http_imgbill_gemini_content_of(content, image_limit, req);
}


/* a Content: {"role": ..., "parts": [...]} */

static ngx_int_t
ngx_http_imgbill_gemini_content_of(json_t *content, size_t image_limit,
    ngx_http_imgbill_request_t *req)
{
    ngx_int_t  rc;

    rc = ngx_http_imgbill_reading_keys(content,
                                       ngx_http_imgbill_gemini_content_keys,
                                       req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    return ngx_http_imgbill_gemini_parts_of(json_object_get(content, "parts"),
                                         image_limit, req);
}


/* inline images only: a "fileData" part is a URI the upstream fetches */

static ngx_int_t
ngx_http_imgbill_gemini_parts_of(json_t *parts, size_t image_limit,
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

    size = ngx_http_imgbill_request_base64_size(req, data);

    return ngx_http_imgbill_request_image(data, size, image_limit, req);
}


/*
 * What the URL says: ".../models/<model>:generateContent" or
 * ":streamGenerateContent", whatever comes before the last "/models/" (a
 * version, a prefix such as "/fast").  Give it r->uri, decoded and
 * normalised: the key's removal from the arguments
 * (ngx_http_imgbill_key.c) makes it the URI the upstream receives too, so
 * the model billed is the model run.  Only [A-Za-z0-9._-] passes: the
 * model is priced, logged and written to the ledger.  Not static, for
 * t/unit/ and t/fuzz/.
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
        || ngx_http_imgbill_gemini_model_name(start, method - 1) != NGX_OK)
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
ngx_http_imgbill_gemini_model_name(u_char *p, u_char *last)
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


/*
 * {"error":{"code":401,"message":"...","status":"UNAUTHENTICATED"}}: the
 * status, Google's name for the HTTP status, says what kind of error.
 */

static u_char *
ngx_http_imgbill_gemini_error(u_char *p, ngx_http_imgbill_error_t *err)
{
    p = ngx_sprintf(p, "{\"error\":{\"code\":%ui,\"message\":\"", err->status);
    p = (u_char *) ngx_escape_json(p, err->message.data, err->message.len);

    return ngx_sprintf(p, "\",\"status\":\"%s\"}}\n",
                       ngx_http_imgbill_gemini_status(err->status));
}


/* google.rpc.Code names, as Google's APIs pair them with HTTP statuses */

static const char *
ngx_http_imgbill_gemini_status(ngx_uint_t status)
{
    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_NOT_ALLOWED:
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return "INVALID_ARGUMENT";

    case NGX_HTTP_UNAUTHORIZED:
        return "UNAUTHENTICATED";

    case NGX_HTTP_FORBIDDEN:
        return "PERMISSION_DENIED";

    case 402:
        return "RESOURCE_EXHAUSTED";

    case NGX_HTTP_NOT_FOUND:
        return "NOT_FOUND";

    case NGX_HTTP_BAD_GATEWAY:
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return "UNAVAILABLE";

    default:
        return "INTERNAL";
    }
}


static u_char *
ngx_http_imgbill_gemini_model(u_char *p, ngx_str_t *name)
{
    p = ngx_cpymem(p, "{\"name\":\"models/", sizeof("{\"name\":\"models/") - 1);
    p = (u_char *) ngx_escape_json(p, name->data, name->len);
    p = ngx_cpymem(p, "\",\"displayName\":\"",
                   sizeof("\",\"displayName\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, name->data, name->len);

    return ngx_cpymem(p, "\",\"supportedGenerationMethods\":"
                         "[\"generateContent\","
                         "\"streamGenerateContent\"]}",
                      sizeof("\",\"supportedGenerationMethods\":"
                             "[\"generateContent\","
                             "\"streamGenerateContent\"]}") - 1);
}
