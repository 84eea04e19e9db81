/*
 * batch.h: turning records into model input. A dataset's schema names an
 * input field "x" (any numeric dtype, any shape; flattened, converted to
 * float and multiplied by the field's scale) and a label field "y" (an
 * integer dtype with num_classes). batch_fill() writes n rows of floats
 * and n int32 labels, checking every label is in range.
 */
#ifndef SPOTRUN_BATCH_H
#define SPOTRUN_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"
#include "../data/shard.h"

struct batch_spec {
    size_t in;              /* floats per row */
    int classes;
    float scale;
    enum sr_dtype xt, yt;
    size_t xoff, yoff;      /* field offsets within a record */
};

/* Check a schema can feed a classifier; `what` names the dataset. */
sr_status batch_spec_init(struct batch_spec *b, const struct shard_schema *s,
                          const char *what) SR_MUST_USE;
/* recs[i] points at record i's bytes; ids[i] is its global id (for
 * errors). */
sr_status batch_fill(const struct batch_spec *b, const uint8_t *const *recs,
                     const uint64_t *ids, int n, float *x, int32_t *y,
                     const char *what) SR_MUST_USE;

#endif
