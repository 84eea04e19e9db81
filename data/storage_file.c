/*
 * storage_file.c: the file:// backend. A write goes to a hidden temp file
 * in the target directory; commit does fsync, then rename (or link, for
 * create-if-absent, which fails atomically when the name exists), then an
 * fsync of the directory so the new name survives a crash. Directories are
 * made as writes need them and removed when a delete empties them, so a
 * prefix behaves as on S3.
 */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/util.h"

#define TMP_TAG ".spotrun-tmp."

struct file_writer {
    struct storage_writer base;
    int fd;
    int flags;
    char path[STORAGE_URI_MAX];
    char tmp[STORAGE_URI_MAX + 64];
};

static sr_status errno_fail(const char *file, int line, const char *op,
                            const char *path, int err)
{
    sr_status s = (err == ENOENT || err == ENOTDIR) ? SR_ERR_NOT_FOUND
                                                    : SR_ERR_IO;
    return sr_fail(s, file, line, "%s: %s: %s", path, op, strerror(err));
}
#define ERRNO_FAIL(op, path) errno_fail(__FILE__, __LINE__, (op), (path), errno)

static sr_status file_stat(struct storage *st, const struct storage_uri *u,
                           uint64_t *size)
{
    (void)st;
    struct stat sb;
    if (stat(u->path, &sb) != 0)
        return ERRNO_FAIL("stat", u->path);
    if (!S_ISREG(sb.st_mode))
        return SR_FAIL(SR_ERR_NOT_FOUND, "%s: not a regular file", u->path);
    *size = (uint64_t)sb.st_size;
    return SR_OK;
}

/* A tapped read goes in pieces of this size, so the tap sees each while
 * it is in cache. */
#define TAP_PIECE (1u << 20)

static sr_status file_read(struct storage *st, const struct storage_uri *u,
                           uint64_t off, void *dst, size_t len,
                           const struct storage_tap *tap)
{
    (void)st;
    int fd = open(u->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ERRNO_FAIL("open", u->path);
    sr_status s = SR_OK;
    size_t done = 0;
    while (done < len) {
        size_t want = len - done;
        if (tap && want > TAP_PIECE)
            want = TAP_PIECE;
        ssize_t n = pread(fd, (char *)dst + done, want, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            s = ERRNO_FAIL("read", u->path);
            break;
        }
        if (n == 0) {
            s = SR_FAIL(SR_ERR_FORMAT, "%s: ends before byte %llu (read of "
                        "%zu bytes at offset %llu)", u->path,
                        (unsigned long long)(off + done), len,
                        (unsigned long long)off);
            break;
        }
        if (tap)
            tap->fn(tap->arg, off + done, (char *)dst + done, (size_t)n);
        done += (size_t)n;
    }
    close(fd);
    return s;
}

struct lister {
    struct storage_list *out;
    size_t cap;
    const char *match;      /* name prefix to keep, relative to root */
};

static sr_status list_add(struct lister *ls, const char *name, uint64_t size,
                          double mtime)
{
    struct storage_list *l = ls->out;
    if (l->n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 64;
        struct storage_entry *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return SR_FAIL(SR_ERR_NOMEM, "out of memory listing files");
        l->v = v;
        ls->cap = cap;
    }
    char *dup = strdup(name);
    if (!dup)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory listing files");
    l->v[l->n].name = dup;
    l->v[l->n].size = size;
    l->v[l->n].mtime = mtime;
    l->n++;
    return SR_OK;
}

/* Walk root/rel recursively; rel is "" or ends without a slash. */
static sr_status walk(struct lister *ls, const char *root, const char *rel)
{
    char dir[STORAGE_URI_MAX * 2];
    if (*rel)
        snprintf(dir, sizeof dir, "%s/%s", root, rel);
    else
        snprintf(dir, sizeof dir, "%s", root);
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return SR_OK;
        return ERRNO_FAIL("opendir", dir);
    }
    sr_status s = SR_OK;
    struct dirent *e;
    while (s == SR_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (strstr(e->d_name, TMP_TAG))
            continue;
        char name[STORAGE_URI_MAX];
        int n = *rel ? snprintf(name, sizeof name, "%s/%s", rel, e->d_name)
                     : snprintf(name, sizeof name, "%s", e->d_name);
        if (n < 0 || (size_t)n >= sizeof name)
            continue;
        char full[STORAGE_URI_MAX * 2];
        snprintf(full, sizeof full, "%s/%s", root, name);
        struct stat sb;
        if (stat(full, &sb) != 0)
            continue;   /* vanished while listing */
        if (S_ISDIR(sb.st_mode)) {
            size_t ml = strlen(ls->match);
            /* descend only where the match prefix can still be met */
            if (strncmp(name, ls->match, strlen(name) < ml ? strlen(name)
                        : ml) == 0)
                s = walk(ls, root, name);
        } else if (S_ISREG(sb.st_mode) &&
                   strncmp(name, ls->match, strlen(ls->match)) == 0) {
            s = list_add(ls, name + strlen(ls->match), (uint64_t)sb.st_size,
                         (double)sb.st_mtim.tv_sec +
                         (double)sb.st_mtim.tv_nsec * 1e-9);
        }
    }
    closedir(d);
    return s;
}

