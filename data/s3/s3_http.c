/*
 * s3_http.c: sessions, transfers, signing per attempt, response capture
 * and the retry policy. A transfer moves FREE -> QUEUED -> RUNNING ->
 * DONE -> REAPED -> FREE; a retryable failure sends it back to QUEUED with
 * a not-before time of rand(0,1) * min(base * 2^n, cap) from now. Headers
 * are built in the transfer's own buffer and linked through a fixed array
 * of list nodes, so steady-state requests allocate nothing.
 */
#include "s3_http.h"

#include <libxml/parser.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../../common/log.h"
#include "../../common/rng.h"
#include "../../common/util.h"
#include "../storage.h"
#include "s3_direct.h"
#include "s3_xml.h"

#define BODY_MAX ((size_t)64 << 20)   /* cap on bodies kept in memory */

enum { XS_FREE, XS_QUEUED, XS_RUNNING, XS_DONE, XS_REAPED };

struct s3_http_sess {
    struct s3_client *c;
    CURLM *multi;
    struct s3_http_xfer **x;
    size_t nx;
    struct rng rng;
    struct s3_direct *direct;   /* its connection for direct GETs */
    struct s3_http_sess *next;
};

#define CURL_CHECK(call) do { CURLcode r_ = (call); if (r_ != CURLE_OK) \
        return SR_FAIL(SR_ERR_NET, "%s: %s", #call, \
                       curl_easy_strerror(r_)); } while (0)

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    xmlInitParser();
}

void s3_http_global_init(void)
{
    pthread_once(&global_once, global_init_once);
}

/* ---- sessions and transfers ------------------------------------------ */

sr_status s3_http_sess_get(struct s3_client *c, struct s3_http_sess **out)
{
    pthread_mutex_lock(&c->mu);
    struct s3_http_sess *s = c->idle;
    if (s)
        c->idle = s->next;
    pthread_mutex_unlock(&c->mu);
    if (s) {
        *out = s;
        return SR_OK;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    s->c = c;
    s->multi = curl_multi_init();
    if (!s->multi) {
        free(s);
        return SR_FAIL(SR_ERR_NOMEM, "curl_multi_init failed");
    }
    unsigned seq = atomic_fetch_add(&c->seq, 1);
    rng_seed(&s->rng, (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)s, seq, 0);
    *out = s;
    return SR_OK;
}

void s3_http_sess_put(struct s3_http_sess *s)
{
    s3_http_cancel_all(s);
    pthread_mutex_lock(&s->c->mu);
    s->next = s->c->idle;
    s->c->idle = s;
    pthread_mutex_unlock(&s->c->mu);
}

static void xfer_free(struct s3_http_xfer *x)
{
    curl_easy_cleanup(x->easy);
    sigv4_bufs_free(&x->sig);
    buf_free(&x->path);
    buf_free(&x->host);
    buf_free(&x->url);
    buf_free(&x->hdr);
    buf_free(&x->resp.body);
    if (x->cred) {
        creds_wipe(x->cred);
        free(x->cred);
    }
    free(x);
}

void s3_http_free_idle(struct s3_client *c)
{
    while (c->idle) {
        struct s3_http_sess *s = c->idle;
        c->idle = s->next;
        s3_http_cancel_all(s);
        for (size_t i = 0; i < s->nx; i++)
            xfer_free(s->x[i]);
        free(s->x);
        s3_direct_free(s->direct);
        curl_multi_cleanup(s->multi);
        free(s);
    }
}

sr_status s3_http_xfer_new(struct s3_http_sess *s, struct s3_http_xfer **out)
{
    struct s3_http_xfer *x = NULL;
    for (size_t i = 0; i < s->nx && !x; i++)
        if (s->x[i]->state == XS_FREE)
            x = s->x[i];
    if (!x) {
        struct s3_http_xfer **v = realloc(s->x, (s->nx + 1) * sizeof *v);
        if (!v)
            return SR_FAIL(SR_ERR_NOMEM, "out of memory");
        s->x = v;
        x = calloc(1, sizeof *x);
        if (!x)
            return SR_FAIL(SR_ERR_NOMEM, "out of memory");
        x->easy = curl_easy_init();
        x->cred = malloc(sizeof *x->cred);
        if (!x->easy || !x->cred) {
            xfer_free(x);
            return SR_FAIL(SR_ERR_NOMEM, "out of memory creating a transfer");
        }
        x->sess = s;
        s->x[s->nx++] = x;
    }
    memset(&x->req, 0, sizeof x->req);
    x->state = XS_REAPED;   /* owned by the caller until submitted */
    x->result = SR_OK;
    x->msg[0] = '\0';
    *out = x;
    return SR_OK;
}

void s3_http_release(struct s3_http_xfer *x)
{
    if (x->state == XS_RUNNING)
        curl_multi_remove_handle(x->sess->multi, x->easy);
    x->state = XS_FREE;
}

void s3_http_cancel_all(struct s3_http_sess *s)
{
    for (size_t i = 0; i < s->nx; i++)
        s3_http_release(s->x[i]);
}

/* ---- failure bookkeeping ---------------------------------------------- */

/* "s3://bucket/key: WHAT[ N][ RANGE]" naming a request in messages. */
static void describe(char *out, size_t cap, const struct s3_http_req *r)
{
    snprintf(out, cap, "s3://%s/%s: %s%s%s%s%s", r->bucket,
             r->shown_key ? r->shown_key : r->key, r->what,
             r->num[0] ? " " : "", r->num, r->range[0] ? " " : "", r->range);
}

static void set_fail(struct s3_http_xfer *x, sr_status st, const char *file,
                     int line, const char *fmt, ...) SR_PRINTF(5, 6);

/* Final failure: "s3://bucket/key: WHAT: <detail>", secrets redacted. */
static void set_fail(struct s3_http_xfer *x, sr_status st, const char *file,
                     int line, const char *fmt, ...)
{
    describe(x->msg, sizeof x->msg - 2, &x->req);
    size_t n = strlen(x->msg);
    memcpy(x->msg + n, ": ", 3);
    n += 2;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->msg + n, sizeof x->msg - n, fmt, ap);
    va_end(ap);
    creds_redact(x->msg, x->cred);
    x->result = st;
    x->fail_file = file;
    x->fail_line = line;
    x->state = XS_DONE;
}
#define XFER_FAIL(x, st, ...) set_fail((x), (st), __FILE__, __LINE__, \
                                       __VA_ARGS__)

