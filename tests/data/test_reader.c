/*
 * test_reader.c: the streaming reader over file:// shards. Records come
 * out in the consumer's order with the right bytes; a window far smaller
 * than the dataset holds (resident bytes stay within it); rank slices
 * together cover the global sequence; a flipped byte or a shard that
 * disappears fails with the object and offset named; a cache directory
 * serves a second pass without touching storage; a shard whose index
 * lies further in than the reader's first read of it is read whole;
 * shard indexes are read before the plan needs them, and one that fails
 * to load then stops the run only where the plan reaches its shard; the
 * read-ahead threads run at a lower priority than the consumer's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "data/reader.h"
#include "data/sampler.h"

#define NREC 20000
#define RB 517          /* odd record size: chunk edges fall mid-record */

static char dir[64];
static char uri[128];
static struct storage *st;
static struct dataset ds;
static uint8_t *truth;      /* all records, in id order */

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/spotrun-test-reader-XXXXXX");
    if (!mkdtemp(dir) || storage_open(&st) != SR_OK)
        return -1;
    snprintf(uri, sizeof uri, "%s/ds", dir);
    struct shard_schema s = { 0 };
    uint32_t shape[1] = { RB - 1 };
    if (schema_add(&s, "x", DT_UINT8, 1, shape) != SR_OK ||
        schema_add(&s, "y", DT_UINT8, 0, NULL) != SR_OK)
        return -1;
    s.f[1].num_classes = 7;
    truth = malloc((size_t)NREC * RB);
    for (size_t i = 0; i < (size_t)NREC * RB; i++)
        truth[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (size_t i = 0; i < NREC; i++)
        truth[i * RB + RB - 1] = (uint8_t)(i % 7);
    struct dataset_writer *w;
    if (dataset_writer_open(&w, st, uri, &s, 1u << 20) != SR_OK ||
        dataset_writer_add(w, truth, NREC) != SR_OK ||
        dataset_writer_finish(w, NULL, NULL) != SR_OK)
        return -1;
    return dataset_open(&ds, st, uri) == SR_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    dataset_close(&ds);
    storage_close(st);
    free(truth);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

struct slice_seq {
    struct sampler *s;
    uint64_t batch, local;
    int rank, world;
};

/* rank's requests: its slice of every global batch of the epoch */
static uint64_t slice_at(void *arg, uint64_t i)
{
    struct slice_seq *q = arg;
    uint64_t step = i / q->local, k = i % q->local;
    return sampler_at(q->s, sampler_slice_start(step, q->batch, q->rank,
                                                q->world) + k);
}

static void small_opts(struct reader_opts *o)
{
    reader_default_opts(o);
    o->window_bytes = 1u << 20;     /* a tenth of the dataset */
    o->chunk_bytes = 64u << 10;
    o->fetchers = 3;
}

/* Read `count` requests in batches of n; check bytes and order. */
static void drain(struct reader *r, struct slice_seq *q, uint64_t count,
                  size_t n, uint64_t *seen)
{
    const uint8_t *recs[256];
    uint64_t ids[256];
    for (uint64_t i = 0; i < count; i += n) {
        assert_int_equal(reader_next(r, n, recs, ids), SR_OK);
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(ids[k], slice_at(q, i + k));
            assert_memory_equal(recs[k], truth + ids[k] * RB, RB);
            if (seen)
                seen[ids[k]]++;
        }
    }
}

