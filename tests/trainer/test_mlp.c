/*
 * test_mlp.c: the MLP on the CPU backend. Every analytic gradient matches
 * a central finite difference of the loss; a batch split in two and summed
 * gives the same gradient as the whole batch (what data parallelism relies
 * on); layout, naming and seeded initialisation are as documented.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/pool.h"
#include "common/rng.h"
#include "trainer/backend.h"

#define N 12

static void make_batch(float *x, int32_t *y, int n, int in, int classes)
{
    struct rng r;
    rng_seed(&r, 99, 0, 0);
    for (int i = 0; i < n * in; i++)
        x[i] = rng_uniform(&r) * 2.0f - 1.0f;
    for (int i = 0; i < n; i++)
        y[i] = (int32_t)rng_below(&r, (uint64_t)classes);
}

/* A 2-hidden-layer model with seeded parameters and a batch of N rows */
static float *two_layer_setup(struct mlp *m, int in, int h1, int h2,
                              int classes, uint64_t seed, float *x,
                              int32_t *y)
{
    int hidden[2] = { h1, h2 };
    assert_int_equal(mlp_shape(m, in, hidden, 2, classes), SR_OK);
    float *p = malloc(m->nparams * sizeof(float));
    mlp_init_params(m, p, seed);
    make_batch(x, y, N, in, classes);
    return p;
}

static double loss_at(const struct backend_ops *ops, struct backend *b,
                      const float *x, const int32_t *y, int n)
{
    double sum = 0;
    int64_t correct = 0;
    assert_int_equal(ops->evaluate(b, x, y, n, &sum, &correct), SR_OK);
    return sum / n;
}

static void test_mlp__gradients_match_finite_differences(void **state)
{
    (void)state;
    int hidden[2] = { 7, 5 };
    struct mlp m;
    assert_int_equal(mlp_shape(&m, 6, hidden, 2, 4), SR_OK);
    const struct backend_ops *ops = &backend_cpu_ops;
    struct backend *b;
    struct backend_opts o = { .max_batch = N, .optim = OPTIM_SGD };
    assert_int_equal(ops->create(&b, &m, &o), SR_OK);
    float *p = malloc(m.nparams * sizeof(float));
    mlp_init_params(&m, p, 5);
    /* larger weights so the loss is far from flat */
    for (size_t i = 0; i < m.nparams; i++)
        p[i] *= 3.0f;
    assert_int_equal(ops->set_params(b, p), SR_OK);
    float x[N * 6];
    int32_t y[N];
    make_batch(x, y, N, 6, 4);
    assert_int_equal(ops->train_step(b, x, y, N, 1.0f / N), SR_OK);
    float *g = malloc((m.nparams + BACKEND_GRAD_EXTRA) * sizeof(float));
    assert_int_equal(ops->get_grads(b, g), SR_OK);
    float *ana = malloc(m.nparams * sizeof(float));
    memcpy(ana, g, m.nparams * sizeof(float));
    /* the loss rides along in the gradient buffer */
    double l0 = loss_at(ops, b, x, y, N);
    if (fabs(g[m.nparams + GRAD_EXTRA_LOSS] - l0) > 1e-5 * l0)
        fail_msg("loss in gradient buffer %g, evaluated %g",
                 g[m.nparams + GRAD_EXTRA_LOSS], l0);

    /* small enough to stay off ReLU kinks, large enough for float noise */
    const float h = 1e-3f;
    double worst = 0, dot = 0, nn = 0, aa = 0;
    for (size_t i = 0; i < m.nparams; i++) {
        float keep = p[i];
        p[i] = keep + h;
        assert_int_equal(ops->set_params(b, p), SR_OK);
        double lp = loss_at(ops, b, x, y, N);
        p[i] = keep - h;
        assert_int_equal(ops->set_params(b, p), SR_OK);
        double lm = loss_at(ops, b, x, y, N);
        p[i] = keep;
        double num = (lp - lm) / (2.0 * h);
        double err = fabs(num - ana[i]) / (1e-3 + fabs(num));
        if (err > worst)
            worst = err;
        if (err > 0.05)
            fail_msg("param %zu: analytic %g, numeric %g", i, ana[i], num);
        dot += num * ana[i];
        nn += num * num;
        aa += (double)ana[i] * ana[i];
    }
    double cosine = dot / sqrt(nn * aa);
    print_message("worst relative gradient error %.2e over %zu parameters, "
                  "cosine %.8f\n", worst, m.nparams, cosine);
    assert_true(cosine > 0.99999);
    ops->destroy(b);
    free(p);
    free(g);
    free(ana);
}

