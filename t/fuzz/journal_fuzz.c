
/*
 * libFuzzer target: the journal read back (ngx_http_imgbill_journal_read.c):
 * what a line owes, and an S, R or V line read field by field.  Built by
 * t/fuzz/run like the others.
 *
 * The first byte picks the mode.
 *
 * Even: the rest is a journal; every line is asked what it owes, and an
 * owed S, R or V line must read whole.
 *
 * Odd: the rest describes lines (a byte: their type, then bytes for their
 * fields), written as the module writes them; every one must be owed and
 * read back as written.  Then one of them is cut where the input says and
 * the next written onto it, as a write cut short by a full disk used to
 * leave them: that line must not be owed (it cannot be read), and every
 * other line must still read as written.
 *
 * -DIMGBILL_FUZZ_SELFTEST builds a deliberately broken variant (a charge
 * read one unit high), which t/95-fuzz.t expects to fail on the seed
 * corpus.
 */


#include "ngx_http_imgbill_journal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define IMGBILL_FUZZ_LINES  16


/* what ngx_http_imgbill_journal_read.c links with but a parser never
   calls */
volatile ngx_time_t  *ngx_cached_time;
ngx_pid_t             ngx_pid;

ssize_t
ngx_read_file(ngx_file_t *file, u_char *buf, size_t size, off_t offset)
{
    return NGX_ERROR;
}


typedef struct {
    u_char                    type;
    char                      text[256];
    size_t                    len;     /* with its LF */
    ngx_int_t                 charge;
    char                      id[40];
    unsigned                  api:1;   /* an S line naming its API */
    unsigned                  key:1;   /* an S or V line naming its key */
    unsigned                  limits:1;  /* ... that has limits */
} imgbill_fuzz_line_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void imgbill_fuzz_any(u_char *buf, size_t len);
static void imgbill_fuzz_written(const uint8_t *data, size_t size);
static size_t imgbill_fuzz_make(const uint8_t *data, size_t size,
    imgbill_fuzz_line_t *l);
static void imgbill_fuzz_check(u_char *p, u_char *eol,
    imgbill_fuzz_line_t *l);
static void imgbill_fuzz_fail(const char *what, ngx_uint_t i);


static ngx_http_imgbill_journal_read_t  imgbill_fuzz_jr;


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *copy;

    if (size < 1) {
        return 0;
    }

    if (data[0] & 1) {
        imgbill_fuzz_written(data + 1, size - 1);
        return 0;
    }

    copy = malloc(size);
    memcpy(copy, data + 1, size - 1);
    imgbill_fuzz_any(copy, size - 1);
    free(copy);

    return 0;
}


/* any bytes: nothing is read past a line, and what is owed reads whole */

static void
imgbill_fuzz_any(u_char *buf, size_t len)
{
    u_char                           *p, *eol, *line;
    ngx_uint_t                        owes, i;
    ngx_http_imgbill_journal_line_t   l, again;

    for (p = buf, i = 0; p < buf + len; p = eol + 1, i++) {
        eol = memchr(p, '\n', buf + len - p);
        if (eol == NULL) {
            break;
        }

        /* an exact-size copy: a read past the line is ASan's to see */

        line = malloc(eol - p + 1);
        memcpy(line, p, eol - p);

        owes = ngx_http_imgbill_journal_owes(line, line + (eol - p),
                                             &imgbill_fuzz_jr, &l);

        /* what owes() read is what the line reads as */

        if (owes == NGX_HTTP_IMGBILL_JOURNAL_OWED && l.type != 'H'
            && (ngx_http_imgbill_journal_line(line, line + (eol - p), &again)
                != NGX_OK
                || again.charged_at != l.charged_at
                || again.settle.charge != l.settle.charge
                || again.settle.request_id.len != l.settle.request_id.len))
        {
            imgbill_fuzz_fail("an owed line does not read", i);
        }

        free(line);
    }
}


/* lines as the module writes them, read back; then two of them merged */

static void
imgbill_fuzz_written(const uint8_t *data, size_t size)
{
    u_char                           *buf, *p, *eol;
    size_t                            at, n, len, cut;
    ngx_uint_t                        i, nl, bad;
    imgbill_fuzz_line_t               lines[IMGBILL_FUZZ_LINES];
    ngx_http_imgbill_journal_line_t   jl;

    nl = 0;
    at = 0;

    while (at < size && nl < IMGBILL_FUZZ_LINES) {
        n = imgbill_fuzz_make(data + at, size - at, &lines[nl]);
        if (n == 0) {
            break;
        }

        at += n;
        nl++;
    }

    if (nl < 2 || at >= size) {
        return;
    }

    /* each alone */

    for (i = 0; i < nl; i++) {
        buf = malloc(lines[i].len);
        memcpy(buf, lines[i].text, lines[i].len);
        imgbill_fuzz_check(buf, buf + lines[i].len - 1, &lines[i]);
        free(buf);
    }

    /* line i cut, line i + 1 written onto it */

    i = data[at] % (nl - 1);
    cut = 1 + ((at + 1 < size) ? data[at + 1] % (lines[i].len - 1) : 0);

    len = 0;
    buf = malloc(4096);

    for (n = 0; n < nl; n++) {
        if (n == i) {
            memcpy(buf + len, lines[n].text, cut);
            len += cut;
            continue;
        }

        memcpy(buf + len, lines[n].text, lines[n].len);
        len += lines[n].len;
    }

    bad = 0;

    for (p = buf, n = 0; p < buf + len; p = eol + 1, n++) {
        eol = memchr(p, '\n', buf + len - p);

        if (n == i) {
            /* the merged line: never owed as something it is not */

            if (ngx_http_imgbill_journal_owes(p, eol, &imgbill_fuzz_jr, &jl)
                == NGX_HTTP_IMGBILL_JOURNAL_OWED)
            {
                bad = 1;
            }

            n++;                    /* it held line i + 1 too */
            continue;
        }

        imgbill_fuzz_check(p, eol, &lines[n]);
    }

    free(buf);

    if (bad) {
        imgbill_fuzz_fail("a line cut short and merged reads as owed", i);
    }
}


