/*
 * backend_cpu.c: the MLP on the CPU. Matrix products go through OpenBLAS
 * (cblas_sgemm); the element-wise work is fused into single passes: bias +
 * ReLU after each forward product, softmax + cross-entropy + its gradient
 * in one pass over the logits, ReLU mask applied to the input gradient in
 * place. Activations are row-major [rows x features]; every buffer is
 * allocated once at create time, nothing is allocated per step.
 */
#include "backend.h"

#include "../common/simd.h"
#include "blas.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct backend {
    struct mlp m;
    int max_batch;
    enum optim_kind optim;
    float *params;
    float *grads;       /* nparams + BACKEND_GRAD_EXTRA */
    float *state;       /* optimizer state */
    float *act[MLP_MAX_LAYERS + 1];  /* act[l]: output of layer l (post-ReLU);
                                        act[nlayers]: logits / their grad */
    float *dact[2];     /* ping-pong input-gradient scratch */
};

static float *falloc(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p)
        memset(p, 0, bytes);
    return p;
}

static void cpu_destroy(struct backend *b)
{
    if (!b)
        return;
    free(b->params);
    free(b->grads);
    free(b->state);
    for (int l = 1; l <= b->m.nlayers; l++)
        free(b->act[l]);
    free(b->dact[0]);
    free(b->dact[1]);
    free(b);
}

static sr_status cpu_create(struct backend **out, const struct mlp *m,
                            const struct backend_opts *o)
{
    SR_TRY(blas_load());
    struct backend *b = calloc(1, sizeof *b);
    if (!b)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    b->m = *m;
    b->max_batch = o->max_batch;
    b->optim = o->optim;
    if (o->threads > 0)
        blas.set_num_threads(o->threads);
    size_t n = (size_t)o->max_batch;
    int widest = 0;
    for (int l = 0; l <= m->nlayers; l++)
        if (m->dims[l] > widest)
            widest = m->dims[l];
    b->params = falloc(m->nparams);
    b->grads = falloc(m->nparams + BACKEND_GRAD_EXTRA);
    b->state = falloc(m->nparams * (size_t)optim_state_per_param(o->optim));
    int ok = b->params && b->grads && b->state;
    for (int l = 1; l <= m->nlayers && ok; l++) {
        b->act[l] = falloc(n * (size_t)m->dims[l]);
        ok = b->act[l] != NULL;
    }
    b->dact[0] = falloc(n * (size_t)widest);
    b->dact[1] = falloc(n * (size_t)widest);
    if (!ok || !b->dact[0] || !b->dact[1]) {
        cpu_destroy(b);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory for model buffers "
                       "(batch %d)", o->max_batch);
    }
    *out = b;
    return SR_OK;
}

static sr_status cpu_set_params(struct backend *b, const float *host)
{
    memcpy(b->params, host, b->m.nparams * sizeof(float));
    return SR_OK;
}

static sr_status cpu_get_params(struct backend *b, float *host)
{
    memcpy(host, b->params, b->m.nparams * sizeof(float));
    return SR_OK;
}

static size_t state_len(const struct backend *b)
{
    return b->m.nparams * (size_t)optim_state_per_param(b->optim);
}

static sr_status cpu_set_opt_state(struct backend *b, const float *host)
{
    memcpy(b->state, host, state_len(b) * sizeof(float));
    return SR_OK;
}

static sr_status cpu_get_opt_state(struct backend *b, float *host)
{
    memcpy(host, b->state, state_len(b) * sizeof(float));
    return SR_OK;
}

/* Every row of out[n x d] = bias: the product then adds onto it (beta 1),
 * which fuses the bias add into the matrix product's own pass. */
SR_CLONES
static void fill_rows(float *restrict out, const float *restrict bias, int n,
                      int d)
{
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * (size_t)d, bias, (size_t)d * sizeof(float));
}

SR_CLONES
static void relu(float *restrict v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = v[i] > 0.0f ? v[i] : 0.0f;
}

/* dh = dh where the layer's output h was positive, else 0 */
SR_CLONES
static void relu_grad(float *restrict dh, const float *restrict h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dh[i] = h[i] > 0.0f ? dh[i] : 0.0f;
}

SR_CLONES
static void column_sums(float *restrict out, const float *restrict m, int n,
                        int d)
{
    memset(out, 0, (size_t)d * sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *row = m + (size_t)i * (size_t)d;
        for (int j = 0; j < d; j++)
            out[j] += row[j];
    }
}

/* Forward through every layer; logits end in act[nlayers]. */
static void forward(struct backend *b, const float *x, int n)
{
    const struct mlp *m = &b->m;
    b->act[0] = (float *)x;
    for (int l = 0; l < m->nlayers; l++) {
        int in = m->dims[l], out = m->dims[l + 1];
        fill_rows(b->act[l + 1], b->params + m->b_off[l], n, out);
        blas.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f,
                    b->act[l], in, b->params + m->w_off[l], in, 1.0f,
                    b->act[l + 1], out);
        if (l + 1 < m->nlayers)
            relu(b->act[l + 1], (size_t)n * (size_t)out);
    }
}

