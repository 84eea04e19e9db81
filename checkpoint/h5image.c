/*
 * h5image.c: in-memory HDF5 through H5Pset_fapl_core with no backing store.
 * HDF5's own error stack printing is turned off; failures come back as
 * SR_ERR_HDF5 with the operation that failed.
 */
#include "h5image.h"

#include <hdf5.h>
#include <hdf5_hl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct h5img {
    hid_t file;
    char what[256];     /* names the image in read errors */
    struct sr_buf *arena;   /* holds the file's bytes (h5img_create_in) */
};

static void quiet_hdf5(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* The core driver's memory hooks for h5img_create_in: the file lives in
 * the arena, which only grows, and closing the file leaves it there. */
static void *arena_realloc(void *ptr, size_t size, H5FD_file_image_op_t op,
                           void *udata)
{
    (void)op;
    struct sr_buf *a = udata;
    if (ptr && ptr != a->data)
        return NULL;
    a->len = 0;
    if (size > a->cap && buf_reserve(a, size) != SR_OK)
        return NULL;
    a->len = size;
    return a->data;
}

static void *arena_malloc(size_t size, H5FD_file_image_op_t op, void *udata)
{
    return arena_realloc(NULL, size, op, udata);
}

static void *arena_memcpy(void *dst, const void *src, size_t n,
                          H5FD_file_image_op_t op, void *udata)
{
    (void)op;
    (void)udata;
    return memcpy(dst, src, n);
}

static herr_t arena_free(void *ptr, H5FD_file_image_op_t op, void *udata)
{
    (void)ptr;
    (void)op;
    (void)udata;
    return 0;
}

static void *arena_udata_copy(void *udata)
{
    return udata;
}

static herr_t arena_udata_free(void *udata)
{
    (void)udata;
    return 0;
}

static sr_status create(struct h5img **out, struct sr_buf *arena)
{
    quiet_hdf5();
    struct h5img *h = calloc(1, sizeof *h);
    if (!h)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    h->arena = arena;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5FD_file_image_callbacks_t cb = {
        arena_malloc, arena_memcpy, arena_realloc, arena_free,
        arena_udata_copy, arena_udata_free, arena,
    };
    if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 20, 0) < 0 ||
        (arena && H5Pset_file_image_callbacks(fapl, &cb) < 0)) {
        if (fapl >= 0)
            H5Pclose(fapl);
        free(h);
        return SR_FAIL(SR_ERR_HDF5, "HDF5: cannot set up the in-memory "
                       "driver");
    }
    /* the name is never touched: no backing store */
    h->file = H5Fcreate("spotrun-image.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (h->file < 0) {
        free(h);
        return SR_FAIL(SR_ERR_HDF5, "HDF5: cannot create an in-memory file");
    }
    *out = h;
    return SR_OK;
}

sr_status h5img_create(struct h5img **out)
{
    return create(out, NULL);
}

sr_status h5img_create_in(struct h5img **out, struct sr_buf *arena)
{
    arena->len = 0;
    return create(out, arena);
}

static hid_t link_props(void)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl >= 0)
        H5Pset_create_intermediate_group(lcpl, 1);
    return lcpl;
}

static sr_status write_dataset(struct h5img *h, const char *name, hid_t type,
                               const void *v, int ndim, const hsize_t *dims)
{
    sr_status s = SR_OK;
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    hid_t lcpl = link_props();
    hid_t ds = -1;
    if (space < 0 || lcpl < 0) {
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: cannot describe dataset %s", name);
        goto out;
    }
    ds = H5Dcreate2(h->file, name, type, space, lcpl, H5P_DEFAULT,
                    H5P_DEFAULT);
    if (ds < 0) {
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: cannot create dataset %s", name);
        goto out;
    }
    if (H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: cannot write dataset %s", name);
out:
    if (ds >= 0)
        H5Dclose(ds);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (space >= 0)
        H5Sclose(space);
    return s;
}

sr_status h5img_write_f32(struct h5img *h, const char *name, const float *v,
                          int ndim, const size_t *dims)
{
    hsize_t d[8];
    if (ndim < 1 || ndim > 8)
        return SR_FAIL(SR_ERR_INTERNAL, "dataset %s: %d dimensions", name,
                       ndim);
    for (int i = 0; i < ndim; i++)
        d[i] = dims[i];
    return write_dataset(h, name, H5T_IEEE_F32LE, v, ndim, d);
}

sr_status h5img_write_u64(struct h5img *h, const char *name,
                          const uint64_t *v, size_t n)
{
    hsize_t d = n;
    return write_dataset(h, name, H5T_STD_U64LE, v, 1, &d);
}

static sr_status write_attr(struct h5img *h, const char *obj,
                            const char *name, hid_t type, hid_t space,
                            const void *v)
{
    sr_status s = SR_OK;
    hid_t a = -1;
    if (space < 0)
        return SR_FAIL(SR_ERR_HDF5, "HDF5: cannot describe attribute %s",
                       name);
    a = H5Acreate_by_name(h->file, obj, name, type, space, H5P_DEFAULT,
                          H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, type, v) < 0)
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: cannot write attribute %s on %s",
                    name, obj);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    return s;
}

