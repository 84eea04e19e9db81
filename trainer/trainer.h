/*
 * trainer.h: the training job's state, shared by the loop (train.c) and
 * its checkpoint glue (train_ckpt.c). Private to trainer/.
 */
#ifndef SPOTRUN_TRAINER_H
#define SPOTRUN_TRAINER_H

#include "../checkpoint/writer.h"
#include "../launcher/spot.h"
#include "../data/dataset.h"
#include "../data/reader.h"
#include "../data/sampler.h"
#include "backend.h"
#include "batch.h"
#include "metrics.h"
#include "train.h"

struct split {                  /* one dataset, streamed */
    struct dataset ds;
    struct batch_spec spec;
    struct reader *rd;
};

/* What the training reader's planner walks: this rank's slices of every
 * global batch from the resume cursor to the last step. */
struct train_seq {
    struct sampler *sampler;
    uint64_t batch, local;      /* global and per-rank batch */
    int rank, world;
    uint64_t steps_per_epoch;
    uint64_t epoch0, step0;     /* where this run starts */
    uint64_t epoch;             /* the sampler's current epoch */
};

/* The validation reader's: this rank's range of the split, once per
 * epoch. */
struct val_seq {
    uint64_t lo, n;
};

/* Where training stands: what a checkpoint records and a resume restores.
 * After a completed epoch the cursor points at the next epoch's start. */
struct cursor {
    int64_t step;               /* optimizer steps done */
    int64_t epoch;              /* epoch in progress, 0-based */
    int64_t position;           /* records of the epoch consumed globally */
    double loss_sum;            /* the epoch's running sums */
    int64_t steps;
    double wait_s;
};

struct trainer {
    const struct train_config *cfg;
    const char *config_json;
    struct comm *c;
    struct storage *st;
    struct split train, val;
    int has_val;
    char dataset_id[65];
    struct mlp m;
    const struct backend_ops *ops;
    struct backend *be;
    struct backend_comm bcomm;  /* the collectives lent to the backend */
    struct pool *pool;          /* math and decoding threads */
    struct optim_params op;
    struct lr_schedule sched;
    struct sampler sampler;
    struct train_seq tseq;
    struct val_seq vseq;
    int local_batch;
    int64_t steps_per_epoch;
    int64_t total_steps;
    struct cursor cur;
    float *x;                   /* decoded batch */
    int32_t *y;
    const uint8_t **recs;
    uint64_t *ids;
    float *host_params;
    struct metrics metrics;
    struct sr_buf step_log;
    FILE *record_log;
    struct progress progress;
    /* checkpoints (rank 0 writes; every rank resumes) */
    struct ckpt_writer *ckw;
    double last_ckpt;           /* when the last one was taken */
    int ckpt_pending;           /* one is due but another is in flight */
    double stall_s;             /* time the loop spent snapshotting */
    int quiet;                  /* the failure was another rank's */
    /* interruptions */
    struct spot_watcher *spot;
    int stop_agreed;            /* every rank stops after this step */
    int ckpt_requested;         /* a rebalance asks for a checkpoint */
    int64_t start_step;         /* where this run began */
};

/* Collective: every rank learns the worst status among them. A rank that
 * did not fail gets "another rank failed during <phase>" and is quiet; so
 * is every rank but 0 when all failed alike. */
sr_status trainer_agree(struct trainer *t, sr_status local,
                        const char *phase) SR_MUST_USE;

size_t trainer_opt_state_len(const struct trainer *t);
/* Records per shuffle block: --shuffle-block, or 64 MiB of records. */
uint64_t trainer_shuffle_block(const struct trainer *t);

/* Start the writer (rank 0) and resume from the newest usable checkpoint
 * under --checkpoint unless --no-resume. Collective. */
sr_status trainer_ckpt_setup(struct trainer *t) SR_MUST_USE;
/* Called after every step (and at epoch ends with force): take a
 * checkpoint in the background when one is due. Rank 0 only acts. */
sr_status trainer_ckpt_maybe(struct trainer *t, int force) SR_MUST_USE;
/* Take a checkpoint of the current cursor now and wait for it to commit
 * (the final and the emergency checkpoint). Rank 0 only acts. */
sr_status trainer_ckpt_now(struct trainer *t) SR_MUST_USE;
void trainer_ckpt_teardown(struct trainer *t);

#endif
