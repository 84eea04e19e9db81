/*
 * credentials.c: the credential chain. Providers are tried in the SDKs'
 * order (environment, profile files, container endpoint, IMDSv2) and the
 * first configured one is remembered; only temporary credentials (container,
 * instance role) expire, and those are fetched again 15 minutes before
 * their Expiration, by whichever thread notices first, under the chain's
 * lock. Metadata endpoints get short timeouts so a host without them fails
 * fast, and IMDS is used only with a session token (no IMDSv1).
 */
#include "credentials.h"

#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../../common/buf.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "metadata.h"

#define ADVISORY_S (15 * 60)    /* start refreshing this long before expiry */
#define MANDATORY_S (10 * 60)   /* from here on a refresh must be tried */
#define RETRY_GAP_S 10          /* between failed advisory refreshes */
#define CONTAINER_HOST "http://169.254.170.2"

enum source { SRC_NONE, SRC_ENV, SRC_PROFILE, SRC_CONTAINER, SRC_IMDS };

struct creds_chain {
    pthread_mutex_t mu;
    enum source src;
    char src_name[160];
    struct creds cur;
    int have;
    double last_try;
};

/* ---- small helpers ---------------------------------------------------- */

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static sr_status set_field(char *dst, size_t cap, const char *v,
                           const char *what, const char *where)
{
    if (str_copy(dst, cap, v))
        return SR_FAIL(SR_ERR_AUTH, "%s: %s is too long (%zu bytes)", where,
                       what, strlen(v));
    return SR_OK;
}

static sr_status fill(struct creds *c, const char *akid, const char *secret,
                      const char *token, double expiration, const char *where)
{
    memset(c, 0, sizeof *c);
    SR_TRY(set_field(c->access_key, sizeof c->access_key, akid,
                     "access key id", where));
    SR_TRY(set_field(c->secret_key, sizeof c->secret_key, secret,
                     "secret access key", where));
    SR_TRY(set_field(c->token, sizeof c->token, token ? token : "",
                     "session token", where));
    c->expiration = expiration;
    return SR_OK;
}

void creds_wipe(struct creds *c)
{
    OPENSSL_cleanse(c, sizeof *c);
}

static void redact_one(char *msg, const char *secret)
{
    size_t sl = strlen(secret);
    if (sl < 4)
        return;
    char *p;
    while ((p = strstr(msg, secret)) != NULL) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + sl, strlen(p + sl) + 1);
    }
}

void creds_redact(char *msg, const struct creds *c)
{
    redact_one(msg, c->secret_key);
    redact_one(msg, c->token);
}

int creds_parse_time(double *out, const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return -1;
    if (*rest == '.')
        while (isdigit((unsigned char)*++rest))
            ;
    if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0 && *rest)
        return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (double)t;
    return 0;
}

/* Parse {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}. */
static sr_status parse_creds_json(struct creds *out, const struct sr_buf *b,
                                  const char *where)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)b->data, b->len, 0, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return SR_FAIL(SR_ERR_AUTH, "%s: response is not a JSON object",
                       where);
    }
    sr_status s = SR_OK;
    const char *code = json_string_value(json_object_get(j, "Code"));
    const char *akid = json_string_value(json_object_get(j, "AccessKeyId"));
    const char *secret = json_string_value(json_object_get(j,
                                                           "SecretAccessKey"));
    const char *token = json_string_value(json_object_get(j, "Token"));
    const char *exp = json_string_value(json_object_get(j, "Expiration"));
    double expiration = 0;
    if (code && strcmp(code, "Success") != 0) {
        s = SR_FAIL(SR_ERR_AUTH, "%s: answered Code %s", where, code);
        goto out;
    }
    if (!akid || !secret) {
        s = SR_FAIL(SR_ERR_AUTH, "%s: response lacks AccessKeyId or "
                    "SecretAccessKey", where);
        goto out;
    }
    if (exp && creds_parse_time(&expiration, exp) != 0) {
        s = SR_FAIL(SR_ERR_AUTH, "%s: cannot parse Expiration \"%s\"", where,
                    exp);
        goto out;
    }
    s = fill(out, akid, secret, token, expiration, where);
