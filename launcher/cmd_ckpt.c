/*
 * cmd_ckpt.c: `spotrun ckpt`: list the checkpoints under a location, show
 * one's metadata and tensors, verify manifests and checksums.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../checkpoint/ckpt.h"
#include "../common/log.h"
#include "../common/util.h"
#include "commands.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage:\n"
        "  spotrun ckpt ls URI                 checkpoints under URI: step, "
        "time, size,\n"
        "                                      committed or not\n"
        "  spotrun ckpt show URI [--step N]    metadata and tensors (default: "
        "newest)\n"
        "  spotrun ckpt verify URI [--step N]  manifest, size and SHA-256 of "
        "every\n"
        "                                      committed checkpoint (or one)\n");
}

static void fmt_time(double t, char *out, size_t cap)
{
    time_t s = (time_t)t;
    struct tm tm;
    if (t <= 0 || !gmtime_r(&s, &tm))
        snprintf(out, cap, "-");
    else
        strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static sr_status ckpt_ls(struct storage *st, const char *root)
{
    struct ckpt_entry *v;
    size_t n;
    SR_TRY(ckpt_list(st, root, &v, &n));
    printf("%-12s %-21s %12s  %s\n", "step", "time", "bytes", "status");
    for (size_t i = 0; i < n; i++) {
        char when[32];
        fmt_time(v[i].mtime, when, sizeof when);
        printf("%-12lld %-21s %12llu  %s\n", (long long)v[i].step, when,
               (unsigned long long)v[i].bytes,
               v[i].committed ? "committed" : "not committed");
    }
    if (n == 0)
        printf("(no checkpoints under %s)\n", root);
    free(v);
    return SR_OK;
}

/* The step to act on: the one asked for, or the newest committed. */
static sr_status pick_step(struct storage *st, const char *root,
                           int64_t asked, int64_t *step)
{
    if (asked >= 0) {
        *step = asked;
        return SR_OK;
    }
    struct ckpt_entry *v;
    size_t n;
    SR_TRY(ckpt_list(st, root, &v, &n));
    *step = -1;
    for (size_t i = 0; i < n && *step < 0; i++)
        if (v[i].committed)
            *step = v[i].step;
    free(v);
    if (*step < 0)
        return SR_FAIL(SR_ERR_NOT_FOUND, "%s: no committed checkpoint", root);
    return SR_OK;
}

static sr_status ckpt_show(struct storage *st, const char *root,
                           int64_t asked)
{
    int64_t step;
    SR_TRY(pick_step(st, root, asked, &step));
    char what[STORAGE_URI_MAX];
    SR_TRY(ckpt_uri(what, sizeof what, root, step, NULL));
    struct sr_buf img = { 0 };
    struct ckpt_meta mt;
    sr_status s = ckpt_load(st, root, step, &img);
    if (s == SR_OK)
        s = ckpt_read_meta(&mt, img.data, img.len, what);
    if (s != SR_OK) {
        buf_free(&img);
        return s;
    }
    char when[32], dims[128];
    fmt_time(mt.created, when, sizeof when);
    size_t dl = 0;
    for (int l = 0; l <= mt.shape.nlayers && dl + 12 < sizeof dims; l++)
        dl += (size_t)snprintf(dims + dl, sizeof dims - dl, "%s%d",
                               l ? "-" : "", mt.shape.dims[l]);
    printf("checkpoint      %s\n", what);
    printf("format          spotrun-checkpoint v%d, %zu bytes, SHA-256 "
           "verified\n", CKPT_FORMAT_VERSION, img.len);
    printf("created         %s\n", when);
    printf("step            %lld\n", (long long)mt.step);
    if (mt.position == 0 && mt.epoch > 0)
        printf("cursor          end of epoch %lld\n", (long long)mt.epoch);
    else
        printf("cursor          epoch %lld, %lld records into it\n",
               (long long)mt.epoch + 1, (long long)mt.position);
    printf("world size      %lld\n", (long long)mt.world_size);
    printf("global batch    %lld\n", (long long)mt.global_batch);
    printf("seed            %llu\n", (unsigned long long)mt.seed);
    printf("model           mlp %s (%zu parameters)\n", dims,
           mt.shape.nparams);
    printf("optimizer       %s\n", mt.optim == OPTIM_SGD ? "sgd" : "adamw");
    printf("dataset         %llu records, shard list %s\n",
           (unsigned long long)mt.dataset_records, mt.dataset_id);
    printf("tensors:\n");
    static const char *const groups[2][3] = {
        [OPTIM_SGD] = { "params", "optimizer/momentum_buffer", NULL },
        [OPTIM_ADAMW] = { "params", "optimizer/exp_avg",
                          "optimizer/exp_avg_sq" },
    };
    for (int g = 0; g < 3 && groups[mt.optim][g]; g++)
        for (int t = 0; t < mlp_ntensors(&mt.shape); t++) {
            char name[32];
            int ndim;
            size_t d[2], off, cnt;
            mlp_tensor(&mt.shape, t, name, sizeof name, &ndim, d, &off,
                       &cnt);
            char shape[48];
            if (ndim == 2)
                snprintf(shape, sizeof shape, "[%zu, %zu]", d[0], d[1]);
            else
                snprintf(shape, sizeof shape, "[%zu]", d[0]);
            char full[96];
            snprintf(full, sizeof full, "%s/%s", groups[mt.optim][g], name);
            printf("  %-36s float32 %s\n", full, shape);
        }
    buf_free(&img);
    return SR_OK;
}

