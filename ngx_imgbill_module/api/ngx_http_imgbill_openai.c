
/*
 * imgbill: OpenAI's chat completions API (/v1/chat/completions), as the
 * relay reads it.
 *
 *   the key     Authorization: Bearer <key>
 *   the model   the body's "model"; the images asked for, its "n"
 *   a stream    "stream": true; billed from its last usage chunk, which
 *               comes only with "stream_options": {"include_usage": true},
 *               so the body is made to ask for it
 *   a reply     choices[].message (a stream's choices[].delta), its
 *               images[] and the image_url parts of its content, a
 *               data URL or a markdown image in its text; "usage"
 *   an error    {"error":{"message","type","param":null,"code"}}
 */


#include "ngx_http_imgbill_api.h"


/* the reply's keys and paths beyond the root's usage and choices */
enum {
    ngx_http_imgbill_openai_key_message = NGX_HTTP_IMGBILL_SCAN_KEY_API,
    ngx_http_imgbill_openai_key_images,
    ngx_http_imgbill_openai_key_content,
    ngx_http_imgbill_openai_key_image_url
};

enum {
    ngx_http_imgbill_openai_role_message = NGX_HTTP_IMGBILL_SCAN_ROLE_API,
    ngx_http_imgbill_openai_role_images,
    ngx_http_imgbill_openai_role_parts,
    ngx_http_imgbill_openai_role_part
};


static ngx_int_t ngx_http_imgbill_openai_check(
    ngx_http_imgbill_request_t *req, size_t image_limit);
static ngx_int_t ngx_http_imgbill_openai_output(
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_openai_stream(
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_openai_bad_options(
    ngx_http_imgbill_request_t *req);
static ngx_int_t ngx_http_imgbill_openai_rewrite(ngx_http_request_t *r,
    ngx_http_imgbill_request_t *req);


/*
 * The keys the scanner tells apart, as sent.  A stream's chunk has a
 * "delta" where a whole reply has a "message", read alike.
 */

static ngx_http_imgbill_scan_key_t  ngx_http_imgbill_openai_keys[] = {
    { ngx_string("usage"), ngx_http_imgbill_key_usage },
    { ngx_string("choices"), ngx_http_imgbill_key_choices },
    { ngx_string("finish_reason"), ngx_http_imgbill_key_finish },
    { ngx_string("error"), ngx_http_imgbill_key_error },
    { ngx_string("prompt_tokens"), ngx_http_imgbill_key_prompt },
    { ngx_string("completion_tokens"), ngx_http_imgbill_key_completion },
    { ngx_string("index"), ngx_http_imgbill_key_index },
    { ngx_string("message"), ngx_http_imgbill_openai_key_message },
    { ngx_string("delta"), ngx_http_imgbill_openai_key_message },
    { ngx_string("images"), ngx_http_imgbill_openai_key_images },
    { ngx_string("content"), ngx_http_imgbill_openai_key_content },
    { ngx_string("image_url"), ngx_http_imgbill_openai_key_image_url },
    { ngx_null_string, 0 }
};


/* choices[].message (delta).images[] and .content[] */

static ngx_http_imgbill_scan_path_t  ngx_http_imgbill_openai_paths[] = {
    { ngx_http_imgbill_role_choice, ngx_http_imgbill_openai_key_message, '{',
      ngx_http_imgbill_openai_role_message },
    { ngx_http_imgbill_openai_role_message, ngx_http_imgbill_openai_key_images,
      '[', ngx_http_imgbill_openai_role_images },
    { ngx_http_imgbill_openai_role_message, ngx_http_imgbill_openai_key_content,
      '[', ngx_http_imgbill_openai_role_parts },
    { ngx_http_imgbill_openai_role_parts, ngx_http_imgbill_key_other, '{',
      ngx_http_imgbill_openai_role_part },
    { 0, 0, 0, 0 }
};


/* an entry of images[] and an image_url part are images; a message's text
   may name one */

static ngx_http_imgbill_scan_mark_t  ngx_http_imgbill_openai_marks[] = {
    { ngx_http_imgbill_openai_role_images, ngx_http_imgbill_key_other,
      ngx_http_imgbill_shows_image },
    { ngx_http_imgbill_openai_role_part, ngx_http_imgbill_openai_key_image_url,
      ngx_http_imgbill_shows_image },
    { ngx_http_imgbill_openai_role_message, ngx_http_imgbill_openai_key_content,
      ngx_http_imgbill_shows_text },
    { 0, 0, 0 }
};


/* the usage takes "cost"; a stream's last chunk has "choices": [] */

static ngx_http_imgbill_dialect_t  ngx_http_imgbill_openai_dialect = {
    ngx_http_imgbill_openai_keys,
    ngx_http_imgbill_openai_paths,
    ngx_http_imgbill_openai_marks,
    1,
    1
};


/* OpenAI's APIs take the key alike */

ngx_http_imgbill_key_source_t  ngx_http_imgbill_openai_key[] = {
    { ngx_http_imgbill_key_in_bearer, ngx_string("Authorization") },
    { ngx_http_imgbill_key_in_none, ngx_null_string }
};


/* where the client's stream_options is, and its include_usage: a stream's
   rewrite needs them, in this order */

static ngx_http_imgbill_mark_path_t  ngx_http_imgbill_openai_marks_paths[] = {
    { -1, "stream_options" },
    { 0, "include_usage" },
    { 0, NULL }
};


ngx_http_imgbill_api_t  ngx_http_imgbill_openai_api = {
    ngx_string("openai"),
    ngx_http_imgbill_openai_key,
    "Authorization: Bearer <key>",
    NULL,
    ngx_http_imgbill_openai_check,
    ngx_http_imgbill_openai_marks_paths,
    ngx_http_imgbill_openai_rewrite,
    ngx_http_imgbill_openai_error,
    NGX_HTTP_IMGBILL_OPENAI_ERROR_LEN,
    ngx_string("{\"object\":\"list\",\"data\":["),
    ngx_http_imgbill_openai_model,
    NGX_HTTP_IMGBILL_OPENAI_MODEL_LEN,
    ngx_string("]}\n"),
    &ngx_http_imgbill_openai_dialect,
    NULL,
    1,
    0,
    0
};


/*
 * The members each object of a request has that the relay reads, in the
 * spellings the upstream reads them by (ngx_http_imgbill_reading.c).
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
ngx_http_imgbill_openai_check(ngx_http_imgbill_request_t *req,
    size_t image_limit)
{
    size_t      i, j, size;
    json_t     *messages, *message, *part, *image;
    ngx_int_t   rc;

    /* each of the n choices is a generation of its own */

    rc = ngx_http_imgbill_reading_openai(req, ngx_http_imgbill_openai_root);
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

            size = ngx_http_imgbill_request_url_size(req, image);

            rc = ngx_http_imgbill_request_image(image, size, image_limit,
                                                req);
            if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
                return rc;
            }
        }
    }

    return ngx_http_imgbill_openai_stream(req);
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
ngx_http_imgbill_openai_stream(ngx_http_imgbill_request_t *req)
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
        return ngx_http_imgbill_openai_bad_options(req);
    }

    rc = ngx_http_imgbill_reading_keys(options,
                                       ngx_http_imgbill_openai_options, req);
    if (rc != NGX_HTTP_IMGBILL_REQ_OK) {
        return rc;
    }

    usage = json_object_get(options, "include_usage");

    if (usage != NULL && !json_is_boolean(usage) && !json_is_null(usage)) {
        return ngx_http_imgbill_openai_bad_options(req);
    }

    req->stream = flag;
    req->stream_options = (options != NULL);
    req->usage_asked = json_is_true(usage);

    return NGX_HTTP_IMGBILL_REQ_OK;
}


