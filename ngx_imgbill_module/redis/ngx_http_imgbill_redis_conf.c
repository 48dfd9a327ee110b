
/*
 * imgbill_redis, imgbill_redis_wait, imgbill_redis_outage_wait and
 * imgbill_journal: where Redis is (an address, or Sentinels and a
 * master's name), how many replicas must have a settlement, how long an
 * admission waits for a master, where what Redis could not take is kept;
 * what "nginx -t" refuses of them.  Each directive finds the store's
 * configuration at its offset in the module's main conf.
 */


#include "ngx_http_imgbill_redis_int.h"


#define ngx_http_imgbill_redis_conf(conf, cmd)                               \
    ((ngx_http_imgbill_redis_conf_t *) ((u_char *) (conf) + (cmd)->offset))


static ngx_int_t ngx_http_imgbill_redis_param(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_http_imgbill_redis_conf_t *rc, ngx_str_t *value,
    ngx_str_t *master);
static char *ngx_http_imgbill_redis_either(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_imgbill_redis_conf_t *rc, ngx_str_t *master);
static ngx_int_t ngx_http_imgbill_redis_addr(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *value, in_port_t default_port,
    ngx_uint_t unix_ok, ngx_str_t *host, in_port_t *port);


void
ngx_http_imgbill_redis_create_conf(ngx_http_imgbill_redis_conf_t *rc)
{
    /*
     * set by ngx_pcalloc():
     *
     *     rc->host = { 0, NULL };
     *     rc->password = { 0, NULL };
     *     rc->db = 0;
     *     rc->sentinels = NULL;
     *     rc->sentinel_password = { 0, NULL };
     *     rc->wait_timeout = 0;
     */

    rc->timeout = NGX_CONF_UNSET_MSEC;
    rc->wait_replicas = NGX_CONF_UNSET;
    rc->outage_wait = NGX_CONF_UNSET_MSEC;
    rc->outage_max = NGX_CONF_UNSET_UINT;
    rc->hold_ttl = NGX_CONF_UNSET;
    rc->journal = NGX_CONF_UNSET_PTR;
    rc->journal_reserve = NGX_CONF_UNSET;
}


