/*
 * long-upstream -- for scripts/bench: the upstream of the "long" case, a
 * generation that takes a minute, many thousands at once.
 *
 *   long-upstream --listen HOST:PORT --file REPLY --hold SECONDS
 *                 --status FILE
 *
 * Reads each request (head and Content-Length body), holds it SECONDS,
 * then answers 200 with the JSON of REPLY (Content-Length,
 * "Connection: close") and closes.  A GET is answered at once (a probe
 * that the server is up).  One thread, epoll, non-blocking sockets: tens
 * of thousands of held requests cost a few hundred bytes each, and the
 * file limit is raised to its hard limit.
 *
 * FILE is rewritten (atomically, by rename) whenever a count changes, at
 * most every 100 ms:  "accepted held answered failed\n"
 *   accepted   connections accepted
 *   held       requests read and now waiting out their SECONDS
 *   answered   replies written in full
 *   failed     connections that closed or failed before their reply
 *
 * Stops on SIGTERM.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REQ_MAX  16384

typedef struct conn_s  conn_t;

struct conn_s {
    int      fd;
    int      state;        /* 0 reading, 1 held, 2 writing */
    size_t   len;          /* bytes of the request read, or of the reply sent */
    double   due;          /* when a held request is answered */
    conn_t  *next;         /* the held queue, in order of arrival */
    char    *buf;
};

static char    *reply;
static size_t   reply_len;
static char    *probe;
static size_t   probe_len;
static double   hold;
static int      ep;
static conn_t  *held_head, *held_tail;
static long     n_accepted, n_held, n_answered, n_failed;

static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
status(const char *path, int force)
{
    static double  last;
    static long    seen[4] = { -1, -1, -1, -1 };
    char           tmp[4096];
    FILE          *f;
    double         t;

    if (seen[0] == n_accepted && seen[1] == n_held
        && seen[2] == n_answered && seen[3] == n_failed)
    {
        return;
    }

    t = now();
    if (!force && t - last < 0.1) {
        return;
    }

    last = t;
    seen[0] = n_accepted;
    seen[1] = n_held;
    seen[2] = n_answered;
    seen[3] = n_failed;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL) {
        return;
    }
    fprintf(f, "%ld %ld %ld %ld\n", n_accepted, n_held, n_answered, n_failed);
    fclose(f);
    rename(tmp, path);
}

static void
drop(conn_t *c, int failed)
{
    close(c->fd);
    if (failed) {
        n_failed++;
    }
    free(c->buf);
    free(c);
}

/* write what is left of the reply; 1 done, 0 again later, -1 failed */
static int
send_reply(conn_t *c, const char *data, size_t len)
{
    ssize_t             n;
    struct epoll_event  ev;

    while (c->len < len) {
        n = write(c->fd, data + c->len, len - c->len);
        if (n > 0) {
            c->len += n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            ev.events = EPOLLOUT;
            ev.data.ptr = c;
            if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
                epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            }
            return 0;
        }
        return -1;
    }
    return 1;
}

static void
answer(conn_t *c)
{
    int  rc;

    c->state = 2;
    rc = send_reply(c, reply, reply_len);
    if (rc == 1) {
        n_answered++;
        drop(c, 0);

    } else if (rc < 0) {
        drop(c, 1);
    }
}

/* the request so far: 1 complete, 0 more to read, -1 not HTTP */
static int
complete(conn_t *c)
{
    char    *end, *cl;
    size_t   head;
    long     body = 0;

    c->buf[c->len] = '\0';
    end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL) {
        return c->len < REQ_MAX - 1 ? 0 : -1;
    }
    head = end + 4 - c->buf;

    for (cl = c->buf; cl < end; cl++) {
        if (*cl == '\n' && strncasecmp(cl + 1, "content-length:", 15) == 0) {
            body = strtol(cl + 16, NULL, 10);
            break;
        }
    }
    if (head + body > REQ_MAX - 1) {
        return -1;
    }
    return c->len >= head + body;
}

