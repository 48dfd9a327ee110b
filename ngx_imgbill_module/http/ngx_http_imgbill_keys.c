
/*
 * imgbill: the keys a worker has seen valid lately.  A body is read only
 * for a key Redis knows: a stranger's 30 MB is not worth a byte of
 * memory, nor a second of the worker.  A key seen valid within
 * imgbill_key_cache is believed without a round trip; the admission that
 * follows stays the authority (a key revoked since is refused there, and
 * forgotten here).  Only the keys' hashes are kept, in a table of
 * NGX_HTTP_IMGBILL_KEY_SETS sets of NGX_HTTP_IMGBILL_KEY_WAYS: a key
 * pushed out costs one lookup more, nothing else.
 */


#include "ngx_http_imgbill_ctx.h"


#define NGX_HTTP_IMGBILL_KEY_SETS  1024
#define NGX_HTTP_IMGBILL_KEY_WAYS  4


typedef struct {
    u_char                          hash[NGX_HTTP_IMGBILL_KEY_HASH_LEN];
    ngx_msec_t                      seen;
    ngx_uint_t                      used;
} ngx_http_imgbill_key_seen_t;

struct ngx_http_imgbill_keys_s {
    ngx_http_imgbill_key_seen_t     seen[NGX_HTTP_IMGBILL_KEY_SETS]
                                        [NGX_HTTP_IMGBILL_KEY_WAYS];
};


static ngx_http_imgbill_key_seen_t *ngx_http_imgbill_keys_find(
    ngx_http_imgbill_keys_t *keys, u_char *hash);


ngx_http_imgbill_keys_t *
ngx_http_imgbill_keys_init(ngx_cycle_t *cycle)
{
    return ngx_pcalloc(cycle->pool, sizeof(ngx_http_imgbill_keys_t));
}


/* the hash is hex: its first digits pick the set */

static ngx_http_imgbill_key_seen_t *
ngx_http_imgbill_keys_set(ngx_http_imgbill_keys_t *keys, u_char *hash)
{
    ngx_int_t  n;

    n = ngx_hextoi(hash, 3);

    return keys->seen[(n < 0 ? 0 : n) % NGX_HTTP_IMGBILL_KEY_SETS];
}


static ngx_http_imgbill_key_seen_t *
ngx_http_imgbill_keys_find(ngx_http_imgbill_keys_t *keys, u_char *hash)
{
    ngx_uint_t                    i;
    ngx_http_imgbill_key_seen_t  *set;

    set = ngx_http_imgbill_keys_set(keys, hash);

    for (i = 0; i < NGX_HTTP_IMGBILL_KEY_WAYS; i++) {
        if (set[i].used
            && ngx_memcmp(set[i].hash, hash, NGX_HTTP_IMGBILL_KEY_HASH_LEN)
               == 0)
        {
            return &set[i];
        }
    }

    return NULL;
}


ngx_uint_t
ngx_http_imgbill_keys_known(ngx_http_imgbill_main_conf_t *mcf, u_char *hash)
{
    ngx_http_imgbill_key_seen_t  *k;

    if (mcf->worker == NULL || mcf->worker->keys == NULL
        || mcf->key_cache == 0)
    {
        return 0;
    }

    k = ngx_http_imgbill_keys_find(mcf->worker->keys, hash);

    return k != NULL
           && (ngx_msec_int_t) (ngx_current_msec - k->seen)
              < (ngx_msec_int_t) mcf->key_cache;
}


/* Redis knows the key: in its set, over the one seen longest ago */

void
ngx_http_imgbill_keys_seen(ngx_http_imgbill_main_conf_t *mcf, u_char *hash)
{
    ngx_uint_t                    i;
    ngx_http_imgbill_key_seen_t  *k, *set;

    if (mcf->worker == NULL || mcf->worker->keys == NULL) {
        return;
    }

    k = ngx_http_imgbill_keys_find(mcf->worker->keys, hash);

    if (k == NULL) {
        set = ngx_http_imgbill_keys_set(mcf->worker->keys, hash);
        k = &set[0];

        for (i = 0; i < NGX_HTTP_IMGBILL_KEY_WAYS; i++) {
            if (!set[i].used) {
                k = &set[i];
                break;
            }

            if ((ngx_msec_int_t) (set[i].seen - k->seen) < 0) {
                k = &set[i];
            }
        }

        ngx_memcpy(k->hash, hash, NGX_HTTP_IMGBILL_KEY_HASH_LEN);
        k->used = 1;
    }

    k->seen = ngx_current_msec;
}


/* Redis knows it no more */

void
ngx_http_imgbill_keys_forget(ngx_http_imgbill_main_conf_t *mcf, u_char *hash)
{
    ngx_http_imgbill_key_seen_t  *k;

    if (mcf->worker == NULL || mcf->worker->keys == NULL) {
        return;
    }

    k = ngx_http_imgbill_keys_find(mcf->worker->keys, hash);

    if (k) {
        k->used = 0;
    }
}
