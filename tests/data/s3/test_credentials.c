/*
 * test_credentials.c: the credential chain. Environment keys, profiles from
 * the shared files (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE) and their
 * precedence; the container provider and IMDSv2 against a loopback HTTP
 * server run by the test (a thread answering canned replies and recording
 * what it was sent); refresh before Expiration; fail-fast and no IMDSv1
 * fallback; and no secret in any error message or log line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "data/s3/credentials.h"
#include "stub_server.h"

#define TMP_SECRET "tmpSecretKey/abcdefGHIJKL0123456789"
#define TMP_TOKEN "FwoGZXIvYXdzEXAMPLESESSIONTOKENvalue0123456789"
#define AUTH_TOKEN "container-auth-token-0123456789"
#define IMDS_TOKEN "imds-session-token-abcdef"

/* ---- canned metadata endpoints ---------------------------------------- */

enum srv_mode { SRV_CONTAINER, SRV_IMDS, SRV_IMDS_NO_TOKEN, SRV_ERROR };

struct srv {
    struct stub_server stub;
    int port;
    pthread_mutex_t mu;
    enum srv_mode mode;
    double expires_in;          /* Expiration = now + this */
    int hits;
    int token_puts;
    int v1_gets;                /* GETs without a session token */
    char auth[256];             /* last Authorization header */
};

static struct srv srv;

static void srv_set(enum srv_mode mode, double expires_in)
{
    pthread_mutex_lock(&srv.mu);
    srv.mode = mode;
    srv.expires_in = expires_in;
    pthread_mutex_unlock(&srv.mu);
}

static void creds_body(char *out, size_t cap, double expires_in)
{
    char exp[32];
    time_t t = time(NULL) + (time_t)expires_in;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(exp, sizeof exp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "Code", "Success",
                          "AccessKeyId", "ASIATEMPKEY", "SecretAccessKey",
                          TMP_SECRET, "Token", TMP_TOKEN, "Expiration", exp);
    char *s = json_dumps(j, 0);
    snprintf(out, cap, "%s", s);
    free(s);
    json_decref(j);
}

static void reply(struct stub_reply *out, int status, const char *body)
{
    out->status = status;
    snprintf(out->body, sizeof out->body, "%s", body);
}

static void handle(void *arg, const struct stub_req *r, struct stub_reply *out)
{
    (void)arg;
    char token[128], ttl[32], body[2048];
    stub_header(r, "X-aws-ec2-metadata-token", token, sizeof token);
    stub_header(r, "X-aws-ec2-metadata-token-ttl-seconds", ttl, sizeof ttl);
    pthread_mutex_lock(&srv.mu);
    srv.hits++;
    stub_header(r, "Authorization", srv.auth, sizeof srv.auth);
    int put = strcmp(r->method, "PUT") == 0;
    if (!put && !token[0])
        srv.v1_gets++;
    if (put)
        srv.token_puts++;
    enum srv_mode mode = srv.mode;
    creds_body(body, sizeof body, srv.expires_in);
    pthread_mutex_unlock(&srv.mu);
    const char *list = "/latest/meta-data/iam/security-credentials/";
    switch (mode) {
    case SRV_CONTAINER:
        reply(out, 200, body);
        break;
    case SRV_ERROR:
        reply(out, 500, "{\"SecretAccessKey\":\"" TMP_SECRET "\"}");
        break;
    case SRV_IMDS_NO_TOKEN:
        if (put)
            reply(out, 403, "");
        else
            reply(out, 200, strstr(r->target, "/test-role") ? body
                                                             : "test-role");
        break;
    case SRV_IMDS:
        if (put && strcmp(r->target, "/latest/api/token") == 0 && ttl[0])
            reply(out, 200, IMDS_TOKEN);
        else if (strcmp(token, IMDS_TOKEN) != 0)
            reply(out, 401, "");
        else if (strcmp(r->target, list) == 0)
            reply(out, 200, "test-role\n");
        else if (strncmp(r->target, list, strlen(list)) == 0 &&
                 strcmp(r->target + strlen(list), "test-role") == 0)
            reply(out, 200, body);
        else
            reply(out, 404, "");
        break;
    }
}

static void srv_start(enum srv_mode mode, double expires_in)
{
    memset(&srv, 0, sizeof srv);
    pthread_mutex_init(&srv.mu, NULL);
    srv.mode = mode;
    srv.expires_in = expires_in;
    stub_start(&srv.stub, handle, NULL);
    srv.port = srv.stub.port;
}

