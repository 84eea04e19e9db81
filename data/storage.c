/*
 * storage.c: URI parsing and dispatch to the backend that owns a scheme.
 * Backends live in storage_file.c and (for s3://) data/s3/storage_s3.c.
 * A backend's state (the S3 client) is made on its first use, so users of
 * file:// alone never need S3 settings or credentials.
 */
#include "storage.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

struct storage {
    const struct storage_ops *ops[2];
    void *state[2];
    pthread_mutex_t mu;     /* guards state creation */
};

int storage_uri_is_s3(const char *uri)
{
    return strncmp(uri, "s3://", 5) == 0;
}

sr_status storage_uri_parse(struct storage_uri *out, const char *uri)
{
    memset(out, 0, sizeof *out);
    if (!uri || !*uri)
        return SR_FAIL(SR_ERR_USAGE, "empty location (expected s3://bucket/"
                       "prefix, file:///path or a path)");
    if (storage_uri_is_s3(uri)) {
        const char *b = uri + 5;
        const char *slash = strchr(b, '/');
        size_t blen = slash ? (size_t)(slash - b) : strlen(b);
        if (blen < 3 || blen >= sizeof out->bucket)
            return SR_FAIL(SR_ERR_USAGE, "%s: bucket name must be 3-63 "
                           "characters", uri);
        out->scheme = STORAGE_S3;
        memcpy(out->bucket, b, blen);
        out->bucket[blen] = '\0';
        if (str_copy(out->path, sizeof out->path, slash ? slash + 1 : ""))
            return SR_FAIL(SR_ERR_USAGE, "%s: key too long", uri);
        return SR_OK;
    }
    const char *p = uri;
    if (strncmp(uri, "file://", 7) == 0) {
        p = uri + 7;
        if (*p != '/')
            return SR_FAIL(SR_ERR_USAGE, "%s: file:// needs an absolute path "
                           "(file:///dir/...)", uri);
    } else if (strstr(uri, "://")) {
        return SR_FAIL(SR_ERR_USAGE, "%s: unsupported scheme (use s3://, "
                       "file:// or a plain path)", uri);
    }
    out->scheme = STORAGE_FILE;
    if (str_copy(out->path, sizeof out->path, p))
        return SR_FAIL(SR_ERR_USAGE, "%s: path too long", uri);
    return SR_OK;
}

sr_status storage_uri_join(char *dst, size_t cap, const char *base,
                           const char *name)
{
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/' && !(bl >= 3 &&
           memcmp(base + bl - 3, "://", 3) == 0))
        bl--;
    while (*name == '/')
        name++;
    int n;
    if (bl == 0)
        n = snprintf(dst, cap, "%s", name);
    else if (!*name)
        n = snprintf(dst, cap, "%.*s", (int)bl, base);
    else
        n = snprintf(dst, cap, "%.*s/%s", (int)bl, base, name);
    if (n < 0 || (size_t)n >= cap)
        return SR_FAIL(SR_ERR_USAGE, "location %s/%s is too long", base, name);
    return SR_OK;
}

