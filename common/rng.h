/*
 * rng.h: the project's random number generator, xoshiro256** seeded through
 * splitmix64. It is small, fast and fully specified, so a sequence depends
 * only on (seed, stream) and its whole state fits in a checkpoint.
 *
 * Streams: rng_seed(&r, seed, a, b) derives an independent generator for the
 * pair (a, b), e.g. (RNG_STREAM_SHUFFLE, epoch). The same inputs give the same
 * numbers on every rank and every run.
 */
#ifndef SPOTRUN_RNG_H
#define SPOTRUN_RNG_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

enum rng_stream {
    RNG_STREAM_INIT = 1,      /* parameter initialisation */
    RNG_STREAM_SHARDS = 2,    /* shard order per epoch */
    RNG_STREAM_BLOCK = 3,     /* record order within a shuffle block */
};

void rng_seed(struct rng *r, uint64_t seed, uint64_t a, uint64_t b);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, n) without modulo bias (Lemire's method). n > 0. */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Uniform float in [0, 1) with 24 random bits. */
float rng_uniform(struct rng *r);
/* Fisher-Yates shuffle of v[0..n). */
void rng_shuffle_u32(struct rng *r, uint32_t *v, uint64_t n);

#endif
