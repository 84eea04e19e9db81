/*
 * test_s3.c: the S3 client against a scripted loopback server: settings
 * from the environment, the shape of signed requests (path-style and
 * virtual-hosted), retries with backoff on throttling and server errors,
 * bounded attempts, 4xx errors surfacing at once with S3's code and
 * message, ExpiredToken refreshing temporary credentials, short reads,
 * listing continuation, parallel ranged reads and an unreachable endpoint.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "data/s3/s3.h"
#include "data/s3/s3_http.h"
#include "data/storage.h"
#include "stub_server.h"

#define MAX_SEEN 64

/* One scripted answer; the last one repeats. */
struct step {
    int status;
    const char *body;
    const char *headers;
};

struct script {
    pthread_mutex_t mu;
    const struct step *steps;
    int nsteps;
    int n;
    char target[MAX_SEEN][2048];
    char method[MAX_SEEN][16];
    char host[MAX_SEEN][128];
    char range[MAX_SEEN][64];
    char auth[MAX_SEEN][512];
    char token[MAX_SEEN][128];
    char sha[MAX_SEEN][80];
    char inm[MAX_SEEN][8];
    char ua[MAX_SEEN][64];
    const uint8_t *object;      /* when set, GETs after the scripted steps
                                   are served from it */
    size_t object_len;
    int whole;                  /* ... ignoring Range: 200, every byte */
    int truncate_first;         /* ... the first ones cut short */
    int delay_ms;               /* every reply waits this long */
    const char *more_headers;   /* added to object replies */
};

static struct script sc;
static struct stub_server srv;

static void record(const struct stub_req *r, int i)
{
    snprintf(sc.target[i], sizeof sc.target[i], "%s", r->target);
    snprintf(sc.method[i], sizeof sc.method[i], "%s", r->method);
    stub_header(r, "Host", sc.host[i], sizeof sc.host[i]);
    stub_header(r, "Range", sc.range[i], sizeof sc.range[i]);
    stub_header(r, "Authorization", sc.auth[i], sizeof sc.auth[i]);
    stub_header(r, "x-amz-security-token", sc.token[i], sizeof sc.token[i]);
    stub_header(r, "x-amz-content-sha256", sc.sha[i], sizeof sc.sha[i]);
    stub_header(r, "If-None-Match", sc.inm[i], sizeof sc.inm[i]);
    stub_header(r, "User-Agent", sc.ua[i], sizeof sc.ua[i]);
}

static void serve_range(struct stub_reply *out, const char *range)
{
    unsigned long long a = 0, b = 0;
    if (sscanf(range, "bytes=%llu-%llu", &a, &b) != 2 || a >= sc.object_len) {
        out->status = 416;
        return;
    }
    if (b >= sc.object_len)
        b = sc.object_len - 1;
    out->status = 206;
    out->data = sc.object + a;
    out->data_len = (size_t)(b - a + 1);
    snprintf(out->headers, sizeof out->headers, "Content-Range: bytes "
             "%llu-%llu/%zu\r\n", a, b, sc.object_len);
}

static void handle(void *arg, const struct stub_req *r, struct stub_reply *out)
{
    (void)arg;
    pthread_mutex_lock(&sc.mu);
    int i = sc.n < MAX_SEEN ? sc.n : MAX_SEEN - 1;
    sc.n++;
    record(r, i);
    out->delay_ms = sc.delay_ms;
    if (strncmp(r->target, "/creds", 6) == 0) {
        out->status = 200;
        snprintf(out->body, sizeof out->body, "{\"AccessKeyId\":\"ASIA%d\","
                 "\"SecretAccessKey\":\"s\",\"Token\":\"tok-%d\","
                 "\"Expiration\":\"2099-01-01T00:00:00Z\"}", i, i);
    } else if (sc.object && i >= sc.nsteps) {
        if (sc.whole) {
            out->data = sc.object;
            out->data_len = sc.object_len;
        } else {
            serve_range(out, sc.range[i]);
        }
        out->truncated = i - sc.nsteps < sc.truncate_first;
        if (sc.more_headers)
            snprintf(out->headers + strlen(out->headers),
                     sizeof out->headers - strlen(out->headers), "%s",
                     sc.more_headers);
    } else {
        const struct step *st = &sc.steps[i < sc.nsteps ? i : sc.nsteps - 1];
        out->status = st->status;
        snprintf(out->body, sizeof out->body, "%s", st->body ? st->body : "");
        snprintf(out->headers, sizeof out->headers, "%s",
                 st->headers ? st->headers : "");
    }
    pthread_mutex_unlock(&sc.mu);
}

