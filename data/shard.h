/*
 * shard.h: the data shard format (docs/formats.md has it byte by byte).
 *
 * A shard is one object: a 64-byte header (magic, version, counts, offsets,
 * its own CRC-32), a JSON schema naming each field's dtype and shape, an
 * index with (offset, length, CRC-32) per record, then the records. Any
 * record is one ranged read away once the header and index are known, and
 * every record can be checked on its own as its bytes land. All integers
 * are little-endian; CRC-32 is zlib's (IEEE 802.3).
 *
 * This module builds shard images in memory and parses/validates the
 * pieces; it does no I/O. Errors name the object, the byte offset and what
 * failed.
 */
#ifndef SPOTRUN_SHARD_H
#define SPOTRUN_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../common/status.h"

#define SHARD_MAGIC "SPOTSHRD"
#define SHARD_VERSION 1
#define SHARD_HEADER_BYTES 64
#define SHARD_INDEX_ENTRY_BYTES 16
#define SHARD_MAX_FIELDS 8
#define SHARD_MAX_DIMS 4
#define SHARD_SUFFIX ".srs"

enum sr_dtype {
    DT_UINT8, DT_INT8, DT_UINT16, DT_INT16, DT_INT32, DT_INT64, DT_FLOAT32,
    DT_FLOAT64, DT_COUNT
};

const char *dtype_name(enum sr_dtype t);
size_t dtype_size(enum sr_dtype t);
int dtype_parse(enum sr_dtype *out, const char *name);

struct shard_field {
    char name[32];
    enum sr_dtype dtype;
    int ndim;
    uint32_t shape[SHARD_MAX_DIMS];
    size_t bytes;           /* dtype size x product(shape) */
    size_t offset;          /* within a record */
    double scale;           /* multiply when converting to float; 0 = none */
    int num_classes;        /* for label fields; 0 = not a label */
};

struct shard_schema {
    int nfields;
    struct shard_field f[SHARD_MAX_FIELDS];
    size_t record_bytes;    /* sum of field bytes */
};

/* Add a field; computes bytes and offset. */
sr_status schema_add(struct shard_schema *s, const char *name,
                     enum sr_dtype t, int ndim, const uint32_t *shape)
    SR_MUST_USE;
/* Index of a field by name, or -1. */
int schema_find(const struct shard_schema *s, const char *name);
int schema_equal(const struct shard_schema *a, const struct shard_schema *b);
/* JSON text of the schema (the shard's meta block) appended to out. */
sr_status schema_to_json(const struct shard_schema *s, struct sr_buf *out)
    SR_MUST_USE;
sr_status schema_from_json(struct shard_schema *s, const char *text,
                           size_t len, const char *what) SR_MUST_USE;

/* The fixed header, decoded. */
struct shard_header {
    uint32_t version;
    uint32_t meta_len;
    uint64_t nrec;
    uint64_t index_off;
    uint64_t data_off;
    uint64_t data_len;
    uint32_t meta_index_crc;
};

/* A parsed shard: header, schema and index. */
struct shard_info {
    struct shard_header h;
    struct shard_schema schema;
    const uint8_t *index;   /* nrec x 16 bytes, as stored */
    uint8_t *copy;          /* index's memory, when shard_parse copied it */
    int dense;              /* record i at data_off + i * record_bytes, as
                             * shard_build lays them out: spans need no
                             * index lookup */
    uint32_t *join;         /* dense shards: 4 x 256 entries that append
                             * one record's CRC to a run's, see
                             * shard_run_ok */
};

/* Build a whole shard image from n fixed-size records (n x
 * schema->record_bytes bytes). Appends to out. */
sr_status shard_build(struct sr_buf *out, const struct shard_schema *schema,
                      const uint8_t *records, uint64_t n) SR_MUST_USE;

/* Decode and check the 64-byte header. `what` names the object in errors;
 * `object_size` (0 = unknown) is checked against the header. */
sr_status shard_parse_header(struct shard_header *out, const uint8_t *p,
                             uint64_t object_size, const char *what)
    SR_MUST_USE;
/* Bytes from 0 to the start of the records: what a reader fetches first. */
static inline uint64_t shard_prefix_bytes(const struct shard_header *h)
{
    return h->data_off;
}
/* Parse the schema and index from the first shard_prefix_bytes() bytes of
 * the object (header included); checks their CRC and every index entry. */
sr_status shard_parse(struct shard_info *out, const uint8_t *prefix,
                      uint64_t prefix_len, uint64_t object_size,
                      const char *what) SR_MUST_USE;
/* The same, without copying the index: out->index points into `prefix`,
 * which must outlive out. */
sr_status shard_parse_in_place(struct shard_info *out, const uint8_t *prefix,
                               uint64_t prefix_len, uint64_t object_size,
                               const char *what) SR_MUST_USE;
void shard_info_free(struct shard_info *si);

/* Offset (from the object start) and length of record i. */
void shard_record_span(const struct shard_info *si, uint64_t i,
                       uint64_t *off, uint32_t *len);
/* The offset alone, with no call for a dense shard (once per record
 * served). */
static inline uint64_t shard_record_off(const struct shard_info *si,
                                        uint64_t i)
{
    if (si->dense)
        return si->h.data_off + i * si->schema.record_bytes;
    uint64_t off;
    uint32_t len;
    shard_record_span(si, i, &off, &len);
    return off;
}
/* Check record i's bytes against its stored CRC; a mismatch names what,
 * the record and its byte offset. */
sr_status shard_check_record(const struct shard_info *si, uint64_t i,
                             const uint8_t *rec, const char *what)
    SR_MUST_USE;
/* CRC-32 (zlib's) of n more bytes at p after those that gave crc (0 to
 * start): a run of records can be checked in one pass as it lands. */
uint32_t shard_crc(uint32_t crc, const void *p, size_t n);
/* Is crc, the CRC-32 of the bytes of records [first, end) of a dense
 * shard back to back, what their stored CRCs give? One table lookup per
 * record instead of a CRC call each. A corrupt record fails it as surely
 * as its own check; a mismatch does not say which record
 * (shard_check_records then looks one by one). 0 for a shard that is not
 * dense. */
int shard_run_ok(const struct shard_info *si, uint64_t first, uint64_t end,
                 uint32_t crc);
/* Check records [first, end) held in bytes, which start at object offset
 * bytes_off: a dense shard's by one CRC over the run (shard_run_ok), and
 * record by record when that fails or the shard is not dense, stopping
 * at the first mismatch, which the error names. */
sr_status shard_check_records(const struct shard_info *si, uint64_t first,
                              uint64_t end, const uint8_t *bytes,
                              uint64_t bytes_off, const char *what)
    SR_MUST_USE;

#endif
