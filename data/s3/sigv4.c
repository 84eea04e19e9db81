/*
 * sigv4.c: SigV4 signing. Query parameters and headers are first copied,
 * encoded or normalised, into one scratch buffer and addressed by offset,
 * then sorted as small index arrays, so a request costs no allocation once
 * the buffers of struct sigv4_bufs have grown to size. Secrets only pass
 * through stack buffers that are wiped after use.
 */
#include "sigv4.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include <strings.h>

static const char hexdig[] = "0123456789abcdef";

static void to_hex(char *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[p[i] >> 4];
        out[2 * i + 1] = hexdig[p[i] & 15];
    }
    out[2 * n] = '\0';
}

sr_status sigv4_sha256_hex(char out[65], const void *p, size_t n)
{
    uint8_t md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return SR_FAIL(SR_ERR_CRYPTO, "SHA-256 failed");
    to_hex(out, md, 32);
    return SR_OK;
}

static sr_status hmac(uint8_t out[32], const void *key, size_t keylen,
                      const void *msg, size_t n)
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, msg, n, out, &len) || len != 32)
        return SR_FAIL(SR_ERR_CRYPTO, "HMAC-SHA256 failed");
    return SR_OK;
}

static int unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

sr_status sigv4_uri_encode(struct sr_buf *out, const char *s, size_t n,
                           int keep_slash)
{
    static const char up[] = "0123456789ABCDEF";
    SR_TRY(buf_reserve(out, n * 3));
    char *d = (char *)out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            *d++ = (char)c;
        } else {
            *d++ = '%';
            *d++ = up[c >> 4];
            *d++ = up[c & 15];
        }
    }
    out->len = (size_t)((uint8_t *)d - out->data);
    out->data[out->len] = 0;
    return SR_OK;
}

void sigv4_amz_date(char out[17], time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

sr_status sigv4_signing_key(uint8_t out[32], const char *secret,
                            const char *date, const char *region,
                            const char *service)
{
    char k0[4 + 256];
    size_t sl = strlen(secret);
    if (sl > sizeof k0 - 4)
        return SR_FAIL(SR_ERR_AUTH, "secret access key is too long");
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret, sl);
    uint8_t a[32], b[32];
    sr_status s = hmac(a, k0, 4 + sl, date, strlen(date));
    if (s == SR_OK)
        s = hmac(b, a, 32, region, strlen(region));
    if (s == SR_OK)
        s = hmac(a, b, 32, service, strlen(service));
    if (s == SR_OK)
        s = hmac(out, a, 32, "aws4_request", 12);
    OPENSSL_cleanse(k0, sizeof k0);
    OPENSSL_cleanse(a, sizeof a);
    OPENSSL_cleanse(b, sizeof b);
    return s;
}

sr_status sigv4_key_cache_init(struct sigv4_key_cache *c)
{
    memset(c, 0, sizeof *c);
    if (pthread_mutex_init(&c->mu, NULL) != 0)
        return SR_FAIL(SR_ERR_INTERNAL, "pthread_mutex_init failed");
    return SR_OK;
}

void sigv4_key_cache_destroy(struct sigv4_key_cache *c)
{
    pthread_mutex_destroy(&c->mu);
    OPENSSL_cleanse(c->key, sizeof c->key);
}

/* The signing key for (date, region, service, secret), from the cache when
 * it matches, derived (and cached) otherwise. */
static sr_status signing_key(uint8_t out[32], struct sigv4_key_cache *c,
                             const char *secret, const char *date,
                             const char *region, const char *service)
{
    if (!c)
        return sigv4_signing_key(out, secret, date, region, service);
    uint8_t digest[32];
    unsigned int dlen = 0;
    if (!EVP_Digest(secret, strlen(secret), digest, &dlen, EVP_sha256(),
                    NULL))
        return SR_FAIL(SR_ERR_CRYPTO, "SHA-256 failed");
    pthread_mutex_lock(&c->mu);
    if (c->valid && strcmp(c->date, date) == 0 &&
        strcmp(c->region, region) == 0 && strcmp(c->service, service) == 0 &&
        memcmp(c->secret_digest, digest, 32) == 0) {
        memcpy(out, c->key, 32);
        pthread_mutex_unlock(&c->mu);
        return SR_OK;
    }
    pthread_mutex_unlock(&c->mu);
    SR_TRY(sigv4_signing_key(out, secret, date, region, service));
    if (strlen(region) >= sizeof c->region ||
        strlen(service) >= sizeof c->service)
        return SR_OK;
    pthread_mutex_lock(&c->mu);
    memcpy(c->date, date, 8);
    c->date[8] = '\0';
    memcpy(c->region, region, strlen(region) + 1);
    memcpy(c->service, service, strlen(service) + 1);
    memcpy(c->secret_digest, digest, 32);
    memcpy(c->key, out, 32);
    c->valid = 1;
    pthread_mutex_unlock(&c->mu);
    return SR_OK;
}

