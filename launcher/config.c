/*
 * config.c: the option table of `spotrun train` and the layering of its
 * sources. Every source is reduced to (key, string value) pairs and goes
 * through config_set(), so one parser checks every value the same way.
 */
#include "config.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"

enum opt_type { T_STR, T_URI, T_INT, T_U64, T_F64, T_LIST, T_CHOICE, T_BOOL,
                T_SIZE };

struct opt {
    const char *name;
    enum opt_type type;
    size_t off;
    size_t size;            /* for strings */
    const char *def;
    double min, max;        /* inclusive range for numbers */
    const char *choices;    /* "a|b|c" for T_CHOICE */
    const char *help;
};

#define F(field) offsetof(struct train_config, field), \
    sizeof(((struct train_config *)0)->field)
#define BIG 9.0e18

static const struct opt opts[] = {
    { "data", T_URI, F(data), "", 0, 0, NULL,
      "training dataset (s3://bucket/prefix, file:///path or a path)" },
    { "val-data", T_URI, F(val_data), "", 0, 0, NULL,
      "validation dataset; empty = no validation" },
    { "model", T_CHOICE, F(model), "mlp", 0, 0, "mlp", "model family" },
    { "hidden", T_LIST, F(hidden), "256,128", 1, 1 << 20, NULL,
      "hidden layer sizes, comma-separated" },
    { "epochs", T_INT, F(epochs), "10", 1, 1e9, NULL, "passes over the data" },
    { "batch-size", T_INT, F(batch_size), "256", 1, 1 << 24, NULL,
      "global batch (all ranks together); must divide by the rank count" },
    { "eval-batch-size", T_INT, F(eval_batch_size), "1000", 1, 1 << 24, NULL,
      "rows per forward pass during validation, per rank" },
    { "optimizer", T_CHOICE, F(optimizer), "adamw", 0, 0, "sgd|adamw",
      "sgd (with momentum) or adamw" },
    { "lr", T_F64, F(lr), "0.003", 1e-12, 1e6, NULL, "peak learning rate" },
    { "min-lr", T_F64, F(min_lr), "0", 0, 1e6, NULL,
      "learning rate at the end of the cosine decay" },
    { "warmup-steps", T_INT, F(warmup_steps), "100", 0, BIG, NULL,
      "linear warm-up steps before the cosine decay" },
    { "momentum", T_F64, F(momentum), "0.9", 0, 0.999999, NULL,
      "SGD momentum" },
    { "weight-decay", T_F64, F(weight_decay), "0.0001", 0, 1e3, NULL,
      "weight decay on weight matrices (decoupled for adamw)" },
    { "beta1", T_F64, F(beta1), "0.9", 0, 0.999999, NULL, "AdamW beta1" },
    { "beta2", T_F64, F(beta2), "0.999", 0, 0.999999999, NULL,
      "AdamW beta2" },
    { "eps", T_F64, F(eps), "1e-08", 1e-30, 1, NULL, "AdamW epsilon" },
    { "seed", T_U64, F(seed), "42", 0, 0, NULL,
      "seed for initialisation and data order" },
    { "shuffle-block", T_U64, F(shuffle_block), "0", 0, 4294967295.0,
      NULL, "records per shuffle block; 0 = as many as fill 64 MiB" },
    { "read-ahead", T_SIZE, F(read_ahead), "256MiB", 1048576, 1.1e12, NULL,
      "bytes of data held and fetched ahead of training" },
    { "read-chunk", T_SIZE, F(read_chunk), "8MiB", 4096, 1.1e9, NULL,
      "bytes per ranged read (neighbouring records coalesced)" },
    { "read-concurrency", T_INT, F(read_concurrency), "8", 1, 256, NULL,
      "ranged reads in flight" },
    { "cache-dir", T_STR, F(cache_dir), "", 0, 0, NULL,
      "local directory caching fetched data across epochs; empty = none" },
    { "cache-limit", T_SIZE, F(cache_limit), "10GiB", 0, 1.8e19, NULL,
      "bytes the cache directory may hold" },
    { "record-log", T_STR, F(record_log), "", 0, 0, NULL,
      "append each step's record ids to PATH.rank<N> (a local path)" },
    { "collective-timeout", T_F64, F(collective_timeout_s), "60", 1, 1e6,
      NULL, "seconds a rank waits in a collective for a dead or hung peer "
      "before it exits" },
    { "on-rebalance", T_CHOICE, F(on_rebalance), "checkpoint", 0, 0,
      "checkpoint|stop|ignore", "what an EC2 rebalance recommendation does: "
      "checkpoint now and go on, stop as for an interruption, or nothing" },
    { "spot-poll-seconds", T_F64, F(spot_poll_s), "5", 0.1, 3600, NULL,
      "how often the EC2 metadata service is asked for notices" },
    { "device", T_CHOICE, F(device), "auto", 0, 0, "auto|cpu|cuda",
      "where the math runs: auto = a GPU when the CUDA plugin loads and "
      "finds one, else the CPU" },
    { "precision", T_CHOICE, F(precision), "fp32", 0, 0, "fp32|tf32|bf16",
      "GPU matrix products: fp32, tf32 tensor cores, or bf16 with fp32 "
      "master weights (the CPU always computes in fp32)" },
    { "comm", T_CHOICE, F(comm), "auto", 0, 0, "auto|nccl|mpi",
      "GPU gradient all-reduce: nccl (a GPU per rank), mpi through host "
      "memory (ranks may share a GPU), auto = nccl when it can" },
    { "bucket-mb", T_F64, F(bucket_mb), "25", 0.001, 65536, NULL,
      "MiB of gradients per all-reduce bucket on the GPU (sent as soon as "
      "their layers' backward is done)" },
    { "threads", T_INT, F(threads), "0", 0, 4096, NULL,
      "math threads per rank; 0 = cores / ranks on the host" },
    { "model-dir", T_URI, F(model_dir), "", 0, 0, NULL,
      "where the final model.h5 goes; empty = not saved" },
    { "metrics-file", T_URI, F(metrics_file), "", 0, 0, NULL,
      "append one JSON object per epoch here" },
    { "step-metrics-file", T_URI, F(step_metrics_file), "", 0, 0, NULL,
      "write one JSON object per step here (loss, lr)" },
    { "check-sync-every", T_INT, F(check_sync_every), "0", 0, BIG, NULL,
      "compare a parameter checksum across ranks every N steps (0 = at "
      "the end only)" },
    { "progress", T_CHOICE, F(progress), "auto", 0, 0, "auto|bar|lines|off",
      "progress within an epoch: a bar on a terminal, lines otherwise" },
    { "progress-every-seconds", T_F64, F(progress_every_s), "10", 0.1, 1e6,
      NULL, "interval of progress lines" },
    { "log-level", T_CHOICE, F(log_level), "info", 0, 0,
      "error|warn|info|debug", "log verbosity" },
    { "max-steps", T_INT, F(max_steps), "0", 0, BIG, NULL,
      "stop after this many steps in total (0 = run every epoch)" },
    { "checkpoint", T_URI, F(checkpoint), "", 0, 0, NULL,
      "where checkpoints go (one prefix per step); empty = none" },
    { "checkpoint-every-steps", T_INT, F(checkpoint_every_steps), "0", 0,
      BIG, NULL, "checkpoint every N steps (0 = off)" },
    { "checkpoint-every-seconds", T_F64, F(checkpoint_every_s), "0", 0, 1e9,
      NULL, "checkpoint when this many seconds passed since the last (0 = "
      "off)" },
    { "checkpoint-every-epoch", T_BOOL, F(checkpoint_every_epoch), "true", 0,
      0, NULL, "checkpoint at the end of every epoch" },
    { "keep-checkpoints", T_INT, F(keep_checkpoints), "3", 0, 1e9, NULL,
      "committed checkpoints kept (0 = all)" },
    { "no-resume", T_BOOL, F(no_resume), "false", 0, 0, NULL,
      "start fresh even if the checkpoint location holds checkpoints" },
};
#define NOPTS ((int)(sizeof opts / sizeof opts[0]))

