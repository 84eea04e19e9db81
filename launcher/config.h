/*
 * config.h: the effective configuration of `spotrun train`. One table
 * lists every option (name, type, default, range, help). Values are layered,
 * in rising precedence:
 *
 *   defaults < hyperparameters.json < --config job.json < SPOTRUN_<KEY> < flags
 *
 * hyperparameters.json is read from $SPOTRUN_SAGEMAKER_ROOT (default /opt/ml)
 * /input/config/ when present; all its values are strings, and values that
 * the SageMaker Python SDK JSON-encoded ("\"adamw\"") are unwrapped. Flags
 * take `--key value` and `--key=value`. Every value is checked when it is
 * set, and the error names where it came from.
 */
#ifndef SPOTRUN_CONFIG_H
#define SPOTRUN_CONFIG_H

#include <stdio.h>

#include "../common/status.h"
#include "../trainer/train.h"

enum cfg_source { SRC_DEFAULT, SRC_HYPERPARAMS, SRC_JOBFILE, SRC_ENV,
                  SRC_FLAG };

struct config_state {
    struct train_config cfg;
    enum cfg_source src[64];
};

/* Build the configuration from all sources. argv holds the flags after
 * "train". Errors are SR_ERR_USAGE with one line naming the problem. */
sr_status config_load(struct config_state *cs, int argc, char **argv)
    SR_MUST_USE;
/* Individual layers, for tests and the launcher. */
void config_defaults(struct config_state *cs);
sr_status config_set(struct config_state *cs, const char *key,
                     const char *value, enum cfg_source src,
                     const char *origin) SR_MUST_USE;
sr_status config_apply_json_file(struct config_state *cs, const char *path,
                                 enum cfg_source src) SR_MUST_USE;
sr_status config_apply_env(struct config_state *cs) SR_MUST_USE;
sr_status config_apply_flags(struct config_state *cs, int argc, char **argv)
    SR_MUST_USE;
/* Checks across options, given the number of ranks. */
sr_status config_validate(const struct train_config *cfg, int world)
    SR_MUST_USE;
/* The effective configuration as a table: option, value, source. */
void config_print(const struct config_state *cs, FILE *f);
/* The effective configuration as one JSON object (for checkpoints and the
 * model file). Caller frees. */
char *config_to_json(const struct config_state *cs);
/* Help text for every option. */
void config_usage(FILE *f);

#endif
