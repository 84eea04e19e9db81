/*
 * optim.h: optimizer and learning-rate schedule definitions, and the CPU
 * update rules. SGD follows torch.optim.SGD (momentum buffer, weight decay
 * added to the gradient); AdamW follows torch.optim.AdamW (decoupled decay,
 * bias correction). Weight decay applies to weight matrices, not biases.
 */
#ifndef SPOTRUN_OPTIM_H
#define SPOTRUN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

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

/* One update of n parameters. `step` counts from 1 (AdamW bias correction).
 * wd is the decay for this tensor (0 for biases). state holds
 * optim_state_per_param() x n floats, moment after moment. */
void optim_sgd_cpu(float *p, const float *g, float *mom, size_t n, float lr,
                   float momentum, float wd);
void optim_adamw_cpu(float *p, const float *g, float *m, float *v, size_t n,
                     float lr, float beta1, float beta2, float eps, float wd,
                     uint64_t step);

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
