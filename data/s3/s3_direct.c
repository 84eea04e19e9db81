/*
 * s3_direct.c: direct GETs (see s3_direct.h). The request is the one
 * libcurl would send for the transfer: the signed path and query, its
 * signed header list, the user agent. The response head is read into a
 * fixed buffer and handed line by line to the transport's header parser,
 * so both paths fill the response the same way; the body is received in
 * place, each piece shown to the request's tap while it is still in the
 * cache. A connection a response leaves clean (its length known, no
 * "Connection: close") serves the next request.
 */
#include "s3_direct.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/log.h"
#include "../storage.h"
#include "s3_http.h"

#define HEAD_MAX 16384              /* response status line and headers */
#define ERROR_BODY_MAX (64u << 10)  /* error bodies read here, not declined */
/* body bytes asked of one receive (at most S3_HTTP_RECV_BUF): a piece the
 * tap's CRC reads while it is in the cache (512 KiB pieces were slower:
 * 75.8-77.8% of curl's rate against 79.0-82.8%) */
#define PIECE_MAX (256u << 10)

struct s3_direct {
    const struct s3_client *c;
    CURL *e;                        /* NULL: no connection */
    curl_socket_t fd;
    struct sr_buf req;
    char head[HEAD_MAX];
};

int s3_direct_usable(void)
{
    static const char *const proxy_vars[] = {
        "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
    };
    for (size_t i = 0; i < sizeof proxy_vars / sizeof *proxy_vars; i++) {
        const char *v = getenv(proxy_vars[i]);
        if (v && *v)
            return 0;
    }
    return 1;
}

static void hang_up(struct s3_direct *d)
{
    if (d->e)
        curl_easy_cleanup(d->e);
    d->e = NULL;
}

void s3_direct_free(struct s3_direct *d)
{
    if (!d)
        return;
    hang_up(d);
    buf_free(&d->req);
    free(d);
}

/* Note what failed in x->errbuf, which messages and retries report. */
static CURLcode failed(struct s3_http_xfer *x, CURLcode cc, const char *what)
{
    snprintf(x->errbuf, sizeof x->errbuf, "%s", what);
    return cc;
}

static CURLcode connect_to(struct s3_direct *d, struct s3_http_xfer *x)
{
    d->e = curl_easy_init();
    if (!d->e)
        return failed(x, CURLE_OUT_OF_MEMORY, "curl_easy_init failed");
    if (s3_http_conn_opts(d->e, d->c, x->errbuf) != SR_OK ||
        curl_easy_setopt(d->e, CURLOPT_URL, (const char *)x->url.data) ||
        curl_easy_setopt(d->e, CURLOPT_CONNECT_ONLY, 1L)) {
        hang_up(d);
        return failed(x, CURLE_FAILED_INIT, "setting up the connection "
                      "failed");
    }
    CURLcode cc = curl_easy_perform(d->e);
    if (cc == CURLE_OK)
        cc = curl_easy_getinfo(d->e, CURLINFO_ACTIVESOCKET, &d->fd);
    if (cc == CURLE_OK && d->fd == CURL_SOCKET_BAD)
        cc = failed(x, CURLE_COULDNT_CONNECT, "no socket after connecting");
    if (cc != CURLE_OK)
        hang_up(d);
    return cc;
}

/* Wait until the socket is ready for ev, at most the stall timeout. */
static CURLcode await(struct s3_direct *d, struct s3_http_xfer *x, short ev)
{
    struct pollfd p = { .fd = d->fd, .events = ev };
    double stall = d->c->cfg.stall_timeout_s;
    for (;;) {
        int k = poll(&p, 1, (int)ceil(stall * 1000));
        if (k > 0)
            return CURLE_OK;
        if (k == 0) {
            char what[96];
            snprintf(what, sizeof what, "no progress in %.0f s", stall);
            return failed(x, CURLE_OPERATION_TIMEDOUT, what);
        }
        if (errno != EINTR)
            return failed(x, ev == POLLIN ? CURLE_RECV_ERROR
                          : CURLE_SEND_ERROR, strerror(errno));
    }
}

static CURLcode send_all(struct s3_direct *d, struct s3_http_xfer *x,
                         const uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t k = 0;
        CURLcode cc = curl_easy_send(d->e, p, n, &k);
        if (cc == CURLE_AGAIN)
            cc = await(d, x, POLLOUT);
        else if (cc == CURLE_OK)
            p += k, n -= k;
        if (cc != CURLE_OK)
            return cc;
    }
    return CURLE_OK;
}