sr_status s3_http_status(const struct s3_http_xfer *x)
{
    if (x->result == SR_OK)
        return SR_OK;
    return sr_fail(x->result, x->fail_file, x->fail_line, "%s", x->msg);
}

/* ---- curl callbacks --------------------------------------------------- */

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    struct s3_http_xfer *x = arg;
    size_t left = x->req.body_len - x->body_pos;
    size_t k = size * n < left ? size * n : left;
    memcpy(buf, (const char *)x->req.body + x->body_pos, k);
    x->body_pos += k;
    return k;
}

static int on_seek(void *arg, curl_off_t off, int origin)
{
    struct s3_http_xfer *x = arg;
    if (origin != SEEK_SET || off < 0 || (size_t)off > x->req.body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    x->body_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

/* Object bytes of a successful GET go into the caller's window; anything
 * else (errors, XML) into resp.body. */
static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct s3_http_xfer *x = arg;
    struct s3_http_resp *r = &x->resp;
    size_t len = size * n;
    if (x->req.dst && r->status / 100 == 2) {
        if (!r->body_started) {
            r->body_pos = r->has_range ? r->range_first : 0;
            r->body_started = 1;
        }
        uint64_t lo = x->req.dst_off, hi = lo + x->req.dst_len;
        uint64_t a = r->body_pos, b = r->body_pos + len;
        if (a < lo)
            a = lo;
        if (b > hi)
            b = hi;
        if (a < b) {
            const char *src = p + (a - r->body_pos);
            copy_uncached((char *)x->req.dst + (a - lo), src, (size_t)(b - a));
            if (x->req.tap)
                x->req.tap->fn(x->req.tap->arg, a, src, (size_t)(b - a));
            if (b - lo > r->got)
                r->got = (size_t)(b - lo);
        }
        r->body_pos += len;
        return len;
    }
    if (r->body.len + len > BODY_MAX || buf_append(&r->body, p, len) != SR_OK)
        return 0;
    return len;
}

static char *trim_ws(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'
                     || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* "bytes FIRST-LAST/TOTAL" */
static void parse_content_range(struct s3_http_resp *r, const char *v)
{
    char *end;
    if (strncmp(v, "bytes ", 6) != 0)
        return;
    unsigned long long first = strtoull(v + 6, &end, 10);
    if (end == v + 6 || *end != '-')
        return;
    const char *slash = strchr(end, '/');
    if (!slash)
        return;
    unsigned long long total = strtoull(slash + 1, &end, 10);
    if (end == slash + 1)
        return;
    r->has_range = 1;
    r->range_first = first;
    r->range_total = total;
}

size_t s3_http_header_line(char *p, size_t size, size_t n, void *arg)
{
    struct s3_http_xfer *x = arg;
    struct s3_http_resp *r = &x->resp;
    size_t len = size * n;
    char line[1024];
    size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, p, k);
    line[k] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        /* a new response (after 100 Continue, too): start over */
        const char *sp = strchr(line, ' ');
        uint64_t code = 0;
        char digits[4] = "";
        if (sp && strlen(sp) >= 4) {
            memcpy(digits, sp + 1, 3);
            if (parse_u64(&code, digits) != 0)
                code = 0;
        }
        r->status = (long)code;
        r->has_length = r->has_range = r->encoded = 0;
        r->close = strncmp(line, "HTTP/1.0 ", 9) == 0;
        r->etag[0] = r->request_id[0] = '\0';
        r->last_modified = 0;
        return len;
    }
    char *colon = strchr(line, ':');
    if (!colon)
        return len;
    *colon = '\0';
    const char *name = trim_ws(line);
    char *v = trim_ws(colon + 1);
    if (strcasecmp(name, "etag") == 0) {
        snprintf(r->etag, sizeof r->etag, "%s", v);
    } else if (strcasecmp(name, "content-length") == 0) {
        r->has_length = parse_u64(&r->content_length, v) == 0;
    } else if (strcasecmp(name, "content-range") == 0) {
        parse_content_range(r, v);
    } else if (strcasecmp(name, "last-modified") == 0) {
        time_t t = curl_getdate(v, NULL);
        r->last_modified = t > 0 ? (double)t : 0;
    } else if (strcasecmp(name, "x-amz-request-id") == 0) {
        snprintf(r->request_id, sizeof r->request_id, "%s", v);
    } else if (strcasecmp(name, "transfer-encoding") == 0) {
        r->encoded = 1;
    } else if (strcasecmp(name, "connection") == 0) {
        r->close = strcasestr(v, "close") != NULL;
    }
    return len;
}