char *
ngx_http_imgbill_redis_init_conf(ngx_conf_t *cf,
    ngx_http_imgbill_redis_conf_t *rc)
{
    ngx_conf_init_msec_value(rc->timeout, 1000);
    ngx_conf_init_value(rc->hold_ttl, 900);
    ngx_conf_init_value(rc->wait_replicas, 0);
    ngx_conf_init_msec_value(rc->outage_wait, 5000);
    ngx_conf_init_uint_value(rc->outage_max, 512);
    if (rc->journal_reserve == NGX_CONF_UNSET) {
        rc->journal_reserve = 16 * 1024 * 1024;
    }

    /* a WAIT blocks the connection: it must end before the connection is
       given up for silent */

    if (rc->wait_replicas && rc->wait_timeout >= rc->timeout) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the timeout of \"imgbill_redis_wait\" (%M ms) must "
                      "be shorter than \"imgbill_redis_timeout\" (%M ms) "
                      "in %s:%ui", rc->wait_timeout, rc->timeout,
                      rc->wait_file, rc->wait_line);
        return NGX_CONF_ERROR;
    }

    if (rc->journal == NGX_CONF_UNSET_PTR) {
        rc->journal = NULL;

        if (rc->host.len) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "no \"imgbill_journal\": a charge whose "
                               "settlement cannot reach redis is only "
                               "logged, never applied");
        }
    }

    if (rc->wait_replicas && rc->journal == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"imgbill_redis_wait\" needs \"imgbill_journal\": a "
                      "settlement the replicas did not confirm is kept there "
                      "until they do in %s:%ui", rc->wait_file, rc->wait_line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * imgbill_redis ADDRESS [password=..] [db=..];
 * imgbill_redis sentinel=ADDRESS [sentinel=ADDRESS ...] master=NAME
 *               [password=..] [sentinel_password=..] [db=..];
 */

char *
ngx_http_imgbill_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t                      *value, master;
    ngx_uint_t                      i;
    ngx_http_imgbill_redis_conf_t  *rc;

    rc = ngx_http_imgbill_redis_conf(conf, cmd);

    if (rc->host.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    ngx_str_null(&master);

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_http_imgbill_redis_param(cf, cmd, rc, &value[i], &master)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_imgbill_redis_either(cf, cmd, rc, &master);
}


static ngx_int_t
ngx_http_imgbill_redis_param(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_imgbill_redis_conf_t *rc, ngx_str_t *value, ngx_str_t *master)
{
    ngx_http_imgbill_addr_t  *s;

    if (ngx_strncmp(value->data, "sentinel=", 9) == 0) {

        if (rc->sentinels == NULL) {
            rc->sentinels = ngx_array_create(cf->pool, 3,
                                             sizeof(ngx_http_imgbill_addr_t));
            if (rc->sentinels == NULL) {
                return NGX_ERROR;
            }
        }

        s = ngx_array_push(rc->sentinels);
        if (s == NULL) {
            return NGX_ERROR;
        }

        value->data += 9;
        value->len -= 9;

        return ngx_http_imgbill_redis_addr(cf, cmd, value, 26379, 0,
                                           &s->host, &s->port);
    }

    if (ngx_strncmp(value->data, "master=", 7) == 0) {
        if (master->len || value->len == 7) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" names one \"master=NAME\"",
                               &cmd->name);
            return NGX_ERROR;
        }

        master->data = value->data + 7;
        master->len = value->len - 7;
        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "password=", 9) == 0 && value->len > 9) {
        rc->password.data = value->data + 9;
        rc->password.len = value->len - 9;
        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "sentinel_password=", 18) == 0
        && value->len > 18)
    {
        rc->sentinel_password.data = value->data + 18;
        rc->sentinel_password.len = value->len - 18;
        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "db=", 3) == 0) {
        rc->db = ngx_atoi(value->data + 3, value->len - 3);
        if (rc->db == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid db \"%V\" in \"%V\"",
                               value, &cmd->name);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (rc->host.len == 0
        && ngx_strlchr(value->data, value->data + value->len, '=') == NULL)
    {
        /* the master itself, at a fixed address */
        return ngx_http_imgbill_redis_addr(cf, cmd, value, 6379, 1,
                                           &rc->host, &rc->port);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\"",
                       value, &cmd->name);
    return NGX_ERROR;
}


/* the address of redis, or Sentinels and a master's name: one of them */

static char *
ngx_http_imgbill_redis_either(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_imgbill_redis_conf_t *rc, ngx_str_t *master)
{
    if (rc->host.len && (rc->sentinels || master->len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" takes either the address of redis or "
                           "\"sentinel=\" and \"master=\", not both",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (rc->sentinels && master->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"sentinel=\" in \"%V\" needs \"master=NAME\": "
                           "the name the Sentinels monitor", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (master->len && rc->sentinels == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"master=\" in \"%V\" needs at least one "
                           "\"sentinel=ADDRESS\" to ask", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (rc->host.len == 0 && master->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs the address of redis, or "
                           "\"sentinel=\" and \"master=\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (master->len) {
        /* what names the master in the logs, and says redis is set */
        rc->host = *master;
    }

    return NGX_CONF_OK;
}


/*
 * A numeric host and port, resolved once, here: a worker never waits on
 * DNS for Redis.  A unix socket where allowed (port 0).
 */

static ngx_int_t
ngx_http_imgbill_redis_addr(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *value, in_port_t default_port, ngx_uint_t unix_ok,
    ngx_str_t *host, in_port_t *port)
{
    u_char     *p;
    ngx_url_t   u;

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = *value;
    u.default_port = default_port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
        || (u.family == AF_UNIX && !unix_ok))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %saddress \"%V\" in \"%V\"%s%s",
                           unix_ok ? "" : "Sentinel ", value, &cmd->name,
                           u.err ? ": " : "",
                           u.err ? u.err
                                 : (u.family == AF_UNIX ? ": not a unix "
                                                          "socket" : ""));
        return NGX_ERROR;
    }

    /* Redis's own port is a guess that may reach another Redis: say it */

    if (unix_ok && u.family != AF_UNIX && u.no_port) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" in \"%V\" names no port: write "
                           "\"%V:%d\" (or \"unix:/path\")", value,
                           &cmd->name, value, (int) default_port);
        return NGX_ERROR;
    }

    if (u.family == AF_UNIX) {
        host->len = u.host.len - (sizeof("unix:") - 1);
        host->data = ngx_pnalloc(cf->pool, host->len + 1);
        if (host->data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(host->data, u.host.data + sizeof("unix:") - 1,
                       host->len);
        *p = '\0';
        *port = 0;

        return NGX_OK;
    }

    host->data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (host->data == NULL) {
        return NGX_ERROR;
    }

    host->len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                              host->data, NGX_SOCKADDR_STRLEN, 0);
    host->data[host->len] = '\0';
    *port = ngx_inet_get_port(u.addrs[0].sockaddr);

    return NGX_OK;
}