/* Softmax cross-entropy over n rows of c logits. Returns the loss sum; when
 * grad_scale != 0 the logits are replaced by d(loss * grad_scale)/dlogits;
 * when correct != NULL counts argmax hits. */
static double softmax_xent(float *restrict z, const int32_t *restrict y,
                           int n, int c, float grad_scale, int64_t *correct)
{
    double loss = 0;
    int64_t hits = 0;
    for (int i = 0; i < n; i++) {
        float *row = z + (size_t)i * (size_t)c;
        int arg = 0;
        float mx = row[0];
        for (int j = 1; j < c; j++)
            if (row[j] > mx) {
                mx = row[j];
                arg = j;
            }
        float sum = 0;
        for (int j = 0; j < c; j++)
            sum += expf(row[j] - mx);
        float lse = mx + logf(sum);
        loss += (double)(lse - row[y[i]]);
        hits += arg == y[i];
        if (grad_scale != 0.0f) {
            float inv = grad_scale / sum;
            for (int j = 0; j < c; j++)
                row[j] = expf(row[j] - mx) * inv;
            row[y[i]] -= grad_scale;
        }
    }
    if (correct)
        *correct += hits;
    return loss;
}

static sr_status cpu_train_step(struct backend *b, const float *x,
                                const int32_t *y, int n, float grad_scale)
{
    const struct mlp *m = &b->m;
    if (n < 1 || n > b->max_batch)
        return SR_FAIL(SR_ERR_INTERNAL, "batch of %d rows (max %d)", n,
                       b->max_batch);
    forward(b, x, n);
    int L = m->nlayers;
    float *dz = b->act[L];
    double loss = softmax_xent(dz, y, n, m->dims[L], grad_scale, NULL);
    int ping = 0;
    for (int l = L - 1; l >= 0; l--) {
        int in = m->dims[l], out = m->dims[l + 1];
        float *gw = b->grads + m->w_off[l], *gb = b->grads + m->b_off[l];
        /* dW = dZ^T . H_prev */
        blas.sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f,
                    dz, out, b->act[l], in, 0.0f, gw, in);
        column_sums(gb, dz, n, out);     /* db */
        if (l == 0)
            break;
        /* dH_prev = dZ . W, then through the ReLU of layer l-1 */
        float *dh = b->dact[ping];
        ping ^= 1;
        blas.sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out,
                    1.0f, dz, out, b->params + m->w_off[l], in, 0.0f, dh, in);
        relu_grad(dh, b->act[l], (size_t)n * (size_t)in);
        dz = dh;
    }
    b->grads[m->nparams + GRAD_EXTRA_LOSS] = (float)(loss * grad_scale);
    b->grads[m->nparams + GRAD_EXTRA_STOP] = 0.0f;
    return SR_OK;
}

static float *cpu_grads(struct backend *b, size_t *len)
{
    *len = b->m.nparams + BACKEND_GRAD_EXTRA;
    return b->grads;
}

static sr_status cpu_optimizer_step(struct backend *b,
                                    const struct optim_params *op, float lr,
                                    uint64_t step)
{
    const struct mlp *m = &b->m;
    size_t np = m->nparams;
    for (int t = 0; t < mlp_ntensors(m); t++) {
        char name[32];
        int ndim;
        size_t dims[2], off, cnt;
        mlp_tensor(m, t, name, sizeof name, &ndim, dims, &off, &cnt);
        float wd = mlp_tensor_is_weight(t) ? (float)op->weight_decay : 0.0f;
        if (op->kind == OPTIM_SGD)
            optim_sgd_cpu(b->params + off, b->grads + off, b->state + off, cnt,
                          lr, (float)op->momentum, wd);
        else
            optim_adamw_cpu(b->params + off, b->grads + off, b->state + off,
                            b->state + np + off, cnt, lr, (float)op->beta1,
                            (float)op->beta2, (float)op->eps, wd, step);
    }
    return SR_OK;
}

static sr_status cpu_evaluate(struct backend *b, const float *x,
                              const int32_t *y, int n, double *loss_sum,
                              int64_t *correct)
{
    if (n < 1 || n > b->max_batch)
        return SR_FAIL(SR_ERR_INTERNAL, "batch of %d rows (max %d)", n,
                       b->max_batch);
    forward(b, x, n);
    int L = b->m.nlayers;
    *loss_sum += softmax_xent(b->act[L], y, n, b->m.dims[L], 0.0f, correct);
    return SR_OK;
}

const struct backend_ops backend_cpu_ops = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .set_params = cpu_set_params,
    .get_params = cpu_get_params,
    .set_opt_state = cpu_set_opt_state,
    .get_opt_state = cpu_get_opt_state,
    .train_step = cpu_train_step,
    .grads = cpu_grads,
    .optimizer_step = cpu_optimizer_step,
    .evaluate = cpu_evaluate,
};