static void script(const struct step *steps, int n)
{
    pthread_mutex_lock(&sc.mu);
    sc.steps = steps;
    sc.nsteps = n;
    sc.n = 0;
    sc.object = NULL;
    pthread_mutex_unlock(&sc.mu);
}

/* After the scripted steps, serve GETs from obj. */
static void serve_object(const uint8_t *obj, size_t n, int whole,
                         int truncate_first)
{
    pthread_mutex_lock(&sc.mu);
    sc.object = obj;
    sc.object_len = n;
    sc.whole = whole;
    sc.truncate_first = truncate_first;
    pthread_mutex_unlock(&sc.mu);
}

static int requests(void)
{
    pthread_mutex_lock(&sc.mu);
    int n = sc.n;
    pthread_mutex_unlock(&sc.mu);
    return n;
}

static const char *const env_vars[] = {
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "SPOTRUN_S3_ADDRESSING",
    "SPOTRUN_S3_MAX_ATTEMPTS", "SPOTRUN_S3_RETRY_BASE_MS",
    "SPOTRUN_S3_RETRY_CAP_MS", "SPOTRUN_S3_CONNECT_TIMEOUT_MS",
    "SPOTRUN_S3_STALL_TIMEOUT_S", "SPOTRUN_S3_PART_SIZE",
    "SPOTRUN_S3_CONCURRENCY", "SPOTRUN_S3_LIST_PAGE_SIZE",
};

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        unsetenv(env_vars[i]);
    setenv("HOME", "/nonexistent", 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret-test-key", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("SPOTRUN_S3_RETRY_BASE_MS", "5", 1);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", srv.port);
    setenv("AWS_ENDPOINT_URL_S3", ep, 1);
    sr_clear_error();
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    pthread_mutex_init(&sc.mu, NULL);
    stub_start(&srv, handle, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stub_stop(&srv);
    pthread_mutex_destroy(&sc.mu);
    return 0;
}

static struct s3_client *client(void)
{
    struct s3_config cfg;
    struct s3_client *c;
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_int_equal(s3_client_open(&c, &cfg), SR_OK);
    return c;
}

/* ---- settings --------------------------------------------------------- */

static void test_s3__config_defaults_and_precedence(void **state)
{
    (void)state;
    struct s3_config cfg;
    unsetenv("AWS_ENDPOINT_URL_S3");
    unsetenv("SPOTRUN_S3_RETRY_BASE_MS");
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.region, "us-east-1");
    assert_string_equal(cfg.endpoint, "https://s3.us-east-1.amazonaws.com");
    assert_false(cfg.custom_endpoint);
    assert_int_equal(cfg.addressing, S3_ADDR_AUTO);
    assert_int_equal(cfg.part_size, 8 << 20);
    assert_int_equal(cfg.concurrency, 8);
    assert_int_equal(cfg.max_attempts, 5);
    assert_string_equal(cfg.ca_bundle, "");

    setenv("AWS_DEFAULT_REGION", "eu-west-1", 1);
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.endpoint, "https://s3.eu-west-1.amazonaws.com");
    setenv("AWS_REGION", "ap-northeast-2", 1);
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.region, "ap-northeast-2");

    setenv("AWS_ENDPOINT_URL", "http://generic:1", 1);
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.endpoint, "http://generic:1");
    assert_true(cfg.custom_endpoint);
    setenv("AWS_ENDPOINT_URL_S3", "http://s3only:2", 1);
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.endpoint, "http://s3only:2");
    setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.endpoint, "https://s3.ap-northeast-2.amazonaws"
                        ".com");

    setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt", 1);
    setenv("SPOTRUN_S3_PART_SIZE", "16MiB", 1);
    setenv("SPOTRUN_S3_CONCURRENCY", "3", 1);
    setenv("SPOTRUN_S3_ADDRESSING", "virtual", 1);
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.ca_bundle, "/etc/ssl/certs/ca-certificates.crt");
    assert_int_equal(cfg.part_size, 16 << 20);
    assert_int_equal(cfg.concurrency, 3);
    assert_int_equal(cfg.addressing, S3_ADDR_VIRTUAL);

    const char *bad[][2] = {
        { "SPOTRUN_S3_PART_SIZE", "4MiB" },
        { "SPOTRUN_S3_MAX_ATTEMPTS", "0" },
        { "SPOTRUN_S3_CONCURRENCY", "many" },
        { "SPOTRUN_S3_ADDRESSING", "sideways" },
    };
    for (size_t i = 0; i < 4; i++) {
        const char *old = getenv(bad[i][0]);
        char keep[64];
        snprintf(keep, sizeof keep, "%s", old ? old : "");
        setenv(bad[i][0], bad[i][1], 1);
        assert_int_equal(s3_config_from_env(&cfg), SR_ERR_USAGE);
        assert_non_null(strstr(sr_errmsg(), bad[i][0]));
        if (old)
            setenv(bad[i][0], keep, 1);
        else
            unsetenv(bad[i][0]);
    }
}

