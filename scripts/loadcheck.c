
/*
 * loadcheck -- a load and consistency checker for imgbill.
 *
 *   loadcheck --relay http://127.0.0.1:PORT --redis 127.0.0.1:PORT
 *             [--password PW] [--requests N] [--concurrency C]
 *             [--accounts A] [--faults pause,kill,restart]
 *             [--scenario mixed|fast-exhaust] [--seed S]
 *             [--settle-wait SECONDS] [--self-test] [--cleanup]
 *
 *   --relay URL        the nginx running imgbill (conf.d/imgbill.conf: the
 *                      metered channel at /v1/chat/completions, the fast one
 *                      at /fast/v1/chat/completions), in front of an
 *                      upstream that obeys X-Mock (scripts/mock-upstream)
 *   --redis HOST:PORT  the relay's Redis (or unix:/path); --password PW
 *   --requests N       requests to send (default 1000)
 *   --concurrency C    transfers in flight at once (default 32)
 *   --accounts A       accounts to spread them over (default 8, mixed only)
 *   --faults LIST      Redis faults fired at evenly spaced points of the
 *                      run, comma separated, in order, repeats allowed:
 *                        pause    CLIENT PAUSE 1500 ALL
 *                        kill     CLIENT KILL TYPE normal SKIPME yes
 *                        restart  DEBUG RESTART (needs a redis-server with
 *                                 a save point and enable-debug-command)
 *   --scenario S       mixed (default): random accounts, channels, models
 *                      and outcomes; fast-exhaust: one account holding
 *                      exactly 1.00, every request a 0.07 fast call: exactly
 *                      14 succeed, the rest get 402 (with faults: at most 14)
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
 * against a relay that serves real accounts too.  It assumes the seed's
 * tariffs, as shipped in conf.d/imgbill.conf.
 *
 * Output: one verdict line on stdout, "loadcheck: OK ..." or
 * "loadcheck: FAIL ...", then one line per problem on stderr.  Its outcome
 * classes add up to the requests: ok (2xx, charged), free (2xx, 0.0000),
 * failed (the upstream's error passed on, free), rejected (400, 401, 402,
 * 503 before the upstream), aborted (the client gave up on purpose),
 * dropped (the upstream closed mid-body: no complete reply).  unseen counts
 * the charges of clients that gave up after the upstream had answered;
 * each must match one aborted request.
 * Exit status: 0 OK, 1 FAIL (or no relay / Redis to talk to), 2 bad usage.
 *
 * Build: cc -O2 -Wall -Wextra -Werror scripts/loadcheck.c \
 *            -lcurl -lhiredis -lcrypto         (scripts/loadcheck does it)
 */


#define _POSIX_C_SOURCE  200809L

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>


#define LC_METERED          0
#define LC_FAST             1

/* the seed's money rules, in units of 0.0001 CNY (conf.d/imgbill.conf) */
#define LC_MIN_CHARGE       100
#define LC_MIN_BALANCE      50000
#define LC_PER_MILLION      1000000
#define LC_MAX_OUTPUT       4096            /* the relay's max_output */

/* every JSON request; its length bounds the prompt in the relay's hold */
#define LC_BODY                                                              \
    "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\","                 \
    "\"content\":\"draw a cat\"}]}"

/* above any metered hold of this checker's small bodies (pro: 34940) */
#define LC_MAX_HOLD         40000

#define LC_BIG_BALANCE      100000000       /* 10000.00: never runs dry */
#define LC_SMALL_BALANCE    60000           /* 6.00: meets 402 soon */
#define LC_EXHAUST_BALANCE  10000           /* 1.00 */

#define LC_ABORT_MS         500             /* the client gives up */
#define LC_TIMEOUT_MS       60000           /* anything else: a hang */
#define LC_BODY_MAX         (1024 * 1024)
#define LC_PROBLEMS_MAX     200
#define LC_JSON_DEPTH       64
#define LC_RID_LEN          32

#define LC_NONE             INT64_MIN       /* a header that was absent */
#define LC_BAD              (INT64_MIN + 1) /* a header that did not parse */


typedef struct {
    const char  *name;
    int64_t      in;        /* metered, units per 1M input tokens */
    int64_t      out;       /* metered, units per 1M output tokens */
    int64_t      fast;      /* fast, units per call */
    int          pt;        /* the mock's default usage for the model */
    int          ct;
} lc_model_t;

static const lc_model_t  lc_models[] = {
    { "gemini-2.5-flash-image",       22000, 2190000,  700,  560, 1120 },
    { "gemini-3-pro-image-preview",  142000, 8530000, 2000, 1210, 2000 },
};

#define LC_NMODELS  (sizeof(lc_models) / sizeof(lc_models[0]))

static const char  *lc_channels[] = { "metered", "fast" };


/* what a reply is worth when the generation succeeds */
enum {
    LC_CHARGE_NONE = 0,     /* free whatever the channel */
    LC_CHARGE_USAGE,        /* metered: by usage; fast: the price */
    LC_CHARGE_FAST          /* usage missing: only the fast price */
};

