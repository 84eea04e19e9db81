/*
 * s3_http.h: the S3 client's transport, internal to data/s3/. A session is
 * a curl multi handle with its connection cache and a set of transfers
 * (easy handles and their buffers) that are reused from request to
 * request; the client keeps idle sessions for any thread to take. Each
 * attempt of a transfer is signed afresh; failed attempts that may succeed
 * later are re-queued after a full-jitter delay while other transfers of
 * the session keep running.
 */
#ifndef SPOTRUN_S3_HTTP_H
#define SPOTRUN_S3_HTTP_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "../../common/buf.h"
#include "credentials.h"
#include "s3.h"
#include "sigv4.h"

#define S3_HTTP_MAX_QUERY 6
#define S3_HTTP_MAX_HEADERS 12

struct s3_http_sess;

/* Client state shared by every session. */
struct s3_client {
    struct s3_config cfg;
    char scheme[8];             /* "http" or "https" */
    char authority[512];        /* host[:port] of the endpoint */
    struct creds_chain *creds;
    struct sigv4_key_cache keys;
    CURLSH *share;              /* DNS cache and TLS sessions */
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pthread_mutex_t mu;         /* guards idle */
    struct s3_http_sess *idle;
    atomic_uint seq;
    int direct;                 /* large GETs may go direct (s3_direct.h) */
};

/* What to send. Strings are the caller's and must outlive the transfer. */
struct s3_http_req {
    const char *method;         /* GET HEAD PUT POST DELETE */
    const char *bucket;
    const char *key;            /* "" for bucket-level requests */
    const char *shown_key;      /* key to name in messages (NULL: key) */
    const char *what;           /* operation for messages, e.g. "HEAD" */
    struct sigv4_param query[S3_HTTP_MAX_QUERY];
    size_t nquery;
    char range[64];             /* "bytes=a-b" or "" */
    int if_none_match;
    const char *content_type;
    const void *body;           /* PUT/POST body */
    size_t body_len;
    void *dst;                  /* GET: object bytes [dst_off, +dst_len) */
    uint64_t dst_off;
    size_t dst_len;
    const struct storage_tap *tap;  /* GET: shown each piece of dst */
    int error_in_200;           /* a 200 body may be an <Error> document */
    char num[16];               /* room for a numeric query value */
    uintptr_t tag;              /* the caller's */
};

struct s3_http_resp {
    long status;
    int has_length;
    uint64_t content_length;
    int has_range;
    int encoded;                /* a Transfer-Encoding: no Content-Length
                                   framing */
    int close;                  /* the server ends the connection after it
                                   (HTTP/1.0, or Connection: close) */
    uint64_t range_first;
    uint64_t range_total;
    double last_modified;
    char etag[S3_ETAG_MAX];
    char request_id[96];
    struct sr_buf body;         /* the body, unless it went into dst */
    size_t got;                 /* bytes placed into dst */
    int body_started;
    uint64_t body_pos;          /* object offset of the next body byte */
};

struct s3_http_xfer {
    struct s3_http_req req;
    struct s3_http_resp resp;
    /* private to s3_http.c */
    struct s3_http_sess *sess;
    CURL *easy;
    int state;
    int attempt;
    double not_before;
    sr_status result;
    const char *fail_file;
    int fail_line;
    char msg[1024];
    char payload_hash[65];
    size_t body_pos;
    struct creds *cred;
    struct sigv4_bufs sig;
    struct sr_buf path, host, url, hdr;
    struct curl_slist hnodes[S3_HTTP_MAX_HEADERS];
    char errbuf[CURL_ERROR_SIZE];
};

#define S3_HTTP_USER_AGENT "spotrun/" SPOTRUN_VERSION

/* The connections' libcurl buffer size, which caps what one receive
 * returns (16 KiB by default: direct GETs made ten times the receive calls
 * per chunk). Large pieces mean fewer wake-ups here and less back-pressure
 * on the server. */
#define S3_HTTP_RECV_BUF (512u << 10)

/* The options every connection to c's endpoint is made with: TLS checks,
 * the connect timeout, HTTP/1.1, the receive buffer, the shared DNS and
 * TLS-session cache; libcurl's error text goes to errbuf
 * (CURL_ERROR_SIZE bytes). */
sr_status s3_http_conn_opts(CURL *e, const struct s3_client *c,
                            char *errbuf) SR_MUST_USE;

/* libcurl's CURLOPT_HEADERFUNCTION for transfers (arg: the transfer),
 * also given each response header line of a direct GET: status, length,
 * range, ETag, request id into x->resp. */
size_t s3_http_header_line(char *p, size_t size, size_t n, void *arg);

/* One-time library setup (curl, libxml2); safe from any thread. */
void s3_http_global_init(void);

/* Take an idle session of c, or make one; give it back when done. */
sr_status s3_http_sess_get(struct s3_client *c, struct s3_http_sess **out)
    SR_MUST_USE;
void s3_http_sess_put(struct s3_http_sess *s);
/* Free every idle session (at client close, when none is in use). */
void s3_http_free_idle(struct s3_client *c);

/* A free transfer of the session with a cleared request. */
sr_status s3_http_xfer_new(struct s3_http_sess *s, struct s3_http_xfer **out)
    SR_MUST_USE;
/* Queue x (its request filled in) to start at once. */
sr_status s3_http_submit(struct s3_http_xfer *x) SR_MUST_USE;
/* Drive the session until a transfer finishes (success or final failure)
 * and return it in *done, or until max_s seconds passed (max_s < 0: no
 * limit) or nothing is left to run, with *done NULL. */
sr_status s3_http_wait(struct s3_http_sess *s, double max_s,
                       struct s3_http_xfer **done) SR_MUST_USE;
/* A finished transfer's outcome; records its message as this thread's
 * error when it failed. */
sr_status s3_http_status(const struct s3_http_xfer *x) SR_MUST_USE;
/* Submit x and wait for it; the session must have no other transfer. */
sr_status s3_http_run(struct s3_http_xfer *x) SR_MUST_USE;
void s3_http_release(struct s3_http_xfer *x);
/* Stop and release every transfer of the session. */
void s3_http_cancel_all(struct s3_http_sess *s);

#endif