static void test_reader__order_bytes_and_window(void **state)
{
    (void)state;
    assert_true(ds.nshards >= 8);
    struct sampler s;
    uint64_t *counts = malloc(ds.nshards * sizeof *counts);
    for (uint32_t i = 0; i < ds.nshards; i++)
        counts[i] = ds.shards[i].nrec;
    /* a block of 1000 records (~0.5 MiB) fits the 1 MiB window */
    assert_int_equal(sampler_init(&s, counts, ds.nshards, 9, 1000, 1), SR_OK);
    struct sampler ref;
    assert_int_equal(sampler_init(&ref, counts, ds.nshards, 9, 1000, 1),
                     SR_OK);
    sampler_set_epoch(&s, 2);
    sampler_set_epoch(&ref, 2);
    struct slice_seq q = { &s, 100, 100, 0, 1 };
    struct slice_seq qref = { &ref, 100, 100, 0, 1 };
    struct reader_opts o;
    small_opts(&o);
    struct reader *r;
    uint64_t count = NREC / 100 * 100;
    assert_int_equal(reader_open(&r, st, &ds, &o, slice_at, &q, count),
                     SR_OK);
    uint64_t *seen = calloc(NREC, sizeof *seen);
    drain(r, &qref, count, 100, seen);
    for (uint64_t i = 0; i < NREC; i++)
        assert_int_equal(seen[i], 1);
    struct reader_stats rs;
    reader_get_stats(r, &rs);
    print_message("fetched %llu bytes in %llu requests, peak %llu bytes "
                  "resident\n", (unsigned long long)rs.bytes_fetched,
                  (unsigned long long)rs.requests,
                  (unsigned long long)rs.peak_bytes);
    assert_true(rs.peak_bytes <= o.window_bytes);
    /* each chunk once: the window holds a block and the next one's first
     * chunks, so a chunk two blocks share is kept, not fetched again */
    assert_int_equal(rs.bytes_fetched, (uint64_t)NREC * RB);
    assert_true(rs.requests < rs.bytes_fetched / 8192);  /* coalesced */
    assert_int_equal(rs.records, count);
    reader_close(r);
    free(seen);
    free(counts);
    sampler_free(&s);
    sampler_free(&ref);
}

static void test_reader__rank_slices_cover_the_sequence(void **state)
{
    (void)state;
    uint64_t *counts = malloc(ds.nshards * sizeof *counts);
    for (uint32_t i = 0; i < ds.nshards; i++)
        counts[i] = ds.shards[i].nrec;
    uint64_t *seen = calloc(NREC, sizeof *seen);
    struct reader_opts o;
    small_opts(&o);
    const uint64_t batch = 96, steps = NREC / batch;
    for (int rank = 0; rank < 3; rank++) {
        struct sampler s, ref;
        assert_int_equal(sampler_init(&s, counts, ds.nshards, 4, 1 << 20,
                                      1), SR_OK);
        assert_int_equal(sampler_init(&ref, counts, ds.nshards, 4, 1 << 20,
                                      1), SR_OK);
        struct slice_seq q = { &s, batch, batch / 3, rank, 3 };
        struct slice_seq qref = { &ref, batch, batch / 3, rank, 3 };
        struct reader *r;
        /* a full shuffle: a batch touches more chunks than the window
         * holds, which the reader must still serve */
        assert_int_equal(reader_open(&r, st, &ds, &o, slice_at, &q,
                                     steps * (batch / 3)), SR_OK);
        drain(r, &qref, steps * (batch / 3), batch / 3, seen);
        reader_close(r);
        sampler_free(&s);
        sampler_free(&ref);
    }
    uint64_t total = 0;
    for (uint64_t i = 0; i < NREC; i++) {
        assert_true(seen[i] <= 1);
        total += seen[i];
    }
    assert_int_equal(total, steps * batch);
    free(seen);
    free(counts);
}

static uint64_t identity(void *arg, uint64_t i)
{
    (void)arg;
    return i;
}

/* Records 0..n-1 in order, in batches of 100 (n a multiple), each
 * batch's last record checked, until the first error: that status, the
 * records served before it in *served, the reader's counts in *rs. */
static sr_status read_in_order(const struct reader_opts *o, uint64_t n,
                               uint64_t *served, struct reader_stats *rs)
{
    struct reader *r;
    assert_int_equal(reader_open(&r, st, &ds, o, identity, NULL, n), SR_OK);
    const uint8_t *recs[100];
    uint64_t ids[100];
    sr_status s = SR_OK;
    uint64_t i = 0;
    for (; i < n; i += 100) {
        s = reader_next(r, 100, recs, ids);
        if (s != SR_OK)
            break;
        assert_memory_equal(recs[99], truth + (i + 99) * RB, RB);
    }
    if (served)
        *served = i;
    if (rs)
        reader_get_stats(r, rs);
    reader_close(r);
    return s;
}

