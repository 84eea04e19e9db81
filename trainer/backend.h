/*
 * backend.h: where the math runs. The training loop speaks only to this
 * table; the CPU backend (OpenBLAS) is built in, the CUDA backend comes from
 * a plugin loaded at run time. A backend owns the parameters, gradients,
 * optimizer state and activations in its own memory; the loop moves
 * batches in and snapshots out through these calls.
 *
 * Gradient buffer: nparams floats followed by BACKEND_GRAD_EXTRA floats the
 * loop uses to fold per-step scalars (loss sum, stop requests, failures)
 * into the same all-reduce as the gradients.
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

struct pool;

struct backend_opts {
    int max_batch;          /* rows per forward call, train or eval */
    struct pool *pool;      /* CPU threads for math, shared with the
                               caller's batch decoding; NULL = one thread */
    enum optim_kind optim;
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
     * of the n losses times grad_scale goes to grad[nparams +
     * GRAD_EXTRA_LOSS]. The other extras belong to the caller. */
    sr_status (*train_step)(struct backend *b, const float *x,
                            const int32_t *y, int n, float grad_scale);
    /* The gradient buffer (device memory for GPU backends) and its length
     * in floats including the extras. */
    float *(*grads)(struct backend *b, size_t *len);
    /* Apply the optimizer with the (all-reduced) gradients. step from 1. */
    sr_status (*optimizer_step)(struct backend *b,
                                const struct optim_params *op, float lr,
                                uint64_t step);
    /* Forward only: loss sum and number of correct argmax predictions. */
    sr_status (*evaluate)(struct backend *b, const float *x, const int32_t *y,
                          int n, double *loss_sum, int64_t *correct);
};

extern const struct backend_ops backend_cpu_ops;

#endif
