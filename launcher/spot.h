/*
 * spot.h: interruption notices. Any of SIGTERM, SIGINT, SIGUSR1 and SIGUSR2
 * requests a stop (the handler only records it: async-signal-safe). On EC2
 * a thread polls the instance metadata service, with IMDSv2 tokens only,
 * for a spot instance-action (a stop, with the time of the action as the
 * deadline) and a rebalance recommendation. The thread is off when
 * AWS_EC2_METADATA_DISABLED is true or when no metadata service answers a
 * quick token request at AWS_EC2_METADATA_SERVICE_ENDPOINT (default
 * http://169.254.169.254).
 *
 * The training loop asks once per step; it never blocks.
 */
#ifndef SPOTRUN_SPOT_H
#define SPOTRUN_SPOT_H

#include "../common/status.h"

enum spot_kind {
    SPOT_NONE = 0,
    SPOT_SIGNAL,
    SPOT_INSTANCE_ACTION,
    SPOT_REBALANCE,
};

struct spot_notice {
    enum spot_kind kind;
    int signo;              /* SPOT_SIGNAL */
    double noticed;         /* Unix seconds it was seen */
    double deadline;        /* Unix seconds of the action; 0 = unknown */
    char what[96];          /* "SIGTERM", "instance-action terminate", ... */
};

struct spot_opts {
    int poll_metadata;      /* this process polls IMDS (one per host) */
    double poll_interval_s; /* 5 s, as AWS recommends */
};

struct spot_watcher;

/* Install the signal handlers and, if asked and a metadata service
 * answers, start the polling thread. */
sr_status spot_start(struct spot_watcher **out, const struct spot_opts *o)
    SR_MUST_USE;
/* A stop request (signal or instance-action) seen so far: 1 and the first
 * such notice, or 0. */
int spot_stop_requested(struct spot_watcher *w, struct spot_notice *out);
/* A rebalance recommendation not yet taken: 1 (once per recommendation)
 * and its notice, or 0. */
int spot_take_rebalance(struct spot_watcher *w, struct spot_notice *out);
/* Whether the metadata thread is running (for the start-up log). */
int spot_polling(const struct spot_watcher *w);
/* Stop the thread. The signal handlers stay installed (they only record):
 * a late notice never kills a process that is winding down. */
void spot_stop(struct spot_watcher *w);

/* "2017-09-18T08:22:00Z" -> Unix seconds; -1 when malformed. */
double spot_parse_time(const char *s);

#endif
