/*
 * metadata.c: HTTP to local AWS metadata endpoints (metadata.h). A fresh
 * curl handle per request: these are rare (a credential refresh, a spot
 * poll every few seconds), and a handle per call keeps them independent of
 * any thread.
 */
#include "metadata.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../common/util.h"

#define IMDS_DEFAULT "http://169.254.169.254"
#define IMDS_DEFAULT_V6 "http://[fd00:ec2::254]"

static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int imds_disabled(void)
{
    const char *v = env_set("AWS_EC2_METADATA_DISABLED");
    return v && strcasecmp(v, "true") == 0;
}

sr_status imds_endpoint(char *out, size_t cap)
{
    const char *ep = env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    const char *mode = env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
    if (!ep)
        ep = mode && strcasecmp(mode, "IPv6") == 0 ? IMDS_DEFAULT_V6
                                                    : IMDS_DEFAULT;
    if (str_copy(out, cap, ep))
        return SR_FAIL(SR_ERR_USAGE, "AWS_EC2_METADATA_SERVICE_ENDPOINT is "
                       "too long");
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/')
        out[--n] = '\0';
    return SR_OK;
}

static size_t http_body_cb(char *p, size_t size, size_t n, void *arg)
{
    struct sr_buf *b = arg;
    size_t len = size * n;
    if (b->len + len > METADATA_BODY_MAX || buf_append(b, p, len) != SR_OK)
        return 0;
    return len;
}

sr_status metadata_call(struct metadata_resp *r, const char *method,
                        const char *url, const char *header, double timeout_s)
{
    r->status = 0;
    r->body.len = 0;
    r->err[0] = '\0';
    CURL *h = curl_easy_init();
    if (!h)
        return SR_FAIL(SR_ERR_NOMEM, "curl_easy_init failed");
    struct curl_slist *hl = NULL;
    sr_status s = SR_OK;
    if (header) {
        hl = curl_slist_append(NULL, header);
        if (!hl) {
            s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    long ms = (long)(timeout_s * 1000);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->err);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        if (!r->err[0])
            snprintf(r->err, sizeof r->err, "%s", curl_easy_strerror(cc));
        s = SR_ERR_NET;
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    s = buf_append(&r->body, "", 0);
out:
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    return s;
}
