/*
 * s3_upload.c: the streaming writer. It owns one session for its whole
 * life; up to `concurrency` UploadPart transfers run in it while write()
 * fills the next part buffer, and each write() gives the transfers a
 * non-blocking turn so they progress between calls. Part buffers are
 * recycled, so at most concurrency + 1 of them exist. The first failure
 * sticks: later writes fail at once and commit aborts the upload.
 *
 * An object that ends within the multipart threshold (64 MiB by default)
 * goes as one PutObject: bytes are held until the threshold is crossed,
 * and only then does the multipart upload start, with the held bytes as
 * its first parts. One request instead of a dozen, and no server-side
 * assembly of parts.
 */
#include "s3_upload.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "s3_http.h"
#include "s3_xml.h"

#define PUMP_EVERY ((size_t)1 << 20)   /* bytes written between turns */

struct s3_upload {
    struct s3_client *c;
    struct s3_http_sess *sess;
    char bucket[256];
    char key[1100];
    int flags;
    size_t part_size;
    size_t threshold;
    int concurrency;
    struct sr_buf head;         /* bytes held before multipart starts */
    int multipart;              /* the threshold was crossed */
    char upload_id[1024];       /* "" until the multipart upload exists */
    uint8_t *cur;               /* the part being filled */
    size_t cur_len;
    uint8_t **bufs;             /* every part buffer made so far */
    size_t nbufs;
    uint8_t **spare;            /* those not in use */
    size_t nspare;
    char (*etags)[S3_ETAG_MAX]; /* by part number - 1 */
    size_t nparts;
    size_t cap_parts;
    int inflight;
    size_t since_pump;
    sr_status failed;
    struct sr_buf xml;
};

sr_status s3_upload_open(struct s3_upload **out, struct s3_client *c,
                         const char *bucket, const char *key, int flags)
{
    const struct s3_config *cfg = s3_client_config(c);
    struct s3_upload *u = calloc(1, sizeof *u);
    if (!u)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    u->bufs = calloc((size_t)cfg->concurrency + 1, sizeof *u->bufs);
    u->spare = calloc((size_t)cfg->concurrency + 1, sizeof *u->spare);
    if (!u->bufs || !u->spare) {
        free(u->bufs);
        free(u->spare);
        free(u);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    }
    if (str_copy(u->bucket, sizeof u->bucket, bucket) ||
        str_copy(u->key, sizeof u->key, key)) {
        free(u->bufs);
        free(u->spare);
        free(u);
        return SR_FAIL(SR_ERR_USAGE, "s3://%s/%s: name too long", bucket,
                       key);
    }
    u->c = c;
    u->flags = flags;
    u->part_size = cfg->part_size;
    u->threshold = cfg->multipart_threshold;
    u->concurrency = cfg->concurrency;
    *out = u;
    return SR_OK;
}

static void upload_free(struct s3_upload *u)
{
    if (u->sess)
        s3_http_sess_put(u->sess);
    for (size_t i = 0; i < u->nbufs; i++)
        free(u->bufs[i]);
    free(u->bufs);
    free(u->spare);
    free(u->etags);
    buf_free(&u->xml);
    buf_free(&u->head);
    free(u);
}

/* Abort the multipart upload on S3. Its failure is logged, not returned,
 * so the caller's error stays the one reported. */
static void abort_remote(struct s3_upload *u)
{
    struct s3_http_xfer *x, *d = NULL;
    s3_http_cancel_all(u->sess);
    u->inflight = 0;
    if (!u->upload_id[0] || s3_http_xfer_new(u->sess, &x) != SR_OK)
        return;
    x->req.method = "DELETE";
    x->req.bucket = u->bucket;
    x->req.key = u->key;
    x->req.what = "AbortMultipartUpload";
    x->req.query[0] = (struct sigv4_param){ "uploadId", u->upload_id };
    x->req.nquery = 1;
    if (s3_http_submit(x) == SR_OK)
        while (d != x && s3_http_wait(u->sess, -1, &d) == SR_OK && d)
            ;
    if (d != x)
        log_warn("s3://%s/%s: could not abort multipart upload %s; its parts "
                 "stay until a lifecycle rule removes them", u->bucket,
                 u->key, u->upload_id);
    else if (x->result != SR_OK && x->result != SR_ERR_NOT_FOUND)
        log_warn("%s; the upload's parts stay until a lifecycle rule removes "
                 "them", x->msg);
    else
        log_debug("s3://%s/%s: aborted multipart upload", u->bucket, u->key);
    s3_http_release(x);
    u->upload_id[0] = '\0';
}

