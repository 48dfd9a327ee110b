
/*
 * The HTTP side: the planned requests sent through the relay with libcurl
 * multi, what comes back collected, each transfer classed as it ends.
 */


#include "loadcheck.h"


static int lc_start(lc_run_t *run, lc_req_t *rq);
static size_t lc_on_header(char *buf, size_t size, size_t n, void *data);
static size_t lc_on_body(char *buf, size_t size, size_t n, void *data);
static int64_t lc_parse_money(const char *p, size_t len);
static void lc_finish(lc_run_t *run, lc_req_t *rq, CURLcode rc);


/*
 * The load: up to C transfers in flight in one thread, a new one started
 * as soon as one ends; the faults fire from here, between two starts, so
 * they land while transfers are in flight.
 */

int
lc_load(lc_run_t *run)
{
    int        queued, nfds;
    long       next, active, at;
    double     start;
    CURLMsg   *msg;
    lc_req_t  *rq;
    CURLMcode  mc;

    run->multi = curl_multi_init();
    if (run->multi == NULL) {
        fprintf(stderr, "loadcheck: curl_multi_init() failed\n");
        return -1;
    }

    /* keep a connection per transfer alive between requests */
    curl_multi_setopt(run->multi, CURLMOPT_MAXCONNECTS,
                      run->conf.concurrency);

    next = 0;
    active = 0;
    start = lc_now();

    while (next < run->conf.requests || active > 0) {

        while (active < run->conf.concurrency
               && next < run->conf.requests)
        {
            while (run->fired < run->conf.nfaults) {
                at = (long) ((run->fired + 1) * run->conf.requests
                             / (run->conf.nfaults + 1));

                if (next < at) {
                    break;
                }

                /* a crash waits until its relay has something to lose:
                   the run checks what a crash does to requests */

                if (run->conf.faults[run->fired] == LC_FAULT_CRASH
                    && !lc_crash_ready(run, next))
                {
                    break;
                }

                if (run->conf.faults[run->fired] == LC_FAULT_CRASH) {
                    lc_crash(run, next);

                } else {
                    lc_fault(run, run->conf.faults[run->fired], next);
                }

                run->fired++;
            }

            if (lc_start(run, &run->reqs[next]) != 0) {
                return -1;
            }

            next++;
            active++;
        }

        mc = curl_multi_perform(run->multi, &nfds);
        if (mc != CURLM_OK) {
            fprintf(stderr, "loadcheck: curl_multi_perform(): %s\n",
                    curl_multi_strerror(mc));
            return -1;
        }

        while ((msg = curl_multi_info_read(run->multi, &queued))) {
            if (msg->msg != CURLMSG_DONE) {
                continue;
            }

            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &rq);
            lc_finish(run, rq, msg->data.result);
            active--;
        }

        if (active == 0 && next == run->conf.requests) {
            break;
        }

        mc = curl_multi_poll(run->multi, NULL, 0, 100, &nfds);
        if (mc != CURLM_OK) {
            fprintf(stderr, "loadcheck: curl_multi_poll(): %s\n",
                    curl_multi_strerror(mc));
            return -1;
        }
    }

    run->elapsed = lc_now() - start;

    return 0;
}


static int
lc_start(lc_run_t *run, lc_req_t *rq)
{
    int                 len;
    char                line[160], url[512], body[160];
    CURL               *easy;
    const char         *model;
    lc_account_t       *a;
    const lc_kind_t    *k;
    struct curl_slist  *h;

    k = &lc_kinds[rq->kind];
    a = &run->accounts[rq->account];

    model = k->model ? "dall-e-3" : lc_models[rq->model].name;

    if (k->json) {
        len = snprintf(body, sizeof(body), LC_BODY, model);
    } else {
        len = snprintf(body, sizeof(body), "draw a cat, not JSON");
    }

    snprintf(url, sizeof(url), "%s%s/v1/chat/completions",
             run->conf.relays[rq->relay],
             rq->channel == LC_FAST ? "/fast" : "");

    easy = curl_easy_init();
    if (easy == NULL) {
        fprintf(stderr, "loadcheck: curl_easy_init() failed\n");
        return -1;
    }

    /* an unknown key is one nobody could hold: a fresh random one */
    if (rq->kind == LC_K_BADKEY) {
        snprintf(line, sizeof(line), "Authorization: Bearer sk-lc-unknown-%"
                 PRIx64, lc_random(run));
    } else {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", a->key);
    }

    h = curl_slist_append(NULL, line);
    rq->headers = h;

    if (h) {
        h = curl_slist_append(h, "Content-Type: application/json");
    }

    /* no 100-continue round trip, whatever the body size */
    if (h) {
        h = curl_slist_append(h, "Expect:");
    }

    if (h && rq->mock[0]) {
        snprintf(line, sizeof(line), "X-Mock: %s", rq->mock);
        h = curl_slist_append(h, line);
    }

    if (h == NULL) {
        curl_slist_free_all(rq->headers);
        curl_easy_cleanup(easy);
        fprintf(stderr, "loadcheck: out of memory\n");
        return -1;
    }

    rq->easy = easy;

    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, rq->headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) len);
    curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     rq->kind == LC_K_ABORT ? (long) LC_ABORT_MS
                                            : (long) LC_TIMEOUT_MS);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, lc_on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, rq);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, lc_on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, rq);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, rq);

    if (curl_multi_add_handle(run->multi, easy) != CURLM_OK) {
        fprintf(stderr, "loadcheck: curl_multi_add_handle() failed\n");
        curl_slist_free_all(rq->headers);
        rq->headers = NULL;
        curl_easy_cleanup(easy);
        rq->easy = NULL;
        return -1;
    }

    return 0;
}