static void srv_stop(void)
{
    stub_stop(&srv.stub);
    pthread_mutex_destroy(&srv.mu);
}

static int closed_port(void)
{
    return stub_closed_port();
}

/* ---- environment and files -------------------------------------------- */

static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void set_path_env(const char *var, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    setenv(var, path, 1);
}

static int setup(void **state)
{
    (void)state;
    static const char *const vars[] = { "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_DISABLED",
        "AWS_METADATA_SERVICE_TIMEOUT", "AWS_METADATA_SERVICE_NUM_ATTEMPTS",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/spotrun-creds-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    setenv("HOME", tmpdir, 1);      /* no real ~/.aws */
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    sr_clear_error();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static sr_status get(struct creds *out)
{
    struct creds_chain *c;
    assert_int_equal(creds_chain_open(&c), SR_OK);
    sr_status s = creds_chain_get(c, out);
    creds_chain_close(c);
    return s;
}

/* ---- tests ------------------------------------------------------------ */

static void test_credentials__environment(void **state)
{
    (void)state;
    struct creds cr;
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
    setenv("AWS_SESSION_TOKEN", "tokenenv", 1);
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "AKIDENV");
    assert_string_equal(cr.secret_key, "secretenv");
    assert_string_equal(cr.token, "tokenenv");
    assert_true(cr.expiration == 0);
}

static void test_credentials__partial_environment_is_an_error(void **state)
{
    (void)state;
    struct creds cr;
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    assert_int_equal(get(&cr), SR_ERR_AUTH);
    assert_non_null(strstr(sr_errmsg(), "AWS_SECRET_ACCESS_KEY"));
}

static const char *const cred_file =
    "# comment\n"
    "[default]\n"
    "aws_access_key_id = AKIDDEFAULT\n"
    "aws_secret_access_key = secretdefault\n"
    "\n"
    "[dev]\n"
    "aws_access_key_id=AKIDDEV\n"
    "aws_secret_access_key=secretdev\n"
    "aws_session_token = tokendev\n";

static const char *const config_file =
    "[default]\n"
    "region = eu-west-3\n"
    "[profile dev]\n"
    "aws_access_key_id = AKIDCONFIGDEV\n"
    "aws_secret_access_key = secretconfigdev\n"
    "region = ap-south-1\n"
    "s3 =\n"
    "  addressing_style = path\n"
    "[profile cfgonly]\n"
    "aws_access_key_id = AKIDCFGONLY\n"
    "aws_secret_access_key = secretcfgonly\n"
    "[profile role]\n"
    "role_arn = arn:aws:iam::123456789012:role/x\n"
    "source_profile = default\n";

static void test_credentials__profile_files(void **state)
{
    (void)state;
    struct creds cr;
    char region[64];
    write_file("credentials", cred_file);
    write_file("config", config_file);
    set_path_env("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    set_path_env("AWS_CONFIG_FILE", "config");

    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "AKIDDEFAULT");
    assert_string_equal(cr.token, "");
    assert_true(creds_profile_region(region, sizeof region));
    assert_string_equal(region, "eu-west-3");

    /* the credentials file wins over the config file for the same profile */
    setenv("AWS_PROFILE", "dev", 1);
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "AKIDDEV");
    assert_string_equal(cr.token, "tokendev");
    assert_true(creds_profile_region(region, sizeof region));
    assert_string_equal(region, "ap-south-1");

    /* "[profile x]" sections of the config file */
    setenv("AWS_PROFILE", "cfgonly", 1);
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "AKIDCFGONLY");
    assert_false(creds_profile_region(region, sizeof region));
}

static void test_credentials__precedence(void **state)
{
    (void)state;
    struct creds cr;
    write_file("credentials", cred_file);
    set_path_env("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
    /* environment before the default profile */
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "AKIDENV");
    /* an explicitly chosen profile skips environment keys */
    setenv("AWS_PROFILE", "dev", 1);
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "AKIDDEV");
    /* even "default", when chosen explicitly */
    setenv("AWS_PROFILE", "default", 1);
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "AKIDDEFAULT");
}

