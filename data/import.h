/*
 * import.h: turning source files into spotrun datasets. IDX (MNIST-style)
 * files, CSV (numeric columns, one label column) and .npy arrays become
 * shards of a chosen size under an output URI, with index.json written last.
 */
#ifndef SPOTRUN_IMPORT_H
#define SPOTRUN_IMPORT_H

#include <stdint.h>

#include "storage.h"

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Fashion-MNIST from the Debian package dataset-fashion-mnist (or the same
 * four IDX files in source_dir): out/train/ (60000) and out/test/ (10000).
 * Pixels stay uint8 with scale 1/255 recorded in the schema. */
sr_status import_fashion_mnist(struct storage *st, const char *out,
                               const char *source_dir, uint64_t shard_bytes)
    SR_MUST_USE;

/* One dataset from an IDX inputs file (N x ...) and an IDX labels file
 * (N). classes = 0 takes max(label) + 1. scale 0 = none. */
sr_status import_idx(struct storage *st, const char *out, const char *xpath,
                     const char *ypath, int classes, double scale,
                     uint64_t shard_bytes, uint64_t *nrec) SR_MUST_USE;

#endif
