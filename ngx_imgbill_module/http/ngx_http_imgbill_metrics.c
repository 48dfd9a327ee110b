
/*
 * Metrics for the operator, in Prometheus' text format (imgbill_metrics;):
 * requests by channel, model and outcome, money charged, the would-be
 * cost of generations a client abandoned, holds in flight, Redis round
 * trips, errors, timeouts and reconnections, journal lines.
 *
 * The counters live in one shared memory zone, so every worker adds to
 * the same figures and a scrape sees them all; they are atomic adds, no
 * lock.  A request is counted once, in the log phase, from the state its
 * context ended in.  The zone keeps its figures across a reload.
 */


#include "ngx_http_imgbill_ctx.h"


#define NGX_HTTP_IMGBILL_METRICS_SIZE  (256 * 1024)

/* the models a zone tells apart; any other is "other" */
#define NGX_HTTP_IMGBILL_MODELS_MAX    32

#define NGX_HTTP_IMGBILL_CHANNELS      3


typedef struct {
    const char                     *outcome;
    const char                     *reason;
} ngx_http_imgbill_outcome_t;


/* indexed by ngx_http_imgbill_free_e, then the charges of streams that did
   not end as usual, then the rejections */
static ngx_http_imgbill_outcome_t  ngx_http_imgbill_outcomes[] = {
    { "charged", "" },
    { "free", "no_image" },
    { "free", "no_usage" },
    { "free", "upstream_error" },
    { "free", "error_event" },
    { "free", "bad_response" },
    { "free", "client_gone" },
    { "free", "upstream_cut" },
    { "free", "unrecorded" },
    { "charged", "no_usage" },
    { "charged", "client_gone" },
    { "charged", "upstream_cut" },
    { "rejected", "missing_api_key" },
    { "rejected", "invalid_api_key" },
    { "rejected", "insufficient_balance" },
    { "rejected", "billing_unavailable" },
    { "rejected", "invalid_json" },
    { "rejected", "missing_model" },
    { "rejected", "model_not_supported" },
    { "rejected", "image_too_large" },
    { "rejected", "method_not_allowed" },
    { "rejected", "invalid_stream_options" },
    { "rejected", "missing_contents" },
    { "rejected", "alt_sse_required" },
    { "rejected", "not_found" },
    { "rejected", "invalid_image_count" },
    { "rejected", "too_many_images" },
    { "rejected", "ambiguous_key" },
    { "rejected", "ambiguous_query" },
    { "rejected", "invalid_value" },
    { "rejected", "origin_not_allowed" },
    { "rejected", "other" }
};

#define NGX_HTTP_IMGBILL_OUTCOMES                                            \
    (sizeof(ngx_http_imgbill_outcomes) / sizeof(ngx_http_imgbill_outcome_t))

#define NGX_HTTP_IMGBILL_CHARGED   9     /* the first charge with a reason */
#define NGX_HTTP_IMGBILL_REJECTED  12    /* the first rejection above */


typedef ngx_atomic_t  ngx_http_imgbill_by_model_t[NGX_HTTP_IMGBILL_CHANNELS]
                                              [NGX_HTTP_IMGBILL_MODELS_MAX + 1];

struct ngx_http_imgbill_metrics_s {
    ngx_atomic_t                    requests[NGX_HTTP_IMGBILL_CHANNELS]
                                            [NGX_HTTP_IMGBILL_MODELS_MAX + 1]
                                            [NGX_HTTP_IMGBILL_OUTCOMES];
    ngx_http_imgbill_by_model_t     charged;
    ngx_http_imgbill_by_model_t     images;
    ngx_http_imgbill_by_model_t     abandoned;
    ngx_atomic_t                    api_requests[NGX_HTTP_IMGBILL_APIS];
    ngx_atomic_t                    api_charged[NGX_HTTP_IMGBILL_APIS];
    ngx_atomic_t                    api_images[NGX_HTTP_IMGBILL_APIS];
    ngx_atomic_t                    holds_placed;
    ngx_atomic_t                    holds_ended;
    ngx_http_imgbill_stats_t        store;     /* the store's own counts */
};


static ngx_int_t ngx_http_imgbill_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_uint_t ngx_http_imgbill_metrics_outcome(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx);
static ngx_uint_t ngx_http_imgbill_metrics_model(
    ngx_http_imgbill_main_conf_t *mcf, ngx_str_t *model);
static u_char *ngx_http_imgbill_metrics_apis(u_char *p, ngx_atomic_t *v,
    const char *help);