static void test_credentials__missing_explicit_profile(void **state)
{
    (void)state;
    struct creds cr;
    write_file("credentials", cred_file);
    set_path_env("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    setenv("AWS_PROFILE", "nosuch", 1);
    assert_int_equal(get(&cr), SR_ERR_AUTH);
    assert_non_null(strstr(sr_errmsg(), "nosuch"));
}

static void test_credentials__unsupported_profile_is_explained(void **state)
{
    (void)state;
    struct creds cr;
    write_file("config", config_file);
    set_path_env("AWS_CONFIG_FILE", "config");
    setenv("AWS_PROFILE", "role", 1);
    assert_int_equal(get(&cr), SR_ERR_AUTH);
    assert_non_null(strstr(sr_errmsg(), "role_arn"));
}

static void test_credentials__nothing_found(void **state)
{
    (void)state;
    struct creds cr;
    assert_int_equal(get(&cr), SR_ERR_AUTH);
    assert_non_null(strstr(sr_errmsg(), "no AWS credentials found"));
    assert_non_null(strstr(sr_errmsg(), "AWS_EC2_METADATA_DISABLED"));
}

static void test_credentials__container_full_uri_with_token(void **state)
{
    (void)state;
    struct creds cr;
    char url[128];
    srv_start(SRV_CONTAINER, 3600);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v2/creds", srv.port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "from-variable", 1);
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(cr.access_key, "ASIATEMPKEY");
    assert_string_equal(cr.secret_key, TMP_SECRET);
    assert_string_equal(cr.token, TMP_TOKEN);
    assert_true(cr.expiration > wall_s() + 3000);
    assert_string_equal(srv.auth, "from-variable");

    /* the token file wins over the variable */
    write_file("token", AUTH_TOKEN "\n");
    set_path_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "token");
    assert_int_equal(get(&cr), SR_OK);
    assert_string_equal(srv.auth, AUTH_TOKEN);
    srv_stop();
}

static void test_credentials__container_full_uri_must_be_safe(void **state)
{
    (void)state;
    struct creds cr;
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://example.com/creds",
           1);
    assert_int_equal(get(&cr), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "must be https"));
    /* loopback hosts are allowed; nothing answers there, so the fetch
     * itself fails */
    const char *const ok[] = { "http://127.0.0.2:%d/c", "http://localhost:%d/c",
                               "http://[::1]:%d/c" };
    for (size_t i = 0; i < 3; i++) {
        char url[128];
        snprintf(url, sizeof url, ok[i], closed_port());
        setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
        assert_int_equal(get(&cr), SR_ERR_AUTH);
        assert_non_null(strstr(sr_errmsg(), "container credentials endpoint"));
    }
}

static void test_credentials__refresh_before_expiration(void **state)
{
    (void)state;
    struct creds_chain *c;
    struct creds cr;
    char url[128];
    /* expiring inside the refresh window: every get fetches again */
    srv_start(SRV_CONTAINER, 300);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    assert_int_equal(creds_chain_open(&c), SR_OK);
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    assert_int_equal(srv.hits, 1);
    srv_set(SRV_CONTAINER, 3600);
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    assert_int_equal(srv.hits, 2);
    /* now valid for an hour: cached */
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    assert_int_equal(srv.hits, 2);
    char src[64];
    creds_chain_source(c, src, sizeof src);
    assert_string_equal(src, "container");
    /* invalidation (ExpiredToken) forces a fetch */
    creds_chain_invalidate(c);
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    assert_int_equal(srv.hits, 3);
    creds_chain_close(c);
    srv_stop();
}

static void test_credentials__refresh_failure_keeps_valid_keys(void **state)
{
    (void)state;
    struct creds_chain *c;
    struct creds cr;
    char url[128];
    srv_start(SRV_CONTAINER, 300);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    assert_int_equal(creds_chain_open(&c), SR_OK);
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    srv_set(SRV_ERROR, 300);
    /* not yet expired: the old keys are still served, with a warning */
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    assert_string_equal(cr.access_key, "ASIATEMPKEY");
    creds_chain_close(c);
    srv_stop();
}

static void test_credentials__imds_v2(void **state)
{
    (void)state;
    struct creds_chain *c;
    struct creds cr;
    char url[128], src[64];
    srv_start(SRV_IMDS, 6 * 3600);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", srv.port);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url, 1);
    unsetenv("AWS_EC2_METADATA_DISABLED");
    assert_int_equal(creds_chain_open(&c), SR_OK);
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    assert_string_equal(cr.secret_key, TMP_SECRET);
    assert_string_equal(cr.token, TMP_TOKEN);
    assert_int_equal(srv.token_puts, 1);
    assert_int_equal(srv.v1_gets, 0);
    creds_chain_source(c, src, sizeof src);
    assert_string_equal(src, "instance role test-role");
    creds_chain_close(c);
    srv_stop();
}

