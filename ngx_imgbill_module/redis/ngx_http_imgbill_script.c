
/*
 * The client of imgbill's Redis script (ngx_http_imgbill_script.lua): one
 * function per command, which lays out its keys and arguments, and one
 * parser per command for its reply.  Key names, argument positions and
 * replies are known here and in the .lua file, nowhere else; how commands
 * travel is ngx_http_imgbill_batch.c's business.
 */


#include "ngx_http_imgbill_redis_int.h"


typedef ngx_uint_t (*ngx_http_imgbill_parse_pt)(redisReply *e,
    ngx_http_imgbill_reply_t *reply);


static ngx_uint_t ngx_http_imgbill_parse_admit(redisReply *e,
    ngx_http_imgbill_reply_t *reply);
static ngx_uint_t ngx_http_imgbill_parse_settle(redisReply *e,
    ngx_http_imgbill_reply_t *reply);
static ngx_uint_t ngx_http_imgbill_parse_release(redisReply *e,
    ngx_http_imgbill_reply_t *reply);
static ngx_uint_t ngx_http_imgbill_parse_lookup(redisReply *e,
    ngx_http_imgbill_reply_t *reply);
static ngx_uint_t ngx_http_imgbill_parse_info(redisReply *e,
    ngx_http_imgbill_reply_t *reply);
static ngx_uint_t ngx_http_imgbill_parse_redeem(redisReply *e,
    ngx_http_imgbill_reply_t *reply);
static ngx_uint_t ngx_http_imgbill_parse_keys(redisReply *e,
    ngx_http_imgbill_reply_t *reply);
static ngx_uint_t ngx_http_imgbill_parse_account(redisReply *acct,
    ngx_http_imgbill_reply_t *reply);
static ngx_int_t ngx_http_imgbill_integer(redisReply *e, ngx_uint_t i,
    ngx_int_t *value);
static void ngx_http_imgbill_key_name(ngx_str_t *name, u_char *buf,
    u_char *key_hash);
static u_char *ngx_http_imgbill_account_keys(u_char *p, ngx_str_t *argv,
    ngx_str_t *account, const char **suffix, ngx_uint_t n);


/* indexed by ngx_http_imgbill_script_e */

static ngx_str_t  ngx_http_imgbill_script_names[] = {
    ngx_string("admit"),
    ngx_string("settle"),
    ngx_string("release"),
    ngx_string("release_key"),
    ngx_string("lookup"),
    ngx_string("info"),
    ngx_string("refresh"),
    ngx_string("reverse"),
    ngx_string("redeem"),
    ngx_string("key_list"),
    ngx_string("key_new"),
    ngx_string("key_del")
};

static ngx_http_imgbill_parse_pt  ngx_http_imgbill_script_parsers[] = {
    ngx_http_imgbill_parse_admit,
    ngx_http_imgbill_parse_settle,
    ngx_http_imgbill_parse_release,
    ngx_http_imgbill_parse_release,
    ngx_http_imgbill_parse_lookup,
    ngx_http_imgbill_parse_info,
    ngx_http_imgbill_parse_release,
    ngx_http_imgbill_parse_settle,
    ngx_http_imgbill_parse_redeem,
    ngx_http_imgbill_parse_keys,
    ngx_http_imgbill_parse_keys,
    ngx_http_imgbill_parse_keys
};


/*
 * admit: KEYS imgbill:key:<hash>; ARGV request id, gate, hold, hold ttl,
 * model, the client's address.  NULL when the command cannot be queued;
 * then its handler is never called.
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_admit(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_asker_t *asker, ngx_str_t *request_id, ngx_int_t gate,
    ngx_int_t hold, ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char     *p, buf[sizeof("imgbill:key:") - 1
                       + NGX_HTTP_IMGBILL_KEY_HASH_LEN
                       + 2 * NGX_INT_T_LEN + NGX_TIME_T_LEN];
    ngx_str_t   argv[7];

    if (store == NULL) {
        /* no imgbill_redis: nothing can be held or settled */
        return NULL;
    }

    p = buf;

    ngx_http_imgbill_key_name(&argv[0], p, asker->key_hash);
    p += argv[0].len;

    argv[1] = *request_id;

    argv[2].data = p;
    p = ngx_sprintf(p, "%i", gate);
    argv[2].len = p - argv[2].data;

    argv[3].data = p;
    p = ngx_sprintf(p, "%i", hold);
    argv[3].len = p - argv[3].data;

    argv[4].data = p;
    p = ngx_sprintf(p, "%T", store->conf->hold_ttl);
    argv[4].len = p - argv[4].data;

    argv[5] = asker->model;
    argv[6] = asker->address;

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_admit,
                                         1, 7, argv, handler, data);
}


