/*
 * idx.c: IDX file loading through zlib's gzread, which reads plain and
 * gzip-compressed files alike.
 */
#include "idx.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static sr_status read_exact(gzFile f, void *p, size_t n, const char *path)
{
    uint8_t *c = p;
    while (n > 0) {
        unsigned k = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int r = gzread(f, c, k);
        if (r <= 0) {
            int err = 0;
            const char *msg = gzerror(f, &err);
            return SR_FAIL(SR_ERR_FORMAT, "%s: truncated IDX file (%s)", path,
                           err ? msg : "unexpected end of file");
        }
        c += r;
        n -= (size_t)r;
    }
    return SR_OK;
}

sr_status idx_load(struct idx_array *a, const char *path)
{
    memset(a, 0, sizeof *a);
    gzFile f = gzopen(path, "rb");
    if (!f)
        return SR_FAIL(SR_ERR_NOT_FOUND, "%s: cannot open", path);
    sr_status s;
    uint8_t magic[4];
    s = read_exact(f, magic, 4, path);
    if (s != SR_OK)
        goto out;
    if (magic[0] != 0 || magic[1] != 0 || magic[3] == 0 ||
        magic[3] > SHARD_MAX_DIMS) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s: not an IDX file (magic %02x%02x%02x"
                    "%02x)", path, magic[0], magic[1], magic[2], magic[3]);
        goto out;
    }
    switch (magic[2]) {
    case 0x08: a->dtype = DT_UINT8; break;
    case 0x09: a->dtype = DT_INT8; break;
    case 0x0B: a->dtype = DT_INT16; break;
    case 0x0C: a->dtype = DT_INT32; break;
    case 0x0D: a->dtype = DT_FLOAT32; break;
    case 0x0E: a->dtype = DT_FLOAT64; break;
    default:
        s = SR_FAIL(SR_ERR_FORMAT, "%s: unknown IDX type 0x%02x", path,
                    magic[2]);
        goto out;
    }
    a->ndim = magic[3];
    size_t n = 1;
    for (int i = 0; i < a->ndim; i++) {
        uint8_t d[4];
        s = read_exact(f, d, 4, path);
        if (s != SR_OK)
            goto out;
        a->dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 |
                     (uint32_t)d[2] << 8 | d[3];
        if (a->dims[i] == 0 || n > (SIZE_MAX >> 4) / a->dims[i]) {
            s = SR_FAIL(SR_ERR_FORMAT, "%s: bad dimension %u", path,
                        a->dims[i]);
            goto out;
        }
        n *= a->dims[i];
    }
    size_t es = dtype_size(a->dtype);
    a->bytes = n * es;
    a->data = malloc(a->bytes);
    if (!a->data) {
        s = SR_FAIL(SR_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    s = read_exact(f, a->data, a->bytes, path);
    if (s != SR_OK)
        goto out;
    if (gzgetc(f) != -1) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s: trailing bytes after %zu values",
                    path, n);
        goto out;
    }
    for (size_t i = 0; es > 1 && i < n; i++) {
        uint8_t *v = a->data + i * es;
        for (size_t j = 0; j < es / 2; j++) {
            uint8_t t = v[j];
            v[j] = v[es - 1 - j];
            v[es - 1 - j] = t;
        }
    }
out:
    gzclose(f);
    if (s != SR_OK)
        idx_free(a);
    return s;
}

void idx_free(struct idx_array *a)
{
    free(a->data);
    a->data = NULL;
}
