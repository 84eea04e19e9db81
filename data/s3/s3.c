/*
 * s3.c: client settings, setup and the single-object operations. Each call
 * borrows an idle session (connections stay open inside it between calls)
 * and returns it; a read larger than one part is split into part-sized
 * ranged GETs that run concurrently in that session.
 */
#include "s3.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../common/log.h"
#include "../../common/util.h"
#include "s3_direct.h"
#include "s3_http.h"
#include "s3_xml.h"

/* ---- configuration ---------------------------------------------------- */

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static sr_status env_int(int *out, const char *name, int lo, int hi)
{
    const char *v = env(name);
    int64_t x;
    if (!v)
        return SR_OK;
    if (parse_i64(&x, v) != 0 || x < lo || x > hi)
        return SR_FAIL(SR_ERR_USAGE, "%s=%s: expected an integer from %d to "
                       "%d", name, v, lo, hi);
    *out = (int)x;
    return SR_OK;
}

static sr_status env_ms(double *out_s, const char *name, int lo, int hi)
{
    int ms = -1;
    SR_TRY(env_int(&ms, name, lo, hi));
    if (ms >= 0)
        *out_s = ms / 1000.0;
    return SR_OK;
}

static sr_status env_copy(char *dst, size_t cap, const char *name,
                          const char *v)
{
    if (str_copy(dst, cap, v))
        return SR_FAIL(SR_ERR_USAGE, "%s is too long (%zu bytes)", name,
                       strlen(v));
    return SR_OK;
}

sr_status s3_config_from_env(struct s3_config *out)
{
    memset(out, 0, sizeof *out);
    out->max_attempts = 5;
    out->retry_base_s = 0.2;
    out->retry_cap_s = 20;
    out->connect_timeout_s = 10;
    out->stall_timeout_s = 60;
    out->part_size = (size_t)8 << 20;
    out->multipart_threshold = (size_t)64 << 20;
    out->concurrency = 8;

    const char *region = env("AWS_REGION");
    if (!region)
        region = env("AWS_DEFAULT_REGION");
    if (region)
        SR_TRY(env_copy(out->region, sizeof out->region, "AWS_REGION",
                        region));
    else if (!creds_profile_region(out->region, sizeof out->region))
        snprintf(out->region, sizeof out->region, "us-east-1");

    const char *ep = NULL;
    const char *ignore = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    if (!ignore || strcasecmp(ignore, "true") != 0) {
        ep = env("AWS_ENDPOINT_URL_S3");
        if (!ep)
            ep = env("AWS_ENDPOINT_URL");
    }
    if (ep) {
        SR_TRY(env_copy(out->endpoint, sizeof out->endpoint,
                        "AWS_ENDPOINT_URL_S3", ep));
        out->custom_endpoint = 1;
    } else {
        snprintf(out->endpoint, sizeof out->endpoint,
                 "https://s3.%s.amazonaws.com", out->region);
    }

    const char *ca = env("AWS_CA_BUNDLE");
    if (ca)
        SR_TRY(env_copy(out->ca_bundle, sizeof out->ca_bundle,
                        "AWS_CA_BUNDLE", ca));

    const char *addr = env("SPOTRUN_S3_ADDRESSING");
    if (addr) {
        if (strcasecmp(addr, "path") == 0)
            out->addressing = S3_ADDR_PATH;
        else if (strcasecmp(addr, "virtual") == 0)
            out->addressing = S3_ADDR_VIRTUAL;
        else if (strcasecmp(addr, "auto") != 0)
            return SR_FAIL(SR_ERR_USAGE, "SPOTRUN_S3_ADDRESSING=%s: expected "
                           "path, virtual or auto", addr);
    }

    SR_TRY(env_int(&out->max_attempts, "SPOTRUN_S3_MAX_ATTEMPTS", 1, 100));
    SR_TRY(env_ms(&out->retry_base_s, "SPOTRUN_S3_RETRY_BASE_MS", 1,
                  60000));
    SR_TRY(env_ms(&out->retry_cap_s, "SPOTRUN_S3_RETRY_CAP_MS", 1, 600000));
    SR_TRY(env_ms(&out->connect_timeout_s, "SPOTRUN_S3_CONNECT_TIMEOUT_MS",
                  100, 600000));
    int stall = (int)out->stall_timeout_s;
    SR_TRY(env_int(&stall, "SPOTRUN_S3_STALL_TIMEOUT_S", 1, 3600));
    out->stall_timeout_s = stall;
    SR_TRY(env_int(&out->concurrency, "SPOTRUN_S3_CONCURRENCY", 1, 64));
    SR_TRY(env_int(&out->list_page_size, "SPOTRUN_S3_LIST_PAGE_SIZE", 1,
                   1000));

    const char *ps = env("SPOTRUN_S3_PART_SIZE");
    uint64_t part;
    if (ps) {
        if (parse_size(&part, ps) != 0 || part < S3_MIN_PART_SIZE ||
            part > S3_MAX_PART_SIZE)
            return SR_FAIL(SR_ERR_USAGE, "SPOTRUN_S3_PART_SIZE=%s: expected "
                           "a size from 5MiB to 5GiB", ps);
        out->part_size = (size_t)part;
    }
    const char *th = env("SPOTRUN_S3_MULTIPART_THRESHOLD");
    if (th) {
        if (parse_size(&part, th) != 0 || part > S3_MAX_PART_SIZE)
            return SR_FAIL(SR_ERR_USAGE, "SPOTRUN_S3_MULTIPART_THRESHOLD=%s: "
                           "expected a size up to 5GiB", th);
        out->multipart_threshold = (size_t)part;
    }
    return SR_OK;
}