static u_char *ngx_http_imgbill_metrics_models(u_char *p, u_char *last,
    ngx_http_imgbill_main_conf_t *mcf, ngx_http_imgbill_by_model_t *v,
    char *name);
static u_char *ngx_http_imgbill_metrics_label(u_char *p,
    ngx_http_imgbill_main_conf_t *mcf, ngx_uint_t ch, ngx_uint_t m);
static u_char *ngx_http_imgbill_metrics_requests(u_char *p, u_char *last,
    ngx_http_imgbill_main_conf_t *mcf);
static u_char *ngx_http_imgbill_metrics_store(u_char *p,
    ngx_http_imgbill_metrics_t *mt);


/* imgbill_metrics; Prometheus' text, from the shared zone */

char *
ngx_http_imgbill_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate, or shares a location with another handler";
    }

    clcf->handler = ngx_http_imgbill_metrics_handler;

    return NGX_CONF_OK;
}


/* the zone, once per configuration that bills anything */

ngx_int_t
ngx_http_imgbill_metrics_zone(ngx_conf_t *cf,
    ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_str_t  name = ngx_string("imgbill_metrics");

    mcf->metrics_zone = ngx_shared_memory_add(cf, &name,
                                              NGX_HTTP_IMGBILL_METRICS_SIZE,
                                              &ngx_http_imgbill_module);
    if (mcf->metrics_zone == NULL) {
        return NGX_ERROR;
    }

    mcf->metrics_zone->init = ngx_http_imgbill_metrics_init_zone;
    mcf->metrics_zone->data = mcf;

    return NGX_OK;
}


