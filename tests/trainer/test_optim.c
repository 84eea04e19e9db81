/*
 * test_optim.c: SGD with momentum and AdamW against reference updates
 * computed in double precision from the torch.optim formulas, over several
 * steps; and the warm-up + cosine learning-rate schedule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "trainer/optim.h"

#define NP 37

static void test_optim__sgd_matches_reference(void **state)
{
    (void)state;
    float p[NP], g[NP], mom[NP] = { 0 };
    double rp[NP], rb[NP] = { 0 };
    const double lr = 0.05, mu = 0.9, wd = 0.01;
    for (int i = 0; i < NP; i++)
        rp[i] = p[i] = (float)(0.1 * (i - 18));
    for (int step = 1; step <= 5; step++) {
        for (int i = 0; i < NP; i++)
            g[i] = (float)(0.01 * ((i * step) % 7) - 0.03);
        optim_sgd_cpu(p, g, mom, NP, (float)lr, (float)mu, (float)wd);
        for (int i = 0; i < NP; i++) {
            double d = g[i] + wd * rp[i];
            rb[i] = mu * rb[i] + d;   /* torch: buf = d on step 1 (buf 0) */
            rp[i] -= lr * rb[i];
        }
    }
    for (int i = 0; i < NP; i++)
        assert_true(fabs(p[i] - rp[i]) < 1e-6);
}

static void test_optim__adamw_matches_reference(void **state)
{
    (void)state;
    float p[NP], g[NP], m[NP] = { 0 }, v[NP] = { 0 };
    double rp[NP], rm[NP] = { 0 }, rv[NP] = { 0 };
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    for (int i = 0; i < NP; i++)
        rp[i] = p[i] = (float)(0.05 * (i - 18));
    for (int step = 1; step <= 10; step++) {
        for (int i = 0; i < NP; i++)
            g[i] = (float)(0.02 * sin(i + step));
        float step_size, inv_bc2_sqrt;
        optim_adamw_coefs((float)lr, (float)b1, (float)b2, (uint64_t)step,
                          &step_size, &inv_bc2_sqrt);
        optim_adamw_cpu(p, g, m, v, NP, (float)lr, (float)b1, (float)b2,
                        (float)eps, (float)wd, step_size, inv_bc2_sqrt);
        for (int i = 0; i < NP; i++) {
            rp[i] *= 1 - lr * wd;
            rm[i] = b1 * rm[i] + (1 - b1) * g[i];
            rv[i] = b2 * rv[i] + (1 - b2) * g[i] * g[i];
            double mh = rm[i] / (1 - pow(b1, step));
            double vh = rv[i] / (1 - pow(b2, step));
            rp[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    for (int i = 0; i < NP; i++) {
        assert_true(fabs(p[i] - rp[i]) < 1e-6);
        assert_true(fabs(m[i] - rm[i]) < 1e-7);
    }
}

static void test_optim__schedule(void **state)
{
    (void)state;
    struct lr_schedule s = { .lr = 0.1, .min_lr = 0.001, .warmup_steps = 10,
                             .total_steps = 110 };
    assert_true(fabs(lr_at(&s, 0) - 0.01) < 1e-12);
    assert_true(fabs(lr_at(&s, 4) - 0.05) < 1e-12);
    assert_true(fabs(lr_at(&s, 9) - 0.1) < 1e-12);
    assert_true(fabs(lr_at(&s, 10) - 0.1) < 1e-12);
    assert_true(fabs(lr_at(&s, 60) - (0.001 + 0.5 * 0.099)) < 1e-12);
    assert_true(fabs(lr_at(&s, 110) - 0.001) < 1e-12);
    assert_true(fabs(lr_at(&s, 500) - 0.001) < 1e-12);
    for (uint64_t t = 10; t < 110; t++)
        assert_true(lr_at(&s, t + 1) <= lr_at(&s, t));
    struct lr_schedule flat = { .lr = 0.2, .min_lr = 0, .warmup_steps = 0,
                                .total_steps = 0 };
    assert_true(lr_at(&flat, 7) == 0.2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optim__sgd_matches_reference),
        cmocka_unit_test(test_optim__adamw_matches_reference),
        cmocka_unit_test(test_optim__schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
