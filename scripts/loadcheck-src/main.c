/*
 * loadcheck -- a load and consistency checker for imgbill.
 *
 *   loadcheck --relay http://127.0.0.1:PORT [--relay URL ...]
 *             --redis 127.0.0.1:PORT
 *             [--password PW] [--requests N] [--concurrency C]
 *             [--accounts A] [--faults pause,kill,restart,reload,crash]
 *             [--relay-pid FILE ...]
 *             [--scenario mixed|fast-exhaust] [--seed S]
 *             [--settle-wait SECONDS] [--self-test] [--cleanup]
 *
 *   --relay URL        an nginx running imgbill (conf.d/imgbill.conf: the
 *                      metered channel at /v1/chat/completions, the fast one
 *                      at /fast/v1/chat/completions), in front of an
 *                      upstream that obeys X-Mock (scripts/mock-upstream).
 *                      Repeat it, or give a comma list, for several relays
 *                      on the same Redis (up to 16): request n goes to
 *                      relay n mod R, so one account's requests are in
 *                      flight on every relay at once
 *   --redis HOST:PORT  the relays' Redis (or unix:/path); --password PW
 *   --requests N       requests to send (default 1000)
 *   --concurrency C    transfers in flight at once, over all relays
 *                      (default 32)
 *   --accounts A       accounts to spread them over (default 8, mixed only)
 *   --faults LIST      faults fired at evenly spaced points of the run,
 *                      comma separated, in order, repeats allowed:
 *                        pause    CLIENT PAUSE 1500 ALL
 *                        kill     CLIENT KILL TYPE normal SKIPME yes
 *                        restart  DEBUG RESTART (needs a redis-server with
 *                                 a save point and enable-debug-command)
 *                        reload   SIGHUP to one relay's nginx master (the
 *                                 next one in turn): its workers are
 *                                 replaced mid-run, each new one with its
 *                                 own Redis connection and journal replay
 *                        crash    SIGKILL to every worker of one relay
 *                                 (the next in turn; its master starts new
 *                                 ones): the requests in flight there are
 *                                 lost (counted in killed=), a hold each
 *                                 may stay until imgbill_hold_ttl (so may
 *                                 the hold of one that ended there less
 *                                 than 1 s before: late=), and a
 *                                 charge settled before the kill is a
 *                                 ledger entry no client saw
 *   --relay-pid FILE   the nginx.pid of the relay given at the same place
 *                      (repeat, or a comma list); reload and crash need
 *                      them
 *   --scenario S       mixed (default): random accounts, channels, models
 *                      and outcomes; fast-exhaust: one account holding
 *                      exactly 1.00, every request a 0.07 fast call: exactly
 *                      14 succeed, the rest get 402 (with faults: at most
 *                      14); with several relays, each must have served at
 *                      least one of the 14
 *   --seed S           the plan's PRNG seed (default: from time and pid);
 *                      the same seed replays the same plan
 *   --settle-wait T    seconds to wait for holds to drain and journaled
 *                      charges to land before judging (default 20)
 *   --self-test        proves the judge can fail: adds one unit to one
 *                      account's balance behind the relay's back just before
 *                      judging, so the run must end FAIL with drift_units=1
 *   --cleanup          delete this run's accounts after an OK verdict
 *
 * The checker creates its own accounts (ids "lc<pid><time>-<n>", random
 * raw keys that live only in this process) directly in Redis, so it can run
 * against relays that serve real accounts too.  It assumes the seed's
 * tariffs, as shipped in conf.d/imgbill.conf, on every relay.
 *
 * Output: one verdict line on stdout, "loadcheck: OK ..." or
 * "loadcheck: FAIL ...", then one line per problem on stderr.  Its outcome
 * classes add up to the requests: ok (2xx, charged), free (2xx, 0.0000),
 * failed (the upstream's error passed on, free), rejected (400, 401, 402,
 * 503 before the upstream), aborted (the client gave up on purpose),
 * dropped (the upstream closed mid-body: a JSON 502
 * upstream_response_incomplete, or no complete reply).  unseen counts
 * the charges of clients that gave up after the upstream had answered;
 * each must match one aborted request.  reversed counts charges given back
 * (a client that left while its charge settled): each a charge and a
 * "reversal" entry of the same request and amount, never of a reply its
 * client read.  relay_requests and relay_ok give,
 * per relay in the order given, the requests sent and those charged.
 * Exit status: 0 OK, 1 FAIL (or no relay / Redis to talk to), 2 bad usage.
 *
 * One file per part, here in scripts/loadcheck-src/, their API in
 * loadcheck.h: main.c (the options, the run in order, the verdict line),
 * plan.c (the random plan and what each request must cost), load.c (the
 * transfers), reply.c (a reply judged on its own), redis.c (the accounts,
 * the faults, the wait for Redis to settle), verify.c (the ledgers read
 * back and judged against the replies).
 *
 * Build: every .c file here, cc -std=c99 -O2 -Wall -Wextra -Werror, linked
 * with -lcurl -lhiredis -lcrypto -ljansson (scripts/loadcheck does it).
 */