/* At debug level: report libcurl's own silent retry of a request whose
 * reused connection turned out dead, so every retry is in the log. */
static int on_debug(CURL *e, curl_infotype type, char *p, size_t n, void *arg)
{
    (void)e;
    const struct s3_http_xfer *x = arg;
    if (type == CURLINFO_TEXT && memmem(p, n, "retrying", 8)) {
        char what[1600];
        while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
            n--;
        describe(what, sizeof what, &x->req);
        log_debug("s3: %s: %.*s", what, (int)n, p);
    }
    return 0;
}

/* ---- building one attempt --------------------------------------------- */

static int path_style(const struct s3_client *c, const char *bucket)
{
    if (c->cfg.addressing != S3_ADDR_AUTO)
        return c->cfg.addressing == S3_ADDR_PATH;
    if (c->cfg.custom_endpoint)
        return 1;
    /* virtual hosts need a DNS label: lowercase letters, digits, '-' */
    for (const char *p = bucket; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-'))
            return 1;
    return 0;
}

struct hdrs {
    size_t off[S3_HTTP_MAX_HEADERS];
    size_t n;
};

/* Append "name: value" (or "name:" to suppress a curl default). */
static sr_status hdr_add(struct s3_http_xfer *x, struct hdrs *h,
                         const char *name, const char *value)
{
    if (h->n == S3_HTTP_MAX_HEADERS)
        return SR_FAIL(SR_ERR_INTERNAL, "too many request headers");
    h->off[h->n++] = x->hdr.len;
    if (value)
        SR_TRY(buf_printf(&x->hdr, "%s: %s", name, value));
    else
        SR_TRY(buf_printf(&x->hdr, "%s:", name));
    return buf_append(&x->hdr, "", 1);
}

static sr_status sign_and_address(struct s3_http_xfer *x, struct hdrs *h)
{
    struct s3_client *c = x->sess->c;
    const struct s3_http_req *r = &x->req;
    const struct creds *cr = x->cred;
    x->path.len = x->host.len = x->url.len = x->hdr.len = 0;
    if (path_style(c, r->bucket)) {
        SR_TRY(buf_printf(&x->path, "/%s%s%s", r->bucket, r->key[0] ? "/"
                          : "", r->key));
        SR_TRY(buf_printf(&x->host, "%s", c->authority));
    } else {
        SR_TRY(buf_printf(&x->path, "/%s", r->key));
        SR_TRY(buf_printf(&x->host, "%s.%s", r->bucket, c->authority));
    }
    char amz_date[17];
    sigv4_amz_date(amz_date, time(NULL));
    const char *host = (const char *)x->host.data;
    struct sigv4_header sh[8];
    size_t n = 0;
    sh[n++] = (struct sigv4_header){ "host", host };
    sh[n++] = (struct sigv4_header){ "x-amz-content-sha256", x->payload_hash };
    sh[n++] = (struct sigv4_header){ "x-amz-date", amz_date };
    if (cr->token[0])
        sh[n++] = (struct sigv4_header){ "x-amz-security-token", cr->token };
    if (r->range[0])
        sh[n++] = (struct sigv4_header){ "range", r->range };
    if (r->if_none_match)
        sh[n++] = (struct sigv4_header){ "if-none-match", "*" };
    if (r->content_type)
        sh[n++] = (struct sigv4_header){ "content-type", r->content_type };
    const struct sigv4_request sr = {
        .method = r->method, .path = (const char *)x->path.data,
        .query = r->query, .nquery = r->nquery, .headers = sh, .nheaders = n,
        .payload_hash = x->payload_hash, .amz_date = amz_date,
        .region = c->cfg.region, .service = "s3",
    };
    SR_TRY(sigv4_sign(&x->sig, &c->keys, &sr, cr->access_key,
                      cr->secret_key));
    SR_TRY(buf_printf(&x->url, "%s://%s%s%s%s", c->scheme, host,
                      (const char *)x->sig.uri.data, x->sig.query.len ? "?"
                      : "", (const char *)x->sig.query.data));

    h->n = 0;
    for (size_t i = 0; i < n; i++)
        SR_TRY(hdr_add(x, h, sh[i].name, sh[i].value));
    SR_TRY(hdr_add(x, h, "authorization", (const char *)x->sig.authz.data));
    SR_TRY(hdr_add(x, h, "Expect", NULL));
    if (!r->content_type && strcmp(r->method, "POST") == 0)
        SR_TRY(hdr_add(x, h, "Content-Type", NULL));
    for (size_t i = 0; i < h->n; i++) {
        x->hnodes[i].data = (char *)x->hdr.data + h->off[i];
        x->hnodes[i].next = i + 1 < h->n ? &x->hnodes[i + 1] : NULL;
    }
    return SR_OK;
}

static sr_status set_method(struct s3_http_xfer *x)
{
    CURL *e = x->easy;
    const char *m = x->req.method;
    curl_off_t len = (curl_off_t)x->req.body_len;
    if (strcmp(m, "HEAD") == 0) {
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_NOBODY, 1L));
    } else if (strcmp(m, "PUT") == 0) {
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_UPLOAD, 1L));
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, len));
    } else if (strcmp(m, "POST") == 0) {
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_POST, 1L));
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, len));
    } else if (strcmp(m, "GET") != 0) {
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m));
    }
    if (strcmp(m, "PUT") == 0 || strcmp(m, "POST") == 0) {
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read));
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_READDATA, x));
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek));
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_SEEKDATA, x));
    }
    return SR_OK;
}