_Static_assert(sizeof opts / sizeof opts[0] <=
               sizeof(((struct config_state *)0)->src) /
               sizeof(enum cfg_source), "grow config_state.src");

static const char *const source_names[] = { "default", "hyperparameters",
                                            "job file", "environment",
                                            "flag" };

/* "batch_size" and "batch-size" name the same option */
static const struct opt *find_opt(const char *key)
{
    char norm[64];
    size_t n = strlen(key);
    if (n >= sizeof norm)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        norm[i] = key[i] == '_' ? '-' : (char)tolower((unsigned char)key[i]);
    for (int i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].name, norm) == 0)
            return &opts[i];
    return NULL;
}

static int choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return 1;
        p += len + (bar ? 1 : 0);
    }
    return 0;
}

static sr_status set_list(int *dst, int *count, const char *v,
                          const struct opt *o, const char *origin)
{
    int n = 0;
    const char *p = v;
    if (!*v)
        return SR_FAIL(SR_ERR_USAGE, "%s needs at least one size (e.g. "
                       "256,128)", origin);
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        if (len >= sizeof item)
            return SR_FAIL(SR_ERR_USAGE, "%s: overlong item in '%s'", origin, v);
        memcpy(item, p, len);
        item[len] = '\0';
        char *b = item;
        while (isspace((unsigned char)*b))
            b++;
        while (len > 0 && isspace((unsigned char)item[len - 1]))
            item[--len] = '\0';
        int64_t x;
        if (!*b)
            return SR_FAIL(SR_ERR_USAGE, "%s: empty item in '%s' (give sizes "
                           "like 256,128)", origin, v);
        if (parse_i64(&x, b) || x < o->min || x > o->max)
            return SR_FAIL(SR_ERR_USAGE, "%s: '%s' is not a size in [%.0f, "
                           "%.0f]", origin, b, o->min, o->max);
        if (n == MLP_MAX_LAYERS - 1)
            return SR_FAIL(SR_ERR_USAGE, "%s: at most %d layers", origin,
                           MLP_MAX_LAYERS - 1);
        dst[n++] = (int)x;
        if (!comma)
            break;
        p = comma + 1;
    }
    *count = n;
    return SR_OK;
}

