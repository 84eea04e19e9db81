/*
 * test_metrics.c: the per-epoch record, as the name=value line and as the
 * JSON object appended to --metrics-file; a value that is not a finite
 * number is written as null (JSON has no NaN), not a failed write.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/metrics.h"

struct fixture {
    char dir[64];
    char uri[128];
    struct storage *st;
    FILE *out;      /* the name=value lines */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/test_metrics.XXXXXX");
    if (!mkdtemp(f->dir) || storage_open(&f->st) != SR_OK)
        return -1;
    snprintf(f->uri, sizeof f->uri, "%s/metrics.jsonl", f->dir);
    f->out = tmpfile();
    *state = f;
    return f->out ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    fclose(f->out);
    unlink(f->uri);
    rmdir(f->dir);
    storage_close(f->st);
    free(f);
    return 0;
}

/* One metrics writer records epochs e[0..n) in both forms. */
static void write_epochs(const struct fixture *f,
                         const struct epoch_metrics *e, size_t n)
{
    struct metrics m;
    assert_int_equal(metrics_open(&m, f->st, f->uri, 0), SR_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(metrics_epoch(&m, &e[i], f->out), SR_OK);
    metrics_close(&m);
}

/* Line k (0-based) of the metrics file, parsed. */
static json_t *record(const struct fixture *f, int k)
{
    FILE *in = fopen(f->uri, "r");
    assert_non_null(in);
    char line[1024];
    for (int i = 0; i <= k; i++)
        assert_non_null(fgets(line, sizeof line, in));
    fclose(in);
    json_error_t err;
    json_t *o = json_loads(line, 0, &err);
    if (!o)
        fail_msg("line %d is not JSON (%s): %s", k + 1, err.text, line);
    return o;
}

/* The name=value line printed last. */
static void last_line(const struct fixture *f, char *buf, size_t cap)
{
    rewind(f->out);
    buf[0] = '\0';
    char line[1024];
    while (fgets(line, sizeof line, f->out))
        snprintf(buf, cap, "%s", line);
}

static void test_metrics__record_in_both_forms(void **state)
{
    struct fixture *f = *state;
    struct epoch_metrics e = {
        .epoch = 2, .step = 468, .train_loss = 0.3512, .has_val = 1,
        .val_loss = 0.3861, .val_accuracy = 0.8712,
        .samples_per_sec = 48211, .data_wait_s = 0.02, .epoch_s = 1.31,
    };
    write_epochs(f, &e, 1);

    char line[1024];
    last_line(f, line, sizeof line);
    assert_string_equal(line, "epoch=2 step=468 train_loss=0.3512 "
                        "val_loss=0.3861 val_accuracy=0.8712 "
                        "samples_per_sec=48211 data_wait_s=0.020 "
                        "epoch_s=1.310\n");
    json_t *o = record(f, 0);
    assert_int_equal(json_integer_value(json_object_get(o, "epoch")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "step")), 468);
    assert_true(fabs(json_real_value(json_object_get(o, "train_loss")) -
                     0.3512) < 1e-12);
    assert_true(fabs(json_real_value(json_object_get(o, "val_accuracy")) -
                     0.8712) < 1e-12);
    assert_true(json_is_real(json_object_get(o, "timestamp")));
    json_decref(o);
}

static void test_metrics__non_finite_values_are_null(void **state)
{
    struct fixture *f = *state;
    struct epoch_metrics e[2] = {
        { .epoch = 1, .step = 234, .train_loss = 2.25, .has_val = 1,
          .val_loss = INFINITY, .val_accuracy = NAN,
          .samples_per_sec = 1000, .data_wait_s = 0, .epoch_s = 1 },
        { .epoch = 2, .step = 468, .train_loss = 2.25, .has_val = 1,
          .val_loss = 0.5, .val_accuracy = 0.75,
          .samples_per_sec = 1000, .data_wait_s = 0, .epoch_s = 1 },
    };
    write_epochs(f, e, 2);

    json_t *o = record(f, 0);
    assert_true(json_is_null(json_object_get(o, "val_loss")));
    assert_true(json_is_null(json_object_get(o, "val_accuracy")));
    assert_true(fabs(json_real_value(json_object_get(o, "train_loss")) -
                     2.25) < 1e-12);
    json_decref(o);
    o = record(f, 1);   /* the next epoch still lands, with its numbers */
    assert_int_equal(json_integer_value(json_object_get(o, "epoch")), 2);
    assert_true(fabs(json_real_value(json_object_get(o, "val_loss")) - 0.5)
                < 1e-12);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics__record_in_both_forms,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_metrics__non_finite_values_are_null, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
