/*
 * idx.h: reader for the IDX format of MNIST-style datasets (big-endian
 * magic 0x0000TTNN: type TT, NN dimensions; then NN big-endian u32 sizes;
 * then the values, big-endian). Gzip-compressed files are read directly.
 * Values are converted to host (little-endian) order.
 */
#ifndef SPOTRUN_IDX_H
#define SPOTRUN_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "shard.h"

struct idx_array {
    enum sr_dtype dtype;
    int ndim;
    uint32_t dims[SHARD_MAX_DIMS];
    uint8_t *data;
    size_t bytes;
};

sr_status idx_load(struct idx_array *out, const char *path) SR_MUST_USE;
void idx_free(struct idx_array *a);

#endif