static void test_reader__corruption_and_loss_are_named(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/%s", uri, ds.shards[3].name);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, -100, SEEK_END);
    int c = fgetc(f);
    fseek(f, -100, SEEK_END);
    fputc(c ^ 0x55, f);
    fclose(f);
    struct reader_opts o;
    small_opts(&o);
    o.attempts = 2;
    o.retry_delay_s = 0.01;
    sr_status s = read_in_order(&o, NREC, NULL, NULL);
    assert_int_equal(s, SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), ds.shards[3].name));
    assert_non_null(strstr(sr_errmsg(), "checksum mismatch"));
    assert_non_null(strstr(sr_errmsg(), "at byte"));
    f = fopen(path, "r+b");             /* mend it */
    assert_non_null(f);
    fseek(f, -100, SEEK_END);
    fputc(c, f);
    fclose(f);

    /* a shard that vanishes after the run started */
    snprintf(path, sizeof path, "%s/%s", uri, ds.shards[6].name);
    struct reader *r;
    const uint8_t *recs[200];
    uint64_t ids[200];
    assert_int_equal(reader_open(&r, st, &ds, &o, identity, NULL, NREC),
                     SR_OK);
    assert_int_equal(reader_next(r, 200, recs, ids), SR_OK);
    unlink(path);
    s = SR_OK;
    for (uint64_t i = 200; i < NREC && s == SR_OK; i += 200)
        s = reader_next(r, 200, recs, ids);
    assert_int_not_equal(s, SR_OK);
    print_message("%s\n", sr_errmsg_user());
    assert_non_null(strstr(sr_errmsg(), ds.shards[6].name));
    reader_close(r);
}

static void test_reader__cache_serves_the_second_pass(void **state)
{
    (void)state;
    char cache[128];
    snprintf(cache, sizeof cache, "%s/cache", dir);
    struct reader_opts o;
    small_opts(&o);
    o.cache_dir = cache;
    uint64_t fetched[2], hits[2];
    for (int pass = 0; pass < 2; pass++) {
        struct reader_stats rs;
        assert_int_equal(read_in_order(&o, NREC, NULL, &rs), SR_OK);
        fetched[pass] = rs.bytes_fetched;
        hits[pass] = rs.cache_hits;
    }
    assert_true(fetched[0] >= (uint64_t)NREC * RB);
    assert_int_equal(hits[0], 0);
    assert_int_equal(fetched[1], 0);
    assert_true(hits[1] > 0);
}

/* What a tap saw: pieces in order, each byte once, equal to the object. */
struct tap_log {
    const uint8_t *want;        /* the object's bytes from `off` */
    uint64_t off, next;
    int pieces, bad;
};

static void tap_log_piece(void *arg, uint64_t off, const void *p, size_t n)
{
    struct tap_log *t = arg;
    if (off != t->next || memcmp(p, t->want + (off - t->off), n) != 0)
        t->bad++;
    t->next = off + n;
    t->pieces++;
}

static void flip_byte(const char *path, uint64_t off)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
    fputc(c ^ 0x21, f);
    fclose(f);
}

/* Read all n records of d in order; SR_OK or the first error. */
static sr_status read_all(const struct dataset *d, uint64_t n)
{
    struct reader_opts o;
    reader_default_opts(&o);
    o.window_bytes = 8u << 20;
    o.chunk_bytes = 2u << 20;   /* several tap pieces of 1 MiB per chunk */
    o.fetchers = 2;
    o.attempts = 1;
    struct reader *r;
    sr_status s = reader_open(&r, st, d, &o, identity, NULL, n);
    const uint8_t *recs[250];
    uint64_t ids[250];
    for (uint64_t i = 0; s == SR_OK && i < n; i += 250) {
        s = reader_next(r, 250, recs, ids);
        for (int k = 0; s == SR_OK && k < 250; k++)
            assert_memory_equal(recs[k], truth + ids[k] * RB, RB);
    }
    reader_close(r);        /* (leaves the error message as it is) */
    return s;
}

/* A dataset (dir/name) of the first n records in one shard, opened into
 * d; path gets the shard's file. */
static void one_shard_dataset(struct dataset *d, const char *name,
                              uint64_t n, char *path, size_t cap)
{
    char root[160];
    snprintf(root, sizeof root, "%s/%s", dir, name);
    struct shard_schema sch = ds.schema;
    struct dataset_writer *w;
    assert_int_equal(dataset_writer_open(&w, st, root, &sch, 16u << 20),
                     SR_OK);
    assert_int_equal(dataset_writer_add(w, truth, n), SR_OK);
    assert_int_equal(dataset_writer_finish(w, NULL, NULL), SR_OK);
    assert_int_equal(dataset_open(d, st, root), SR_OK);
    assert_int_equal(d->nshards, 1);
    snprintf(path, cap, "%s/%s", root, d->shards[0].name);
}