/* the outcome classes of the verdict line; they add up to the requests */
enum {
    LC_OK = 0,              /* 2xx and charged */
    LC_FREE,                /* 2xx, 0.0000 */
    LC_FAILED,              /* the upstream's failure, passed on free */
    LC_REJECTED,            /* refused before the upstream: 4xx, 503 */
    LC_ABORTED,             /* the client gave up (on purpose) */
    LC_DROPPED,             /* no complete reply */
    LC_NCLASSES
};

static const char  *lc_class_names[] = {
    "ok", "free", "failed", "rejected", "aborted", "dropped"
};

typedef struct {
    const char  *name;
    const char  *mock;      /* X-Mock before the tokens */
    int          weight;    /* in the mixed plan */
    long         status;    /* of a complete reply; 0: none expected */
    const char  *code;      /* error.code of a non-2xx reply */
    int          charge;    /* LC_CHARGE_* of a 2xx reply */
    unsigned     tokens:1;  /* sends pt= ct= */
    unsigned     redis:1;   /* asks Redis: 503 under a fault */
    unsigned     gate:1;    /* admitted by the gate: 402 possible */
    unsigned     model:1;   /* "model" names no priced model */
    unsigned     json:1;    /* the request body is JSON */
} lc_kind_t;

enum {
    LC_K_OK = 0, LC_K_DECOY, LC_K_USAGE_FIRST, LC_K_CHUNKED, LC_K_NOIMAGE,
    LC_K_NOUSAGE, LC_K_NONJSON, LC_K_500, LC_K_429, LC_K_DROP, LC_K_ABORT,
    LC_K_BADKEY, LC_K_BADMODEL, LC_K_BADJSON, LC_NKINDS
};

static const lc_kind_t  lc_kinds[LC_NKINDS] = {
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
    { "drop", "drop=1", 5, 0, NULL, LC_CHARGE_NONE, 1, 1, 1, 0, 1 },
    { "abort", "sleep=1.5", 5, 200, NULL, LC_CHARGE_USAGE, 1, 1, 1, 0, 1 },
    { "badkey", "", 4, 401, "invalid_api_key", LC_CHARGE_NONE,
      0, 1, 0, 0, 1 },
    { "badmodel", "", 4, 400, "model_not_supported", LC_CHARGE_NONE,
      0, 0, 0, 1, 1 },
    { "badjson", "", 4, 400, "invalid_json", LC_CHARGE_NONE,
      0, 0, 0, 0, 0 },
};


enum { LC_FAULT_PAUSE = 0, LC_FAULT_KILL, LC_FAULT_RESTART };

static const char  *lc_fault_names[] = { "pause", "kill", "restart" };

#define LC_FAULTS_MAX  64


typedef struct {
    const char  *relay;
    const char  *redis;
    const char  *password;
    long         requests;
    long         concurrency;
    long         accounts;
    int          faults[LC_FAULTS_MAX];
    int          nfaults;
    int          exhaust;
    uint64_t     seed;
    double       settle_wait;
    unsigned     self_test:1;
    unsigned     cleanup:1;
} lc_conf_t;


typedef struct {
    char         id[64];
    char         key[48];   /* the raw key: never leaves this process */
    char         hash[65];
    int64_t      initial;
    int64_t      final;
    int64_t      charged;   /* the sum of its ledger charges */
    long long    holds;
    unsigned     small:1;
} lc_account_t;


typedef struct {
    /* the plan */
    uint32_t            n;
    uint16_t            account;
    uint8_t             channel;
    uint8_t             model;
    uint8_t             kind;
    int32_t             pt;         /* -1: the mock's default */
    int32_t             ct;
    char                mock[96];

    /* in flight only */
    CURL               *easy;
    struct curl_slist  *headers;
    char               *body;
    size_t              len;
    size_t              cap;
    unsigned            truncated:1;

    /* the outcome */
    unsigned            done:1;
    unsigned            complete:1;
    unsigned            dup_header:1;
    unsigned            matched:1;  /* an aborted one a ledger entry claims */
    uint8_t             class;
    int                 curl_rc;
    long                status;
    int64_t             charge;
    int64_t             balance;
    char                rid[LC_RID_LEN + 2];
    char                code[48];
} lc_req_t;


typedef struct {
    char                rid[64];
    char                sid[32];    /* the stream entry id */
    uint16_t            account;
    int8_t              channel;    /* -1: none of ours */
    int8_t              model;
    unsigned            seen:1;     /* some reply carried its request id */
    int64_t             pt;
    int64_t             ct;
    int64_t             charge;
    int64_t             balance_after;
} lc_entry_t;


typedef struct {
    lc_conf_t           conf;
    char                prefix[40];
    redisContext       *redis;
    CURLM              *multi;
    lc_account_t       *accounts;
    long                naccounts;
    lc_req_t           *reqs;
    lc_entry_t         *ledger;
    size_t              nledger;
    size_t              ledger_cap;
    uint64_t            rng;

    long                classes[LC_NCLASSES];
    int                 fired;
    long                charged_seen;   /* replies with a charge > 0 */
    long                unseen;
    long long           holds_left;
    int64_t             drift;
    long                duplicates;
    int64_t             charged_units;
    double              elapsed;
    double              settled;

    char               *problems[LC_PROBLEMS_MAX];
    long                nproblems;
} lc_run_t;