/* 1, 0, or -1 when v is not a boolean */
static int parse_bool(const char *v)
{
    static const char *const yes[] = { "true", "1", "yes", "on" };
    static const char *const no[] = { "false", "0", "no", "off" };
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return 1;
        if (strcasecmp(v, no[i]) == 0)
            return 0;
    }
    return -1;
}

static sr_status set_value(struct train_config *cfg, const struct opt *o,
                           const char *v, const char *origin)
{
    char *field = (char *)cfg + o->off;
    switch (o->type) {
    case T_STR:
    case T_URI:
        if (str_copy(field, o->size, v))
            return SR_FAIL(SR_ERR_USAGE, "%s is too long (max %zu "
                           "characters)", origin, o->size - 1);
        return SR_OK;
    case T_CHOICE:
        if (!choice_ok(o->choices, v))
            return SR_FAIL(SR_ERR_USAGE, "%s must be one of %s (got '%s')",
                           origin, o->choices, v);
        return str_copy(field, o->size, v) ? SR_FAIL(SR_ERR_INTERNAL,
                                                     "choice too long")
                                           : SR_OK;
    case T_INT: {
        int64_t x;
        if (parse_i64(&x, v))
            return SR_FAIL(SR_ERR_USAGE, "%s: '%s' is not an integer",
                           origin, v);
        if ((double)x < o->min || (double)x > o->max)
            return SR_FAIL(SR_ERR_USAGE, "%s must be in [%.0f, %.0f] (got "
                           "%lld)", origin, o->min, o->max, (long long)x);
        memcpy(field, &x, sizeof x);
        return SR_OK;
    }
    case T_U64: {
        uint64_t x;
        if (parse_u64(&x, v))
            return SR_FAIL(SR_ERR_USAGE, "%s: '%s' is not a non-negative "
                           "integer", origin, v);
        if (o->max > 0 && ((double)x < o->min || (double)x > o->max))
            return SR_FAIL(SR_ERR_USAGE, "%s must be in [%.0f, %.0f] (got "
                           "%llu)", origin, o->min, o->max,
                           (unsigned long long)x);
        memcpy(field, &x, sizeof x);
        return SR_OK;
    }
    case T_F64: {
        double x;
        if (parse_f64(&x, v))
            return SR_FAIL(SR_ERR_USAGE, "%s: '%s' is not a number", origin,
                           v);
        if (x < o->min || x > o->max)
            return SR_FAIL(SR_ERR_USAGE, "%s must be in [%g, %g] (got %g)",
                           origin, o->min, o->max, x);
        memcpy(field, &x, sizeof x);
        return SR_OK;
    }
    case T_LIST:
        return set_list(cfg->hidden, &cfg->nhidden, v, o, origin);
    case T_SIZE: {
        uint64_t x;
        if (parse_size(&x, v))
            return SR_FAIL(SR_ERR_USAGE, "%s: '%s' is not a size (e.g. "
                           "256MiB, 8M, 1G, 4096)", origin, v);
        if ((double)x < o->min || (double)x > o->max)
            return SR_FAIL(SR_ERR_USAGE, "%s must be in [%.0f, %.0f] bytes "
                           "(got %llu)", origin, o->min, o->max,
                           (unsigned long long)x);
        memcpy(field, &x, sizeof x);
        return SR_OK;
    }
    case T_BOOL: {
        int b = parse_bool(v);
        if (b < 0)
            return SR_FAIL(SR_ERR_USAGE, "%s: '%s' is not true or false",
                           origin, v);
        memcpy(field, &b, sizeof b);
        return SR_OK;
    }
    }
    return SR_FAIL(SR_ERR_INTERNAL, "unknown option type");
}

