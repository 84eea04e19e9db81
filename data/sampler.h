/*
 * sampler.h: the global record order of an epoch. It is a function of
 * (seed, epoch, shard record counts, block size) only, so every world size
 * sees the same sequence; rank r of W takes positions [r*B/W, (r+1)*B/W) of
 * each global batch of B.
 *
 * Order: the shards are shuffled, laid end to end, cut into blocks of
 * `block` records, and the records within each block are shuffled. With a
 * block at least the dataset size this is a full random permutation; with a
 * smaller block reads stay within a window of neighbouring records (a block
 * shuffle). Each record appears exactly once per epoch.
 *
 * The resume cursor is (epoch, position): nothing else is needed.
 */
#ifndef SPOTRUN_SAMPLER_H
#define SPOTRUN_SAMPLER_H

#include <stdint.h>

#include "../common/status.h"

/* The default shuffle block: as many records as fill 64 MiB, a quarter of
 * the default 256 MiB read-ahead window. A block's records come in random
 * order, so all its chunks must land before its first batch is served,
 * and they are freed only once it has been served: the window must hold
 * the block being served and more than the next one, or the fetchers run
 * out of planned chunks at every block edge. A 128 MiB block spanned 17
 * chunks of 8 MiB (the part chunks at its chunk and shard edges), so two
 * did not fit: the planner could queue 32 chunks, not 34, and fewer reads
 * were in flight after every edge. */
#define SAMPLER_AUTO_BLOCK_BYTES (64ull << 20)

static inline uint64_t sampler_auto_block(uint64_t record_bytes)
{
    uint64_t b = SAMPLER_AUTO_BLOCK_BYTES / (record_bytes ? record_bytes : 1);
    return b > 0 ? b : 1;
}

/* The block the order of nrec records is cut into: a block of at least
 * nrec records is one permutation of the whole epoch, whatever its size,
 * so two blocks give the same order exactly when these are equal. */
static inline uint64_t sampler_effective_block(uint64_t block, uint64_t nrec)
{
    return block < nrec ? block : (nrec ? nrec : 1);
}

struct sampler {
    uint64_t seed;
    int shuffle;
    uint64_t block;
    uint32_t nshards;
    uint64_t nrec;
    uint64_t *shard_nrec;
    uint64_t *shard_first;
    /* per epoch */
    uint64_t epoch;
    uint32_t *order;        /* shard visiting order */
    uint64_t *vstart;       /* position where order[k] starts, nshards + 1 */
    /* one cached block permutation */
    uint64_t cached;        /* block number, UINT64_MAX when none */
    uint32_t *perm;
};

/* shuffle = 0 gives the identity order (validation). */
sr_status sampler_init(struct sampler *s, const uint64_t *shard_nrec,
                       uint32_t nshards, uint64_t seed, uint64_t block,
                       int shuffle) SR_MUST_USE;
void sampler_free(struct sampler *s);
void sampler_set_epoch(struct sampler *s, uint64_t epoch);
/* Global record id at position pos (0 <= pos < nrec) of the current epoch. */
uint64_t sampler_at(struct sampler *s, uint64_t pos);

/* First epoch position of rank's slice of global batch `step`: global
 * batch B is cut into `world` equal slices in rank order. */
static inline uint64_t sampler_slice_start(uint64_t step, uint64_t batch,
                                           int rank, int world)
{
    return step * batch + (uint64_t)rank * (batch / (uint64_t)world);
}

#endif
