/*
 * shard.c: building and parsing data shards. Layout (little-endian):
 *
 *   0  char[8] magic "SPOTSHRD"     32 u64 data_off
 *   8  u32 version                  40 u64 data_len
 *  12  u32 meta_len                 48 u32 crc32(bytes meta_start..data_off)
 *  16  u64 nrec                     52 u32 flags (0)
 *  24  u64 index_off                56 u32 reserved (0)
 *                                   60 u32 crc32(bytes 0..60)
 *  64  meta JSON (meta_len bytes), zero padding to index_off (8-aligned)
 *  index_off  nrec x { u64 offset from data_off, u32 length, u32 crc32 }
 *  zero padding to data_off (64-aligned), then the records.
 */
#include "shard.h"

#include <isa-l/crc.h>
#include <zlib.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[DT_COUNT] = {
    [DT_UINT8] = { "uint8", 1 },     [DT_INT8] = { "int8", 1 },
    [DT_UINT16] = { "uint16", 2 },   [DT_INT16] = { "int16", 2 },
    [DT_INT32] = { "int32", 4 },     [DT_INT64] = { "int64", 8 },
    [DT_FLOAT32] = { "float32", 4 }, [DT_FLOAT64] = { "float64", 8 },
};

const char *dtype_name(enum sr_dtype t)
{
    return (unsigned)t < DT_COUNT ? dtypes[t].name : "?";
}

size_t dtype_size(enum sr_dtype t)
{
    return (unsigned)t < DT_COUNT ? dtypes[t].size : 0;
}

int dtype_parse(enum sr_dtype *out, const char *name)
{
    for (int i = 0; i < DT_COUNT; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (enum sr_dtype)i;
            return 0;
        }
    return -1;
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

sr_status schema_add(struct shard_schema *s, const char *name,
                     enum sr_dtype t, int ndim, const uint32_t *shape)
{
    if (s->nfields >= SHARD_MAX_FIELDS)
        return SR_FAIL(SR_ERR_USAGE, "too many fields (max %d)",
                       SHARD_MAX_FIELDS);
    if (ndim < 0 || ndim > SHARD_MAX_DIMS)
        return SR_FAIL(SR_ERR_USAGE, "field %s: %d dimensions (max %d)", name,
                       ndim, SHARD_MAX_DIMS);
    struct shard_field *f = &s->f[s->nfields];
    memset(f, 0, sizeof *f);
    if (!*name || strlen(name) >= sizeof f->name)
        return SR_FAIL(SR_ERR_USAGE, "bad field name '%s'", name);
    memcpy(f->name, name, strlen(name) + 1);
    f->dtype = t;
    f->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0)
            return SR_FAIL(SR_ERR_USAGE, "field %s: zero-sized dimension",
                           name);
        f->shape[i] = shape[i];
        n *= shape[i];
    }
    f->bytes = n * dtype_size(t);
    f->offset = s->record_bytes;
    s->record_bytes += f->bytes;
    s->nfields++;
    return SR_OK;
}

int schema_find(const struct shard_schema *s, const char *name)
{
    for (int i = 0; i < s->nfields; i++)
        if (strcmp(s->f[i].name, name) == 0)
            return i;
    return -1;
}

int schema_equal(const struct shard_schema *a, const struct shard_schema *b)
{
    if (a->nfields != b->nfields || a->record_bytes != b->record_bytes)
        return 0;
    for (int i = 0; i < a->nfields; i++) {
        const struct shard_field *x = &a->f[i], *y = &b->f[i];
        if (strcmp(x->name, y->name) || x->dtype != y->dtype ||
            x->ndim != y->ndim || x->scale != y->scale ||
            x->num_classes != y->num_classes ||
            memcmp(x->shape, y->shape, sizeof x->shape))
            return 0;
    }
    return 1;
}