sr_status s3_http_conn_opts(CURL *e, const struct s3_client *c,
                           char *errbuf)
{
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_SHARE, c->share));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                                (long)CURL_HTTP_VERSION_1_1));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L));
    if (c->cfg.ca_bundle[0])
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_CAINFO, c->cfg.ca_bundle));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                                (long)(c->cfg.connect_timeout_s * 1000)));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_BUFFERSIZE,
                                (long)S3_HTTP_RECV_BUF));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf));
    return SR_OK;
}

/* Forget what an attempt received. */
static void resp_reset(struct s3_http_xfer *x)
{
    struct s3_http_resp *r = &x->resp;
    r->status = 0;
    r->has_length = r->has_range = r->body_started = 0;
    r->encoded = r->close = 0;
    r->etag[0] = r->request_id[0] = '\0';
    r->body.len = 0;
    r->got = 0;
    x->body_pos = 0;
    x->errbuf[0] = '\0';
}

/* A new attempt: credentials, signature and address. */
static sr_status sign_attempt(struct s3_http_xfer *x)
{
    resp_reset(x);
    SR_TRY(creds_chain_get(x->sess->c->creds, x->cred));
    struct hdrs h;
    return sign_and_address(x, &h);
}

/* The signed attempt as a libcurl transfer. */
static sr_status prepare_easy(struct s3_http_xfer *x)
{
    const struct s3_client *c = x->sess->c;
    CURL *e = x->easy;
    curl_easy_reset(e);
    SR_TRY(s3_http_conn_opts(e, c, x->errbuf));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_URL, (const char *)x->url.data));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hnodes));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_PRIVATE, x));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_USERAGENT, S3_HTTP_USER_AGENT));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                                (long)ceil(c->cfg.stall_timeout_s)));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_WRITEDATA, x));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_HEADERFUNCTION,
                                s3_http_header_line));
    CURL_CHECK(curl_easy_setopt(e, CURLOPT_HEADERDATA, x));
    if (log_get_level() >= LOG_DEBUG) {
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug));
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_DEBUGDATA, x));
        CURL_CHECK(curl_easy_setopt(e, CURLOPT_VERBOSE, 1L));
    }
    return set_method(x);
}

