
/*
 * imgbill: the module, its directives and configuration.
 */


#include "ngx_http_imgbill_ctx.h"


static void *ngx_http_imgbill_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_imgbill_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_imgbill_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_imgbill_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_imgbill_channel_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_imgbill_models(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_imgbill_above_zero(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_imgbill_max_images(ngx_conf_t *cf, void *post,
    void *data);
static ngx_int_t ngx_http_imgbill_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_imgbill_init_process(ngx_cycle_t *cycle);
static void ngx_http_imgbill_exit_process(ngx_cycle_t *cycle);


static ngx_conf_post_handler_pt  ngx_http_imgbill_max_images_p =
    ngx_http_imgbill_max_images;
static ngx_conf_post_handler_pt  ngx_http_imgbill_above_zero_p =
    ngx_http_imgbill_above_zero;


static ngx_conf_enum_t  ngx_http_imgbill_fallbacks[] = {
    { ngx_string("max_output"), NGX_HTTP_IMGBILL_FALLBACK_MAX_OUTPUT },
    { ngx_string("hold"), NGX_HTTP_IMGBILL_FALLBACK_HOLD },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_imgbill_serves[] = {
    { ngx_string("account"), NGX_HTTP_IMGBILL_SERVE_ACCOUNT },
    { ngx_string("ledger"), NGX_HTTP_IMGBILL_SERVE_LEDGER },
    { ngx_string("subscription"), NGX_HTTP_IMGBILL_SERVE_SUBSCRIPTION },
    { ngx_string("usage"), NGX_HTTP_IMGBILL_SERVE_USAGE },
    { ngx_string("redeem"), NGX_HTTP_IMGBILL_SERVE_REDEEM },
    { ngx_string("keys"), NGX_HTTP_IMGBILL_SERVE_KEYS },
    { ngx_null_string, 0 }
};


/* imgbill_fast_price's post: its amount is a price per call (per image) */
static char  ngx_http_imgbill_per_call_price[] = "per call";


static ngx_command_t  ngx_http_imgbill_commands[] = {

    { ngx_string("imgbill"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_channel_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, channel),
      NULL },

    { ngx_string("imgbill_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_imgbill_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, redis),
      NULL },

    { ngx_string("imgbill_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, redis.timeout),
      &ngx_http_imgbill_above_zero_p },

    { ngx_string("imgbill_redis_wait"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_imgbill_redis_wait_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, redis),
      NULL },

    { ngx_string("imgbill_redis_outage_wait"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_imgbill_redis_outage_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, redis),
      NULL },

    { ngx_string("imgbill_journal"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_journal_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, redis),
      NULL },

    { ngx_string("imgbill_journal_reserve"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, redis.journal_reserve),
      NULL },

    { ngx_string("imgbill_hold_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, redis.hold_ttl),
      NULL },

    { ngx_string("imgbill_key_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, key_cache),
      NULL },

    { ngx_string("imgbill_reply_memory"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, reply_memory),
      NULL },

    { ngx_string("imgbill_bodies_in_flight"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_imgbill_main_conf_t, in_flight),
      NULL },

    { ngx_string("imgbill_memory_trim"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_trim_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("imgbill_metered_price"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
                        |NGX_CONF_TAKE3|NGX_CONF_TAKE4|NGX_CONF_TAKE5
                        |NGX_CONF_TAKE6,
      ngx_http_imgbill_price_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, tariff.metered),
      NULL },

    { ngx_string("imgbill_fast_price"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_imgbill_price_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, tariff.fast),
      &ngx_http_imgbill_per_call_price },

    { ngx_string("imgbill_min_balance"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_money_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, tariff.min_balance),
      NULL },

    { ngx_string("imgbill_min_charge"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_money_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, tariff.min_charge),
      NULL },

    { ngx_string("imgbill_body_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, body_limit),
      NULL },

    { ngx_string("imgbill_image_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, image_limit),
      NULL },

    { ngx_string("imgbill_max_images"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, max_images),
      &ngx_http_imgbill_max_images_p },

    { ngx_string("imgbill_usage_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, tariff.usage_fallback),
      &ngx_http_imgbill_fallbacks },

    { ngx_string("imgbill_reply_buffer_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_reply_buffer_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, reply_buffer),
      NULL },

    { ngx_string("imgbill_temp_path"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1234,
      ngx_conf_set_path_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, temp_path),
      NULL },

    { ngx_string("imgbill_api"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_api_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, api),
      NULL },

    { ngx_string("imgbill_cors"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_imgbill_cors_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("imgbill_models"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_imgbill_models,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("imgbill_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_imgbill_metrics_directive,
      0,
      0,
      NULL },

    { ngx_string("imgbill_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_imgbill_health_directive,
      0,
      0,
      NULL },

    { ngx_string("imgbill_serve"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_imgbill_serve_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_imgbill_loc_conf_t, serve),
      &ngx_http_imgbill_serves },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_imgbill_module_ctx = {
    ngx_http_imgbill_add_variables,        /* preconfiguration */
    ngx_http_imgbill_init,                 /* postconfiguration */

    ngx_http_imgbill_create_main_conf,     /* create main configuration */
    ngx_http_imgbill_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_imgbill_create_loc_conf,      /* create location configuration */
    ngx_http_imgbill_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_imgbill_module = {
    NGX_MODULE_V1,
    &ngx_http_imgbill_module_ctx,          /* module context */
    ngx_http_imgbill_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_imgbill_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_imgbill_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};




/* the worker's store, where a request's money is held and settled; NULL
   where no imgbill_redis is configured: nothing can be admitted */

ngx_http_imgbill_store_t *
ngx_http_imgbill_store(ngx_http_request_t *r)
{
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_imgbill_module);

    return mcf->worker ? mcf->worker->store : NULL;
}


/* the price list of a location's channel, once merged */

ngx_array_t *
ngx_http_imgbill_prices(ngx_http_imgbill_loc_conf_t *lcf)
{
    return ngx_http_imgbill_channel_prices(&lcf->tariff, lcf->channel);
}


static void *
ngx_http_imgbill_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_imgbill_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->billed = NULL;
     *     mcf->models = NULL;
     *     mcf->worker = NULL;
     */

    ngx_http_imgbill_redis_create_conf(&mcf->redis);
    mcf->trim = NGX_CONF_UNSET_MSEC;
    mcf->key_cache = NGX_CONF_UNSET_MSEC;
    mcf->in_flight = NGX_CONF_UNSET;
    mcf->reply_memory = NGX_CONF_UNSET_SIZE;
    mcf->request_id_index = NGX_ERROR;

    return mcf;
}


static char *
ngx_http_imgbill_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_imgbill_main_conf_t *mcf = conf;

    ngx_conf_init_msec_value(mcf->trim, 30000);
    ngx_conf_init_msec_value(mcf->key_cache, 10000);

    if (mcf->in_flight == NGX_CONF_UNSET) {
        mcf->in_flight = 0;
    }

    ngx_conf_init_size_value(mcf->reply_memory,
                             NGX_HTTP_IMGBILL_REPLY_MEMORY);

    return ngx_http_imgbill_redis_init_conf(cf, &mcf->redis);
}


static void *
ngx_http_imgbill_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_imgbill_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_imgbill_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->channel = NGX_CONF_UNSET_UINT;
    conf->api = NGX_CONF_UNSET_PTR;
    conf->models = NGX_CONF_UNSET;
    conf->serve = NGX_CONF_UNSET_UINT;
    conf->tariff.metered = NGX_CONF_UNSET_PTR;
    conf->tariff.fast = NGX_CONF_UNSET_PTR;
    conf->tariff.min_balance = NGX_CONF_UNSET;
    conf->tariff.min_charge = NGX_CONF_UNSET;
    conf->body_limit = NGX_CONF_UNSET_SIZE;
    conf->image_limit = NGX_CONF_UNSET_SIZE;
    conf->max_images = NGX_CONF_UNSET_UINT;
    conf->tariff.usage_fallback = NGX_CONF_UNSET_UINT;
    conf->reply_buffer = NGX_CONF_UNSET_SIZE;
    conf->cors = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_imgbill_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_imgbill_loc_conf_t *prev = parent;
    ngx_http_imgbill_loc_conf_t *conf = child;

    ngx_array_t                   *prices;
    ngx_http_imgbill_tariff_t     *t;
    ngx_http_imgbill_channel_t    *ch;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_imgbill_module);

    /* a location that relays under "imgbill" of its own is checked after
       the merge */

    if (conf->channel != NGX_CONF_UNSET_UINT
        && conf->channel != NGX_HTTP_IMGBILL_OFF
        && conf->models == NGX_CONF_UNSET
        && conf->serve == NGX_CONF_UNSET_UINT
        && ngx_http_imgbill_check_note(cf, mcf, 0) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (conf->models == 1 && ngx_http_imgbill_check_note(cf, mcf, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* the price arrays are shared with the parent, and so never written */

    ngx_conf_merge_uint_value(conf->channel, prev->channel,
                              NGX_HTTP_IMGBILL_OFF);

    if (conf->file == NULL) {
        conf->file = prev->file;
        conf->line = prev->line;
    }

    ngx_conf_merge_ptr_value(conf->api, prev->api,
                             ngx_http_imgbill_api_default());
    ngx_conf_merge_ptr_value(conf->cors, prev->cors, NULL);

    /* a list is served where it is named, never inherited */
    if (conf->models == NGX_CONF_UNSET) {
        conf->models = 0;
    }

    if (conf->serve == NGX_CONF_UNSET_UINT) {
        conf->serve = NGX_HTTP_IMGBILL_SERVE_NONE;
    }

    t = &conf->tariff;

    ngx_conf_merge_ptr_value(t->metered, prev->tariff.metered, NULL);
    ngx_conf_merge_ptr_value(t->fast, prev->tariff.fast, NULL);
    ngx_conf_merge_value(t->min_balance, prev->tariff.min_balance,
                         NGX_HTTP_IMGBILL_MIN_BALANCE);
    ngx_conf_merge_value(t->min_charge, prev->tariff.min_charge,
                         NGX_HTTP_IMGBILL_MIN_CHARGE);
    ngx_conf_merge_uint_value(t->usage_fallback, prev->tariff.usage_fallback,
                              NGX_HTTP_IMGBILL_FALLBACK_MAX_OUTPUT);
    ngx_conf_merge_size_value(conf->body_limit, prev->body_limit,
                              NGX_HTTP_IMGBILL_BODY_LIMIT);
    ngx_conf_merge_size_value(conf->image_limit, prev->image_limit,
                              NGX_HTTP_IMGBILL_IMAGE_LIMIT);
    ngx_conf_merge_uint_value(conf->max_images, prev->max_images,
                              NGX_HTTP_IMGBILL_MAX_IMAGES);
    ngx_conf_merge_size_value(conf->reply_buffer, prev->reply_buffer, 0);

    /* a default directory only where a reply may need one */
    if (conf->temp_path == NULL) {
        conf->temp_path = prev->temp_path;
    }

    if (conf->channel == NGX_HTTP_IMGBILL_OFF) {

        if (conf->models) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"imgbill_models\" needs \"imgbill metered\" "
                               "or \"imgbill fast\": the channel whose "
                               "models it lists");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    /* (merged after the http block is read: the line is the
       directive's, not the block's end) */

    if (mcf->redis.host.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"imgbill\" needs \"imgbill_redis\" in http{} "
                      "in %s:%ui", conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    ch = ngx_http_imgbill_channel(conf->channel);
    prices = ngx_http_imgbill_prices(conf);

    if (prices == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"imgbill %V\" has no \"%V\" in %s:%ui",
                      &ch->name, &ch->price_directive, conf->file,
                      conf->line);
        return NGX_CONF_ERROR;
    }

    return ngx_http_imgbill_spool_merge(cf, conf);
}


/* like ngx_conf_set_enum_slot(), with an error that names the directive */

static char *
ngx_http_imgbill_channel_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_imgbill_loc_conf_t *lcf = conf;

    ngx_int_t   channel;
    ngx_str_t  *value;

    if (lcf->channel != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    channel = ngx_http_imgbill_channel_find(value[1].data, value[1].len);

    if (channel != NGX_ERROR) {
        lcf->channel = channel;
        lcf->file = cf->conf_file->file.name.data;
        lcf->line = cf->conf_file->line;
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid channel \"%V\" in \"%V\": use off, metered "
                       "or fast", &value[1], &cmd->name);

    return NGX_CONF_ERROR;
}


/* imgbill_models; the location answers with its channel's priced models */

static char *
ngx_http_imgbill_models(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_imgbill_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->models != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    lcf->models = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_imgbill_models_handler;

    return NGX_CONF_OK;
}


/* a time of 0 passes ngx_conf_set_msec_slot(), and would fail every call */

static char *
ngx_http_imgbill_above_zero(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t *mp = data;

    if (*mp > 0) {
        return NGX_CONF_OK;
    }

    return "must be above 0";
}


/* as ngx_conf_check_num_bounds(), with a message that names the directive */

static char *
ngx_http_imgbill_max_images(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t *np = data;

    if (*np >= 1 && *np <= NGX_HTTP_IMGBILL_IMAGES_MAX) {
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%ui\" in \"imgbill_max_images\": "
                       "from 1 to %d images a request",
                       *np, NGX_HTTP_IMGBILL_IMAGES_MAX);

    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_imgbill_init(ngx_conf_t *cf)
{
    ngx_str_t                      name = ngx_string("request_id");
    ngx_str_t                      key = ngx_string("imgbill_key_hash");
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *cmcf;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_imgbill_module);

    mcf->request_id_index = ngx_http_get_variable_index(cf, &name);
    if (mcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    mcf->key_index = ngx_http_get_variable_index(cf, &key);
    if (mcf->key_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_imgbill_access_handler;

    /* ahead of the rewrite module's: a "return" logs the request line */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_imgbill_mask_handler;

    if (ngx_http_imgbill_check(cf, mcf) != NGX_OK
        || ngx_http_imgbill_models_lists(cf, mcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (mcf->redis.host.len) {
        if (ngx_http_imgbill_metrics_zone(cf, mcf) != NGX_OK) {
            return NGX_ERROR;
        }

        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_imgbill_metrics_log;
    }

    if (ngx_http_imgbill_body_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_imgbill_filter_init(cf);
}


static ngx_int_t
ngx_http_imgbill_init_process(ngx_cycle_t *cycle)
{
    ngx_http_imgbill_worker_t     *w;
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_imgbill_module);

    if (mcf == NULL || mcf->redis.host.len == 0) {
        return NGX_OK;
    }

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_init(&w->spares);
    ngx_http_imgbill_sha256_init(w);

    w->store = ngx_http_imgbill_store_init(cycle, &mcf->redis,
                                           ngx_http_imgbill_metrics_stats(mcf));
    w->keys = ngx_http_imgbill_keys_init(cycle);

    if (w->store == NULL || w->keys == NULL) {
        return NGX_ERROR;
    }

    mcf->worker = w;

    return ngx_http_imgbill_trim_init(cycle, mcf);
}


static void
ngx_http_imgbill_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_imgbill_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_imgbill_module);

    if (mcf && mcf->worker) {
        ngx_http_imgbill_spares_free(mcf->worker, 0);
        ngx_http_imgbill_store_exit(mcf->worker->store);
        ngx_http_imgbill_sha256_done(mcf->worker);
    }
}