static size_t
lc_on_header(char *buf, size_t size, size_t n, void *data)
{
    lc_req_t *rq = data;

    size_t       len, nlen, vlen;
    const char  *v, *colon;

    len = size * n;

    /* a new status line (after 1xx): forget what came before */
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        rq->charge = LC_NONE;
        rq->balance = LC_NONE;
        rq->rid[0] = '\0';
        rq->dup_header = 0;
        return len;
    }

    colon = memchr(buf, ':', len);
    if (colon == NULL) {
        return len;
    }

    nlen = colon - buf;
    v = colon + 1;
    vlen = len - nlen - 1;

    while (vlen && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }

    while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'
                    || v[vlen - 1] == ' '))
    {
        vlen--;
    }

    if (nlen == sizeof("X-Imgbill-Charge") - 1
        && strncasecmp(buf, "X-Imgbill-Charge", nlen) == 0)
    {
        rq->dup_header |= (rq->charge != LC_NONE);
        rq->charge = lc_parse_money(v, vlen);

    } else if (nlen == sizeof("X-Imgbill-Balance") - 1
               && strncasecmp(buf, "X-Imgbill-Balance", nlen) == 0)
    {
        rq->dup_header |= (rq->balance != LC_NONE);
        rq->balance = lc_parse_money(v, vlen);

    } else if (nlen == sizeof("X-Imgbill-Request-Id") - 1
               && strncasecmp(buf, "X-Imgbill-Request-Id", nlen) == 0)
    {
        rq->dup_header |= (rq->rid[0] != '\0');

        /* anything but 32 hex digits is kept long, so it fails later */
        if (vlen > LC_RID_LEN) {
            vlen = LC_RID_LEN + 1;
        }

        memcpy(rq->rid, v, vlen);
        rq->rid[vlen] = '\0';
    }

    return len;
}


static size_t
lc_on_body(char *buf, size_t size, size_t n, void *data)
{
    lc_req_t *rq = data;

    char    *p;
    size_t   len, cap;

    len = size * n;

    if (rq->len + len > LC_BODY_MAX) {
        rq->truncated = 1;
        return len;
    }

    if (rq->len + len > rq->cap) {
        cap = rq->cap ? rq->cap : 4096;

        while (cap < rq->len + len) {
            cap *= 2;
        }

        p = realloc(rq->body, cap);
        if (p == NULL) {
            return 0;
        }

        rq->body = p;
        rq->cap = cap;
    }

    memcpy(rq->body + rq->len, buf, len);
    rq->len += len;

    return len;
}


/* "1234.5678" (or "-0.0100") to units; LC_BAD when it is anything else */

static int64_t
lc_parse_money(const char *p, size_t len)
{
    int       neg, digits;
    size_t    i;
    int64_t   v;

    neg = 0;
    i = 0;
    v = 0;

    if (len && p[0] == '-') {
        neg = 1;
        i = 1;
    }

    for (digits = 0; i < len && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
        if (digits > 14) {
            return LC_BAD;
        }

        v = v * 10 + (p[i] - '0');
    }

    if (digits == 0 || len - i != 5 || p[i] != '.') {
        return LC_BAD;
    }

    for (i++; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return LC_BAD;
        }

        v = v * 10 + (p[i] - '0');
    }

    return neg ? -v : v;
}


static void
lc_finish(lc_run_t *run, lc_req_t *rq, CURLcode rc)
{
    const lc_kind_t  *k;

    k = &lc_kinds[rq->kind];

    rq->done = 1;
    rq->ended = lc_now();
    rq->curl_rc = rc;

    curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &rq->status);

    curl_multi_remove_handle(run->multi, rq->easy);
    curl_easy_cleanup(rq->easy);
    rq->easy = NULL;
    curl_slist_free_all(rq->headers);
    rq->headers = NULL;

    if (rc == CURLE_OK) {
        rq->complete = 1;
        lc_judge_reply(run, rq);

    } else if (rq->killed) {
        /* its worker was killed under it: lost, as with a machine gone */
        rq->class = LC_DROPPED;

    } else if (rq->kind == LC_K_ABORT && rc == CURLE_OPERATION_TIMEDOUT) {
        /* the point of it: the relay sees the client go mid-generation */
        rq->class = LC_ABORTED;

    } else {
        rq->class = LC_DROPPED;

        if (rq->kind != LC_K_DROP
            || (rc != CURLE_GOT_NOTHING && rc != CURLE_PARTIAL_FILE
                && rc != CURLE_RECV_ERROR && rc != CURLE_SEND_ERROR))
        {
            lc_problem(run, "request #%u (%s, %s %s, account %s, relay "
                       "%s): transfer failed: %s", rq->n, k->name,
                       lc_channels[rq->channel], lc_models[rq->model].name,
                       run->accounts[rq->account].id,
                       run->conf.relays[rq->relay], curl_easy_strerror(rc));
        }
    }

    run->classes[rq->class]++;
    run->relay_sent[rq->relay]++;

    if (rq->class == LC_OK) {
        run->relay_ok[rq->relay]++;
    }

    free(rq->body);
    rq->body = NULL;
    rq->len = 0;
    rq->cap = 0;
}