sr_status storage_open(struct storage **out)
{
    struct storage *st = calloc(1, sizeof *st);
    if (!st)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        free(st);
        return SR_FAIL(SR_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    st->ops[STORAGE_FILE] = &storage_file_ops;
    st->ops[STORAGE_S3] = &storage_s3_ops;
    *out = st;
    return SR_OK;
}

void storage_close(struct storage *st)
{
    if (!st)
        return;
    for (int i = 0; i < 2; i++)
        if (st->state[i] && st->ops[i]->state_close)
            st->ops[i]->state_close(st->state[i]);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

sr_status storage_backend_state(struct storage *st, enum storage_scheme sch,
                                void **out)
{
    const struct storage_ops *ops = st->ops[sch];
    sr_status s = SR_OK;
    pthread_mutex_lock(&st->mu);
    if (!st->state[sch] && ops->state_open)
        s = ops->state_open(&st->state[sch]);
    *out = st->state[sch];
    pthread_mutex_unlock(&st->mu);
    return s;
}

static sr_status resolve(struct storage *st, const char *uri,
                         struct storage_uri *u, const struct storage_ops **ops)
{
    SR_TRY(storage_uri_parse(u, uri));
    *ops = st->ops[u->scheme];
    return SR_OK;
}

sr_status storage_stat(struct storage *st, const char *uri, uint64_t *size)
{
    struct storage_uri u;
    const struct storage_ops *ops;
    SR_TRY(resolve(st, uri, &u, &ops));
    return ops->stat(st, &u, size);
}

sr_status storage_read(struct storage *st, const char *uri, uint64_t off,
                       void *dst, size_t len)
{
    return storage_read_tap(st, uri, off, dst, len, NULL);
}

sr_status storage_read_tap(struct storage *st, const char *uri, uint64_t off,
                           void *dst, size_t len,
                           const struct storage_tap *tap)
{
    struct storage_uri u;
    const struct storage_ops *ops;
    SR_TRY(resolve(st, uri, &u, &ops));
    return ops->read(st, &u, off, dst, len, tap);
}

sr_status storage_read_all(struct storage *st, const char *uri,
                           struct sr_buf *out)
{
    uint64_t size;
    SR_TRY(storage_stat(st, uri, &size));
    if (size > SIZE_MAX / 2)
        return SR_FAIL(SR_ERR_NOMEM, "%s: object of %llu bytes is too large "
                       "to hold in memory", uri, (unsigned long long)size);
    SR_TRY(buf_reserve(out, (size_t)size));
    SR_TRY(storage_read(st, uri, 0, out->data + out->len, (size_t)size));
    out->len += (size_t)size;
    out->data[out->len] = 0;
    return SR_OK;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct storage_entry *x = a, *y = b;
    return strcmp(x->name, y->name);
}

sr_status storage_list(struct storage *st, const char *prefix,
                       struct storage_list *out)
{
    struct storage_uri u;
    const struct storage_ops *ops;
    out->v = NULL;
    out->n = 0;
    SR_TRY(resolve(st, prefix, &u, &ops));
    sr_status s = ops->list(st, &u, out);
    if (s != SR_OK) {
        storage_list_free(out);
        return s;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, entry_cmp);
    return SR_OK;
}

void storage_list_free(struct storage_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

sr_status storage_delete(struct storage *st, const char *uri)
{
    struct storage_uri u;
    const struct storage_ops *ops;
    SR_TRY(resolve(st, uri, &u, &ops));
    return ops->del(st, &u);
}

sr_status storage_writer_open(struct storage *st, const char *uri, int flags,
                              struct storage_writer **out)
{
    struct storage_uri u;
    const struct storage_ops *ops;
    *out = NULL;
    SR_TRY(resolve(st, uri, &u, &ops));
    SR_TRY(ops->writer_open(st, &u, flags, out));
    if (str_copy((*out)->uri, sizeof (*out)->uri, uri)) {
        storage_writer_abort(*out);
        *out = NULL;
        return SR_FAIL(SR_ERR_USAGE, "location too long: %s", uri);
    }
    return SR_OK;
}

sr_status storage_writer_write(struct storage_writer *w, const void *p,
                               size_t n)
{
    return w->write(w, p, n);
}

sr_status storage_writer_commit(struct storage_writer *w)
{
    return w->commit(w);
}

void storage_writer_abort(struct storage_writer *w)
{
    if (w)
        w->abort(w);
}

sr_status storage_put(struct storage *st, const char *uri, const void *p,
                      size_t n, int flags)
{
    struct storage_uri u;
    const struct storage_ops *ops;
    SR_TRY(resolve(st, uri, &u, &ops));
    if (ops->put)
        return ops->put(st, &u, p, n, flags);
    struct storage_writer *w;
    SR_TRY(storage_writer_open(st, uri, flags, &w));
    sr_status s = storage_writer_write(w, p, n);
    if (s != SR_OK) {
        storage_writer_abort(w);
        return s;
    }
    return storage_writer_commit(w);
}