/* Verify one checkpoint completely: manifest, size, SHA-256, and that the
 * HDF5 image holds every tensor. */
static sr_status verify_one(struct storage *st, const char *root,
                            int64_t step)
{
    char what[STORAGE_URI_MAX];
    SR_TRY(ckpt_uri(what, sizeof what, root, step, NULL));
    struct sr_buf img = { 0 };
    struct ckpt_meta mt;
    float *p = NULL, *o = NULL;
    sr_status s = ckpt_load(st, root, step, &img);
    if (s == SR_OK)
        s = ckpt_read_meta(&mt, img.data, img.len, what);
    if (s == SR_OK) {
        size_t np = mt.shape.nparams;
        p = malloc(np * sizeof(float));
        o = malloc(np * (size_t)optim_state_per_param(mt.optim) *
                   sizeof(float));
        s = p && o ? ckpt_read_tensors(img.data, img.len, what, &mt, p, o)
                   : SR_FAIL(SR_ERR_NOMEM, "out of memory");
    }
    free(p);
    free(o);
    buf_free(&img);
    return s;
}

static sr_status ckpt_verify(struct storage *st, const char *root,
                             int64_t asked)
{
    struct ckpt_entry *v;
    size_t n;
    SR_TRY(ckpt_list(st, root, &v, &n));
    sr_status worst = SR_OK;
    size_t good = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (asked >= 0 && v[i].step != asked)
            continue;
        if (!v[i].committed) {
            printf("skip    step %lld: not committed (no manifest)\n",
                   (long long)v[i].step);
            continue;
        }
        sr_status s = verify_one(st, root, v[i].step);
        if (s == SR_OK) {
            printf("ok      step %lld\n", (long long)v[i].step);
            good++;
        } else {
            printf("FAILED  step %lld: %s\n", (long long)v[i].step,
                   sr_errmsg_user());
            if (worst == SR_OK)
                worst = s;
            bad++;
        }
    }
    free(v);
    fflush(stdout);
    if (bad)
        return SR_FAIL(worst, "%s: %zu checkpoint(s) failed verification",
                       root, bad);
    if (good == 0)
        return SR_FAIL(SR_ERR_NOT_FOUND, "%s: no committed checkpoint%s",
                       root, asked >= 0 ? " at that step" : "");
    printf("verified %zu checkpoint(s) under %s\n", good, root);
    return SR_OK;
}

int cmd_ckpt(int argc, char **argv)
{
    if (argc < 1 || arg_is_help(argv[0]) ||
        (argc >= 2 && arg_is_help(argv[1]))) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *sub = argv[0];
    sr_status s = SR_OK;
    int64_t step = -1;
    if (argc >= 2 && arg_is_option(argv[1]))
        s = SR_FAIL(SR_ERR_USAGE, "ckpt %s: '%s' is not a checkpoint URI; "
                    "the URI comes first (see `spotrun ckpt --help`)", sub,
                    argv[1]);
    else if (argc != 2 && !(argc == 4 && strcmp(argv[2], "--step") == 0))
        s = SR_FAIL(SR_ERR_USAGE, "ckpt %s needs URI [--step N] (see "
                    "`spotrun ckpt --help`)", sub);
    if (s == SR_OK && argc == 4 && (parse_i64(&step, argv[3]) || step < 0))
        s = SR_FAIL(SR_ERR_USAGE, "--step: '%s' is not a step number",
                    argv[3]);
    struct storage *st = NULL;
    if (s == SR_OK)
        s = storage_open(&st);
    if (s == SR_OK) {
        if (strcmp(sub, "ls") == 0 && step < 0)
            s = ckpt_ls(st, argv[1]);
        else if (strcmp(sub, "show") == 0)
            s = ckpt_show(st, argv[1], step);
        else if (strcmp(sub, "verify") == 0)
            s = ckpt_verify(st, argv[1], step);
        else
            s = SR_FAIL(SR_ERR_USAGE, "unknown ckpt command '%s' (see "
                        "`spotrun ckpt --help`)", sub);
    }
    if (st)
        storage_close(st);
    if (s != SR_OK)
        log_status(s);
    return sr_exit_code(s);
}