static void test_s3__region_from_profile_config(void **state)
{
    (void)state;
    char path[] = "/tmp/spotrun-s3cfg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "[default]\nregion = sa-east-1\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    setenv("AWS_CONFIG_FILE", path, 1);
    struct s3_config cfg;
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.region, "sa-east-1");
    setenv("AWS_REGION", "us-west-2", 1);
    assert_int_equal(s3_config_from_env(&cfg), SR_OK);
    assert_string_equal(cfg.region, "us-west-2");
    unlink(path);
}

static void test_s3__bad_endpoints(void **state)
{
    (void)state;
    const char *bad[] = { "ftp://host", "http://host/some/path", "nonsense" };
    for (int i = 0; i < 3; i++) {
        struct s3_config cfg;
        struct s3_client *c;
        setenv("AWS_ENDPOINT_URL_S3", bad[i], 1);
        assert_int_equal(s3_config_from_env(&cfg), SR_OK);
        assert_int_equal(s3_client_open(&c, &cfg), SR_ERR_USAGE);
    }
}

/* ---- request shape ---------------------------------------------------- */

static void test_s3__signed_request_shape(void **state)
{
    (void)state;
    static const struct step ok[] = {
        { 206, "0123456789", "Content-Range: bytes 5-14/100\r\n" } };
    script(ok, 1);
    struct s3_client *c = client();
    char buf[10];
    assert_int_equal(s3_get(c, "bkt", "dir/a b+c.bin", 5, buf, 10), SR_OK);
    assert_memory_equal(buf, "0123456789", 10);
    char host[64], cred[128];
    snprintf(host, sizeof host, "127.0.0.1:%d", srv.port);
    assert_string_equal(sc.method[0], "GET");
    assert_string_equal(sc.target[0], "/bkt/dir/a%20b%2Bc.bin");
    assert_string_equal(sc.host[0], host);
    assert_string_equal(sc.range[0], "bytes=5-14");
    assert_string_equal(sc.sha[0], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4"
                        "649b934ca495991b7852b855");
    assert_string_equal(sc.token[0], "");
    assert_int_equal(strncmp(sc.ua[0], "spotrun/", 8), 0);
    snprintf(cred, sizeof cred, "AWS4-HMAC-SHA256 Credential=AKIDTEST/");
    assert_int_equal(strncmp(sc.auth[0], cred, strlen(cred)), 0);
    assert_non_null(strstr(sc.auth[0], "/us-east-1/s3/aws4_request, "
                           "SignedHeaders=host;range;x-amz-content-sha256;"
                           "x-amz-date, Signature="));
    s3_client_close(c);

    /* temporary credentials: the token is sent and signed */
    setenv("AWS_SESSION_TOKEN", "session-token-value", 1);
    static const struct step put[] = { { 200, "", "ETag: \"x\"\r\n" } };
    script(put, 1);
    c = client();
    assert_int_equal(s3_put(c, "bkt", "k", "hello", 5, S3_IF_NONE_MATCH),
                     SR_OK);
    assert_string_equal(sc.method[0], "PUT");
    assert_string_equal(sc.token[0], "session-token-value");
    assert_string_equal(sc.inm[0], "*");
    assert_string_equal(sc.sha[0], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c"
                        "1fa7425e73043362938b9824");
    assert_non_null(strstr(sc.auth[0], "SignedHeaders=content-type;host;"
                           "if-none-match;x-amz-content-sha256;x-amz-date;"
                           "x-amz-security-token,"));
    s3_client_close(c);
}