#include "loadcheck.h"


static void lc_usage(FILE *f);
static int lc_parse_args(lc_conf_t *conf, int argc, char **argv);
static int lc_parse_option(lc_conf_t *conf, const char *opt, char *val);
static int lc_parse_list(char *val, char **list, int *n);
static int lc_parse_long(const char *s, long min, long max, long *out);
static int lc_parse_faults(lc_conf_t *conf, const char *s);
static void lc_print_relays(const char *name, long *v, int n);
static void lc_free(lc_run_t *run);


static const char  *lc_class_names[LC_NCLASSES] = {
    "ok", "free", "failed", "rejected", "aborted", "dropped"
};


int
main(int argc, char **argv)
{
    int         rc, ok;
    long        i;
    lc_run_t    run;

    memset(&run, 0, sizeof(run));

    rc = lc_parse_args(&run.conf, argc, argv);
    if (rc != 0) {
        return rc < 0 ? 0 : 2;
    }

    run.rng = run.conf.seed;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "loadcheck: curl_global_init() failed\n");
        return 1;
    }

    rc = 1;

    if (lc_redis_connect(&run, 0) != 0 || lc_setup(&run) != 0) {
        goto done;
    }

    lc_plan(&run);

    if (lc_load(&run) != 0) {
        goto done;
    }

    lc_settle_wait(&run);

    if (run.conf.self_test) {
        /* money appears that no request explains: the judge must see it */
        freeReplyObject(lc_redis(&run, "INCRBY imgbill:{%s}:balance 1",
                                 run.accounts[0].id));
        fprintf(stderr, "loadcheck: self-test: added 1 unit to account %s "
                "behind the relay's back\n", run.accounts[0].id);
    }

    if (lc_read_ledgers(&run) != 0) {
        goto done;
    }

    lc_verify(&run);

    ok = (run.nproblems == 0);

    printf("loadcheck: %s scenario=%s requests=%ld concurrency=%ld "
           "accounts=%ld",
           ok ? "OK" : "FAIL", run.conf.exhaust ? "fast-exhaust" : "mixed",
           run.conf.requests, run.conf.concurrency, run.naccounts);

    for (i = 0; i < LC_NCLASSES; i++) {
        printf(" %s=%ld", lc_class_names[i], run.classes[i]);
    }

    printf(" faults=%d charged_units=%" PRId64 " ledger=%zu unseen=%ld "
           "reversed=%ld drift_units=%" PRId64 " duplicates=%ld "
           "holds_left=%lld elapsed=%.1fs settle=%.1fs rate=%.0f/s seed=%"
           PRIu64 " prefix=%s",
           run.fired, run.charged_units, run.nledger, run.unseen,
           run.reversed,
           run.drift, run.duplicates, run.holds_left, run.elapsed,
           run.settled, run.elapsed > 0 ? run.conf.requests / run.elapsed : 0,
           run.conf.seed, run.prefix);
    printf(" relays=%d killed=%ld late=%ld", run.conf.nrelays, run.killed,
           run.late);
    lc_print_relays("relay_requests", run.relay_sent, run.conf.nrelays);
    lc_print_relays("relay_ok", run.relay_ok, run.conf.nrelays);
    printf("\n");
    fflush(stdout);

    for (i = 0; i < run.nproblems && i < LC_PROBLEMS_MAX; i++) {
        fprintf(stderr, "loadcheck: %s\n", run.problems[i]);
    }

    if (run.nproblems > LC_PROBLEMS_MAX) {
        fprintf(stderr, "loadcheck: ... and %ld more problems\n",
                run.nproblems - LC_PROBLEMS_MAX);
    }

    if (ok && run.conf.cleanup) {
        lc_cleanup(&run);
    }

    rc = ok ? 0 : 1;

done:

    lc_free(&run);
    curl_global_cleanup();

    return rc;
}


