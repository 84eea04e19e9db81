/*
 * test_s3_integration.c: the s3:// backend through the public storage API
 * against the loopback S3 server (tests/s3server/server.js, which checks
 * SigV4, honours If-None-Match and injects faults). The group setup starts
 * the server on a free port and the teardown stops it. Covers put, stat,
 * ranged and parallel reads, paged listing, delete, a 40 MiB multipart
 * upload, create-if-absent, abort, retries under injected faults, a wrong
 * secret and an unreachable endpoint. Exits 77 (skipped) without node.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "data/s3/s3.h"
#include "data/storage.h"

#define BUCKET "spotrun-test"
#define ACCESS_KEY "spotrun-test"
#define SECRET_KEY "spotrun-test-secret"
#define MiB ((size_t)1 << 20)

static pid_t server_pid;
static int server_port;
static char workdir[64];
static char endpoint[64];

/* ---- the server process ----------------------------------------------- */

static int server_start(void **state)
{
    (void)state;
    const char *src = getenv("SOURCE_DIR");
    char script[512], dir[128], portfile[128], log[128];
    snprintf(workdir, sizeof workdir, "/tmp/spotrun-s3it-XXXXXX");
    if (!src || !mkdtemp(workdir))
        return -1;
    snprintf(script, sizeof script, "%s/tests/s3server/server.js", src);
    snprintf(dir, sizeof dir, "%s/data", workdir);
    snprintf(portfile, sizeof portfile, "%s/port", workdir);
    snprintf(log, sizeof log, "%s/server.log", workdir);
    server_pid = fork();
    if (server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);   /* no orphan if the test dies */
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("node", "node", "--openssl-legacy-provider",
               "--single-threaded-gc", script, "--dir",
               dir, "--port", "0", "--bucket", BUCKET, "--port-file",
               portfile, "--access-key", ACCESS_KEY, "--secret-key",
               SECRET_KEY, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int ok = fscanf(f, "%d", &server_port) == 1;
            fclose(f);
            if (ok && server_port > 0)
                break;
        }
        if (waitpid(server_pid, NULL, WNOHANG) == server_pid) {
            fprintf(stderr, "s3 server exited; see %s\n", log);
            return -1;
        }
        usleep(50 * 1000);
    }
    if (server_port <= 0)
        return -1;
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", server_port);
    return 0;
}

static int server_stop(void **state)
{
    (void)state;
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", workdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* PUT /__spotrun/faults (the server's loopback control endpoint). */
static void set_faults(const char *json)
{
    char url[128];
    snprintf(url, sizeof url, "%s/__spotrun/faults", endpoint);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fwrite);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, stderr);
    long code = 0;
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    assert_int_equal(code, 200);
    curl_easy_cleanup(h);
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == SR_OK ? size * n : 0;
}

/* How many faults of one kind the server has injected so far. */
static long fault_count(const char *kind)
{
    char url[128];
    struct sr_buf body = { 0 };
    snprintf(url, sizeof url, "%s/__spotrun/stats", endpoint);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    curl_easy_cleanup(h);
    json_t *j = json_loadb((const char *)body.data, body.len, 0, NULL);
    assert_non_null(j);
    long n = (long)json_integer_value(json_object_get(json_object_get(j,
                                                     "faults"), kind));
    json_decref(j);
    buf_free(&body);
    return n;
}

/* ---- per-test environment --------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    setenv("AWS_ENDPOINT_URL_S3", endpoint, 1);
    setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY, 1);
    setenv("AWS_REGION", "us-east-1", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("SPOTRUN_S3_RETRY_BASE_MS", "20", 1);
    setenv("SPOTRUN_S3_RETRY_CAP_MS", "500", 1);
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_PROFILE");
    unsetenv("SPOTRUN_S3_LIST_PAGE_SIZE");
    unsetenv("SPOTRUN_S3_MAX_ATTEMPTS");
    unsetenv("SPOTRUN_S3_PART_SIZE");
    /* objects above one part go multipart, so 40 MiB is several parts */
    setenv("SPOTRUN_S3_MULTIPART_THRESHOLD", "8MiB", 1);
    sr_clear_error();
    return 0;
}

static struct storage *open_storage(void)
{
    struct storage *st;
    assert_int_equal(storage_open(&st), SR_OK);
    return st;
}