static ngx_int_t
ngx_http_imgbill_openai_bad_options(ngx_http_imgbill_request_t *req)
{
    req->param = "stream_options";
    req->expected = "an object, its \"include_usage\" true or false";
    req->code = "invalid_stream_options";

    return NGX_HTTP_IMGBILL_REQ_BAD_VALUE;
}


/*
 * A streamed request is made to report usage: without
 * "stream_options": {"include_usage": true} an upstream sends none, and
 * a stream could not be billed.  The body is not copied (it may be
 * megabytes, in a file): an include_usage false or null becomes true in
 * its place; any other stream_options (null, or an object without
 * include_usage) is blanked, the client's one member replaced, not
 * doubled (Go's encoding/json would take the last, and a null there); and
 * the one the relay asks for ends the body.
 */

static ngx_int_t
ngx_http_imgbill_openai_rewrite(ngx_http_request_t *r,
    ngx_http_imgbill_request_t *req)
{
    ngx_http_imgbill_mark_t  *options, *usage;

    static ngx_str_t  yes = ngx_string("true");
    static ngx_str_t  tail =
        ngx_string(",\"stream_options\":{\"include_usage\":true}}");

    if (!req->stream || req->usage_asked) {
        return NGX_OK;
    }

    options = &req->marks[0];
    usage = &req->marks[1];

    if (usage->key >= 0) {
        if (ngx_http_imgbill_splice_overwrite(r, usage->start, usage->end,
                                              &yes)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        if (options->key >= 0
            && ngx_http_imgbill_splice_blank(r, options) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_http_imgbill_splice_end(r, req->root_close, &tail) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    req->usage_added = 1;

    return NGX_OK;
}


/* the kinds of error, as OpenAI names them */

u_char *
ngx_http_imgbill_openai_error(u_char *p, ngx_http_imgbill_error_t *err)
{
    const char  *type;

    switch (err->kind) {

    case ngx_http_imgbill_err_quota:
        type = "insufficient_quota";
        break;

    case ngx_http_imgbill_err_server:
        type = "server_error";
        break;

    case ngx_http_imgbill_err_upstream:
        type = "upstream_error";
        break;

    default: /* ngx_http_imgbill_err_request */
        type = "invalid_request_error";
        break;
    }

    p = ngx_cpymem(p, "{\"error\":{\"message\":\"",
                   sizeof("{\"error\":{\"message\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, err->message.data, err->message.len);

    return ngx_sprintf(p, "\",\"type\":\"%s\",\"param\":null,"
                          "\"code\":\"%s\"}}\n", type, err->code);
}


u_char *
ngx_http_imgbill_openai_model(u_char *p, ngx_str_t *name)
{
    p = ngx_cpymem(p, "{\"id\":\"", sizeof("{\"id\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, name->data, name->len);

    return ngx_cpymem(p, "\",\"object\":\"model\",\"created\":0,"
                         "\"owned_by\":\"imgbill\"}",
                      sizeof("\",\"object\":\"model\",\"created\":0,"
                             "\"owned_by\":\"imgbill\"}") - 1);
}
