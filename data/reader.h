/*
 * reader.h: records streamed from a dataset in the order a consumer will
 * ask for them, through ranged reads of the storage layer, within a fixed
 * memory window.
 *
 * The consumer describes its sequence up front: a function giving the
 * record id of its i-th request, and how many there will be. A planner
 * thread walks that sequence ahead of the consumer and groups the records
 * into chunks: runs of neighbouring records of one shard, about
 * chunk_bytes long (8 MiB by default), each fetched with one ranged read
 * by a pool of fetch threads. Chunks stay resident while a planned record
 * still needs them; the bytes of resident and in-flight chunks never
 * exceed window_bytes (256 MiB by default), except that the chunks of the
 * batch the consumer is waiting for are always admitted. A record is
 * served as soon as its chunk has landed and been checked (every record's
 * CRC, by the fetch thread), never after a whole shard. Shard headers and
 * indexes (16 bytes per record) are kept only for shards with resident
 * chunks.
 *
 * With a cache directory, fetched chunks are also kept on local disk (up to
 * cache_limit bytes, oldest first out) and read from there on later
 * passes.
 */
#ifndef SPOTRUN_READER_H
#define SPOTRUN_READER_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

#define READER_DEFAULT_WINDOW (256ull << 20)
#define READER_DEFAULT_CHUNK (8ull << 20)

struct reader_opts {
    uint64_t window_bytes;      /* resident + in-flight chunk bytes */
    uint64_t chunk_bytes;       /* target size of one ranged read */
    int fetchers;               /* concurrent ranged reads */
    int attempts;               /* tries per chunk before giving up */
    double retry_delay_s;       /* first pause between tries (doubles) */
    const char *cache_dir;      /* NULL or "" = no local cache */
    uint64_t cache_limit;       /* bytes of cached chunks kept */
};

void reader_default_opts(struct reader_opts *o);

/* The consumer's i-th request is record seq(arg, i). Called by the
 * planner thread only, with strictly increasing i. */
typedef uint64_t (*reader_seq_fn)(void *arg, uint64_t i);

struct reader_stats {
    uint64_t bytes_fetched;     /* from storage */
    uint64_t requests;          /* ranged reads to storage */
    uint64_t cache_hits;        /* chunks read from the local cache */
    uint64_t cache_bytes;
    uint64_t retries;
    uint64_t records;           /* handed out */
    double wait_s;              /* consumer time blocked on data */
    uint64_t peak_bytes;        /* highest resident + in-flight */
    uint64_t indexes;           /* shard headers and indexes read */
    uint64_t indexes_ahead;     /* of those, read before the plan needed
                                   them */
};

struct reader;

/* Open a reader over ds (which must outlive it) for a sequence of `count`
 * requests. Threads start at once and begin fetching. */
sr_status reader_open(struct reader **out, struct storage *st,
                      const struct dataset *ds,
                      const struct reader_opts *opts, reader_seq_fn seq,
                      void *arg, uint64_t count) SR_MUST_USE;

/* The next n records of the sequence: recs[k] points at record ids[k]'s
 * bytes, valid until the next call. Blocks until they have landed; the
 * time blocked is added to the stats. A record or chunk that cannot be
 * read or does not verify fails with an error naming the object, the byte
 * offset and what failed. */
sr_status reader_next(struct reader *r, size_t n, const uint8_t **recs,
                      uint64_t *ids) SR_MUST_USE;

void reader_get_stats(struct reader *r, struct reader_stats *out);
void reader_close(struct reader *r);

#endif
