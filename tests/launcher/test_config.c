/*
 * test_config.c: configuration layering and checking. Defaults, then
 * hyperparameters.json (SageMaker's string values, JSON-encoded values
 * unwrapped, its own keys ignored), then a job file, then SPOTRUN_*
 * variables, then flags in both spellings; every bad value is refused with
 * a message naming the option and where it came from.
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

#include "launcher/config.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/spotrun-test-config-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char p[128];
    snprintf(p, sizeof p, "%s/input/config", dir);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", p);
    if (system(cmd) != 0)
        return -1;
    setenv("SPOTRUN_SAGEMAKER_ROOT", dir, 1);
    unsetenv("SPOTRUN_LR");
    unsetenv("SPOTRUN_EPOCHS");
    unsetenv("SPOTRUN_CONFIG");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    unsetenv("SPOTRUN_SAGEMAKER_ROOT");
    unsetenv("SPOTRUN_LR");
    unsetenv("SPOTRUN_EPOCHS");
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static struct config_state cs;

static sr_status load(int argc, const char **argv)
{
    return config_load(&cs, argc, (char **)argv);
}

static void test_config__defaults(void **state)
{
    (void)state;
    assert_int_equal(load(0, NULL), SR_OK);
    const struct train_config *c = &cs.cfg;
    assert_int_equal(c->nhidden, 2);
    assert_int_equal(c->hidden[0], 256);
    assert_int_equal(c->hidden[1], 128);
    assert_int_equal(c->epochs, 10);
    assert_int_equal(c->batch_size, 256);
    assert_string_equal(c->optimizer, "adamw");
    assert_true(c->lr == 0.003);
    assert_string_equal(c->data, "");
    assert_int_equal(config_validate(c, 1), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "--data is required"));
}

static void test_config__flag_spellings(void **state)
{
    (void)state;
    const char *argv[] = { "--data", "s3://b/train", "--lr=0.5",
                           "--hidden", "64, 32,16", "--optimizer=sgd",
                           "--batch_size", "96" };
    assert_int_equal(load(8, argv), SR_OK);
    assert_string_equal(cs.cfg.data, "s3://b/train");
    assert_true(cs.cfg.lr == 0.5);
    assert_int_equal(cs.cfg.nhidden, 3);
    assert_int_equal(cs.cfg.hidden[2], 16);
    assert_string_equal(cs.cfg.optimizer, "sgd");
    assert_int_equal(cs.cfg.batch_size, 96);
    assert_int_equal(config_validate(&cs.cfg, 3), SR_OK);
    assert_int_equal(config_validate(&cs.cfg, 5), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "does not divide by the 5 ranks"));
}

static void test_config__precedence(void **state)
{
    (void)state;
    char hp[192], job[192];
    snprintf(hp, sizeof hp, "%s/input/config/hyperparameters.json", dir);
    snprintf(job, sizeof job, "%s/job.json", dir);
    /* SageMaker: every value a string; the SDK JSON-encodes some */
    write_file(hp, "{\"lr\": \"0.01\", \"epochs\": \"3\", \"optimizer\": "
                   "\"\\\"sgd\\\"\", \"hidden\": \"[64, 32]\", \"seed\": "
                   "\"5\", \"momentum\": \"0.8\", \"sagemaker_program\": "
                   "\"x\", \"_tuning_objective_metric\": \"val_loss\"}");
    write_file(job, "{\"lr\": 0.02, \"epochs\": 4, \"seed\": 6, "
                    "\"hidden\": [8, 4, 2]}");
    setenv("SPOTRUN_LR", "0.03", 1);
    setenv("SPOTRUN_EPOCHS", "7", 1);
    const char *argv[] = { "--config", job, "--lr", "0.04" };
    assert_int_equal(load(4, argv), SR_OK);
    assert_true(cs.cfg.lr == 0.04);              /* flag */
    assert_int_equal(cs.cfg.epochs, 7);          /* environment */
    assert_int_equal(cs.cfg.seed, 6);            /* job file */
    assert_int_equal(cs.cfg.nhidden, 3);         /* job file */
    assert_string_equal(cs.cfg.optimizer, "sgd");/* hyperparameters */
    assert_true(cs.cfg.momentum == 0.8);         /* hyperparameters */
    assert_int_equal(cs.cfg.batch_size, 256);    /* default */

    unsetenv("SPOTRUN_LR");
    unsetenv("SPOTRUN_EPOCHS");
    assert_int_equal(load(0, NULL), SR_OK);
    assert_true(cs.cfg.lr == 0.01);
    assert_int_equal(cs.cfg.nhidden, 2);
    assert_int_equal(cs.cfg.hidden[0], 64);
    char *json = config_to_json(&cs);
    assert_non_null(strstr(json, "\"hidden\":[64,32]"));
    free(json);
}

static void test_config__bad_values(void **state)
{
    (void)state;
    static const struct {
        const char *flag, *value, *expect;
    } bad[] = {
        { "--lr", "-1", "--lr must be in" },
        { "--lr", "abc", "'abc' is not a number" },
        { "--hidden", "", "needs at least one size" },
        { "--hidden", "256,,128", "empty item" },
        { "--hidden", "256,0", "is not a size" },
        { "--epochs", "1.5", "not an integer" },
        { "--optimizer", "lamb", "must be one of sgd|adamw" },
        { "--batch-size", "0", "--batch-size must be in" },
        { "--bogus", "1", "unknown option --bogus" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = { bad[i].flag, bad[i].value };
        assert_int_equal(load(2, argv), SR_ERR_USAGE);
        if (!strstr(sr_errmsg(), bad[i].expect))
            fail_msg("%s %s: message '%s' lacks '%s'", bad[i].flag,
                     bad[i].value, sr_errmsg(), bad[i].expect);
    }
    const char *lonely[] = { "--lr" };
    assert_int_equal(load(1, lonely), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "--lr needs a value"));
    const char *stray[] = { "train.json" };
    assert_int_equal(load(1, stray), SR_ERR_USAGE);

    char hp[192];
    snprintf(hp, sizeof hp, "%s/input/config/hyperparameters.json", dir);
    write_file(hp, "{\"lr\": \"0.1\",");
    assert_int_equal(load(0, NULL), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "hyperparameters.json: line"));
    write_file(hp, "{\"learning_rate\": \"0.1\"}");
    assert_int_equal(load(0, NULL), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "learning_rate: unknown option"));
    write_file(hp, "{\"epochs\": \"ten\"}");
    assert_int_equal(load(0, NULL), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "hyperparameters.json: epochs"));
    unlink(hp);
    setenv("SPOTRUN_LR", "fast", 1);
    assert_int_equal(load(0, NULL), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "SPOTRUN_LR"));
    unsetenv("SPOTRUN_LR");
    const char *missing[] = { "--config", "/nonexistent/job.json" };
    assert_int_equal(load(2, missing), SR_ERR_USAGE);
    assert_non_null(strstr(sr_errmsg(), "cannot read"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config__defaults, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config__flag_spellings, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config__precedence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config__bad_values, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