static void lc_usage(FILE *f);
static int lc_parse_args(lc_conf_t *conf, int argc, char **argv);
static int lc_parse_long(const char *s, long min, long max, long *out);
static int lc_parse_faults(lc_conf_t *conf, const char *s);
static uint64_t lc_random(lc_run_t *run);
static int lc_random_key(char *buf, size_t size);
static int lc_sha256_hex(const char *s, char *hex);
static double lc_now(void);
static void lc_sleep(long ms);
static void lc_problem(lc_run_t *run, const char *fmt, ...);
static int lc_redis_connect(lc_run_t *run, double wait);
static redisReply *lc_redis(lc_run_t *run, const char *fmt, ...);
static int lc_setup(lc_run_t *run);
static void lc_plan(lc_run_t *run);
static int32_t lc_tokens(lc_run_t *run);
static int64_t lc_charge(int channel, int model, int64_t pt, int64_t ct);
static int64_t lc_expected(lc_req_t *rq);
static int lc_load(lc_run_t *run);
static int lc_start(lc_run_t *run, lc_req_t *rq);
static size_t lc_on_header(char *buf, size_t size, size_t n, void *data);
static size_t lc_on_body(char *buf, size_t size, size_t n, void *data);
static void lc_finish(lc_run_t *run, lc_req_t *rq, CURLcode rc);
static void lc_judge_reply(lc_run_t *run, lc_req_t *rq);
static int64_t lc_parse_money(const char *p, size_t len);
static void lc_fault(lc_run_t *run, int fault, long at);
static void lc_settle_wait(lc_run_t *run);
static int lc_read_ledgers(lc_run_t *run);
static int lc_ledger_entry(lc_run_t *run, long account, redisReply *x);
static int64_t lc_parse_int(const char *s);
static void lc_verify(lc_run_t *run);
static void lc_verify_exhaust(lc_run_t *run);
static int lc_entry_cmp(const void *a, const void *b);
static lc_entry_t *lc_find_entry(lc_run_t *run, const char *rid,
    size_t *count);
static void lc_cleanup(lc_run_t *run);
static void lc_free(lc_run_t *run);
static int lc_json_check(const char *p, size_t len, char *code,
    size_t size, int *has_error);


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
           "drift_units=%" PRId64 " duplicates=%ld holds_left=%lld "
           "elapsed=%.1fs settle=%.1fs rate=%.0f/s seed=%" PRIu64
           " prefix=%s\n",
           run.fired, run.charged_units, run.nledger, run.unseen,
           run.drift, run.duplicates, run.holds_left, run.elapsed,
           run.settled, run.elapsed > 0 ? run.conf.requests / run.elapsed : 0,
           run.conf.seed, run.prefix);
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
        "usage: loadcheck --relay http://127.0.0.1:PORT "
        "--redis HOST:PORT|unix:PATH\n"
        "                 [--password PW] [--requests N (1000)] "
        "[--concurrency C (32)]\n"
        "                 [--accounts A (8)] [--faults pause,kill,restart]\n"
        "                 [--scenario mixed|fast-exhaust] [--seed S]\n"
        "                 [--settle-wait SECONDS (20)] [--self-test] "
        "[--cleanup]\n"
        "\n"
        "Sends N image generation requests through an imgbill relay (C at\n"
        "a time), fires the Redis faults at evenly spaced points, then\n"
        "checks Redis to the unit: balance drift, duplicate or missing\n"
        "ledger entries, money rules, leftover holds, status codes.\n"
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
    int          i;
    char        *end;
    double       d;
    const char  *opt, *val;

    opt = "";
    val = "";

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

        if (strcmp(opt, "--relay") == 0) {
            if (strncmp(val, "http://", 7) != 0
                && strncmp(val, "https://", 8) != 0)
            {
                fprintf(stderr, "loadcheck: --relay: an http:// URL\n");
                goto usage;
            }

            conf->relay = val;

        } else if (strcmp(opt, "--redis") == 0) {
            conf->redis = val;

        } else if (strcmp(opt, "--password") == 0) {
            conf->password = val;

        } else if (strcmp(opt, "--requests") == 0) {
            if (lc_parse_long(val, 1, 10000000, &conf->requests) != 0) {
                goto bad;
            }

        } else if (strcmp(opt, "--concurrency") == 0) {
            if (lc_parse_long(val, 1, 10000, &conf->concurrency) != 0) {
                goto bad;
            }

        } else if (strcmp(opt, "--accounts") == 0) {
            if (lc_parse_long(val, 1, 10000, &conf->accounts) != 0) {
                goto bad;
            }

        } else if (strcmp(opt, "--faults") == 0) {
            if (lc_parse_faults(conf, val) != 0) {
                goto bad;
            }

        } else if (strcmp(opt, "--scenario") == 0) {
            if (strcmp(val, "mixed") == 0) {
                conf->exhaust = 0;

            } else if (strcmp(val, "fast-exhaust") == 0) {
                conf->exhaust = 1;

            } else {
                goto bad;
            }

        } else if (strcmp(opt, "--seed") == 0) {
            errno = 0;
            conf->seed = strtoull(val, &end, 10);
            if (errno || end == val || *end || *val == '-') {
                goto bad;
            }

        } else if (strcmp(opt, "--settle-wait") == 0) {
            errno = 0;
            d = strtod(val, &end);
            if (errno || end == val || *end || !(d >= 0 && d <= 3600)) {
                goto bad;
            }

            conf->settle_wait = d;

        } else {
            fprintf(stderr, "loadcheck: unknown option \"%s\"\n", opt);
            goto usage;
        }
    }

    if (conf->relay == NULL || conf->redis == NULL) {
        fprintf(stderr, "loadcheck: --relay and --redis are required\n");
        goto usage;
    }

    return 0;