/* Up to n bytes into p; *got 0 when the server closed the connection. */
static CURLcode recv_some(struct s3_direct *d, struct s3_http_xfer *x,
                          void *p, size_t n, size_t *got)
{
    for (;;) {
        CURLcode cc = curl_easy_recv(d->e, p, n, got);
        if (cc != CURLE_AGAIN)
            return cc;
        cc = await(d, x, POLLIN);
        if (cc != CURLE_OK)
            return cc;
    }
}

/* "GET <path>[?<query>] HTTP/1.1" as signed, the signed headers (not the
 * "Name:" entries that only switch a libcurl default off), the user
 * agent. */
static CURLcode build_request(struct s3_direct *d, struct s3_http_xfer *x)
{
    const struct sigv4_bufs *sig = &x->sig;
    d->req.len = 0;
    if (buf_printf(&d->req, "GET %s%s%s HTTP/1.1\r\n",
                   (const char *)sig->uri.data, sig->query.len ? "?" : "",
                   sig->query.len ? (const char *)sig->query.data : "")
        != SR_OK)
        return failed(x, CURLE_OUT_OF_MEMORY, "building the request failed");
    for (const struct curl_slist *h = x->hnodes; h; h = h->next) {
        size_t n = strlen(h->data);
        if (n && h->data[n - 1] == ':')
            continue;
        if (buf_printf(&d->req, "%s\r\n", h->data) != SR_OK)
            return failed(x, CURLE_OUT_OF_MEMORY, "building the request "
                          "failed");
    }
    if (buf_printf(&d->req, "User-Agent: %s\r\n\r\n", S3_HTTP_USER_AGENT)
        != SR_OK)
        return failed(x, CURLE_OUT_OF_MEMORY, "building the request failed");
    return CURLE_OK;
}

/* Where the response head ends in d->head. */
struct head {
    size_t len;                     /* through the blank line */
    size_t have;                    /* bytes in d->head */
    int oversized;                  /* no blank line in HEAD_MAX bytes */
};

/* Read the response head and give each line to the transport's header
 * parser. A head that does not end within HEAD_MAX bytes is left unread
 * (h->oversized). */
static CURLcode read_head(struct s3_direct *d, struct s3_http_xfer *x,
                          struct head *h)
{
    const char *end = NULL;
    memset(h, 0, sizeof *h);
    while (!end) {
        if (h->have == sizeof d->head) {
            h->oversized = 1;
            return CURLE_OK;
        }
        size_t got = 0;
        CURLcode cc = recv_some(d, x, d->head + h->have,
                                sizeof d->head - h->have, &got);
        if (cc != CURLE_OK)
            return cc;
        if (got == 0)
            return h->have ? failed(x, CURLE_RECV_ERROR, "connection "
                                    "closed in the response head")
                           : failed(x, CURLE_GOT_NOTHING, "connection "
                                    "closed before a response");
        size_t from = h->have > 3 ? h->have - 3 : 0;
        h->have += got;
        end = memmem(d->head + from, h->have - from, "\r\n\r\n", 4);
    }
    h->len = (size_t)(end - d->head) + 4;
    for (char *line = d->head; line < end + 2;) {
        char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        size_t n = (size_t)(eol - line) + 2;
        s3_http_header_line(line, 1, n, x);
        line += n;
    }
    return CURLE_OK;
}

/* The response's Content-Length bytes of body into p: those read with the
 * head, then the rest, each piece shown to tap (NULL: none) as object
 * bytes from tap_off on. */
static CURLcode read_content(struct s3_direct *d, struct s3_http_xfer *x,
                             const struct head *h, uint8_t *p,
                             const struct storage_tap *tap, uint64_t tap_off)
{
    size_t want = (size_t)x->resp.content_length, got = h->have - h->len;
    if (got > want)
        return failed(x, CURLE_WEIRD_SERVER_REPLY, "more bytes than the "
                      "response's Content-Length");
    memcpy(p, d->head + h->len, got);
    if (got && tap)
        tap->fn(tap->arg, tap_off, p, got);
    while (got < want) {
        size_t n = want - got < PIECE_MAX ? want - got : PIECE_MAX, k = 0;
        CURLcode cc = recv_some(d, x, p + got, n, &k);
        if (cc != CURLE_OK)
            return cc;
        if (k == 0) {
            char what[128];
            snprintf(what, sizeof what, "connection closed after %zu of "
                     "%zu body bytes", got, want);
            return failed(x, CURLE_PARTIAL_FILE, what);
        }
        if (tap)
            tap->fn(tap->arg, tap_off + got, p + got, k);
        got += k;
    }
    return CURLE_OK;
}