static void test_s3__virtual_hosted_addressing(void **state)
{
    (void)state;
    static const struct step ok[] = { { 200, "", NULL } };
    char ep[64], host[64];
    snprintf(ep, sizeof ep, "http://localhost:%d", srv.port);
    snprintf(host, sizeof host, "bkt.localhost:%d", srv.port);
    setenv("AWS_ENDPOINT_URL_S3", ep, 1);
    setenv("SPOTRUN_S3_ADDRESSING", "virtual", 1);
    script(ok, 1);
    struct s3_client *c = client();
    struct s3_object_info info;
    assert_int_equal(s3_head(c, "bkt", "a/b", &info), SR_OK);
    assert_string_equal(sc.method[0], "HEAD");
    assert_string_equal(sc.host[0], host);
    assert_string_equal(sc.target[0], "/a/b");
    s3_client_close(c);
    /* a dotted bucket on a custom endpoint stays path-style */
    setenv("SPOTRUN_S3_ADDRESSING", "auto", 1);
    script(ok, 1);
    c = client();
    assert_int_equal(s3_head(c, "my.bkt", "a/b", &info), SR_OK);
    assert_string_equal(sc.target[0], "/my.bkt/a/b");
    s3_client_close(c);
}

/* ---- retries and errors ----------------------------------------------- */

#define ERR(code, msg) "<?xml version=\"1.0\"?><Error><Code>" code "</Code>" \
    "<Message>" msg "</Message><RequestId>REQ1</RequestId></Error>"

static void test_s3__retries_then_succeeds(void **state)
{
    (void)state;
    static const struct step steps[] = {
        { 503, ERR("SlowDown", "Please reduce your request rate."), NULL },
        { 500, ERR("InternalError", "We encountered an internal error."),
          NULL },
        { 400, ERR("RequestTimeout", "Your socket connection timed out."),
          NULL },
        { 502, "<html>bad gateway</html>", NULL },
        { 200, "hello", NULL },
    };
    script(steps, 5);
    struct s3_client *c = client();
    char buf[5];
    assert_int_equal(s3_get(c, "bkt", "k", 0, buf, 5), SR_OK);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(requests(), 5);
    s3_client_close(c);
}

static void test_s3__attempts_are_bounded(void **state)
{
    (void)state;
    static const struct step steps[] = {
        { 503, ERR("SlowDown", "Please reduce your request rate."), NULL } };
    setenv("SPOTRUN_S3_MAX_ATTEMPTS", "3", 1);
    script(steps, 1);
    struct s3_client *c = client();
    char buf[5];
    assert_int_equal(s3_get(c, "bkt", "k", 0, buf, 5), SR_ERR_REMOTE);
    assert_int_equal(requests(), 3);
    assert_non_null(strstr(sr_errmsg(), "s3://bkt/k: GET bytes=0-4: 503 "
                           "SlowDown: Please reduce your request rate. "
                           "(request id REQ1; gave up after 3 attempts)"));
    s3_client_close(c);
}

static void test_s3__client_errors_surface_at_once(void **state)
{
    (void)state;
    struct s3_client *c = client();
    char buf[10];
    struct s3_object_info info;
    static const struct step nokey[] = {
        { 404, ERR("NoSuchKey", "The specified key does not exist."), NULL } };
    script(nokey, 1);
    assert_int_equal(s3_get(c, "bkt", "k", 0, buf, 10), SR_ERR_NOT_FOUND);
    assert_int_equal(requests(), 1);
    assert_non_null(strstr(sr_errmsg(), "s3://bkt/k: GET bytes=0-9: 404 "
                           "NoSuchKey: The specified key does not exist."));

    static const struct step denied[] = {
        { 403, ERR("AccessDenied", "Access Denied"), NULL } };
    script(denied, 1);
    assert_int_equal(s3_get(c, "bkt", "k", 0, buf, 10), SR_ERR_AUTH);
    assert_int_equal(requests(), 1);
    assert_non_null(strstr(sr_errmsg(), "403 AccessDenied: Access Denied "
                           "(request id REQ1; access denied to the "
                           "credentials from environment)"));

    static const struct step head403[] = {
        { 403, NULL, "x-amz-request-id: RID9\r\n" } };
    script(head403, 1);
    assert_int_equal(s3_head(c, "bkt", "k", &info), SR_ERR_AUTH);
    assert_non_null(strstr(sr_errmsg(), "s3://bkt/k: HEAD: 403 Forbidden "
                           "(request id RID9; access denied"));

    static const struct step exists[] = {
        { 412, ERR("PreconditionFailed", "At least one of the pre-conditions "
                   "you specified did not hold"), NULL } };
    script(exists, 1);
    assert_int_equal(s3_put(c, "bkt", "k", "x", 1, S3_IF_NONE_MATCH),
                     SR_ERR_EXISTS);
    assert_int_equal(requests(), 1);

    static const struct step badreq[] = {
        { 400, ERR("InvalidArgument", "Bad argument"), NULL } };
    script(badreq, 1);
    assert_int_equal(s3_delete(c, "bkt", "k"), SR_ERR_REMOTE);
    assert_int_equal(requests(), 1);
    assert_non_null(strstr(sr_errmsg(), "s3://bkt/k: DELETE: 400 "
                           "InvalidArgument: Bad argument"));

    /* deleting an absent key is fine */
    script(nokey, 1);
    assert_int_equal(s3_delete(c, "bkt", "k"), SR_OK);
    s3_client_close(c);
}

