/*
 * backend_cpu.c: the MLP on the CPU. Matrix products go through OpenBLAS
 * (cblas_sgemm); the element-wise work is fused into single passes: the
 * bias is written first and the product added onto it, ReLU in place,
 * softmax + cross-entropy + its gradient in one pass over the logits, the
 * ReLU mask applied to the input gradient in place.
 *
 * Threads: with T threads the batch is cut into T contiguous row slices
 * ("lanes"); each thread runs forward and backward on its slice with
 * single-threaded sgemm calls into its own gradient buffer, then the
 * buffers are summed in lane order (each thread summing a range of
 * parameters) and the optimizer runs split the same way. In a single
 * process nothing sits between the two, so the sum waits for
 * optimizer_step and each thread sums a cache-sized chunk of its range and
 * updates those parameters at once: one pass over memory and one
 * fork-join less. A step has two or three fork-joins instead of one per
 * matrix product, and the element-wise work runs on every core. Results
 * depend on T the way they depend on the world size: through float
 * summation order only.
 *
 * Every buffer is allocated at create time; a step allocates nothing.
 */
#include "backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/pool.h"
#include "../common/simd.h"
#include "blas.h"

#define FLOATS_PER_LINE 16
#define FUSED_CHUNK 1024    /* floats of summed gradient per optimizer call */

struct lane {
    float *act[MLP_MAX_LAYERS + 1]; /* act[l]: output of layer l (post-ReLU);
                                       act[nlayers]: logits, then their
                                       gradient */
    float *dact[2];                 /* ping-pong input-gradient scratch */
    float *grads;                   /* lane 0 uses the backend's buffer */
    double loss;
    int64_t correct;
};

struct backend {
    struct mlp m;
    int max_batch;
    int lane_rows;
    enum optim_kind optim;
    float *params;
    float *grads;           /* nparams + BACKEND_GRAD_EXTRA */
    float *state;           /* optimizer state */
    struct backend_comm comm;   /* size 0 = a single process */
    struct pool *pool;      /* the caller's, or own_pool */
    struct pool *own_pool;
    int nlanes;
    struct lane *lanes;
    int lanes_pending;      /* lane gradients not yet summed into grads */
    /* arguments of the call in progress, read by every worker */
    const float *x;
    const int32_t *y;
    int n;
    float scale;
    const struct optim_params *op;
    float lr;
    float step_size, inv_bc2_sqrt;  /* AdamW's, for this step */
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
    pool_destroy(b->own_pool);
    for (int w = 0; b->lanes && w < b->nlanes; w++) {
        struct lane *ln = &b->lanes[w];
        for (int l = 1; l <= b->m.nlayers; l++)
            free(ln->act[l]);
        free(ln->dact[0]);
        free(ln->dact[1]);
        if (w > 0)
            free(ln->grads);
    }
    free(b->lanes);
    free(b->params);
    free(b->grads);
    free(b->state);
    free(b);
}