static void test_mlp__split_batch_sums_to_whole(void **state)
{
    (void)state;
    int hidden[1] = { 16 };
    struct mlp m;
    assert_int_equal(mlp_shape(&m, 10, hidden, 1, 3), SR_OK);
    const struct backend_ops *ops = &backend_cpu_ops;
    struct backend *b;
    struct backend_opts o = { .max_batch = N, .optim = OPTIM_ADAMW };
    assert_int_equal(ops->create(&b, &m, &o), SR_OK);
    float *p = malloc(m.nparams * sizeof(float));
    mlp_init_params(&m, p, 1);
    assert_int_equal(ops->set_params(b, p), SR_OK);
    float x[N * 10];
    int32_t y[N];
    make_batch(x, y, N, 10, 3);
    size_t glen = m.nparams + BACKEND_GRAD_EXTRA;
    assert_int_equal(ops->train_step(b, x, y, N, 1.0f / N), SR_OK);
    float *whole = malloc(glen * sizeof(float));
    assert_int_equal(ops->get_grads(b, whole), SR_OK);
    float *sum = calloc(glen, sizeof(float));
    float *g = malloc(glen * sizeof(float));
    for (int half = 0; half < 2; half++) {
        assert_int_equal(ops->train_step(b, x + half * (N / 2) * 10,
                                         y + half * (N / 2), N / 2,
                                         1.0f / N), SR_OK);
        assert_int_equal(ops->get_grads(b, g), SR_OK);
        for (size_t i = 0; i < glen; i++)
            sum[i] += g[i];
    }
    free(g);
    for (size_t i = 0; i < m.nparams + 1; i++)
        assert_true(fabsf(sum[i] - whole[i]) <= 1e-6f + 1e-5f *
                    fabsf(whole[i]));
    ops->destroy(b);
    free(p);
    free(whole);
    free(sum);
}

/* Threads cut the batch into lanes whose gradients are summed: the result
 * equals one lane up to float summation order, also when some lanes get
 * no rows, and the optimizer split by parameter ranges gives the same
 * update as one thread. */
static void test_mlp__threads_match_one_thread(void **state)
{
    (void)state;
    struct mlp m;
    float x[N * 10];
    int32_t y[N];
    float *p = two_layer_setup(&m, 10, 33, 17, 5, 3, x, y);
    float *ref = NULL;
    float *ref_p = malloc(m.nparams * sizeof(float));
    struct optim_params op = { .kind = OPTIM_ADAMW, .beta1 = 0.9,
                               .beta2 = 0.999, .eps = 1e-8,
                               .weight_decay = 0.01 };
    int threads[] = { 1, 3, 16 };
    for (int k = 0; k < 3; k++) {
        struct pool *pl;
        assert_int_equal(pool_create(&pl, threads[k]), SR_OK);
        struct backend *b;
        struct backend_opts o = { .max_batch = N, .pool = pl,
                                  .optim = OPTIM_ADAMW };
        assert_int_equal(backend_cpu_ops.create(&b, &m, &o), SR_OK);
        assert_int_equal(backend_cpu_ops.set_params(b, p), SR_OK);
        assert_int_equal(backend_cpu_ops.train_step(b, x, y, N, 1.0f / N),
                         SR_OK);
        size_t glen = m.nparams + BACKEND_GRAD_EXTRA;
        float *g = malloc(glen * sizeof(float));
        assert_int_equal(backend_cpu_ops.get_grads(b, g), SR_OK);
        if (!ref) {
            ref = malloc(glen * sizeof(float));
            memcpy(ref, g, glen * sizeof(float));
        } else {
            for (size_t i = 0; i < glen; i++)
                if (fabsf(g[i] - ref[i]) > 1e-6f + 1e-5f * fabsf(ref[i]))
                    fail_msg("%d threads: grad %zu is %g, one thread %g",
                             threads[k], i, g[i], ref[i]);
        }
        /* same input to the step */
        assert_int_equal(backend_cpu_ops.set_grads(b, ref), SR_OK);
        free(g);
        assert_int_equal(backend_cpu_ops.optimizer_step(b, &op, 0.01f, 1),
                         SR_OK);
        float *after = malloc(m.nparams * sizeof(float));
        assert_int_equal(backend_cpu_ops.get_params(b, after), SR_OK);
        if (k == 0)
            memcpy(ref_p, after, m.nparams * sizeof(float));
        else
            assert_memory_equal(after, ref_p, m.nparams * sizeof(float));
        free(after);
        backend_cpu_ops.destroy(b);
        pool_destroy(pl);
    }
    free(ref);
    free(ref_p);
    free(p);
}

