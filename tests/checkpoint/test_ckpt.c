/*
 * test_ckpt.c: checkpoint images round-trip exactly; commit writes the
 * manifest last and never overwrites a committed step; ckpt_load catches
 * a flipped byte, a truncated object and a missing manifest; retention
 * keeps the newest N committed and removes stale leftovers; the
 * background writer commits what it is given.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/ckpt.h"
#include "checkpoint/writer.h"

static char dir[64];
static struct storage *st;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/spotrun-test-ckpt-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    return storage_open(&st) == SR_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    storage_close(st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void make_meta(struct ckpt_meta *m, int64_t step)
{
    memset(m, 0, sizeof *m);
    int hidden[2] = { 5, 4 };
    assert_int_equal(mlp_shape(&m->shape, 6, hidden, 2, 3), SR_OK);
    m->step = step;
    m->epoch = 1;
    m->position = 96;
    m->world_size = 2;
    m->global_batch = 32;
    m->seed = 0xfedcba9876543210ull;
    m->shuffle_block = 4096;
    m->optim = OPTIM_ADAMW;
    m->dataset_records = 1000;
    snprintf(m->dataset_id, sizeof m->dataset_id, "%064d", 7);
    m->epoch_loss_sum = 1.25;
    m->epoch_steps = 3;
    m->epoch_wait_s = 0.5;
    m->created = 1.7e9;
}

static void fill(float *p, size_t n, float base)
{
    for (size_t i = 0; i < n; i++)
        p[i] = base + (float)i * 0.001f;
}

static void commit_step(int64_t step)
{
    struct ckpt_meta m;
    make_meta(&m, step);
    size_t np = m.shape.nparams;
    float *p = malloc(np * sizeof(float)), *o = malloc(2 * np * sizeof(float));
    fill(p, np, (float)step);
    fill(o, 2 * np, -(float)step);
    struct sr_buf img = { 0 };
    assert_int_equal(ckpt_build_image(&img, &m, "{\"k\":1}", p, o), SR_OK);
    assert_int_equal(ckpt_commit(st, dir, &m, img.data, img.len), SR_OK);
    buf_free(&img);
    free(p);
    free(o);
}

static void test_ckpt__image_round_trip(void **state)
{
    (void)state;
    struct ckpt_meta m, r;
    make_meta(&m, 42);
    size_t np = m.shape.nparams;
    float *p = malloc(np * sizeof(float)), *o = malloc(2 * np * sizeof(float));
    float *p2 = malloc(np * sizeof(float)), *o2 = malloc(2 * np *
                                                         sizeof(float));
    fill(p, np, 0.5f);
    fill(o, 2 * np, -3.0f);
    struct sr_buf img = { 0 };
    assert_int_equal(ckpt_build_image(&img, &m, "{}", p, o), SR_OK);
    assert_int_equal(ckpt_read_meta(&r, img.data, img.len, "img"), SR_OK);
    assert_int_equal(r.step, 42);
    assert_int_equal(r.epoch, 1);
    assert_int_equal(r.position, 96);
    assert_int_equal(r.world_size, 2);
    assert_int_equal(r.global_batch, 32);
    assert_true(r.seed == m.seed);
    assert_int_equal(r.shuffle_block, 4096);
    assert_int_equal(r.optim, OPTIM_ADAMW);
    assert_int_equal(r.shape.nparams, np);
    assert_int_equal(r.shape.dims[1], 5);
    assert_string_equal(r.dataset_id, m.dataset_id);
    assert_true(r.epoch_loss_sum == 1.25);
    assert_int_equal(r.epoch_steps, 3);
    assert_int_equal(ckpt_read_tensors(img.data, img.len, "img", &r, p2, o2),
                     SR_OK);
    assert_memory_equal(p, p2, np * sizeof(float));
    assert_memory_equal(o, o2, 2 * np * sizeof(float));
    img.data[img.len / 2] ^= 0xff;      /* a flip inside HDF5 data */
    img.data[8] ^= 0xff;                /* and in its superblock */
    assert_int_not_equal(ckpt_read_meta(&r, img.data, img.len, "img"),
                         SR_OK);
    buf_free(&img);
    free(p);
    free(o);
    free(p2);
    free(o2);
}

/* Built in place in a reused arena, the image is byte for byte the one
 * h5img_finish copies out (whose reading back image_round_trip checks),
 * also the second time round. */
static void test_ckpt__image_in_arena(void **state)
{
    (void)state;
    struct ckpt_meta m;
    make_meta(&m, 7);
    size_t np = m.shape.nparams;
    float *p = malloc(np * sizeof(float)), *o = malloc(2 * np * sizeof(float));
    struct sr_buf arena = { 0 };
    for (int round = 0; round < 2; round++) {
        m.step = 7 + round;
        fill(p, np, 1.0f + (float)round);
        fill(o, 2 * np, -2.0f - (float)round);
        struct sr_buf copy = { 0 };
        assert_int_equal(ckpt_build_image(&copy, &m, "{}", p, o), SR_OK);
        size_t len = 0;
        assert_int_equal(ckpt_image_in(&arena, &len, &m, "{}", p, o), SR_OK);
        assert_int_equal(len, copy.len);
        assert_memory_equal(arena.data, copy.data, len);
        buf_free(&copy);
    }
    buf_free(&arena);
    free(p);
    free(o);
}