static sr_status file_list(struct storage *st, const struct storage_uri *u,
                           struct storage_list *out)
{
    (void)st;
    struct lister ls = { .out = out, .cap = 0, .match = "" };
    struct stat sb;
    if (stat(u->path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return walk(&ls, u->path, "");
    /* a non-directory prefix: list its directory, keep names that start
     * with the last component */
    char root[STORAGE_URI_MAX];
    if (str_copy(root, sizeof root, u->path))
        return SR_FAIL(SR_ERR_USAGE, "path too long: %s", u->path);
    char *slash = strrchr(root, '/');
    if (slash == root) {
        ls.match = u->path + 1;
        return walk(&ls, "/", "");
    }
    if (!slash) {
        ls.match = u->path;
        return walk(&ls, ".", "");
    }
    *slash = '\0';
    ls.match = u->path + (slash - root) + 1;
    return walk(&ls, root, "");
}

static sr_status file_del(struct storage *st, const struct storage_uri *u)
{
    (void)st;
    if (unlink(u->path) != 0 && errno != ENOENT)
        return ERRNO_FAIL("unlink", u->path);
    /* like a key prefix on S3, a directory goes with its last object */
    char dir[STORAGE_URI_MAX];
    if (str_copy(dir, sizeof dir, u->path) == 0) {
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            rmdir(dir);     /* fails, harmlessly, unless empty */
        }
    }
    return SR_OK;
}

static sr_status mkdirs(const char *path)
{
    char tmp[STORAGE_URI_MAX];
    if (str_copy(tmp, sizeof tmp, path))
        return SR_FAIL(SR_ERR_USAGE, "path too long: %s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return ERRNO_FAIL("mkdir", tmp);
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return ERRNO_FAIL("mkdir", tmp);
    return SR_OK;
}

static sr_status fsync_dir_of(const char *path)
{
    char dir[STORAGE_URI_MAX];
    if (str_copy(dir, sizeof dir, path))
        return SR_FAIL(SR_ERR_USAGE, "path too long: %s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ERRNO_FAIL("open directory", dir);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0 && err != EINVAL)
        return errno_fail(__FILE__, __LINE__, "fsync directory", dir, err);
    return SR_OK;
}

static sr_status fw_write(struct storage_writer *base, const void *p, size_t n)
{
    struct file_writer *w = (struct file_writer *)base;
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(w->fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return ERRNO_FAIL("write", w->tmp);
        c += k;
        n -= (size_t)k;
    }
    return SR_OK;
}

static void fw_abort(struct storage_writer *base)
{
    struct file_writer *w = (struct file_writer *)base;
    if (w->fd >= 0)
        close(w->fd);
    unlink(w->tmp);
    free(w);
}

static sr_status fw_commit(struct storage_writer *base)
{
    struct file_writer *w = (struct file_writer *)base;
    sr_status s = SR_OK;
    int sync = !(w->flags & STORAGE_NO_SYNC);
    if (sync && fsync(w->fd) != 0) {
        s = ERRNO_FAIL("fsync", w->tmp);
        goto out;
    }
    if (close(w->fd) != 0) {
        w->fd = -1;
        s = ERRNO_FAIL("close", w->tmp);
        goto out;
    }
    w->fd = -1;
    if (w->flags & STORAGE_CREATE_EXCL) {
        if (link(w->tmp, w->path) != 0) {
            if (errno == EEXIST)
                s = SR_FAIL(SR_ERR_EXISTS, "%s: already exists", w->path);
            else
                s = ERRNO_FAIL("link", w->path);
            goto out;
        }
        unlink(w->tmp);
    } else if (rename(w->tmp, w->path) != 0) {
        s = ERRNO_FAIL("rename", w->path);
        goto out;
    }
    if (sync)
        s = fsync_dir_of(w->path);
out:
    if (w->fd >= 0)
        close(w->fd);
    if (s != SR_OK)
        unlink(w->tmp);
    free(w);
    return s;
}

static sr_status file_writer_open(struct storage *st,
                                  const struct storage_uri *u, int flags,
                                  struct storage_writer **out)
{
    (void)st;
    static atomic_uint counter;
    const char *slash = strrchr(u->path, '/');
    if (!*u->path || (slash && !slash[1]))
        return SR_FAIL(SR_ERR_USAGE, "%s: a file name is needed, not a "
                       "directory", u->path);
    if (slash && slash != u->path) {
        char dir[STORAGE_URI_MAX];
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - u->path), u->path);
        SR_TRY(mkdirs(dir));
    }
    if ((flags & STORAGE_CREATE_EXCL) && access(u->path, F_OK) == 0)
        return SR_FAIL(SR_ERR_EXISTS, "%s: already exists", u->path);
    struct file_writer *w = calloc(1, sizeof *w);
    if (!w)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    w->fd = -1;
    w->flags = flags;
    snprintf(w->path, sizeof w->path, "%s", u->path);
    unsigned id = atomic_fetch_add(&counter, 1);
    if (slash)
        snprintf(w->tmp, sizeof w->tmp, "%.*s/.%s" TMP_TAG "%d.%u",
                 (int)(slash - u->path), u->path, slash + 1, (int)getpid(),
                 id);
    else
        snprintf(w->tmp, sizeof w->tmp, ".%s" TMP_TAG "%d.%u", u->path,
                 (int)getpid(), id);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        sr_status s = ERRNO_FAIL("create", w->tmp);
        free(w);
        return s;
    }
    w->base.write = fw_write;
    w->base.commit = fw_commit;
    w->base.abort = fw_abort;
    *out = &w->base;
    return SR_OK;
}

const struct storage_ops storage_file_ops = {
    .name = "file",
    .stat = file_stat,
    .read = file_read,
    .list = file_list,
    .del = file_del,
    .writer_open = file_writer_open,
};