/* A span of the scratch buffer. */
struct span {
    size_t off, len;
};

struct pair {
    struct span name, value;
};

static int span_cmp(const uint8_t *base, struct span a, struct span b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = memcmp(base + a.off, base + b.off, n);
    if (c)
        return c;
    return (a.len > b.len) - (a.len < b.len);
}

/* Stable insertion sort of pairs by name (then value when by_value). */
static void sort_pairs(struct pair *v, size_t n, const uint8_t *base,
                       int by_value)
{
    for (size_t i = 1; i < n; i++) {
        struct pair x = v[i];
        size_t j = i;
        while (j > 0) {
            int c = span_cmp(base, v[j - 1].name, x.name);
            if (c == 0 && by_value)
                c = span_cmp(base, v[j - 1].value, x.value);
            if (c <= 0)
                break;
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static sr_status append_span(struct sr_buf *out, const struct sr_buf *src,
                             struct span s)
{
    return buf_append(out, src->data + s.off, s.len);
}

static sr_status canonical_query(struct sigv4_bufs *b,
                                 const struct sigv4_request *r)
{
    struct pair v[SIGV4_MAX_PARAMS];
    if (r->nquery > SIGV4_MAX_PARAMS)
        return SR_FAIL(SR_ERR_INTERNAL, "too many query parameters (%zu)",
                       r->nquery);
    b->tmp.len = 0;
    for (size_t i = 0; i < r->nquery; i++) {
        const char *val = r->query[i].value ? r->query[i].value : "";
        v[i].name.off = b->tmp.len;
        SR_TRY(sigv4_uri_encode(&b->tmp, r->query[i].name,
                                strlen(r->query[i].name), 0));
        v[i].name.len = b->tmp.len - v[i].name.off;
        v[i].value.off = b->tmp.len;
        SR_TRY(sigv4_uri_encode(&b->tmp, val, strlen(val), 0));
        v[i].value.len = b->tmp.len - v[i].value.off;
    }
    sort_pairs(v, r->nquery, b->tmp.data, 1);
    SR_TRY(buf_append(&b->query, "", 0));
    for (size_t i = 0; i < r->nquery; i++) {
        if (i)
            SR_TRY(buf_append(&b->query, "&", 1));
        SR_TRY(append_span(&b->query, &b->tmp, v[i].name));
        SR_TRY(buf_append(&b->query, "=", 1));
        SR_TRY(append_span(&b->query, &b->tmp, v[i].value));
    }
    return SR_OK;
}

static int never_signed(const char *name)
{
    static const char *const skip[] = { "user-agent", "expect",
        "transfer-encoding", "connection", "x-amzn-trace-id" };
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strcasecmp(name, skip[i]) == 0)
            return 1;
    return 0;
}

/* Append value with leading/trailing blanks removed and each inner run of
 * blanks turned into one space. */
static sr_status append_trimmed(struct sr_buf *out, const char *v)
{
    SR_TRY(buf_reserve(out, strlen(v)));
    int pending_space = 0, any = 0;
    for (const char *p = v; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            pending_space = any;
            continue;
        }
        if (pending_space)
            out->data[out->len++] = ' ';
        pending_space = 0;
        any = 1;
        out->data[out->len++] = (uint8_t)*p;
    }
    out->data[out->len] = 0;
    return SR_OK;
}

/* Canonical header lines go straight into creq; names into signed_headers. */
static sr_status canonical_headers(struct sigv4_bufs *b,
                                   const struct sigv4_request *r)
{
    struct pair v[SIGV4_MAX_HEADERS];
    size_t n = 0;
    if (r->nheaders > SIGV4_MAX_HEADERS)
        return SR_FAIL(SR_ERR_INTERNAL, "too many headers to sign (%zu)",
                       r->nheaders);
    b->tmp.len = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *name = r->headers[i].name;
        if (never_signed(name))
            continue;
        v[n].name.off = b->tmp.len;
        for (const char *p = name; *p; p++) {
            char c = (char)tolower((unsigned char)*p);
            SR_TRY(buf_append(&b->tmp, &c, 1));
        }
        v[n].name.len = b->tmp.len - v[n].name.off;
        v[n].value.off = b->tmp.len;
        SR_TRY(append_trimmed(&b->tmp, r->headers[i].value));
        v[n].value.len = b->tmp.len - v[n].value.off;
        n++;
    }
    sort_pairs(v, n, b->tmp.data, 0);
    SR_TRY(buf_append(&b->signed_headers, "", 0));
    for (size_t i = 0; i < n; i++) {
        int same = i > 0 && span_cmp(b->tmp.data, v[i - 1].name,
                                     v[i].name) == 0;
        if (same) {
            SR_TRY(buf_append(&b->creq, ",", 1));
        } else {
            if (i) {
                SR_TRY(buf_append(&b->creq, "\n", 1));
                SR_TRY(buf_append(&b->signed_headers, ";", 1));
            }
            SR_TRY(append_span(&b->creq, &b->tmp, v[i].name));
            SR_TRY(buf_append(&b->creq, ":", 1));
            SR_TRY(append_span(&b->signed_headers, &b->tmp, v[i].name));
        }
        SR_TRY(append_span(&b->creq, &b->tmp, v[i].value));
    }
    if (n)
        SR_TRY(buf_append(&b->creq, "\n", 1));
    return SR_OK;
}