static void test_s3__expired_token_refetches_credentials(void **state)
{
    (void)state;
    static const struct step steps[] = {
        { 400, ERR("ExpiredToken", "The provided token has expired."), NULL },
        { 206, "1234567", "Content-Range: bytes 0-6/7\r\n" },
    };
    char url[64];
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    /* requests: creds, GET (expired), creds, GET */
    static const struct step seq[] = { { 0, NULL, NULL }, steps[0],
                                       { 0, NULL, NULL }, steps[1] };
    script(seq, 4);
    struct s3_client *c = client();
    char buf[7];
    assert_int_equal(s3_get(c, "bkt", "k", 0, buf, 7), SR_OK);
    assert_memory_equal(buf, "1234567", 7);
    assert_int_equal(requests(), 4);
    assert_string_equal(sc.target[0], "/creds");
    assert_string_equal(sc.token[1], "tok-0");
    assert_string_equal(sc.target[2], "/creds");
    assert_string_equal(sc.token[3], "tok-2");
    s3_client_close(c);
}

static void test_s3__short_read_is_a_format_error(void **state)
{
    (void)state;
    static const struct step steps[] = {
        { 206, "abcde", "Content-Range: bytes 0-4/5\r\n" } };
    script(steps, 1);
    struct s3_client *c = client();
    char buf[10];
    assert_int_equal(s3_get(c, "bkt", "k", 0, buf, 10), SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "object of 5 bytes ends before byte "
                           "10"));
    static const struct step past[] = {
        { 416, ERR("InvalidRange", "The requested range is not satisfiable"),
          NULL } };
    script(past, 1);
    assert_int_equal(s3_get(c, "bkt", "k", 100, buf, 10), SR_ERR_FORMAT);
    assert_int_equal(requests(), 1);
    s3_client_close(c);
}

static void test_s3__retried_conditional_put_checks_own_write(void **state)
{
    (void)state;
    /* the first PUT is applied but its answer lost: the retry gets 412 */
    static const struct step ours[] = {
        { 500, ERR("InternalError", "We encountered an internal error."),
          NULL },
        { 412, ERR("PreconditionFailed", "At least one of the "
                   "pre-conditions you specified did not hold"), NULL },
        { 200, "hello", "ETag: \"5d41402abc4b2a76b9719d911017c592\"\r\n" },
    };
    script(ours, 3);
    struct s3_client *c = client();
    assert_int_equal(s3_put(c, "bkt", "m", "hello", 5, S3_IF_NONE_MATCH),
                     SR_OK);
    assert_int_equal(requests(), 3);
    assert_string_equal(sc.method[2], "HEAD");

    /* someone else's object: still "exists", with the 412 message */
    static const struct step theirs[] = {
        ours[0], ours[1],
        { 200, "other", "ETag: \"0000000000000000000000000000abcd\"\r\n" },
    };
    script(theirs, 3);
    assert_int_equal(s3_put(c, "bkt", "m", "hello", 5, S3_IF_NONE_MATCH),
                     SR_ERR_EXISTS);
    assert_non_null(strstr(sr_errmsg(), "s3://bkt/m: PUT: 412 "
                           "PreconditionFailed"));
    /* a first-attempt 412 needs no check */
    script(&ours[1], 1);
    assert_int_equal(s3_put(c, "bkt", "m", "hello", 5, S3_IF_NONE_MATCH),
                     SR_ERR_EXISTS);
    assert_int_equal(requests(), 1);
    s3_client_close(c);
}