out:
    json_decref(j);
    return s;
}

/* ---- environment ------------------------------------------------------ */

/* 1 when the environment holds keys (filled into out), 0 when it holds
 * none. */
static sr_status from_env(struct creds *out, int *found)
{
    const char *akid = env("AWS_ACCESS_KEY_ID");
    const char *secret = env("AWS_SECRET_ACCESS_KEY");
    *found = 0;
    if (!akid && !secret)
        return SR_OK;
    if (!akid || !secret)
        return SR_FAIL(SR_ERR_AUTH, "partial credentials in the environment: "
                       "%s is set but %s is not", akid ? "AWS_ACCESS_KEY_ID"
                       : "AWS_SECRET_ACCESS_KEY", akid ? "AWS_SECRET_ACCESS_KEY"
                       : "AWS_ACCESS_KEY_ID");
    SR_TRY(fill(out, akid, secret, env("AWS_SESSION_TOKEN"), 0,
                "environment"));
    *found = 1;
    return SR_OK;
}

/* ---- shared credentials and config files ------------------------------ */

struct profile_vals {
    int section_found;
    char akid[CREDS_KEY_MAX];
    char secret[CREDS_KEY_MAX];
    char token[CREDS_TOKEN_MAX];
    char region[64];
    char unsupported[32];   /* first key naming a provider we lack */
};

static const char *profile_name(void)
{
    const char *p = env("AWS_PROFILE");
    return p ? p : "default";
}

static sr_status file_path(char *out, size_t cap, const char *var,
                           const char *dflt)
{
    const char *v = env(var);
    const char *home = env("HOME");
    int n;
    if (v && strncmp(v, "~/", 2) == 0 && home)
        n = snprintf(out, cap, "%s/%s", home, v + 2);
    else if (v)
        n = snprintf(out, cap, "%s", v);
    else
        n = snprintf(out, cap, "%s/%s", home ? home : "", dflt);
    if (n < 0 || (size_t)n >= cap)
        return SR_FAIL(SR_ERR_USAGE, "%s: path too long", var);
    return SR_OK;
}

/* Does a section title name the profile? In the config file non-default
 * profiles are "[profile NAME]"; in the credentials file plain "[NAME]". */
static int section_matches(char *title, const char *profile, int config)
{
    title = str_trim(title);
    if (config && strncmp(title, "profile", 7) == 0 &&
        isspace((unsigned char)title[7]))
        return strcmp(str_trim(title + 8), profile) == 0;
    if (config && strcmp(profile, "default") != 0)
        return 0;
    return strcmp(title, profile) == 0;
}

static void take_value(struct profile_vals *v, const char *key,
                       const char *val)
{
    static const char *const unsupported[] = { "role_arn",
        "credential_process", "sso_session", "sso_start_url",
        "web_identity_token_file" };
    if (strcmp(key, "aws_access_key_id") == 0)
        str_copy(v->akid, sizeof v->akid, val);
    else if (strcmp(key, "aws_secret_access_key") == 0)
        str_copy(v->secret, sizeof v->secret, val);
    else if (strcmp(key, "aws_session_token") == 0 ||
             (strcmp(key, "aws_security_token") == 0 && !v->token[0]))
        str_copy(v->token, sizeof v->token, val);
    else if (strcmp(key, "region") == 0)
        str_copy(v->region, sizeof v->region, val);
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if (strcmp(key, unsupported[i]) == 0 && !v->unsupported[0])
            str_copy(v->unsupported, sizeof v->unsupported, key);
}

/* Read the profile's keys from an INI file; a missing file is no error. */
static sr_status scan_ini(struct profile_vals *v, const char *path,
                          const char *profile, int config)
{
    memset(v, 0, sizeof *v);
    FILE *f = fopen(path, "r");
    if (!f)
        return SR_OK;
    char line[CREDS_TOKEN_MAX + 64];
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        if (isspace((unsigned char)line[0]) && in)
            continue;   /* nested sub-section values, e.g. under "s3 =" */
        char *t = str_trim(line);
        if (!*t || *t == '#' || *t == ';')
            continue;
        if (*t == '[') {
            char *end = strchr(t, ']');
            if (end) {
                *end = '\0';
                in = section_matches(t + 1, profile, config);
                v->section_found |= in;
            }
            continue;
        }
        char *eq = strchr(t, '=');
        if (!in || !eq)
            continue;
        *eq = '\0';
        take_value(v, str_trim(t), str_trim(eq + 1));
    }
    fclose(f);
    return SR_OK;
}