static void finish(struct s3_http_xfer *x, CURLcode cc);

/* GETs of at least this many bytes may go direct (s3_direct.h) */
#define DIRECT_MIN ((size_t)1 << 20)

/* Run x to its end over the session's direct connection, when it is a
 * large GET and the session's only transfer (a direct GET holds the
 * thread); 0 when it does not go direct or the response was declined. */
static int run_direct(struct s3_http_xfer *x)
{
    struct s3_http_sess *s = x->sess;
    if (!s->c->direct || !x->req.dst || x->req.dst_len < DIRECT_MIN ||
        strcmp(x->req.method, "GET") != 0)
        return 0;
    for (size_t i = 0; i < s->nx; i++)
        if (s->x[i] != x && (s->x[i]->state == XS_QUEUED ||
                             s->x[i]->state == XS_RUNNING))
            return 0;
    CURLcode cc = CURLE_OK;
    if (s3_direct_get(&s->direct, s->c, x, &cc) == S3_DIRECT_DECLINED) {
        resp_reset(x);
        return 0;
    }
    x->state = XS_REAPED;
    finish(x, cc);
    return 1;
}

static void start(struct s3_http_xfer *x)
{
    sr_status s = sign_attempt(x);
    if (s == SR_OK && run_direct(x))
        return;
    if (s == SR_OK)
        s = prepare_easy(x);
    if (s != SR_OK) {
        XFER_FAIL(x, s, "%s", sr_errmsg_user());
        return;
    }
    CURLMcode mc = curl_multi_add_handle(x->sess->multi, x->easy);
    if (mc != CURLM_OK) {
        XFER_FAIL(x, SR_ERR_INTERNAL, "curl_multi_add_handle: %s",
                  curl_multi_strerror(mc));
        return;
    }
    x->state = XS_RUNNING;
}

sr_status s3_http_submit(struct s3_http_xfer *x)
{
    if (x->req.body_len)
        SR_TRY(sigv4_sha256_hex(x->payload_hash, x->req.body,
                                x->req.body_len));
    else
        memcpy(x->payload_hash, SIGV4_EMPTY_SHA256, 65);
    x->attempt = 0;
    x->not_before = 0;
    x->state = XS_QUEUED;
    return SR_OK;
}

/* ---- outcome of one attempt ------------------------------------------- */

static int in_list(const char *code, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(code, list[i]) == 0)
            return 1;
    return 0;
}
#define IN_LIST(code, list) in_list((code), (list), \
                                    sizeof (list) / sizeof (list)[0])