sr_status h5img_attr_str(struct h5img *h, const char *obj, const char *name,
                         const char *value)
{
    /* variable-length UTF-8: h5py reads it back as str */
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0)
        return SR_FAIL(SR_ERR_HDF5, "HDF5: cannot make a string type");
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    sr_status s = write_attr(h, obj, name, type, H5Screate(H5S_SCALAR),
                             &value);
    H5Tclose(type);
    return s;
}

sr_status h5img_attr_i64(struct h5img *h, const char *obj, const char *name,
                         const int64_t *v, size_t n)
{
    hsize_t d = n;
    hid_t space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d,
                                                                    NULL);
    return write_attr(h, obj, name, H5T_STD_I64LE, space, v);
}

sr_status h5img_attr_f64(struct h5img *h, const char *obj, const char *name,
                         double v)
{
    return write_attr(h, obj, name, H5T_IEEE_F64LE, H5Screate(H5S_SCALAR),
                      &v);
}

sr_status h5img_finish_in(struct h5img *h, size_t *len)
{
    sr_status s = SR_OK;
    ssize_t size = -1;
    if (!h->arena)
        s = SR_FAIL(SR_ERR_INTERNAL, "h5img_finish_in needs h5img_create_in");
    else if (H5Fflush(h->file, H5F_SCOPE_GLOBAL) < 0)
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: flushing the in-memory file failed");
    else
        size = H5Fget_file_image(h->file, NULL, 0);
    /* closing marks the file closed in its superblock; the driver's
     * memory (the arena) then holds the file, its first EOA bytes */
    hid_t f = h->file;
    h->file = -1;
    if (H5Fclose(f) < 0 && s == SR_OK)
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: closing the in-memory file failed");
    if (s == SR_OK && (size <= 0 || (size_t)size > h->arena->cap))
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: cannot size the file image");
    if (s == SR_OK) {
        h->arena->len = (size_t)size;
        *len = (size_t)size;
    }
    h5img_free(h);
    return s;
}

sr_status h5img_finish(struct h5img *h, struct sr_buf *out)
{
    sr_status s = SR_OK;
    if (H5Fflush(h->file, H5F_SCOPE_GLOBAL) < 0) {
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: flushing the in-memory file failed");
        goto out;
    }
    ssize_t size = H5Fget_file_image(h->file, NULL, 0);
    if (size <= 0) {
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: cannot size the file image");
        goto out;
    }
    s = buf_reserve(out, (size_t)size);
    if (s != SR_OK)
        goto out;
    if (H5Fget_file_image(h->file, out->data + out->len, (size_t)size) !=
        size) {
        s = SR_FAIL(SR_ERR_HDF5, "HDF5: cannot copy the file image");
        goto out;
    }
    out->len += (size_t)size;
out:
    h5img_free(h);
    return s;
}

sr_status h5img_open(struct h5img **out, const void *buf, size_t len,
                     const char *what)
{
    quiet_hdf5();
    struct h5img *h = calloc(1, sizeof *h);
    if (!h)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    snprintf(h->what, sizeof h->what, "%s", what);
    /* read-only, no copy: the caller's buffer backs the file */
    h->file = H5LTopen_file_image((void *)buf, len,
                                  H5LT_FILE_IMAGE_DONT_COPY |
                                  H5LT_FILE_IMAGE_DONT_RELEASE);
    if (h->file < 0) {
        free(h);
        return SR_FAIL(SR_ERR_FORMAT, "%s: not a readable HDF5 file", what);
    }
    *out = h;
    return SR_OK;
}

