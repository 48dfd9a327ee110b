
/*
 * A reply judged on its own, before Redis is read: its status for what was
 * asked, its error body, its headers, its charge for the usage the mock
 * was told to report.
 */


#include "loadcheck.h"

#include <jansson.h>


static const char *lc_judge_status(lc_run_t *run, lc_req_t *rq,
    int json_ok, int has_error);
static const char *lc_judge_headers(lc_req_t *rq);
static int lc_json_check(const char *p, size_t len, char *code,
    size_t size, int *has_error);


void
lc_judge_reply(lc_run_t *run, lc_req_t *rq)
{
    int               has_error, json_ok;
    long              st;
    int64_t           want;
    const char       *why;
    lc_account_t     *a;
    const lc_kind_t  *k;

    k = &lc_kinds[rq->kind];
    a = &run->accounts[rq->account];
    st = rq->status;

    has_error = 0;
    json_ok = rq->truncated
              || lc_json_check(rq->body, rq->len, rq->code,
                               sizeof(rq->code), &has_error) == 0;

    if (st >= 200 && st < 300) {
        rq->class = (rq->charge > 0) ? LC_OK : LC_FREE;

    } else if (rq->kind == LC_K_DROP && st == 502
               && strcmp(rq->code, "upstream_response_incomplete") == 0)
    {
        /* the upstream cut the reply: the relay says so instead */
        rq->class = LC_DROPPED;

    } else if (st == 400 || st == 401 || st == 402 || st == 413
               || (st == 503 && strcmp(rq->code, "billing_unavailable") == 0))
    {
        rq->class = LC_REJECTED;

    } else {
        rq->class = LC_FAILED;
    }

    why = lc_judge_status(run, rq, json_ok, has_error);

    if (why == NULL) {
        why = lc_judge_headers(rq);
    }

    if (why == NULL && st >= 200 && st < 300) {
        want = lc_expected(rq);

        if (rq->charge != want) {
            lc_problem(run, "request #%u (%s, %s %s, mock \"%s\", "
                       "account %s): charge %" PRId64 " units, want %"
                       PRId64 ", request id %s", rq->n, k->name,
                       lc_channels[rq->channel], lc_models[rq->model].name,
                       rq->mock, a->id, rq->charge, want, rq->rid);
        }
    }

    if (why) {
        lc_problem(run, "request #%u (%s, %s %s, mock \"%s\", account %s, "
                   "relay %s): %s: status %ld, code \"%s\", request id "
                   "\"%s\"", rq->n, k->name, lc_channels[rq->channel],
                   lc_models[rq->model].name, rq->mock, a->id,
                   run->conf.relays[rq->relay], why, st, rq->code, rq->rid);
    }

    if (rq->class == LC_OK) {
        run->charged_seen++;
    }
}


/* what is wrong with the status and the error body, or NULL */

static const char *
lc_judge_status(lc_run_t *run, lc_req_t *rq, int json_ok, int has_error)
{
    long              st;
    const lc_kind_t  *k;

    k = &lc_kinds[rq->kind];
    st = rq->status;

    /* the status this kind of request may get */

    if (st == k->status && k->status != 0) {
        /* what was asked for */

    } else if (st == 402 && k->gate) {
        /* the gate: checked against the final balance in lc_verify() */

    } else if (st == 503 && k->redis && run->conf.redis_faults) {
        /* Redis was hurt on purpose */

    } else if (st == 503 && k->redis) {
        return "503 while no fault was fired";

    } else {
        return "unexpected status";
    }

    if (st >= 200 && st < 300 && !json_ok) {
        return "a 2xx reply that is not JSON";
    }

    if (st < 300) {
        return NULL;
    }

    if (!json_ok || !has_error) {
        return "the body is not JSON with an \"error\" object";
    }

    if (st == 402 && strcmp(rq->code, "insufficient_balance") != 0) {
        return "402 without code insufficient_balance";
    }

    if (st == 503 && strcmp(rq->code, "billing_unavailable") != 0) {
        return "503 without code billing_unavailable";
    }

    if (st == k->status && k->code && strcmp(rq->code, k->code) != 0) {
        return "wrong error code";
    }

    return NULL;
}


/* what is wrong with the X-Imgbill-* headers, or NULL */

static const char *
lc_judge_headers(lc_req_t *rq)
{
    int  i;

    if (rq->charge == LC_BAD || rq->balance == LC_BAD) {
        return "a malformed X-Imgbill-Charge or X-Imgbill-Balance";
    }

    if (rq->dup_header) {
        return "an X-Imgbill-* header twice";
    }

    for (i = 0; i < LC_RID_LEN; i++) {
        if (!((rq->rid[i] >= '0' && rq->rid[i] <= '9')
              || (rq->rid[i] >= 'a' && rq->rid[i] <= 'f')))
        {
            break;
        }
    }

    if (i != LC_RID_LEN || rq->rid[i] != '\0') {
        return "X-Imgbill-Request-Id missing or not 32 hex digits";
    }

    /* admitted, and answered: the charge is always told, even 0.0000 */

    if (rq->class != LC_REJECTED && rq->charge == LC_NONE) {
        return "no X-Imgbill-Charge";
    }

    if (rq->charge != LC_NONE && rq->charge != 0
        && (rq->status < 200 || rq->status >= 300))
    {
        return "a non-2xx reply with a charge";
    }

    return NULL;
}


/*
 * 0 if [p, p + len) is one JSON object; *has_error tells whether it has an
 * "error" object, code gets error.code ("" if none).
 */

static int
lc_json_check(const char *p, size_t len, char *code, size_t size,
    int *has_error)
{
    size_t         n;
    json_t        *top, *error, *c;
    json_error_t   err;

    code[0] = '\0';

    /*
     * Only the error object is read, so what is legal JSON passes: a key
     * twice (the last one counts), \u0000 in a string, an integer beyond
     * 64 bits.
     */

    top = json_loadb(p ? p : "", p ? len : 0,
                     JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);

    if (top == NULL) {
        return -1;
    }

    if (!json_is_object(top)) {
        json_decref(top);
        return -1;
    }

    error = json_object_get(top, "error");
    c = json_is_object(error) ? json_object_get(error, "code") : NULL;

    *has_error = json_is_object(error);

    if (json_is_string(c)) {
        n = json_string_length(c);

        if (n >= size) {
            n = size - 1;
        }

        memcpy(code, json_string_value(c), n);
        code[n] = '\0';
    }

    json_decref(top);

    return 0;
}
