/*
 * h5image.h: HDF5 files built and read entirely in memory (the core
 * driver), so a model or checkpoint is one buffer that the storage layer
 * can upload as one object and that h5py or h5dump open as a normal file.
 *
 * Writing: h5img_create, any number of datasets and attributes, then
 * h5img_finish, which hands back the file image (or h5img_create_in and
 * h5img_finish_in, which build it in place). Reading: h5img_open on a
 * buffer (not copied; it must outlive the handle), then typed reads.
 */
#ifndef SPOTRUN_H5IMAGE_H
#define SPOTRUN_H5IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../common/status.h"

struct h5img;

sr_status h5img_create(struct h5img **out) SR_MUST_USE;
/* Build the file in `arena` instead: its bytes live there, in memory the
 * caller keeps and reuses for the next file (a large image then costs no
 * fresh pages and no copy). h5img_finish_in closes it and gives its
 * length: the file is arena->data[0..len); frees h. */
sr_status h5img_create_in(struct h5img **out, struct sr_buf *arena)
    SR_MUST_USE;
sr_status h5img_finish_in(struct h5img *h, size_t *len) SR_MUST_USE;
/* A float32 dataset; name may contain '/' for groups (created as needed). */
sr_status h5img_write_f32(struct h5img *h, const char *name, const float *v,
                          int ndim, const size_t *dims) SR_MUST_USE;
sr_status h5img_write_u64(struct h5img *h, const char *name,
                          const uint64_t *v, size_t n) SR_MUST_USE;
/* Attributes on the object `obj` ("/" for the file root). */
sr_status h5img_attr_str(struct h5img *h, const char *obj, const char *name,
                         const char *value) SR_MUST_USE;
sr_status h5img_attr_i64(struct h5img *h, const char *obj, const char *name,
                         const int64_t *v, size_t n) SR_MUST_USE;
sr_status h5img_attr_f64(struct h5img *h, const char *obj, const char *name,
                         double v) SR_MUST_USE;
/* Open an image for reading. buf must stay valid until h5img_free. */
sr_status h5img_open(struct h5img **out, const void *buf, size_t len,
                     const char *what) SR_MUST_USE;
/* Read a float32 dataset whose element count must be `count`. */
sr_status h5img_read_f32(struct h5img *h, const char *name, float *out,
                         size_t count) SR_MUST_USE;
sr_status h5img_read_u64(struct h5img *h, const char *name, uint64_t *out,
                         size_t count) SR_MUST_USE;
/* Attributes; a string comes back malloc'd (caller frees). */
sr_status h5img_get_attr_str(struct h5img *h, const char *obj,
                             const char *name, char **out) SR_MUST_USE;
/* Number of values an attribute holds. */
sr_status h5img_attr_len(struct h5img *h, const char *obj, const char *name,
                         size_t *n) SR_MUST_USE;
sr_status h5img_get_attr_i64(struct h5img *h, const char *obj,
                             const char *name, int64_t *out, size_t n)
    SR_MUST_USE;
sr_status h5img_get_attr_f64(struct h5img *h, const char *obj,
                             const char *name, double *out) SR_MUST_USE;

/* Close the file and append its image to out; frees h. */
sr_status h5img_finish(struct h5img *h, struct sr_buf *out) SR_MUST_USE;
void h5img_free(struct h5img *h);

#endif