static sr_status read_dataset(struct h5img *h, const char *name, hid_t type,
                              void *out, size_t count)
{
    sr_status s = SR_OK;
    hid_t ds = H5Dopen2(h->file, name, H5P_DEFAULT);
    if (ds < 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: dataset %s is missing", h->what,
                       name);
    hid_t space = H5Dget_space(ds);
    hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (n < 0 || (size_t)n != count)
        s = SR_FAIL(SR_ERR_FORMAT, "%s: dataset %s holds %lld values, "
                    "expected %zu", h->what, name, (long long)n, count);
    else if (H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        s = SR_FAIL(SR_ERR_FORMAT, "%s: dataset %s cannot be read", h->what,
                    name);
    if (space >= 0)
        H5Sclose(space);
    H5Dclose(ds);
    return s;
}

sr_status h5img_read_f32(struct h5img *h, const char *name, float *out,
                         size_t count)
{
    return read_dataset(h, name, H5T_NATIVE_FLOAT, out, count);
}

sr_status h5img_read_u64(struct h5img *h, const char *name, uint64_t *out,
                         size_t count)
{
    return read_dataset(h, name, H5T_NATIVE_UINT64, out, count);
}

static hid_t open_attr(struct h5img *h, const char *obj, const char *name)
{
    if (H5Aexists_by_name(h->file, obj, name, H5P_DEFAULT) <= 0)
        return -1;
    return H5Aopen_by_name(h->file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
}

sr_status h5img_get_attr_str(struct h5img *h, const char *obj,
                             const char *name, char **out)
{
    *out = NULL;
    hid_t a = open_attr(h, obj, name);
    if (a < 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: attribute %s is missing", h->what,
                       name);
    sr_status s = SR_OK;
    hid_t type = H5Aget_type(a);
    char *v = NULL;
    if (type < 0 || H5Tget_class(type) != H5T_STRING ||
        !H5Tis_variable_str(type) || H5Aread(a, type, &v) < 0 || !v) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s: attribute %s is not a string",
                    h->what, name);
    } else {
        *out = strdup(v);
        if (!*out)
            s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        H5free_memory(v);
    }
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(a);
    return s;
}

static sr_status read_attr(struct h5img *h, const char *obj, const char *name,
                           hid_t mem_type, void *out, size_t n)
{
    hid_t a = open_attr(h, obj, name);
    if (a < 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: attribute %s is missing", h->what,
                       name);
    sr_status s = SR_OK;
    hid_t space = H5Aget_space(a);
    hssize_t pts = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (pts < 0 || (size_t)pts != n || H5Aread(a, mem_type, out) < 0)
        s = SR_FAIL(SR_ERR_FORMAT, "%s: attribute %s: expected %zu "
                    "value(s)", h->what, name, n);
    if (space >= 0)
        H5Sclose(space);
    H5Aclose(a);
    return s;
}

sr_status h5img_attr_len(struct h5img *h, const char *obj, const char *name,
                         size_t *n)
{
    hid_t a = open_attr(h, obj, name);
    if (a < 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: attribute %s is missing", h->what,
                       name);
    hid_t space = H5Aget_space(a);
    hssize_t pts = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (space >= 0)
        H5Sclose(space);
    H5Aclose(a);
    if (pts < 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: attribute %s is unreadable",
                       h->what, name);
    *n = (size_t)pts;
    return SR_OK;
}

sr_status h5img_get_attr_i64(struct h5img *h, const char *obj,
                             const char *name, int64_t *out, size_t n)
{
    return read_attr(h, obj, name, H5T_NATIVE_INT64, out, n);
}

sr_status h5img_get_attr_f64(struct h5img *h, const char *obj,
                             const char *name, double *out)
{
    return read_attr(h, obj, name, H5T_NATIVE_DOUBLE, out, 1);
}

void h5img_free(struct h5img *h)
{
    if (!h)
        return;
    if (h->file >= 0)
        H5Fclose(h->file);
    free(h);
}
