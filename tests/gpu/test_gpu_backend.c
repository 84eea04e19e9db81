/*
 * test_gpu_backend.c: the CUDA backend against the CPU backend, kernel by
 * kernel through the ops table. FP32 forward (bias + ReLU), loss and hits
 * (softmax cross-entropy), and every gradient (softmax gradient, ReLU mask,
 * bias column sums, cuBLAS products) match the CPU within 1e-4 of the
 * largest gradient; the SGD and AdamW kernels update parameters and state
 * bit for bit like trainer/optim.c (also with BF16 products, whose master
 * weights are FP32); TF32 and BF16 gradients stay within 1e-2 and 5e-2
 * (relative L2); steps are deterministic and the same from page-locked or
 * pageable batches; parameters and state round-trip exactly through the
 * staged copies; and the three ways of summing gradients (none, NCCL,
 * MPI through the host) give the same bits on one rank.
 *
 * Exits 77 (reported by ctest as skipped) when the plugin or a GPU is
 * missing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "trainer/backend.h"
#include "trainer/plugin.h"
#include "gpu_probe.h"

static const struct backend_ops *gpu;

struct shape {
    int in, hidden[3], nhidden, classes, n;
};

static const struct shape shapes[] = {
    { 10, { 33, 17 }, 2, 5, 37 },       /* odd widths: scalar paths */
    { 64, { 128, 64 }, 2, 10, 256 },    /* 16-byte vector paths */
    { 784, { 256, 128, 96 }, 3, 10, 300 },
};

static float *rand_floats(size_t n, uint64_t seed, float lo, float hi)
{
    struct rng r;
    rng_seed(&r, seed, 7, 0);
    float *v = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * rng_uniform(&r);
    return v;
}

static int32_t *rand_labels(int n, int classes, uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed, 8, 0);
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(y);
    for (int i = 0; i < n; i++)
        y[i] = (int32_t)rng_below(&r, (uint64_t)classes);
    return y;
}

static void shape_mlp(struct mlp *m, const struct shape *s)
{
    assert_int_equal(mlp_shape(m, s->in, s->hidden, s->nhidden, s->classes),
                     SR_OK);
}

static struct backend *make(const struct backend_ops *ops,
                            const struct mlp *m, int max_batch,
                            enum optim_kind ok, enum backend_precision prec,
                            enum backend_comm_kind ck, size_t bucket)
{
    struct backend_opts o = { .max_batch = max_batch, .optim = ok,
                              .precision = prec, .comm_kind = ck,
                              .bucket_bytes = bucket, .comm_timeout_s = 60 };
    struct backend *b = NULL;
    if (ops->create(&b, m, &o) != SR_OK)
        fail_msg("%s create: %s", ops->name, sr_errmsg());
    return b;
}

/* largest |a - b| over the largest |b| */
static double rel_max(const float *a, const float *b, size_t n)
{
    double d = 0, big = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d)
            d = e;
        if (fabs(b[i]) > big)
            big = fabs(b[i]);
    }
    return d / big;
}

/* |a - b| / |b| over the whole vector */
static double rel_l2(const float *a, const float *b, size_t n)
{
    double d = 0, nb = 1e-60;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        nb += (double)b[i] * b[i];
    }
    return sqrt(d / nb);
}

/* One shape: gradients and evaluation of the GPU at precision prec against
 * the CPU; returns the relative L2 error of the gradients. */
