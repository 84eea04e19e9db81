/*
 * optim.c: CPU optimizer updates and the learning-rate schedule. The loops
 * are written so the compiler vectorises them; they run once per step over
 * the whole parameter buffer.
 */
#include "optim.h"

#include <math.h>

#include "../common/simd.h"

int optim_state_per_param(enum optim_kind k)
{
    return k == OPTIM_ADAMW ? 2 : 1;
}

SR_CLONES
void optim_sgd_cpu(float *restrict p, const float *restrict g,
                   float *restrict mom, size_t n, float lr, float momentum,
                   float wd)
{
    for (size_t i = 0; i < n; i++)
        p[i] = optim_sgd_one(p[i], g[i], &mom[i], lr, momentum, wd);
}

SR_CLONES
void optim_adamw_cpu(float *restrict p, const float *restrict g,
                     float *restrict m, float *restrict v, size_t n, float lr,
                     float beta1, float beta2, float eps, float wd,
                     float step_size, float inv_bc2_sqrt)
{
    float decay = 1.0f - lr * wd;
    for (size_t i = 0; i < n; i++)
        p[i] = optim_adamw_one(p[i], g[i], &m[i], &v[i], beta1, beta2, eps,
                               decay, step_size, inv_bc2_sqrt);
}

double lr_at(const struct lr_schedule *s, uint64_t step)
{
    if (s->warmup_steps > 0 && step < s->warmup_steps)
        return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    if (s->total_steps <= s->warmup_steps)
        return s->lr;
    double t = (double)(step - s->warmup_steps) /
               (double)(s->total_steps - s->warmup_steps);
    if (t > 1)
        t = 1;
    return s->min_lr + 0.5 * (s->lr - s->min_lr) * (1.0 + cos(M_PI * t));
}
