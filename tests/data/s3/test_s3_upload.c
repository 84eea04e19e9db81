/*
 * test_s3_upload.c: the streaming writer against a scripted loopback
 * server: a small object is one PutObject; a larger one is a multipart
 * upload whose CompleteMultipartUpload lists every part in order; an
 * <Error> inside a 200 answer to the completion is retried when transient
 * and fails otherwise; a failed part, a refused completion (412) and an
 * explicit abort all end with AbortMultipartUpload.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/s3/s3.h"
#include "data/s3/s3_upload.h"
#include "stub_server.h"

#define MiB ((size_t)1 << 20)

struct world {
    int creates, parts, completes, aborts, puts;
    size_t put_len;
    int fail_part;              /* answer this part number with 403 */
    const char *complete[4];    /* successive completion answers (200) */
    int complete_status[4];     /* their statuses (0: 200) */
    char head_etag[S3_ETAG_MAX];  /* ETag a HEAD answers with */
    int heads;
    char complete_body[4096];   /* the last completion request body */
    char inm[8];                /* If-None-Match of the last completion */
};

static struct world w;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct stub_server srv;

/* "\"<hex MD5>\"" of p[0..n), as S3 tags a part. */
static void md5_etag(char out[S3_ETAG_MAX], const void *p, size_t n)
{
    uint8_t md[16];
    unsigned int len = 0;
    EVP_Digest(p, n, md, &len, EVP_md5(), NULL);
    out[0] = '"';
    for (int i = 0; i < 16; i++)
        snprintf(out + 1 + 2 * i, 3, "%02x", md[i]);
    snprintf(out + 33, S3_ETAG_MAX - 33, "\"");
}

static void handle(void *arg, const struct stub_req *r, struct stub_reply *out)
{
    (void)arg;
    const char *q = strchr(r->target, '?');
    q = q ? q + 1 : "";
    pthread_mutex_lock(&mu);
    if (strcmp(r->method, "POST") == 0 && strcmp(q, "uploads=") == 0) {
        w.creates++;
        snprintf(out->body, sizeof out->body, "<InitiateMultipartUpload"
                 "Result><UploadId>UP1</UploadId></InitiateMultipartUpload"
                 "Result>");
    } else if (strcmp(r->method, "PUT") == 0 && strstr(q, "partNumber=")) {
        int n = (int)strtol(strstr(q, "partNumber=") + 11, NULL, 10);
        w.parts++;
        if (n == w.fail_part) {
            out->status = 403;
            snprintf(out->body, sizeof out->body, "<Error><Code>AccessDenied"
                     "</Code><Message>no</Message></Error>");
        } else {
            char etag[S3_ETAG_MAX];
            md5_etag(etag, r->body, r->body_len);
            snprintf(out->headers, sizeof out->headers, "ETag: %s\r\n",
                     etag);
        }
    } else if (strcmp(r->method, "POST") == 0 &&
               strcmp(q, "uploadId=UP1") == 0) {
        int i = w.completes < 4 ? w.completes : 3;
        const char *a = w.complete[i];
        w.completes++;
        snprintf(w.complete_body, sizeof w.complete_body, "%s",
                 (const char *)r->body);
        stub_header(r, "If-None-Match", w.inm, sizeof w.inm);
        out->status = w.complete_status[i] ? w.complete_status[i] : 200;
        snprintf(out->body, sizeof out->body, "%s", a ? a :
                 "<CompleteMultipartUploadResult><ETag>\"x-3\"</ETag>"
                 "</CompleteMultipartUploadResult>");
    } else if (strcmp(r->method, "DELETE") == 0 &&
               strcmp(q, "uploadId=UP1") == 0) {
        w.aborts++;
        out->status = 204;
    } else if (strcmp(r->method, "HEAD") == 0) {
        w.heads++;
        snprintf(out->headers, sizeof out->headers, "ETag: %s\r\n",
                 w.head_etag);
    } else if (strcmp(r->method, "PUT") == 0 && !*q) {
        w.puts++;
        w.put_len = r->body_len;
    } else {
        out->status = 400;
    }
    pthread_mutex_unlock(&mu);
}