static sr_status create_upload(struct s3_upload *u)
{
    struct s3_http_xfer *x;
    SR_TRY(s3_http_sess_get(u->c, &u->sess));
    SR_TRY(s3_http_xfer_new(u->sess, &x));
    x->req.method = "POST";
    x->req.bucket = u->bucket;
    x->req.key = u->key;
    x->req.what = "CreateMultipartUpload";
    x->req.query[0] = (struct sigv4_param){ "uploads", "" };
    x->req.nquery = 1;
    x->req.content_type = "application/octet-stream";
    sr_status s = s3_http_run(x);
    if (s == SR_OK)
        s = s3_xml_upload_id(u->upload_id, sizeof u->upload_id,
                             x->resp.body.data, x->resp.body.len);
    s3_http_release(x);
    if (s == SR_OK)
        log_debug("s3://%s/%s: started multipart upload", u->bucket, u->key);
    return s;
}

/* Take one finished part transfer (waiting up to max_s; < 0 = until one
 * ends): record its ETag and recycle its buffer. */
static sr_status harvest(struct s3_upload *u, double max_s)
{
    struct s3_http_xfer *d;
    SR_TRY(s3_http_wait(u->sess, max_s, &d));
    if (!d) {
        if (max_s < 0)
            return SR_FAIL(SR_ERR_INTERNAL, "s3: an upload lost its parts");
        return SR_OK;
    }
    u->inflight--;
    u->spare[u->nspare++] = (uint8_t *)d->req.body;
    sr_status s = s3_http_status(d);
    size_t idx = (size_t)d->req.tag;
    if (s == SR_OK && !d->resp.etag[0])
        s = SR_FAIL(SR_ERR_REMOTE, "s3://%s/%s: UploadPart %zu: no ETag in "
                    "the response", u->bucket, u->key, idx + 1);
    if (s == SR_OK)
        memcpy(u->etags[idx], d->resp.etag, S3_ETAG_MAX);
    s3_http_release(d);
    return s;
}

static sr_status send_part(struct s3_upload *u)
{
    if (!u->upload_id[0])
        SR_TRY(create_upload(u));
    if (u->nparts == S3_MAX_PARTS)
        return SR_FAIL(SR_ERR_USAGE, "s3://%s/%s: more than %d parts; raise "
                       "SPOTRUN_S3_PART_SIZE (now %zu bytes)", u->bucket,
                       u->key, S3_MAX_PARTS, u->part_size);
    while (u->inflight >= u->concurrency)
        SR_TRY(harvest(u, -1));
    if (u->nparts == u->cap_parts) {
        size_t cap = u->cap_parts ? u->cap_parts * 2 : 64;
        char (*v)[S3_ETAG_MAX] = realloc(u->etags, cap * sizeof *v);
        if (!v)
            return SR_FAIL(SR_ERR_NOMEM, "out of memory");
        u->etags = v;
        u->cap_parts = cap;
    }
    struct s3_http_xfer *x;
    SR_TRY(s3_http_xfer_new(u->sess, &x));
    x->req.method = "PUT";
    x->req.bucket = u->bucket;
    x->req.key = u->key;
    x->req.what = "UploadPart";
    snprintf(x->req.num, sizeof x->req.num, "%zu", u->nparts + 1);
    x->req.query[0] = (struct sigv4_param){ "partNumber", x->req.num };
    x->req.query[1] = (struct sigv4_param){ "uploadId", u->upload_id };
    x->req.nquery = 2;
    x->req.body = u->cur;
    x->req.body_len = u->cur_len;
    x->req.tag = u->nparts;
    u->etags[u->nparts][0] = '\0';
    sr_status s = s3_http_submit(x);
    if (s != SR_OK) {
        s3_http_release(x);
        return s;
    }
    u->inflight++;
    u->nparts++;
    u->cur = NULL;
    u->cur_len = 0;
    u->since_pump = 0;
    return SR_OK;
}

/* Let running parts progress and collect those that ended. */
static sr_status pump(struct s3_upload *u)
{
    int before;
    do {
        before = u->inflight;
        SR_TRY(harvest(u, 0));
    } while (u->inflight < before && u->inflight > 0);
    u->since_pump = 0;
    return SR_OK;
}

/* A part buffer for cur: a recycled one, or a new one while fewer than
 * concurrency + 1 exist (no more can be in use at once). */
static sr_status take_buffer(struct s3_upload *u)
{
    if (u->nspare) {
        u->cur = u->spare[--u->nspare];
        return SR_OK;
    }
    if (u->nbufs > (size_t)u->concurrency)
        return SR_FAIL(SR_ERR_INTERNAL, "s3: no free part buffer");
    u->cur = big_alloc(u->part_size);
    if (!u->cur)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory for a %zu-byte part "
                       "buffer", u->part_size);
    u->bufs[u->nbufs++] = u->cur;
    return SR_OK;
}