bad:

    fprintf(stderr, "loadcheck: %s: invalid value \"%s\"\n", opt, val);

usage:

    lc_usage(stderr);
    return 1;
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

    if (strcmp(s, "none") == 0 || *s == '\0') {
        return 0;
    }

    for (p = s; ; p = comma + 1) {
        comma = strchr(p, ',');
        len = comma ? (size_t) (comma - p) : strlen(p);

        for (f = 0; f < 3; f++) {
            if (strlen(lc_fault_names[f]) == len
                && strncmp(p, lc_fault_names[f], len) == 0)
            {
                break;
            }
        }

        if (f == 3 || conf->nfaults == LC_FAULTS_MAX) {
            return -1;
        }

        conf->faults[conf->nfaults++] = f;

        if (comma == NULL) {
            return 0;
        }
    }
}


/* splitmix64: small, and the same seed gives the same plan everywhere */

static uint64_t
lc_random(lc_run_t *run)
{
    uint64_t  z;

    z = (run->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;

    return z ^ (z >> 31);
}


/* keys are secrets even here: they come from the kernel, not the seed */

static int
lc_random_key(char *buf, size_t size)
{
    int            i;
    FILE          *f;
    unsigned char  r[16];

    f = fopen("/dev/urandom", "rb");
    if (f == NULL) {
        return -1;
    }

    if (fread(r, 1, sizeof(r), f) != sizeof(r)) {
        fclose(f);
        return -1;
    }

    fclose(f);

    if (size < sizeof("sk-lc-") + 2 * sizeof(r)) {
        return -1;
    }

    strcpy(buf, "sk-lc-");

    for (i = 0; i < (int) sizeof(r); i++) {
        sprintf(buf + 6 + 2 * i, "%02x", r[i]);
    }

    return 0;
}


static int
lc_sha256_hex(const char *s, char *hex)
{
    unsigned int   i, len;
    unsigned char  md[EVP_MAX_MD_SIZE];

    if (EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL) != 1) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        sprintf(hex + 2 * i, "%02x", md[i]);
    }

    return 0;
}


static double
lc_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
lc_sleep(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        /* void */
    }
}


static void
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


/*
 * (Re)connects the checker's own Redis connection.  After DEBUG RESTART the
 * server needs a moment to load its data back: retry for "wait" seconds.
 */

static int
lc_redis_connect(lc_run_t *run, double wait)
{
    int              port;
    char             host[256];
    double           until;
    const char      *colon;
    redisReply      *r;
    struct timeval   tv = { 5, 0 };

    if (run->redis) {
        redisFree(run->redis);
        run->redis = NULL;
    }

    until = lc_now() + wait;

    for ( ;; ) {
        if (strncmp(run->conf.redis, "unix:", 5) == 0) {
            run->redis = redisConnectUnixWithTimeout(run->conf.redis + 5, tv);

        } else {
            colon = strrchr(run->conf.redis, ':');
            port = colon ? atoi(colon + 1) : 0;

            if (colon == NULL || port <= 0 || port > 65535
                || (size_t) (colon - run->conf.redis) >= sizeof(host))
            {
                fprintf(stderr, "loadcheck: --redis: HOST:PORT expected, "
                        "not \"%s\"\n", run->conf.redis);
                return -1;
            }

            memcpy(host, run->conf.redis, colon - run->conf.redis);
            host[colon - run->conf.redis] = '\0';

            run->redis = redisConnectWithTimeout(host, port, tv);
        }

        if (run->redis && run->redis->err == 0) {
            redisSetTimeout(run->redis, tv);

            r = NULL;

            if (run->conf.password) {
                r = redisCommand(run->redis, "AUTH %s", run->conf.password);
            }

            /* a server still loading its data answers PING with LOADING */

            if (run->conf.password == NULL
                || (r && r->type != REDIS_REPLY_ERROR))
            {
                freeReplyObject(r);
                r = redisCommand(run->redis, "PING");
            }

            if (r && r->type != REDIS_REPLY_ERROR) {
                freeReplyObject(r);
                return 0;
            }

            if (r && lc_now() >= until) {
                fprintf(stderr, "loadcheck: redis %s: %s\n",
                        run->conf.redis, r->str);
            }

            freeReplyObject(r);
        }

        if (lc_now() >= until) {
            if (run->redis && run->redis->err) {
                fprintf(stderr, "loadcheck: redis %s: %s\n",
                        run->conf.redis, run->redis->errstr);
            }

            if (run->redis) {
                redisFree(run->redis);
                run->redis = NULL;
            }

            return -1;
        }

        if (run->redis) {
            redisFree(run->redis);
            run->redis = NULL;
        }

        lc_sleep(100);
    }
}


/*
 * One command; a connection lost meanwhile (a fault) is reopened once and
 * the command repeated.  NULL only if Redis stays away.
 */