static ngx_int_t
ngx_http_imgbill_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t               *shpool;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = zone->data;

    if (data) {
        /* a reload: the figures go on */
        mcf->metrics = ((ngx_http_imgbill_main_conf_t *) data)->metrics;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    mcf->metrics = ngx_slab_calloc(shpool,
                                   sizeof(ngx_http_imgbill_metrics_t));
    if (mcf->metrics == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a model the configuration prices: a series of its own */

ngx_int_t
ngx_http_imgbill_metrics_add_model(ngx_conf_t *cf, ngx_str_t *model)
{
    ngx_str_t                     *m;
    ngx_uint_t                     i;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_imgbill_module);

    if (ngx_http_imgbill_metrics_model(mcf, model)
        != NGX_HTTP_IMGBILL_MODELS_MAX)
    {
        return NGX_OK;
    }

    if (mcf->models == NULL) {
        mcf->models = ngx_array_create(cf->pool, 8, sizeof(ngx_str_t));
        if (mcf->models == NULL) {
            return NGX_ERROR;
        }
    }

    if (mcf->models->nelts == NGX_HTTP_IMGBILL_MODELS_MAX) {
        /* counted as "other" */
        return NGX_OK;
    }

    m = ngx_array_push(mcf->models);
    if (m == NULL) {
        return NGX_ERROR;
    }

    *m = *model;

    for (i = 0; i < m->len; i++) {
        if (m->data[i] == '"' || m->data[i] == '\\' || m->data[i] < 0x20) {
            /* not a label value as it is: "other" */
            mcf->models->nelts--;
            break;
        }
    }

    return NGX_OK;
}


/* log phase: how the request ended, counted once */

ngx_int_t
ngx_http_imgbill_metrics_log(ngx_http_request_t *r)
{
    ngx_int_t                      would;
    ngx_uint_t                     a, ch, m, o, charged;
    ngx_http_imgbill_ctx_t        *ctx;
    ngx_http_imgbill_metrics_t    *mt;
    ngx_http_imgbill_loc_conf_t   *lcf;
    ngx_http_imgbill_main_conf_t  *mcf;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_imgbill_get_ctx(r);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    if (ctx == NULL || mcf->metrics == NULL) {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_imgbill_module);

    if (lcf->models || lcf->serve || ctx->channel == NGX_HTTP_IMGBILL_OFF) {
        /* what the module serves itself bills nothing */
        return NGX_OK;
    }

    mt = mcf->metrics;
    ch = ctx->channel % NGX_HTTP_IMGBILL_CHANNELS;
    m = ngx_http_imgbill_metrics_model(mcf, &ctx->model);
    o = ngx_http_imgbill_metrics_outcome(r, ctx);

    a = ngx_http_imgbill_api_index(ctx->api);

    (void) ngx_atomic_fetch_add(&mt->requests[ch][m][o], 1);
    (void) ngx_atomic_fetch_add(&mt->api_requests[a], 1);

    charged = (o == 0
               || (o >= NGX_HTTP_IMGBILL_CHARGED
                   && o < NGX_HTTP_IMGBILL_REJECTED));

    if (charged) {
        (void) ngx_atomic_fetch_add(&mt->charged[ch][m], ctx->charge);
        (void) ngx_atomic_fetch_add(&mt->images[ch][m], ctx->images);
        (void) ngx_atomic_fetch_add(&mt->api_charged[a], ctx->charge);
        (void) ngx_atomic_fetch_add(&mt->api_images[a], ctx->images);
    }

    if (ctx->holding) {
        (void) ngx_atomic_fetch_add(&mt->holds_ended, 1);
    }

    if (ctx->state == ngx_http_imgbill_streaming && !charged) {
        would = ngx_http_imgbill_stream_worth(ctx);

        if (would > 0) {
            (void) ngx_atomic_fetch_add(&mt->abandoned[ch][m], would);
        }
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_imgbill_metrics_outcome(ngx_http_request_t *r,
    ngx_http_imgbill_ctx_t *ctx)
{
    ngx_uint_t  i, end;

    end = ngx_http_imgbill_ended(r, ctx);

    if (end == NGX_HTTP_IMGBILL_END_UNFINISHED) {
        /* it never ended, and not for the client: the upstream's doing */
        return ngx_http_imgbill_free_upstream_cut;
    }

    if (end == ngx_http_imgbill_free_none) {
        switch (ctx->charge_reason) {

        case ngx_http_imgbill_free_no_usage:
            return NGX_HTTP_IMGBILL_CHARGED;

        case ngx_http_imgbill_free_client_gone:
            return NGX_HTTP_IMGBILL_CHARGED + 1;

        case ngx_http_imgbill_free_upstream_cut:
            return NGX_HTTP_IMGBILL_CHARGED + 2;

        default:
            return end;
        }
    }

    if (end != NGX_HTTP_IMGBILL_END_REJECTED) {
        return end;
    }

    for (i = NGX_HTTP_IMGBILL_REJECTED;
         i < NGX_HTTP_IMGBILL_OUTCOMES - 1;
         i++)
    {
        if (ctx->error.code
            && ngx_strcmp(ctx->error.code,
                          ngx_http_imgbill_outcomes[i].reason) == 0)
        {
            return i;
        }
    }

    return NGX_HTTP_IMGBILL_OUTCOMES - 1;
}


/* $imgbill_reason: the metrics' reason label; "" for a plain charge */

const char *
ngx_http_imgbill_reason(ngx_http_request_t *r, ngx_http_imgbill_ctx_t *ctx)
{
    ngx_uint_t  o;

    o = ngx_http_imgbill_metrics_outcome(r, ctx);

    /* a list served is no outcome of the table */
    return (o < NGX_HTTP_IMGBILL_OUTCOMES) ? ngx_http_imgbill_outcomes[o].reason
                                           : "";
}


static ngx_uint_t
ngx_http_imgbill_metrics_model(ngx_http_imgbill_main_conf_t *mcf,
    ngx_str_t *model)
{
    ngx_str_t   *m;
    ngx_uint_t   i;

    if (mcf->models == NULL) {
        return NGX_HTTP_IMGBILL_MODELS_MAX;
    }

    m = mcf->models->elts;

    for (i = 0; i < mcf->models->nelts; i++) {
        if (m[i].len == model->len
            && ngx_strncmp(m[i].data, model->data, model->len) == 0)
        {
            return i;
        }
    }

    return NGX_HTTP_IMGBILL_MODELS_MAX;
}


/* a hold placed, in flight until the request is counted */

void
ngx_http_imgbill_metrics_hold(ngx_http_request_t *r)
{
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    if (mcf->metrics) {
        (void) ngx_atomic_fetch_add(&mcf->metrics->holds_placed, 1);
    }
}


/* where the store counts, in the zone; NULL without one */

ngx_http_imgbill_stats_t *
ngx_http_imgbill_metrics_stats(ngx_http_imgbill_main_conf_t *mcf)
{
    return mcf->metrics ? &mcf->metrics->store : NULL;
}


/* the scrape */

ngx_int_t
ngx_http_imgbill_metrics_handler(ngx_http_request_t *r)
{
    u_char                        *p, *last;
    ngx_buf_t                     *b;
    ngx_http_imgbill_metrics_t    *mt;
    ngx_http_imgbill_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);
    mt = mcf->metrics;

    if (mt == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    b = ngx_create_temp_buf(r->pool, NGX_HTTP_IMGBILL_METRICS_SIZE);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->pos;
    last = b->end - 4096;           /* for the store's part */

    p = ngx_http_imgbill_metrics_requests(p, last, mcf);

    p = ngx_http_imgbill_metrics_models(p, last, mcf, &mt->charged,
                                        "imgbill_charged_units_total "
                                        "Money charged, in units of "
                                        "0.0001 CNY.");
    p = ngx_http_imgbill_metrics_models(p, last, mcf, &mt->images,
                                        "imgbill_images_total "
                                        "Images delivered and charged "
                                        "for.");
    p = ngx_http_imgbill_metrics_models(p, last, mcf, &mt->abandoned,
                                        "imgbill_abandoned_units_total "
                                        "What streams the client left "
                                        "would have cost (the upstream's "
                                        "bill), in units of 0.0001 CNY.");

    p = ngx_http_imgbill_metrics_apis(p, mt->api_requests,
                                      "imgbill_api_requests_total "
                                      "Billed requests by the API their "
                                      "client spoke.");
    p = ngx_http_imgbill_metrics_apis(p, mt->api_charged,
                                      "imgbill_api_charged_units_total "
                                      "Money charged by API, in units of "
                                      "0.0001 CNY.");
    p = ngx_http_imgbill_metrics_apis(p, mt->api_images,
                                      "imgbill_api_images_total "
                                      "Images delivered and charged for, "
                                      "by API.");

    b->last = ngx_http_imgbill_metrics_store(p, mt);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_imgbill_send_text(r, NGX_HTTP_OK, b,
                                      "text/plain; version=0.0.4");
}


static u_char *
ngx_http_imgbill_metrics_requests(u_char *p, u_char *last,
    ngx_http_imgbill_main_conf_t *mcf)
{
    ngx_uint_t                   ch, m, o;
    ngx_atomic_uint_t            v;
    ngx_http_imgbill_metrics_t  *mt;

    mt = mcf->metrics;

    p = ngx_sprintf(p, "# HELP imgbill_requests_total Billed requests by "
                       "channel, model and how they ended.\n"
                       "# TYPE imgbill_requests_total counter\n");

    for (ch = 1; ch < NGX_HTTP_IMGBILL_CHANNELS; ch++) {
        for (m = 0; m <= NGX_HTTP_IMGBILL_MODELS_MAX; m++) {
            for (o = 0; o < NGX_HTTP_IMGBILL_OUTCOMES && p < last; o++) {
                v = mt->requests[ch][m][o];

                if (v == 0) {
                    continue;
                }

                p = ngx_sprintf(p, "imgbill_requests_total{");
                p = ngx_http_imgbill_metrics_label(p, mcf, ch, m);
                p = ngx_sprintf(p, ",outcome=\"%s\",reason=\"%s\"} %uA\n",
                                ngx_http_imgbill_outcomes[o].outcome,
                                ngx_http_imgbill_outcomes[o].reason, v);
            }
        }
    }

    return p;
}


/* the holds in flight, and what the store counted */

static u_char *
ngx_http_imgbill_metrics_store(u_char *p, ngx_http_imgbill_metrics_t *mt)
{
    ngx_uint_t                 i, n;
    ngx_atomic_uint_t          placed, ended;
    ngx_http_imgbill_stats_t  *st;

    static char  *redis[] = { "errors", "timeouts", "reconnects" };

    st = &mt->store;
    placed = mt->holds_placed;
    ended = mt->holds_ended;

    p = ngx_sprintf(p, "# HELP imgbill_holds_in_flight Holds placed and "
                       "not yet ended.\n"
                       "# TYPE imgbill_holds_in_flight gauge\n"
                       "imgbill_holds_in_flight %uA\n",
                    placed > ended ? placed - ended : 0);

    p = ngx_sprintf(p, "# HELP imgbill_redis_rtt_seconds Redis round trips "
                       "of script calls.\n"
                       "# TYPE imgbill_redis_rtt_seconds histogram\n");

    for (i = 0, n = 0; i <= NGX_HTTP_IMGBILL_RTT_BUCKETS; i++) {
        n += st->rtt[i];

        if (i < NGX_HTTP_IMGBILL_RTT_BUCKETS) {
            p = ngx_sprintf(p, "imgbill_redis_rtt_seconds_bucket"
                               "{le=\"%ui.%06ui\"} %ui\n",
                            ngx_http_imgbill_rtt_buckets[i] / 1000000,
                            ngx_http_imgbill_rtt_buckets[i] % 1000000, n);
        } else {
            p = ngx_sprintf(p, "imgbill_redis_rtt_seconds_bucket"
                               "{le=\"+Inf\"} %ui\n", n);
        }
    }

    p = ngx_sprintf(p, "imgbill_redis_rtt_seconds_sum %uA.%06uA\n"
                       "imgbill_redis_rtt_seconds_count %ui\n",
                    st->rtt_sum / 1000000, st->rtt_sum % 1000000, n);

    for (i = 0; i < NGX_HTTP_IMGBILL_REDIS_EVENTS; i++) {
        p = ngx_sprintf(p, "# HELP imgbill_redis_%s_total Redis %s.\n"
                           "# TYPE imgbill_redis_%s_total counter\n"
                           "imgbill_redis_%s_total %uA\n",
                        redis[i], redis[i], redis[i], redis[i],
                        st->redis[i]);
    }

    return ngx_sprintf(p, "# HELP imgbill_journal_lines_total Settlements "
                          "and releases written to the journal for want "
                          "of Redis.\n"
                          "# TYPE imgbill_journal_lines_total counter\n"
                          "imgbill_journal_lines_total %uA\n"
                          "# HELP imgbill_journal_lines_owed Journal lines "
                          "not yet applied to Redis, at the last replay.\n"
                          "# TYPE imgbill_journal_lines_owed gauge\n"
                          "imgbill_journal_lines_owed %uA\n"
                          "# HELP imgbill_unrecorded_total Settlements, "
                          "releases and reversals neither Redis nor the "
                          "journal could take (each an alert line): 0 in "
                          "normal running.\n"
                          "# TYPE imgbill_unrecorded_total counter\n"
                          "imgbill_unrecorded_total %uA\n",
                       st->journal_lines, st->journal_owed, st->unrecorded);
}


static u_char *
ngx_http_imgbill_metrics_models(u_char *p, u_char *last,
    ngx_http_imgbill_main_conf_t *mcf, ngx_http_imgbill_by_model_t *v,
    char *help)
{
    u_char      *name;
    size_t       len;
    ngx_uint_t   ch, m;

    name = (u_char *) help;
    len = (u_char *) ngx_strchr(name, ' ') - name;

    p = ngx_sprintf(p, "# HELP %s\n# TYPE %*s counter\n", help, len, name);

    for (ch = 1; ch < NGX_HTTP_IMGBILL_CHANNELS; ch++) {
        for (m = 0; m <= NGX_HTTP_IMGBILL_MODELS_MAX && p < last; m++) {
            if ((*v)[ch][m] == 0) {
                continue;
            }

            p = ngx_sprintf(p, "%*s{", len, name);
            p = ngx_http_imgbill_metrics_label(p, mcf, ch, m);
            p = ngx_sprintf(p, "} %uA\n", (*v)[ch][m]);
        }
    }

    return p;
}


static u_char *
ngx_http_imgbill_metrics_label(u_char *p, ngx_http_imgbill_main_conf_t *mcf,
    ngx_uint_t ch, ngx_uint_t m)
{
    ngx_str_t  *model;

    p = ngx_sprintf(p, "channel=\"%V\",model=\"",
                    ngx_http_imgbill_channel_name(ch));

    if (mcf->models && m < mcf->models->nelts) {
        model = mcf->models->elts;
        p = ngx_cpymem(p, model[m].data, model[m].len);

    } else {
        p = ngx_cpymem(p, "other", 5);
    }

    *p++ = '"';

    return p;
}


/* one counter per API of the table, every one (a zero is a value): the
   name is help's first word */

static u_char *
ngx_http_imgbill_metrics_apis(u_char *p, ngx_atomic_t *v, const char *help)
{
    size_t                   n;
    ngx_uint_t               i;
    ngx_http_imgbill_api_t  *api;

    n = ngx_strchr(help, ' ') - help;

    p = ngx_sprintf(p, "# HELP %s\n# TYPE %*s counter\n", help, n, help);

    for (i = 0; (api = ngx_http_imgbill_api_at(i)) != NULL; i++) {
        p = ngx_sprintf(p, "%*s{api=\"%V\"} %uA\n", n, help, &api->name,
                        (ngx_atomic_uint_t) v[i]);
    }

    return p;
}