static sr_status write_parts(struct s3_upload *u, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (!u->cur)
            SR_TRY(take_buffer(u));
        size_t k = u->part_size - u->cur_len;
        if (k > n)
            k = n;
        memcpy(u->cur + u->cur_len, p, k);
        u->cur_len += k;
        u->since_pump += k;
        p += k;
        n -= k;
        if (u->cur_len == u->part_size)
            SR_TRY(send_part(u));
    }
    if (u->inflight > 0 && u->since_pump >= PUMP_EVERY)
        SR_TRY(pump(u));
    return SR_OK;
}

static sr_status write_some(struct s3_upload *u, const uint8_t *p, size_t n)
{
    if (!u->multipart) {
        if (u->head.len + n <= u->threshold)
            return buf_append(&u->head, p, n);
        u->multipart = 1;
        sr_status s = write_parts(u, u->head.data, u->head.len);
        buf_free(&u->head);
        SR_TRY(s);
    }
    return write_parts(u, p, n);
}

sr_status s3_upload_write(struct s3_upload *u, const void *p, size_t n)
{
    if (u->failed != SR_OK)
        return SR_FAIL(u->failed, "s3://%s/%s: write after a failed upload",
                       u->bucket, u->key);
    sr_status s = write_some(u, p, n);
    if (s != SR_OK)
        u->failed = s;
    return s;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The ETag S3 gives the completed object when every part's ETag is its
 * MD5 (no SSE-KMS): "hex(MD5(md5_1 .. md5_n))-n". 0 when it cannot be
 * known. */
static int multipart_etag(char out[S3_ETAG_MAX], const struct s3_upload *u)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    for (size_t i = 0; ok && i < u->nparts; i++) {
        const char *e = u->etags[i];
        uint8_t md[16];
        ok = strlen(e) == 34 && e[0] == '"' && e[33] == '"';
        for (int k = 0; ok && k < 16; k++) {
            int hi = hexval(e[1 + 2 * k]), lo = hexval(e[2 + 2 * k]);
            ok = hi >= 0 && lo >= 0;
            md[k] = (uint8_t)(hi * 16 + lo);
        }
        ok = ok && EVP_DigestUpdate(ctx, md, 16);
    }
    uint8_t sum[16];
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, sum, &len) && len == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return 0;
    out[0] = '"';
    for (int k = 0; k < 16; k++)
        snprintf(out + 1 + 2 * k, 3, "%02x", sum[k]);
    snprintf(out + 33, S3_ETAG_MAX - 33, "-%zu\"", u->nparts);
    return 1;
}

static sr_status complete(struct s3_upload *u)
{
    struct s3_http_xfer *x;
    SR_TRY(s3_xml_complete_body(&u->xml, (const char (*)[S3_ETAG_MAX])
                                u->etags, u->nparts));
    SR_TRY(s3_http_xfer_new(u->sess, &x));
    x->req.method = "POST";
    x->req.bucket = u->bucket;
    x->req.key = u->key;
    x->req.what = "CompleteMultipartUpload";
    x->req.query[0] = (struct sigv4_param){ "uploadId", u->upload_id };
    x->req.nquery = 1;
    x->req.body = u->xml.data;
    x->req.body_len = u->xml.len;
    x->req.content_type = "application/xml";
    x->req.if_none_match = (u->flags & S3_IF_NONE_MATCH) != 0;
    x->req.error_in_200 = 1;
    sr_status s = s3_http_run(x);
    char etag[S3_ETAG_MAX];
    if (s == SR_ERR_EXISTS && x->attempt > 0 && multipart_etag(etag, u) &&
        s3_written_by_us(u->c, u->bucket, u->key, etag)) {
        s = SR_OK;
    } else if (s == SR_ERR_EXISTS) {
        s = s3_http_status(x);
    }
    s3_http_release(x);
    return s;
}

sr_status s3_upload_commit(struct s3_upload *u)
{
    sr_status s = u->failed;
    if (s != SR_OK) {
        s = SR_FAIL(s, "s3://%s/%s: commit after a failed upload", u->bucket,
                    u->key);
    } else if (!u->multipart) {
        s = s3_put(u->c, u->bucket, u->key, u->head.len ? u->head.data
                   : (const uint8_t *)"", u->head.len, u->flags);
    } else {
        if (u->cur_len > 0)
            s = send_part(u);
        while (s == SR_OK && u->inflight > 0)
            s = harvest(u, -1);
        if (s == SR_OK)
            s = complete(u);
        if (s == SR_OK)
            log_debug("s3://%s/%s: completed %zu parts", u->bucket, u->key,
                      u->nparts);
    }
    if (s != SR_OK && u->sess)
        abort_remote(u);
    upload_free(u);
    return s;
}

void s3_upload_abort(struct s3_upload *u)
{
    if (!u)
        return;
    if (u->sess)
        abort_remote(u);
    upload_free(u);
}
