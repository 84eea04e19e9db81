/*
 * cmd_data.c: `spotrun data`: import a known dataset, make a dataset from
 * IDX files, list a dataset's shards, verify every checksum of a dataset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../data/dataset.h"
#include "../data/import.h"
#include "../data/reader.h"
#include "../data/sampler.h"
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
        "  spotrun data stream URI [--epochs N] [--read-ahead BYTES]\n"
        "                     [--read-chunk BYTES] [--read-concurrency N]\n"
        "                     [--shuffle-block N] [--seed N] [--cache-dir DIR]\n"
        "      read every record in training order through the streaming\n"
        "      reader, checking checksums; report throughput\n"
        "  spotrun data ls URI       list the shards of a dataset\n"
        "  spotrun data verify URI   check every header, index and record\n"
        "                            checksum of a dataset\n"
        "BYTES takes suffixes: 64MiB, 8M, 1G (binary). Default shard size "
        "64MiB.\n");
}

struct data_args {
    const char *out, *source, *from, *x, *y, *cache_dir;
    uint64_t shard_bytes;
    int64_t classes;
    double scale;
    int64_t epochs, concurrency;
    uint64_t read_ahead, read_chunk, shuffle_block, seed;
};

static sr_status parse_args(struct data_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->shard_bytes = DATASET_DEFAULT_SHARD_BYTES;
    a->epochs = 1;
    a->concurrency = 8;
    a->read_ahead = READER_DEFAULT_WINDOW;
    a->read_chunk = READER_DEFAULT_CHUNK;
    a->seed = 42;
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
        } else if (strcmp(k, "--epochs") == 0) {
            if (parse_i64(&a->epochs, v) || a->epochs < 1)
                return SR_FAIL(SR_ERR_USAGE, "--epochs: '%s' is not >= 1", v);
        } else if (strcmp(k, "--read-concurrency") == 0) {
            if (parse_i64(&a->concurrency, v) || a->concurrency < 1 ||
                a->concurrency > 256)
                return SR_FAIL(SR_ERR_USAGE, "--read-concurrency: '%s' is "
                               "not 1..256", v);
        } else if (strcmp(k, "--read-ahead") == 0) {
            if (parse_size(&a->read_ahead, v) || a->read_ahead < (1u << 20))
                return SR_FAIL(SR_ERR_USAGE, "--read-ahead: '%s' is not a "
                               "size of at least 1MiB", v);
        } else if (strcmp(k, "--read-chunk") == 0) {
            if (parse_size(&a->read_chunk, v) || a->read_chunk < 4096)
                return SR_FAIL(SR_ERR_USAGE, "--read-chunk: '%s' is not a "
                               "size of at least 4KiB", v);
        } else if (strcmp(k, "--shuffle-block") == 0) {
            if (parse_u64(&a->shuffle_block, v) || a->shuffle_block > UINT32_MAX)
                return SR_FAIL(SR_ERR_USAGE, "--shuffle-block: '%s' is not a "
                               "record count", v);
        } else if (strcmp(k, "--seed") == 0) {
            if (parse_u64(&a->seed, v))
                return SR_FAIL(SR_ERR_USAGE, "--seed: '%s' is not a "
                               "number", v);
        } else if (strcmp(k, "--cache-dir") == 0) {
            a->cache_dir = v;
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

struct stream_seq {
    struct sampler s;
    uint64_t per_epoch;
    uint64_t epoch;
};

static uint64_t stream_at(void *arg, uint64_t i)
{
    struct stream_seq *q = arg;
    if (q->epoch == UINT64_MAX ||
        i - q->epoch * q->per_epoch >= q->per_epoch) {
        q->epoch = i / q->per_epoch;
        sampler_set_epoch(&q->s, q->epoch);
    }
    return sampler_at(&q->s, i - q->epoch * q->per_epoch);
}

/* Every record in training order (one rank's view of a 1-rank job),
 * through the reader as training reads it. */