/* The body of a 2xx response, into the caller's buffer. */
static CURLcode read_body(struct s3_direct *d, struct s3_http_xfer *x,
                          const struct head *h)
{
    struct s3_http_resp *r = &x->resp;
    const struct s3_http_req *q = &x->req;
    CURLcode cc = read_content(d, x, h, q->dst, q->tap, q->dst_off);
    if (cc != CURLE_OK)
        return cc;
    r->got = (size_t)r->content_length;
    r->body_started = 1;
    r->body_pos = q->dst_off + r->got;
    return CURLE_OK;
}

/* An error response's body, into resp.body for its XML. */
static CURLcode read_error_body(struct s3_direct *d, struct s3_http_xfer *x,
                                const struct head *h)
{
    struct sr_buf *b = &x->resp.body;
    size_t want = (size_t)x->resp.content_length;
    if (buf_reserve(b, want) != SR_OK)
        return failed(x, CURLE_OUT_OF_MEMORY, "out of memory");
    CURLcode cc = read_content(d, x, h, b->data + b->len, NULL, 0);
    if (cc == CURLE_OK)
        b->len += want;
    return cc;
}

/* Whether a 2xx response holds exactly the asked bytes' start. */
static int holds_range(const struct s3_http_xfer *x)
{
    const struct s3_http_resp *r = &x->resp;
    const struct s3_http_req *q = &x->req;
    if (!r->has_length || r->content_length > q->dst_len)
        return 0;
    if (r->status == 206)
        return r->has_range && r->range_first == q->dst_off;
    return r->status == 200 && !r->has_range && q->dst_off == 0;
}

enum s3_direct_outcome s3_direct_get(struct s3_direct **dp,
                                     const struct s3_client *c,
                                     struct s3_http_xfer *x, CURLcode *cc)
{
    struct s3_direct *d = *dp;
    if (!d && !(d = *dp = calloc(1, sizeof *d))) {
        *cc = failed(x, CURLE_OUT_OF_MEMORY, "out of memory");
        return S3_DIRECT_FAILED;
    }
    d->c = c;
    *cc = build_request(d, x);
    if (*cc != CURLE_OK)
        return S3_DIRECT_FAILED;
    struct head h = { 0 };
    for (;;) {
        int reused = d->e != NULL;
        if (!d->e && (*cc = connect_to(d, x)) != CURLE_OK)
            return S3_DIRECT_FAILED;
        *cc = send_all(d, x, d->req.data, d->req.len);
        if (*cc == CURLE_OK)
            *cc = read_head(d, x, &h);
        if (*cc == CURLE_OK)
            break;
        hang_up(d);
        /* a kept-alive connection the server has since closed: once more
         * on a new one, as libcurl does */
        if (!reused || h.have > 0)
            return S3_DIRECT_FAILED;
    }
    const struct s3_http_resp *r = &x->resp;
    long status = r->status;
    int framed = r->has_length && !r->encoded && !h.oversized;
    if (status / 100 == 2 && framed && holds_range(x))
        *cc = read_body(d, x, &h);
    else if (status >= 300 && framed &&
             r->content_length <= ERROR_BODY_MAX)
        *cc = read_error_body(d, x, &h);
    else {
        const char *why = h.oversized ? "with a head over 16 KiB"
                          : r->encoded ? "with a Transfer-Encoding"
                          : !r->has_length ? "of no stated length"
                          : status / 100 == 2 ? "not of the asked range"
                          : status < 300 ? "of no use here"
                          : "with an error body over 64 KiB";
        log_debug("s3: %s: %ld response %s; read through libcurl instead",
                  (const char *)x->url.data, status, why);
        hang_up(d);
        return S3_DIRECT_DECLINED;
    }
    if (*cc != CURLE_OK || r->close)
        hang_up(d);
    return *cc == CURLE_OK ? S3_DIRECT_DONE : S3_DIRECT_FAILED;
}