struct keys {
    int n;
    char v[8][32];
};

static sr_status add_key(void *arg, const char *key, uint64_t size,
                         double mtime)
{
    (void)size;
    (void)mtime;
    struct keys *k = arg;
    snprintf(k->v[k->n++ & 7], sizeof k->v[0], "%s", key);
    return SR_OK;
}

static void test_s3__list_follows_continuation(void **state)
{
    (void)state;
    static const struct step steps[] = {
        { 200, "<ListBucketResult><IsTruncated>true</IsTruncated><Contents>"
          "<Key>p/a</Key><Size>1</Size></Contents><NextContinuationToken>"
          "t/1+=</NextContinuationToken></ListBucketResult>", NULL },
        { 200, "<ListBucketResult><IsTruncated>false</IsTruncated><Contents>"
          "<Key>p/b</Key><Size>2</Size></Contents></ListBucketResult>",
          NULL },
    };
    setenv("SPOTRUN_S3_LIST_PAGE_SIZE", "1", 1);
    script(steps, 2);
    struct s3_client *c = client();
    struct keys k = { 0 };
    assert_int_equal(s3_list(c, "bkt", "p/", add_key, &k), SR_OK);
    assert_int_equal(k.n, 2);
    assert_string_equal(k.v[0], "p/a");
    assert_string_equal(k.v[1], "p/b");
    assert_string_equal(sc.target[0], "/bkt?list-type=2&max-keys=1&"
                        "prefix=p%2F");
    assert_string_equal(sc.target[1], "/bkt?continuation-token=t%2F1%2B%3D&"
                        "list-type=2&max-keys=1&prefix=p%2F");
    s3_client_close(c);
}

/* n bytes of a pattern that differs from part to part */
static uint8_t *test_object(size_t n)
{
    uint8_t *obj = malloc(n);
    assert_non_null(obj);
    for (size_t i = 0; i < n; i++)
        obj[i] = (uint8_t)(i * 131 + (i >> 12));
    return obj;
}

