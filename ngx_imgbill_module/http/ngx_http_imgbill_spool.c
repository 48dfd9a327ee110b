
/*
 * Where a whole reply waits for its settlement: in memory while the
 * worker's budget (imgbill_reply_memory, the whole replies one worker
 * holds in memory at once) and the reply's own cap
 * (imgbill_reply_buffer_size, if set) allow, else in a temporary file
 * under imgbill_temp_path, written as the proxy module's event pipe
 * writes its own (ngx_write_chain_to_temp_file; the file is unlinked once
 * opened, so a crash leaves nothing behind, and its space is the disk's
 * again when the request's pool closes it).  So replies go to disk under
 * pressure, not by their size: a worker with memory to spare sends an
 * image from the buffer it was read into.
 *
 * A reply that goes to a file keeps a staging buffer (what the budget
 * leaves, up to NGX_HTTP_IMGBILL_STAGE), flushed to the file each time it
 * fills; at the end the rest goes to the file too and the buffer is
 * freed, so a slow client downloading a 4K image holds a file descriptor,
 * not its megabytes.  A reply in memory counts against the budget until
 * its request ends.  The reply goes out from the file
 * through an output chain set up as the copy filter sets up its own:
 * sendfile where the connection has it, reads into small buffers where a
 * later filter (gzip, SSL) needs memory.
 *
 * A reply's buffer outlives its reply in the worker, as a spare, while
 * the budget has room for it: glibc maps a buffer of a megabyte or more
 * afresh for each reply and unmaps it after, and a worker relaying 1.6 MB
 * images spent 40% of its time faulting those pages in again.  A reply
 * takes a spare it fills at least half of; a trim tick
 * (imgbill_memory_trim) frees those that waited a whole tick for one.
 */


#include "ngx_http_imgbill_ctx.h"


/* a growing buffer's first size, when no Content-Length says more */
#define NGX_HTTP_IMGBILL_BODY_START   (64 * 1024)

/* a staging buffer's size: as much of this as the budget leaves, and at
   least the least */
#define NGX_HTTP_IMGBILL_STAGE        (256 * 1024)
#define NGX_HTTP_IMGBILL_STAGE_MIN    (16 * 1024)

/* reads from the file, where sendfile cannot send it: as output_buffers'
   default */
#define NGX_HTTP_IMGBILL_OUTPUT_BUFS  2
#define NGX_HTTP_IMGBILL_OUTPUT_SIZE  (32 * 1024)


typedef struct {
    ngx_queue_t                     queue;
    size_t                          size;     /* bytes after the header */
    ngx_msec_t                      since;    /* a spare */
} ngx_http_imgbill_spare_t;

#define NGX_HTTP_IMGBILL_SPARE_HEAD                                          \
    ngx_align(sizeof(ngx_http_imgbill_spare_t), 16)

/*
 * Only a buffer glibc would map afresh (its mmap threshold starts at
 * 128 KB) is kept as a spare: a smaller one freed stays in the heap, and
 * the next malloc() finds it at no fault.  Kept, small replies' buffers
 * would only lengthen the list every reply walks.
 */
#define NGX_HTTP_IMGBILL_SPARE_MIN    (128 * 1024)


