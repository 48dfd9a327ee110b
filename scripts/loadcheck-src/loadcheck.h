
/*
 * loadcheck's internal API: the run every part works on, and what each file
 * gives the others.  main.c says what the checker does, and how.
 */


#ifndef LC_LOADCHECK_H
#define LC_LOADCHECK_H

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

/*
 * A request that ended this shortly before its relay crashed may have
 * left its hold's release queued in the killed worker (a failed or
 * aborted generation gives its hold back after the client has its reply)
 */
#define LC_LATE             1.0
#define LC_BODY_MAX         (1024 * 1024)
#define LC_PROBLEMS_MAX     200
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

#define LC_NMODELS  2

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


enum {
    LC_FAULT_PAUSE = 0, LC_FAULT_KILL, LC_FAULT_RESTART, LC_FAULT_RELOAD,
    LC_FAULT_CRASH, LC_NFAULT_KINDS
};

#define LC_FAULTS_MAX  64
#define LC_RELAYS_MAX  16


typedef struct {
    char        *relays[LC_RELAYS_MAX];
    char        *pids[LC_RELAYS_MAX];     /* their nginx.pid, for reload */
    int          nrelays;
    int          npids;
    const char  *redis;
    const char  *password;
    long         requests;
    long         concurrency;
    long         accounts;
    int          faults[LC_FAULTS_MAX];
    int          nfaults;
    int          redis_faults;  /* of them, those that hurt Redis */
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
    uint8_t             relay;      /* which of conf.relays it goes to */
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
    unsigned            killed:1;   /* in flight when its relay crashed */
    unsigned            late:1;     /* ended just before its relay crashed */
    uint8_t             class;
    int                 curl_rc;
    long                status;
    double              ended;
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
    unsigned            reversal:1;  /* a charge given back: amount */
    unsigned            reversed:1;  /* a charge, and its reversal found */
    int64_t             pt;
    int64_t             ct;
    int64_t             charge;
    int64_t             amount;
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
    long                relay_sent[LC_RELAYS_MAX];
    long                relay_ok[LC_RELAYS_MAX];
    int                 fired;
    int                 reloads;    /* the next relay a reload goes to */
    long                killed;     /* requests in flight at a crash */
    long                late;       /* ended less than LC_LATE s before */
    long                charged_seen;   /* replies with a charge > 0 */
    long                unseen;
    long                reversed;   /* charges given back: their client
                                       left while they settled */
    long long           holds_left;
    int64_t             drift;
    long                duplicates;
    int64_t             charged_units;
    double              elapsed;
    double              settled;

    char               *problems[LC_PROBLEMS_MAX];
    long                nproblems;
} lc_run_t;


/* plan.c: the seed's tariffs, the kinds of request, the plan */

extern const lc_model_t  lc_models[LC_NMODELS];
extern const lc_kind_t   lc_kinds[LC_NKINDS];
extern const char       *lc_channels[2];

uint64_t lc_random(lc_run_t *run);
void lc_plan(lc_run_t *run);
int64_t lc_charge(int channel, int model, int64_t pt, int64_t ct);
int64_t lc_expected(lc_req_t *rq);

/* load.c: the requests, C at a time, and the faults fired meanwhile */

int lc_load(lc_run_t *run);

/* reply.c: a reply judged on its own, before Redis is read */

void lc_judge_reply(lc_run_t *run, lc_req_t *rq);

/* redis.c: the checker's connection, its accounts, the faults */

extern const char       *lc_fault_names[LC_NFAULT_KINDS];

int lc_redis_connect(lc_run_t *run, double wait);
redisReply *lc_redis(lc_run_t *run, const char *fmt, ...);
int lc_setup(lc_run_t *run);
void lc_fault(lc_run_t *run, int fault, long at);
void lc_crash(lc_run_t *run, long next);
int lc_crash_ready(lc_run_t *run, long next);
void lc_settle_wait(lc_run_t *run);
void lc_cleanup(lc_run_t *run);

/* verify.c: Redis read back and judged to the unit */

int lc_read_ledgers(lc_run_t *run);
void lc_verify(lc_run_t *run);

/* main.c: shared helpers */

double lc_now(void);
void lc_sleep(long ms);
void lc_problem(lc_run_t *run, const char *fmt, ...);


#endif /* LC_LOADCHECK_H */