int creds_profile_region(char *out, size_t cap)
{
    char path[1024];
    struct profile_vals *v = calloc(1, sizeof *v);
    int found = 0;
    out[0] = '\0';
    if (v && file_path(path, sizeof path, "AWS_CONFIG_FILE", ".aws/config")
        == SR_OK && scan_ini(v, path, profile_name(), 1) == SR_OK &&
        v->region[0])
        found = str_copy(out, cap, v->region) == 0;
    free(v);
    sr_clear_error();
    return found;
}

/* Keys of the selected profile: the credentials file first, then the
 * config file. An explicitly chosen profile that exists in neither file is
 * an error; the implicit "default" may be absent. */
static sr_status from_profile(struct creds *out, int *found, char *why,
                              size_t why_cap)
{
    const char *profile = profile_name();
    int explicit = env("AWS_PROFILE") != NULL;
    char cpath[1024], fpath[1024];
    *found = 0;
    SR_TRY(file_path(cpath, sizeof cpath, "AWS_SHARED_CREDENTIALS_FILE",
                     ".aws/credentials"));
    SR_TRY(file_path(fpath, sizeof fpath, "AWS_CONFIG_FILE", ".aws/config"));
    struct profile_vals *v = malloc(sizeof *v);
    if (!v)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    sr_status s = SR_OK;
    int any_section = 0;
    for (int pass = 0; pass < 2 && !*found; pass++) {
        const char *path = pass == 0 ? cpath : fpath;
        s = scan_ini(v, path, profile, pass == 1);
        if (s != SR_OK)
            goto out;
        any_section |= v->section_found;
        if (!v->akid[0] && !v->secret[0]) {
            if (v->unsupported[0])
                snprintf(why, why_cap, "profile %s in %s uses %s, which is "
                         "not supported (give static keys or use the "
                         "container or instance role)", profile, path,
                         v->unsupported);
            continue;
        }
        char where[1200];
        snprintf(where, sizeof where, "profile %s in %s", profile, path);
        if (!v->akid[0] || !v->secret[0]) {
            s = SR_FAIL(SR_ERR_AUTH, "%s: has %s but not %s", where,
                        v->akid[0] ? "aws_access_key_id"
                                   : "aws_secret_access_key",
                        v->akid[0] ? "aws_secret_access_key"
                                   : "aws_access_key_id");
            goto out;
        }
        s = fill(out, v->akid, v->secret, v->token, 0, where);
        if (s != SR_OK)
            goto out;
        *found = 1;
    }
    if (!*found && explicit && !any_section)
        s = SR_FAIL(SR_ERR_AUTH, "AWS_PROFILE=%s: no such profile in %s or "
                    "%s", profile, cpath, fpath);
out:
    OPENSSL_cleanse(v, sizeof *v);
    free(v);
    return s;
}

/* ---- container provider ----------------------------------------------- */

static int allowed_container_host(const char *host)
{
    static const char *const ok[] = { "169.254.170.2", "169.254.170.23",
        "fd00:ec2::23", "[fd00:ec2::23]", "localhost", "::1", "[::1]" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcasecmp(host, ok[i]) == 0)
            return 1;
    return strncmp(host, "127.", 4) == 0;
}