static redisReply *
lc_redis(lc_run_t *run, const char *fmt, ...)
{
    int          attempt;
    va_list      ap;
    redisReply  *r;

    for (attempt = 0; attempt < 2; attempt++) {
        if (run->redis == NULL && lc_redis_connect(run, 10) != 0) {
            return NULL;
        }

        va_start(ap, fmt);
        r = redisvCommand(run->redis, fmt, ap);
        va_end(ap);

        if (r) {
            if (r->type == REDIS_REPLY_ERROR) {
                lc_problem(run, "redis: %s: %s", fmt, r->str);
            }

            return r;
        }

        redisFree(run->redis);
        run->redis = NULL;
    }

    return NULL;
}


static int
lc_setup(lc_run_t *run)
{
    long           i;
    redisReply    *r;
    lc_account_t  *a;

    snprintf(run->prefix, sizeof(run->prefix), "lc%ld%ld",
             (long) getpid(), (long) time(NULL));

    run->naccounts = run->conf.exhaust ? 1 : run->conf.accounts;

    run->accounts = calloc(run->naccounts, sizeof(lc_account_t));
    run->reqs = calloc(run->conf.requests, sizeof(lc_req_t));

    if (run->accounts == NULL || run->reqs == NULL) {
        fprintf(stderr, "loadcheck: out of memory\n");
        return -1;
    }

    for (i = 0; i < run->naccounts; i++) {
        a = &run->accounts[i];

        snprintf(a->id, sizeof(a->id), "%s-%ld", run->prefix, i);

        if (lc_random_key(a->key, sizeof(a->key)) != 0
            || lc_sha256_hex(a->key, a->hash) != 0)
        {
            fprintf(stderr, "loadcheck: cannot make an API key\n");
            return -1;
        }

        if (run->conf.exhaust) {
            a->initial = LC_EXHAUST_BALANCE;
            a->small = 1;

        } else if (run->naccounts > 1 && i == run->naccounts - 1) {
            /* the last one runs into the gate: 402s are an outcome too */
            a->initial = LC_SMALL_BALANCE;
            a->small = 1;

        } else {
            a->initial = LC_BIG_BALANCE;
        }

        r = lc_redis(run, "SET imgbill:key:%s %s", a->hash, a->id);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            freeReplyObject(r);
            goto failed;
        }

        freeReplyObject(r);

        r = lc_redis(run, "SET imgbill:{%s}:balance %" PRId64, a->id,
                     a->initial);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            freeReplyObject(r);
            goto failed;
        }

        freeReplyObject(r);
    }

    return 0;

failed:

    fprintf(stderr, "loadcheck: cannot create the accounts in redis %s\n",
            run->conf.redis);
    return -1;
}


static void
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

static int64_t
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

static int64_t
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


/*
 * The load: up to C transfers in flight in one thread, a new one started
 * as soon as one ends; the faults fire from here, between two starts, so
 * they land while transfers are in flight.
 */

static int
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

                lc_fault(run, run->conf.faults[run->fired], next);
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

    snprintf(url, sizeof(url), "%s%s/v1/chat/completions", run->conf.relay,
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

    } else if (rq->kind == LC_K_ABORT && rc == CURLE_OPERATION_TIMEDOUT) {
        /* the point of it: the relay sees the client go mid-generation */
        rq->class = LC_ABORTED;

    } else {
        rq->class = LC_DROPPED;

        if (rq->kind != LC_K_DROP
            || (rc != CURLE_GOT_NOTHING && rc != CURLE_PARTIAL_FILE
                && rc != CURLE_RECV_ERROR && rc != CURLE_SEND_ERROR))
        {
            lc_problem(run, "request #%u (%s, %s %s, account %s): "
                       "transfer failed: %s", rq->n, k->name,
                       lc_channels[rq->channel], lc_models[rq->model].name,
                       run->accounts[rq->account].id,
                       curl_easy_strerror(rc));
        }
    }

    run->classes[rq->class]++;

    free(rq->body);
    rq->body = NULL;
    rq->len = 0;
    rq->cap = 0;
}


/*
 * Everything a reply can be checked against without Redis: its status for
 * what was asked, its error body, its headers, its charge for the usage
 * the mock was told to report.
 */