static const char *const retry_codes[] = {
    "SlowDown", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "ServiceUnavailable", "Throttling", "ThrottlingException",
    "ThrottledException", "RequestThrottled", "RequestLimitExceeded",
    "TooManyRequestsException", "PriorRequestNotComplete",
    "BandwidthLimitExceeded", "ConditionalRequestConflict",
};
static const char *const expired_codes[] = {
    "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired",
};
static const char *const auth_codes[] = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
    "AuthorizationHeaderMalformed", "ExpiredToken", "ExpiredTokenException",
    "TokenRefreshRequired", "AccessDenied",
};

static int retryable_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static const char *default_code(long status)
{
    switch (status) {
    case 301: return "PermanentRedirect";
    case 307: return "TemporaryRedirect";
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 409: return "Conflict";
    case 412: return "PreconditionFailed";
    case 416: return "InvalidRange";
    case 429: return "TooManyRequests";
    case 500: return "InternalError";
    case 501: return "NotImplemented";
    case 502: return "BadGateway";
    case 503: return "ServiceUnavailable";
    case 504: return "GatewayTimeout";
    default: return "HTTPError";
    }
}

static sr_status map_status(long status, const char *code)
{
    if (status == 404)
        return SR_ERR_NOT_FOUND;
    if (status == 401 || status == 403 || IN_LIST(code, auth_codes))
        return SR_ERR_AUTH;
    if (status == 412)
        return SR_ERR_EXISTS;
    if (status == 416)
        return SR_ERR_FORMAT;
    return SR_ERR_REMOTE;
}

/* Requeue x after a jittered delay, or return 0 when out of attempts. */
static int schedule_retry(struct s3_http_xfer *x, const char *cause)
{
    const struct s3_config *cfg = &x->sess->c->cfg;
    if (x->attempt + 1 >= cfg->max_attempts)
        return 0;
    double cap = ldexp(cfg->retry_base_s, x->attempt);
    if (cap > cfg->retry_cap_s)
        cap = cfg->retry_cap_s;
    double delay = (double)rng_uniform(&x->sess->rng) * cap;
    x->attempt++;
    char what[1600];
    describe(what, sizeof what, &x->req);
    log_debug("s3: %s: attempt %d of %d failed (%s); retrying in %.3f s",
              what, x->attempt, cfg->max_attempts, cause, delay);
    x->not_before = now_s() + delay;
    x->state = XS_QUEUED;
    return 1;
}

static void finish_transport(struct s3_http_xfer *x, CURLcode cc)
{
    const struct s3_client *c = x->sess->c;
    char cause[CURL_ERROR_SIZE + 64];
    snprintf(cause, sizeof cause, "%s", x->errbuf[0] ? x->errbuf
             : curl_easy_strerror(cc));
    if (retryable_curl(cc) && schedule_retry(x, cause))
        return;
    const char *host = (const char *)x->host.data;
    if (cc == CURLE_PEER_FAILED_VERIFICATION)
        XFER_FAIL(x, SR_ERR_NET, "TLS certificate of %s://%s not trusted "
                  "(%s); set AWS_CA_BUNDLE to a CA bundle that holds its "
                  "issuer", c->scheme, host, cause);
    else if (cc == CURLE_SSL_CACERT_BADFILE)
        XFER_FAIL(x, SR_ERR_NET, "cannot use the CA bundle %s (%s)",
                  c->cfg.ca_bundle[0] ? c->cfg.ca_bundle : "of the system",
                  cause);
    else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
        XFER_FAIL(x, SR_ERR_NET, "cannot reach endpoint %s://%s: %s (gave "
                  "up after %d attempt%s)", c->scheme, host, cause,
                  x->attempt + 1, x->attempt ? "s" : "");
    else if (retryable_curl(cc))
        XFER_FAIL(x, SR_ERR_NET, "connection to endpoint %s://%s failed: %s "
                  "(gave up after %d attempt%s)", c->scheme, host, cause,
                  x->attempt + 1, x->attempt ? "s" : "");
    else
        XFER_FAIL(x, SR_ERR_NET, "transfer from %s://%s failed: %s",
                  c->scheme, host, cause);
}