static sr_status container_url(char *out, size_t cap, int *configured)
{
    const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    *configured = rel || full;
    if (rel) {
        if (snprintf(out, cap, "%s%s%s", CONTAINER_HOST, rel[0] == '/' ? ""
                     : "/", rel) >= (int)cap)
            return SR_FAIL(SR_ERR_USAGE, "AWS_CONTAINER_CREDENTIALS_RELATIVE"
                           "_URI is too long");
        return SR_OK;
    }
    if (!full)
        return SR_OK;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    sr_status s = SR_OK;
    if (!u || curl_url_set(u, CURLUPART_URL, full, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        s = SR_FAIL(SR_ERR_USAGE, "AWS_CONTAINER_CREDENTIALS_FULL_URI=%s is "
                    "not a URL", full);
        goto out;
    }
    if (strcasecmp(scheme, "https") != 0 &&
        !(strcasecmp(scheme, "http") == 0 && allowed_container_host(host))) {
        s = SR_FAIL(SR_ERR_USAGE, "AWS_CONTAINER_CREDENTIALS_FULL_URI=%s: "
                    "must be https, a loopback address, or 169.254.170.2, "
                    "169.254.170.23 or fd00:ec2::23", full);
        goto out;
    }
    if (str_copy(out, cap, full))
        s = SR_FAIL(SR_ERR_USAGE, "AWS_CONTAINER_CREDENTIALS_FULL_URI is too "
                    "long");
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return s;
}

/* "Authorization: <token>" from the token file (wins) or variable. */
static sr_status container_auth(char *out, size_t cap)
{
    const char *file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *tok = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    char buf[CREDS_TOKEN_MAX];
    out[0] = '\0';
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f)
            return SR_FAIL(SR_ERR_AUTH, "AWS_CONTAINER_AUTHORIZATION_TOKEN_"
                           "FILE=%s: cannot open", file);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        tok = str_trim(buf);
    }
    sr_status s = SR_OK;
    if (tok && strpbrk(tok, "\r\n"))
        s = SR_FAIL(SR_ERR_AUTH, "the container authorization token holds a "
                    "line break");
    else if (tok && snprintf(out, cap, "Authorization: %s", tok) >= (int)cap)
        s = SR_FAIL(SR_ERR_AUTH, "the container authorization token is too "
                    "long");
    OPENSSL_cleanse(buf, sizeof buf);
    return s;
}

static sr_status from_container(struct creds *out, const char *url)
{
    char *auth = malloc(CREDS_TOKEN_MAX + 32);
    struct metadata_resp r = { 0 };
    char where[1200];
    snprintf(where, sizeof where, "container credentials endpoint %s", url);
    if (!auth)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    sr_status s = container_auth(auth, CREDS_TOKEN_MAX + 32);
    for (int attempt = 0; s == SR_OK && attempt < 3; attempt++) {
        s = metadata_call(&r, "GET", url, auth[0] ? auth : NULL, 2.0);
        if (s == SR_OK && r.status >= 500) {
            s = SR_ERR_NET;
            snprintf(r.err, sizeof r.err, "HTTP %ld", r.status);
        }
        if (s != SR_ERR_NET)
            break;
        log_debug("credentials: %s: attempt %d failed: %s", where,
                  attempt + 1, r.err);
    }
    if (s == SR_ERR_NET)
        s = SR_FAIL(SR_ERR_AUTH, "%s: %s", where, r.err);
    else if (s == SR_OK && r.status != 200)
        s = SR_FAIL(SR_ERR_AUTH, "%s: HTTP %ld", where, r.status);
    else if (s == SR_OK)
        s = parse_creds_json(out, &r.body, where);
    OPENSSL_cleanse(auth, CREDS_TOKEN_MAX + 32);
    free(auth);
    if (r.body.data)
        OPENSSL_cleanse(r.body.data, r.body.cap);
    buf_free(&r.body);
    return s;
}

/* ---- EC2 instance metadata (IMDSv2) ----------------------------------- */

static void imds_settings(double *timeout_s, int *attempts)
{
    double t;
    uint64_t a;
    *timeout_s = 1.0;
    *attempts = 1;
    if (parse_f64(&t, env("AWS_METADATA_SERVICE_TIMEOUT")) == 0 && t > 0 &&
        t <= 60)
        *timeout_s = t;
    if (parse_u64(&a, env("AWS_METADATA_SERVICE_NUM_ATTEMPTS")) == 0 &&
        a >= 1 && a <= 10)
        *attempts = (int)a;
}

/* One IMDS call with the configured attempts; non-2xx answers come back
 * as r->status. */