static void test_s3__large_read_uses_parallel_ranges(void **state)
{
    (void)state;
    const size_t n = 12 << 20;
    uint8_t *obj = test_object(n), *got = malloc(n);
    setenv("SPOTRUN_S3_PART_SIZE", "5MiB", 1);
    script(NULL, 0);
    serve_object(obj, n, 0, 0);
    struct s3_client *c = client();
    assert_int_equal(s3_get(c, "bkt", "big", 1, got, n - 1), SR_OK);
    assert_memory_equal(got, obj + 1, n - 1);
    assert_int_equal(requests(), 3);
    int seen[3] = { 0 };
    for (int i = 0; i < 3; i++) {
        seen[0] |= strcmp(sc.range[i], "bytes=1-5242880") == 0;
        seen[1] |= strcmp(sc.range[i], "bytes=5242881-10485760") == 0;
        seen[2] |= strcmp(sc.range[i], "bytes=10485761-12582911") == 0;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    s3_client_close(c);
    serve_object(NULL, 0, 0, 0);
    free(obj);
    free(got);
}

/* A tap that checks the pieces come in order and sums their bytes. */
struct order_tap {
    uint64_t next;
    uint64_t sum;
    size_t largest;             /* piece */
    int out_of_order;
};

static void order_tap_fn(void *arg, uint64_t off, const void *p, size_t n)
{
    struct order_tap *t = arg;
    t->out_of_order |= off != t->next;
    t->next = off + n;
    if (n > t->largest)
        t->largest = n;
    for (size_t i = 0; i < n; i++)
        t->sum += ((const uint8_t *)p)[i];
}

/* A GET of a part or less and 1 MiB or more (one transfer: it goes
 * direct, as the declined cases below show by taking a second request):
 * the bytes, the request and the tap's view all as through libcurl. The
 * body comes in pieces larger than libcurl's default 16 KiB receive (the
 * connection's buffer size caps what one curl_easy_recv returns). */
static void test_s3__direct_get_lands_in_place(void **state)
{
    (void)state;
    const size_t n = 3 << 20;
    uint8_t *obj = test_object(n), *got = malloc(n);
    script(NULL, 0);
    serve_object(obj, n, 0, 0);
    struct s3_client *c = client();
    struct order_tap t = { .next = 5 };
    struct storage_tap tap = { order_tap_fn, &t };
    assert_int_equal(s3_get_tap(c, "bkt", "big", 5, got, n - 5, &tap), SR_OK);
    assert_memory_equal(got, obj + 5, n - 5);
    assert_int_equal(requests(), 1);
    assert_string_equal(sc.method[0], "GET");
    assert_string_equal(sc.target[0], "/bkt/big");
    assert_string_equal(sc.range[0], "bytes=5-3145727");
    assert_non_null(strstr(sc.auth[0], "SignedHeaders=host;range;"
                           "x-amz-content-sha256;x-amz-date"));
    assert_true(strncmp(sc.ua[0], "spotrun/", 8) == 0);
    uint64_t sum = 0;
    for (size_t i = 5; i < n; i++)
        sum += obj[i];
    assert_false(t.out_of_order);
    assert_int_equal(t.next, n);
    assert_int_equal(t.sum, sum);
    print_message("largest piece received: %zu bytes\n", t.largest);
    assert_true(t.largest > 16384);
    s3_client_close(c);
    serve_object(NULL, 0, 0, 0);
    free(obj);
    free(got);
}

/* Throttling and a body cut short are retried; S3's error document
 * comes through (no second request to get it); an object shorter than the
 * read is a format error; a server that ignores Range, or a response head
 * over 16 KiB, is read through libcurl instead. */
static void test_s3__direct_get_failures(void **state)
{
    (void)state;
    const size_t n = 2 << 20;
    uint8_t *obj = test_object(n), *got = malloc(n);
    struct s3_client *c = client();

    static const struct step slow[] = {
        { 503, ERR("SlowDown", "Please reduce your request rate."), NULL } };
    script(slow, 1);
    serve_object(obj, n, 0, 1);
    assert_int_equal(s3_get(c, "bkt", "k", 0, got, n), SR_OK);
    assert_memory_equal(got, obj, n);
    assert_int_equal(requests(), 3);   /* 503, cut short, whole */

    static const struct step missing[] = {
        { 404, ERR("NoSuchKey", "The specified key does not exist."), NULL } };
    script(missing, 1);
    assert_int_equal(s3_get(c, "bkt", "gone", 0, got, n), SR_ERR_NOT_FOUND);
    assert_non_null(strstr(sr_errmsg(), "s3://bkt/gone: GET bytes=0-2097151: "
                           "404 NoSuchKey: The specified key does not "
                           "exist. (request id REQ1)"));
    assert_int_equal(requests(), 1);

    static const struct step shorter[] = {
        { 206, "abcdefghij", "Content-Range: bytes 0-9/10\r\n" } };
    script(shorter, 1);
    assert_int_equal(s3_get(c, "bkt", "k", 0, got, n), SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "object of 10 bytes ends before "
                           "byte 2097152"));
    assert_memory_equal(got, "abcdefghij", 10);

    script(NULL, 0);
    serve_object(obj, n, 1, 0);
    memset(got, 0, n);
    assert_int_equal(s3_get(c, "bkt", "k", 7, got, n - 7), SR_OK);
    assert_memory_equal(got, obj + 7, n - 7);
    assert_int_equal(requests(), 2);   /* declined, then through libcurl */
    assert_string_equal(sc.range[1], "bytes=7-2097151");

    /* a response head too long to take in place (17 KiB of metadata) */
    static char big[18000];
    memset(big, 'm', sizeof big);
    memcpy(big, "x-amz-meta-note: ", 17);
    memcpy(big + 17 * 1024, "\r\n", 3);
    script(NULL, 0);
    serve_object(obj, n, 0, 0);
    pthread_mutex_lock(&sc.mu);
    sc.more_headers = big;
    pthread_mutex_unlock(&sc.mu);
    memset(got, 0, n);
    assert_int_equal(s3_get(c, "bkt", "k", 3, got, n - 3), SR_OK);
    assert_memory_equal(got, obj + 3, n - 3);
    assert_int_equal(requests(), 2);   /* declined, then through libcurl */
    pthread_mutex_lock(&sc.mu);
    sc.more_headers = NULL;
    pthread_mutex_unlock(&sc.mu);
    s3_client_close(c);

    /* a server that goes quiet: the stall timeout, named */
    setenv("SPOTRUN_S3_STALL_TIMEOUT_S", "1", 1);
    setenv("SPOTRUN_S3_MAX_ATTEMPTS", "1", 1);
    script(NULL, 0);
    serve_object(obj, n, 0, 0);
    pthread_mutex_lock(&sc.mu);
    sc.delay_ms = 2500;
    pthread_mutex_unlock(&sc.mu);
    c = client();
    double t0 = now_s();
    assert_int_equal(s3_get(c, "bkt", "k", 0, got, n), SR_ERR_NET);
    assert_true(now_s() - t0 < 2.4);
    assert_non_null(strstr(sr_errmsg(), "no progress in 1 s"));
    s3_client_close(c);
    pthread_mutex_lock(&sc.mu);
    sc.delay_ms = 0;
    pthread_mutex_unlock(&sc.mu);
    serve_object(NULL, 0, 0, 0);
    free(obj);
    free(got);
}

