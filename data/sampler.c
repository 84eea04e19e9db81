/*
 * sampler.c: the seeded block shuffle. A block's permutation is built when
 * first needed and cached, so memory is one block of u32 however large the
 * dataset.
 */
#include "sampler.h"

#include <stdlib.h>
#include <string.h>

#include "../common/rng.h"

sr_status sampler_init(struct sampler *s, const uint64_t *shard_nrec,
                       uint32_t nshards, uint64_t seed, uint64_t block,
                       int shuffle)
{
    memset(s, 0, sizeof *s);
    if (nshards == 0)
        return SR_FAIL(SR_ERR_USAGE, "sampler needs at least one shard");
    if (block == 0 || block > UINT32_MAX)
        return SR_FAIL(SR_ERR_USAGE, "shuffle block must be 1..%u records",
                       UINT32_MAX);
    s->seed = seed;
    s->shuffle = shuffle;
    s->nshards = nshards;
    s->shard_nrec = malloc(nshards * sizeof *s->shard_nrec);
    s->shard_first = malloc(nshards * sizeof *s->shard_first);
    s->order = malloc(nshards * sizeof *s->order);
    s->vstart = malloc((nshards + 1) * sizeof *s->vstart);
    if (!s->shard_nrec || !s->shard_first || !s->order || !s->vstart) {
        sampler_free(s);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < nshards; i++) {
        s->shard_nrec[i] = shard_nrec[i];
        s->shard_first[i] = s->nrec;
        s->nrec += shard_nrec[i];
    }
    s->block = sampler_effective_block(block, s->nrec);
    s->perm = malloc(s->block * sizeof *s->perm);
    if (!s->perm) {
        sampler_free(s);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory for a shuffle block of "
                       "%llu records", (unsigned long long)s->block);
    }
    sampler_set_epoch(s, 0);
    return SR_OK;
}

void sampler_free(struct sampler *s)
{
    free(s->shard_nrec);
    free(s->shard_first);
    free(s->order);
    free(s->vstart);
    free(s->perm);
    memset(s, 0, sizeof *s);
}

static uint64_t epoch_seed(const struct sampler *s)
{
    return s->seed + s->epoch * 0x9e3779b97f4a7c15ULL;
}

void sampler_set_epoch(struct sampler *s, uint64_t epoch)
{
    s->epoch = epoch;
    for (uint32_t i = 0; i < s->nshards; i++)
        s->order[i] = i;
    if (s->shuffle) {
        struct rng r;
        rng_seed(&r, epoch_seed(s), RNG_STREAM_SHARDS, 0);
        rng_shuffle_u32(&r, s->order, s->nshards);
    }
    uint64_t v = 0;
    for (uint32_t k = 0; k < s->nshards; k++) {
        s->vstart[k] = v;
        v += s->shard_nrec[s->order[k]];
    }
    s->vstart[s->nshards] = v;
    s->cached = UINT64_MAX;
}

static void build_block(struct sampler *s, uint64_t k)
{
    uint64_t start = k * s->block;
    uint64_t len = s->nrec - start < s->block ? s->nrec - start : s->block;
    for (uint64_t i = 0; i < len; i++)
        s->perm[i] = (uint32_t)i;
    struct rng r;
    rng_seed(&r, epoch_seed(s), RNG_STREAM_BLOCK, k);
    rng_shuffle_u32(&r, s->perm, len);
    s->cached = k;
}

uint64_t sampler_at(struct sampler *s, uint64_t pos)
{
    uint64_t v = pos;
    if (s->shuffle) {
        /* (no division while pos stays in the cached block: pos below it
         * wraps to a large offset) */
        uint64_t k = s->cached;
        if (k == UINT64_MAX || pos - k * s->block >= s->block) {
            k = pos / s->block;
            build_block(s, k);
        }
        v = k * s->block + s->perm[pos - k * s->block];
    }
    /* the last shard of the order starting at or before v (a halving with
     * no branch on the data: v is random within its block) */
    uint32_t lo = 0, n = s->nshards;
    while (n > 1) {
        uint32_t half = n / 2;
        lo = s->vstart[lo + half] <= v ? lo + half : lo;
        n -= half;
    }
    return s->shard_first[s->order[lo]] + (v - s->vstart[lo]);
}
