
/*
 * Redis, from the checker's own connection: the run's accounts made, the
 * faults fired, the wait for the relay's late writes, the cleanup.
 */


#include "loadcheck.h"

#include <dirent.h>
#include <signal.h>
#include <sys/types.h>
#include <openssl/evp.h>


static int lc_random_key(char *buf, size_t size);
static void lc_reload(lc_run_t *run);
static long lc_master(lc_run_t *run, int i);
static int lc_sha256_hex(const char *s, char *hex);


const char  *lc_fault_names[LC_NFAULT_KINDS] = {
    "pause", "kill", "restart", "reload", "crash"
};


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


/*
 * (Re)connects the checker's own Redis connection.  After DEBUG RESTART the
 * server needs a moment to load its data back: retry for "wait" seconds.
 */

int
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

redisReply *
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


int
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


/*
 * Faults come from the checker's own connection.  A pause outlives the
 * relay's Redis timeout (1 s): admissions fail closed, settlements go to
 * the journal.  A kill drops every connection but ours.  A restart
 * re-execs the server, which saves and reloads its data.
 */

void
lc_fault(lc_run_t *run, int fault, long at)
{
    redisReply    *r;
    lc_account_t  *a;

    fprintf(stderr, "loadcheck: fault %d/%d: %s at request %ld\n",
            run->fired + 1, run->conf.nfaults, lc_fault_names[fault], at);

    if (fault == LC_FAULT_RELOAD) {
        lc_reload(run);
        return;
    }

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
 * A relay's workers replaced while it serves (as a deploy does): SIGHUP to
 * the master of the next relay in turn.  The old workers finish what they
 * hold; the new ones open their own Redis connection and replay the
 * relay's journal.
 */

static void
lc_reload(lc_run_t *run)
{
    int   i;
    long  pid;

    i = run->reloads++ % run->conf.npids;
    pid = lc_master(run, i);

    if (pid == 0) {
        return;
    }

    if (kill((pid_t) pid, SIGHUP) != 0) {
        lc_problem(run, "fault reload: kill(%ld, SIGHUP) (relay %s): %s",
                   pid, run->conf.relays[i], strerror(errno));
        return;
    }

    fprintf(stderr, "loadcheck: reloaded relay %s (master %ld)\n",
            run->conf.relays[i], pid);
}


/* whether the relay the next crash hits has a request in flight */

int
lc_crash_ready(lc_run_t *run, long next)
{
    int   i;
    long  j;

    i = run->reloads % run->conf.npids;

    for (j = 0; j < next; j++) {
        if (run->reqs[j].relay == i && !run->reqs[j].done) {
            return 1;
        }
    }

    return 0;
}


/*
 * A relay's machine lost mid-run, as near as one host gets: every worker
 * of the next relay in turn SIGKILLed at once (its master starts new
 * ones).  What was in flight there is lost, and marked so before the
 * kill: the judge lets such a request end without a reply, keep its hold,
 * or have a charge no client saw.
 */

void
lc_crash(lc_run_t *run, long next)
{
    int        i, n;
    long       pid, ppid, j, lost, late;
    char       path[64];
    double     now;
    FILE      *f;
    DIR       *d;
    struct dirent  *e;

    fprintf(stderr, "loadcheck: fault %d/%d: crash at request %ld\n",
            run->fired + 1, run->conf.nfaults, next);

    i = run->reloads++ % run->conf.npids;
    pid = lc_master(run, i);

    if (pid == 0) {
        return;
    }

    lost = 0;
    late = 0;
    now = lc_now();

    for (j = 0; j < next; j++) {
        if (run->reqs[j].relay != i) {
            continue;
        }

        if (!run->reqs[j].done) {
            run->reqs[j].killed = 1;
            lost++;

        } else if (now - run->reqs[j].ended < LC_LATE) {
            run->reqs[j].late = 1;
            late++;
        }
    }

    run->killed += lost;
    run->late += late;

    d = opendir("/proc");
    if (d == NULL) {
        lc_problem(run, "fault crash: /proc: %s", strerror(errno));
        return;
    }

    n = 0;

    while ((e = readdir(d))) {
        snprintf(path, sizeof(path), "/proc/%.20s/stat", e->d_name);

        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }

        /* "pid (comm) state ppid": nginx names its workers without ")" */
        if (fscanf(f, "%ld (%*[^)]) %*c %ld", &j, &ppid) == 2
            && ppid == pid && kill((pid_t) j, SIGKILL) == 0)
        {
            n++;
        }

        fclose(f);
    }

    closedir(d);

    if (n == 0) {
        lc_problem(run, "fault crash: no worker of master %ld (relay %s) "
                   "killed", pid, run->conf.relays[i]);
    }

    fprintf(stderr, "loadcheck: crashed relay %s: %d workers killed, %ld "
            "requests in flight there, %ld ended there in the last %.1f s\n",
            run->conf.relays[i], n, lost, late, LC_LATE);
}


/* the master pid of relay i from its --relay-pid file, 0 if none */

static long
lc_master(lc_run_t *run, int i)
{
    long   pid;
    FILE  *f;

    f = fopen(run->conf.pids[i], "r");
    pid = 0;

    if (f == NULL || fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        lc_problem(run, "fault: no pid in %s (relay %s)", run->conf.pids[i],
                   run->conf.relays[i]);
        pid = 0;
    }

    if (f) {
        fclose(f);
    }

    return pid;
}


/*
 * Holds are given back and journaled charges replayed asynchronously,
 * after the replies: poll until no hold is left and every charge a client
 * was told of is in a ledger, or the time is up (lc_verify() says what).
 */

void
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
        if (holds <= run->killed + run->late
            && entries >= run->charged_seen)
        {
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


void
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