static double compare_step(const struct shape *s,
                           enum backend_precision prec, double tol_max,
                           double tol_loss)
{
    struct mlp m;
    shape_mlp(&m, s);
    size_t glen = m.nparams + BACKEND_GRAD_EXTRA;
    struct backend *c = make(&backend_cpu_ops, &m, s->n, OPTIM_ADAMW,
                             PRECISION_FP32, BACKEND_COMM_AUTO, 0);
    struct backend *g = make(gpu, &m, s->n, OPTIM_ADAMW, prec,
                             BACKEND_COMM_AUTO, 0);
    float *p = malloc(m.nparams * sizeof(float));
    mlp_init_params(&m, p, 11);
    assert_int_equal(backend_cpu_ops.set_params(c, p), SR_OK);
    assert_int_equal(gpu->set_params(g, p), SR_OK);
    float *x = rand_floats((size_t)s->n * (size_t)s->in, 3, -1, 1);
    int32_t *y = rand_labels(s->n, s->classes, 4);

    double lc = 0, lg = 0;
    int64_t hc = 0, hg = 0;
    assert_int_equal(backend_cpu_ops.evaluate(c, x, y, s->n, &lc, &hc),
                     SR_OK);
    assert_int_equal(gpu->evaluate(g, x, y, s->n, &lg, &hg), SR_OK);
    if (fabs(lg - lc) > tol_loss * fabs(lc))
        fail_msg("evaluate loss: gpu %.9g, cpu %.9g", lg, lc);
    if (prec == PRECISION_FP32 && llabs((long long)(hg - hc)) > 1)
        fail_msg("evaluate hits: gpu %lld, cpu %lld", (long long)hg,
                 (long long)hc);

    float scale = 1.0f / (float)s->n;
    assert_int_equal(backend_cpu_ops.train_step(c, x, y, s->n, scale),
                     SR_OK);
    assert_int_equal(gpu->train_step(g, x, y, s->n, scale), SR_OK);
    float *gc = malloc(glen * sizeof(float)), *gg = malloc(glen *
                                                           sizeof(float));
    assert_int_equal(backend_cpu_ops.get_grads(c, gc), SR_OK);
    assert_int_equal(gpu->get_grads(g, gg), SR_OK);
    double worst = 0, l2 = rel_l2(gg, gc, m.nparams);
    /* per tensor: weights and biases of every layer */
    for (int t = 0; t < mlp_ntensors(&m); t++) {
        char name[32];
        int nd;
        size_t dims[2], off, cnt;
        mlp_tensor(&m, t, name, sizeof name, &nd, dims, &off, &cnt);
        double e = rel_max(gg + off, gc + off, cnt);
        if (e > worst)
            worst = e;
        if (e > tol_max)
            fail_msg("%s at %s: gradient differs by %.3g of its largest "
                     "value (tolerance %.1g)", name, prec == PRECISION_FP32
                     ? "fp32" : prec == PRECISION_TF32 ? "tf32" : "bf16", e,
                     tol_max);
    }
    double lcpu = gc[m.nparams + GRAD_EXTRA_LOSS];
    double lgpu = gg[m.nparams + GRAD_EXTRA_LOSS];
    if (fabs(lgpu - lcpu) > tol_loss * fabs(lcpu))
        fail_msg("step loss: gpu %.9g, cpu %.9g", lgpu, lcpu);
    print_message("%d-%d..-%d, %d rows: gradients within %.2e (max), %.2e "
                  "(L2); loss %.9g vs %.9g\n", s->in, s->hidden[0],
                  s->classes, s->n, worst, l2, lgpu, lcpu);
    backend_cpu_ops.destroy(c);
    gpu->destroy(g);
    free(p);
    free(x);
    free(y);
    free(gc);
    free(gg);
    return l2;
}

static void test_gpu__fp32_matches_cpu(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        compare_step(&shapes[i], PRECISION_FP32, 1e-4, 1e-5);
}

static void test_gpu__tf32_and_bf16_close_to_cpu(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        assert_true(compare_step(&shapes[i], PRECISION_TF32, 5e-2, 1e-2) <
                    1e-2);
        assert_true(compare_step(&shapes[i], PRECISION_BF16, 2e-1, 3e-2) <
                    5e-2);
    }
}

/* The optimizer kernels against optim.c: same parameters, state and
 * gradients in, the same bits out, step after step. */
static void optimizer_bit_exact(enum optim_kind ok,
                                enum backend_precision prec)
{
    const struct shape *s = &shapes[2];
    struct mlp m;
    shape_mlp(&m, s);
    size_t np = m.nparams, ns = np * (size_t)optim_state_per_param(ok);
    struct backend *c = make(&backend_cpu_ops, &m, 4, ok, PRECISION_FP32,
                             BACKEND_COMM_AUTO, 0);
    struct backend *g = make(gpu, &m, 4, ok, prec, BACKEND_COMM_AUTO, 0);
    float *p = rand_floats(np, 21, -0.5f, 0.5f);
    float *st = rand_floats(ns, 22, 0.0f, 0.01f);
    assert_int_equal(backend_cpu_ops.set_params(c, p), SR_OK);
    assert_int_equal(gpu->set_params(g, p), SR_OK);
    assert_int_equal(backend_cpu_ops.set_opt_state(c, st), SR_OK);
    assert_int_equal(gpu->set_opt_state(g, st), SR_OK);
    struct optim_params op = { .kind = ok, .momentum = 0.9,
                               .weight_decay = 0.01, .beta1 = 0.9,
                               .beta2 = 0.999, .eps = 1e-8 };
    float *pc = malloc(np * sizeof(float)), *pg = malloc(np * sizeof(float));
    float *sc = malloc(ns * sizeof(float)), *sg = malloc(ns * sizeof(float));
    for (uint64_t step = 1; step <= 3; step++) {
        float *gr = rand_floats(np, 30 + step, -0.1f, 0.1f);
        assert_int_equal(backend_cpu_ops.set_grads(c, gr), SR_OK);
        assert_int_equal(gpu->set_grads(g, gr), SR_OK);
        float lr = 0.001f * (float)step;
        assert_int_equal(backend_cpu_ops.optimizer_step(c, &op, lr, step),
                         SR_OK);
        assert_int_equal(gpu->optimizer_step(g, &op, lr, step), SR_OK);
        free(gr);
    }
    assert_int_equal(backend_cpu_ops.get_params(c, pc), SR_OK);
    assert_int_equal(gpu->get_params(g, pg), SR_OK);
    assert_int_equal(backend_cpu_ops.get_opt_state(c, sc), SR_OK);
    assert_int_equal(gpu->get_opt_state(g, sg), SR_OK);
    for (size_t i = 0; i < np; i++)
        if (memcmp(&pc[i], &pg[i], sizeof(float)) != 0)
            fail_msg("%s: parameter %zu is %.9g on the GPU, %.9g on the CPU",
                     ok == OPTIM_SGD ? "sgd" : "adamw", i, pg[i], pc[i]);
    assert_memory_equal(sc, sg, ns * sizeof(float));
    backend_cpu_ops.destroy(c);
    gpu->destroy(g);
    free(p);
    free(st);
    free(pc);
    free(pg);
    free(sc);
    free(sg);
}