static void
lc_judge_reply(lc_run_t *run, lc_req_t *rq)
{
    int               has_error, json_ok, i;
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

    } else if (st == 400 || st == 401 || st == 402 || st == 413
               || (st == 503 && strcmp(rq->code, "billing_unavailable") == 0))
    {
        rq->class = LC_REJECTED;

    } else {
        rq->class = LC_FAILED;
    }

    why = NULL;

    /* the status this kind of request may get */

    if (st == k->status && k->status != 0) {
        /* what was asked for */

    } else if (st == 402 && k->gate) {
        /* the gate: checked against the final balance in lc_verify() */

    } else if (st == 503 && k->redis && run->conf.nfaults) {
        /* Redis was hurt on purpose */

    } else if (st == 503 && k->redis) {
        why = "503 while no fault was fired";

    } else {
        why = "unexpected status";
    }

    if (why == NULL && st >= 300 && (!json_ok || !has_error)) {
        why = "the body is not JSON with an \"error\" object";
    }

    if (why == NULL && st >= 200 && st < 300 && !json_ok) {
        why = "a 2xx reply that is not JSON";
    }

    if (why == NULL && st >= 300) {
        if (st == 402 && strcmp(rq->code, "insufficient_balance") != 0) {
            why = "402 without code insufficient_balance";

        } else if (st == 503 && strcmp(rq->code, "billing_unavailable")
                                != 0)
        {
            why = "503 without code billing_unavailable";

        } else if (st == k->status && k->code
                   && strcmp(rq->code, k->code) != 0)
        {
            why = "wrong error code";
        }
    }

    if (why == NULL && (rq->charge == LC_BAD || rq->balance == LC_BAD)) {
        why = "a malformed X-Imgbill-Charge or X-Imgbill-Balance";
    }

    if (why == NULL && rq->dup_header) {
        why = "an X-Imgbill-* header twice";
    }

    if (why == NULL) {
        for (i = 0; i < LC_RID_LEN; i++) {
            if (!((rq->rid[i] >= '0' && rq->rid[i] <= '9')
                  || (rq->rid[i] >= 'a' && rq->rid[i] <= 'f')))
            {
                break;
            }
        }

        if (i != LC_RID_LEN || rq->rid[i] != '\0') {
            why = "X-Imgbill-Request-Id missing or not 32 hex digits";
        }
    }

    /* admitted, and answered: the charge is always told, even 0.0000 */

    if (why == NULL && rq->class != LC_REJECTED && rq->charge == LC_NONE) {
        why = "no X-Imgbill-Charge";
    }

    if (why == NULL && rq->charge != LC_NONE && rq->charge != 0
        && (st < 200 || st >= 300))
    {
        why = "a non-2xx reply with a charge";
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
        lc_problem(run, "request #%u (%s, %s %s, mock \"%s\", account %s): "
                   "%s: status %ld, code \"%s\", request id \"%s\"",
                   rq->n, k->name, lc_channels[rq->channel],
                   lc_models[rq->model].name, rq->mock, a->id, why, st,
                   rq->code, rq->rid);
    }

    if (rq->class == LC_OK) {
        run->charged_seen++;
    }
}


/*
 * Faults come from the checker's own connection.  A pause outlives the
 * relay's Redis timeout (1 s): admissions fail closed, settlements go to
 * the journal.  A kill drops every connection but ours.  A restart
 * re-execs the server, which saves and reloads its data.
 */

static void
lc_fault(lc_run_t *run, int fault, long at)
{
    redisReply    *r;
    lc_account_t  *a;

    fprintf(stderr, "loadcheck: fault %d/%d: %s at request %ld\n",
            run->fired + 1, run->conf.nfaults, lc_fault_names[fault], at);

    if (run->redis == NULL && lc_redis_connect(run, 5) != 0) {
        lc_problem(run, "fault %s: no connection to Redis",
                   lc_fault_names[fault]);
        return;
    }

    switch (fault) {

    case LC_FAULT_PAUSE:
        r = redisCommand(run->redis, "CLIENT PAUSE 1500 ALL");
        break;

    case LC_FAULT_KILL:
        r = redisCommand(run->redis, "CLIENT KILL TYPE normal SKIPME yes");
        break;

    default:
        r = redisCommand(run->redis, "DEBUG RESTART");
        break;
    }

    if (r && r->type == REDIS_REPLY_ERROR) {
        lc_problem(run, "fault %s did not fire: %s", lc_fault_names[fault],
                   r->str);
    }

    freeReplyObject(r);

    if (fault != LC_FAULT_RESTART) {
        if (r == NULL) {
            lc_problem(run, "fault %s: %s", lc_fault_names[fault],
                       run->redis->errstr);
            redisFree(run->redis);
            run->redis = NULL;
        }

        return;
    }

    /* the server went away under us by design: wait for it to be back */

    if (lc_redis_connect(run, 15) != 0) {
        lc_problem(run, "fault restart: Redis did not come back in 15 s");
        return;
    }

    a = &run->accounts[0];
    r = redisCommand(run->redis, "GET imgbill:key:%s", a->hash);

    if (r == NULL || r->type != REDIS_REPLY_STRING
        || strcmp(r->str, a->id) != 0)
    {
        lc_problem(run, "fault restart: the data did not survive DEBUG "
                   "RESTART (start redis-server with a save point)");
    }

    freeReplyObject(r);
}


/*
 * Holds are given back and journaled charges replayed asynchronously,
 * after the replies: poll until no hold is left and every charge a client
 * was told of is in a ledger, or the time is up (lc_verify() says what).
 */

static void
lc_settle_wait(lc_run_t *run)
{
    int            stable;
    long           i;
    double         start, until;
    long long      holds, entries, last;
    redisReply    *r;

    start = lc_now();
    until = start + run->conf.settle_wait;
    stable = 0;
    last = -1;

    for ( ;; ) {
        holds = 0;
        entries = 0;

        for (i = 0; i < run->naccounts; i++) {
            r = lc_redis(run, "HLEN imgbill:{%s}:holds",
                         run->accounts[i].id);
            holds += (r && r->type == REDIS_REPLY_INTEGER) ? r->integer : 1;
            freeReplyObject(r);

            r = lc_redis(run, "XLEN imgbill:{%s}:ledger",
                         run->accounts[i].id);
            entries += (r && r->type == REDIS_REPLY_INTEGER) ? r->integer : 0;
            freeReplyObject(r);
        }

        /* twice the same, a moment apart: late replays had their chance */
        if (holds == 0 && entries >= run->charged_seen) {
            if (entries == last && ++stable >= 2) {
                break;
            }

        } else {
            stable = 0;
        }

        last = entries;

        if (lc_now() >= until) {
            break;
        }

        lc_sleep(200);
    }

    run->settled = lc_now() - start;
}


