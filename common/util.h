/*
 * util.h: small helpers shared by every folder: a monotonic clock, strict
 * number parsing (the whole string must be a number in range), size parsing
 * with binary suffixes, and bounded string copies.
 */
#ifndef SPOTRUN_UTIL_H
#define SPOTRUN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Seconds on a monotonic clock. */
double now_s(void);
/* Seconds since the Unix epoch (wall clock). */
double wall_s(void);
/* Seconds since this process started (exec included; 10 ms resolution);
 * -1 when /proc cannot tell. */
double process_age_s(void);

/* Parse a whole string; 0 on success, -1 when s is not a number or is out
 * of range. */
int parse_i64(int64_t *out, const char *s);
int parse_u64(uint64_t *out, const char *s);
int parse_f64(double *out, const char *s);
/* "64MiB", "8M", "1.5GiB", "1000" (bytes); K/M/G/T are binary. */
int parse_size(uint64_t *out, const char *s);

/* Copy with truncation check; returns -1 when src does not fit. */
int str_copy(char *dst, size_t cap, const char *src);
/* Cut leading and trailing white space: the start of what is left, with a
 * NUL written after its end. */
char *str_trim(char *s);
/* Does s end with suffix? */
int str_ends_with(const char *s, const char *suffix);

/* Memory for a buffer of MiBs, freed with free(): page aligned, its pages
 * faulted in at once (MADV_POPULATE_WRITE: one call instead of a fault
 * per 4 KiB on first touch), and not marked for transparent huge pages.
 * On a VM that hands freed memory back to its host in 2 MiB blocks
 * (virtio-balloon free page reporting), a huge page is such a block, and
 * its first touch faults on the host for every 4 KiB of it: a first touch
 * of 256 MiB took 0.45-0.84 s in huge pages against 0.16-0.30 s in 4 KiB
 * ones. NULL when out of memory. */
void *big_alloc(size_t n);

/* memcpy for a destination that will not be read again soon (a download
 * landing in a buffer of MiBs): on x86-64 the stores bypass the cache,
 * so they neither read the destination's lines first nor evict what the
 * caller works on. Elsewhere plain memcpy. */
void copy_uncached(void *dst, const void *src, size_t n);

/* Format a byte count as "12.3 MiB" into buf. */
const char *fmt_bytes(char *buf, size_t cap, uint64_t n);

#endif