void config_defaults(struct config_state *cs)
{
    memset(cs, 0, sizeof *cs);
    for (int i = 0; i < NOPTS; i++) {
        sr_status s = set_value(&cs->cfg, &opts[i], opts[i].def,
                                opts[i].name);
        if (s != SR_OK)     /* a broken default is a bug in the table */
            log_error("bad default for %s: %s", opts[i].name, sr_errmsg());
        cs->src[i] = SRC_DEFAULT;
    }
}

sr_status config_set(struct config_state *cs, const char *key,
                     const char *value, enum cfg_source src,
                     const char *origin)
{
    const struct opt *o = find_opt(key);
    if (!o)
        return SR_FAIL(SR_ERR_USAGE, "%s: unknown option (see `spotrun "
                       "train --help`)", origin);
    SR_TRY(set_value(&cs->cfg, o, value, origin));
    cs->src[o - opts] = src;
    return SR_OK;
}

/* A JSON value as the string a flag would carry. Strings that themselves
 * hold JSON-encoded strings or lists (as the SageMaker SDK writes them) are
 * unwrapped. */
static sr_status json_to_value(json_t *v, char *out, size_t cap,
                               const char *origin)
{
    int n = -1;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (s[0] == '"' || s[0] == '[') {
            json_t *inner = json_loads(s, JSON_DECODE_ANY, NULL);
            if (inner && (json_is_string(inner) || json_is_array(inner))) {
                sr_status st = json_to_value(inner, out, cap, origin);
                json_decref(inner);
                return st;
            }
            json_decref(inner);
        }
        n = snprintf(out, cap, "%s", s);
    } else if (json_is_integer(v)) {
        n = snprintf(out, cap, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        n = snprintf(out, cap, "%.17g", json_real_value(v));
    } else if (json_is_boolean(v)) {
        n = snprintf(out, cap, "%s", json_is_true(v) ? "true" : "false");
    } else if (json_is_array(v)) {
        size_t i, len = 0;
        json_t *e;
        out[0] = '\0';
        json_array_foreach(v, i, e) {
            char item[64];
            if (!json_is_integer(e))
                return SR_FAIL(SR_ERR_USAGE, "%s: lists may hold only "
                               "integers", origin);
            int k = snprintf(item, sizeof item, "%s%lld", i ? "," : "",
                             (long long)json_integer_value(e));
            if (len + (size_t)k >= cap)
                return SR_FAIL(SR_ERR_USAGE, "%s: list too long", origin);
            memcpy(out + len, item, (size_t)k + 1);
            len += (size_t)k;
        }
        n = (int)len;
    } else {
        return SR_FAIL(SR_ERR_USAGE, "%s: unsupported value type", origin);
    }
    if (n < 0 || (size_t)n >= cap)
        return SR_FAIL(SR_ERR_USAGE, "%s: value too long", origin);
    return SR_OK;
}

