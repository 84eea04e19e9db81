/*
 * import.c: IDX to shards. Inputs keep their dtype (uint8 images stay
 * uint8, a quarter of the bytes of float32); the conversion to float and
 * the scale happen in the trainer's batch decoding.
 */
#include "import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "dataset.h"
#include "idx.h"

static sr_status labels_range(const struct idx_array *y, const char *path,
                              int64_t *max)
{
    size_t n = y->dims[0];
    size_t es = dtype_size(y->dtype);
    *max = -1;
    if (y->ndim != 1 || y->dtype == DT_FLOAT32 || y->dtype == DT_FLOAT64)
        return SR_FAIL(SR_ERR_FORMAT, "%s: labels must be a 1-D integer IDX "
                       "array", path);
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        const uint8_t *p = y->data + i * es;
        switch (y->dtype) {
        case DT_UINT8: v = p[0]; break;
        case DT_INT8: v = (int8_t)p[0]; break;
        case DT_INT16: { int16_t t; memcpy(&t, p, 2); v = t; break; }
        case DT_INT32: { int32_t t; memcpy(&t, p, 4); v = t; break; }
        default: break;
        }
        if (v < 0)
            return SR_FAIL(SR_ERR_FORMAT, "%s: label %zu is negative", path,
                           i);
        if (v > *max)
            *max = v;
    }
    return SR_OK;
}

sr_status import_idx(struct storage *st, const char *out, const char *xpath,
                     const char *ypath, int classes, double scale,
                     uint64_t shard_bytes, uint64_t *nrec)
{
    struct idx_array x = { 0 }, y = { 0 };
    struct dataset_writer *w = NULL;
    uint8_t *rec = NULL;
    sr_status s = idx_load(&x, xpath);
    if (s == SR_OK)
        s = idx_load(&y, ypath);
    if (s != SR_OK)
        goto out;
    if (x.dims[0] != y.dims[0]) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s holds %u items but %s holds %u labels",
                    xpath, x.dims[0], ypath, y.dims[0]);
        goto out;
    }
    int64_t maxlabel;
    s = labels_range(&y, ypath, &maxlabel);
    if (s != SR_OK)
        goto out;
    if (classes == 0)
        classes = (int)maxlabel + 1;
    if (maxlabel >= classes || classes < 2) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s: labels reach %lld, need 2 <= classes "
                    "(%d) and every label < classes", ypath,
                    (long long)maxlabel, classes);
        goto out;
    }
    struct shard_schema schema = { 0 };
    s = schema_add(&schema, "x", x.dtype, x.ndim - 1, x.dims + 1);
    if (s == SR_OK)
        s = schema_add(&schema, "y", y.dtype, 0, NULL);
    if (s != SR_OK)
        goto out;
    schema.f[0].scale = scale;
    schema.f[1].num_classes = classes;
    s = dataset_writer_open(&w, st, out, &schema, shard_bytes);
    if (s != SR_OK)
        goto out;
    size_t xb = schema.f[0].bytes, yb = schema.f[1].bytes;
    rec = malloc(schema.record_bytes);
    if (!rec) {
        s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < x.dims[0] && s == SR_OK; i++) {
        memcpy(rec, x.data + i * xb, xb);
        memcpy(rec + xb, y.data + i * yb, yb);
        s = dataset_writer_add(w, rec, 1);
    }
    if (s == SR_OK) {
        uint32_t nshards;
        s = dataset_writer_finish(w, nrec, &nshards);
        w = NULL;
        if (s == SR_OK)
            log_info("wrote %s: %llu records in %u shard(s)", out,
                     (unsigned long long)*nrec, nshards);
    }
out:
    if (w)
        dataset_writer_abort(w);
    free(rec);
    idx_free(&x);
    idx_free(&y);
    return s;
}

sr_status import_fashion_mnist(struct storage *st, const char *out,
                               const char *source_dir, uint64_t shard_bytes)
{
    static const struct {
        const char *split, *x, *y;
    } parts[] = {
        { "train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte" },
        { "test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" },
    };
    const char *dir = source_dir && *source_dir ? source_dir
                                                : FASHION_MNIST_DIR;
    for (size_t i = 0; i < 2; i++) {
        char xp[STORAGE_URI_MAX], yp[STORAGE_URI_MAX], o[STORAGE_URI_MAX];
        /* the Debian package ships .gz files; plain ones work too */
        snprintf(xp, sizeof xp, "%s/%s.gz", dir, parts[i].x);
        snprintf(yp, sizeof yp, "%s/%s.gz", dir, parts[i].y);
        FILE *f = fopen(xp, "rb");
        if (f) {
            fclose(f);
        } else {
            snprintf(xp, sizeof xp, "%s/%s", dir, parts[i].x);
            snprintf(yp, sizeof yp, "%s/%s", dir, parts[i].y);
        }
        f = fopen(xp, "rb");
        if (!f)
            return SR_FAIL(SR_ERR_NOT_FOUND, "%s: Fashion-MNIST file %s(.gz) "
                           "not found (install the Debian package "
                           "dataset-fashion-mnist or pass --source DIR)", dir,
                           parts[i].x);
        fclose(f);
        SR_TRY(storage_uri_join(o, sizeof o, out, parts[i].split));
        uint64_t n;
        SR_TRY(import_idx(st, o, xp, yp, 10, 1.0 / 255.0, shard_bytes, &n));
    }
    return SR_OK;
}