static sr_status cpu_create(struct backend **out, const struct mlp *m,
                            const struct backend_opts *o)
{
    SR_TRY(blas_load());
    /* parallelism is ours: one slice of rows per thread */
    blas.set_num_threads(1);
    struct backend *b = calloc(1, sizeof *b);
    if (!b)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    b->m = *m;
    b->max_batch = o->max_batch;
    b->optim = o->optim;
    b->pool = o->pool;
    if (o->comm)
        b->comm = *o->comm;
    if (!b->pool) {
        sr_status s = pool_create(&b->own_pool, 1);
        if (s != SR_OK) {
            cpu_destroy(b);
            return s;
        }
        b->pool = b->own_pool;
    }
    /* one lane per thread; a thread without rows (a batch smaller than
     * the pool) contributes zero gradients */
    b->nlanes = pool_size(b->pool);
    b->lane_rows = (o->max_batch + b->nlanes - 1) / b->nlanes;
    size_t rows = (size_t)b->lane_rows;
    int widest = 0;
    for (int l = 0; l <= m->nlayers; l++)
        if (m->dims[l] > widest)
            widest = m->dims[l];
    b->params = falloc(m->nparams);
    b->grads = falloc(m->nparams + BACKEND_GRAD_EXTRA);
    b->state = falloc(m->nparams * (size_t)optim_state_per_param(o->optim));
    b->lanes = calloc((size_t)b->nlanes, sizeof *b->lanes);
    int ok = b->params && b->grads && b->state && b->lanes;
    for (int w = 0; ok && w < b->nlanes; w++) {
        struct lane *ln = &b->lanes[w];
        for (int l = 1; l <= m->nlayers && ok; l++)
            ok = (ln->act[l] = falloc(rows * (size_t)m->dims[l])) != NULL;
        ln->dact[0] = falloc(rows * (size_t)widest);
        ln->dact[1] = falloc(rows * (size_t)widest);
        ln->grads = w == 0 ? b->grads : falloc(m->nparams);
        ok = ok && ln->dact[0] && ln->dact[1] && ln->grads;
    }
    if (!ok) {
        cpu_destroy(b);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory for model buffers "
                       "(batch %d, %d threads)", o->max_batch, b->nlanes);
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

SR_CLONES
static void add_into(float *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

SR_CLONES
static void add_pair(float *restrict dst, const float *restrict a,
                     const float *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = a[i] + b[i];
}

/* Forward n rows of x through every layer; logits end in act[nlayers]. */
static void forward(const struct backend *b, struct lane *ln, const float *x,
                    int n)
{
    const struct mlp *m = &b->m;
    ln->act[0] = (float *)x;
    for (int l = 0; l < m->nlayers; l++) {
        int in = m->dims[l], out = m->dims[l + 1];
        fill_rows(ln->act[l + 1], b->params + m->b_off[l], n, out);
        blas.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f,
                   ln->act[l], in, b->params + m->w_off[l], in, 1.0f,
                   ln->act[l + 1], out);
        if (l + 1 < m->nlayers)
            relu(ln->act[l + 1], (size_t)n * (size_t)out);
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

/* Backward from the logits' gradient in act[nlayers] into ln->grads. */
static void backward(const struct backend *b, struct lane *ln, int n)
{
    const struct mlp *m = &b->m;
    float *dz = ln->act[m->nlayers];
    int ping = 0;
    for (int l = m->nlayers - 1; l >= 0; l--) {
        int in = m->dims[l], out = m->dims[l + 1];
        /* dW = dZ^T . H_prev, db = column sums of dZ */
        blas.sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f,
                   dz, out, ln->act[l], in, 0.0f, ln->grads + m->w_off[l],
                   in);
        column_sums(ln->grads + m->b_off[l], dz, n, out);
        if (l == 0)
            break;
        /* dH_prev = dZ . W, then through the ReLU of layer l-1 */
        float *dh = ln->dact[ping];
        ping ^= 1;
        blas.sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out,
                   1.0f, dz, out, b->params + m->w_off[l], in, 0.0f, dh, in);
        relu_grad(dh, ln->act[l], (size_t)n * (size_t)in);
        dz = dh;
    }
}

static void lane_rows_of(const struct backend *b, int w, int nw, int *lo,
                         int *hi)
{
    size_t a, z;
    pool_range((size_t)b->n, w, nw, 1, &a, &z);
    *lo = (int)a;
    *hi = (int)z;
}

static void lane_train(void *arg, int w, int nw)
{
    struct backend *b = arg;
    struct lane *ln = &b->lanes[w];
    int lo, hi;
    lane_rows_of(b, w, nw, &lo, &hi);
    ln->loss = 0;
    if (hi == lo) {     /* fewer rows than threads */
        memset(ln->grads, 0, b->m.nparams * sizeof(float));
        return;
    }
    int L = b->m.nlayers;
    forward(b, ln, b->x + (size_t)lo * (size_t)b->m.dims[0], hi - lo);
    ln->loss = softmax_xent(ln->act[L], b->y + lo, hi - lo, b->m.dims[L],
                            b->scale, NULL);
    backward(b, ln, hi - lo);
}

/* grads += lane 1 + lane 2 + ..., each thread over its parameter range */
static void lane_reduce(void *arg, int w, int nw)
{
    struct backend *b = arg;
    size_t lo, hi;
    pool_range(b->m.nparams, w, nw, FLOATS_PER_LINE, &lo, &hi);
    for (int l = 1; l < b->nlanes && hi > lo; l++)
        add_into(b->grads + lo, b->lanes[l].grads + lo, hi - lo);
}

/* Sum the lanes into grads if train_step left them apart */
static void lanes_settle(struct backend *b)
{
    if (b->lanes_pending)
        pool_run(b->pool, lane_reduce, b);
    b->lanes_pending = 0;
}

static sr_status cpu_train_step(struct backend *b, const float *x,
                                const int32_t *y, int n, float grad_scale)
{
    const struct mlp *m = &b->m;
    if (n < 1 || n > b->max_batch)
        return SR_FAIL(SR_ERR_INTERNAL, "batch of %d rows (max %d)", n,
                       b->max_batch);
    b->x = x;
    b->y = y;
    b->n = n;
    b->scale = grad_scale;
    pool_run(b->pool, lane_train, b);
    /* the all-reduce needs the sum; alone, optimizer_step makes it */
    b->lanes_pending = b->nlanes > 1;
    if (b->comm.size > 1)
        lanes_settle(b);
    double loss = 0;
    for (int w = 0; w < b->nlanes; w++)
        loss += b->lanes[w].loss;
    b->grads[m->nparams + GRAD_EXTRA_LOSS] = (float)(loss * grad_scale);
    return SR_OK;
}

/* The extras ride after the gradients in one in-place all-reduce. */
static sr_status cpu_grad_allreduce(struct backend *b,
                                    float extra[BACKEND_GRAD_EXTRA])
{
    float *tail = b->grads + b->m.nparams;
    for (int i = 0; i < BACKEND_GRAD_EXTRA; i++)
        if (i != GRAD_EXTRA_LOSS)
            tail[i] = extra[i];
    if (b->comm.size > 1)
        SR_TRY(b->comm.allreduce_f32(b->comm.ctx, b->grads,
                                     b->m.nparams + BACKEND_GRAD_EXTRA));
    memcpy(extra, tail, BACKEND_GRAD_EXTRA * sizeof(float));
    return SR_OK;
}

static sr_status cpu_set_grads(struct backend *b, const float *host)
{
    memcpy(b->grads, host, b->m.nparams * sizeof(float));
    b->lanes_pending = 0;
    return SR_OK;
}

static sr_status cpu_get_grads(struct backend *b, float *host)
{
    lanes_settle(b);
    memcpy(host, b->grads,
           (b->m.nparams + BACKEND_GRAD_EXTRA) * sizeof(float));
    return SR_OK;
}

/* The optimizer on n parameters from offset off, with gradients g */
static void update(struct backend *b, size_t off, size_t n, const float *g,
                   float wd)
{
    const struct optim_params *op = b->op;
    size_t np = b->m.nparams;
    if (op->kind == OPTIM_SGD)
        optim_sgd_cpu(b->params + off, g, b->state + off, n, b->lr,
                      (float)op->momentum, wd);
    else
        optim_adamw_cpu(b->params + off, g, b->state + off,
                        b->state + np + off, n, b->lr, (float)op->beta1,
                        (float)op->beta2, (float)op->eps, wd, b->step_size,
                        b->inv_bc2_sqrt);
}

/* The lanes' gradients (two or more) summed in lane order, as lane_reduce
 * sums them, for n <= FUSED_CHUNK parameters from off, then the optimizer
 * on them */
static void sum_update(struct backend *b, size_t off, size_t n, float wd)
{
    float g[FUSED_CHUNK] __attribute__((aligned(64)));
    add_pair(g, b->grads + off, b->lanes[1].grads + off, n);
    for (int l = 2; l < b->nlanes; l++)
        add_into(g, b->lanes[l].grads + off, n);
    update(b, off, n, g, wd);
}

/* The optimizer on parameters [a, z) of one tensor; with the lanes still
 * apart, a chunk at a time straight from their sum. */
static void update_range(struct backend *b, size_t a, size_t z, float wd)
{
    if (!b->lanes_pending) {
        update(b, a, z - a, b->grads + a, wd);
        return;
    }
    for (size_t c = a; c < z; c += FUSED_CHUNK)
        sum_update(b, c, z - c < FUSED_CHUNK ? z - c : FUSED_CHUNK, wd);
}

/* The optimizer over this thread's parameter range, tensor by tensor
 * (weight decay applies to weights only). */
static void lane_optim(void *arg, int w, int nw)
{
    struct backend *b = arg;
    const struct mlp *m = &b->m;
    size_t lo, hi;
    pool_range(m->nparams, w, nw, FLOATS_PER_LINE, &lo, &hi);
    for (int t = 0; t < mlp_ntensors(m) && hi > lo; t++) {
        char name[32];
        int ndim;
        size_t dims[2], off, cnt;
        mlp_tensor(m, t, name, sizeof name, &ndim, dims, &off, &cnt);
        size_t a = off > lo ? off : lo;
        size_t z = off + cnt < hi ? off + cnt : hi;
        if (a < z)
            update_range(b, a, z, mlp_tensor_is_weight(t)
                         ? (float)b->op->weight_decay : 0.0f);
    }
}

static sr_status cpu_optimizer_step(struct backend *b,
                                    const struct optim_params *op, float lr,
                                    uint64_t step)
{
    b->op = op;
    b->lr = lr;
    if (op->kind == OPTIM_ADAMW)
        optim_adamw_coefs(lr, (float)op->beta1, (float)op->beta2, step,
                          &b->step_size, &b->inv_bc2_sqrt);
    pool_run(b->pool, lane_optim, b);
    return SR_OK;
}

static void lane_eval(void *arg, int w, int nw)
{
    struct backend *b = arg;
    struct lane *ln = &b->lanes[w];
    int lo, hi;
    lane_rows_of(b, w, nw, &lo, &hi);
    ln->loss = 0;
    ln->correct = 0;
    if (hi == lo)
        return;
    int L = b->m.nlayers;
    forward(b, ln, b->x + (size_t)lo * (size_t)b->m.dims[0], hi - lo);
    ln->loss = softmax_xent(ln->act[L], b->y + lo, hi - lo, b->m.dims[L],
                            0.0f, &ln->correct);
}

static sr_status cpu_evaluate(struct backend *b, const float *x,
                              const int32_t *y, int n, double *loss_sum,
                              int64_t *correct)
{
    if (n < 1 || n > b->max_batch)
        return SR_FAIL(SR_ERR_INTERNAL, "batch of %d rows (max %d)", n,
                       b->max_batch);
    b->x = x;
    b->y = y;
    b->n = n;
    pool_run(b->pool, lane_eval, b);
    for (int w = 0; w < b->nlanes; w++) {
        *loss_sum += b->lanes[w].loss;
        *correct += b->lanes[w].correct;
    }
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
    .grad_allreduce = cpu_grad_allreduce,
    .set_grads = cpu_set_grads,
    .get_grads = cpu_get_grads,
    .optimizer_step = cpu_optimizer_step,
    .evaluate = cpu_evaluate,
};
