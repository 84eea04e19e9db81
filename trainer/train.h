/*
 * train.h: the training job: its configuration (filled by launcher/config.c
 * from defaults, hyperparameters.json, a job file, the environment and
 * flags) and train_run(), the loop that every rank executes.
 */
#ifndef SPOTRUN_TRAIN_H
#define SPOTRUN_TRAIN_H

#include <stdint.h>

#include "../common/status.h"
#include "../data/storage.h"
#include "comm.h"
#include "mlp.h"
#include "optim.h"

struct train_config {
    char data[STORAGE_URI_MAX];
    char val_data[STORAGE_URI_MAX];
    char model[16];
    int hidden[MLP_MAX_LAYERS];
    int nhidden;
    int64_t epochs;
    int64_t batch_size;         /* global */
    int64_t eval_batch_size;    /* per rank, per forward call */
    char optimizer[8];          /* sgd | adamw */
    double lr;
    double min_lr;
    int64_t warmup_steps;
    double momentum;
    double weight_decay;
    double beta1, beta2, eps;
    uint64_t seed;
    uint64_t shuffle_block;     /* records; 0 = 64 MiB worth */
    char device[8];             /* auto | cpu | cuda */
    char precision[8];          /* fp32 | tf32 | bf16 (GPU) */
    char comm[8];               /* auto | nccl | mpi (GPU all-reduce) */
    double bucket_mb;           /* gradient all-reduce bucket, MiB (GPU) */
    int64_t threads;            /* 0 = cores / ranks on the host */
    char model_dir[STORAGE_URI_MAX];
    char metrics_file[STORAGE_URI_MAX];
    char step_metrics_file[STORAGE_URI_MAX];
    int64_t check_sync_every;   /* steps; 0 = only at the end */
    char progress[8];           /* auto | bar | lines | off */
    double progress_every_s;
    char log_level[8];
    int64_t max_steps;          /* stop after this many steps (0 = all) */
    char checkpoint[STORAGE_URI_MAX];
    int64_t checkpoint_every_steps;     /* 0 = off */
    double checkpoint_every_s;          /* 0 = off */
    int checkpoint_every_epoch;
    int64_t keep_checkpoints;           /* 0 = keep all */
    int no_resume;
    uint64_t read_ahead;                /* reader window, bytes */
    uint64_t read_chunk;                /* bytes per ranged read */
    int64_t read_concurrency;
    char cache_dir[STORAGE_URI_MAX];
    uint64_t cache_limit;
    char record_log[STORAGE_URI_MAX];   /* local path prefix; debug */
    double collective_timeout_s;
    char on_rebalance[12];              /* checkpoint | stop | ignore */
    double spot_poll_s;
};

/* Run the whole job on this rank. config_json is the effective
 * configuration, stored with the model. Returns SR_OK when training
 * finished. Every rank returns the same status; *quiet is set on ranks
 * whose error was reported by another. */
sr_status train_run(const struct train_config *cfg, const char *config_json,
                    struct comm *c, int *quiet) SR_MUST_USE;

#endif
