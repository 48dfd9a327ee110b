
/*
 * imgbill_redis and imgbill_redis_wait: where Redis is (an address, or
 * Sentinels and a master's name) and how many replicas must have a
 * settlement; what "nginx -t" refuses of them.
 */


#include "ngx_http_imgbill_module.h"


static ngx_int_t ngx_http_imgbill_redis_addr(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *value, in_port_t default_port,
    ngx_uint_t unix_ok, ngx_str_t *host, in_port_t *port);


/*
 * imgbill_redis ADDRESS [password=..] [db=..];
 * imgbill_redis sentinel=ADDRESS [sentinel=ADDRESS ...] master=NAME
 *               [password=..] [sentinel_password=..] [db=..];
 */

char *
ngx_http_imgbill_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_imgbill_main_conf_t *mcf = conf;

    ngx_str_t                *value, master;
    ngx_uint_t                i;
    ngx_http_imgbill_addr_t  *s;

    if (mcf->host.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    ngx_str_null(&master);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "sentinel=", 9) == 0) {

            if (mcf->sentinels == NULL) {
                mcf->sentinels = ngx_array_create(cf->pool, 3,
                                             sizeof(ngx_http_imgbill_addr_t));
                if (mcf->sentinels == NULL) {
                    return NGX_CONF_ERROR;
                }
            }

            s = ngx_array_push(mcf->sentinels);
            if (s == NULL) {
                return NGX_CONF_ERROR;
            }

            value[i].data += 9;
            value[i].len -= 9;

            if (ngx_http_imgbill_redis_addr(cf, cmd, &value[i], 26379, 0,
                                            &s->host, &s->port)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "master=", 7) == 0) {
            if (master.len || value[i].len == 7) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" names one \"master=NAME\"",
                                   &cmd->name);
                return NGX_CONF_ERROR;
            }

            master.data = value[i].data + 7;
            master.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0
            && value[i].len > 9)
        {
            mcf->password.data = value[i].data + 9;
            mcf->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sentinel_password=", 18) == 0
            && value[i].len > 18)
        {
            mcf->sentinel_password.data = value[i].data + 18;
            mcf->sentinel_password.len = value[i].len - 18;
            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            mcf->db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (mcf->db == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid db \"%V\" in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (mcf->host.len == 0
            && ngx_strlchr(value[i].data, value[i].data + value[i].len, '=')
               == NULL)
        {
            /* the master itself, at a fixed address */

            if (ngx_http_imgbill_redis_addr(cf, cmd, &value[i], 6379, 1,
                                            &mcf->host, &mcf->port)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\"",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (mcf->host.len && (mcf->sentinels || master.len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" takes either the address of redis or "
                           "\"sentinel=\" and \"master=\", not both",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (mcf->sentinels && master.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"sentinel=\" in \"%V\" needs \"master=NAME\": "
                           "the name the Sentinels monitor", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (master.len && mcf->sentinels == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"master=\" in \"%V\" needs at least one "
                           "\"sentinel=ADDRESS\" to ask", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (mcf->host.len == 0 && master.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs the address of redis, or "
                           "\"sentinel=\" and \"master=\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (master.len) {
        /* what names the master in the logs, and says redis is set */
        mcf->host = master;
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
    ngx_http_imgbill_main_conf_t *mcf = conf;

    ngx_str_t  *value;

    if (mcf->wait_replicas != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        mcf->wait_replicas = 0;
        return NGX_CONF_OK;
    }

    if (cf->args->nelts != 3) {
        return "takes REPLICAS TIMEOUT, or off";
    }

    mcf->wait_replicas = ngx_atoi(value[1].data, value[1].len);

    if (mcf->wait_replicas == NGX_ERROR || mcf->wait_replicas < 1
        || mcf->wait_replicas > 64)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of replicas \"%V\" in \"%V\": "
                           "1 to 64", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    mcf->wait_timeout = ngx_parse_time(&value[2], 0);

    if (mcf->wait_timeout == (ngx_msec_t) NGX_ERROR
        || mcf->wait_timeout == 0)
    {
        /* WAIT's 0 would wait for ever */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid timeout \"%V\" in \"%V\": a time above "
                           "0", &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
