/*
 * cmd_data.c: `spotrun data`: import a known dataset, make a dataset from
 * IDX files, list a dataset's shards, verify every checksum of a dataset.
 */
#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../data/dataset.h"
#include "../data/import.h"
#include "commands.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage:\n"
        "  spotrun data import fashion-mnist --out URI [--source DIR]\n"
        "                      [--shard-size BYTES]\n"
        "      Fashion-MNIST (Debian package dataset-fashion-mnist) into\n"
        "      URI/train and URI/test\n"
        "  spotrun data make --from idx --x FILE --y FILE --out URI\n"
        "                    [--classes N] [--scale F] [--shard-size BYTES]\n"
        "      a dataset from an IDX inputs file and an IDX labels file\n"
        "  spotrun data ls URI       list the shards of a dataset\n"
        "  spotrun data verify URI   check every header, index and record\n"
        "                            checksum of a dataset\n"
        "BYTES takes suffixes: 64MiB, 8M, 1G (binary). Default shard size "
        "64MiB.\n");
}

struct data_args {
    const char *out, *source, *from, *x, *y;
    uint64_t shard_bytes;
    int64_t classes;
    double scale;
};

static sr_status parse_args(struct data_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->shard_bytes = DATASET_DEFAULT_SHARD_BYTES;
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc)
            return SR_FAIL(SR_ERR_USAGE, "%s needs a value", k);
        const char *v = argv[++i];
        if (strcmp(k, "--out") == 0)
            a->out = v;
        else if (strcmp(k, "--source") == 0)
            a->source = v;
        else if (strcmp(k, "--from") == 0)
            a->from = v;
        else if (strcmp(k, "--x") == 0)
            a->x = v;
        else if (strcmp(k, "--y") == 0)
            a->y = v;
        else if (strcmp(k, "--shard-size") == 0) {
            if (parse_size(&a->shard_bytes, v) || a->shard_bytes < 65536)
                return SR_FAIL(SR_ERR_USAGE, "--shard-size: '%s' is not a "
                               "size of at least 64KiB", v);
        } else if (strcmp(k, "--classes") == 0) {
            if (parse_i64(&a->classes, v) || a->classes < 2 ||
                a->classes > 1000000)
                return SR_FAIL(SR_ERR_USAGE, "--classes: '%s' is not a "
                               "count >= 2", v);
        } else if (strcmp(k, "--scale") == 0) {
            if (parse_f64(&a->scale, v) || a->scale <= 0)
                return SR_FAIL(SR_ERR_USAGE, "--scale: '%s' is not a "
                               "positive number", v);
        } else {
            return SR_FAIL(SR_ERR_USAGE, "unknown option %s (see `spotrun "
                           "data --help`)", k);
        }
    }
    return SR_OK;
}

static sr_status data_import(struct storage *st, int argc, char **argv)
{
    if (argc < 1)
        return SR_FAIL(SR_ERR_USAGE, "data import needs a dataset name "
                       "(fashion-mnist)");
    if (strcmp(argv[0], "fashion-mnist") != 0)
        return SR_FAIL(SR_ERR_USAGE, "unknown dataset '%s' (known: "
                       "fashion-mnist; use `spotrun data make` for your own "
                       "files)", argv[0]);
    struct data_args a;
    SR_TRY(parse_args(&a, argc - 1, argv + 1));
    if (!a.out)
        return SR_FAIL(SR_ERR_USAGE, "data import needs --out URI");
    return import_fashion_mnist(st, a.out, a.source, a.shard_bytes);
}

static sr_status data_make(struct storage *st, int argc, char **argv)
{
    struct data_args a;
    SR_TRY(parse_args(&a, argc, argv));
    if (!a.from || strcmp(a.from, "idx") != 0)
        return SR_FAIL(SR_ERR_USAGE, "data make needs --from idx");
    if (!a.out || !a.x || !a.y)
        return SR_FAIL(SR_ERR_USAGE, "data make --from idx needs --x FILE, "
                       "--y FILE and --out URI");
    uint64_t n;
    return import_idx(st, a.out, a.x, a.y, (int)a.classes, a.scale,
                      a.shard_bytes, &n);
}

static sr_status data_ls(struct storage *st, const char *uri)
{
    struct dataset ds;
    SR_TRY(dataset_open(&ds, st, uri));
    printf("%-28s %12s %14s\n", "shard", "records", "bytes");
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < ds.nshards; i++) {
        printf("%-28s %12llu %14llu\n", ds.shards[i].name,
               (unsigned long long)ds.shards[i].nrec,
               (unsigned long long)ds.shards[i].bytes);
        bytes += ds.shards[i].bytes;
    }
    printf("%-28s %12llu %14llu\n", "total", (unsigned long long)ds.nrec,
           (unsigned long long)bytes);
    printf("record: %zu bytes;", ds.schema.record_bytes);
    for (int f = 0; f < ds.schema.nfields; f++) {
        const struct shard_field *fd = &ds.schema.f[f];
        printf(" %s %s[", fd->name, dtype_name(fd->dtype));
        for (int d = 0; d < fd->ndim; d++)
            printf("%s%u", d ? "," : "", fd->shape[d]);
        printf("]");
        if (fd->num_classes)
            printf(" (%d classes)", fd->num_classes);
    }
    printf("\n");
    dataset_close(&ds);
    return SR_OK;
}

static sr_status data_verify(struct storage *st, const char *uri)
{
    struct dataset ds;
    SR_TRY(dataset_open(&ds, st, uri));
    sr_status s = SR_OK;
    uint32_t bad = 0;
    for (uint32_t i = 0; i < ds.nshards; i++) {
        sr_status v = dataset_verify_shard(&ds, st, i);
        if (v == SR_OK) {
            printf("ok      %s (%llu records)\n", ds.shards[i].name,
                   (unsigned long long)ds.shards[i].nrec);
        } else {
            printf("FAILED  %s: %s\n", ds.shards[i].name, sr_errmsg_user());
            if (s == SR_OK)
                s = v;
            bad++;
        }
    }
    fflush(stdout);
    if (bad)
        s = SR_FAIL(s, "%s: %u of %u shard(s) failed verification", uri, bad,
                    ds.nshards);
    else
        printf("verified %s: %u shard(s), %llu records\n", uri, ds.nshards,
               (unsigned long long)ds.nrec);
    dataset_close(&ds);
    return s;
}

int cmd_data(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 ||
        strcmp(argv[0], "-h") == 0) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    struct storage *st;
    sr_status s = storage_open(&st);
    if (s != SR_OK) {
        log_status(s);
        return sr_exit_code(s);
    }
    const char *sub = argv[0];
    if (strcmp(sub, "import") == 0)
        s = data_import(st, argc - 1, argv + 1);
    else if (strcmp(sub, "make") == 0)
        s = data_make(st, argc - 1, argv + 1);
    else if ((strcmp(sub, "ls") == 0 || strcmp(sub, "verify") == 0) &&
             argc != 2)
        s = SR_FAIL(SR_ERR_USAGE, "data %s needs exactly one URI", sub);
    else if (strcmp(sub, "ls") == 0)
        s = data_ls(st, argv[1]);
    else if (strcmp(sub, "verify") == 0)
        s = data_verify(st, argv[1]);
    else
        s = SR_FAIL(SR_ERR_USAGE, "unknown data command '%s' (see `spotrun "
                    "data --help`)", sub);
    storage_close(st);
    if (s != SR_OK)
        log_status(s);
    return sr_exit_code(s);
}
