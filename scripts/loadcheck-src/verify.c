
/*
 * The judge: every balance, hold and ledger entry read back from Redis and
 * checked to the unit against the money rules and what the clients were
 * told.
 */


#include "loadcheck.h"


static int lc_ledger_entry(lc_run_t *run, long account, redisReply *x);
static int64_t lc_parse_int(const char *s);
static void lc_verify_entries(lc_run_t *run);
static void lc_verify_accounts(lc_run_t *run);
static void lc_verify_duplicates(lc_run_t *run);
static void lc_verify_replies(lc_run_t *run);
static void lc_verify_unseen(lc_run_t *run);
static void lc_verify_exhaust(lc_run_t *run);
static int lc_entry_cmp(const void *a, const void *b);
static lc_entry_t *lc_find_entry(lc_run_t *run, const char *rid,
    size_t *count);


int
lc_read_ledgers(lc_run_t *run)
{
    long           i;
    size_t         e;
    char           start[48];
    redisReply    *r, *last;
    lc_account_t  *a;

    for (i = 0; i < run->naccounts; i++) {
        a = &run->accounts[i];

        r = lc_redis(run, "GET imgbill:{%s}:balance", a->id);
        if (r == NULL || r->type != REDIS_REPLY_STRING) {
            lc_problem(run, "account %s: no balance", a->id);
            a->final = 0;

        } else {
            a->final = strtoll(r->str, NULL, 10);
        }

        freeReplyObject(r);

        r = lc_redis(run, "HLEN imgbill:{%s}:holds", a->id);
        if (r && r->type == REDIS_REPLY_INTEGER) {
            a->holds = r->integer;
        }

        freeReplyObject(r);

        /* by pages: an account of a long run may hold many entries */

        strcpy(start, "-");

        for ( ;; ) {
            r = lc_redis(run, "XRANGE imgbill:{%s}:ledger %s + COUNT 1000",
                         a->id, start);

            if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
                freeReplyObject(r);
                fprintf(stderr, "loadcheck: cannot read the ledger of %s\n",
                        a->id);
                return -1;
            }

            for (e = 0; e < r->elements; e++) {
                if (lc_ledger_entry(run, i, r->element[e]) != 0) {
                    freeReplyObject(r);
                    fprintf(stderr, "loadcheck: out of memory\n");
                    return -1;
                }
            }

            last = r->elements ? r->element[r->elements - 1] : NULL;

            if (last == NULL || last->type != REDIS_REPLY_ARRAY
                || last->elements != 2
                || last->element[0]->type != REDIS_REPLY_STRING)
            {
                freeReplyObject(r);
                break;
            }

            snprintf(start, sizeof(start), "(%s", last->element[0]->str);
            freeReplyObject(r);
        }
    }

    return 0;
}


/* one XRANGE item, [id, [field, value, ...]]; -1 only when out of memory */

