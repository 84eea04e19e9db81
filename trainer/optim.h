/*
 * optim.h: optimizer and learning-rate schedule definitions, and the CPU
 * update rules. SGD follows torch.optim.SGD (momentum buffer, weight decay
 * added to the gradient); AdamW follows torch.optim.AdamW (decoupled decay,
 * bias correction). Weight decay applies to weight matrices, not biases.
 */
#ifndef SPOTRUN_OPTIM_H
#define SPOTRUN_OPTIM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define OPTIM_HD __host__ __device__
#else
#define OPTIM_HD
#endif

enum optim_kind { OPTIM_SGD = 0, OPTIM_ADAMW = 1 };

struct optim_params {
    enum optim_kind kind;
    double momentum;        /* SGD */
    double weight_decay;
    double beta1, beta2, eps;   /* AdamW */
};

/* Optimizer state floats per parameter: 1 for SGD (momentum), 2 for AdamW
 * (first and second moments). */
int optim_state_per_param(enum optim_kind k);

/* One update of n parameters. wd is the decay for this tensor (0 for
 * biases). state holds optim_state_per_param() x n floats, moment after
 * moment. AdamW's step_size and inv_bc2_sqrt come from
 * optim_adamw_coefs(), once per step, however many ranges it updates. */
void optim_sgd_cpu(float *p, const float *g, float *mom, size_t n, float lr,
                   float momentum, float wd);
void optim_adamw_cpu(float *p, const float *g, float *m, float *v, size_t n,
                     float lr, float beta1, float beta2, float eps, float wd,
                     float step_size, float inv_bc2_sqrt);

/* The update rules for one parameter, shared by the CPU loops and the
 * CUDA kernels (trainer/cuda/cuda_kernels.cu) so that both compute the
 * same expressions; the plugin is built with --fmad=false, so they round
 * alike bit for bit. Each returns the new parameter. */
static inline OPTIM_HD float optim_sgd_one(float p, float g, float *mom,
                                           float lr, float momentum,
                                           float wd)
{
    float d = g + wd * p;
    float b = momentum * *mom + d;
    *mom = b;
    return p - lr * b;
}

/* decay = 1 - lr * wd; step_size and inv_bc2_sqrt from optim_adamw_coefs().
 * The denominator is torch's sqrt(v) / sqrt(1 - beta2^step) + eps with the
 * division turned into a product by the reciprocal computed once per step
 * (within one rounding of it): one division per parameter instead of two,
 * which is what bounds this loop on the CPU. */
static inline OPTIM_HD float optim_adamw_one(float p, float g, float *m,
                                             float *v, float beta1,
                                             float beta2, float eps,
                                             float decay, float step_size,
                                             float inv_bc2_sqrt)
{
    float mi = beta1 * *m + (1.0f - beta1) * g;
    float vi = beta2 * *v + (1.0f - beta2) * g * g;
    *m = mi;
    *v = vi;
    float denom = sqrtf(vi) * inv_bc2_sqrt + eps;
    return p * decay - step_size * mi / denom;
}

/* AdamW's bias corrections for `step` (from 1), once per step on the
 * host. */
static inline void optim_adamw_coefs(float lr, float beta1, float beta2,
                                     uint64_t step, float *step_size,
                                     float *inv_bc2_sqrt)
{
    float bc1 = 1.0f - powf(beta1, (float)step);
    float bc2 = 1.0f - powf(beta2, (float)step);
    *step_size = lr / bc1;
    *inv_bc2_sqrt = 1.0f / sqrtf(bc2);
}

struct lr_schedule {
    double lr;              /* peak */
    double min_lr;          /* floor of the cosine */
    uint64_t warmup_steps;
    uint64_t total_steps;
};

/* Learning rate for 0-based step s: linear warm-up from lr/warmup to lr
 * over warmup_steps, then cosine decay to min_lr at total_steps. */
double lr_at(const struct lr_schedule *s, uint64_t step);

#endif