static sr_status imds_call(struct metadata_resp *r, const char *method,
                           const char *url, const char *header)
{
    double timeout_s;
    int attempts;
    imds_settings(&timeout_s, &attempts);
    sr_status s = SR_OK;
    for (int i = 0; i < attempts; i++) {
        s = metadata_call(r, method, url, header, timeout_s);
        if (s != SR_ERR_NET && !(s == SR_OK && r->status >= 500))
            break;
    }
    return s;
}

static sr_status from_imds(struct creds *out, const char *ep, char *role,
                           size_t role_cap)
{
    struct metadata_resp r = { 0 };
    char url[1400], hdr[256 + 64] = "";
    sr_status s;
    snprintf(url, sizeof url, "%s/latest/api/token", ep);
    s = imds_call(&r, "PUT", url, "X-aws-ec2-metadata-token-ttl-seconds: "
                  "21600");
    if (s == SR_ERR_NET) {
        s = SR_FAIL(SR_ERR_AUTH, "EC2 instance metadata at %s: %s", ep, r.err);
        goto out;
    }
    if (s == SR_OK && (r.status != 200 || r.body.len == 0 ||
                       r.body.len > 200)) {
        s = SR_FAIL(SR_ERR_AUTH, "EC2 instance metadata at %s: token request "
                    "answered HTTP %ld", ep, r.status);
        goto out;
    }
    if (s != SR_OK)
        goto out;
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s",
             str_trim((char *)r.body.data));

    snprintf(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/",
             ep);
    s = imds_call(&r, "GET", url, hdr);
    if (s == SR_OK && r.status == 404)
        s = SR_FAIL(SR_ERR_AUTH, "EC2 instance metadata at %s: no IAM role "
                    "is attached to this instance", ep);
    else if (s == SR_OK && (r.status != 200 || r.body.len == 0))
        s = SR_FAIL(SR_ERR_AUTH, "EC2 instance metadata at %s: role lookup "
                    "answered HTTP %ld", ep, r.status);
    else if (s == SR_ERR_NET)
        s = SR_FAIL(SR_ERR_AUTH, "EC2 instance metadata at %s: %s", ep, r.err);
    if (s != SR_OK)
        goto out;
    char *nl = strchr((char *)r.body.data, '\n');
    if (nl)
        *nl = '\0';
    if (str_copy(role, role_cap, str_trim((char *)r.body.data))) {
        s = SR_FAIL(SR_ERR_AUTH, "EC2 instance metadata: role name too long");
        goto out;
    }

    snprintf(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/"
             "%s", ep, role);
    s = imds_call(&r, "GET", url, hdr);
    char where[1400];
    snprintf(where, sizeof where, "EC2 instance role %s at %s", role, ep);
    if (s == SR_ERR_NET)
        s = SR_FAIL(SR_ERR_AUTH, "%s: %s", where, r.err);
    else if (s == SR_OK && r.status != 200)
        s = SR_FAIL(SR_ERR_AUTH, "%s: HTTP %ld", where, r.status);
    else if (s == SR_OK)
        s = parse_creds_json(out, &r.body, where);
out:
    OPENSSL_cleanse(hdr, sizeof hdr);
    if (r.body.data)
        OPENSSL_cleanse(r.body.data, r.body.cap);
    buf_free(&r.body);
    return s;
}

/* ---- the chain -------------------------------------------------------- */

/* Fetch again from the remembered temporary source. */
static sr_status refetch(struct creds_chain *c, struct creds *out)
{
    if (c->src == SRC_CONTAINER) {
        char url[1200];
        int configured;
        SR_TRY(container_url(url, sizeof url, &configured));
        return from_container(out, url);
    }
    char ep[512], role[256];
    SR_TRY(imds_endpoint(ep, sizeof ep));
    return from_imds(out, ep, role, sizeof role);
}