/* Records are checked as their bytes land, piece by piece; a record split
 * between two pieces is checked once the chunk is whole. A flipped byte is
 * caught, and named, on either path. */
static void test_reader__records_checked_as_they_land(void **state)
{
    (void)state;
    const uint64_t n = 12000;       /* 6.2 MB, one shard */
    struct dataset d;
    char path[512];
    one_shard_dataset(&d, "big", n, path, sizeof path);
    uint8_t hdr[SHARD_HEADER_BYTES];
    struct shard_header h;
    assert_int_equal(storage_read(st, path, 0, hdr, sizeof hdr), SR_OK);
    assert_int_equal(shard_parse_header(&h, hdr, 0, path), SR_OK);

    /* the file backend's tap: ordered pieces of at most 1 MiB */
    uint64_t len = 3 * (1u << 20) + 12345;
    uint8_t *got = malloc(len);
    struct tap_log t = { truth, h.data_off, h.data_off, 0, 0 };
    struct storage_tap tap = { tap_log_piece, &t };
    assert_int_equal(storage_read_tap(st, path, h.data_off, got, len, &tap),
                     SR_OK);
    assert_memory_equal(got, truth, len);
    assert_int_equal(t.bad, 0);
    assert_int_equal(t.next, h.data_off + len);
    assert_int_equal(t.pieces, 4);
    free(got);

    assert_int_equal(read_all(&d, n), SR_OK);
    /* record 2028 spans the first 1 MiB piece's end; record 5 lies
     * inside it */
    const uint64_t split = (1u << 20) / RB, inside = 5;
    assert_true(split * RB < (1u << 20) && (split + 1) * RB > (1u << 20));
    const uint64_t bad[2] = { split, inside };
    for (int i = 0; i < 2; i++) {
        uint64_t at = h.data_off + bad[i] * RB + RB / 2;
        flip_byte(path, at);
        assert_int_equal(read_all(&d, n), SR_ERR_FORMAT);
        char want[64];
        snprintf(want, sizeof want, "record %llu at byte %llu",
                 (unsigned long long)bad[i],
                 (unsigned long long)(h.data_off + bad[i] * RB));
        assert_non_null(strstr(sr_errmsg(), want));
        assert_non_null(strstr(sr_errmsg(), "checksum mismatch"));
        flip_byte(path, at);            /* mend it */
    }
    assert_int_equal(read_all(&d, n), SR_OK);
    dataset_close(&d);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The format lets zero padding of any 64-multiple precede the records.
 * With 40 KiB of it, the schema and index end past what the reader's
 * first read of a shard covers (the index's size plus 16 KiB), so it
 * reads the rest; the records still come out right. */
static void test_reader__index_beyond_the_first_read(void **state)
{
    (void)state;
    const uint64_t n = 3000, pad = 40u << 10;
    struct dataset d;
    char path[512];
    one_shard_dataset(&d, "padded", n, path, sizeof path);

    uint64_t size = d.shards[0].bytes;
    uint8_t *old = malloc(size), *img = calloc(1, size + pad);
    assert_int_equal(storage_read(st, path, 0, old, size), SR_OK);
    struct shard_header h;
    assert_int_equal(shard_parse_header(&h, old, size, path), SR_OK);
    assert_true(h.data_off < SHARD_HEADER_BYTES + (16u << 10) +
                n * SHARD_INDEX_ENTRY_BYTES);
    memcpy(img, old, h.data_off);
    memcpy(img + h.data_off + pad, old + h.data_off, size - h.data_off);
    put_le(img + 32, h.data_off + pad, 8);
    uint64_t meta_end = h.data_off + pad;
    put_le(img + 48, crc32_gzip_refl(0, img + SHARD_HEADER_BYTES,
                                     meta_end - SHARD_HEADER_BYTES), 4);
    put_le(img + 60, crc32_gzip_refl(0, img, 60), 4);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, size + pad, f), size + pad);
    fclose(f);
    d.shards[0].bytes = size + pad;     /* as an index listing it would */

    assert_int_equal(read_all(&d, n), SR_OK);
    free(old);
    free(img);
    dataset_close(&d);
}

