/*
 * dataset.h: a dataset is a set of shards under one prefix plus an
 * index.json that lists them; index.json is written last, so a dataset
 * exists only once its index does. The URI may name the prefix or the index
 * object itself (.../index.json).
 *
 * dataset_open() reads the index only; records are read by the streaming
 * reader (reader.h), whole shards by dataset_verify_shard().
 * dataset_writer cuts records into shards of a target size and writes the
 * index at the end.
 */
#ifndef SPOTRUN_DATASET_H
#define SPOTRUN_DATASET_H

#include <stdint.h>

#include "shard.h"
#include "storage.h"

#define DATASET_INDEX "index.json"
#define DATASET_DEFAULT_SHARD_BYTES (64ull << 20)

struct dataset_shard {
    char name[128];             /* object name relative to the root */
    uint64_t nrec;
    uint64_t bytes;
    uint64_t first;             /* global id of the shard's first record */
};

struct dataset {
    char root[STORAGE_URI_MAX]; /* prefix that shard names are relative to */
    struct shard_schema schema;
    struct dataset_shard *shards;
    uint32_t nshards;
    uint64_t nrec;
};

sr_status dataset_open(struct dataset *ds, struct storage *st,
                       const char *uri) SR_MUST_USE;
void dataset_close(struct dataset *ds);

/* SHA-256 (hex) of the shard list: names and record counts in order. A
 * checkpoint records it to refuse resuming on other data. */
void dataset_digest(const struct dataset *ds, char out[65]);

/* Full URI of shard i. */
sr_status dataset_shard_uri(const struct dataset *ds, uint32_t i, char *out,
                            size_t cap) SR_MUST_USE;
/* Which shard holds global record id gid (binary search). */
uint32_t dataset_find_shard(const struct dataset *ds, uint64_t gid);

/* Does a parsed shard (si, read from uri) hold the record count and schema
 * the index gives shard i? SR_ERR_FORMAT naming uri if not. */
sr_status dataset_check_shard(const struct dataset *ds, uint32_t i,
                              const struct shard_info *si, const char *uri)
    SR_MUST_USE;

/* Verify one shard completely: size and record count against the index,
 * header, schema, index and every record checksum. */
sr_status dataset_verify_shard(const struct dataset *ds, struct storage *st,
                               uint32_t i) SR_MUST_USE;

struct dataset_writer;

sr_status dataset_writer_open(struct dataset_writer **out, struct storage *st,
                              const char *uri,
                              const struct shard_schema *schema,
                              uint64_t shard_bytes) SR_MUST_USE;
sr_status dataset_writer_add(struct dataset_writer *w, const uint8_t *rec,
                             uint64_t n) SR_MUST_USE;
/* Flush the last shard and write index.json; frees the writer. */
sr_status dataset_writer_finish(struct dataset_writer *w, uint64_t *nrec,
                                uint32_t *nshards) SR_MUST_USE;
/* Delete the shards written so far; frees the writer. */
void dataset_writer_abort(struct dataset_writer *w);

#endif