static void
readable(conn_t *c)
{
    ssize_t  n;
    int      rc;

    for ( ;; ) {
        n = read(c->fd, c->buf + c->len, REQ_MAX - 1 - c->len);
        if (n > 0) {
            c->len += n;
            rc = complete(c);
            if (rc < 0) {
                drop(c, 1);
                return;
            }
            if (rc == 0) {
                continue;
            }
            break;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        drop(c, 1);              /* closed or failed before the reply */
        return;
    }

    if (strncmp(c->buf, "GET ", 4) == 0) {
        c->len = 0;
        c->state = 2;
        rc = send_reply(c, probe, probe_len);
        if (rc != 0) {
            drop(c, 0);
        } else {
            c->state = 3;
        }
        return;
    }

    /*
     * held: out of epoll (a hang-up would be reported even with no events
     * asked); a peer that went away shows when the reply is written
     */
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->state = 1;
    c->len = 0;
    c->due = now() + hold;
    c->next = NULL;
    if (held_tail) {
        held_tail->next = c;
    } else {
        held_head = c;
    }
    held_tail = c;
    n_held++;
}

static void
usage(void)
{
    fprintf(stderr, "usage: long-upstream --listen HOST:PORT --file REPLY "
                    "--hold SECONDS --status FILE\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char          *listen_at = NULL, *file = NULL, *status_file = NULL;
    char                 host[256], *colon, *body;
    int                  i, ls, fd, n, one = 1, timeout;
    long                 size;
    FILE                *f;
    double               t;
    conn_t              *c;
    struct rlimit        rl;
    struct sockaddr_in   sin;
    struct epoll_event   ev, events[256];

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0) {
            listen_at = argv[i + 1];
        } else if (strcmp(argv[i], "--file") == 0) {
            file = argv[i + 1];
        } else if (strcmp(argv[i], "--hold") == 0) {
            hold = atof(argv[i + 1]);
        } else if (strcmp(argv[i], "--status") == 0) {
            status_file = argv[i + 1];
        } else {
            usage();
        }
    }
    if (i != argc || listen_at == NULL || file == NULL || status_file == NULL
        || (colon = strrchr(listen_at, ':')) == NULL
        || colon - listen_at >= (long) sizeof(host))
    {
        usage();
    }

    f = fopen(file, "r");
    if (f == NULL) {
        perror(file);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);
    body = malloc(size);
    if (body == NULL || fread(body, 1, size, f) != (size_t) size) {
        perror(file);
        return 1;
    }
    fclose(f);

    reply = malloc(size + 256);
    reply_len = sprintf(reply, "HTTP/1.1 200 OK\r\n"
                        "Content-Type: application/json\r\n"
                        "Content-Length: %ld\r\nConnection: close\r\n\r\n",
                        size);
    memcpy(reply + reply_len, body, size);
    reply_len += size;
    probe = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            "Connection: close\r\n\r\nok\n";
    probe_len = strlen(probe);

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    memcpy(host, listen_at, colon - listen_at);
    host[colon - listen_at] = '\0';
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        usage();
    }

    ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *) &sin, sizeof(sin)) < 0
        || listen(ls, 65535) < 0)
    {
        perror(listen_at);
        return 1;
    }

    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    status(status_file, 1);

    for ( ;; ) {
        timeout = 100;
        if (held_head) {
            t = (held_head->due - now()) * 1000;
            timeout = t < 0 ? 0 : (t < 100 ? (int) t + 1 : 100);
        }

        n = epoll_wait(ep, events, 256, timeout);

        for (i = 0; i < n; i++) {
            c = events[i].data.ptr;

            if (c == NULL) {
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = calloc(1, sizeof(conn_t));
                    c->buf = malloc(REQ_MAX);
                    c->fd = fd;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                               sizeof(one));
                    ev.events = EPOLLIN;
                    ev.data.ptr = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    n_accepted++;
                }
                continue;
            }

            if (c->state == 0) {
                readable(c);

            } else if (c->state == 2) {
                answer(c);

            } else if (c->state == 3) {
                if (send_reply(c, probe, probe_len) != 0) {
                    drop(c, 0);
                }
            }
        }

        t = now();
        while (held_head && held_head->due <= t) {
            c = held_head;
            held_head = c->next;
            if (held_head == NULL) {
                held_tail = NULL;
            }
            n_held--;
            free(c->buf);
            c->buf = NULL;
            answer(c);
        }

        status(status_file, 0);
    }
}
