/*
 * test_shard.c: the shard format and datasets: build/parse round trips,
 * every checksum catching a flipped byte with an error naming the offset,
 * header sanity checks, and the dataset writer/loader through file://.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <isa-l/crc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/shard.h"

static void make_schema(struct shard_schema *s)
{
    memset(s, 0, sizeof *s);
    uint32_t shape[2] = { 4, 3 };
    assert_int_equal(schema_add(s, "x", DT_UINT8, 2, shape), SR_OK);
    assert_int_equal(schema_add(s, "y", DT_UINT8, 0, NULL), SR_OK);
    s->f[0].scale = 1.0 / 255.0;
    s->f[1].num_classes = 5;
}

static uint8_t *make_records(uint64_t n, size_t rb)
{
    uint8_t *r = malloc(n * rb);
    for (uint64_t i = 0; i < n * rb; i++)
        r[i] = (uint8_t)(i * 31 + 7);
    for (uint64_t i = 0; i < n; i++)
        r[i * rb + rb - 1] = (uint8_t)(i % 5);
    return r;
}

/* A shard of n records in the test schema, built into img and parsed into
 * si; returns the records it holds. */
static uint8_t *built_shard(uint64_t n, struct shard_schema *s,
                            struct sr_buf *img, struct shard_info *si)
{
    make_schema(s);
    uint8_t *recs = make_records(n, s->record_bytes);
    *img = (struct sr_buf){ 0 };
    assert_int_equal(shard_build(img, s, recs, n), SR_OK);
    assert_int_equal(shard_parse(si, img->data, img->len, img->len, "t"),
                     SR_OK);
    return recs;
}

static void test_shard__round_trip(void **state)
{
    (void)state;
    struct shard_schema s;
    struct sr_buf img;
    struct shard_info si;
    uint8_t *recs = built_shard(10, &s, &img, &si);
    assert_int_equal(s.record_bytes, 13);
    assert_int_equal(si.h.nrec, 10);
    assert_true(schema_equal(&si.schema, &s));
    assert_int_equal(si.h.data_off % 64, 0);
    for (uint64_t i = 0; i < 10; i++) {
        uint64_t off;
        uint32_t len;
        shard_record_span(&si, i, &off, &len);
        assert_int_equal(len, 13);
        assert_memory_equal(img.data + off, recs + i * 13, 13);
        assert_int_equal(shard_check_record(&si, i, img.data + off, "t"),
                         SR_OK);
    }
    shard_info_free(&si);
    buf_free(&img);
    free(recs);
}

static void test_shard__flipped_record_byte_names_offset(void **state)
{
    (void)state;
    struct shard_schema s;
    struct sr_buf img;
    struct shard_info si;
    uint8_t *recs = built_shard(8, &s, &img, &si);
    uint64_t off;
    uint32_t len;
    shard_record_span(&si, 3, &off, &len);
    img.data[off + 5] ^= 0x40;
    assert_int_equal(shard_check_record(&si, 3, img.data + off, "obj"),
                     SR_ERR_FORMAT);
    char want[64];
    snprintf(want, sizeof want, "record 3 at byte %llu",
             (unsigned long long)off);
    assert_non_null(strstr(sr_errmsg(), want));
    assert_non_null(strstr(sr_errmsg(), "obj"));
    assert_int_equal(shard_check_record(&si, 2, img.data + off - len, "obj"),
                     SR_OK);
    shard_info_free(&si);
    buf_free(&img);
    free(recs);
}

static void test_shard__header_and_index_corruption(void **state)
{
    (void)state;
    struct shard_schema s;
    make_schema(&s);
    uint8_t *recs = make_records(4, s.record_bytes);
    struct sr_buf img = { 0 };
    assert_int_equal(shard_build(&img, &s, recs, 4), SR_OK);
    struct shard_info si;

    img.data[20] ^= 1;      /* record count */
    assert_int_equal(shard_parse(&si, img.data, img.len, img.len, "o"),
                     SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "header checksum"));
    img.data[20] ^= 1;

    img.data[70] ^= 1;      /* schema JSON */
    assert_int_equal(shard_parse(&si, img.data, img.len, img.len, "o"),
                     SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "schema/index checksum"));
    img.data[70] ^= 1;

    img.data[0] = 'X';      /* magic */
    assert_int_equal(shard_parse(&si, img.data, img.len, img.len, "o"),
                     SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "magic"));
    img.data[0] = 'S';

    /* truncated object */
    assert_int_equal(shard_parse(&si, img.data, img.len, img.len - 1, "o"),
                     SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), "truncated"));
    /* too short to hold the index */
    assert_int_equal(shard_parse(&si, img.data, 100, 0, "o"), SR_ERR_FORMAT);

    assert_int_equal(shard_parse(&si, img.data, img.len, img.len, "o"),
                     SR_OK);
    shard_info_free(&si);
    buf_free(&img);
    free(recs);
}

