/*
 * batch.c: record decoding into float rows and int32 labels. The uint8
 * path (images) is the hot one and has its own loop.
 */
#include "batch.h"

#include <string.h>

#include "../common/simd.h"

static int is_integer(enum sr_dtype t)
{
    return t != DT_FLOAT32 && t != DT_FLOAT64;
}

sr_status batch_spec_init(struct batch_spec *b, const struct shard_schema *s,
                          const char *what)
{
    memset(b, 0, sizeof *b);
    int xi = schema_find(s, "x"), yi = schema_find(s, "y");
    if (xi < 0 || yi < 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: the schema needs an input field "
                       "\"x\" and a label field \"y\"", what);
    const struct shard_field *x = &s->f[xi], *y = &s->f[yi];
    if (!is_integer(y->dtype) || y->ndim != 0 || y->num_classes < 2)
        return SR_FAIL(SR_ERR_FORMAT, "%s: field \"y\" must be a scalar "
                       "integer label with num_classes >= 2", what);
    b->in = x->bytes / dtype_size(x->dtype);
    b->classes = y->num_classes;
    b->scale = x->scale != 0 ? (float)x->scale : 1.0f;
    b->xt = x->dtype;
    b->yt = y->dtype;
    b->xoff = x->offset;
    b->yoff = y->offset;
    return SR_OK;
}

static float load_f(enum sr_dtype t, const uint8_t *p)
{
    switch (t) {
    case DT_UINT8: return (float)p[0];
    case DT_INT8: return (float)(int8_t)p[0];
    case DT_UINT16: { uint16_t v; memcpy(&v, p, 2); return (float)v; }
    case DT_INT16: { int16_t v; memcpy(&v, p, 2); return (float)v; }
    case DT_INT32: { int32_t v; memcpy(&v, p, 4); return (float)v; }
    case DT_INT64: { int64_t v; memcpy(&v, p, 8); return (float)v; }
    case DT_FLOAT32: { float v; memcpy(&v, p, 4); return v; }
    case DT_FLOAT64: { double v; memcpy(&v, p, 8); return (float)v; }
    default: return 0;
    }
}

static int64_t load_i(enum sr_dtype t, const uint8_t *p)
{
    switch (t) {
    case DT_UINT8: return p[0];
    case DT_INT8: return (int8_t)p[0];
    case DT_UINT16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case DT_INT16: { int16_t v; memcpy(&v, p, 2); return v; }
    case DT_INT32: { int32_t v; memcpy(&v, p, 4); return v; }
    case DT_INT64: { int64_t v; memcpy(&v, p, 8); return v; }
    default: return -1;
    }
}

SR_CLONES
static void u8_to_f32(float *restrict out, const uint8_t *restrict in,
                      size_t n, float scale)
{
    for (size_t j = 0; j < n; j++)
        out[j] = (float)in[j] * scale;
}

sr_status batch_fill(const struct batch_spec *b, const uint8_t *const *recs,
                     const uint64_t *ids, int n, float *x, int32_t *y,
                     const char *what)
{
    size_t es = dtype_size(b->xt);
    for (int i = 0; i < n; i++) {
        const uint8_t *r = recs[i];
        float *row = x + (size_t)i * b->in;
        const uint8_t *px = r + b->xoff;
        if (b->xt == DT_UINT8) {
            u8_to_f32(row, px, b->in, b->scale);
        } else {
            for (size_t j = 0; j < b->in; j++)
                row[j] = load_f(b->xt, px + j * es) * b->scale;
        }
        int64_t label = load_i(b->yt, r + b->yoff);
        if (label < 0 || label >= b->classes)
            return SR_FAIL(SR_ERR_FORMAT, "%s: record %llu has label %lld, "
                           "outside [0, %d)", what,
                           (unsigned long long)ids[i], (long long)label,
                           b->classes);
        y[i] = (int32_t)label;
    }
    return SR_OK;
}