/* In a single process the lanes' gradients are summed chunk by chunk
 * inside optimizer_step. That update is bit-identical to summing them
 * first (get_grads) and then stepping, for both optimizers, across chunk
 * and tensor boundaries; and the step's gradients stay readable after it. */
static void test_mlp__fused_sum_matches_separate_sum(void **state)
{
    (void)state;
    struct mlp m;
    float x[N * 40];
    int32_t y[N];
    /* 3797 parameters: several chunks */
    float *p = two_layer_setup(&m, 40, 50, 30, 7, 11, x, y);
    size_t glen = m.nparams + BACKEND_GRAD_EXTRA;
    float *g[2], *after[2], *st[2];
    for (int k = 0; k < 2; k++) {
        g[k] = malloc(glen * sizeof(float));
        after[k] = malloc(m.nparams * sizeof(float));
        st[k] = malloc(2 * m.nparams * sizeof(float));
    }
    enum optim_kind kinds[2] = { OPTIM_ADAMW, OPTIM_SGD };
    int threads[2] = { 2, 3 };
    for (int c = 0; c < 4; c++) {
        struct optim_params op = { .kind = kinds[c % 2], .beta1 = 0.9,
                                   .beta2 = 0.999, .eps = 1e-8,
                                   .momentum = 0.9, .weight_decay = 0.05 };
        struct pool *pl;
        assert_int_equal(pool_create(&pl, threads[c / 2]), SR_OK);
        for (int k = 0; k < 2; k++) {   /* 0: fused, 1: summed first */
            struct backend *b;
            struct backend_opts o = { .max_batch = N, .pool = pl,
                                      .optim = op.kind };
            const struct backend_ops *ops = &backend_cpu_ops;
            assert_int_equal(ops->create(&b, &m, &o), SR_OK);
            assert_int_equal(ops->set_params(b, p), SR_OK);
            for (uint64_t step = 1; step <= 3; step++) {
                assert_int_equal(ops->train_step(b, x, y, N, 1.0f / N),
                                 SR_OK);
                if (k == 1)
                    assert_int_equal(ops->get_grads(b, g[k]), SR_OK);
                assert_int_equal(ops->optimizer_step(b, &op, 0.05f, step),
                                 SR_OK);
            }
            if (k == 0)     /* read after the fused step */
                assert_int_equal(ops->get_grads(b, g[k]), SR_OK);
            assert_int_equal(ops->get_params(b, after[k]), SR_OK);
            assert_int_equal(ops->get_opt_state(b, st[k]), SR_OK);
            ops->destroy(b);
        }
        size_t slen = m.nparams * (size_t)optim_state_per_param(op.kind);
        assert_memory_equal(g[0], g[1], glen * sizeof(float));
        assert_memory_equal(after[0], after[1], m.nparams * sizeof(float));
        assert_memory_equal(st[0], st[1], slen * sizeof(float));
        /* and the parameters did move */
        assert_true(memcmp(after[0], p, m.nparams * sizeof(float)) != 0);
        pool_destroy(pl);
    }
    for (int k = 0; k < 2; k++) {
        free(g[k]);
        free(after[k]);
        free(st[k]);
    }
    free(p);
}