static uint8_t *pattern(size_t n, uint32_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

static void expect_ok(sr_status s)
{
    if (s != SR_OK)
        fail_msg("%s: %s", sr_status_str(s), sr_errmsg());
}

/* Entries left in the server's multipart upload area. */
static int pending_uploads(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/data/%s/._S3rver_uploads", workdir,
             BUCKET);
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- tests ------------------------------------------------------------ */

static void test_s3__put_stat_read(void **state)
{
    (void)state;
    struct storage *st = open_storage();
    uint8_t *data = pattern(100000, 1);
    uint8_t got[100];
    uint64_t size = 0;
    const char *uri = "s3://" BUCKET "/basic/obj.bin";
    expect_ok(storage_put(st, uri, data, 100000, 0));
    expect_ok(storage_stat(st, uri, &size));
    assert_int_equal(size, 100000);
    expect_ok(storage_read(st, uri, 12345, got, sizeof got));
    assert_memory_equal(got, data + 12345, sizeof got);
    struct sr_buf all = { 0 };
    expect_ok(storage_read_all(st, uri, &all));
    assert_int_equal(all.len, 100000);
    assert_memory_equal(all.data, data, 100000);
    buf_free(&all);

    /* past the end: short object, or a range that starts beyond it */
    assert_int_equal(storage_read(st, uri, 99950, got, 100), SR_ERR_FORMAT);
    assert_int_equal(storage_read(st, uri, 200000, got, 10), SR_ERR_FORMAT);
    /* missing objects */
    assert_int_equal(storage_stat(st, "s3://" BUCKET "/basic/none", &size),
                     SR_ERR_NOT_FOUND);
    assert_non_null(strstr(sr_errmsg(), "s3://" BUCKET "/basic/none: HEAD: "
                           "404"));
    assert_int_equal(storage_read(st, "s3://" BUCKET "/basic/none", 0, got,
                                  10), SR_ERR_NOT_FOUND);
    assert_non_null(strstr(sr_errmsg(), "GET bytes=0-9: 404 NoSuchKey"));

    /* empty objects and unusual key characters */
    const char *odd = "s3://" BUCKET "/basic/sp ace+plus~t\xc3\xbc/x=1&y.bin";
    expect_ok(storage_put(st, odd, "", 0, 0));
    expect_ok(storage_stat(st, odd, &size));
    assert_int_equal(size, 0);
    free(data);
    storage_close(st);
}

static void test_s3__list_pages(void **state)
{
    (void)state;
    setenv("SPOTRUN_S3_LIST_PAGE_SIZE", "2", 1);
    struct storage *st = open_storage();
    const char *names[] = { "a", "b/c", "b/d", "e \xc3\xa9", "f", "g", "h" };
    char uri[256];
    for (size_t i = 0; i < 7; i++) {
        snprintf(uri, sizeof uri, "s3://" BUCKET "/list/%s", names[i]);
        expect_ok(storage_put(st, uri, names[i], strlen(names[i]), 0));
    }
    expect_ok(storage_put(st, "s3://" BUCKET "/list-other", "x", 1, 0));

    struct storage_list l;
    /* a "directory" without and with its slash */
    const char *dirs[] = { "s3://" BUCKET "/list", "s3://" BUCKET "/list/" };
    for (int k = 0; k < 2; k++) {
        expect_ok(storage_list(st, dirs[k], &l));
        assert_int_equal(l.n, 7);
        for (size_t i = 0; i < 7; i++) {
            assert_string_equal(l.v[i].name, names[i]);
            assert_int_equal(l.v[i].size, strlen(names[i]));
            assert_true(l.v[i].mtime > 1e9);
        }
        storage_list_free(&l);
    }
    /* a plain name prefix */
    expect_ok(storage_list(st, "s3://" BUCKET "/list/b", &l));
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0].name, "c");
    storage_list_free(&l);
    expect_ok(storage_list(st, "s3://" BUCKET "/list-", &l));
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].name, "other");
    storage_list_free(&l);
    expect_ok(storage_list(st, "s3://" BUCKET "/nothing-here", &l));
    assert_int_equal(l.n, 0);
    storage_list_free(&l);
    storage_close(st);
}

static void test_s3__delete(void **state)
{
    (void)state;
    struct storage *st = open_storage();
    uint64_t size;
    const char *uri = "s3://" BUCKET "/del/me";
    expect_ok(storage_put(st, uri, "abc", 3, 0));
    expect_ok(storage_delete(st, uri));
    assert_int_equal(storage_stat(st, uri, &size), SR_ERR_NOT_FOUND);
    expect_ok(storage_delete(st, uri));
    storage_close(st);
}

