/*
 * mlp.c: MLP shapes, tensor naming and seeded initialisation.
 */
#include "mlp.h"

#include <math.h>
#include <stdio.h>

#include "../common/rng.h"

sr_status mlp_shape(struct mlp *m, int input, const int *hidden, int nhidden,
                    int classes)
{
    if (nhidden < 1 || nhidden >= MLP_MAX_LAYERS)
        return SR_FAIL(SR_ERR_USAGE, "--hidden needs 1 to %d layer sizes",
                       MLP_MAX_LAYERS - 1);
    if (input < 1 || classes < 2)
        return SR_FAIL(SR_ERR_USAGE, "model needs input size >= 1 and >= 2 "
                       "classes (got %d, %d)", input, classes);
    m->nlayers = nhidden + 1;
    m->dims[0] = input;
    for (int i = 0; i < nhidden; i++) {
        if (hidden[i] < 1)
            return SR_FAIL(SR_ERR_USAGE, "--hidden sizes must be >= 1 (got "
                           "%d)", hidden[i]);
        m->dims[i + 1] = hidden[i];
    }
    m->dims[m->nlayers] = classes;
    size_t off = 0;
    for (int l = 0; l < m->nlayers; l++) {
        m->w_off[l] = off;
        off += (size_t)m->dims[l] * (size_t)m->dims[l + 1];
        m->b_off[l] = off;
        off += (size_t)m->dims[l + 1];
    }
    m->nparams = off;
    return SR_OK;
}

int mlp_ntensors(const struct mlp *m)
{
    return 2 * m->nlayers;
}

int mlp_tensor_is_weight(int t)
{
    return t % 2 == 0;
}

void mlp_tensor(const struct mlp *m, int t, char *name, size_t cap,
                int *ndim, size_t dims[2], size_t *offset, size_t *count)
{
    int l = t / 2;
    size_t in = (size_t)m->dims[l], out = (size_t)m->dims[l + 1];
    if (mlp_tensor_is_weight(t)) {
        snprintf(name, cap, "fc%d.weight", l + 1);
        *ndim = 2;
        dims[0] = out;
        dims[1] = in;
        *offset = m->w_off[l];
        *count = out * in;
    } else {
        snprintf(name, cap, "fc%d.bias", l + 1);
        *ndim = 1;
        dims[0] = out;
        dims[1] = 0;
        *offset = m->b_off[l];
        *count = out;
    }
}

void mlp_init_params(const struct mlp *m, float *params, uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed, RNG_STREAM_INIT, 0);
    for (int l = 0; l < m->nlayers; l++) {
        size_t in = (size_t)m->dims[l], out = (size_t)m->dims[l + 1];
        float k = 1.0f / sqrtf((float)in);
        float *w = params + m->w_off[l], *b = params + m->b_off[l];
        for (size_t i = 0; i < out * in; i++)
            w[i] = (2.0f * rng_uniform(&r) - 1.0f) * k;
        for (size_t i = 0; i < out; i++)
            b[i] = (2.0f * rng_uniform(&r) - 1.0f) * k;
    }
}

double mlp_train_flops_per_sample(const struct mlp *m)
{
    double f = 0;
    for (int l = 0; l < m->nlayers; l++) {
        double mk = (double)m->dims[l] * m->dims[l + 1];
        f += 2 * mk;            /* forward */
        f += 2 * mk;            /* weight gradient */
        if (l > 0)
            f += 2 * mk;        /* input gradient */
    }
    return f;
}
