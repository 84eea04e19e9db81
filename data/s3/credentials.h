/*
 * credentials.h: AWS credentials by the SDKs' standard chain: environment
 * keys; a profile in the shared credentials and config files; the container
 * provider (ECS, SageMaker); the EC2 instance role through IMDSv2. The first
 * source that is configured wins; its temporary credentials are refreshed
 * before they expire. One chain serves many threads.
 *
 * Secret keys, session tokens and container authorization tokens never
 * appear in a log line or an error message.
 */
#ifndef SPOTRUN_CREDENTIALS_H
#define SPOTRUN_CREDENTIALS_H

#include <stddef.h>

#include "../../common/status.h"

#define CREDS_KEY_MAX 256
#define CREDS_TOKEN_MAX 8192

/* A snapshot of one set of credentials. */
struct creds {
    char access_key[CREDS_KEY_MAX];
    char secret_key[CREDS_KEY_MAX];
    char token[CREDS_TOKEN_MAX];   /* "" for long-term keys */
    double expiration;             /* Unix seconds; 0 = does not expire */
};

struct creds_chain;

/* A chain that resolves on first use (so opening never fails for lack of
 * credentials). */
sr_status creds_chain_open(struct creds_chain **out) SR_MUST_USE;
void creds_chain_close(struct creds_chain *c);

/* Copy the current credentials into out, resolving the chain or refreshing
 * temporary credentials first when needed. SR_ERR_AUTH when no source has
 * credentials; the message lists what was tried. */
sr_status creds_chain_get(struct creds_chain *c, struct creds *out)
    SR_MUST_USE;

/* Forget cached temporary credentials (e.g. after ExpiredToken), so the
 * next get fetches fresh ones. Static keys are kept. */
void creds_chain_invalidate(struct creds_chain *c);

/* Where the current credentials came from, e.g. "environment",
 * "profile dev", "container", "instance role r"; "" before resolving. */
void creds_chain_source(struct creds_chain *c, char *out, size_t cap);

/* The `region` of the selected profile (AWS_PROFILE, default "default") in
 * the config file; 0 and "" when absent. */
int creds_profile_region(char *out, size_t cap);

/* Replace, in place, every occurrence of c's secret key and session token
 * in msg with "***". */
void creds_redact(char *msg, const struct creds *c);

/* An ISO 8601 UTC time as AWS writes it ("2024-05-01T12:34:56Z", also
 * with fractional seconds or "+00:00") in Unix seconds; -1 if malformed. */
int creds_parse_time(double *out, const char *s);

/* Overwrite a snapshot's secrets. */
void creds_wipe(struct creds *c);

#endif
