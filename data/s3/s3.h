/*
 * s3.h: an S3 client on libcurl: HEAD, ranged GET (large reads split into
 * concurrent part-sized ranges), PUT with optional If-None-Match: *, DELETE
 * and ListObjectsV2 paging, signed with SigV4 and retried with full-jitter
 * backoff on throttling, server and connection errors. Failures say what
 * happened: SR_ERR_NOT_FOUND (404), SR_ERR_AUTH (401/403, refused keys),
 * SR_ERR_EXISTS (412), SR_ERR_FORMAT (object shorter than the read),
 * SR_ERR_REMOTE (other S3 errors), SR_ERR_NET (endpoint unreachable).
 */
#ifndef SPOTRUN_S3_H
#define SPOTRUN_S3_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/status.h"

struct storage_tap;             /* data/storage.h */

#define S3_ETAG_MAX 128
#define S3_MIN_PART_SIZE ((size_t)5 << 20)
#define S3_MAX_PART_SIZE ((size_t)5 << 30)
#define S3_MAX_PARTS 10000

enum s3_addressing {
    S3_ADDR_AUTO = 0,   /* path style for custom endpoints and dotted
                           buckets, virtual-hosted otherwise */
    S3_ADDR_PATH = 1,
    S3_ADDR_VIRTUAL = 2,
};

struct s3_config {
    char endpoint[512];         /* scheme://host[:port] */
    int custom_endpoint;        /* endpoint came from the environment */
    char region[64];
    enum s3_addressing addressing;
    char ca_bundle[1024];       /* "" = the system's CA store */
    int max_attempts;           /* tries per request, >= 1 */
    double retry_base_s;        /* backoff: rand(0,1) * min(base * 2^n, cap) */
    double retry_cap_s;
    double connect_timeout_s;
    double stall_timeout_s;     /* abort a transfer idle this long */
    size_t part_size;           /* multipart part and parallel-read size */
    size_t multipart_threshold; /* objects up to this size: one PutObject */
    int concurrency;            /* parallel parts per upload or read */
    int list_page_size;         /* max-keys; 0 = the server's default */
};

struct s3_object_info {
    uint64_t size;
    double mtime;               /* Unix seconds, 0 if unknown */
    char etag[S3_ETAG_MAX];
};

enum s3_put_flags {
    S3_IF_NONE_MATCH = 1,       /* create only; SR_ERR_EXISTS if present */
};

struct s3_client;

/* Called once per listed object, in key order; a non-OK status stops the
 * listing and is returned by s3_list. */
typedef sr_status (*s3_list_fn)(void *arg, const char *key, uint64_t size,
                                double mtime);

/* Settings from the environment: endpoint from AWS_ENDPOINT_URL_S3, then
 * AWS_ENDPOINT_URL, else https://s3.<region>.amazonaws.com; region from
 * AWS_REGION, AWS_DEFAULT_REGION, the profile's config file, else
 * us-east-1; AWS_CA_BUNDLE; SPOTRUN_S3_ADDRESSING, _MAX_ATTEMPTS,
 * _RETRY_BASE_MS, _RETRY_CAP_MS, _CONNECT_TIMEOUT_MS, _STALL_TIMEOUT_S,
 * _PART_SIZE, _MULTIPART_THRESHOLD, _CONCURRENCY, _LIST_PAGE_SIZE. A bad
 * value is SR_ERR_USAGE naming the variable. */
sr_status s3_config_from_env(struct s3_config *out) SR_MUST_USE;

sr_status s3_client_open(struct s3_client **out, const struct s3_config *cfg)
    SR_MUST_USE;
void s3_client_close(struct s3_client *c);
const struct s3_config *s3_client_config(const struct s3_client *c);

sr_status s3_head(struct s3_client *c, const char *bucket, const char *key,
                  struct s3_object_info *out) SR_MUST_USE;
/* Exactly len bytes at off into dst. */
sr_status s3_get(struct s3_client *c, const char *bucket, const char *key,
                 uint64_t off, void *dst, size_t len) SR_MUST_USE;
/* s3_get, showing each piece to tap as it lands (see storage.h). */
sr_status s3_get_tap(struct s3_client *c, const char *bucket, const char *key,
                     uint64_t off, void *dst, size_t len,
                     const struct storage_tap *tap) SR_MUST_USE;
/* One PutObject of the whole body (up to 5 GiB). */
sr_status s3_put(struct s3_client *c, const char *bucket, const char *key,
                 const void *p, size_t n, int flags) SR_MUST_USE;
/* DeleteObject; an absent key is not an error. */
sr_status s3_delete(struct s3_client *c, const char *bucket, const char *key)
    SR_MUST_USE;
/* After a conditional write that needed retries ends in 412: is the object
 * now at key the one this client sent, i.e. did an earlier attempt succeed
 * with its answer lost? Compares the object's ETag with `etag` (quotes
 * included, as S3 writes it); 1 yes, 0 no or unknown. */
int s3_written_by_us(struct s3_client *c, const char *bucket, const char *key,
                     const char *etag);
/* Every key that starts with prefix (no delimiter), all pages. */
sr_status s3_list(struct s3_client *c, const char *bucket, const char *prefix,
                  s3_list_fn fn, void *arg) SR_MUST_USE;

#endif