/*
 * settle: KEYS balance, holds, ledger, settled marker, held (one slot);
 * ARGV request id, charge, channel, model, prompt and completion tokens,
 * marker ttl, time, hold, images, API, the key's id, '1' if the key has
 * limits.
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_settle(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_settle_t *s, ngx_http_imgbill_reply_pt handler,
    void *data)
{
    u_char      *p, buf[5 * (sizeof("imgbill:{}:settled:") - 1
                             + NGX_HTTP_IMGBILL_ACCOUNT_MAX)
                        + NGX_HTTP_IMGBILL_REQUEST_ID_MAX
                        + 5 * NGX_INT_T_LEN + NGX_TIME_T_LEN];
    ngx_str_t    argv[18];
    ngx_uint_t   i;

    if (store == NULL) {
        /* no imgbill_redis: nothing can be held or settled */
        return NULL;
    }

    static const char  *suffix[] = { "balance", "holds", "ledger",
                                     "settled:", "held" };

    if (s->account.len > NGX_HTTP_IMGBILL_ACCOUNT_MAX
        || s->request_id.len > NGX_HTTP_IMGBILL_REQUEST_ID_MAX)
    {
        return NULL;
    }

    p = buf;

    for (i = 0; i < 5; i++) {
        argv[i].data = p;
        p = ngx_sprintf(p, "imgbill:{%V}:%s", &s->account, suffix[i]);

        if (i == 3) {
            p = ngx_cpymem(p, s->request_id.data, s->request_id.len);
        }

        argv[i].len = p - argv[i].data;
    }

    argv[5] = s->request_id;

    argv[6].data = p;
    p = ngx_sprintf(p, "%i", s->charge);
    argv[6].len = p - argv[6].data;

    argv[7] = *ngx_http_imgbill_channel_name(s->channel);
    argv[8] = s->model;

    argv[9].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(s->prompt_tokens, 0));
    argv[9].len = p - argv[9].data;

    argv[10].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(s->completion_tokens, 0));
    argv[10].len = p - argv[10].data;

    ngx_str_set(&argv[11], NGX_HTTP_IMGBILL_SETTLED_TTL);

    /* a replayed charge keeps the time it was decided at: its day */

    argv[12].data = p;
    p = ngx_sprintf(p, "%T", s->decided ? s->decided : ngx_time());
    argv[12].len = p - argv[12].data;

    argv[13].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(s->hold, 0));
    argv[13].len = p - argv[13].data;

    argv[14].data = p;
    p = ngx_sprintf(p, "%ui", s->images);
    argv[14].len = p - argv[14].data;

    if (s->api.len) {
        argv[15] = s->api;

    } else {
        ngx_str_set(&argv[15], "");
    }

    argv[16] = s->key;

    if (s->key_limits) {
        ngx_str_set(&argv[17], "1");

    } else {
        ngx_str_set(&argv[17], "");
    }

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_settle,
                                         5, 18, argv, handler, data);
}