static void test_gpu__optimizers_bit_exact(void **state)
{
    (void)state;
    optimizer_bit_exact(OPTIM_SGD, PRECISION_FP32);
    optimizer_bit_exact(OPTIM_ADAMW, PRECISION_FP32);
    optimizer_bit_exact(OPTIM_ADAMW, PRECISION_BF16);
}

/* The same step twice gives the same bits, from pageable or page-locked
 * batches alike. */
static void test_gpu__deterministic_and_pinned_batches(void **state)
{
    (void)state;
    const struct shape *s = &shapes[2];
    struct mlp m;
    shape_mlp(&m, s);
    size_t glen = m.nparams + BACKEND_GRAD_EXTRA;
    enum backend_precision precs[] = { PRECISION_FP32, PRECISION_BF16 };
    for (int k = 0; k < 2; k++) {
        struct backend *g = make(gpu, &m, s->n, OPTIM_ADAMW, precs[k],
                                 BACKEND_COMM_AUTO, 0);
        float *p = malloc(m.nparams * sizeof(float));
        mlp_init_params(&m, p, 5);
        assert_int_equal(gpu->set_params(g, p), SR_OK);
        size_t xn = (size_t)s->n * (size_t)s->in;
        float *x = rand_floats(xn, 9, -1, 1);
        int32_t *y = rand_labels(s->n, s->classes, 10);
        float *xp = gpu->host_alloc(xn * sizeof(float));
        int32_t *yp = gpu->host_alloc((size_t)s->n * sizeof(int32_t));
        assert_non_null(xp);
        assert_non_null(yp);
        memcpy(xp, x, xn * sizeof(float));
        memcpy(yp, y, (size_t)s->n * sizeof(int32_t));
        float *g1 = malloc(glen * sizeof(float));
        float *g2 = malloc(glen * sizeof(float));
        float extra[BACKEND_GRAD_EXTRA] = { 0 };
        assert_int_equal(gpu->train_step(g, x, y, s->n, 0.01f), SR_OK);
        assert_int_equal(gpu->grad_allreduce(g, extra), SR_OK);
        assert_int_equal(gpu->get_grads(g, g1), SR_OK);
        for (int r = 0; r < 2; r++) {
            assert_int_equal(gpu->train_step(g, r ? xp : x, r ? yp : y,
                                             s->n, 0.01f), SR_OK);
            assert_int_equal(gpu->grad_allreduce(g, extra), SR_OK);
            assert_int_equal(gpu->get_grads(g, g2), SR_OK);
            assert_memory_equal(g1, g2, glen * sizeof(float));
        }
        gpu->host_free(xp);
        gpu->host_free(yp);
        gpu->destroy(g);
        free(p);
        free(x);
        free(y);
        free(g1);
        free(g2);
    }
}

/* More parameters than one staging piece (32 MiB): set and get through
 * the pipeline, and straight into page-locked memory. */
