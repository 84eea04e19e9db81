/*
 * storage_s3.c: the s3:// backend of the storage interface. stat is a
 * HEAD, read a ranged GET, list pages through ListObjectsV2 with names
 * relative to the prefix (a prefix that names a "directory" lists what is
 * under prefix/), and writes stream through s3_upload. The client is made
 * on the first s3:// call from the environment's settings.
 */
#include "../storage.h"

#include <stdlib.h>
#include <string.h>

#include "s3.h"
#include "s3_upload.h"

struct s3_writer {
    struct storage_writer base;
    struct s3_upload *up;
};

struct s3_lister {
    struct storage_list *out;
    size_t cap;
    size_t strip;               /* length of the prefix to remove */
};

static sr_status state_open(void **out)
{
    struct s3_config cfg;
    struct s3_client *c;
    SR_TRY(s3_config_from_env(&cfg));
    SR_TRY(s3_client_open(&c, &cfg));
    *out = c;
    return SR_OK;
}

static void state_close(void *p)
{
    s3_client_close(p);
}

static sr_status client(struct storage *st, struct s3_client **out)
{
    void *p;
    SR_TRY(storage_backend_state(st, STORAGE_S3, &p));
    *out = p;
    return SR_OK;
}

static sr_status s3s_stat(struct storage *st, const struct storage_uri *u,
                          uint64_t *size)
{
    struct s3_client *c;
    struct s3_object_info info;
    SR_TRY(client(st, &c));
    SR_TRY(s3_head(c, u->bucket, u->path, &info));
    *size = info.size;
    return SR_OK;
}

static sr_status s3s_read(struct storage *st, const struct storage_uri *u,
                          uint64_t off, void *dst, size_t len,
                          const struct storage_tap *tap)
{
    struct s3_client *c;
    SR_TRY(client(st, &c));
    return s3_get_tap(c, u->bucket, u->path, off, dst, len, tap);
}

static sr_status list_add(void *arg, const char *key, uint64_t size,
                          double mtime)
{
    struct s3_lister *ls = arg;
    struct storage_list *l = ls->out;
    const char *name = key + ls->strip;
    size_t n = strlen(name);
    if (n == 0 || (name[n - 1] == '/' && size == 0))
        return SR_OK;   /* the prefix itself, or a "folder" marker */
    if (l->n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 64;
        struct storage_entry *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return SR_FAIL(SR_ERR_NOMEM, "out of memory listing objects");
        l->v = v;
        ls->cap = cap;
    }
    char *dup = strdup(name);
    if (!dup)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory listing objects");
    l->v[l->n].name = dup;
    l->v[l->n].size = size;
    l->v[l->n].mtime = mtime;
    l->n++;
    return SR_OK;
}

static sr_status s3s_list(struct storage *st, const struct storage_uri *u,
                          struct storage_list *out)
{
    struct s3_client *c;
    struct s3_lister ls = { .out = out };
    size_t n = strlen(u->path);
    SR_TRY(client(st, &c));
    if (n > 0 && u->path[n - 1] != '/') {
        char dir[STORAGE_URI_MAX + 1];
        memcpy(dir, u->path, n);
        dir[n] = '/';
        dir[n + 1] = '\0';
        ls.strip = n + 1;
        SR_TRY(s3_list(c, u->bucket, dir, list_add, &ls));
        if (out->n > 0)
            return SR_OK;
    }
    ls.strip = n;
    return s3_list(c, u->bucket, u->path, list_add, &ls);
}

static sr_status s3s_del(struct storage *st, const struct storage_uri *u)
{
    struct s3_client *c;
    SR_TRY(client(st, &c));
    return s3_delete(c, u->bucket, u->path);
}

static sr_status sw_write(struct storage_writer *base, const void *p,
                          size_t n)
{
    struct s3_writer *w = (struct s3_writer *)base;
    return s3_upload_write(w->up, p, n);
}

static sr_status sw_commit(struct storage_writer *base)
{
    struct s3_writer *w = (struct s3_writer *)base;
    sr_status s = s3_upload_commit(w->up);
    free(w);
    return s;
}

static void sw_abort(struct storage_writer *base)
{
    struct s3_writer *w = (struct s3_writer *)base;
    s3_upload_abort(w->up);
    free(w);
}

static sr_status object_name(const struct storage_uri *u)
{
    size_t n = strlen(u->path);
    if (n == 0 || u->path[n - 1] == '/')
        return SR_FAIL(SR_ERR_USAGE, "s3://%s/%s: an object name is needed, "
                       "not a prefix", u->bucket, u->path);
    return SR_OK;
}

static sr_status s3s_writer_open(struct storage *st,
                                 const struct storage_uri *u, int flags,
                                 struct storage_writer **out)
{
    struct s3_client *c;
    struct s3_object_info info;
    SR_TRY(object_name(u));
    SR_TRY(client(st, &c));
    if (flags & STORAGE_CREATE_EXCL) {
        /* fail early; the commit itself is still conditional */
        sr_status s = s3_head(c, u->bucket, u->path, &info);
        if (s == SR_OK)
            return SR_FAIL(SR_ERR_EXISTS, "s3://%s/%s: already exists",
                           u->bucket, u->path);
        if (s != SR_ERR_NOT_FOUND)
            return s;
        sr_clear_error();
    }
    struct s3_writer *w = calloc(1, sizeof *w);
    if (!w)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    sr_status s = s3_upload_open(&w->up, c, u->bucket, u->path,
                                 (flags & STORAGE_CREATE_EXCL)
                                     ? S3_IF_NONE_MATCH : 0);
    if (s != SR_OK) {
        free(w);
        return s;
    }
    w->base.write = sw_write;
    w->base.commit = sw_commit;
    w->base.abort = sw_abort;
    *out = &w->base;
    return SR_OK;
}

/* Up to the multipart threshold: one PutObject straight from the caller's
 * buffer (conditional for STORAGE_CREATE_EXCL). Larger: multipart, through
 * a writer. */
static sr_status s3s_put(struct storage *st, const struct storage_uri *u,
                         const void *p, size_t n, int flags)
{
    struct s3_client *c;
    SR_TRY(object_name(u));
    SR_TRY(client(st, &c));
    if (n <= s3_client_config(c)->multipart_threshold)
        return s3_put(c, u->bucket, u->path, n ? p : "", n,
                      (flags & STORAGE_CREATE_EXCL) ? S3_IF_NONE_MATCH : 0);
    struct storage_writer *w;
    SR_TRY(s3s_writer_open(st, u, flags, &w));
    sr_status s = sw_write(w, p, n);
    if (s != SR_OK) {
        sw_abort(w);
        return s;
    }
    return sw_commit(w);
}

const struct storage_ops storage_s3_ops = {
    .name = "s3",
    .stat = s3s_stat,
    .read = s3s_read,
    .list = s3s_list,
    .del = s3s_del,
    .writer_open = s3s_writer_open,
    .put = s3s_put,
    .state_open = state_open,
    .state_close = state_close,
};
