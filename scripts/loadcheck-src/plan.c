
/*
 * The plan: which request goes to which account, channel and model, what
 * the mock upstream is told to answer, and what each answer must cost by
 * the seed's tariffs (conf.d/imgbill.conf).
 */


#include "loadcheck.h"


static int32_t lc_tokens(lc_run_t *run);


const lc_model_t  lc_models[LC_NMODELS] = {
    { "gemini-2.5-flash-image",       22000, 2190000,  700,  560, 1120 },
    { "gemini-3-pro-image-preview",  142000, 8530000, 2000, 1210, 2000 },
};

const char  *lc_channels[2] = { "metered", "fast" };

const lc_kind_t  lc_kinds[LC_NKINDS] = {
    { "ok", "", 34, 200, NULL, LC_CHARGE_USAGE, 1, 1, 1, 0, 1 },
    { "decoy", "kind=decoy", 5, 200, NULL, LC_CHARGE_USAGE, 1, 1, 1, 0, 1 },
    { "usage_first", "usage_first=1", 5, 200, NULL, LC_CHARGE_USAGE,
      1, 1, 1, 0, 1 },
    { "chunked", "chunked=1", 5, 200, NULL, LC_CHARGE_USAGE, 1, 1, 1, 0, 1 },
    { "noimage", "kind=noimage", 5, 200, NULL, LC_CHARGE_NONE,
      1, 1, 1, 0, 1 },
    { "nousage", "kind=nousage", 5, 200, NULL, LC_CHARGE_FAST,
      1, 1, 1, 0, 1 },
    { "nonjson", "kind=nonjson", 5, 502, "bad_upstream_response",
      LC_CHARGE_NONE, 0, 1, 1, 0, 1 },
    { "status500", "status=500", 4, 500, "mock_500", LC_CHARGE_NONE,
      0, 1, 1, 0, 1 },
    { "status429", "status=429", 4, 429, "mock_429", LC_CHARGE_NONE,
      0, 1, 1, 0, 1 },
    { "drop", "drop=1", 5, 502, "upstream_response_incomplete",
      LC_CHARGE_NONE, 1, 1, 1, 0, 1 },
    { "abort", "sleep=1.5", 5, 200, NULL, LC_CHARGE_USAGE, 1, 1, 1, 0, 1 },
    { "badkey", "", 4, 401, "invalid_api_key", LC_CHARGE_NONE,
      0, 1, 0, 0, 1 },
    /* refused for their bodies, but only once their key is known: a
       worker that has not seen it yet asks Redis first (503 under a
       fault) */
    { "badmodel", "", 4, 400, "model_not_supported", LC_CHARGE_NONE,
      0, 1, 0, 1, 1 },
    { "badjson", "", 4, 400, "invalid_json", LC_CHARGE_NONE,
      0, 1, 0, 0, 0 },
};


/* splitmix64: small, and the same seed gives the same plan everywhere */

