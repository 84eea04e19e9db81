/*
 * ckpt.h: checkpoints: their HDF5 format, the commit protocol and
 * discovery (docs/formats.md has the layout).
 *
 * Under a checkpoint URI each checkpoint has its own prefix,
 * step-NNNNNNNNNN/ (zero-padded), holding state.h5 and MANIFEST.json. The
 * data object is written first; the manifest (step, size and SHA-256 of
 * each object) is written last with create-if-absent and is the commit
 * point: a checkpoint exists only once its manifest does. Resume takes the
 * newest checkpoint whose manifest parses and whose objects match it.
 *
 * This module does no threading; checkpoint/writer.c runs it in the
 * background.
 */
#ifndef SPOTRUN_CKPT_H
#define SPOTRUN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../common/status.h"
#include "../data/storage.h"
#include "../trainer/mlp.h"
#include "../trainer/optim.h"

/* 2 records the shuffle block; 1 (without it) is still read */
#define CKPT_FORMAT_VERSION 2
#define CKPT_MANIFEST_VERSION 1
#define CKPT_STATE_OBJECT "state.h5"
#define CKPT_MANIFEST "MANIFEST.json"

/* Everything about a checkpoint except the tensors. */
struct ckpt_meta {
    int64_t step;           /* optimizer steps completed */
    int64_t epoch;          /* epoch in progress, 0-based */
    int64_t position;       /* records of that epoch consumed, all ranks */
    int64_t world_size;
    int64_t global_batch;
    uint64_t seed;
    uint64_t shuffle_block;     /* records; part of the data order; 0 =
                                   not recorded (format 1) */
    enum optim_kind optim;
    struct mlp shape;
    uint64_t dataset_records;
    char dataset_id[65];    /* SHA-256 of the shard list (names, counts) */
    /* the epoch's running sums, so a resumed epoch reports the same line */
    double epoch_loss_sum;
    int64_t epoch_steps;
    double epoch_wait_s;
    double created;         /* Unix seconds */
};

/* Build the HDF5 image: params/<tensor>, optimizer/<moment>/<tensor>,
 * cursor and metadata attributes, the configuration as JSON. */
sr_status ckpt_build_image(struct sr_buf *out, const struct ckpt_meta *meta,
                           const char *config_json, const float *params,
                           const float *opt_state) SR_MUST_USE;

/* The same image built in `arena` (see h5img_create_in): on success it is
 * arena->data[0..*len). */
sr_status ckpt_image_in(struct sr_buf *arena, size_t *len,
                        const struct ckpt_meta *meta, const char *config_json,
                        const float *params, const float *opt_state)
    SR_MUST_USE;

/* Read the metadata of an image (no tensors). */
sr_status ckpt_read_meta(struct ckpt_meta *out, const void *img, size_t len,
                         const char *what) SR_MUST_USE;
/* Read the tensors into buffers sized for meta->shape and meta->optim. */
sr_status ckpt_read_tensors(const void *img, size_t len, const char *what,
                            const struct ckpt_meta *meta, float *params,
                            float *opt_state) SR_MUST_USE;

/* Write image + manifest under root/step-N/. An already committed step is
 * left alone (SR_ERR_EXISTS). */
sr_status ckpt_commit(struct storage *st, const char *root,
                      const struct ckpt_meta *meta, const void *img,
                      size_t len) SR_MUST_USE;

struct ckpt_entry {
    int64_t step;
    int committed;          /* manifest present */
    uint64_t bytes;         /* all objects of the step */
    double mtime;           /* newest object, Unix seconds */
};

/* The checkpoints under root, newest step first. */
sr_status ckpt_list(struct storage *st, const char *root,
                    struct ckpt_entry **out, size_t *n) SR_MUST_USE;

/* Read step's manifest and state object and check sizes and SHA-256.
 * SR_ERR_FORMAT / SR_ERR_NOT_FOUND explain why a checkpoint is unusable. */
sr_status ckpt_load(struct storage *st, const char *root, int64_t step,
                    struct sr_buf *img) SR_MUST_USE;

/* Keep the newest `keep` committed checkpoints; delete older ones
 * (manifest first, so a half-deleted one is never taken as committed) and
 * uncommitted leftovers older than the newest committed one. */
sr_status ckpt_prune(struct storage *st, const char *root, int keep)
    SR_MUST_USE;

/* URI of step's prefix or one of its objects (object may be NULL). */
sr_status ckpt_uri(char *out, size_t cap, const char *root, int64_t step,
                   const char *object) SR_MUST_USE;

#endif