/* ---- client ----------------------------------------------------------- */

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a,
                       void *arg)
{
    (void)h;
    (void)a;
    struct s3_client *c = arg;
    pthread_mutex_lock(&c->share_mu[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *arg)
{
    (void)h;
    struct s3_client *c = arg;
    pthread_mutex_unlock(&c->share_mu[d]);
}

/* Split the endpoint into scheme and host[:port] (default port dropped,
 * as the Host header carries it). */
static sr_status parse_endpoint(struct s3_client *c)
{
    const char *ep = c->cfg.endpoint;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    sr_status s = SR_OK;
    if (!u || curl_url_set(u, CURLUPART_URL, ep, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        s = SR_FAIL(SR_ERR_USAGE, "S3 endpoint %s is not a URL (expected "
                    "http[s]://host[:port])", ep);
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        s = SR_FAIL(SR_ERR_USAGE, "S3 endpoint %s: scheme must be http or "
                    "https", ep);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK &&
        strcmp(path, "/") != 0) {
        s = SR_FAIL(SR_ERR_USAGE, "S3 endpoint %s: a path is not supported",
                    ep);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    snprintf(c->scheme, sizeof c->scheme, "%s", scheme);
    int n = port ? snprintf(c->authority, sizeof c->authority, "%s:%s", host,
                            port)
                 : snprintf(c->authority, sizeof c->authority, "%s", host);
    if (n < 0 || (size_t)n >= sizeof c->authority)
        s = SR_FAIL(SR_ERR_USAGE, "S3 endpoint %s: host too long", ep);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return s;
}

sr_status s3_client_open(struct s3_client **out, const struct s3_config *cfg)
{
    s3_http_global_init();
    struct s3_client *c = calloc(1, sizeof *c);
    if (!c)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    c->cfg = *cfg;
    sr_status s = SR_OK;
    int nmu = 0, keys = 0, mu = 0;
    if (cfg->max_attempts < 1 || cfg->concurrency < 1 ||
        cfg->part_size < S3_MIN_PART_SIZE || cfg->part_size >
        S3_MAX_PART_SIZE || cfg->retry_base_s <= 0 || cfg->retry_cap_s <= 0) {
        s = SR_FAIL(SR_ERR_USAGE, "invalid S3 client settings");
        goto out;
    }
    s = parse_endpoint(c);
    if (s != SR_OK)
        goto out;
    for (; nmu < CURL_LOCK_DATA_LAST; nmu++)
        if (pthread_mutex_init(&c->share_mu[nmu], NULL) != 0)
            break;
    if (nmu < CURL_LOCK_DATA_LAST || pthread_mutex_init(&c->mu, NULL) != 0) {
        s = SR_FAIL(SR_ERR_INTERNAL, "pthread_mutex_init failed");
        goto out;
    }
    mu = 1;
    s = sigv4_key_cache_init(&c->keys);
    if (s != SR_OK)
        goto out;
    keys = 1;
    s = creds_chain_open(&c->creds);
    if (s != SR_OK)
        goto out;
    c->share = curl_share_init();
    if (!c->share ||
        curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock) ||
        curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock) ||
        curl_share_setopt(c->share, CURLSHOPT_USERDATA, c) ||
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
        curl_share_setopt(c->share, CURLSHOPT_SHARE,
                          CURL_LOCK_DATA_SSL_SESSION)) {
        s = SR_FAIL(SR_ERR_INTERNAL, "cannot set up a curl share handle");
        goto out;
    }
    c->direct = s3_direct_usable();
    log_debug("s3: endpoint %s://%s, region %s, part size %zu, multipart "
              "above %zu, concurrency %d, %d attempts, %s", c->scheme,
              c->authority, cfg->region, cfg->part_size,
              cfg->multipart_threshold, cfg->concurrency, cfg->max_attempts,
              c->direct ? "direct GETs" : "GETs through libcurl (proxy)");
    *out = c;
    return SR_OK;
out:
    if (c->share)
        curl_share_cleanup(c->share);
    creds_chain_close(c->creds);
    if (keys)
        sigv4_key_cache_destroy(&c->keys);
    if (mu)
        pthread_mutex_destroy(&c->mu);
    while (nmu > 0)
        pthread_mutex_destroy(&c->share_mu[--nmu]);
    free(c);
    return s;
}

void s3_client_close(struct s3_client *c)
{
    if (!c)
        return;
    s3_http_free_idle(c);
    curl_share_cleanup(c->share);
    creds_chain_close(c->creds);
    sigv4_key_cache_destroy(&c->keys);
    pthread_mutex_destroy(&c->mu);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_mu[i]);
    free(c);
}

const struct s3_config *s3_client_config(const struct s3_client *c)
{
    return &c->cfg;
}

/* ---- operations ------------------------------------------------------- */

static void base_req(struct s3_http_xfer *x, const char *method,
                     const char *bucket, const char *key, const char *what)
{
    x->req.method = method;
    x->req.bucket = bucket;
    x->req.key = key;
    x->req.what = what;
}

sr_status s3_head(struct s3_client *c, const char *bucket, const char *key,
                  struct s3_object_info *out)
{
    struct s3_http_sess *s;
    struct s3_http_xfer *x;
    SR_TRY(s3_http_sess_get(c, &s));
    sr_status st = s3_http_xfer_new(s, &x);
    if (st != SR_OK)
        goto out;
    base_req(x, "HEAD", bucket, key, "HEAD");
    st = s3_http_run(x);
    if (st != SR_OK)
        goto out;
    if (!x->resp.has_length) {
        st = SR_FAIL(SR_ERR_REMOTE, "s3://%s/%s: HEAD: no Content-Length in "
                     "the response", bucket, key);
        goto out;
    }
    out->size = x->resp.content_length;
    out->mtime = x->resp.last_modified;
    snprintf(out->etag, sizeof out->etag, "%s", x->resp.etag);
out:
    s3_http_sess_put(s);
    return st;
}

/* A finished ranged GET that delivered fewer bytes than asked. */
static sr_status short_read(const struct s3_http_xfer *x)
{
    const struct s3_http_req *r = &x->req;
    if (x->resp.has_range)
        return SR_FAIL(SR_ERR_FORMAT, "s3://%s/%s: object of %llu bytes ends "
                       "before byte %llu (GET %s)", r->bucket, r->key,
                       (unsigned long long)x->resp.range_total,
                       (unsigned long long)(r->dst_off + r->dst_len),
                       r->range);
    return SR_FAIL(SR_ERR_FORMAT, "s3://%s/%s: object ends before byte %llu "
                   "(GET %s)", r->bucket, r->key,
                   (unsigned long long)(r->dst_off + x->resp.got), r->range);
}

sr_status s3_get(struct s3_client *c, const char *bucket, const char *key,
                 uint64_t off, void *dst, size_t len)
{
    return s3_get_tap(c, bucket, key, off, dst, len, NULL);
}

sr_status s3_get_tap(struct s3_client *c, const char *bucket, const char *key,
                     uint64_t off, void *dst, size_t len,
                     const struct storage_tap *tap)
{
    if (len == 0)
        return SR_OK;
    size_t chunk = c->cfg.part_size;
    size_t nchunks = len / chunk + (len % chunk != 0);
    size_t next = 0, inflight = 0;
    struct s3_http_sess *s;
    SR_TRY(s3_http_sess_get(c, &s));
    sr_status st = SR_OK;
    while (st == SR_OK && (next < nchunks || inflight > 0)) {
        while (st == SR_OK && next < nchunks &&
               inflight < (size_t)c->cfg.concurrency) {
            struct s3_http_xfer *x;
            st = s3_http_xfer_new(s, &x);
            if (st != SR_OK)
                break;
            uint64_t a = off + (uint64_t)next * chunk;
            size_t n = next + 1 < nchunks ? chunk : len - next * chunk;
            base_req(x, "GET", bucket, key, "GET");
            snprintf(x->req.range, sizeof x->req.range, "bytes=%llu-%llu",
                     (unsigned long long)a, (unsigned long long)(a + n - 1));
            x->req.dst = (char *)dst + next * chunk;
            x->req.dst_off = a;
            x->req.dst_len = n;
            x->req.tap = tap;
            st = s3_http_submit(x);
            inflight++;
            next++;
        }
        struct s3_http_xfer *d;
        if (st == SR_OK)
            st = s3_http_wait(s, -1, &d);
        if (st != SR_OK)
            break;
        if (!d) {
            st = SR_FAIL(SR_ERR_INTERNAL, "s3: a read lost its transfers");
            break;
        }
        inflight--;
        st = s3_http_status(d);
        if (st == SR_OK && d->resp.got < d->req.dst_len)
            st = short_read(d);
        s3_http_release(d);
    }
    s3_http_sess_put(s);
    return st;
}

/* The ETag S3 gives a single-PUT object (no SSE-KMS): its quoted MD5. */
static sr_status md5_etag(char out[S3_ETAG_MAX], const void *p, size_t n)
{
    uint8_t md[16];
    unsigned int len = 0;
    if (!EVP_Digest(p, n, md, &len, EVP_md5(), NULL) || len != 16)
        return SR_FAIL(SR_ERR_CRYPTO, "MD5 failed");
    out[0] = '"';
    for (int i = 0; i < 16; i++)
        snprintf(out + 1 + 2 * i, 3, "%02x", md[i]);
    snprintf(out + 33, S3_ETAG_MAX - 33, "\"");
    return SR_OK;
}

sr_status s3_put(struct s3_client *c, const char *bucket, const char *key,
                 const void *p, size_t n, int flags)
{
    struct s3_http_sess *s;
    struct s3_http_xfer *x = NULL;
    SR_TRY(s3_http_sess_get(c, &s));
    sr_status st = s3_http_xfer_new(s, &x);
    if (st == SR_OK) {
        base_req(x, "PUT", bucket, key, "PUT");
        x->req.body = p;
        x->req.body_len = n;
        x->req.content_type = "application/octet-stream";
        x->req.if_none_match = (flags & S3_IF_NONE_MATCH) != 0;
        st = s3_http_run(x);
    }
    char etag[S3_ETAG_MAX];
    if (st == SR_ERR_EXISTS && x->attempt > 0 &&
        md5_etag(etag, p, n) == SR_OK) {
        if (s3_written_by_us(c, bucket, key, etag))
            st = SR_OK;
        else
            st = s3_http_status(x);
    }
    s3_http_sess_put(s);
    return st;
}

int s3_written_by_us(struct s3_client *c, const char *bucket, const char *key,
                     const char *etag)
{
    struct s3_object_info info;
    int ours = s3_head(c, bucket, key, &info) == SR_OK &&
               strcmp(info.etag, etag) == 0;
    sr_clear_error();
    if (ours)
        log_debug("s3://%s/%s: 412 after a retry, but the object is the one "
                  "sent (ETag %s): an earlier attempt succeeded", bucket, key,
                  etag);
    return ours;
}

sr_status s3_delete(struct s3_client *c, const char *bucket, const char *key)
{
    struct s3_http_sess *s;
    struct s3_http_xfer *x;
    SR_TRY(s3_http_sess_get(c, &s));
    sr_status st = s3_http_xfer_new(s, &x);
    if (st == SR_OK) {
        base_req(x, "DELETE", bucket, key, "DELETE");
        st = s3_http_run(x);
    }
    if (st == SR_ERR_NOT_FOUND) {
        sr_clear_error();
        st = SR_OK;
    }
    s3_http_sess_put(s);
    return st;
}

sr_status s3_list(struct s3_client *c, const char *bucket, const char *prefix,
                  s3_list_fn fn, void *arg)
{
    struct s3_http_sess *s;
    struct sr_buf token = { 0 };
    char max_keys[16];
    int truncated = 0;
    snprintf(max_keys, sizeof max_keys, "%d", c->cfg.list_page_size);
    SR_TRY(s3_http_sess_get(c, &s));
    sr_status st = buf_append(&token, "", 0);
    while (st == SR_OK) {
        struct s3_http_xfer *x;
        st = s3_http_xfer_new(s, &x);
        if (st != SR_OK)
            break;
        base_req(x, "GET", bucket, "", "ListObjectsV2");
        x->req.shown_key = prefix;
        struct sigv4_param *q = x->req.query;
        size_t n = 0;
        q[n++] = (struct sigv4_param){ "list-type", "2" };
        if (prefix[0])
            q[n++] = (struct sigv4_param){ "prefix", prefix };
        if (c->cfg.list_page_size > 0)
            q[n++] = (struct sigv4_param){ "max-keys", max_keys };
        if (token.len)
            q[n++] = (struct sigv4_param){ "continuation-token",
                                           (const char *)token.data };
        x->req.nquery = n;
        st = s3_http_run(x);
        if (st == SR_OK)
            st = s3_xml_list_page(x->resp.body.data, x->resp.body.len, fn,
                                  arg, &truncated, &token);
        s3_http_release(x);
        if (!truncated)
            break;
    }
    s3_http_sess_put(s);
    buf_free(&token);
    return st;
}