static int
lc_ledger_entry(lc_run_t *run, long account, redisReply *x)
{
    size_t       f, ncap;
    redisReply  *fv;
    lc_entry_t  *en, *p;
    const char  *name, *val;

    if (run->nledger == run->ledger_cap) {
        ncap = run->ledger_cap ? 2 * run->ledger_cap : 1024;

        p = realloc(run->ledger, ncap * sizeof(lc_entry_t));
        if (p == NULL) {
            return -1;
        }

        run->ledger = p;
        run->ledger_cap = ncap;
    }

    en = &run->ledger[run->nledger++];
    memset(en, 0, sizeof(lc_entry_t));

    /* a field that is missing stays invalid: lc_verify() reports it */

    en->account = (uint16_t) account;
    en->channel = -1;
    en->model = -1;
    en->pt = -1;
    en->ct = -1;
    en->charge = LC_BAD;
    en->amount = LC_BAD;
    en->balance_after = LC_BAD;

    if (x->type != REDIS_REPLY_ARRAY || x->elements != 2
        || x->element[0]->type != REDIS_REPLY_STRING
        || x->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return 0;
    }

    snprintf(en->sid, sizeof(en->sid), "%s", x->element[0]->str);
    fv = x->element[1];

    for (f = 0; f + 1 < fv->elements; f += 2) {
        if (fv->element[f]->type != REDIS_REPLY_STRING
            || fv->element[f + 1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        name = fv->element[f]->str;
        val = fv->element[f + 1]->str;

        if (strcmp(name, "request_id") == 0) {
            snprintf(en->rid, sizeof(en->rid), "%s", val);

        } else if (strcmp(name, "channel") == 0) {
            en->channel = strcmp(val, "metered") == 0 ? LC_METERED
                          : strcmp(val, "fast") == 0 ? LC_FAST : -1;

        } else if (strcmp(name, "model") == 0) {
            en->model = strcmp(val, lc_models[0].name) == 0 ? 0
                        : strcmp(val, lc_models[1].name) == 0 ? 1 : -1;

        } else if (strcmp(name, "prompt_tokens") == 0) {
            en->pt = lc_parse_int(val);

        } else if (strcmp(name, "completion_tokens") == 0) {
            en->ct = lc_parse_int(val);

        } else if (strcmp(name, "charge") == 0) {
            en->charge = lc_parse_int(val);

        } else if (strcmp(name, "type") == 0) {
            en->reversal = (strcmp(val, "reversal") == 0);

        } else if (strcmp(name, "amount") == 0) {
            en->amount = lc_parse_int(val);

        } else if (strcmp(name, "balance_after") == 0) {
            en->balance_after = lc_parse_int(val);
        }
    }

    return 0;
}


/* a decimal integer and nothing else, or LC_BAD */

static int64_t
lc_parse_int(const char *s)
{
    char       *end;
    long long   v;

    errno = 0;
    v = strtoll(s, &end, 10);

    if (errno || end == s || *end) {
        return LC_BAD;
    }

    return v;
}


void
lc_verify(lc_run_t *run)
{
    lc_verify_entries(run);
    lc_verify_accounts(run);
    lc_verify_duplicates(run);
    lc_verify_replies(run);
    lc_verify_unseen(run);

    if (run->conf.exhaust) {
        lc_verify_exhaust(run);
    }
}


/* every entry obeys the money rules; balance_after tells the order */

static void
lc_verify_entries(lc_run_t *run)
{
    long           i;
    size_t         e;
    int64_t        want, bal;
    lc_entry_t    *en;
    lc_account_t  *a;

    for (i = 0; i < run->naccounts; i++) {
        run->accounts[i].charged = 0;
    }

    bal = 0;

    for (e = 0; e < run->nledger; e++) {
        en = &run->ledger[e];
        a = &run->accounts[en->account];

        if (e == 0 || en->account != run->ledger[e - 1].account) {
            bal = a->initial;
        }

        /* a charge given back: lc_verify_duplicates() pairs it with its
           charge */

        if (en->reversal) {
            if (en->amount == LC_BAD || en->amount <= 0
                || en->balance_after == LC_BAD
                || strlen(en->rid) != LC_RID_LEN)
            {
                lc_problem(run, "account %s: ledger entry %s is malformed",
                           a->id, en->sid);
                continue;
            }

            a->charged -= en->amount;
            run->charged_units -= en->amount;
            bal += en->amount;

            if (en->balance_after != bal) {
                lc_problem(run, "account %s: ledger entry %s says "
                           "balance_after %" PRId64 ", the entries before it "
                           "leave %" PRId64, a->id, en->sid,
                           en->balance_after, bal);
                bal = en->balance_after;
            }

            continue;
        }

        if (en->channel < 0 || en->model < 0 || en->pt < 0 || en->ct < 0
            || en->charge == LC_BAD || en->balance_after == LC_BAD
            || strlen(en->rid) != LC_RID_LEN)
        {
            lc_problem(run, "account %s: ledger entry %s is malformed",
                       a->id, en->sid);
            continue;
        }

        want = lc_charge(en->channel, en->model, en->pt, en->ct);

        if (en->charge != want) {
            lc_problem(run, "account %s: ledger entry %s (%s %s, %" PRId64
                       "/%" PRId64 " tokens) charges %" PRId64 " units, the "
                       "rules say %" PRId64, a->id, en->sid,
                       lc_channels[en->channel], lc_models[en->model].name,
                       en->pt, en->ct, en->charge, want);
        }

        a->charged += en->charge;
        run->charged_units += en->charge;
        bal -= en->charge;

        if (en->balance_after != bal) {
            lc_problem(run, "account %s: ledger entry %s says balance_after "
                       "%" PRId64 ", the charges before it leave %" PRId64,
                       a->id, en->sid, en->balance_after, bal);
            bal = en->balance_after;
        }
    }
}


/* no money from nowhere, none lost: per account, to the unit */

static void
lc_verify_accounts(lc_run_t *run)
{
    long           i, *killed;
    int64_t        d;
    lc_account_t  *a;

    /*
     * a request killed with its worker, or one that ended just before,
     * may leave its hold until the TTL
     */

    killed = calloc(run->naccounts, sizeof(long));

    for (i = 0; killed && i < run->conf.requests; i++) {
        killed[run->reqs[i].account] += run->reqs[i].killed
                                        + run->reqs[i].late;
    }

    for (i = 0; i < run->naccounts; i++) {
        a = &run->accounts[i];
        d = a->initial - a->final - a->charged;

        if (d != 0) {
            lc_problem(run, "account %s: balance %" PRId64 " -> %" PRId64
                       " but its ledger charges %" PRId64 " (drift %+"
                       PRId64 " units)", a->id, a->initial, a->final,
                       a->charged, -d);
        }

        run->drift += d < 0 ? -d : d;

        if (a->holds > (killed ? killed[i] : 0)) {
            lc_problem(run, "account %s: %lld holds left after %.1f s, "
                       "%ld of its requests killed or ended just before a "
                       "crash", a->id, a->holds,
                       run->settled, killed ? killed[i] : 0);
        }

        run->holds_left += a->holds;
    }

    free(killed);
}


/* sorted by request id from here on, for lc_find_entry() too */

static void
lc_verify_duplicates(lc_run_t *run)
{
    size_t       e;
    lc_entry_t  *a, *b;

    qsort(run->ledger, run->nledger, sizeof(lc_entry_t), lc_entry_cmp);

    for (e = 1; e < run->nledger; e++) {
        if (strcmp(run->ledger[e].rid, run->ledger[e - 1].rid) != 0) {
            continue;
        }

        /* a charge and its reversal, of the same amount, once */

        a = &run->ledger[e - 1];
        b = &run->ledger[e];

        if (a->reversal != b->reversal
            && (e < 2 || strcmp(run->ledger[e - 2].rid, a->rid) != 0)
            && (e + 1 == run->nledger
                || strcmp(run->ledger[e + 1].rid, a->rid) != 0)
            && (a->reversal ? a->amount == b->charge
                            : b->amount == a->charge))
        {
            a->reversed = 1;
            b->reversed = 1;
            run->reversed++;
            continue;
        }

        run->duplicates++;
        lc_problem(run, "request id %s is in the ledger twice (%s, %s)",
                   run->ledger[e].rid, run->ledger[e - 1].sid,
                   run->ledger[e].sid);
    }
}


/* what the clients were told against what Redis says */

static void
lc_verify_replies(lc_run_t *run)
{
    long           i;
    size_t         n, j;
    int64_t        bound;
    lc_req_t      *rq;
    lc_entry_t    *en;
    lc_account_t  *a;

    /*
     * The gate refuses only when the money is short.  An account that
     * still has, at the end, the gate plus more than every hold that can
     * be live at once (one per transfer in flight, per fault the ones
     * lost in flight, the aborted ones the relay still serves) was never
     * short: its 402 means holds or charges that should not be.
     */

    bound = (run->conf.concurrency * (run->conf.nfaults + 1)
             + run->classes[LC_ABORTED] + run->killed)
            * (int64_t) LC_MAX_HOLD
            + LC_MIN_BALANCE;

    for (i = 0; i < run->conf.requests; i++) {
        rq = &run->reqs[i];
        a = &run->accounts[rq->account];

        if (!rq->complete || rq->rid[0] == '\0') {
            continue;
        }

        en = lc_find_entry(run, rq->rid, &n);

        for (j = 0; j < n; j++) {
            en[j].seen = 1;
        }

        /* the charge, not its reversal; a charge given back is one whose
           client left before its reply was written */

        if (n == 2 && en[0].reversal) {
            en++;
        }

        if (rq->class == LC_OK && n == 2 && en->reversed) {
            lc_problem(run, "request #%u (account %s): its client read the "
                       "reply, yet its charge was given back (request id "
                       "%s)", rq->n, a->id, rq->rid);
            continue;
        }

        if (rq->class == LC_OK) {
            if (n == 0) {
                lc_problem(run, "request #%u (account %s): charged %" PRId64
                           " units, request id %s, but no ledger entry",
                           rq->n, a->id, rq->charge, rq->rid);
                continue;
            }

            if (en->account != rq->account || en->charge != rq->charge) {
                lc_problem(run, "request #%u: charged %" PRId64 " units to "
                           "%s, the ledger says %" PRId64 " to %s (request "
                           "id %s)", rq->n, rq->charge, a->id, en->charge,
                           run->accounts[en->account].id, rq->rid);
            }

            if (rq->balance != LC_NONE && rq->balance != en->balance_after) {
                lc_problem(run, "request #%u: X-Imgbill-Balance %" PRId64
                           " but the ledger's balance_after is %" PRId64
                           " (request id %s)", rq->n, rq->balance,
                           en->balance_after, rq->rid);
            }

        } else if (n && !(n == 2 && en->reversed)) {
            lc_problem(run, "request #%u (%s, status %ld, charge %" PRId64
                       "): not charged, but in the ledger (request id %s, "
                       "%" PRId64 " units)", rq->n, lc_kinds[rq->kind].name,
                       rq->status, rq->charge, rq->rid, en->charge);
        }

        if (rq->status == 402 && !a->small && a->final >= bound) {
            lc_problem(run, "request #%u: 402 on account %s, which still "
                       "has %" PRId64 " units (request id %s)", rq->n, a->id,
                       a->final, rq->rid);
        }
    }
}


/*
 * A ledger entry no client saw: a client that gave up after the
 * upstream had answered.  Each must match one aborted request of the
 * same account, channel, model and usage.
 */

static void
lc_verify_unseen(lc_run_t *run)
{
    long         i;
    size_t       e;
    lc_req_t    *rq, *cand;
    lc_entry_t  *en;

    for (e = 0; e < run->nledger; e++) {
        en = &run->ledger[e];

        if (en->seen) {
            continue;
        }

        if (en->reversal) {
            if (!en->reversed) {
                lc_problem(run, "account %s: ledger entry %s gives back a "
                           "charge the ledger does not have (request id %s)",
                           run->accounts[en->account].id, en->sid, en->rid);
            }

            continue;
        }

        cand = NULL;

        for (i = 0; i < run->conf.requests; i++) {
            rq = &run->reqs[i];

            if ((rq->class == LC_ABORTED || rq->killed) && !rq->matched
                && rq->account == en->account && rq->channel == en->channel
                && rq->model == en->model && rq->pt == en->pt
                && rq->ct == en->ct)
            {
                cand = rq;
                break;
            }
        }

        if (cand == NULL) {
            lc_problem(run, "account %s: ledger entry %s (request id %s, %"
                       PRId64 " units) matches no reply and no aborted "
                       "or killed request", run->accounts[en->account].id,
                       en->sid, en->rid, en->charge);
            continue;
        }

        cand->matched = 1;
        run->unseen++;
    }

    if (run->unseen > run->classes[LC_ABORTED] + run->killed) {
        lc_problem(run, "%ld ledger entries no client saw, only %ld aborted "
                   "and %ld killed", run->unseen, run->classes[LC_ABORTED],
                   run->killed);
    }
}


/* 1.00 buys fourteen 0.07 calls, however many arrive at once */

static void
lc_verify_exhaust(lc_run_t *run)
{
    long           i, want, refused;
    int64_t        price;
    lc_req_t      *rq;
    lc_account_t  *a;

    a = &run->accounts[0];
    price = lc_charge(LC_FAST, 0, 0, 0);

    want = (long) (a->initial / price);
    if (want > run->conf.requests) {
        want = run->conf.requests;
    }

    refused = 0;

    for (i = 0; i < run->conf.requests; i++) {
        rq = &run->reqs[i];

        if (rq->class == LC_OK) {
            continue;
        }

        if (rq->status == 402
            || (rq->status == 503 && run->conf.redis_faults))
        {
            refused++;
            continue;
        }

        lc_problem(run, "fast-exhaust: request #%u got status %ld, "
                   "charge %" PRId64 ": neither 200 with %" PRId64
                   " units nor 402", rq->n, rq->status, rq->charge, price);
    }

    if (run->conf.redis_faults == 0) {
        if (run->classes[LC_OK] != want) {
            lc_problem(run, "fast-exhaust: %ld calls succeeded, want "
                       "exactly %ld", run->classes[LC_OK], want);
        }

        if ((long) run->nledger != want) {
            lc_problem(run, "fast-exhaust: %zu ledger entries, want %ld",
                       run->nledger, want);
        }

        if (a->final != a->initial - want * price) {
            lc_problem(run, "fast-exhaust: final balance %" PRId64
                       " units, want %" PRId64, a->final,
                       a->initial - want * price);
        }

    } else if (run->classes[LC_OK] > want) {
        lc_problem(run, "fast-exhaust: %ld calls succeeded, at most %ld "
                   "can", run->classes[LC_OK], want);
    }

    if (run->classes[LC_OK] + refused != run->conf.requests) {
        lc_problem(run, "fast-exhaust: %ld succeeded and %ld refused of "
                   "%ld", run->classes[LC_OK], refused, run->conf.requests);
    }

    /*
     * The race is one between relays only if every relay won some of
     * it: the gate of one relay alone is not what is being shown.
     */

    for (i = 0; i < run->conf.nrelays && run->conf.nrelays > 1; i++) {
        if (run->relay_ok[i] == 0 && run->conf.redis_faults == 0
            && want >= run->conf.nrelays)
        {
            lc_problem(run, "fast-exhaust: relay %s served none of the %ld "
                       "calls charged", run->conf.relays[i],
                       run->classes[LC_OK]);
        }
    }
}


static int
lc_entry_cmp(const void *a, const void *b)
{
    const lc_entry_t *x = a, *y = b;

    return strcmp(x->rid, y->rid);
}


/* the run of entries with this request id in the sorted ledger */

static lc_entry_t *
lc_find_entry(lc_run_t *run, const char *rid, size_t *count)
{
    size_t      lo, hi, mid, n;
    lc_entry_t  *en;

    lo = 0;
    hi = run->nledger;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if (strcmp(run->ledger[mid].rid, rid) < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    en = run->ledger + lo;

    for (n = 0; lo + n < run->nledger && strcmp(en[n].rid, rid) == 0; n++) {
        /* void */
    }

    *count = n;

    return en;
}