/* A run of records is checked with one CRC over its bytes, joined from
 * the stored per-record CRCs: every run passes, a flipped byte anywhere in
 * it or two records swapped fail it, and so does a CRC of other bounds. */
static void test_shard__run_crc_joins_record_crcs(void **state)
{
    (void)state;
    struct shard_schema s;
    struct sr_buf img;
    struct shard_info si;
    uint8_t *recs = built_shard(40, &s, &img, &si);
    size_t rb = s.record_bytes;
    const uint8_t *data = img.data + si.h.data_off;
    static const uint64_t runs[][2] = { { 0, 1 }, { 0, 40 }, { 7, 8 },
                                        { 3, 29 }, { 39, 40 }, { 12, 31 } };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        uint64_t a = runs[i][0], b = runs[i][1];
        size_t n = (size_t)(b - a) * rb;
        uint32_t crc = shard_crc(0, data + a * rb, n);
        assert_true(shard_run_ok(&si, a, b, crc));
        /* in pieces, split inside a record, as a tap sees them */
        uint32_t part = shard_crc(0, data + a * rb, n / 3 + 1);
        part = shard_crc(part, data + a * rb + n / 3 + 1, n - n / 3 - 1);
        assert_int_equal(part, crc);
        if (b < 40)
            assert_false(shard_run_ok(&si, a, b + 1, crc));
        if (b - a > 1)
            assert_false(shard_run_ok(&si, a + 1, b, crc));
    }
    uint8_t *copy = malloc(40 * rb);
    for (size_t at = 0; at < 40 * rb; at += 97) {
        memcpy(copy, data, 40 * rb);
        copy[at] ^= 0x10;
        assert_false(shard_run_ok(&si, 0, 40, shard_crc(0, copy, 40 * rb)));
    }
    memcpy(copy, data, 40 * rb);
    memcpy(copy + 5 * rb, data + 6 * rb, rb);
    memcpy(copy + 6 * rb, data + 5 * rb, rb);
    assert_false(shard_run_ok(&si, 0, 40, shard_crc(0, copy, 40 * rb)));
    free(copy);
    shard_info_free(&si);
    buf_free(&img);
    free(recs);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The index decides where a record is: an index whose entries are not in
 * layout order (which shard_build never writes, but the format allows) is
 * followed entry by entry, not assumed to be dense. */
static void test_shard__index_order_is_honoured(void **state)
{
    (void)state;
    struct shard_schema s;
    struct sr_buf img;
    struct shard_info si;
    uint8_t *recs = built_shard(6, &s, &img, &si);
    assert_true(si.dense);
    uint64_t index_off = si.h.index_off, data_off = si.h.data_off;
    shard_info_free(&si);

    /* swap the index entries of records 1 and 4, then re-seal the
     * schema/index and header checksums */
    uint8_t tmp[SHARD_INDEX_ENTRY_BYTES];
    uint8_t *e1 = img.data + index_off + 1 * SHARD_INDEX_ENTRY_BYTES;
    uint8_t *e4 = img.data + index_off + 4 * SHARD_INDEX_ENTRY_BYTES;
    memcpy(tmp, e1, sizeof tmp);
    memcpy(e1, e4, sizeof tmp);
    memcpy(e4, tmp, sizeof tmp);
    put_le32(img.data + 48, crc32_gzip_refl(0, img.data + SHARD_HEADER_BYTES,
                                            data_off - SHARD_HEADER_BYTES));
    put_le32(img.data + 60, crc32_gzip_refl(0, img.data, 60));

    assert_int_equal(shard_parse(&si, img.data, img.len, img.len, "t"), SR_OK);
    assert_false(si.dense);
    assert_false(shard_run_ok(&si, 0, 6, shard_crc(0, img.data + data_off,
                                                   6 * s.record_bytes)));
    static const int from[6] = { 0, 4, 2, 3, 1, 5 };
    for (uint64_t i = 0; i < 6; i++) {
        uint64_t off;
        uint32_t len;
        shard_record_span(&si, i, &off, &len);
        assert_int_equal(off, data_off + (uint64_t)from[i] * s.record_bytes);
        assert_memory_equal(img.data + off, recs + from[i] * s.record_bytes,
                            s.record_bytes);
        assert_int_equal(shard_check_record(&si, i, img.data + off, "t"),
                         SR_OK);
    }
    shard_info_free(&si);
    buf_free(&img);
    free(recs);
}