/* What a read's tap saw, byte by byte: how often, and whether it matched. */
struct tap_seen {
    const uint8_t *want;        /* the object */
    uint64_t off, len;          /* the range read */
    uint8_t *count;             /* deliveries of each byte of the range */
    int bad;
};

static void tap_count(void *arg, uint64_t off, const void *p, size_t n)
{
    struct tap_seen *t = arg;
    if (off < t->off || off + n > t->off + t->len ||
        memcmp(p, t->want + off, n) != 0) {
        t->bad++;
        return;
    }
    for (size_t i = 0; i < n; i++)
        t->count[off - t->off + i]++;
}

static void test_s3__multipart_40mib(void **state)
{
    (void)state;
    struct storage *st = open_storage();
    const size_t n = 40 * MiB + 12345;
    uint8_t *data = pattern(n, 2);
    const char *uri = "s3://" BUCKET "/mp/big.bin";
    struct storage_writer *w;
    expect_ok(storage_writer_open(st, uri, 0, &w));
    /* uneven writes that straddle part boundaries */
    for (size_t off = 0; off < n;) {
        size_t k = off % 3 == 0 ? MiB + 3 : 777777;
        if (k > n - off)
            k = n - off;
        expect_ok(storage_writer_write(w, data + off, k));
        off += k;
    }
    expect_ok(storage_writer_commit(w));

    struct s3_config cfg;
    struct s3_client *c;
    struct s3_object_info info;
    expect_ok(s3_config_from_env(&cfg));
    expect_ok(s3_client_open(&c, &cfg));
    expect_ok(s3_head(c, BUCKET, "mp/big.bin", &info));
    assert_int_equal(info.size, n);
    assert_non_null(strstr(info.etag, "-6\""));   /* 6 parts of 8 MiB */
    s3_client_close(c);

    struct sr_buf all = { 0 };
    expect_ok(storage_read_all(st, uri, &all));    /* parallel ranges */
    assert_int_equal(all.len, n);
    assert_memory_equal(all.data, data, n);
    buf_free(&all);
    uint8_t *mid = malloc(3 * MiB);
    expect_ok(storage_read(st, uri, 8 * MiB - 5, mid, 3 * MiB));
    assert_memory_equal(mid, data + 8 * MiB - 5, 3 * MiB);
    free(mid);

    /* a tapped read over several concurrent ranged GETs: the tap sees
     * every byte once, with its object offset */
    const uint64_t toff = 5 * MiB + 3, tlen = 20 * MiB;
    struct tap_seen t = { data, toff, tlen, calloc(tlen, 1), 0 };
    struct storage_tap tap = { tap_count, &t };
    uint8_t *got = malloc(tlen);
    expect_ok(storage_read_tap(st, uri, toff, got, tlen, &tap));
    assert_memory_equal(got, data + toff, tlen);
    assert_int_equal(t.bad, 0);
    for (uint64_t i = 0; i < tlen; i++)
        if (t.count[i] != 1)
            fail_msg("byte %llu of the range seen %d times",
                     (unsigned long long)i, t.count[i]);
    free(got);
    free(t.count);
    assert_int_equal(pending_uploads(), 0);
    free(data);
    storage_close(st);
}

static void test_s3__create_if_absent(void **state)
{
    (void)state;
    struct storage *st = open_storage();
    const char *uri = "s3://" BUCKET "/excl/manifest";
    struct storage_writer *w;
    expect_ok(storage_put(st, uri, "one", 3, STORAGE_CREATE_EXCL));
    assert_int_equal(storage_put(st, uri, "two", 3, STORAGE_CREATE_EXCL),
                     SR_ERR_EXISTS);

    /* the key appears between open and commit: the conditional PUT
     * itself answers 412 */
    const char *late = "s3://" BUCKET "/excl/late";
    expect_ok(storage_writer_open(st, late, STORAGE_CREATE_EXCL, &w));
    expect_ok(storage_writer_write(w, "mine", 4));
    expect_ok(storage_put(st, late, "theirs", 6, 0));
    assert_int_equal(storage_writer_commit(w), SR_ERR_EXISTS);
    assert_non_null(strstr(sr_errmsg(), "412 PreconditionFailed"));

    /* the same for CompleteMultipartUpload; the upload is aborted */
    const char *big = "s3://" BUCKET "/excl/big";
    uint8_t *data = pattern(9 * MiB, 3);
    expect_ok(storage_writer_open(st, big, STORAGE_CREATE_EXCL, &w));
    expect_ok(storage_writer_write(w, data, 9 * MiB));
    expect_ok(storage_put(st, big, "theirs", 6, 0));
    assert_int_equal(storage_writer_commit(w), SR_ERR_EXISTS);
    assert_non_null(strstr(sr_errmsg(), "CompleteMultipartUpload: 412"));
    assert_int_equal(pending_uploads(), 0);

    struct sr_buf b = { 0 };
    expect_ok(storage_read_all(st, big, &b));
    assert_int_equal(b.len, 6);
    buf_free(&b);
    free(data);
    storage_close(st);
}