/*
 * One line from the input: a byte for its type (S, V, R, D or H) and its
 * numbers, then up to 8 bytes for a name.  0: the input is spent.
 */

static size_t
imgbill_fuzz_make(const uint8_t *data, size_t size,
    imgbill_fuzz_line_t *l)
{
    size_t       n, i;
    char         name[16];
    unsigned     k;
    static char  types[] = "SSSVRDH";
    static char  chars[] = "abcdefghijklmnopqrstuvwxyz0123456789_.-"
                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    if (size < 10) {
        return 0;
    }

    k = data[0];
    l->type = types[k % 7];
    l->api = 0;
    l->key = ((data[9] & 1) != 0);
    l->limits = (l->key && l->type == 'S' && (data[9] & 2) != 0);

    /* an id of hex, as the module's */

    for (i = 0; i < 32; i++) {
        l->id[i] = "0123456789abcdef"[(data[1 + i % 8] >> (i % 2 * 4)) & 15];
    }

    l->id[32] = '\0';

    /* an account, of the characters accounts have */

    for (i = 0; i < 8; i++) {
        name[i] = chars[data[1 + i] % (sizeof(chars) - 1)];
    }

    name[8] = '\0';
    l->charge = (data[2] << 8 | data[3]) + 1;

    switch (l->type) {

    case 'S':
        n = snprintf(l->text, sizeof(l->text),
                     "S %s %s %ld %s %u %u gemini-2.5-flash-image%s%s"
                     "%s%.*s%s\n",
                     l->id, name, (long) l->charge,
                     (k & 8) ? "fast" : "metered", data[4], data[5] * 7u,
                     (k & 16) ? "" : " 1",
                     (k & 48) == 32 ? " openai_images" : "",
                     l->key ? " k=" : "", l->key ? 12 : 0, l->id,
                     l->limits ? "+" : "");
        l->api = ((k & 48) == 32);
        break;

    case 'V':
        n = snprintf(l->text, sizeof(l->text), "V %s/v %s %u%s%.*s\n",
                     l->id, name, 1700000000u + data[6],
                     l->key ? " k=" : "", l->key ? 12 : 0, l->id);
        break;

    case 'R':
        n = snprintf(l->text, sizeof(l->text), "R %s %s%s\n", l->id, l->id,
                     l->id);
        break;

    case 'D':
        n = snprintf(l->text, sizeof(l->text), "D %s\n", l->id);
        break;

    default:
        n = snprintf(l->text, sizeof(l->text), "H %s@%u %s %u\n", l->id,
                     1000u + data[7], name, 1700000000u + data[8]);
    }

    l->len = n;

    return 9;
}


/* a line as written reads back so */

static void
imgbill_fuzz_check(u_char *p, u_char *eol, imgbill_fuzz_line_t *l)
{
    ngx_uint_t                        owes;
    ngx_http_imgbill_journal_line_t   jl;

    owes = ngx_http_imgbill_journal_owes(p, eol, &imgbill_fuzz_jr, &jl);

    if (l->type == 'D') {
        if (owes != NGX_HTTP_IMGBILL_JOURNAL_NOTHING) {
            imgbill_fuzz_fail("a D line owes", 0);
        }

        return;
    }

    if (owes != NGX_HTTP_IMGBILL_JOURNAL_OWED) {
        imgbill_fuzz_fail("a line as written is not owed", l->type);
    }

    if (l->type == 'H') {
        return;
    }

    if (ngx_http_imgbill_journal_line(p, eol, &jl) != NGX_OK
        || jl.type != l->type
        || jl.settle.request_id.len != 32
        || memcmp(jl.settle.request_id.data, l->id, 32) != 0)
    {
        imgbill_fuzz_fail("a line as written does not read back", l->type);
    }

#ifdef IMGBILL_FUZZ_SELFTEST
    jl.settle.charge++;
#endif

    if (l->type == 'S' && jl.settle.charge != l->charge) {
        imgbill_fuzz_fail("a charge reads back otherwise", 0);
    }

    if (l->type == 'S'
        && (l->api ? jl.settle.api.len != sizeof("openai_images") - 1
                     || ngx_strncmp(jl.settle.api.data, "openai_images",
                                    jl.settle.api.len) != 0
                   : jl.settle.api.len != 0))
    {
        imgbill_fuzz_fail("an API reads back otherwise", 0);
    }

    if ((l->type == 'S' || l->type == 'V')
        && ((l->key ? jl.settle.key.len != 12
                      || memcmp(jl.settle.key.data, l->id, 12) != 0
                    : jl.settle.key.len != 0)
            || jl.settle.key_limits != l->limits))
    {
        imgbill_fuzz_fail("a key reads back otherwise", 0);
    }
}


static void
imgbill_fuzz_fail(const char *what, ngx_uint_t i)
{
    fprintf(stderr, "journal_fuzz: invariant failed: %s (%u)\n", what,
            (unsigned) i);
    abort();
}