static void
lc_usage(FILE *f)
{
    fprintf(f,
        "usage: loadcheck --relay http://127.0.0.1:PORT [--relay URL ...]\n"
        "                 --redis HOST:PORT|unix:PATH\n"
        "                 [--password PW] [--requests N (1000)] "
        "[--concurrency C (32)]\n"
        "                 [--accounts A (8)] "
        "[--faults pause,kill,restart,reload,crash]\n"
        "                 [--relay-pid FILE ...]\n"
        "                 [--scenario mixed|fast-exhaust] [--seed S]\n"
        "                 [--settle-wait SECONDS (20)] [--self-test] "
        "[--cleanup]\n"
        "\n"
        "Sends N image generation requests through imgbill relays on one\n"
        "Redis (C at a time, round-robin over the relays), fires the\n"
        "faults at evenly spaced points, then checks Redis to the unit:\n"
        "balance drift, duplicate or missing ledger entries, money rules,\n"
        "leftover holds, status codes.\n"
        "Prints one verdict line; exit 0 OK, 1 FAIL, 2 usage.\n"
        "--self-test tampers with one balance before judging: it must "
        "FAIL\n"
        "with drift_units=1.  --cleanup deletes the run's accounts after "
        "OK.\n");
}


/* 0: run; -1: --help was served; 1: bad usage (told on stderr) */

static int
lc_parse_args(lc_conf_t *conf, int argc, char **argv)
{
    int          i, rc;
    char        *val;
    const char  *opt;

    conf->requests = 1000;
    conf->concurrency = 32;
    conf->accounts = 8;
    conf->settle_wait = 20;
    conf->seed = (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 20);

    for (i = 1; i < argc; i++) {
        opt = argv[i];

        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            lc_usage(stdout);
            return -1;
        }

        if (strcmp(opt, "--self-test") == 0) {
            conf->self_test = 1;
            continue;
        }

        if (strcmp(opt, "--cleanup") == 0) {
            conf->cleanup = 1;
            continue;
        }

        if (i + 1 >= argc) {
            fprintf(stderr, "loadcheck: %s: a value is missing\n", opt);
            goto usage;
        }

        val = argv[++i];

        rc = lc_parse_option(conf, opt, val);

        if (rc < 0) {
            fprintf(stderr, "loadcheck: %s: invalid value \"%s\"\n", opt,
                    val);
            goto usage;
        }

        if (rc > 0) {
            goto usage;
        }
    }

    if (conf->nrelays == 0 || conf->redis == NULL) {
        fprintf(stderr, "loadcheck: --relay and --redis are required\n");
        goto usage;
    }

    if (conf->npids && conf->npids != conf->nrelays) {
        fprintf(stderr, "loadcheck: %d --relay-pid for %d relays: one "
                "each, in the same order\n", conf->npids, conf->nrelays);
        goto usage;
    }

    for (i = 0; i < conf->nfaults; i++) {
        if ((conf->faults[i] == LC_FAULT_RELOAD
             || conf->faults[i] == LC_FAULT_CRASH)
            && conf->npids == 0)
        {
            fprintf(stderr, "loadcheck: the %s fault needs --relay-pid\n",
                    lc_fault_names[conf->faults[i]]);
            goto usage;
        }
    }

    return 0;

usage:

    lc_usage(stderr);
    return 1;
}


/* "--name value": 0 taken; -1 a bad value; 1 refused (told on stderr) */

static int
lc_parse_option(lc_conf_t *conf, const char *opt, char *val)
{
    int      i, from;
    char    *end;
    double   d;

    if (strcmp(opt, "--relay") == 0) {
        from = conf->nrelays;

        if (lc_parse_list(val, conf->relays, &conf->nrelays) != 0) {
            return -1;
        }

        for (i = from; i < conf->nrelays; i++) {
            if (strncmp(conf->relays[i], "http://", 7) != 0
                && strncmp(conf->relays[i], "https://", 8) != 0)
            {
                fprintf(stderr, "loadcheck: --relay: an http:// URL, not "
                        "\"%s\"\n", conf->relays[i]);
                return 1;
            }
        }

    } else if (strcmp(opt, "--relay-pid") == 0) {
        if (lc_parse_list(val, conf->pids, &conf->npids) != 0) {
            return -1;
        }

    } else if (strcmp(opt, "--redis") == 0) {
        conf->redis = val;

    } else if (strcmp(opt, "--password") == 0) {
        conf->password = val;

    } else if (strcmp(opt, "--requests") == 0) {
        if (lc_parse_long(val, 1, 10000000, &conf->requests) != 0) {
            return -1;
        }

    } else if (strcmp(opt, "--concurrency") == 0) {
        if (lc_parse_long(val, 1, 10000, &conf->concurrency) != 0) {
            return -1;
        }

    } else if (strcmp(opt, "--accounts") == 0) {
        if (lc_parse_long(val, 1, 10000, &conf->accounts) != 0) {
            return -1;
        }

    } else if (strcmp(opt, "--faults") == 0) {
        if (lc_parse_faults(conf, val) != 0) {
            return -1;
        }

    } else if (strcmp(opt, "--scenario") == 0) {
        if (strcmp(val, "mixed") == 0) {
            conf->exhaust = 0;

        } else if (strcmp(val, "fast-exhaust") == 0) {
            conf->exhaust = 1;

        } else {
            return -1;
        }

    } else if (strcmp(opt, "--seed") == 0) {
        errno = 0;
        conf->seed = strtoull(val, &end, 10);
        if (errno || end == val || *end || *val == '-') {
            return -1;
        }

    } else if (strcmp(opt, "--settle-wait") == 0) {
        errno = 0;
        d = strtod(val, &end);
        if (errno || end == val || *end || !(d >= 0 && d <= 3600)) {
            return -1;
        }

        conf->settle_wait = d;

    } else {
        fprintf(stderr, "loadcheck: unknown option \"%s\"\n", opt);
        return 1;
    }

    return 0;
}


