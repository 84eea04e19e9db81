/*
 * backend.h: where the math runs. The training loop speaks only to this
 * table; the CPU backend (OpenBLAS) is built in, the CUDA backend comes from
 * a plugin loaded at run time (trainer/plugin.h). A backend owns the
 * parameters, gradients, optimizer state and activations in its own memory;
 * the loop moves batches in and snapshots out through these calls.
 *
 * One step: train_step (forward + backward), grad_allreduce (the gradients
 * summed over the ranks, and with them BACKEND_GRAD_EXTRA per-step scalars
 * of the loop: loss sum, stop request, failure, checkpoint request, so they
 * need no collective of their own), optimizer_step. A GPU backend runs the
 * first asynchronously and starts summing a layer's gradients while the
 * layers below it are still in their backward; grad_allreduce finishes the
 * sum and returns the scalars to the host.
 */
#ifndef SPOTRUN_BACKEND_H
#define SPOTRUN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"
#include "mlp.h"
#include "optim.h"

#define BACKEND_GRAD_EXTRA 4
enum { GRAD_EXTRA_LOSS = 0, GRAD_EXTRA_STOP = 1, GRAD_EXTRA_FAILED = 2,
       GRAD_EXTRA_CKPT = 3 };

/* Matrix product precision of a GPU backend; the CPU always uses FP32.
 * BF16 keeps FP32 master weights, gradients and optimizer state. */
enum backend_precision { PRECISION_FP32 = 0, PRECISION_TF32 = 1,
                         PRECISION_BF16 = 2 };

/* How a GPU backend sums gradients across ranks: NCCL (one GPU per rank),
 * MPI through host memory (several ranks may share a GPU), or auto (NCCL
 * when there are several ranks and each has a GPU of its own). */
enum backend_comm_kind { BACKEND_COMM_AUTO = 0, BACKEND_COMM_NCCL = 1,
                         BACKEND_COMM_MPI = 2 };

/* The collectives a backend may use, lent by the loop (MPI underneath;
 * trainer/comm.c). Every call is collective over all ranks. */
struct backend_comm {
    int rank, size;
    int local_rank, local_size;     /* within this host */
    void *ctx;
    /* rank 0's n bytes to every rank */
    sr_status (*bcast)(void *ctx, void *buf, size_t n);
    /* in-place SUM over n host floats */
    sr_status (*allreduce_f32)(void *ctx, float *buf, size_t n);
};

struct pool;

struct backend_opts {
    int max_batch;          /* rows per forward call, train or eval */
    struct pool *pool;      /* CPU threads for math, shared with the
                               caller's batch decoding; NULL = one thread */
    enum optim_kind optim;
    const struct backend_comm *comm;    /* NULL = a single process */
    /* GPU backends only */
    enum backend_precision precision;
    enum backend_comm_kind comm_kind;
    size_t bucket_bytes;    /* gradient all-reduce bucket (0 = 25 MiB) */
    double comm_timeout_s;  /* a collective blocked this long is aborted
                               (0 = 60 s) */
};

struct backend;

struct backend_ops {
    const char *name;
    sr_status (*create)(struct backend **out, const struct mlp *m,
                        const struct backend_opts *o);
    void (*destroy)(struct backend *b);
    /* copy parameters in / out (host floats, nparams) */
    sr_status (*set_params)(struct backend *b, const float *host);
    sr_status (*get_params)(struct backend *b, float *host);
    /* optimizer state in / out (host floats, state_per_param x nparams) */
    sr_status (*set_opt_state)(struct backend *b, const float *host);
    sr_status (*get_opt_state)(struct backend *b, float *host);
    /* Forward and backward on n rows: x is n x input floats, y n labels.
     * Gradients are written (not accumulated) scaled by grad_scale; the sum
     * of the n losses times grad_scale becomes this rank's
     * GRAD_EXTRA_LOSS. May return before the work is done. */
    sr_status (*train_step)(struct backend *b, const float *x,
                            const int32_t *y, int n, float grad_scale);
    /* Sum the step's gradients over the ranks, in place. extra holds the
     * loop's scalars (its GRAD_EXTRA_LOSS is ignored: the backend supplies
     * the step's loss); on return it holds their sums over the ranks.
     * Called every step, also when train_step was not (a rank that failed
     * before it still joins). Collective. */
    sr_status (*grad_allreduce)(struct backend *b,
                                float extra[BACKEND_GRAD_EXTRA]);
    /* Gradients in, and out with the extras after them (nparams +
     * BACKEND_GRAD_EXTRA host floats): for tests and checks. */
    sr_status (*set_grads)(struct backend *b, const float *host);
    sr_status (*get_grads)(struct backend *b, float *host);
    /* Apply the optimizer with the (all-reduced) gradients. step from 1. */
    sr_status (*optimizer_step)(struct backend *b,
                                const struct optim_params *op, float lr,
                                uint64_t step);
    /* Forward only: loss sum and number of correct argmax predictions,
     * added to *loss_sum and *correct. */
    sr_status (*evaluate)(struct backend *b, const float *x, const int32_t *y,
                          int n, double *loss_sum, int64_t *correct);
    /* Host memory the backend reads fastest (page-locked for a GPU) for
     * the batches the loop decodes; NULL = malloc/free. Independent of any
     * backend instance. */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);
};

extern const struct backend_ops backend_cpu_ops;

#endif