sr_status config_apply_json_file(struct config_state *cs, const char *path,
                                 enum cfg_source src)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        if (access(path, R_OK) != 0)
            return SR_FAIL(SR_ERR_USAGE, "%s: cannot read the file", path);
        return SR_FAIL(SR_ERR_USAGE, "%s: line %d: malformed JSON: %s", path,
                       jerr.line, jerr.text);
    }
    sr_status s = SR_OK;
    if (!json_is_object(root)) {
        s = SR_FAIL(SR_ERR_USAGE, "%s: must hold one JSON object of "
                    "option: value pairs", path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        /* SageMaker adds its own keys (sagemaker_*, _tuning_objective_*) */
        if (src == SRC_HYPERPARAMS && (key[0] == '_' ||
                                       strncmp(key, "sagemaker_", 10) == 0))
            continue;
        /* read by `spotrun launch`, not by the ranks */
        if (src == SRC_HYPERPARAMS && strcmp(key, "processes-per-host") == 0)
            continue;
        char value[STORAGE_URI_MAX];
        char origin[STORAGE_URI_MAX + 64];
        snprintf(origin, sizeof origin, "%s: %s", path, key);
        s = json_to_value(v, value, sizeof value, origin);
        if (s == SR_OK)
            s = config_set(cs, key, value, src, origin);
        if (s != SR_OK)
            break;
    }
out:
    json_decref(root);
    return s;
}

sr_status config_apply_env(struct config_state *cs)
{
    for (int i = 0; i < NOPTS; i++) {
        char var[80] = "SPOTRUN_";
        size_t n = 8;
        for (const char *p = opts[i].name; *p && n + 1 < sizeof var; p++)
            var[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        var[n] = '\0';
        const char *v = getenv(var);
        if (!v)
            continue;
        SR_TRY(set_value(&cs->cfg, &opts[i], v, var));
        cs->src[i] = SRC_ENV;
    }
    return SR_OK;
}

sr_status config_apply_flags(struct config_state *cs, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !a[2])
            return SR_FAIL(SR_ERR_USAGE, "unexpected argument '%s' (options "
                           "look like --name value)", a);
        char key[64];
        const char *value;
        const char *eq = strchr(a + 2, '=');
        size_t klen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (klen >= sizeof key)
            return SR_FAIL(SR_ERR_USAGE, "unknown option '%s'", a);
        memcpy(key, a + 2, klen);
        key[klen] = '\0';
        if (strcmp(key, "config") == 0) {   /* handled by config_load */
            if (!eq)
                i++;
            continue;
        }
        const struct opt *o = find_opt(key);
        if (!o)
            return SR_FAIL(SR_ERR_USAGE, "unknown option --%s (see `spotrun "
                           "train --help`)", key);
        if (eq) {
            value = eq + 1;
        } else if (o->type == T_BOOL) {
            /* --flag alone is true; --flag false (SageMaker style) too */
            value = "true";
            if (i + 1 < argc && parse_bool(argv[i + 1]) >= 0)
                value = argv[++i];
        } else {
            if (i + 1 >= argc)
                return SR_FAIL(SR_ERR_USAGE, "--%s needs a value", key);
            value = argv[++i];
        }
        char origin[80];
        snprintf(origin, sizeof origin, "--%s", key);
        SR_TRY(config_set(cs, key, value, SRC_FLAG, origin));
    }
    return SR_OK;
}

static const char *find_config_flag(int argc, char **argv, sr_status *s)
{
    const char *path = NULL;
    *s = SR_OK;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                *s = SR_FAIL(SR_ERR_USAGE, "--config needs a file");
                return NULL;
            }
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        }
    }
    return path;
}

sr_status config_load(struct config_state *cs, int argc, char **argv)
{
    config_defaults(cs);
    const char *root = getenv("SPOTRUN_SAGEMAKER_ROOT");
    char hp[STORAGE_URI_MAX];
    snprintf(hp, sizeof hp, "%s/input/config/hyperparameters.json",
             root && *root ? root : "/opt/ml");
    if (access(hp, F_OK) == 0)
        SR_TRY(config_apply_json_file(cs, hp, SRC_HYPERPARAMS));
    sr_status s;
    const char *job = find_config_flag(argc, argv, &s);
    SR_TRY(s);
    if (!job)
        job = getenv("SPOTRUN_CONFIG");
    if (job && *job)
        SR_TRY(config_apply_json_file(cs, job, SRC_JOBFILE));
    SR_TRY(config_apply_env(cs));
    SR_TRY(config_apply_flags(cs, argc, argv));
    return SR_OK;
}