static void test_mlp__uniform_logits_give_log_classes(void **state)
{
    (void)state;
    int hidden[1] = { 4 };
    struct mlp m;
    assert_int_equal(mlp_shape(&m, 3, hidden, 1, 10), SR_OK);
    struct backend *b;
    struct backend_opts o = { .max_batch = 4, .optim = OPTIM_SGD };
    assert_int_equal(backend_cpu_ops.create(&b, &m, &o), SR_OK);
    float *p = calloc(m.nparams, sizeof(float));
    assert_int_equal(backend_cpu_ops.set_params(b, p), SR_OK);
    float x[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    int32_t y[4] = { 0, 3, 9, 5 };
    double l = loss_at(&backend_cpu_ops, b, x, y, 4);
    assert_true(fabs(l - log(10.0)) < 1e-6);
    backend_cpu_ops.destroy(b);
    free(p);
}

static void test_mlp__layout_names_and_init(void **state)
{
    (void)state;
    int hidden[2] = { 256, 128 };
    struct mlp m;
    assert_int_equal(mlp_shape(&m, 784, hidden, 2, 10), SR_OK);
    assert_int_equal(m.nparams, 784 * 256 + 256 + 256 * 128 + 128 +
                     128 * 10 + 10);
    assert_int_equal(mlp_ntensors(&m), 6);
    char name[32];
    int ndim;
    size_t dims[2], off, cnt, total = 0;
    for (int t = 0; t < 6; t++) {
        mlp_tensor(&m, t, name, sizeof name, &ndim, dims, &off, &cnt);
        assert_int_equal(off, total);
        total += cnt;
    }
    assert_int_equal(total, m.nparams);
    mlp_tensor(&m, 2, name, sizeof name, &ndim, dims, &off, &cnt);
    assert_string_equal(name, "fc2.weight");
    assert_int_equal(dims[0], 128);
    assert_int_equal(dims[1], 256);
    mlp_tensor(&m, 5, name, sizeof name, &ndim, dims, &off, &cnt);
    assert_string_equal(name, "fc3.bias");
    assert_int_equal(ndim, 1);

    float *a = malloc(m.nparams * sizeof(float));
    float *b = malloc(m.nparams * sizeof(float));
    mlp_init_params(&m, a, 42);
    mlp_init_params(&m, b, 42);
    assert_memory_equal(a, b, m.nparams * sizeof(float));
    float k = 1.0f / sqrtf(784.0f);
    double mean = 0;
    for (size_t i = 0; i < 784 * 256; i++) {
        assert_true(fabsf(a[i]) <= k);
        mean += a[i];
    }
    assert_true(fabs(mean / (784 * 256)) < 0.01 * k);
    mlp_init_params(&m, b, 43);
    assert_memory_not_equal(a, b, m.nparams * sizeof(float));
    free(a);
    free(b);

    assert_int_equal(mlp_shape(&m, 784, hidden, 0, 10), SR_ERR_USAGE);
    hidden[0] = 0;
    assert_int_equal(mlp_shape(&m, 784, hidden, 2, 10), SR_ERR_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp__gradients_match_finite_differences),
        cmocka_unit_test(test_mlp__split_batch_sums_to_whole),
        cmocka_unit_test(test_mlp__threads_match_one_thread),
        cmocka_unit_test(test_mlp__fused_sum_matches_separate_sum),
        cmocka_unit_test(test_mlp__uniform_logits_give_log_classes),
        cmocka_unit_test(test_mlp__layout_names_and_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