/* imgbill_redis_wait REPLICAS TIMEOUT | off */

char *
ngx_http_imgbill_redis_wait_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t                      *value;
    ngx_http_imgbill_redis_conf_t  *rc;

    rc = ngx_http_imgbill_redis_conf(conf, cmd);

    if (rc->wait_replicas != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        rc->wait_replicas = 0;
        return NGX_CONF_OK;
    }

    if (cf->args->nelts != 3) {
        return "takes REPLICAS TIMEOUT, or off";
    }

    rc->wait_replicas = ngx_atoi(value[1].data, value[1].len);

    if (rc->wait_replicas == NGX_ERROR || rc->wait_replicas < 1
        || rc->wait_replicas > 64)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of replicas \"%V\" in \"%V\": "
                           "1 to 64", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    rc->wait_file = cf->conf_file->file.name.data;
    rc->wait_line = cf->conf_file->line;

    rc->wait_timeout = ngx_parse_time(&value[2], 0);

    if (rc->wait_timeout == (ngx_msec_t) NGX_ERROR
        || rc->wait_timeout == 0)
    {
        /* WAIT's 0 would wait for ever */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid timeout \"%V\" in \"%V\": a time above "
                           "0", &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * imgbill_redis_outage_wait TIME [max=N] | off: how long an admission
 * waits for a master while the worker has none (a failover, a restart),
 * and how many may wait at once in one worker
 */

char *
ngx_http_imgbill_redis_outage_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_int_t                       n;
    ngx_str_t                      *value;
    ngx_http_imgbill_redis_conf_t  *rc;

    rc = ngx_http_imgbill_redis_conf(conf, cmd);

    if (rc->outage_wait != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts != 2) {
            return "takes TIME [max=N], or off";
        }

        rc->outage_wait = 0;
        return NGX_CONF_OK;
    }

    rc->outage_wait = ngx_parse_time(&value[1], 0);

    if (rc->outage_wait == (ngx_msec_t) NGX_ERROR || rc->outage_wait == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid time \"%V\" in \"%V\": a time above 0, "
                           "or off", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 3) {
        n = NGX_ERROR;

        if (ngx_strncmp(value[2].data, "max=", 4) == 0) {
            n = ngx_atoi(value[2].data + 4, value[2].len - 4);
        }

        if (n == NGX_ERROR || n < 1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\": "
                               "max=N, N above 0", &value[2], &cmd->name);
            return NGX_CONF_ERROR;
        }

        rc->outage_max = n;
    }

    return NGX_CONF_OK;
}


/* imgbill_journal PATH | off; opened by the master like a log file */

char *
ngx_http_imgbill_journal_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t                      *value;
    ngx_http_imgbill_redis_conf_t  *rc;

    rc = ngx_http_imgbill_redis_conf(conf, cmd);

    if (rc->journal != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        rc->journal = NULL;
        return NGX_CONF_OK;
    }

    rc->journal = ngx_conf_open_file(cf->cycle, &value[1]);
    if (rc->journal == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