static sr_status data_stream(struct storage *st, const char *uri, int argc,
                             char **argv)
{
    struct data_args a;
    SR_TRY(parse_args(&a, argc, argv));
    struct dataset ds;
    SR_TRY(dataset_open(&ds, st, uri));
    struct stream_seq q = { .per_epoch = ds.nrec, .epoch = UINT64_MAX };
    uint64_t *counts = malloc(ds.nshards * sizeof *counts);
    sr_status s = counts ? SR_OK : SR_FAIL(SR_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; s == SR_OK && i < ds.nshards; i++)
        counts[i] = ds.shards[i].nrec;
    uint64_t block = a.shuffle_block ? a.shuffle_block
                     : sampler_auto_block(ds.schema.record_bytes);
    if (s == SR_OK)
        s = sampler_init(&q.s, counts, ds.nshards, a.seed, block, 1);
    free(counts);
    struct reader_opts o;
    reader_default_opts(&o);
    o.window_bytes = a.read_ahead;
    o.chunk_bytes = a.read_chunk;
    o.fetchers = (int)a.concurrency;
    o.cache_dir = a.cache_dir;
    struct reader *r = NULL;
    uint64_t total = ds.nrec * (uint64_t)a.epochs;
    double t0 = now_s();
    if (s == SR_OK)
        s = reader_open(&r, st, &ds, &o, stream_at, &q, total);
    const uint8_t *recs[256];
    uint64_t ids[256];
    for (uint64_t i = 0; s == SR_OK && i < total;) {
        size_t n = total - i < 256 ? (size_t)(total - i) : 256;
        s = reader_next(r, n, recs, ids);
        i += n;
    }
    double dt = now_s() - t0;
    if (s == SR_OK) {
        struct reader_stats rs;
        reader_get_stats(r, &rs);
        uint64_t bytes = total * ds.schema.record_bytes;
        char b1[32], b2[32], b3[32];
        printf("streamed %llu records (%s of records, %s fetched in %llu "
               "requests, %llu from the cache) in %.2f s: %.1f MB/s of "
               "records, %.1f MB/s fetched; consumer waited %.2f s; "
               "read-ahead peak %s; %llu shard indexes read (%llu ahead "
               "of need)\n", (unsigned long long)total,
               fmt_bytes(b1, sizeof b1, bytes),
               fmt_bytes(b2, sizeof b2, rs.bytes_fetched),
               (unsigned long long)rs.requests,
               (unsigned long long)rs.cache_hits, dt, (double)bytes / dt / 1e6,
               (double)rs.bytes_fetched / dt / 1e6, rs.wait_s,
               fmt_bytes(b3, sizeof b3, rs.peak_bytes),
               (unsigned long long)rs.indexes,
               (unsigned long long)rs.indexes_ahead);
    }
    reader_close(r);
    sampler_free(&q.s);
    dataset_close(&ds);
    return s;
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
    if (argc < 1 || arg_is_help(argv[0]) ||
        (argc >= 2 && arg_is_help(argv[1]))) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *sub = argv[0];
    if (argc >= 2 && arg_is_option(argv[1]) &&
        (strcmp(sub, "ls") == 0 || strcmp(sub, "verify") == 0 ||
         strcmp(sub, "stream") == 0)) {
        sr_status s = SR_FAIL(SR_ERR_USAGE, "data %s: '%s' is not a dataset "
                              "URI; the URI comes first (see `spotrun data "
                              "--help`)", sub, argv[1]);
        log_status(s);
        return sr_exit_code(s);
    }
    struct storage *st;
    sr_status s = storage_open(&st);
    if (s != SR_OK) {
        log_status(s);
        return sr_exit_code(s);
    }
    if (strcmp(sub, "import") == 0)
        s = data_import(st, argc - 1, argv + 1);
    else if (strcmp(sub, "make") == 0)
        s = data_make(st, argc - 1, argv + 1);
    else if (strcmp(sub, "stream") == 0 && argc >= 2)
        s = data_stream(st, argv[1], argc - 2, argv + 2);
    else if ((strcmp(sub, "ls") == 0 || strcmp(sub, "verify") == 0 ||
              strcmp(sub, "stream") == 0) && argc != 2)
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