static int
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


static void
lc_verify(lc_run_t *run)
{
    long           i, aborted;
    size_t         e, n, j;
    int64_t        want, bal, d, bound;
    lc_req_t      *rq, *cand;
    lc_entry_t    *en;
    lc_account_t  *a;

    /* every entry obeys the money rules; balance_after tells the order */

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

    /* no money from nowhere, none lost: per account, to the unit */

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

        if (a->holds) {
            lc_problem(run, "account %s: %lld holds left after %.1f s",
                       a->id, a->holds, run->settled);
        }

        run->holds_left += a->holds;
    }

    qsort(run->ledger, run->nledger, sizeof(lc_entry_t), lc_entry_cmp);

    for (e = 1; e < run->nledger; e++) {
        if (strcmp(run->ledger[e].rid, run->ledger[e - 1].rid) == 0) {
            run->duplicates++;
            lc_problem(run, "request id %s is in the ledger twice (%s, %s)",
                       run->ledger[e].rid, run->ledger[e - 1].sid,
                       run->ledger[e].sid);
        }
    }

    /* what the clients were told against what Redis says */

    aborted = 0;

    /*
     * The gate refuses only when the money is short.  An account that
     * still has, at the end, the gate plus more than every hold that can
     * be live at once (one per transfer in flight, per fault the ones
     * lost in flight, the aborted ones the relay still serves) was never
     * short: its 402 means holds or charges that should not be.
     */

    bound = (run->conf.concurrency * (run->conf.nfaults + 1)
             + run->classes[LC_ABORTED]) * (int64_t) LC_MAX_HOLD
            + LC_MIN_BALANCE;

    for (i = 0; i < run->conf.requests; i++) {
        rq = &run->reqs[i];
        a = &run->accounts[rq->account];

        if (rq->class == LC_ABORTED) {
            aborted++;
        }

        if (!rq->complete || rq->rid[0] == '\0') {
            continue;
        }

        en = lc_find_entry(run, rq->rid, &n);

        for (j = 0; j < n; j++) {
            en[j].seen = 1;
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

        } else if (n) {
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

    /*
     * A ledger entry no client saw: a client that gave up after the
     * upstream had answered.  Each must match one aborted request of the
     * same account, channel, model and usage.
     */

    for (e = 0; e < run->nledger; e++) {
        en = &run->ledger[e];

        if (en->seen) {
            continue;
        }

        cand = NULL;

        for (i = 0; i < run->conf.requests; i++) {
            rq = &run->reqs[i];

            if (rq->class == LC_ABORTED && !rq->matched
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
                       "request", run->accounts[en->account].id, en->sid,
                       en->rid, en->charge);
            continue;
        }

        cand->matched = 1;
        run->unseen++;
    }

    if (run->unseen > aborted) {
        lc_problem(run, "%ld ledger entries no client saw, only %ld aborted",
                   run->unseen, aborted);
    }

    if (run->conf.exhaust) {
        lc_verify_exhaust(run);
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
            || (rq->status == 503 && run->conf.nfaults))
        {
            refused++;
            continue;
        }

        lc_problem(run, "fast-exhaust: request #%u got status %ld, "
                   "charge %" PRId64 ": neither 200 with %" PRId64
                   " units nor 402", rq->n, rq->status, rq->charge, price);
    }

    if (run->conf.nfaults == 0) {
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


static void
lc_cleanup(lc_run_t *run)
{
    long           i;
    size_t         e;
    lc_account_t  *a;

    for (e = 0; e < run->nledger; e++) {
        freeReplyObject(lc_redis(run, "DEL imgbill:{%s}:settled:%s",
                                 run->accounts[run->ledger[e].account].id,
                                 run->ledger[e].rid));
    }

    for (i = 0; i < run->naccounts; i++) {
        a = &run->accounts[i];

        freeReplyObject(lc_redis(run, "DEL imgbill:key:%s "
                                 "imgbill:{%s}:balance imgbill:{%s}:holds "
                                 "imgbill:{%s}:ledger", a->hash, a->id,
                                 a->id, a->id));
    }

    fprintf(stderr, "loadcheck: deleted the accounts %s-*\n", run->prefix);
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


/*
 * A small strict JSON reader: is the text one JSON value (an object at the
 * top), and what are "error" and "error.code" in it?  Nothing is built;
 * the depth is bounded.
 */

enum { LC_J_ANY = 0, LC_J_TOP, LC_J_ERROR, LC_J_CODE };

typedef struct {
    const char  *p;
    const char  *end;
    int          depth;
    int          has_error;
    char        *code;
    size_t       size;
} lc_json_t;


static int lc_json_value(lc_json_t *j, int role);
static int lc_json_string(lc_json_t *j, const char **s, size_t *len);


static void
lc_json_ws(lc_json_t *j)
{
    while (j->p < j->end
           && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n'
               || *j->p == '\r'))
    {
        j->p++;
    }
}


static int
lc_json_string(lc_json_t *j, const char **s, size_t *len)
{
    int          i;
    const char  *start;

    if (j->p >= j->end || *j->p != '"') {
        return -1;
    }

    start = ++j->p;

    while (j->p < j->end && *j->p != '"') {
        if ((unsigned char) *j->p < 0x20) {
            return -1;
        }

        if (*j->p == '\\') {
            j->p++;

            if (j->p >= j->end) {
                return -1;
            }

            if (*j->p == 'u') {
                for (i = 1; i <= 4; i++) {
                    if (j->p + i >= j->end
                        || strchr("0123456789abcdefABCDEF", j->p[i]) == NULL
                        || j->p[i] == '\0')
                    {
                        return -1;
                    }
                }

                j->p += 4;

            } else if (strchr("\"\\/bfnrt", *j->p) == NULL || *j->p == 0) {
                return -1;
            }
        }

        j->p++;
    }

    if (j->p >= j->end) {
        return -1;
    }

    *s = start;
    *len = j->p - start;
    j->p++;

    return 0;
}


static int
lc_json_number(lc_json_t *j)
{
    const char  *d;

    if (j->p < j->end && *j->p == '-') {
        j->p++;
    }

    if (j->p < j->end && *j->p == '0') {
        j->p++;

    } else {
        for (d = j->p; j->p < j->end && *j->p >= '0' && *j->p <= '9'; ) {
            j->p++;
        }

        if (j->p == d) {
            return -1;
        }
    }

    if (j->p < j->end && *j->p == '.') {
        j->p++;

        for (d = j->p; j->p < j->end && *j->p >= '0' && *j->p <= '9'; ) {
            j->p++;
        }

        if (j->p == d) {
            return -1;
        }
    }

    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;

        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) {
            j->p++;
        }

        for (d = j->p; j->p < j->end && *j->p >= '0' && *j->p <= '9'; ) {
            j->p++;
        }

        if (j->p == d) {
            return -1;
        }
    }

    return 0;
}