sr_status schema_to_json(const struct shard_schema *s, struct sr_buf *out)
{
    sr_status st = SR_OK;
    json_t *root = json_object();
    json_t *fields = json_array();
    if (!root || !fields) {
        json_decref(fields);
        st = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        goto out;
    }
    json_object_set_new(root, "fields", fields);
    for (int i = 0; i < s->nfields; i++) {
        const struct shard_field *f = &s->f[i];
        json_t *shape = json_array();
        for (int d = 0; d < f->ndim; d++)
            json_array_append_new(shape, json_integer(f->shape[d]));
        json_t *o = json_pack("{s:s, s:s, s:o}", "name", f->name, "dtype",
                              dtype_name(f->dtype), "shape", shape);
        if (!o) {
            st = SR_FAIL(SR_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (f->scale != 0)
            json_object_set_new(o, "scale", json_real(f->scale));
        if (f->num_classes > 0)
            json_object_set_new(o, "num_classes",
                                json_integer(f->num_classes));
        json_array_append_new(fields, o);
    }
    json_object_set_new(root, "record_bytes",
                        json_integer((json_int_t)s->record_bytes));
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        st = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = buf_append(out, text, strlen(text));
    free(text);
out:
    json_decref(root);
    return st;
}

sr_status schema_from_json(struct shard_schema *s, const char *text,
                           size_t len, const char *what)
{
    sr_status st = SR_OK;
    json_error_t jerr;
    memset(s, 0, sizeof *s);
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return SR_FAIL(SR_ERR_FORMAT, "%s: schema is not valid JSON (%s)",
                       what, jerr.text);
    json_t *fields = json_object_get(root, "fields");
    if (!json_is_array(fields) || json_array_size(fields) == 0) {
        st = SR_FAIL(SR_ERR_FORMAT, "%s: schema has no \"fields\" list",
                     what);
        goto out;
    }
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *dt = json_string_value(json_object_get(f, "dtype"));
        json_t *shape = json_object_get(f, "shape");
        enum sr_dtype t;
        if (!name || !dt || !json_is_array(shape) || dtype_parse(&t, dt)) {
            st = SR_FAIL(SR_ERR_FORMAT, "%s: schema field %zu needs name, a "
                         "known dtype and a shape", what, i);
            goto out;
        }
        uint32_t dims[SHARD_MAX_DIMS];
        size_t nd = json_array_size(shape);
        if (nd > SHARD_MAX_DIMS) {
            st = SR_FAIL(SR_ERR_FORMAT, "%s: field %s has %zu dimensions",
                         what, name, nd);
            goto out;
        }
        for (size_t d = 0; d < nd; d++) {
            json_int_t v = json_integer_value(json_array_get(shape, d));
            if (v <= 0 || v > UINT32_MAX) {
                st = SR_FAIL(SR_ERR_FORMAT, "%s: field %s has a bad shape",
                             what, name);
                goto out;
            }
            dims[d] = (uint32_t)v;
        }
        st = schema_add(s, name, t, (int)nd, dims);
        if (st != SR_OK) {
            st = SR_FAIL(SR_ERR_FORMAT, "%s: %s", what, sr_errmsg_user());
            goto out;
        }
        json_t *sc = json_object_get(f, "scale");
        if (sc)
            s->f[s->nfields - 1].scale = json_number_value(sc);
        json_t *nc = json_object_get(f, "num_classes");
        if (nc)
            s->f[s->nfields - 1].num_classes = (int)json_integer_value(nc);
    }
    json_t *rb = json_object_get(root, "record_bytes");
    if (rb && (size_t)json_integer_value(rb) != s->record_bytes)
        st = SR_FAIL(SR_ERR_FORMAT, "%s: record_bytes %lld does not match "
                     "the fields (%zu)", what,
                     (long long)json_integer_value(rb), s->record_bytes);
out:
    json_decref(root);
    return st;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

sr_status shard_build(struct sr_buf *out, const struct shard_schema *schema,
                      const uint8_t *records, uint64_t n)
{
    struct sr_buf meta = { 0 };
    SR_TRY(schema_to_json(schema, &meta));
    size_t rb = schema->record_bytes;
    uint64_t index_off = align_up(SHARD_HEADER_BYTES + meta.len, 8);
    uint64_t data_off = align_up(index_off + n * SHARD_INDEX_ENTRY_BYTES, 64);
    uint64_t data_len = n * rb;
    uint64_t total = data_off + data_len;
    size_t base = out->len;
    sr_status s = buf_reserve(out, (size_t)total);
    if (s != SR_OK)
        goto out;
    uint8_t *p = out->data + base;
    memset(p, 0, (size_t)data_off);
    memcpy(p + SHARD_HEADER_BYTES, meta.data, meta.len);
    for (uint64_t i = 0; i < n; i++) {
        uint8_t *e = p + index_off + i * SHARD_INDEX_ENTRY_BYTES;
        const uint8_t *rec = records + i * rb;
        put_u64(e, i * rb);
        put_u32(e + 8, (uint32_t)rb);
        put_u32(e + 12, shard_crc(0, rec, rb));
    }
    if (data_len)
        memcpy(p + data_off, records, (size_t)data_len);
    memcpy(p, SHARD_MAGIC, 8);
    put_u32(p + 8, SHARD_VERSION);
    put_u32(p + 12, (uint32_t)meta.len);
    put_u64(p + 16, n);
    put_u64(p + 24, index_off);
    put_u64(p + 32, data_off);
    put_u64(p + 40, data_len);
    put_u32(p + 48, shard_crc(0, p + SHARD_HEADER_BYTES,
                              data_off - SHARD_HEADER_BYTES));
    put_u32(p + 60, shard_crc(0, p, 60));
    out->len = base + (size_t)total;
out:
    buf_free(&meta);
    return s;
}

sr_status shard_parse_header(struct shard_header *h, const uint8_t *p,
                             uint64_t object_size, const char *what)
{
    if (memcmp(p, SHARD_MAGIC, 8) != 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: byte 0: not a spotrun shard (bad "
                       "magic)", what);
    uint32_t stored = get_u32(p + 60), calc = shard_crc(0, p, 60);
    if (stored != calc)
        return SR_FAIL(SR_ERR_FORMAT, "%s: byte 60: header checksum mismatch "
                       "(stored %08x, computed %08x)", what, stored, calc);
    h->version = get_u32(p + 8);
    if (h->version != SHARD_VERSION)
        return SR_FAIL(SR_ERR_FORMAT, "%s: byte 8: shard version %u (this "
                       "build reads %d)", what, h->version, SHARD_VERSION);
    h->meta_len = get_u32(p + 12);
    h->nrec = get_u64(p + 16);
    h->index_off = get_u64(p + 24);
    h->data_off = get_u64(p + 32);
    h->data_len = get_u64(p + 40);
    h->meta_index_crc = get_u32(p + 48);
    if (h->index_off < SHARD_HEADER_BYTES + (uint64_t)h->meta_len ||
        h->nrec > (UINT64_MAX - h->index_off) / SHARD_INDEX_ENTRY_BYTES ||
        h->data_off < h->index_off + h->nrec * SHARD_INDEX_ENTRY_BYTES ||
        h->data_len > UINT64_MAX - h->data_off)
        return SR_FAIL(SR_ERR_FORMAT, "%s: byte 12: inconsistent header "
                       "offsets", what);
    if (object_size && object_size != h->data_off + h->data_len)
        return SR_FAIL(SR_ERR_FORMAT, "%s: object is %llu bytes but its "
                       "header says %llu (truncated or appended to)", what,
                       (unsigned long long)object_size,
                       (unsigned long long)(h->data_off + h->data_len));
    return SR_OK;
}

/* The table behind shard_run_ok for records of rb bytes. Appending rb
 * bytes to a run multiplies its CRC by x^(8 rb) modulo the polynomial
 * (zlib's crc32_combine_op), a map linear in the CRC's bits: entry
 * [j][v] is the image of byte v in byte position j. */
static uint32_t *join_table(uint64_t rb)
{
    uint32_t *t = malloc(4 * 256 * sizeof *t);
    if (!t)
        return NULL;
    uLong op = crc32_combine_gen((z_off_t)rb);
    for (int j = 0; j < 4; j++) {
        uint32_t *tj = t + 256 * j;
        tj[0] = 0;
        for (int b = 0; b < 8; b++)
            tj[1 << b] = (uint32_t)crc32_combine_op(1ul << (8 * j + b), 0,
                                                    op);
        for (int v = 3; v < 256; v++)
            if (v & (v - 1))    /* v's lowest bit, and the rest */
                tj[v] = tj[v & -v] ^ tj[v & (v - 1)];
    }
    return t;
}

/* shard_parse and shard_parse_in_place: the index is copied out of p, or
 * (in_place) pointed to where it lies. */
static sr_status parse(struct shard_info *si, const uint8_t *p, int in_place,
                       uint64_t prefix_len, uint64_t object_size,
                       const char *what)
{
    memset(si, 0, sizeof *si);
    if (prefix_len < SHARD_HEADER_BYTES)
        return SR_FAIL(SR_ERR_FORMAT, "%s: only %llu bytes, shorter than a "
                       "shard header", what, (unsigned long long)prefix_len);
    SR_TRY(shard_parse_header(&si->h, p, object_size, what));
    const struct shard_header *h = &si->h;
    if (prefix_len < h->data_off)
        return SR_FAIL(SR_ERR_FORMAT, "%s: only %llu bytes, header says the "
                       "records start at %llu", what,
                       (unsigned long long)prefix_len,
                       (unsigned long long)h->data_off);
    uint32_t calc = shard_crc(0, p + SHARD_HEADER_BYTES,
                              h->data_off - SHARD_HEADER_BYTES);
    if (calc != h->meta_index_crc)
        return SR_FAIL(SR_ERR_FORMAT, "%s: bytes %d-%llu: schema/index "
                       "checksum mismatch (stored %08x, computed %08x)", what,
                       SHARD_HEADER_BYTES, (unsigned long long)h->data_off,
                       h->meta_index_crc, calc);
    SR_TRY(schema_from_json(&si->schema, (const char *)p + SHARD_HEADER_BYTES,
                            h->meta_len, what));
    size_t isz = (size_t)(h->nrec * SHARD_INDEX_ENTRY_BYTES);
    if (in_place) {
        si->index = p + h->index_off;
    } else {
        si->copy = malloc(isz ? isz : 1);
        if (!si->copy)
            return SR_FAIL(SR_ERR_NOMEM, "%s: out of memory for the index",
                           what);
        memcpy(si->copy, p + h->index_off, isz);
        si->index = si->copy;
    }
    int dense = 1;
    for (uint64_t i = 0; i < h->nrec; i++) {
        uint64_t off;
        uint32_t len;
        shard_record_span(si, i, &off, &len);
        dense &= off == h->data_off + i * si->schema.record_bytes;
        if (len != si->schema.record_bytes || len > h->data_len ||
            off - h->data_off > h->data_len - len) {
            sr_status s = SR_FAIL(SR_ERR_FORMAT, "%s: byte %llu: index entry "
                                  "%llu points outside the records", what,
                                  (unsigned long long)(h->index_off +
                                  i * SHARD_INDEX_ENTRY_BYTES),
                                  (unsigned long long)i);
            shard_info_free(si);
            return s;
        }
    }
    si->dense = dense;
    if (dense && h->nrec > 0) {
        si->join = join_table(si->schema.record_bytes);
        if (!si->join) {
            shard_info_free(si);
            return SR_FAIL(SR_ERR_NOMEM, "%s: out of memory", what);
        }
    }
    return SR_OK;
}

sr_status shard_parse(struct shard_info *si, const uint8_t *p,
                      uint64_t prefix_len, uint64_t object_size,
                      const char *what)
{
    return parse(si, p, 0, prefix_len, object_size, what);
}

sr_status shard_parse_in_place(struct shard_info *si, const uint8_t *p,
                               uint64_t prefix_len, uint64_t object_size,
                               const char *what)
{
    return parse(si, p, 1, prefix_len, object_size, what);
}

void shard_info_free(struct shard_info *si)
{
    free(si->copy);
    si->copy = NULL;
    si->index = NULL;
    free(si->join);
    si->join = NULL;
}

/* CRC-32 as zlib computes it (the gzip polynomial, reflected), through
 * ISA-L's carry-less-multiply kernels: several times zlib's speed, which
 * matters when every streamed record is checked. */
uint32_t shard_crc(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        crc = crc32_gzip_refl(crc, b, k);
        b += k;
        n -= k;
    }
    return crc;
}

int shard_run_ok(const struct shard_info *si, uint64_t first, uint64_t end,
                 uint32_t crc)
{
    if (!si->join || first >= end || end > si->h.nrec)    /* not dense */
        return 0;
    const uint32_t *t = si->join;
    const uint8_t *e = si->index + first * SHARD_INDEX_ENTRY_BYTES;
    uint32_t run = get_u32(e + 12);
    for (uint64_t k = first + 1; k < end; k++) {
        e += SHARD_INDEX_ENTRY_BYTES;
        run = t[run & 255] ^ t[256 + (run >> 8 & 255)] ^
              t[512 + (run >> 16 & 255)] ^ t[768 + (run >> 24)] ^
              get_u32(e + 12);
    }
    return run == crc;
}

void shard_record_span(const struct shard_info *si, uint64_t i, uint64_t *off,
                       uint32_t *len)
{
    if (si->dense) {
        *off = si->h.data_off + i * si->schema.record_bytes;
        *len = (uint32_t)si->schema.record_bytes;
        return;
    }
    const uint8_t *e = si->index + i * SHARD_INDEX_ENTRY_BYTES;
    *off = si->h.data_off + get_u64(e);
    *len = get_u32(e + 8);
}

sr_status shard_check_record(const struct shard_info *si, uint64_t i,
                             const uint8_t *rec, const char *what)
{
    const uint8_t *e = si->index + i * SHARD_INDEX_ENTRY_BYTES;
    uint32_t stored = get_u32(e + 12);
    uint32_t calc = shard_crc(0, rec, get_u32(e + 8));
    if (calc == stored)
        return SR_OK;
    return SR_FAIL(SR_ERR_FORMAT, "%s: record %llu at byte %llu: checksum "
                   "mismatch (stored %08x, computed %08x)", what,
                   (unsigned long long)i,
                   (unsigned long long)(si->h.data_off + get_u64(e)), stored,
                   calc);
}

sr_status shard_check_records(const struct shard_info *si, uint64_t first,
                              uint64_t end, const uint8_t *bytes,
                              uint64_t bytes_off, const char *what)
{
    if (si->dense && first < end) {     /* one CRC for the run */
        uint64_t rb = si->schema.record_bytes;
        const uint8_t *run = bytes + (si->h.data_off + first * rb -
                                      bytes_off);
        if (shard_run_ok(si, first, end,
                         shard_crc(0, run, (size_t)((end - first) * rb))))
            return SR_OK;
    }
    for (uint64_t i = first; i < end; i++) {
        uint64_t off;
        uint32_t len;
        shard_record_span(si, i, &off, &len);
        SR_TRY(shard_check_record(si, i, bytes + (off - bytes_off), what));
    }
    return SR_OK;
}