/*
 * refresh: KEYS holds; ARGV request id, hold, hold ttl, the key's id if
 * it has limits.  Nobody waits for its answer: a hold not refreshed
 * expires as it would have.
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_refresh(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_held_t *h)
{
    u_char     *p, buf[sizeof("imgbill:{}:holds") - 1
                       + NGX_HTTP_IMGBILL_ACCOUNT_MAX
                       + NGX_INT_T_LEN + NGX_TIME_T_LEN];
    ngx_str_t   argv[5];

    if (h->account.len > NGX_HTTP_IMGBILL_ACCOUNT_MAX) {
        return NULL;
    }

    p = buf;

    argv[0].data = p;
    p = ngx_sprintf(p, "imgbill:{%V}:holds", &h->account);
    argv[0].len = p - argv[0].data;

    argv[1] = h->request_id;

    argv[2].data = p;
    p = ngx_sprintf(p, "%i", h->hold);
    argv[2].len = p - argv[2].data;

    argv[3].data = p;
    p = ngx_sprintf(p, "%T", store->conf->hold_ttl);
    argv[3].len = p - argv[3].data;

    argv[4] = h->key;

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_refresh,
                                         1, 5, argv, NULL, NULL);
}


/*
 * reverse: KEYS balance, ledger, settled marker (one slot); ARGV request
 * id, marker ttl, time, the charge's time, the key's id if it has limits
 * (key NULL: none).
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_reverse(ngx_http_imgbill_store_t *store,
    ngx_str_t *account, ngx_str_t *request_id, time_t charged_at,
    ngx_str_t *key, ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char      *p, buf[3 * (sizeof("imgbill:{}:settled:") - 1
                             + NGX_HTTP_IMGBILL_ACCOUNT_MAX)
                        + NGX_HTTP_IMGBILL_REQUEST_ID_MAX
                        + 2 * NGX_TIME_T_LEN];
    ngx_str_t    argv[8];

    static const char  *suffix[] = { "balance", "ledger", "settled:" };

    if (store == NULL
        || account->len > NGX_HTTP_IMGBILL_ACCOUNT_MAX
        || request_id->len > NGX_HTTP_IMGBILL_REQUEST_ID_MAX)
    {
        return NULL;
    }

    p = ngx_http_imgbill_account_keys(buf, argv, account, suffix, 3);

    p = ngx_cpymem(p, request_id->data, request_id->len);
    argv[2].len = p - argv[2].data;

    argv[3] = *request_id;
    ngx_str_set(&argv[4], NGX_HTTP_IMGBILL_SETTLED_TTL);

    argv[5].data = p;
    p = ngx_sprintf(p, "%T", ngx_time());
    argv[5].len = p - argv[5].data;

    argv[6].data = p;
    p = ngx_sprintf(p, "%T", charged_at);
    argv[6].len = p - argv[6].data;

    if (key) {
        argv[7] = *key;

    } else {
        ngx_str_set(&argv[7], "");
    }

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_reverse,
                                         3, 8, argv, handler, data);
}


/*
 * release: KEYS holds, held; ARGV request id, hold (0: not known), the
 * key's id if it has limits (key NULL: none)
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_release(ngx_http_imgbill_store_t *store,
    ngx_str_t *account, ngx_str_t *request_id, ngx_int_t hold, ngx_str_t *key,
    ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char      *p, buf[2 * (sizeof("imgbill:{}:holds") - 1
                             + NGX_HTTP_IMGBILL_ACCOUNT_MAX)
                        + NGX_INT_T_LEN];
    ngx_str_t    argv[5];

    if (store == NULL) {
        /* no imgbill_redis: nothing can be held or settled */
        return NULL;
    }

    static const char  *suffix[] = { "holds", "held" };

    if (account->len > NGX_HTTP_IMGBILL_ACCOUNT_MAX) {
        return NULL;
    }

    p = ngx_http_imgbill_account_keys(buf, argv, account, suffix, 2);

    argv[2] = *request_id;

    argv[3].data = p;
    p = ngx_sprintf(p, "%i", ngx_max(hold, 0));
    argv[3].len = p - argv[3].data;

    if (key) {
        argv[4] = *key;

    } else {
        ngx_str_set(&argv[4], "");
    }

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_release,
                                         2, 5, argv, handler, data);
}


