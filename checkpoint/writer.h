/*
 * writer.h: checkpoints written in the background. The training loop
 * copies parameters and optimizer state into the writer's snapshot
 * buffers (the only time training stalls) and submits; a thread builds the
 * HDF5 image, commits it (state, then manifest) and prunes old ones. At
 * most one checkpoint is in flight: while one is, the snapshot buffers are
 * busy and the loop must wait or try again later.
 *
 * write_now() does the same in the calling thread: the emergency
 * checkpoint (wait for the in-flight one, fill the buffers, write now).
 */
#ifndef SPOTRUN_CKPT_WRITER_H
#define SPOTRUN_CKPT_WRITER_H

#include <stddef.h>

#include "ckpt.h"

struct ckpt_writer;

struct ckpt_writer_opts {
    struct storage *st;
    const char *root;           /* checkpoint URI */
    int keep;                   /* committed checkpoints kept; 0 = all */
    size_t nparams;
    size_t nstate;              /* optimizer state floats */
    const char *config_json;
};

struct ckpt_writer_stats {
    int64_t committed;          /* checkpoints committed */
    int64_t failed;
    int64_t last_step;          /* of the newest committed, -1 if none */
    double last_write_s;        /* image + upload + commit of the newest */
    uint64_t last_bytes;
    double write_s;             /* total time spent writing */
};

sr_status ckpt_writer_start(struct ckpt_writer **out,
                            const struct ckpt_writer_opts *o) SR_MUST_USE;
/* The snapshot buffers; fill them only while the writer is idle. */
void ckpt_writer_buffers(struct ckpt_writer *w, float **params,
                         float **opt_state);
int ckpt_writer_busy(struct ckpt_writer *w);
/* Step of the checkpoint in flight (-1 when idle). */
int64_t ckpt_writer_in_flight(struct ckpt_writer *w);
/* Hand the filled buffers to the thread. The writer must be idle. */
void ckpt_writer_submit(struct ckpt_writer *w, const struct ckpt_meta *meta);
/* Wait for the in-flight write; returns its status (SR_OK if none). */
sr_status ckpt_writer_wait(struct ckpt_writer *w) SR_MUST_USE;
/* Write the filled buffers now, in this thread. Call ckpt_writer_wait()
 * before filling them, as for submit. */
sr_status ckpt_writer_write_now(struct ckpt_writer *w,
                                const struct ckpt_meta *meta) SR_MUST_USE;
void ckpt_writer_stats(struct ckpt_writer *w, struct ckpt_writer_stats *out);
/* Wait for the in-flight write and stop the thread. */
void ckpt_writer_stop(struct ckpt_writer *w);

#endif
