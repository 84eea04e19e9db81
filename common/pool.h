/*
 * pool.h: a fork-join pool of threads for the CPU math. pool_run() runs
 * one function on every worker (the calling thread is worker 0) and
 * returns when all are done. Workers spin briefly before sleeping, so back
 * to back calls (several per training step) do not pay a wake-up each.
 * A pool of 1 runs the function inline and starts no thread.
 */
#ifndef SPOTRUN_POOL_H
#define SPOTRUN_POOL_H

#include <stddef.h>

#include "status.h"

struct pool;

typedef void (*pool_fn)(void *arg, int worker, int nworkers);

sr_status pool_create(struct pool **out, int nthreads) SR_MUST_USE;
void pool_run(struct pool *p, pool_fn fn, void *arg);
int pool_size(const struct pool *p);
void pool_destroy(struct pool *p);

/* Worker w's share [lo, hi) of n items, boundaries rounded to multiples
 * of `align` items (so workers do not share cache lines). */
static inline void pool_range(size_t n, int w, int nw, size_t align,
                              size_t *lo, size_t *hi)
{
    size_t per = (n + (size_t)nw - 1) / (size_t)nw;
    per = (per + align - 1) / align * align;
    *lo = per * (size_t)w < n ? per * (size_t)w : n;
    *hi = *lo + per < n ? *lo + per : n;
}

#endif
