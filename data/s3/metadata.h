/*
 * metadata.h: HTTP to the metadata endpoints of an AWS host: the EC2
 * instance metadata service (IMDSv2) and the container credentials
 * endpoint. One request at a time with short timeouts, no proxy and a
 * bounded body, so a host without them fails fast. Shared by the
 * credential chain (instance role, container credentials) and the spot
 * watcher (interruption notices).
 */
#ifndef SPOTRUN_METADATA_H
#define SPOTRUN_METADATA_H

#include <curl/curl.h>
#include <stddef.h>

#include "../../common/buf.h"
#include "../../common/status.h"

#define METADATA_BODY_MAX (64 * 1024)

struct metadata_resp {
    long status;
    struct sr_buf body;         /* NUL-terminated on success */
    char err[CURL_ERROR_SIZE];
};

/* One request. A transport failure is SR_ERR_NET with curl's reason in
 * r->err; any HTTP answer is SR_OK with r->status set. header is one
 * "Name: value" line or NULL; it never appears in a message. */
sr_status metadata_call(struct metadata_resp *r, const char *method,
                        const char *url, const char *header,
                        double timeout_s) SR_MUST_USE;

/* The IMDS base URL: AWS_EC2_METADATA_SERVICE_ENDPOINT, else the IPv4 or
 * (AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6) IPv6 default; no trailing
 * slash. */
sr_status imds_endpoint(char *out, size_t cap) SR_MUST_USE;

/* Is IMDS turned off (AWS_EC2_METADATA_DISABLED=true)? */
int imds_disabled(void);

#endif