static void test_gpu__state_round_trip(void **state)
{
    (void)state;
    int hidden[2] = { 4096, 2048 };
    struct mlp m;
    assert_int_equal(mlp_shape(&m, 784, hidden, 2, 10), SR_OK);
    struct backend *g = make(gpu, &m, 8, OPTIM_ADAMW, PRECISION_FP32,
                             BACKEND_COMM_AUTO, 0);
    size_t np = m.nparams, ns = 2 * np;
    float *p = rand_floats(np, 41, -1, 1), *st = rand_floats(ns, 42, 0, 1);
    float *back = malloc(ns * sizeof(float));
    float *pinned = gpu->host_alloc(np * sizeof(float));
    assert_non_null(pinned);
    assert_int_equal(gpu->set_params(g, p), SR_OK);
    assert_int_equal(gpu->set_opt_state(g, st), SR_OK);
    assert_int_equal(gpu->get_params(g, back), SR_OK);
    assert_memory_equal(back, p, np * sizeof(float));
    assert_int_equal(gpu->get_params(g, pinned), SR_OK);
    assert_memory_equal(pinned, p, np * sizeof(float));
    assert_int_equal(gpu->get_opt_state(g, back), SR_OK);
    assert_memory_equal(back, st, ns * sizeof(float));
    gpu->host_free(pinned);
    gpu->destroy(g);
    free(p);
    free(st);
    free(back);
}

/* One rank: no sum, a one-rank NCCL communicator with many small
 * buckets, and the host-staged path give the same gradients, the loop's
 * flags back unchanged, and the same parameters after the optimizer. */
static void test_gpu__comm_paths_agree_on_one_rank(void **state)
{
    (void)state;
    const struct shape *s = &shapes[2];
    struct mlp m;
    shape_mlp(&m, s);
    size_t glen = m.nparams + BACKEND_GRAD_EXTRA;
    enum backend_comm_kind kinds[] = { BACKEND_COMM_AUTO, BACKEND_COMM_NCCL,
                                       BACKEND_COMM_MPI };
    float *ref = malloc(glen * sizeof(float)), *gr = malloc(glen *
                                                             sizeof(float));
    float *pref = malloc(m.nparams * sizeof(float));
    float *pk = malloc(m.nparams * sizeof(float));
    float *p = malloc(m.nparams * sizeof(float));
    mlp_init_params(&m, p, 6);
    float *x = rand_floats((size_t)s->n * (size_t)s->in, 12, -1, 1);
    int32_t *y = rand_labels(s->n, s->classes, 13);
    struct optim_params op = { .kind = OPTIM_ADAMW, .weight_decay = 0.01,
                               .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8 };
    for (int k = 0; k < 3; k++) {
        struct backend *g = make(gpu, &m, s->n, OPTIM_ADAMW,
                                 PRECISION_FP32, kinds[k], 16384);
        assert_int_equal(gpu->set_params(g, p), SR_OK);
        for (int step = 1; step <= 2; step++) {
            float extra[BACKEND_GRAD_EXTRA] = { 0, 1, 0, 1 };
            assert_int_equal(gpu->train_step(g, x, y, s->n, 0.01f), SR_OK);
            assert_int_equal(gpu->grad_allreduce(g, extra), SR_OK);
            assert_true(extra[GRAD_EXTRA_STOP] == 1.0f);
            assert_true(extra[GRAD_EXTRA_FAILED] == 0.0f);
            assert_true(extra[GRAD_EXTRA_CKPT] == 1.0f);
            assert_true(extra[GRAD_EXTRA_LOSS] > 0.0f);
            assert_int_equal(gpu->get_grads(g, gr), SR_OK);
            assert_true(gr[m.nparams + GRAD_EXTRA_LOSS] ==
                        extra[GRAD_EXTRA_LOSS]);
            if (k == 0 && step == 1)
                memcpy(ref, gr, glen * sizeof(float));
            else if (step == 1)
                assert_memory_equal(gr, ref, m.nparams * sizeof(float));
            assert_int_equal(gpu->optimizer_step(g, &op, 0.01f,
                                                 (uint64_t)step), SR_OK);
        }
        assert_int_equal(gpu->get_params(g, pk), SR_OK);
        if (k == 0)
            memcpy(pref, pk, m.nparams * sizeof(float));
        else
            assert_memory_equal(pk, pref, m.nparams * sizeof(float));
        gpu->destroy(g);
    }
    free(ref);
    free(gr);
    free(pref);
    free(pk);
    free(p);
    free(x);
    free(y);
}

int main(void)
{
    const struct backend_plugin *pl = gpu_plugin_or_skip();
    if (!pl)
        return 77;
    gpu = pl->ops;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpu__fp32_matches_cpu),
        cmocka_unit_test(test_gpu__optimizers_bit_exact),
        cmocka_unit_test(test_gpu__tf32_and_bf16_close_to_cpu),
        cmocka_unit_test(test_gpu__deterministic_and_pinned_batches),
        cmocka_unit_test(test_gpu__state_round_trip),
        cmocka_unit_test(test_gpu__comm_paths_agree_on_one_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