uint64_t
lc_random(lc_run_t *run)
{
    uint64_t  z;

    z = (run->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;

    return z ^ (z >> 31);
}


void
lc_plan(lc_run_t *run)
{
    int        k, total;
    long       i;
    size_t     len;
    uint64_t   pick;
    lc_req_t  *rq;

    total = 0;

    for (k = 0; k < LC_NKINDS; k++) {
        total += lc_kinds[k].weight;
    }

    for (i = 0; i < run->conf.requests; i++) {
        rq = &run->reqs[i];

        rq->n = (uint32_t) i;
        rq->pt = -1;
        rq->ct = -1;
        rq->charge = LC_NONE;
        rq->balance = LC_NONE;

        /*
         * Round-robin: neighbours in the plan are in flight together, so
         * each account has requests on every relay at once.
         */

        rq->relay = (uint8_t) (i % run->conf.nrelays);

        if (run->conf.exhaust) {
            rq->account = 0;
            rq->channel = LC_FAST;
            rq->model = 0;
            rq->kind = LC_K_OK;
            continue;
        }

        rq->account = (uint16_t) (lc_random(run) % run->naccounts);
        rq->channel = (uint8_t) (lc_random(run) % 2);
        rq->model = (uint8_t) (lc_random(run) % LC_NMODELS);

        pick = lc_random(run) % total;

        for (k = 0; k < LC_NKINDS; k++) {
            if (pick < (uint64_t) lc_kinds[k].weight) {
                break;
            }

            pick -= lc_kinds[k].weight;
        }

        rq->kind = (uint8_t) k;

        /*
         * Half the aborts give up while the upstream is answering: the
         * reply may be complete or lost, the charge settled or not.
         */

        len = (size_t) snprintf(rq->mock, sizeof(rq->mock), "%s",
                                k == LC_K_ABORT && lc_random(run) % 2
                                ? "sleep=0.45" : lc_kinds[k].mock);

        if (lc_kinds[k].tokens) {
            rq->pt = lc_tokens(run);
            rq->ct = lc_tokens(run);

            len += snprintf(rq->mock + len, sizeof(rq->mock) - len,
                            "%spt=%d ct=%d", len ? " " : "", rq->pt, rq->ct);
        }

        /* where the image sits, and chunked replies, vary freely */

        pick = lc_random(run) % 8;

        if (k == LC_K_OK && pick < 2) {
            snprintf(rq->mock + len, sizeof(rq->mock) - len,
                     " image=%s", pick ? "markdown" : "parts");

        } else if (k == LC_K_DROP && pick < 4) {
            snprintf(rq->mock + len, sizeof(rq->mock) - len, " chunked=1");
        }
    }
}


/* the edges (0, 1, far beyond any image) and ordinary counts */

static int32_t
lc_tokens(lc_run_t *run)
{
    switch (lc_random(run) % 10) {
    case 0:
        return 0;
    case 1:
        return 1;
    case 2:
        return 100000;
    default:
        return (int32_t) (1 + lc_random(run) % 5000);
    }
}


/*
 * The money rules, recomputed with integers: each term rounded half up,
 * then at least the minimum charge and, metered, at most the hold the relay
 * placed: every body byte may be a prompt token, and the reply at most
 * LC_MAX_OUTPUT tokens (the relay's default max_output).
 */

int64_t
lc_charge(int channel, int model, int64_t pt, int64_t ct)
{
    int64_t            c, len, hold;
    const lc_model_t  *m;

    m = &lc_models[model];

    if (channel == LC_FAST) {
        return m->fast;
    }

    c = (pt * m->in + LC_PER_MILLION / 2) / LC_PER_MILLION
        + (ct * m->out + LC_PER_MILLION / 2) / LC_PER_MILLION;

    c = c < LC_MIN_CHARGE ? LC_MIN_CHARGE : c;

    len = snprintf(NULL, 0, LC_BODY, m->name);

    hold = (len * m->in + LC_PER_MILLION - 1) / LC_PER_MILLION
           + (LC_MAX_OUTPUT * m->out + LC_PER_MILLION - 1) / LC_PER_MILLION;

    hold = hold < LC_MIN_CHARGE ? LC_MIN_CHARGE : hold;

    return c < hold ? c : hold;
}


/* what a 2xx reply to this request must charge */

int64_t
lc_expected(lc_req_t *rq)
{
    int64_t  pt, ct;

    pt = rq->pt < 0 ? lc_models[rq->model].pt : rq->pt;
    ct = rq->ct < 0 ? lc_models[rq->model].ct : rq->ct;

    switch (lc_kinds[rq->kind].charge) {

    case LC_CHARGE_USAGE:
        return lc_charge(rq->channel, rq->model, pt, ct);

    case LC_CHARGE_FAST:
        return rq->channel == LC_FAST
               ? lc_charge(LC_FAST, rq->model, 0, 0) : 0;

    default:
        return 0;
    }
}
