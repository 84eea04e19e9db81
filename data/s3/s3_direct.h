/*
 * s3_direct.h: large ranged GETs whose body is received straight into the
 * caller's buffer, internal to data/s3/. libcurl makes the connection (TCP,
 * TLS, certificate checks) in CONNECT_ONLY mode and moves the bytes with
 * curl_easy_send and curl_easy_recv; this file writes the request and reads
 * the response head. Through libcurl's own transfer every body byte lands
 * in libcurl's buffer first and is then copied into place, a second pass
 * over every byte the reader streams.
 *
 * It takes only the plain case: a 2xx response of Content-Length bytes
 * holding the asked range, or an error response small enough to read
 * whole. Anything else (a Transfer-Encoding, a range other than the one
 * asked, an informational status) is declined and the attempt goes
 * through libcurl's transfer instead.
 */
#ifndef SPOTRUN_S3_DIRECT_H
#define SPOTRUN_S3_DIRECT_H

#include <curl/curl.h>

struct s3_http_xfer;
struct s3_client;

/* One kept-alive connection (a session holds at most one). */
struct s3_direct;

enum s3_direct_outcome {
    S3_DIRECT_DONE,     /* a whole response: x->resp filled in, the body in
                           x->req.dst (2xx) or x->resp.body (an error) */
    S3_DIRECT_FAILED,   /* the connection failed: *cc says how, x->errbuf
                           what happened */
    S3_DIRECT_DECLINED, /* a response it does not take (see above) */
};

/* Whether GETs may go direct: not when the environment names a proxy,
 * which libcurl's transfer goes through. */
int s3_direct_usable(void);

/* Send x's signed request (x->sig, x->hnodes) over *d, connecting to
 * c's endpoint (x->url) first when *d holds no live connection, and read
 * the response. *d is made on first use; a session's *d serves one
 * client. */
enum s3_direct_outcome s3_direct_get(struct s3_direct **d,
                                     const struct s3_client *c,
                                     struct s3_http_xfer *x, CURLcode *cc);

void s3_direct_free(struct s3_direct *d);

#endif