static int group_setup(void **state)
{
    (void)state;
    stub_start(&srv, handle, NULL);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", srv.port);
    setenv("AWS_ENDPOINT_URL_S3", ep, 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret-test-key", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("SPOTRUN_S3_RETRY_BASE_MS", "5", 1);
    setenv("SPOTRUN_S3_PART_SIZE", "5MiB", 1);
    setenv("SPOTRUN_S3_CONCURRENCY", "2", 1);
    /* every write streams as parts unless a test says otherwise */
    setenv("SPOTRUN_S3_MULTIPART_THRESHOLD", "0", 1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stub_stop(&srv);
    return 0;
}

static struct s3_client *c;
static uint8_t *data;

static int setup(void **state)
{
    (void)state;
    pthread_mutex_lock(&mu);
    memset(&w, 0, sizeof w);
    pthread_mutex_unlock(&mu);
    struct s3_config cfg;
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_int_equal(s3_client_open(&c, &cfg), SR_OK);
    data = malloc(12 * MiB);
    for (size_t i = 0; i < 12 * MiB; i++)
        data[i] = (uint8_t)(i * 7);
    sr_clear_error();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    s3_client_close(c);
    free(data);
    return 0;
}

static struct s3_upload *open_upload(int flags)
{
    struct s3_upload *u;
    assert_int_equal(s3_upload_open(&u, c, "bkt", "obj", flags), SR_OK);
    return u;
}

static void write_in_pieces(struct s3_upload *u, size_t n, sr_status want)
{
    sr_status s = SR_OK;
    for (size_t off = 0; off < n && s == SR_OK; off += 300000)
        s = s3_upload_write(u, data + off, n - off < 300000 ? n - off
                                                            : 300000);
    assert_int_equal(s, want);
}

/* Below the multipart threshold an object is one PutObject; past it the
 * held bytes become the first parts of a multipart upload. */
static void test_s3_upload__threshold_picks_put_or_parts(void **state)
{
    (void)state;
    struct s3_config cfg;
    struct s3_client *tc;
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    cfg.multipart_threshold = 6 * MiB;
    assert_int_equal(s3_client_open(&tc, &cfg), SR_OK);
    struct s3_upload *u;
    assert_int_equal(s3_upload_open(&u, tc, "bkt", "obj", 0), SR_OK);
    write_in_pieces(u, 6 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_OK);
    assert_int_equal(w.puts, 1);
    assert_int_equal(w.put_len, 6 * MiB);
    assert_int_equal(w.creates, 0);

    assert_int_equal(s3_upload_open(&u, tc, "bkt", "obj", 0), SR_OK);
    write_in_pieces(u, 12 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_OK);
    assert_int_equal(w.puts, 1);
    assert_int_equal(w.creates, 1);
    assert_int_equal(w.parts, 3);       /* 5 + 5 + 2 MiB */
    assert_int_equal(w.completes, 1);
    s3_client_close(tc);
}

static void test_s3_upload__parts_then_complete(void **state)
{
    (void)state;
    struct s3_upload *u = open_upload(S3_IF_NONE_MATCH);
    write_in_pieces(u, 12 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_OK);
    assert_int_equal(w.creates, 1);
    assert_int_equal(w.parts, 3);
    assert_int_equal(w.completes, 1);
    assert_int_equal(w.aborts, 0);
    assert_string_equal(w.inm, "*");
    /* parts in order, each with the ETag its upload returned (quotes
     * escaped by the XML writer) */
    const char *prev = w.complete_body;
    for (int i = 0; i < 3; i++) {
        char etag[S3_ETAG_MAX], want[S3_ETAG_MAX + 64];
        md5_etag(etag, data + (size_t)i * 5 * MiB, i < 2 ? 5 * MiB : 2 * MiB);
        etag[33] = '\0';
        snprintf(want, sizeof want, "<PartNumber>%d</PartNumber><ETag>&quot;"
                 "%s&quot;</ETag>", i + 1, etag + 1);
        const char *at = strstr(w.complete_body, want);
        assert_non_null(at);
        assert_true(at >= prev);
        prev = at;
    }
}

static void test_s3_upload__transient_error_in_200_is_retried(void **state)
{
    (void)state;
    w.complete[0] = "<?xml version=\"1.0\"?>\n  \n<Error><Code>InternalError"
                    "</Code><Message>We encountered an internal error."
                    "</Message></Error>";
    struct s3_upload *u = open_upload(0);
    write_in_pieces(u, 11 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_OK);
    assert_int_equal(w.completes, 2);
    assert_int_equal(w.aborts, 0);
}

static void test_s3_upload__error_in_200_fails_and_aborts(void **state)
{
    (void)state;
    w.complete[0] = "<Error><Code>InvalidPart</Code><Message>One or more of "
                    "the specified parts could not be found.</Message>"
                    "</Error>";
    struct s3_upload *u = open_upload(0);
    write_in_pieces(u, 11 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_ERR_REMOTE);
    assert_non_null(strstr(sr_errmsg(), "s3://bkt/obj: CompleteMultipart"
                           "Upload: 200 InvalidPart: One or more"));
    assert_int_equal(w.completes, 1);
    assert_int_equal(w.aborts, 1);
}

static void test_s3_upload__failed_part_aborts(void **state)
{
    (void)state;
    w.fail_part = 2;
    struct s3_upload *u = open_upload(0);
    /* the failure shows in a later write or, at the latest, in commit */
    sr_status s = SR_OK;
    for (size_t off = 0; off < 12 * MiB && s == SR_OK; off += MiB)
        s = s3_upload_write(u, data + off, MiB);
    if (s == SR_OK)
        s = s3_upload_commit(u);
    else
        assert_int_equal(s3_upload_commit(u), SR_ERR_AUTH);
    assert_int_equal(s, SR_ERR_AUTH);
    assert_int_equal(w.completes, 0);
    assert_int_equal(w.aborts, 1);
}

static void test_s3_upload__precondition_failed_on_complete(void **state)
{
    (void)state;
    w.complete_status[0] = 412;
    w.complete[0] = "<Error><Code>PreconditionFailed</Code><Message>At least "
                    "one of the pre-conditions you specified did not hold"
                    "</Message></Error>";
    struct s3_upload *u = open_upload(S3_IF_NONE_MATCH);
    write_in_pieces(u, 6 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_ERR_EXISTS);
    assert_int_equal(w.completes, 1);
    assert_int_equal(w.aborts, 1);
}

/* The first completion is applied but answered 503; its retry meets the
 * object and gets 412: the object's ETag tells whose it is. */
static void test_s3_upload__retried_complete_checks_own_write(void **state)
{
    (void)state;
    w.complete_status[0] = 503;
    w.complete[0] = "<Error><Code>SlowDown</Code><Message>Reduce your request "
                    "rate.</Message></Error>";
    w.complete_status[1] = 412;
    w.complete[1] = "<Error><Code>PreconditionFailed</Code><Message>At least "
                    "one of the pre-conditions you specified did not hold"
                    "</Message></Error>";
    /* the S3 ETag of two 5 MiB parts and a 1 MiB part */
    uint8_t md5s[48];
    unsigned int len;
    for (int i = 0; i < 3; i++)
        EVP_Digest(data + (size_t)i * 5 * MiB, i < 2 ? 5 * MiB : MiB,
                   md5s + 16 * i, &len, EVP_md5(), NULL);
    md5_etag(w.head_etag, md5s, sizeof md5s);
    snprintf(w.head_etag + 33, sizeof w.head_etag - 33, "-3\"");
    struct s3_upload *u = open_upload(S3_IF_NONE_MATCH);
    write_in_pieces(u, 11 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_OK);
    assert_int_equal(w.completes, 2);
    assert_int_equal(w.heads, 1);
    assert_int_equal(w.aborts, 0);

    /* not ours */
    pthread_mutex_lock(&mu);
    memset(&w, 0, sizeof w);
    w.complete_status[0] = 503;
    w.complete[0] = "<Error><Code>SlowDown</Code><Message>x</Message></Error>";
    w.complete_status[1] = 412;
    w.complete[1] = "<Error><Code>PreconditionFailed</Code><Message>y"
                    "</Message></Error>";
    snprintf(w.head_etag, sizeof w.head_etag, "\"abc-3\"");
    pthread_mutex_unlock(&mu);
    u = open_upload(S3_IF_NONE_MATCH);
    write_in_pieces(u, 11 * MiB, SR_OK);
    assert_int_equal(s3_upload_commit(u), SR_ERR_EXISTS);
    assert_non_null(strstr(sr_errmsg(), "CompleteMultipartUpload: 412 "
                           "PreconditionFailed: y"));
    assert_int_equal(w.aborts, 1);
}

static void test_s3_upload__abort(void **state)
{
    (void)state;
    struct s3_upload *u = open_upload(0);
    write_in_pieces(u, 6 * MiB, SR_OK);
    s3_upload_abort(u);
    assert_int_equal(w.creates, 1);
    assert_int_equal(w.aborts, 1);
    assert_int_equal(w.completes, 0);
    /* nothing sent yet: nothing to abort */
    u = open_upload(0);
    write_in_pieces(u, 1000, SR_OK);
    s3_upload_abort(u);
    assert_int_equal(w.creates, 1);
    assert_int_equal(w.puts, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_s3_upload__threshold_picks_put_or_parts),
        T(test_s3_upload__parts_then_complete),
        T(test_s3_upload__transient_error_in_200_is_retried),
        T(test_s3_upload__error_in_200_fails_and_aborts),
        T(test_s3_upload__failed_part_aborts),
        T(test_s3_upload__precondition_failed_on_complete),
        T(test_s3_upload__retried_complete_checks_own_write),
        T(test_s3_upload__abort),
#undef T
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