static void test_ckpt__commit_load_and_corruption(void **state)
{
    (void)state;
    commit_step(100);
    commit_step(200);
    struct ckpt_entry *v;
    size_t n;
    assert_int_equal(ckpt_list(st, dir, &v, &n), SR_OK);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].step, 200);
    assert_true(v[0].committed && v[1].committed);
    free(v);

    /* a committed step is never overwritten */
    struct ckpt_meta m;
    make_meta(&m, 200);
    assert_int_equal(ckpt_commit(st, dir, &m, "x", 1), SR_ERR_EXISTS);
    struct sr_buf img = { 0 };
    assert_int_equal(ckpt_load(st, dir, 200, &img), SR_OK);
    assert_true(img.len > 1000);

    char path[256];
    assert_int_equal(ckpt_uri(path, sizeof path, dir, 200, CKPT_STATE_OBJECT),
                     SR_OK);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 100, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 100, SEEK_SET);
    fputc(c ^ 1, f);
    fclose(f);
    assert_int_equal(ckpt_load(st, dir, 200, &img), SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "SHA-256 mismatch"));

    assert_int_equal(truncate(path, 1000), 0);
    assert_int_equal(ckpt_load(st, dir, 200, &img), SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "manifest says"));

    assert_int_equal(ckpt_uri(path, sizeof path, dir, 100, CKPT_MANIFEST),
                     SR_OK);
    unlink(path);
    assert_int_equal(ckpt_load(st, dir, 100, &img), SR_ERR_NOT_FOUND);
    assert_non_null(strstr(sr_errmsg(), "not committed"));
    assert_int_equal(ckpt_list(st, dir, &v, &n), SR_OK);
    assert_int_equal(n, 2);
    assert_false(v[1].committed);
    free(v);
    buf_free(&img);
}

static void test_ckpt__prune(void **state)
{
    (void)state;
    for (int64_t s = 10; s <= 50; s += 10)
        commit_step(s);
    /* an uncommitted leftover older than the newest committed, and a
     * newer one that may still be in flight */
    char path[256];
    assert_int_equal(ckpt_uri(path, sizeof path, dir, 30, CKPT_MANIFEST),
                     SR_OK);
    unlink(path);
    assert_int_equal(ckpt_uri(path, sizeof path, dir, 60, CKPT_STATE_OBJECT),
                     SR_OK);
    assert_int_equal(storage_put(st, path, "partial", 7, 0), SR_OK);
    assert_int_equal(ckpt_prune(st, dir, 2), SR_OK);
    struct ckpt_entry *v;
    size_t n;
    assert_int_equal(ckpt_list(st, dir, &v, &n), SR_OK);
    assert_int_equal(n, 3);
    assert_int_equal(v[0].step, 60);
    assert_false(v[0].committed);
    assert_int_equal(v[1].step, 50);
    assert_int_equal(v[2].step, 40);
    assert_true(v[1].committed && v[2].committed);
    free(v);
}

static void test_ckpt__background_writer(void **state)
{
    (void)state;
    struct ckpt_meta m;
    make_meta(&m, 7);
    struct ckpt_writer *w;
    struct ckpt_writer_opts o = { .st = st, .root = dir, .keep = 1,
                                  .nparams = m.shape.nparams,
                                  .nstate = 2 * m.shape.nparams,
                                  .config_json = "{}" };
    assert_int_equal(ckpt_writer_start(&w, &o), SR_OK);
    float *p, *s;
    for (int64_t step = 7; step <= 9; step++) {
        assert_int_equal(ckpt_writer_wait(w), SR_OK);
        ckpt_writer_buffers(w, &p, &s);
        fill(p, m.shape.nparams, (float)step);
        fill(s, 2 * m.shape.nparams, 1.0f);
        m.step = step;
        if (step < 9) {
            ckpt_writer_submit(w, &m);
        } else {
            assert_int_equal(ckpt_writer_write_now(w, &m), SR_OK);
        }
    }
    assert_int_equal(ckpt_writer_wait(w), SR_OK);
    struct ckpt_writer_stats stats;
    ckpt_writer_stats(w, &stats);
    assert_int_equal(stats.committed, 3);
    assert_int_equal(stats.last_step, 9);
    ckpt_writer_stop(w);
    struct ckpt_entry *v;
    size_t n;
    assert_int_equal(ckpt_list(st, dir, &v, &n), SR_OK);
    assert_int_equal(n, 1);             /* keep = 1 */
    assert_int_equal(v[0].step, 9);
    free(v);
    struct sr_buf img = { 0 };
    struct ckpt_meta r;
    assert_int_equal(ckpt_load(st, dir, 9, &img), SR_OK);
    assert_int_equal(ckpt_read_meta(&r, img.data, img.len, "x"), SR_OK);
    float *back = malloc(m.shape.nparams * sizeof(float));
    float *bs = malloc(2 * m.shape.nparams * sizeof(float));
    assert_int_equal(ckpt_read_tensors(img.data, img.len, "x", &r, back, bs),
                     SR_OK);
    assert_true(back[0] == 9.0f);
    free(back);
    free(bs);
    buf_free(&img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ckpt__image_round_trip),
        cmocka_unit_test(test_ckpt__image_in_arena),
        cmocka_unit_test_setup_teardown(test_ckpt__commit_load_and_corruption,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_ckpt__prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ckpt__background_writer, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