static ngx_int_t ngx_http_imgbill_spool_flush(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static u_char *ngx_http_imgbill_spare_get(ngx_http_request_t *r,
    size_t size, size_t *have);
static void ngx_http_imgbill_spare_put(ngx_http_request_t *r, u_char *b);
static ngx_int_t ngx_http_imgbill_spool_alloc(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, size_t size, size_t keep);
static size_t ngx_http_imgbill_spool_room(ngx_http_request_t *r);
static size_t ngx_http_imgbill_spool_stage(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static void ngx_http_imgbill_spool_cleanup(void *data);
static size_t ngx_http_imgbill_spool_cap(ngx_http_imgbill_loc_conf_t *lcf);


/* imgbill_reply_buffer_size SIZE | off */

char *
ngx_http_imgbill_reply_buffer_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    size_t     *sp;
    ngx_str_t  *value;

    sp = (size_t *) (p + cmd->offset);

    if (*sp != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        *sp = 0;
        return NGX_CONF_OK;
    }

    *sp = ngx_parse_size(&value[1]);

    if (*sp == (size_t) NGX_ERROR || *sp == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": a size above "
                           "0, or \"off\" to hold every reply in memory",
                           &value[1], &cmd->name);
        *sp = NGX_CONF_UNSET_SIZE;
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The temporary files' directory of a billed location, unless configured:
 * "imgbill" beside the proxy module's (Debian's /var/lib/nginx/imgbill,
 * beside /var/lib/nginx/proxy), which every configuration that runs nginx
 * under a prefix of its own already sets; else "imgbill_temp" under the
 * prefix, as nginx names its own defaults.  The master creates it
 * (ngx_add_path), owned by the workers' user.
 */

char *
ngx_http_imgbill_spool_merge(ngx_conf_t *cf, ngx_http_imgbill_loc_conf_t *conf)
{
    u_char                    *p;
    ngx_path_init_t            init;
    ngx_http_upstream_conf_t  *ucf;

    if (conf->temp_path) {
        return NGX_CONF_OK;
    }

    ngx_memzero(&init, sizeof(ngx_path_init_t));
    ngx_str_set(&init.name, "imgbill_temp");

    ucf = ngx_http_imgbill_proxy_conf(cf,
              ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));

    if (ucf && ucf->temp_path && ucf->temp_path->name.len) {
        p = ucf->temp_path->name.data + ucf->temp_path->name.len;

        while (p > ucf->temp_path->name.data && p[-1] != '/') {
            p--;
        }

        if (p > ucf->temp_path->name.data) {
            init.name.len = p - ucf->temp_path->name.data
                            + sizeof("imgbill") - 1;
            /* ngx_add_path() and the master's mkdir() read a C string */

            init.name.data = ngx_pnalloc(cf->pool, init.name.len + 1);
            if (init.name.data == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memcpy(ngx_cpymem(init.name.data, ucf->temp_path->name.data,
                                  p - ucf->temp_path->name.data),
                       "imgbill", sizeof("imgbill"));
        }
    }

    return ngx_conf_merge_path_value(cf, &conf->temp_path, NULL, &init);
}


/* the header's promise: room for the reply, or for the part of it kept in
   memory */

ngx_int_t
ngx_http_imgbill_spool_start(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, off_t len)
{
    size_t                        size;
    ngx_pool_cleanup_t           *cln;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    ctx->held = 0;

    /* what the reply holds in memory is the worker's again at its end */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_imgbill_spool_cleanup;
    cln->data = ctx;

    if (len <= 0) {
        return NGX_OK;
    }

    size = (size_t) ngx_min(len, (off_t) ngx_http_imgbill_spool_cap(lcf));

    if (size > ngx_http_imgbill_spool_room(r)) {
        /* it will not fit: to a file, through a staging buffer */
        size = ngx_min(size, ngx_http_imgbill_spool_stage(r, ctx));
    }

    return ngx_http_imgbill_spool_alloc(r, ctx, size, 0);
}


/*
 * Takes the bytes, in memory or to the file.  NGX_DECLINED: the file
 * could not take them (the error is logged); the reply is lost to the
 * client, though not to the upstream.
 */

ngx_int_t
ngx_http_imgbill_spool_add(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, u_char *p, size_t size)
{
    size_t                        n, used, have, need, cap, stage;
    ngx_int_t                     rc;
    ngx_http_imgbill_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    cap = ngx_http_imgbill_spool_cap(lcf);

    ctx->held += size;

    while (size) {

        if (ctx->last == ctx->end) {
            have = ctx->end - ctx->body;
            used = ctx->last - ctx->body;

            /* no Content-Length, or a wrong one: grow by doubling, while
               nothing went to a file and the budget allows */

            need = ngx_max(used + size, 2 * have);
            need = ngx_max(need, NGX_HTTP_IMGBILL_BODY_START);
            need = ngx_min(need, cap);

            if (ctx->file == NULL && have < need
                && need - have <= ngx_http_imgbill_spool_room(r))
            {
                if (ngx_http_imgbill_spool_alloc(r, ctx, need, used)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else {
                /* to the file, and a large buffer gives way to a staging
                   one */

                if (used) {
                    rc = ngx_http_imgbill_spool_flush(r, ctx);
                    if (rc != NGX_OK) {
                        return rc;
                    }
                }

                stage = ngx_http_imgbill_spool_stage(r, ctx);

                if ((have == 0 || have > stage)
                    && ngx_http_imgbill_spool_alloc(r, ctx, stage, 0)
                       != NGX_OK)
                {
                    return NGX_ERROR;
                }
            }
        }

        n = ngx_min(size, (size_t) (ctx->end - ctx->last));

        ctx->last = ngx_cpymem(ctx->last, p, n);
        p += n;
        size -= n;
    }

    return NGX_OK;
}


/* the last byte is in: a reply in a file is all in the file */

ngx_int_t
ngx_http_imgbill_spool_end(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->file == NULL) {
        return NGX_OK;
    }

    if (ctx->last > ctx->body) {
        rc = ngx_http_imgbill_spool_flush(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return ngx_http_imgbill_spool_alloc(r, ctx, 0, 0);
}


/* the held reply as one buffer, the last */

ngx_buf_t *
ngx_http_imgbill_spool_buf(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_buf_t  *b;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NULL;
    }

    if (ctx->file) {
        b->in_file = 1;
        b->file = &ctx->file->file;
        b->file_pos = 0;
        b->file_last = ctx->file->offset;

    } else {
        b->pos = ctx->body;
        b->last = ctx->last;
        b->memory = (b->last > b->pos) ? 1 : 0;
    }

    b->last_buf = 1;

    return b;
}


/*
 * Every call once a reply in a file goes out, as the copy filter's: what
 * the output chain could not pass yet stays in it, and the request stays
 * open (r->buffered) until it has.
 */

ngx_int_t
ngx_http_imgbill_spool_send(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx,
    ngx_chain_t *in, ngx_http_output_body_filter_pt next)
{
    ngx_int_t                  rc;
    ngx_output_chain_ctx_t    *out;
    ngx_http_core_loc_conf_t  *clcf;

    out = ctx->output;

    if (out == NULL) {
        out = ngx_pcalloc(r->pool, sizeof(ngx_output_chain_ctx_t));
        if (out == NULL) {
            return NGX_ERROR;
        }

        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        /* the header filters have run: what they need is known */

        out->sendfile = r->connection->sendfile;
        out->need_in_memory = r->main_filter_need_in_memory
                              || r->filter_need_in_memory;
        out->need_in_temp = r->filter_need_temporary;
        out->alignment = clcf->directio_alignment;

        out->pool = r->pool;
        out->bufs.num = NGX_HTTP_IMGBILL_OUTPUT_BUFS;
        out->bufs.size = NGX_HTTP_IMGBILL_OUTPUT_SIZE;
        out->tag = (ngx_buf_tag_t) &ngx_http_imgbill_module;

        out->output_filter = (ngx_output_chain_filter_pt) next;
        out->filter_ctx = r;

        ctx->output = out;
    }

    rc = ngx_output_chain(out, in);

    if (out->in == NULL) {
        r->buffered &= ~NGX_HTTP_IMGBILL_BUFFERED;

    } else {
        r->buffered |= NGX_HTTP_IMGBILL_BUFFERED;
    }

    return rc;
}


static ngx_int_t
ngx_http_imgbill_spool_flush(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ssize_t                       n;
    ngx_buf_t                     b;
    ngx_chain_t                   cl;
    ngx_temp_file_t              *tf;
    ngx_http_imgbill_loc_conf_t  *lcf;

    tf = ctx->file;

    if (tf == NULL) {
        lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

        tf = ngx_pcalloc(r->pool, sizeof(ngx_temp_file_t));
        if (tf == NULL) {
            return NGX_ERROR;
        }

        /*
         * set by ngx_pcalloc():
         *
         *     tf->persistent = 0;  unlinked once open, as the proxy's
         *     tf->clean = 0;       closed with the pool
         */

        tf->file.fd = NGX_INVALID_FILE;
        tf->file.log = r->connection->log;
        tf->path = lcf->temp_path;
        tf->pool = r->pool;

        /* the usual place of a 4K image: not a warning, as the proxy's */
        tf->log_level = NGX_LOG_INFO;
        tf->warn = "imgbill: an upstream reply waits in a temporary file";

        ctx->file = tf;
    }

    ngx_memzero(&b, sizeof(ngx_buf_t));

    b.pos = ctx->body;
    b.last = ctx->last;
    b.memory = 1;

    cl.buf = &b;
    cl.next = NULL;

    n = ngx_write_chain_to_temp_file(tf, &cl);

    if (n == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "imgbill: the reply of request %V cannot be held in "
                      "\"%V\"", &ctx->request_id, &tf->path->name);
        return NGX_DECLINED;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "imgbill: request %V: %z bytes to \"%V\"",
                   &ctx->request_id, n, &tf->file.name);

    tf->offset += n;
    ctx->last = ctx->body;

    return NGX_OK;
}


/*
 * The reply's buffer replaced by one of size bytes (0: none), its first
 * keep bytes kept, and the worker's count of replies in memory told.
 */

static ngx_int_t
ngx_http_imgbill_spool_alloc(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx, size_t size, size_t keep)
{
    u_char                        *b;
    size_t                         have;
    ngx_http_imgbill_main_conf_t  *mcf;

    b = NULL;
    have = 0;

    if (size) {
        b = ngx_http_imgbill_spare_get(r, size, &have);
        if (b == NULL) {
            return NGX_ERROR;
        }

        if (keep) {
            ngx_memcpy(b, ctx->body, keep);
        }
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    /* the new buffer counts before the old one may stay as a spare */

    if (mcf->worker) {
        mcf->worker->replies -= ctx->memory;
        mcf->worker->replies += have;
    }

    if (ctx->body) {
        ngx_http_imgbill_spare_put(r, ctx->body);
    }

    /* a larger spare counts whole, but holds no more than was asked:
       imgbill_reply_buffer_size stays the cap */

    ctx->memory = have;
    ctx->body = b;
    ctx->last = b ? b + keep : NULL;
    ctx->end = b ? b + size : NULL;

    return NGX_OK;
}


/*
 * A buffer of at least size bytes (*have: how many): the smallest spare
 * the reply fills at least half of, else a new one, once the oldest
 * spares have made room for it in the budget.
 */

static u_char *
ngx_http_imgbill_spare_get(ngx_http_request_t *r, size_t size, size_t *have)
{
    ngx_queue_t                   *q;
    ngx_http_imgbill_spare_t      *s, *best;
    ngx_http_imgbill_worker_t     *w;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);
    w = mcf->worker;

    if (w) {
        best = NULL;

        /* a small reply fills less than half of any spare */

        for (q = ngx_queue_head(&w->spares);
             size >= NGX_HTTP_IMGBILL_SPARE_MIN / 2
             && q != ngx_queue_sentinel(&w->spares);
             q = ngx_queue_next(q))
        {
            s = ngx_queue_data(q, ngx_http_imgbill_spare_t, queue);

            if (s->size >= size && s->size / 2 <= size
                && (best == NULL || s->size < best->size))
            {
                best = s;

                if (s->size == size) {
                    break;
                }
            }
        }

        if (best) {
            ngx_queue_remove(&best->queue);
            w->spare -= best->size;

            *have = best->size;
            return (u_char *) best + NGX_HTTP_IMGBILL_SPARE_HEAD;
        }

        while (!ngx_queue_empty(&w->spares)
               && w->replies + w->spare + size > mcf->reply_memory)
        {
            q = ngx_queue_last(&w->spares);
            s = ngx_queue_data(q, ngx_http_imgbill_spare_t, queue);

            ngx_queue_remove(q);
            w->spare -= s->size;
            ngx_free(s);
        }
    }

    s = ngx_alloc(NGX_HTTP_IMGBILL_SPARE_HEAD + size, r->connection->log);
    if (s == NULL) {
        return NULL;
    }

    s->size = size;

    *have = size;
    return (u_char *) s + NGX_HTTP_IMGBILL_SPARE_HEAD;
}


/* a buffer given back: a spare while the budget has room for it */

static void
ngx_http_imgbill_spare_put(ngx_http_request_t *r, u_char *b)
{
    ngx_http_imgbill_spare_t      *s;
    ngx_http_imgbill_worker_t     *w;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);
    w = mcf->worker;

    s = (ngx_http_imgbill_spare_t *) (b - NGX_HTTP_IMGBILL_SPARE_HEAD);

    if (w && s->size >= NGX_HTTP_IMGBILL_SPARE_MIN
        && w->replies + w->spare + s->size <= mcf->reply_memory)
    {
        s->since = ngx_current_msec;
        ngx_queue_insert_head(&w->spares, &s->queue);
        w->spare += s->size;
        return;
    }

    ngx_free(s);
}


/* the spares no reply took for idle ms or more (0: all), oldest first */

void
ngx_http_imgbill_spares_free(ngx_http_imgbill_worker_t *w, ngx_msec_t idle)
{
    ngx_queue_t               *q;
    ngx_http_imgbill_spare_t  *s;

    while (!ngx_queue_empty(&w->spares)) {
        q = ngx_queue_last(&w->spares);
        s = ngx_queue_data(q, ngx_http_imgbill_spare_t, queue);

        if (idle && (ngx_msec_int_t) (ngx_current_msec - s->since)
                    < (ngx_msec_int_t) idle)
        {
            break;
        }

        ngx_queue_remove(q);
        w->spare -= s->size;
        ngx_free(s);
    }
}


/* what the worker's budget has left for replies */

static size_t
ngx_http_imgbill_spool_room(ngx_http_request_t *r)
{
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    if (mcf->worker == NULL) {
        return mcf->reply_memory;
    }

    return (mcf->worker->replies < mcf->reply_memory)
           ? mcf->reply_memory - mcf->worker->replies : 0;
}


/* a staging buffer's size: its own memory is the budget's again first */

static size_t
ngx_http_imgbill_spool_stage(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    size_t  room;

    room = ngx_http_imgbill_spool_room(r) + ctx->memory;

    return ngx_max(ngx_min(room, NGX_HTTP_IMGBILL_STAGE),
                   NGX_HTTP_IMGBILL_STAGE_MIN);
}


static void
ngx_http_imgbill_spool_cleanup(void *data)
{
    ngx_http_imgbill_ctx_t *ctx = data;

    (void) ngx_http_imgbill_spool_alloc(ctx->request, ctx, 0, 0);
}


/* the most of a reply kept in memory */

static size_t
ngx_http_imgbill_spool_cap(ngx_http_imgbill_loc_conf_t *lcf)
{
    return lcf->reply_buffer ? ngx_min(lcf->reply_buffer, lcf->body_limit)
                             : lcf->body_limit;
}