static void test_shard__schema_json_round_trip(void **state)
{
    (void)state;
    struct shard_schema s, t;
    make_schema(&s);
    struct sr_buf j = { 0 };
    assert_int_equal(schema_to_json(&s, &j), SR_OK);
    assert_int_equal(schema_from_json(&t, (char *)j.data, j.len, "j"), SR_OK);
    assert_true(schema_equal(&s, &t));
    assert_int_equal(t.f[1].offset, 12);
    const char *bad = "{\"fields\":[{\"name\":\"x\",\"dtype\":\"complex\","
                      "\"shape\":[2]}]}";
    assert_int_equal(schema_from_json(&t, bad, strlen(bad), "j"),
                     SR_ERR_FORMAT);
    buf_free(&j);
}

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/spotrun-test-shard-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_dataset__write_open_load(void **state)
{
    (void)state;
    struct storage *st;
    assert_int_equal(storage_open(&st), SR_OK);
    struct shard_schema s;
    make_schema(&s);
    uint64_t n = 1000;
    uint8_t *recs = make_records(n, s.record_bytes);
    char uri[256];
    snprintf(uri, sizeof uri, "%s/ds", tmpdir);
    struct dataset_writer *w;
    /* 4 KiB of overhead + ~(13+16) bytes per record: shards of ~210 */
    assert_int_equal(dataset_writer_open(&w, st, uri, &s, 10240), SR_OK);
    assert_int_equal(dataset_writer_add(w, recs, n), SR_OK);
    uint64_t nrec;
    uint32_t nshards;
    assert_int_equal(dataset_writer_finish(w, &nrec, &nshards), SR_OK);
    assert_int_equal(nrec, n);
    assert_true(nshards >= 4);

    struct dataset ds;
    assert_int_equal(dataset_open(&ds, st, uri), SR_OK);
    assert_int_equal(ds.nrec, n);
    assert_int_equal(ds.nshards, nshards);
    for (uint32_t i = 0; i < ds.nshards; i++) {     /* bytes round-trip */
        char suri[512];
        assert_int_equal(dataset_shard_uri(&ds, i, suri, sizeof suri), SR_OK);
        struct sr_buf body = { 0 };
        struct shard_info si;
        assert_int_equal(storage_read_all(st, suri, &body), SR_OK);
        assert_int_equal(shard_parse(&si, body.data, body.len, body.len,
                                     suri), SR_OK);
        uint64_t off;
        uint32_t len;
        shard_record_span(&si, 0, &off, &len);
        assert_memory_equal(body.data + off, recs + ds.shards[i].first *
                            s.record_bytes, si.h.nrec * s.record_bytes);
        shard_info_free(&si);
        buf_free(&body);
    }
    assert_int_equal(dataset_verify_shard(&ds, st, 0), SR_OK);
    for (uint64_t g = 0; g < n; g += 97) {
        uint32_t sh = dataset_find_shard(&ds, g);
        assert_true(ds.shards[sh].first <= g);
        assert_true(g < ds.shards[sh].first + ds.shards[sh].nrec);
    }

    /* a flipped byte in shard 2 is found and named */
    char path[512];
    snprintf(path, sizeof path, "%s/%s", uri, ds.shards[2].name);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, -3, SEEK_END);
    int c = fgetc(f);
    fseek(f, -3, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
    assert_int_equal(dataset_verify_shard(&ds, st, 2), SR_ERR_FORMAT);
    assert_non_null(strstr(sr_errmsg(), ds.shards[2].name));
    assert_non_null(strstr(sr_errmsg(), "checksum mismatch"));
    assert_int_equal(dataset_verify_shard(&ds, st, 1), SR_OK);
    dataset_close(&ds);

    /* no index: not a dataset */
    snprintf(path, sizeof path, "%s/index.json", uri);
    unlink(path);
    assert_int_equal(dataset_open(&ds, st, uri), SR_ERR_NOT_FOUND);
    assert_non_null(strstr(sr_errmsg(), "index.json is missing"));
    storage_close(st);
    free(recs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard__round_trip),
        cmocka_unit_test(test_shard__flipped_record_byte_names_offset),
        cmocka_unit_test(test_shard__header_and_index_corruption),
        cmocka_unit_test(test_shard__run_crc_joins_record_crcs),
        cmocka_unit_test(test_shard__index_order_is_honoured),
        cmocka_unit_test(test_shard__schema_json_round_trip),
        cmocka_unit_test_setup_teardown(test_dataset__write_open_load,
                                        setup_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