/* Each line of a response head, as libcurl or a direct GET hands it over;
 * a new status line starts over. */
static void head_lines(struct s3_http_xfer *x, const char *const *lines)
{
    for (; *lines; lines++) {
        char line[256];
        size_t n = (size_t)snprintf(line, sizeof line, "%s\r\n", *lines);
        assert_int_equal(s3_http_header_line(line, 1, n, x), n);
    }
}

/* What decides whether a direct GET's connection serves the next request,
 * and whether its body is Content-Length framed. */
static void test_s3__head_framing_and_connection(void **state)
{
    (void)state;
    struct s3_http_xfer *x = calloc(1, sizeof *x);
    assert_non_null(x);
    head_lines(x, (const char *const[]){ "HTTP/1.1 206 Partial Content",
        "Content-Length: 10", "Connection: keep-alive", NULL });
    assert_int_equal(x->resp.status, 206);
    assert_true(x->resp.has_length && !x->resp.encoded && !x->resp.close);
    head_lines(x, (const char *const[]){ "HTTP/1.1 200 OK",
        "connection: Keep-Alive, CLOSE", NULL });
    assert_true(x->resp.close && !x->resp.has_length);
    head_lines(x, (const char *const[]){ "HTTP/1.0 200 OK",
        "Content-Length: 3", NULL });
    assert_true(x->resp.close);
    head_lines(x, (const char *const[]){ "HTTP/1.1 200 OK",
        "Transfer-Encoding: chunked", NULL });
    assert_true(x->resp.encoded && !x->resp.close);
    free(x);
}

static void test_s3__unreachable_endpoint(void **state)
{
    (void)state;
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", stub_closed_port());
    setenv("AWS_ENDPOINT_URL_S3", ep, 1);
    struct s3_client *c = client();
    struct s3_object_info info;
    double t0 = now_s();
    assert_int_equal(s3_head(c, "bkt", "k", &info), SR_ERR_NET);
    assert_true(now_s() - t0 < 3.0);
    char want[128];
    snprintf(want, sizeof want, "s3://bkt/k: HEAD: cannot reach endpoint %s",
             ep);
    assert_non_null(strstr(sr_errmsg(), want));
    assert_non_null(strstr(sr_errmsg(), "gave up after 5 attempts"));
    /* a GET large enough to be received in place says the same */
    uint8_t *buf = malloc(2 << 20);
    assert_int_equal(s3_get(c, "bkt", "k", 0, buf, 2 << 20), SR_ERR_NET);
    snprintf(want, sizeof want, "s3://bkt/k: GET bytes=0-2097151: cannot "
             "reach endpoint %s", ep);
    assert_non_null(strstr(sr_errmsg(), want));
    free(buf);
    s3_client_close(c);
}

int main(void)
{
    log_init();
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup(f, setup)
        T(test_s3__config_defaults_and_precedence),
        T(test_s3__region_from_profile_config),
        T(test_s3__bad_endpoints),
        T(test_s3__signed_request_shape),
        T(test_s3__virtual_hosted_addressing),
        T(test_s3__retries_then_succeeds),
        T(test_s3__attempts_are_bounded),
        T(test_s3__client_errors_surface_at_once),
        T(test_s3__expired_token_refetches_credentials),
        T(test_s3__retried_conditional_put_checks_own_write),
        T(test_s3__short_read_is_a_format_error),
        T(test_s3__list_follows_continuation),
        T(test_s3__large_read_uses_parallel_ranges),
        T(test_s3__direct_get_lands_in_place),
        T(test_s3__direct_get_failures),
        T(test_s3__head_framing_and_connection),
        T(test_s3__unreachable_endpoint),
#undef T
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
