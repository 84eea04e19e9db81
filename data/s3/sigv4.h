/*
 * sigv4.h: AWS Signature Version 4 for S3, computed with OpenSSL (SHA-256,
 * HMAC-SHA256). sigv4_sign() builds the canonical request by S3's rules
 * (path encoded once with '/' kept; query encoded and sorted; header names
 * lowercased, values trimmed, sorted), the string to sign, the signing key
 * and the Authorization value. The encoded path and query it produces are
 * also the request URL's, so what is sent is exactly what was signed.
 */
#ifndef SPOTRUN_SIGV4_H
#define SPOTRUN_SIGV4_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../../common/buf.h"
#include "../../common/status.h"

#define SIGV4_EMPTY_SHA256 \
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_MAX_PARAMS 16
#define SIGV4_MAX_HEADERS 16

/* A query parameter; a NULL or empty value is written "name=". */
struct sigv4_param {
    const char *name;
    const char *value;
};

struct sigv4_header {
    const char *name;
    const char *value;
};

/* One request to sign. `path` is raw (not encoded) and starts with '/'.
 * `headers` must hold host, x-amz-date and x-amz-content-sha256 (and
 * x-amz-security-token with temporary credentials); user-agent, expect,
 * transfer-encoding, connection and x-amzn-trace-id are never signed. */
struct sigv4_request {
    const char *method;
    const char *path;
    const struct sigv4_param *query;
    size_t nquery;
    const struct sigv4_header *headers;
    size_t nheaders;
    const char *payload_hash;   /* hex SHA-256 of the body */
    const char *amz_date;       /* YYYYMMDDTHHMMSSZ, as in x-amz-date */
    const char *region;
    const char *service;        /* "s3" */
};

/* Outputs of sigv4_sign, kept between requests so their memory is reused. */
struct sigv4_bufs {
    struct sr_buf uri;          /* canonical (encoded) path */
    struct sr_buf query;        /* canonical query, without '?' */
    struct sr_buf signed_headers;
    struct sr_buf creq;         /* canonical request */
    struct sr_buf sts;          /* string to sign */
    struct sr_buf authz;        /* Authorization header value */
    struct sr_buf tmp;
};

/* The last derived signing key, reused while date, region, service and
 * secret stay the same. Holds a digest of the secret, never the secret. */
struct sigv4_key_cache {
    pthread_mutex_t mu;
    int valid;
    char date[9];
    char region[64];
    char service[16];
    uint8_t secret_digest[32];
    uint8_t key[32];
};

/* hex(SHA-256(p[0..n))) into out (65 bytes with the NUL). */
sr_status sigv4_sha256_hex(char out[65], const void *p, size_t n) SR_MUST_USE;

/* Append s[0..n) percent-encoded: every byte outside A-Za-z0-9-_.~ becomes
 * %XX (uppercase hex); '/' stays as it is when keep_slash is set. */
sr_status sigv4_uri_encode(struct sr_buf *out, const char *s, size_t n,
                           int keep_slash) SR_MUST_USE;

/* The x-amz-date value for a time: YYYYMMDDTHHMMSSZ (UTC). */
void sigv4_amz_date(char out[17], time_t t);

/* kSigning = HMAC chain over "AWS4"+secret, date, region, service,
 * "aws4_request". */
sr_status sigv4_signing_key(uint8_t out[32], const char *secret,
                            const char *date, const char *region,
                            const char *service) SR_MUST_USE;

sr_status sigv4_key_cache_init(struct sigv4_key_cache *c) SR_MUST_USE;
void sigv4_key_cache_destroy(struct sigv4_key_cache *c);

/* Sign r with the given key pair; fills every field of b (cleared first).
 * cache may be NULL. */
sr_status sigv4_sign(struct sigv4_bufs *b, struct sigv4_key_cache *cache,
                     const struct sigv4_request *r, const char *access_key,
                     const char *secret_key) SR_MUST_USE;

void sigv4_bufs_free(struct sigv4_bufs *b);

#endif