static void test_credentials__imds_without_token_is_not_used(void **state)
{
    (void)state;
    struct creds cr;
    char url[128];
    srv_start(SRV_IMDS_NO_TOKEN, 3600);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", srv.port);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url, 1);
    unsetenv("AWS_EC2_METADATA_DISABLED");
    assert_int_equal(get(&cr), SR_ERR_AUTH);
    assert_int_equal(srv.v1_gets, 0);
    assert_non_null(strstr(sr_errmsg(), "token request answered HTTP 403"));
    srv_stop();
}

static void test_credentials__imds_absent_fails_fast(void **state)
{
    (void)state;
    struct creds cr;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", closed_port());
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url, 1);
    unsetenv("AWS_EC2_METADATA_DISABLED");
    double t0 = now_s();
    assert_int_equal(get(&cr), SR_ERR_AUTH);
    assert_true(now_s() - t0 < 3.0);
    assert_non_null(strstr(sr_errmsg(), url));
    /* an address that never answers: bounded by the short timeout */
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://10.255.255.1", 1);
    setenv("AWS_METADATA_SERVICE_TIMEOUT", "1", 1);
    t0 = now_s();
    assert_int_equal(get(&cr), SR_ERR_AUTH);
    assert_true(now_s() - t0 < 3.0);
}

static void test_credentials__redact(void **state)
{
    (void)state;
    struct creds cr;
    memset(&cr, 0, sizeof cr);
    snprintf(cr.secret_key, sizeof cr.secret_key, "%s", TMP_SECRET);
    snprintf(cr.token, sizeof cr.token, "%s", TMP_TOKEN);
    char msg[256];
    snprintf(msg, sizeof msg, "a %s b %s c %s", TMP_SECRET, TMP_TOKEN,
             TMP_SECRET);
    creds_redact(msg, &cr);
    assert_string_equal(msg, "a *** b *** c ***");
}

/* Everything a failing and a succeeding chain write to the log and to
 * error messages at debug level: no secret may appear. */
static void test_credentials__secrets_never_logged(void **state)
{
    (void)state;
    char logpath[128], url[128];
    struct creds cr;
    snprintf(logpath, sizeof logpath, "%s/log", tmpdir);
    fflush(stderr);
    int saved = dup(2);
    FILE *lf = fopen(logpath, "w");
    assert_non_null(lf);
    dup2(fileno(lf), 2);
    enum log_level lvl = log_get_level();
    log_set_level(LOG_DEBUG);

    char errors[4096] = "";
    size_t el = 0;
    srv_start(SRV_ERROR, 3600);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/creds", srv.port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", AUTH_TOKEN, 1);
    assert_int_not_equal(get(&cr), SR_OK);
    el += (size_t)snprintf(errors + el, sizeof errors - el, "%s\n",
                           sr_errmsg());
    srv_set(SRV_CONTAINER, 3600);
    assert_int_equal(get(&cr), SR_OK);
    struct creds_chain *c;
    srv_set(SRV_CONTAINER, 60);
    assert_int_equal(creds_chain_open(&c), SR_OK);
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);
    srv_set(SRV_ERROR, 60);
    assert_int_equal(creds_chain_get(c, &cr), SR_OK);    /* warns */
    creds_chain_close(c);
    srv_stop();
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    setenv("AWS_SESSION_TOKEN", TMP_TOKEN, 1);
    assert_int_equal(get(&cr), SR_ERR_AUTH);             /* partial */
    el += (size_t)snprintf(errors + el, sizeof errors - el, "%s\n",
                           sr_errmsg());

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(lf);
    log_set_level(lvl);
    char text[16384] = "";
    FILE *f = fopen(logpath, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_non_null(strstr(text, "could not be refreshed"));
    const char *const secrets[] = { TMP_SECRET, TMP_TOKEN, AUTH_TOKEN };
    for (size_t i = 0; i < 3; i++) {
        assert_null(strstr(text, secrets[i]));
        assert_null(strstr(errors, secrets[i]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_credentials__environment),
        T(test_credentials__partial_environment_is_an_error),
        T(test_credentials__profile_files),
        T(test_credentials__precedence),
        T(test_credentials__missing_explicit_profile),
        T(test_credentials__unsupported_profile_is_explained),
        T(test_credentials__nothing_found),
        T(test_credentials__container_full_uri_with_token),
        T(test_credentials__container_full_uri_must_be_safe),
        T(test_credentials__refresh_before_expiration),
        T(test_credentials__refresh_failure_keeps_valid_keys),
        T(test_credentials__imds_v2),
        T(test_credentials__imds_without_token_is_not_used),
        T(test_credentials__imds_absent_fails_fast),
        T(test_credentials__redact),
        T(test_credentials__secrets_never_logged),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