sr_status sigv4_sign(struct sigv4_bufs *b, struct sigv4_key_cache *cache,
                     const struct sigv4_request *r, const char *access_key,
                     const char *secret_key)
{
    b->uri.len = b->query.len = b->signed_headers.len = 0;
    b->creq.len = b->sts.len = b->authz.len = 0;
    if (!r->amz_date || strlen(r->amz_date) != 16 || !r->path ||
        r->path[0] != '/')
        return SR_FAIL(SR_ERR_INTERNAL, "sigv4: bad date or path");
    char date[9];
    memcpy(date, r->amz_date, 8);
    date[8] = '\0';

    SR_TRY(sigv4_uri_encode(&b->uri, r->path, strlen(r->path), 1));
    SR_TRY(canonical_query(b, r));
    SR_TRY(buf_printf(&b->creq, "%s\n%s\n%s\n", r->method,
                      (const char *)b->uri.data,
                      (const char *)b->query.data));
    SR_TRY(canonical_headers(b, r));
    SR_TRY(buf_printf(&b->creq, "\n%s\n%s", (const char *)b->signed_headers
                      .data, r->payload_hash));

    char creq_hash[65];
    SR_TRY(sigv4_sha256_hex(creq_hash, b->creq.data, b->creq.len));
    SR_TRY(buf_printf(&b->sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request"
                      "\n%s", r->amz_date, date, r->region, r->service,
                      creq_hash));

    uint8_t key[32], sig[32];
    char sighex[65];
    sr_status s = signing_key(key, cache, secret_key, date, r->region,
                              r->service);
    if (s == SR_OK)
        s = hmac(sig, key, 32, b->sts.data, b->sts.len);
    OPENSSL_cleanse(key, sizeof key);
    if (s != SR_OK)
        return s;
    to_hex(sighex, sig, 32);
    return buf_printf(&b->authz, "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/"
                      "aws4_request, SignedHeaders=%s, Signature=%s",
                      access_key, date, r->region, r->service,
                      (const char *)b->signed_headers.data, sighex);
}

void sigv4_bufs_free(struct sigv4_bufs *b)
{
    buf_free(&b->uri);
    buf_free(&b->query);
    buf_free(&b->signed_headers);
    buf_free(&b->creq);
    buf_free(&b->sts);
    buf_free(&b->authz);
    buf_free(&b->tmp);
}