static void finish(struct s3_http_xfer *x, CURLcode cc)
{
    struct s3_http_resp *r = &x->resp;
    if (cc != CURLE_OK) {
        finish_transport(x, cc);
        return;
    }
    struct s3_xml_error e;
    long status = r->status;
    int is_error = status / 100 != 2;
    if (r->body.len && (is_error || x->req.error_in_200))
        is_error |= s3_xml_error_parse(&e, r->body.data, r->body.len);
    else
        memset(&e, 0, sizeof e);
    if (!is_error) {
        x->result = SR_OK;
        x->state = XS_DONE;
        return;
    }
    const char *code = e.code[0] ? e.code : default_code(status);
    const char *rid = e.request_id[0] ? e.request_id : r->request_id;
    char cause[160];
    snprintf(cause, sizeof cause, "%ld %s", status, code);
    int expired = IN_LIST(code, expired_codes);
    if (expired)
        creds_chain_invalidate(x->sess->c->creds);
    if ((status >= 500 || status == 429 || expired ||
         IN_LIST(code, retry_codes)) && schedule_retry(x, cause))
        return;
    char tries[48] = "";
    if (x->attempt > 0)
        snprintf(tries, sizeof tries, "; gave up after %d attempts",
                 x->attempt + 1);
    sr_status st = status / 100 == 2 ? SR_ERR_REMOTE : map_status(status, code);
    /* a refusal: say whose keys were refused (never the keys) */
    char whose[128] = "";
    if (st == SR_ERR_AUTH) {
        char src[64];
        creds_chain_source(x->sess->c->creds, src, sizeof src);
        if (src[0])
            snprintf(whose, sizeof whose, "; access denied to the "
                     "credentials from %s", src);
    }
    XFER_FAIL(x, st, "%ld %s%s%s (request id %s%s%s)", status, code,
              e.message[0] ? ": " : "", e.message, rid[0] ? rid : "none",
              tries, whose);
}

/* ---- the event loop --------------------------------------------------- */

static void start_due(struct s3_http_sess *s, double now)
{
    for (size_t i = 0; i < s->nx; i++) {
        struct s3_http_xfer *x = s->x[i];
        if (x->state == XS_QUEUED && x->not_before <= now)
            start(x);
    }
}

static sr_status reap(struct s3_http_sess *s)
{
    int running = 0, left = 0;
    CURLMcode mc = curl_multi_perform(s->multi, &running);
    if (mc != CURLM_OK)
        return SR_FAIL(SR_ERR_NET, "curl_multi_perform: %s",
                       curl_multi_strerror(mc));
    CURLMsg *m;
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode cc = m->data.result;
        struct s3_http_xfer *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(s->multi, e);
        x->state = XS_REAPED;
        finish(x, cc);
    }
    return SR_OK;
}

sr_status s3_http_wait(struct s3_http_sess *s, double max_s,
                       struct s3_http_xfer **done)
{
    double deadline = max_s < 0 ? INFINITY : now_s() + max_s;
    *done = NULL;
    for (;;) {
        start_due(s, now_s());
        SR_TRY(reap(s));
        int active = 0;
        double next = INFINITY;     /* earliest retry still waiting */
        for (size_t i = 0; i < s->nx; i++) {
            struct s3_http_xfer *x = s->x[i];
            if (x->state == XS_DONE) {
                x->state = XS_REAPED;
                *done = x;
                return SR_OK;
            }
            if (x->state == XS_QUEUED && x->not_before < next)
                next = x->not_before;
            active |= x->state == XS_QUEUED || x->state == XS_RUNNING;
        }
        double now = now_s();
        if (!active || now >= deadline)
            return SR_OK;
        double until = next < deadline ? next : deadline;
        double wait = until - now;
        if (wait > 1.0)
            wait = 1.0;
        if (wait < 0)
            wait = 0;
        CURLMcode mc = curl_multi_poll(s->multi, NULL, 0,
                                       (int)ceil(wait * 1000), NULL);
        if (mc != CURLM_OK)
            return SR_FAIL(SR_ERR_NET, "curl_multi_poll: %s",
                           curl_multi_strerror(mc));
    }
}

sr_status s3_http_run(struct s3_http_xfer *x)
{
    SR_TRY(s3_http_submit(x));
    struct s3_http_xfer *done;
    do {
        SR_TRY(s3_http_wait(x->sess, -1, &done));
        if (!done)
            return SR_FAIL(SR_ERR_INTERNAL, "s3: transfer vanished");
    } while (done != x);
    return s3_http_status(x);
}