static sr_status resolve(struct creds_chain *c, struct creds *out)
{
    int found = 0;
    char why[1400] = "";
    if (!env("AWS_PROFILE")) {
        SR_TRY(from_env(out, &found));
        if (found) {
            c->src = SRC_ENV;
            snprintf(c->src_name, sizeof c->src_name, "environment");
            return SR_OK;
        }
    }
    SR_TRY(from_profile(out, &found, why, sizeof why));
    if (found) {
        c->src = SRC_PROFILE;
        snprintf(c->src_name, sizeof c->src_name, "profile %s",
                 profile_name());
        return SR_OK;
    }
    char url[1200];
    SR_TRY(container_url(url, sizeof url, &found));
    if (found) {
        SR_TRY(from_container(out, url));
        c->src = SRC_CONTAINER;
        snprintf(c->src_name, sizeof c->src_name, "container");
        return SR_OK;
    }
    char imds[512] = "";
    if (!imds_disabled()) {
        char role[128];
        SR_TRY(imds_endpoint(imds, sizeof imds));
        if (from_imds(out, imds, role, sizeof role) == SR_OK) {
            c->src = SRC_IMDS;
            snprintf(c->src_name, sizeof c->src_name, "instance role %s",
                     role);
            return SR_OK;
        }
        snprintf(imds, sizeof imds, "%s", sr_errmsg_user());
    }
    return SR_FAIL(SR_ERR_AUTH, "no AWS credentials found: tried %sprofile "
                   "%s (credentials and config files)%s%s, the container "
                   "provider (AWS_CONTAINER_CREDENTIALS_* not set) and %s",
                   env("AWS_PROFILE") ? "" : "the environment "
                   "(AWS_ACCESS_KEY_ID), ", profile_name(), why[0] ? ": " : "",
                   why, imds[0] ? imds : "EC2 instance metadata (disabled by "
                   "AWS_EC2_METADATA_DISABLED)");
}

sr_status creds_chain_open(struct creds_chain **out)
{
    struct creds_chain *c = calloc(1, sizeof *c);
    if (!c)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return SR_FAIL(SR_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    *out = c;
    return SR_OK;
}

void creds_chain_close(struct creds_chain *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    creds_wipe(&c->cur);
    free(c);
}

/* Does c->cur need fetching now? 0 no, 1 may (advisory), 2 must. */
static int fetch_needed(const struct creds_chain *c, double now)
{
    double exp = c->cur.expiration;
    if (!c->have)
        return 2;
    if (exp <= 0 || now < exp - ADVISORY_S)
        return 0;
    if (now >= exp - MANDATORY_S)
        return 2;
    return now - c->last_try >= RETRY_GAP_S;
}

/* With the lock held: resolve the chain or refresh from its source. A
 * failed refresh keeps credentials that have not expired yet. */
static sr_status fetch(struct creds_chain *c, struct creds *tmp, double now)
{
    c->last_try = now;
    if (!c->have) {
        SR_TRY(resolve(c, tmp));
        c->cur = *tmp;
        c->have = 1;
        log_debug("credentials: using %s", c->src_name);
        return SR_OK;
    }
    sr_status s = refetch(c, tmp);
    if (s == SR_OK) {
        c->cur = *tmp;
        log_debug("credentials: refreshed from %s", c->src_name);
        return SR_OK;
    }
    double left = c->cur.expiration - now;
    if (left <= 0)
        return s;
    log_warn("credentials from %s expire in %.0f s and could not be "
             "refreshed: %s", c->src_name, left, sr_errmsg_user());
    return SR_OK;
}

sr_status creds_chain_get(struct creds_chain *c, struct creds *out)
{
    sr_status s = SR_OK;
    pthread_mutex_lock(&c->mu);
    double now = wall_s();
    if (fetch_needed(c, now)) {
        struct creds *tmp = malloc(sizeof *tmp);
        if (!tmp) {
            s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        } else {
            s = fetch(c, tmp, now);
            creds_wipe(tmp);
            free(tmp);
        }
    }
    if (s == SR_OK)
        *out = c->cur;
    pthread_mutex_unlock(&c->mu);
    return s;
}

void creds_chain_invalidate(struct creds_chain *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->src == SRC_CONTAINER || c->src == SRC_IMDS) {
        c->have = 0;
        creds_wipe(&c->cur);
    }
    pthread_mutex_unlock(&c->mu);
}

void creds_chain_source(struct creds_chain *c, char *out, size_t cap)
{
    pthread_mutex_lock(&c->mu);
    snprintf(out, cap, "%s", c->have ? c->src_name : "");
    pthread_mutex_unlock(&c->mu);
}