static void test_s3__abort(void **state)
{
    (void)state;
    struct storage *st = open_storage();
    const char *uri = "s3://" BUCKET "/abort/x";
    uint8_t *data = pattern(20 * MiB, 4);
    uint64_t size;
    struct storage_writer *w;
    expect_ok(storage_writer_open(st, uri, 0, &w));
    expect_ok(storage_writer_write(w, data, 20 * MiB));
    assert_int_equal(pending_uploads(), 1);
    storage_writer_abort(w);
    assert_int_equal(pending_uploads(), 0);
    assert_int_equal(storage_stat(st, uri, &size), SR_ERR_NOT_FOUND);
    /* a small, never-sent object */
    expect_ok(storage_writer_open(st, uri, 0, &w));
    expect_ok(storage_writer_write(w, "abc", 3));
    storage_writer_abort(w);
    assert_int_equal(storage_stat(st, uri, &size), SR_ERR_NOT_FOUND);
    free(data);
    storage_close(st);
}

struct reader {
    struct storage *st;
    const uint8_t *data;
    int id;
    int bad;
};

static void *read_loop(void *arg)
{
    struct reader *r = arg;
    uint8_t buf[4096];
    for (int i = 0; i < 40; i++) {
        uint64_t off = (uint64_t)((r->id * 7919 + i * 104729) % (1000000 -
                                                                  4096));
        if (storage_read(r->st, "s3://" BUCKET "/mt/obj", off, buf,
                         sizeof buf) != SR_OK ||
            memcmp(buf, r->data + off, sizeof buf) != 0)
            r->bad++;
    }
    return NULL;
}

static void test_s3__threads_share_one_storage(void **state)
{
    (void)state;
    struct storage *st = open_storage();
    uint8_t *data = pattern(1000000, 5);
    expect_ok(storage_put(st, "s3://" BUCKET "/mt/obj", data, 1000000, 0));
    pthread_t th[6];
    struct reader r[6];
    for (int i = 0; i < 6; i++) {
        r[i] = (struct reader){ .st = st, .data = data, .id = i };
        assert_int_equal(pthread_create(&th[i], NULL, read_loop, &r[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].bad, 0);
    }
    free(data);
    storage_close(st);
}

/* Reads of less than a part (one request each, received in place) at
 * ten offsets of an object of at least 21 MiB holding data. */
static void read_parts_direct(struct storage *st, const char *uri,
                              const uint8_t *data)
{
    const size_t len = 2 * MiB + 77;
    uint8_t *got = malloc(len);
    assert_non_null(got);
    for (int i = 0; i < 10; i++) {
        uint64_t off = (uint64_t)i * 2 * MiB + (uint64_t)i * 13;
        expect_ok(storage_read(st, uri, off, got, len));
        assert_memory_equal(got, data + off, len);
    }
    free(got);
}

static void test_s3__retries_under_faults(void **state)
{
    (void)state;
    setenv("SPOTRUN_S3_MAX_ATTEMPTS", "12", 1);
    setenv("SPOTRUN_S3_LIST_PAGE_SIZE", "3", 1);
    struct storage *st = open_storage();
    const size_t n = 24 * MiB + 77;
    uint8_t *data = pattern(n, 6);
    set_faults("{\"rate\":0.3,\"faults\":[\"slowdown\",\"500\",\"reset\"]}");
    expect_ok(storage_put(st, "s3://" BUCKET "/faults/big", data, n, 0));
    char uri[128];
    for (int i = 0; i < 10; i++) {
        snprintf(uri, sizeof uri, "s3://" BUCKET "/faults/small-%02d", i);
        expect_ok(storage_put(st, uri, data + i, 1000, 0));
    }
    struct sr_buf b = { 0 };
    expect_ok(storage_read_all(st, "s3://" BUCKET "/faults/big", &b));
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, data, n);
    read_parts_direct(st, "s3://" BUCKET "/faults/big", data);
    for (int i = 0; i < 10; i++) {
        uint8_t got[1000];
        snprintf(uri, sizeof uri, "s3://" BUCKET "/faults/small-%02d", i);
        expect_ok(storage_read(st, uri, 0, got, sizeof got));
        assert_memory_equal(got, data + i, sizeof got);
    }
    struct storage_list l;
    expect_ok(storage_list(st, "s3://" BUCKET "/faults", &l));
    assert_int_equal(l.n, 11);
    storage_list_free(&l);

    /* connection resets alone, at a higher rate */
    set_faults("{\"rate\":0.5,\"faults\":[\"reset\"]}");
    expect_ok(storage_put(st, "s3://" BUCKET "/faults/reset", data, n, 0));
    b.len = 0;
    expect_ok(storage_read_all(st, "s3://" BUCKET "/faults/reset", &b));
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, data, n);
    read_parts_direct(st, "s3://" BUCKET "/faults/reset", data);
    set_faults("{\"rate\":0}");
    for (int i = 0; i < 3; i++)
        assert_true(fault_count(i == 0 ? "slowdown" : i == 1 ? "500"
                                : "reset") > 0);
    buf_free(&b);
    free(data);
    storage_close(st);
}