sr_status config_validate(const struct train_config *c, int world)
{
    if (!c->data[0])
        return SR_FAIL(SR_ERR_USAGE, "--data is required (a dataset made by "
                       "`spotrun data import` or `spotrun data make`)");
    if (c->batch_size % world != 0)
        return SR_FAIL(SR_ERR_USAGE, "--batch-size %lld does not divide by "
                       "the %d ranks (each rank takes an equal slice)",
                       (long long)c->batch_size, world);
    if (c->nhidden < 1)
        return SR_FAIL(SR_ERR_USAGE, "--hidden needs at least one layer "
                       "size");
    if (c->min_lr > c->lr)
        return SR_FAIL(SR_ERR_USAGE, "--min-lr %g is above --lr %g",
                       c->min_lr, c->lr);
    return SR_OK;
}

static void format_value(const struct train_config *cfg, const struct opt *o,
                         char *out, size_t cap)
{
    const char *field = (const char *)cfg + o->off;
    int64_t i;
    int i32;
    uint64_t u;
    double d;
    switch (o->type) {
    case T_STR:
    case T_URI:
    case T_CHOICE:
        snprintf(out, cap, "%s", field);
        break;
    case T_INT:
        memcpy(&i, field, sizeof i);
        snprintf(out, cap, "%lld", (long long)i);
        break;
    case T_U64:
    case T_SIZE:
        memcpy(&u, field, sizeof u);
        snprintf(out, cap, "%llu", (unsigned long long)u);
        break;
    case T_F64:
        memcpy(&d, field, sizeof d);
        snprintf(out, cap, "%g", d);
        break;
    case T_BOOL:
        memcpy(&i32, field, sizeof i32);
        snprintf(out, cap, "%s", i32 ? "true" : "false");
        break;
    case T_LIST: {
        size_t len = 0;
        out[0] = '\0';
        for (int k = 0; k < cfg->nhidden && len + 16 < cap; k++)
            len += (size_t)snprintf(out + len, cap - len, "%s%d",
                                    k ? "," : "", cfg->hidden[k]);
        break;
    }
    }
}

void config_print(const struct config_state *cs, FILE *f)
{
    fprintf(f, "%-24s %-40s %s\n", "option", "value", "source");
    for (int i = 0; i < NOPTS; i++) {
        char v[STORAGE_URI_MAX];
        format_value(&cs->cfg, &opts[i], v, sizeof v);
        fprintf(f, "%-24s %-40s %s\n", opts[i].name, v[0] ? v : "-",
                source_names[cs->src[i]]);
    }
    fflush(f);
}

char *config_to_json(const struct config_state *cs)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    for (int i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        const char *field = (const char *)&cs->cfg + o->off;
        json_t *v = NULL;
        int64_t x;
        uint64_t u;
        double d;
        switch (o->type) {
        case T_STR:
        case T_URI:
        case T_CHOICE:
            v = json_string(field);
            break;
        case T_INT:
            memcpy(&x, field, sizeof x);
            v = json_integer(x);
            break;
        case T_U64:
        case T_SIZE:
            memcpy(&u, field, sizeof u);
            v = json_integer((json_int_t)u);
            break;
        case T_F64:
            memcpy(&d, field, sizeof d);
            v = json_real(d);
            break;
        case T_LIST:
            v = json_array();
            for (int k = 0; k < cs->cfg.nhidden; k++)
                json_array_append_new(v, json_integer(cs->cfg.hidden[k]));
            break;
        case T_BOOL: {
            int b;
            memcpy(&b, field, sizeof b);
            v = json_boolean(b);
            break;
        }
        }
        json_object_set_new(root, o->name, v);
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

void config_usage(FILE *f)
{
    fprintf(f, "usage: spotrun train --data URI [options]\n\n"
               "Options (also from hyperparameters.json, --config FILE and "
               "SPOTRUN_<OPTION>):\n");
    for (int i = 0; i < NOPTS; i++) {
        char arg[40];
        snprintf(arg, sizeof arg, "--%s %s", opts[i].name,
                 opts[i].type == T_F64 ? "F" : opts[i].type == T_LIST ? "N,N"
                 : opts[i].type == T_CHOICE ? opts[i].choices
                 : opts[i].type == T_URI ? "URI"
                 : opts[i].type == T_BOOL ? "[true|false]"
                 : opts[i].type == T_SIZE ? "BYTES"
                 : opts[i].type == T_STR ? "PATH" : "N");
        fprintf(f, "  %-34s %s", arg, opts[i].help);
        if (opts[i].def[0])
            fprintf(f, " [%s]", opts[i].def);
        fprintf(f, "\n");
    }
    fprintf(f, "  %-34s %s\n", "--config FILE", "JSON object of option: value"
            " pairs");
}
