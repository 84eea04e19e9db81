/*
 * metrics.h: what rank 0 reports. Once per epoch one line of name=value
 * pairs on stdout (the line SageMaker MetricDefinitions, Katib's default
 * collector and the sweep script parse), and the same record as one JSON
 * object appended to --metrics-file. Numbers are plain decimals.
 *
 * Within an epoch, progress goes to stderr: a bar on a terminal, a line
 * every few seconds otherwise.
 */
#ifndef SPOTRUN_METRICS_H
#define SPOTRUN_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "../common/buf.h"
#include "../data/storage.h"

struct epoch_metrics {
    int64_t epoch;          /* 1-based */
    int64_t step;           /* optimizer steps so far */
    double train_loss;
    int has_val;
    double val_loss;
    double val_accuracy;
    double samples_per_sec;
    double data_wait_s;
    double epoch_s;
};

struct metrics {
    struct storage *st;
    char uri[STORAGE_URI_MAX];
    struct sr_buf jsonl;    /* the whole metrics file */
};

/* uri may be empty (no file). An existing file is kept and appended to,
 * except records of epochs after keep_epochs (a run resumed from an older
 * checkpoint reports those epochs again). */
sr_status metrics_open(struct metrics *m, struct storage *st,
                       const char *uri, int64_t keep_epochs) SR_MUST_USE;
/* Append to out the lines of a JSON-lines object whose integer `key` is at
 * most max; a missing object adds nothing. */
sr_status jsonl_load(struct sr_buf *out, struct storage *st, const char *uri,
                     const char *key, int64_t max) SR_MUST_USE;
/* Print the line to out and append + rewrite the JSON lines file. */
sr_status metrics_epoch(struct metrics *m, const struct epoch_metrics *e,
                        FILE *out) SR_MUST_USE;
void metrics_close(struct metrics *m);
/* Format the name=value line (no newline) into buf. */
void metrics_format_line(const struct epoch_metrics *e, char *buf,
                         size_t cap);

enum progress_mode { PROGRESS_OFF, PROGRESS_BAR, PROGRESS_LINES };

struct progress {
    enum progress_mode mode;
    double every_s;
    double last;
    int drawn;
};

/* mode: "auto" picks bar when stderr is a terminal, lines otherwise. */
void progress_init(struct progress *p, const char *mode, double every_s);
void progress_update(struct progress *p, int64_t epoch, int64_t epochs,
                     int64_t step, int64_t steps, double loss,
                     double samples_per_sec);
void progress_end(struct progress *p);

#endif