static void test_s3__wrong_secret(void **state)
{
    (void)state;
    const char *bad = "wrong-secret-9f8e7d6c5b4a";
    setenv("AWS_SECRET_ACCESS_KEY", bad, 1);
    struct storage *st = open_storage();
    uint64_t size;
    uint8_t buf[10];
    assert_int_equal(storage_stat(st, "s3://" BUCKET "/basic/obj.bin", &size),
                     SR_ERR_AUTH);
    assert_int_equal(storage_read(st, "s3://" BUCKET "/basic/obj.bin", 0, buf,
                                  10), SR_ERR_AUTH);
    assert_non_null(strstr(sr_errmsg(), "GET bytes=0-9: 403 "
                           "SignatureDoesNotMatch"));
    assert_null(strstr(sr_errmsg(), bad));
    uint8_t *big = malloc(2 * MiB);     /* a read received in place */
    assert_int_equal(storage_read(st, "s3://" BUCKET "/basic/obj.bin", 0, big,
                                  2 * MiB), SR_ERR_AUTH);
    assert_non_null(strstr(sr_errmsg(), "GET bytes=0-2097151: 403 "
                           "SignatureDoesNotMatch"));
    assert_null(strstr(sr_errmsg(), bad));
    free(big);
    assert_int_equal(storage_put(st, "s3://" BUCKET "/x", "a", 1, 0),
                     SR_ERR_AUTH);
    assert_null(strstr(sr_errmsg(), bad));
    storage_close(st);
}

static void test_s3__unreachable_endpoint(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", ntohs(a.sin_port));
    setenv("AWS_ENDPOINT_URL_S3", ep, 1);
    struct storage *st = open_storage();
    uint64_t size;
    double t0 = now_s();
    assert_int_equal(storage_stat(st, "s3://" BUCKET "/k", &size), SR_ERR_NET);
    assert_true(now_s() - t0 < 5.0);
    assert_non_null(strstr(sr_errmsg(), ep + 7));
    assert_non_null(strstr(sr_errmsg(), "after 5 attempts"));
    storage_close(st);
}

int main(void)
{
    const char *src = getenv("SOURCE_DIR");
    char probe[512];
    snprintf(probe, sizeof probe, "%s/tests/s3server/node_modules/s3rver",
             src ? src : ".");
    if (!src || access(probe, F_OK) != 0 ||
        system("node --version > /dev/null 2>&1") != 0) {
        fprintf(stderr, "skipped: needs node and tests/s3server/node_modules "
                "(npm ci --prefix tests/s3server)\n");
        return 77;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    log_init();
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup(f, setup)
        T(test_s3__put_stat_read),
        T(test_s3__list_pages),
        T(test_s3__delete),
        T(test_s3__multipart_40mib),
        T(test_s3__create_if_absent),
        T(test_s3__abort),
        T(test_s3__threads_share_one_storage),
        T(test_s3__retries_under_faults),
        T(test_s3__wrong_secret),
        T(test_s3__unreachable_endpoint),
#undef T
    };
    int rc = cmocka_run_group_tests(tests, server_start, server_stop);
    curl_global_cleanup();
    return rc;
}