static int
lc_json_literal(lc_json_t *j, const char *word)
{
    size_t  len;

    len = strlen(word);

    if ((size_t) (j->end - j->p) < len || memcmp(j->p, word, len) != 0) {
        return -1;
    }

    j->p += len;

    return 0;
}


static int
lc_json_container(lc_json_t *j, int role)
{
    int          child, object;
    char         close;
    size_t       klen;
    const char  *key;

    object = (*j->p == '{');
    close = object ? '}' : ']';

    if (++j->depth > LC_JSON_DEPTH) {
        return -1;
    }

    j->p++;
    lc_json_ws(j);

    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 0;
    }

    for ( ;; ) {
        child = LC_J_ANY;

        if (object) {
            if (lc_json_string(j, &key, &klen) != 0) {
                return -1;
            }

            if (role == LC_J_TOP && klen == 5
                && memcmp(key, "error", 5) == 0)
            {
                child = LC_J_ERROR;

            } else if (role == LC_J_ERROR && klen == 4
                       && memcmp(key, "code", 4) == 0)
            {
                child = LC_J_CODE;
            }

            lc_json_ws(j);

            if (j->p >= j->end || *j->p != ':') {
                return -1;
            }

            j->p++;
            lc_json_ws(j);
        }

        if (lc_json_value(j, child) != 0) {
            return -1;
        }

        lc_json_ws(j);

        if (j->p < j->end && *j->p == ',') {
            j->p++;
            lc_json_ws(j);
            continue;
        }

        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return 0;
        }

        return -1;
    }
}


static int
lc_json_value(lc_json_t *j, int role)
{
    size_t       len;
    const char  *s;

    if (j->p >= j->end) {
        return -1;
    }

    switch (*j->p) {

    case '{':
        if (role == LC_J_ERROR) {
            j->has_error = 1;
        }

        return lc_json_container(j, role);

    case '[':
        return lc_json_container(j, LC_J_ANY);

    case '"':
        if (lc_json_string(j, &s, &len) != 0) {
            return -1;
        }

        if (role == LC_J_CODE) {
            if (len >= j->size) {
                len = j->size - 1;
            }

            memcpy(j->code, s, len);
            j->code[len] = '\0';
        }

        return 0;

    case 't':
        return lc_json_literal(j, "true");

    case 'f':
        return lc_json_literal(j, "false");

    case 'n':
        return lc_json_literal(j, "null");

    default:
        return lc_json_number(j);
    }
}


/*
 * 0 if [p, p + len) is one JSON object; *has_error tells whether it has an
 * "error" object, code gets error.code ("" if none).
 */

static int
lc_json_check(const char *p, size_t len, char *code, size_t size,
    int *has_error)
{
    lc_json_t  j;

    memset(&j, 0, sizeof(j));
    j.p = p ? p : "";
    j.end = j.p + (p ? len : 0);
    j.code = code;
    j.size = size;
    code[0] = '\0';

    lc_json_ws(&j);

    if (j.p >= j.end || *j.p != '{' || lc_json_value(&j, LC_J_TOP) != 0) {
        return -1;
    }

    lc_json_ws(&j);

    *has_error = j.has_error;

    return j.p == j.end ? 0 : -1;
}