/* "a,b,c" split in place and appended; -1 if empty or beyond the max */

static int
lc_parse_list(char *val, char **list, int *n)
{
    char  *p, *comma;

    for (p = val; ; p = comma + 1) {
        comma = strchr(p, ',');

        if (comma) {
            *comma = '\0';
        }

        if (*p == '\0' || *n == LC_RELAYS_MAX) {
            return -1;
        }

        list[(*n)++] = p;

        if (comma == NULL) {
            return 0;
        }
    }
}


static int
lc_parse_long(const char *s, long min, long max, long *out)
{
    long   v;
    char  *end;

    errno = 0;
    v = strtol(s, &end, 10);

    if (errno || end == s || *end || v < min || v > max) {
        return -1;
    }

    *out = v;
    return 0;
}


static int
lc_parse_faults(lc_conf_t *conf, const char *s)
{
    int          f;
    size_t       len;
    const char  *p, *comma;

    conf->nfaults = 0;
    conf->redis_faults = 0;

    if (strcmp(s, "none") == 0 || *s == '\0') {
        return 0;
    }

    for (p = s; ; p = comma + 1) {
        comma = strchr(p, ',');
        len = comma ? (size_t) (comma - p) : strlen(p);

        for (f = 0; f < LC_NFAULT_KINDS; f++) {
            if (strlen(lc_fault_names[f]) == len
                && strncmp(p, lc_fault_names[f], len) == 0)
            {
                break;
            }
        }

        if (f == LC_NFAULT_KINDS || conf->nfaults == LC_FAULTS_MAX) {
            return -1;
        }

        conf->faults[conf->nfaults++] = f;
        conf->redis_faults += (f != LC_FAULT_RELOAD && f != LC_FAULT_CRASH);

        if (comma == NULL) {
            return 0;
        }
    }
}


double
lc_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


void
lc_sleep(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        /* void */
    }
}


void
lc_problem(lc_run_t *run, const char *fmt, ...)
{
    char     *s;
    va_list   ap;

    if (run->nproblems < LC_PROBLEMS_MAX) {
        s = malloc(512);

        if (s) {
            va_start(ap, fmt);
            vsnprintf(s, 512, fmt, ap);
            va_end(ap);
        }

        run->problems[run->nproblems] = s;
    }

    run->nproblems++;
}


/* " name=a/b/c", one number per relay */

static void
lc_print_relays(const char *name, long *v, int n)
{
    int  i;

    printf(" %s=", name);

    for (i = 0; i < n; i++) {
        printf("%s%ld", i ? "/" : "", v[i]);
    }
}


static void
lc_free(lc_run_t *run)
{
    long  i;

    if (run->reqs) {
        for (i = 0; i < run->conf.requests; i++) {
            if (run->reqs[i].easy) {
                curl_multi_remove_handle(run->multi, run->reqs[i].easy);
                curl_easy_cleanup(run->reqs[i].easy);
            }

            curl_slist_free_all(run->reqs[i].headers);
            free(run->reqs[i].body);
        }
    }

    if (run->multi) {
        curl_multi_cleanup(run->multi);
    }

    if (run->redis) {
        redisFree(run->redis);
    }

    for (i = 0; i < run->nproblems && i < LC_PROBLEMS_MAX; i++) {
        free(run->problems[i]);
    }

    free(run->reqs);
    free(run->accounts);
    free(run->ledger);
}
