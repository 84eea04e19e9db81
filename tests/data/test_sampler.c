/*
 * test_sampler.c: the epoch order is a permutation, reproducible from the
 * seed, different per epoch, confined to shuffle blocks, and the rank
 * slices of every world size concatenate to the same global sequence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "data/sampler.h"

static const uint64_t counts[] = { 700, 1, 333, 1200, 64 };
#define NSH 5
#define TOTAL 2298

static void test_sampler__epoch_is_permutation(void **state)
{
    (void)state;
    uint64_t blocks[] = { 1, 7, 100, 1024, 1u << 20 };
    for (size_t b = 0; b < 5; b++) {
        struct sampler s;
        assert_int_equal(sampler_init(&s, counts, NSH, 42, blocks[b], 1),
                         SR_OK);
        for (uint64_t e = 0; e < 3; e++) {
            sampler_set_epoch(&s, e);
            uint8_t *seen = calloc(TOTAL, 1);
            for (uint64_t p = 0; p < TOTAL; p++) {
                uint64_t id = sampler_at(&s, p);
                assert_true(id < TOTAL);
                assert_int_equal(seen[id], 0);
                seen[id] = 1;
            }
            free(seen);
        }
        sampler_free(&s);
    }
}

static void test_sampler__seeded_and_per_epoch(void **state)
{
    (void)state;
    struct sampler a, b, c;
    assert_int_equal(sampler_init(&a, counts, NSH, 7, 500, 1), SR_OK);
    assert_int_equal(sampler_init(&b, counts, NSH, 7, 500, 1), SR_OK);
    assert_int_equal(sampler_init(&c, counts, NSH, 8, 500, 1), SR_OK);
    sampler_set_epoch(&a, 3);
    sampler_set_epoch(&b, 3);
    sampler_set_epoch(&c, 3);
    int diff_seed = 0;
    for (uint64_t p = 0; p < TOTAL; p++) {
        assert_int_equal(sampler_at(&a, p), sampler_at(&b, p));
        diff_seed += sampler_at(&a, p) != sampler_at(&c, p);
    }
    assert_true(diff_seed > TOTAL / 2);
    sampler_set_epoch(&b, 4);
    int diff_epoch = 0;
    for (uint64_t p = 0; p < TOTAL; p++)
        diff_epoch += sampler_at(&a, p) != sampler_at(&b, p);
    assert_true(diff_epoch > TOTAL / 2);
    /* random access (a backwards walk crosses blocks) matches a forward
     * walk */
    uint64_t *fwd = malloc(TOTAL * sizeof *fwd);
    for (uint64_t p = 0; p < TOTAL; p++)
        fwd[p] = sampler_at(&a, p);
    for (uint64_t p = TOTAL; p-- > 0;)
        assert_int_equal(sampler_at(&a, p), fwd[p]);
    free(fwd);
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
}

static void test_sampler__block_locality(void **state)
{
    (void)state;
    /* one shard: the shard order cannot move records, so block k holds
     * exactly records [k*B, (k+1)*B) in some order */
    uint64_t one = 1000;
    struct sampler s;
    assert_int_equal(sampler_init(&s, &one, 1, 3, 64, 1), SR_OK);
    sampler_set_epoch(&s, 1);
    int moved = 0;
    for (uint64_t p = 0; p < one; p++) {
        uint64_t id = sampler_at(&s, p);
        assert_int_equal(id / 64, p / 64);
        moved += id != p;
    }
    assert_true(moved > 900);
    sampler_free(&s);
}

static void test_sampler__identity_when_not_shuffled(void **state)
{
    (void)state;
    struct sampler s;
    assert_int_equal(sampler_init(&s, counts, NSH, 1, 10, 0), SR_OK);
    sampler_set_epoch(&s, 5);
    for (uint64_t p = 0; p < TOTAL; p++)
        assert_int_equal(sampler_at(&s, p), p);
    sampler_free(&s);
}

static void test_sampler__world_sizes_see_one_sequence(void **state)
{
    (void)state;
    const uint64_t batch = 48;
    const uint64_t steps = TOTAL / batch;
    uint64_t *ref = malloc(steps * batch * sizeof *ref);
    struct sampler s;
    assert_int_equal(sampler_init(&s, counts, NSH, 11, 256, 1), SR_OK);
    sampler_set_epoch(&s, 2);
    for (uint64_t p = 0; p < steps * batch; p++)
        ref[p] = sampler_at(&s, p);
    int worlds[] = { 1, 2, 3, 4, 6, 8 };
    for (size_t w = 0; w < 6; w++) {
        int world = worlds[w];
        uint64_t k = 0, local = batch / (uint64_t)world;
        for (uint64_t step = 0; step < steps; step++)
            for (int r = 0; r < world; r++) {
                uint64_t p0 = sampler_slice_start(step, batch, r, world);
                for (uint64_t i = 0; i < local; i++)
                    assert_int_equal(sampler_at(&s, p0 + i), ref[k++]);
            }
        assert_int_equal(k, steps * batch);
    }
    free(ref);
    sampler_free(&s);
}

static void test_sampler__rejects_bad_block(void **state)
{
    (void)state;
    struct sampler s;
    assert_int_equal(sampler_init(&s, counts, NSH, 1, 0, 1), SR_ERR_USAGE);
    assert_int_equal(sampler_init(&s, counts, 0, 1, 10, 1), SR_ERR_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler__epoch_is_permutation),
        cmocka_unit_test(test_sampler__seeded_and_per_epoch),
        cmocka_unit_test(test_sampler__block_locality),
        cmocka_unit_test(test_sampler__identity_when_not_shuffled),
        cmocka_unit_test(test_sampler__world_sizes_see_one_sequence),
        cmocka_unit_test(test_sampler__rejects_bad_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