/* release_key: KEYS imgbill:key:<hash>; ARGV request id */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_release_key(ngx_http_imgbill_store_t *store,
    ngx_str_t *request_id, u_char *key_hash,
    ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char     buf[sizeof("imgbill:key:") - 1 + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t  argv[2];

    ngx_http_imgbill_key_name(&argv[0], buf, key_hash);

    argv[1] = *request_id;

    return ngx_http_imgbill_batch_queue(store,
                                         ngx_http_imgbill_cmd_release_key,
                                         1, 2, argv, handler, data);
}


/* lookup: KEYS imgbill:key:<hash> */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_lookup(ngx_http_imgbill_store_t *store,
    u_char *key_hash, ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char     buf[sizeof("imgbill:key:") - 1 + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t  argv[1];

    if (store == NULL) {
        /* no imgbill_redis: nothing can be held or settled */
        return NULL;
    }

    ngx_http_imgbill_key_name(&argv[0], buf, key_hash);

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_lookup,
                                        1, 1, argv, handler, data);
}


/*
 * lookup of no key (64 hex digits nobody's key hashes to), for whoever
 * asks whether Redis answers: answered at once, never kept through an
 * outage
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_probe(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_reply_pt handler, void *data)
{
    ngx_http_imgbill_cmd_t  *cmd;

    static u_char  none[NGX_HTTP_IMGBILL_KEY_HASH_LEN] =
        "0000000000000000000000000000000000000000000000000000000000000000";

    cmd = ngx_http_imgbill_script_lookup(store, none, handler, data);

    if (cmd) {
        ngx_http_imgbill_batch_nowait(store, cmd);
    }

    return cmd;
}


/*
 * info: KEYS imgbill:key:<hash>; ARGV what, limit, cursor, from, to.  The
 * caller checked the cursor and the ids: they are digits and a dash.
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_info(ngx_http_imgbill_store_t *store,
    u_char *key_hash, ngx_http_imgbill_info_t *info,
    ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char     buf[sizeof("imgbill:key:") - 1 + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    u_char     limit[NGX_INT_T_LEN];
    ngx_str_t  argv[6];

    if (store == NULL) {
        /* no imgbill_redis: nothing can be held or settled */
        return NULL;
    }

    ngx_http_imgbill_key_name(&argv[0], buf, key_hash);

    switch (info->serve) {

    case NGX_HTTP_IMGBILL_SERVE_LEDGER:
        ngx_str_set(&argv[1], "ledger");
        break;

    case NGX_HTTP_IMGBILL_SERVE_USAGE:
        ngx_str_set(&argv[1], "usage");
        break;

    default:
        ngx_str_set(&argv[1], "account");
        break;
    }

    argv[2].data = limit;
    argv[2].len = ngx_sprintf(limit, "%ui", info->limit) - limit;
    argv[3] = info->cursor;
    argv[4] = info->from;
    argv[5] = info->to;

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_info,
                                        1, 6, argv, handler, data);
}


/*
 * redeem: KEYS imgbill:key:<hash>, imgbill:code:<hash>; ARGV the key's
 * id, the code's id (the first digits of either hash, for the ledger)
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_redeem(ngx_http_imgbill_store_t *store,
    u_char *key_hash, u_char *code_hash, ngx_http_imgbill_reply_pt handler,
    void *data)
{
    u_char     key[sizeof("imgbill:key:") - 1 + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    u_char     code[sizeof("imgbill:code:") - 1
                    + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t  argv[4];

    if (store == NULL) {
        return NULL;
    }

    ngx_http_imgbill_key_name(&argv[0], key, key_hash);

    argv[1].data = code;
    argv[1].len = ngx_sprintf(code, "imgbill:code:%*s",
                              (size_t) NGX_HTTP_IMGBILL_KEY_HASH_LEN,
                              code_hash)
                  - code;

    argv[2].data = key_hash;
    argv[2].len = NGX_HTTP_IMGBILL_KEY_ID_LEN;
    argv[3].data = code_hash;
    argv[3].len = NGX_HTTP_IMGBILL_KEY_ID_LEN;

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_redeem,
                                        2, 4, argv, handler, data);
}


/*
 * key_list, key_del: KEYS the caller's key; ARGV its id, the client's
 * address, the id to show ("": all) or to delete
 */

static ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_key_id(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_script_e cmd, ngx_http_imgbill_key_ask_t *ask,
    ngx_http_imgbill_reply_pt handler, void *data)
{
    u_char     key[sizeof("imgbill:key:") - 1 + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t  argv[4];

    if (store == NULL) {
        return NULL;
    }

    ngx_http_imgbill_key_name(&argv[0], key, ask->key_hash);

    argv[1].data = ask->key_hash;
    argv[1].len = NGX_HTTP_IMGBILL_KEY_ID_LEN;
    argv[2] = ask->address;
    argv[3] = ask->id;

    return ngx_http_imgbill_batch_queue(store, cmd, 1, 4, argv, handler,
                                        data);
}


ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_key_list(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_key_ask_t *ask, ngx_http_imgbill_reply_pt handler,
    void *data)
{
    return ngx_http_imgbill_script_key_id(store, ngx_http_imgbill_cmd_key_list,
                                          ask, handler, data);
}


ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_key_del(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_key_ask_t *ask, ngx_http_imgbill_reply_pt handler,
    void *data)
{
    return ngx_http_imgbill_script_key_id(store, ngx_http_imgbill_cmd_key_del,
                                          ask, handler, data);
}


/*
 * key_new: KEYS the caller's key, the new key; ARGV the caller's id, the
 * client's address, the new key's id, then its name and limits
 */

ngx_http_imgbill_cmd_t *
ngx_http_imgbill_script_key_new(ngx_http_imgbill_store_t *store,
    ngx_http_imgbill_key_ask_t *ask, ngx_http_imgbill_reply_pt handler,
    void *data)
{
    u_char      key[sizeof("imgbill:key:") - 1 + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    u_char      new[sizeof("imgbill:key:") - 1 + NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_str_t   argv[11];
    ngx_uint_t  i;

    if (store == NULL) {
        return NULL;
    }

    ngx_http_imgbill_key_name(&argv[0], key, ask->key_hash);
    ngx_http_imgbill_key_name(&argv[1], new, ask->new_hash);

    argv[2].data = ask->key_hash;
    argv[2].len = NGX_HTTP_IMGBILL_KEY_ID_LEN;
    argv[3] = ask->address;
    argv[4].data = ask->new_hash;
    argv[4].len = NGX_HTTP_IMGBILL_KEY_ID_LEN;

    for (i = 0; i < 6; i++) {
        argv[5 + i] = ask->limits[i];
    }

    return ngx_http_imgbill_batch_queue(store, ngx_http_imgbill_cmd_key_new,
                                        2, 11, argv, handler, data);
}


ngx_str_t *
ngx_http_imgbill_script_name(ngx_http_imgbill_script_e script)
{
    return &ngx_http_imgbill_script_names[script];
}


/* a command's own result: NGX_HTTP_IMGBILL_REPLY_OK or _ERROR */

ngx_uint_t
ngx_http_imgbill_script_parse(ngx_http_imgbill_script_e script, redisReply *e,
    ngx_http_imgbill_reply_t *reply)
{
    return ngx_http_imgbill_script_parsers[script](e, reply);
}


/*
 * {-1} | {0 or 1, account, balance, available [, 1: the key has limits]}
 * | {-2, account, expired at} | {-3 or -4, account}
 * | {-5, account, left, 1 or 2}
 */

static ngx_uint_t
ngx_http_imgbill_parse_admit(redisReply *e, ngx_http_imgbill_reply_t *reply)
{
    if (ngx_http_imgbill_integer(e, 0, &reply->status) != NGX_OK) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    switch (reply->status) {

    case NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY:
        return NGX_HTTP_IMGBILL_REPLY_OK;

    case NGX_HTTP_IMGBILL_ADMIT_KEY_EXPIRED:
        if (ngx_http_imgbill_integer(e, 2, &reply->when) != NGX_OK) {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }

        break;

    case NGX_HTTP_IMGBILL_ADMIT_KEY_MODEL:
    case NGX_HTTP_IMGBILL_ADMIT_KEY_ADDRESS:
        break;

    case NGX_HTTP_IMGBILL_ADMIT_KEY_LIMIT:
        if (ngx_http_imgbill_integer(e, 2, &reply->available) != NGX_OK
            || ngx_http_imgbill_integer(e, 3, &reply->limit) != NGX_OK)
        {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }

        break;

    case NGX_HTTP_IMGBILL_ADMIT_REFUSED:
    case NGX_HTTP_IMGBILL_ADMIT_HELD:
        if ((e->elements != 4 && e->elements != 5)
            || ngx_http_imgbill_integer(e, 2, &reply->balance) != NGX_OK
            || ngx_http_imgbill_integer(e, 3, &reply->available) != NGX_OK
            || (e->elements == 5
                && ngx_http_imgbill_integer(e, 4, &reply->limit) != NGX_OK))
        {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }

        break;

    default:
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    if (e->elements < 2) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    return ngx_http_imgbill_parse_account(e->element[1], reply);
}


/* {-1} | {1, account} */

static ngx_uint_t
ngx_http_imgbill_parse_lookup(redisReply *e, ngx_http_imgbill_reply_t *reply)
{
    if (ngx_http_imgbill_integer(e, 0, &reply->status) != NGX_OK) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    if (reply->status == NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY) {
        return NGX_HTTP_IMGBILL_REPLY_OK;
    }

    if (reply->status != NGX_HTTP_IMGBILL_ADMIT_HELD || e->elements != 2) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    return ngx_http_imgbill_parse_account(e->element[1], reply);
}


/* {-1} | {1, account, balance, held [, more, entries | , charged]} */

static ngx_uint_t
ngx_http_imgbill_parse_info(redisReply *e, ngx_http_imgbill_reply_t *reply)
{
    if (ngx_http_imgbill_integer(e, 0, &reply->status) != NGX_OK) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    if (reply->status == NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY) {
        return NGX_HTTP_IMGBILL_REPLY_OK;
    }

    if (reply->status == NGX_HTTP_IMGBILL_INFO_UNSUMMED && e->elements == 4)
    {
        return ngx_http_imgbill_parse_account(e->element[1], reply);
    }

    if (reply->status != 1
        || (e->elements != 4 && e->elements != 5 && e->elements != 6)
        || ngx_http_imgbill_integer(e, 2, &reply->balance) != NGX_OK
        || ngx_http_imgbill_integer(e, 3, &reply->held) != NGX_OK)
    {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    if (e->elements == 5
        && ngx_http_imgbill_integer(e, 4, &reply->charged) != NGX_OK)
    {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    if (e->elements == 6) {
        if (ngx_http_imgbill_integer(e, 4, &reply->more) != NGX_OK
            || e->element[5]->type != REDIS_REPLY_ARRAY)
        {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }

        reply->entries = e->element[5];
        reply->nentries = e->element[5]->elements;
    }

    return ngx_http_imgbill_parse_account(e->element[1], reply);
}


/* {-1} | {-2} | {-3 or -4, when} | {1, account, balance, amount} */

static ngx_uint_t
ngx_http_imgbill_parse_redeem(redisReply *e, ngx_http_imgbill_reply_t *reply)
{
    if (ngx_http_imgbill_integer(e, 0, &reply->status) != NGX_OK) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    switch (reply->status) {

    case NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY:
    case NGX_HTTP_IMGBILL_REDEEM_UNKNOWN:
        return NGX_HTTP_IMGBILL_REPLY_OK;

    case NGX_HTTP_IMGBILL_REDEEM_SPENT:
    case NGX_HTTP_IMGBILL_REDEEM_EXPIRED:
        return (ngx_http_imgbill_integer(e, 1, &reply->when) == NGX_OK)
               ? NGX_HTTP_IMGBILL_REPLY_OK : NGX_HTTP_IMGBILL_REPLY_ERROR;

    case NGX_HTTP_IMGBILL_REDEEM_CREDITED:
        if (e->elements != 4
            || ngx_http_imgbill_integer(e, 2, &reply->balance) != NGX_OK
            || ngx_http_imgbill_integer(e, 3, &reply->charged) != NGX_OK)
        {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }

        return ngx_http_imgbill_parse_account(e->element[1], reply);

    default:
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }
}


/*
 * {-1} | {-2, account, when} | {-4 or -8, account}
 * | {-6, account, what, bound} | {-7, account, max} | {0, account}
 * | {1, account [, rows]}
 */

static ngx_uint_t
ngx_http_imgbill_parse_keys(redisReply *e, ngx_http_imgbill_reply_t *reply)
{
    if (ngx_http_imgbill_integer(e, 0, &reply->status) != NGX_OK) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    if (reply->status == NGX_HTTP_IMGBILL_ADMIT_UNKNOWN_KEY) {
        return NGX_HTTP_IMGBILL_REPLY_OK;
    }

    if (e->elements < 2) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    switch (reply->status) {

    case NGX_HTTP_IMGBILL_ADMIT_KEY_EXPIRED:
        if (ngx_http_imgbill_integer(e, 2, &reply->when) != NGX_OK) {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }
        break;

    case NGX_HTTP_IMGBILL_KEYS_WIDER:
        if (ngx_http_imgbill_integer(e, 2, &reply->limit) != NGX_OK
            || ngx_http_imgbill_integer(e, 3, &reply->available) != NGX_OK)
        {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }

        reply->when = reply->available;
        break;

    case NGX_HTTP_IMGBILL_KEYS_TOO_MANY:
        if (ngx_http_imgbill_integer(e, 2, &reply->available) != NGX_OK) {
            return NGX_HTTP_IMGBILL_REPLY_ERROR;
        }
        break;

    case NGX_HTTP_IMGBILL_KEYS_DONE:
        if (e->elements == 3) {
            if (e->element[2]->type != REDIS_REPLY_ARRAY) {
                return NGX_HTTP_IMGBILL_REPLY_ERROR;
            }

            reply->entries = e->element[2];
            reply->nentries = e->element[2]->elements;
        }
        break;

    case NGX_HTTP_IMGBILL_ADMIT_KEY_ADDRESS:
    case NGX_HTTP_IMGBILL_KEYS_NOT_FOUND:
    case NGX_HTTP_IMGBILL_KEYS_TAKEN:
        break;

    default:
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    return ngx_http_imgbill_parse_account(e->element[1], reply);
}


/* row i of a key command's reply, during its handler */

ngx_int_t
ngx_http_imgbill_key_row(ngx_http_imgbill_reply_t *reply, ngx_uint_t i,
    ngx_str_t *row)
{
    ngx_uint_t   n;
    redisReply  *rows, *e;

    rows = reply->entries;

    if (rows == NULL || i >= rows->elements) {
        return NGX_ERROR;
    }

    e = rows->element[i];

    if (e->type != REDIS_REPLY_ARRAY
        || e->elements != ngx_http_imgbill_row_fields)
    {
        return NGX_ERROR;
    }

    for (n = 0; n < ngx_http_imgbill_row_fields; n++) {
        if (e->element[n]->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        row[n].data = (u_char *) e->element[n]->str;
        row[n].len = e->element[n]->len;
    }

    /* what the JSON is sized for */
    if (row[ngx_http_imgbill_row_id].len != NGX_HTTP_IMGBILL_KEY_ID_LEN) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_imgbill_parse_account(redisReply *acct,
    ngx_http_imgbill_reply_t *reply)
{
    if (acct->type != REDIS_REPLY_STRING || acct->len == 0
        || acct->len > NGX_HTTP_IMGBILL_ACCOUNT_MAX)
    {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    reply->account.data = (u_char *) acct->str;
    reply->account.len = acct->len;

    return NGX_HTTP_IMGBILL_REPLY_OK;
}


/* {1 applied or 0 applied before, balance} */

static ngx_uint_t
ngx_http_imgbill_parse_settle(redisReply *e, ngx_http_imgbill_reply_t *reply)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
        || ngx_http_imgbill_integer(e, 0, &reply->status) != NGX_OK
        || ngx_http_imgbill_integer(e, 1, &reply->balance) != NGX_OK)
    {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    return NGX_HTTP_IMGBILL_REPLY_OK;
}


/* 1 released or 0 nothing to release */

static ngx_uint_t
ngx_http_imgbill_parse_release(redisReply *e, ngx_http_imgbill_reply_t *reply)
{
    if (e->type != REDIS_REPLY_INTEGER) {
        return NGX_HTTP_IMGBILL_REPLY_ERROR;
    }

    reply->status = (ngx_int_t) e->integer;

    return NGX_HTTP_IMGBILL_REPLY_OK;
}


/* element i of an array reply as an integer */

static ngx_int_t
ngx_http_imgbill_integer(redisReply *e, ngx_uint_t i, ngx_int_t *value)
{
    if (e->type != REDIS_REPLY_ARRAY || i >= e->elements
        || e->element[i]->type != REDIS_REPLY_INTEGER)
    {
        return NGX_ERROR;
    }

    *value = (ngx_int_t) e->element[i]->integer;

    return NGX_OK;
}


/* a key's Redis name, imgbill:key:<sha256 hex>, written into buf */

static void
ngx_http_imgbill_key_name(ngx_str_t *name, u_char *buf, u_char *key_hash)
{
    name->data = buf;
    name->len = ngx_sprintf(buf, "imgbill:key:%*s",
                            (size_t) NGX_HTTP_IMGBILL_KEY_HASH_LEN, key_hash)
                - buf;
}


/* an account's keys, "imgbill:{ACCOUNT}:<suffix>", one after another in p */

static u_char *
ngx_http_imgbill_account_keys(u_char *p, ngx_str_t *argv, ngx_str_t *account,
    const char **suffix, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        argv[i].data = p;
        p = ngx_sprintf(p, "imgbill:{%V}:%s", account, suffix[i]);
        argv[i].len = p - argv[i].data;
    }

    return p;
}