/* Requests in order over shards 0-5 (1 MiB each) through a 1 MiB window:
 * most indexes are read by a fetcher before the planner gets to their
 * shard, while it waits at the window. Not the first, and not the second
 * when the planner's opening burst through the first shard (which the
 * window holds whole) reaches it before a fetcher has run: 4 or 5 of the
 * 6 in 20 runs. A corrupt index in a later shard stops the run only
 * where the plan reaches that shard, with the shard and what failed
 * named, and every record before it is served. (Shard 6 may be gone, as
 * the loss test leaves it: an index read ahead that fails is not an
 * error unless the plan gets there.) */
static void test_reader__indexes_read_ahead_of_need(void **state)
{
    (void)state;
    assert_true(ds.nshards > 6);
    const uint64_t n = ds.shards[6].first / 100 * 100;
    struct reader_opts o;
    small_opts(&o);
    o.chunk_bytes = 32u << 10;
    struct reader_stats rs;
    assert_int_equal(read_in_order(&o, n, NULL, &rs), SR_OK);
    print_message("%llu indexes, %llu read ahead of need\n",
                  (unsigned long long)rs.indexes,
                  (unsigned long long)rs.indexes_ahead);
    assert_true(rs.indexes >= 6);
    assert_true(rs.indexes_ahead >= 3);

    /* a byte of shard 4's index flipped */
    const struct dataset_shard *bad = &ds.shards[4];
    char path[256];
    snprintf(path, sizeof path, "%s/%s", uri, bad->name);
    uint8_t head[SHARD_HEADER_BYTES];
    assert_int_equal(storage_read(st, path, 0, head, sizeof head), SR_OK);
    struct shard_header h;
    assert_int_equal(shard_parse_header(&h, head, bad->bytes, path), SR_OK);
    flip_byte(path, h.index_off + 9);
    uint64_t i;
    sr_status s = read_in_order(&o, n, &i, NULL);
    flip_byte(path, h.index_off + 9);   /* mend it */
    print_message("%s\n", sr_errmsg_user());
    assert_int_equal(s, SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), bad->name));
    assert_non_null(strstr(sr_errmsg(), "schema/index checksum mismatch"));
    assert_int_equal(i, bad->first / 100 * 100);
}

/* Nice value of thread tid of this process (field 19 of its stat). */
static int thread_nice(const char *tid)
{
    char path[320], line[1024];
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -100;    /* the thread has ended */
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *p = strrchr(line, ')');    /* past the command name */
    for (int field = 2; p && *p; p++)
        if (*p == ' ' && ++field == 19) {
            char *end;
            errno = 0;
            long v = strtol(p + 1, &end, 10);
            assert_true(errno == 0 && end > p + 1 && *end == ' ');
            assert_true(v >= -20 && v <= 19);
            return (int)v;
        }
    fail_msg("no nice value in %s", path);
    return -100;
}

static void test_reader__read_ahead_threads_yield(void **state)
{
    (void)state;
    struct reader_opts o;
    small_opts(&o);
    struct reader *r;
    assert_int_equal(reader_open(&r, st, &ds, &o, identity, NULL, 1000),
                     SR_OK);
    const uint8_t *recs[100];
    uint64_t ids[100];
    assert_int_equal(reader_next(r, 100, recs, ids), SR_OK);
    int base = getpriority(PRIO_PROCESS, 0);
    int want = base + 10 > 19 ? 19 : base + 10;
    if (want == base) {     /* already at the lowest priority */
        reader_close(r);
        skip();
    }
    int lower = 0, threads = 0;
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        int nice = thread_nice(e->d_name);
        threads++;
        lower += nice == want;
    }
    closedir(d);
    print_message("%d threads, %d of them at nice %d (this one at %d)\n",
                  threads, lower, want, base);
    assert_int_equal(lower, o.fetchers + 1);    /* fetchers and planner */
    reader_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader__order_bytes_and_window),
        cmocka_unit_test(test_reader__rank_slices_cover_the_sequence),
        cmocka_unit_test(test_reader__cache_serves_the_second_pass),
        cmocka_unit_test(test_reader__corruption_and_loss_are_named),
        cmocka_unit_test(test_reader__records_checked_as_they_land),
        cmocka_unit_test(test_reader__index_beyond_the_first_read),
        cmocka_unit_test(test_reader__indexes_read_ahead_of_need),
        cmocka_unit_test(test_reader__read_ahead_threads_yield),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
