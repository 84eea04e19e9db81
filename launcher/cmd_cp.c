/*
 * cmd_cp.c: `spotrun cp`: copy objects between any two locations the
 * storage layer knows (s3://, file://, paths), one object or every object
 * under a prefix, several objects at a time. Each object goes through a
 * 64 MiB buffer: S3 reads of that size go out as concurrent ranged GETs;
 * an object that fits is written from the buffer in one call (to S3 a
 * single PUT, or parts above the multipart threshold), a larger one
 * streams through a writer as concurrent multipart parts. Local files are
 * renamed into place whole but, as with other copy tools, not fsynced.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../data/storage.h"
#include "commands.h"

#define CHUNK ((size_t)64 << 20)

struct job {
    char src[STORAGE_URI_MAX];
    char dst[STORAGE_URI_MAX];
    uint64_t size;
};

struct copier {
    struct storage *st;
    struct job *jobs;
    size_t njobs;
    atomic_size_t next;
    atomic_int failed;
    atomic_ullong bytes;
    pthread_mutex_t mu;         /* first error message */
    sr_status status;
    char err[1024];
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: spotrun cp [--recursive] [--jobs N] SRC DST\n"
        "  Copy one object, or with --recursive every object under the "
        "prefix SRC,\n"
        "  between s3://bucket/key, file:///path and plain paths. DST ending "
        "in '/'\n"
        "  receives SRC's last name component. --jobs: objects copied at "
        "once [4].\n"
        "  Local files appear whole (renamed into place) but are not "
        "fsynced.\n");
}

static sr_status copy_one(struct storage *st, const struct job *j,
                          uint8_t *buf, atomic_ullong *bytes)
{
    if (j->size <= CHUNK) {
        /* whole in the buffer: one write from it (to S3 a single PUT sent
         * from this memory, with no staging copy) */
        SR_TRY(storage_read(st, j->src, 0, buf, (size_t)j->size));
        SR_TRY(storage_put(st, j->dst, buf, (size_t)j->size,
                           STORAGE_NO_SYNC));
        atomic_fetch_add(bytes, j->size);
        return SR_OK;
    }
    struct storage_writer *w;
    /* like other copy tools: atomic, but not flushed to disk */
    SR_TRY(storage_writer_open(st, j->dst, STORAGE_NO_SYNC, &w));
    sr_status s = SR_OK;
    for (uint64_t off = 0; off < j->size && s == SR_OK;) {
        size_t n = j->size - off < CHUNK ? (size_t)(j->size - off) : CHUNK;
        s = storage_read(st, j->src, off, buf, n);
        if (s == SR_OK)
            s = storage_writer_write(w, buf, n);
        off += n;
        atomic_fetch_add(bytes, n);
    }
    if (s != SR_OK) {
        storage_writer_abort(w);
        return s;
    }
    return storage_writer_commit(w);
}

static void *worker(void *arg)
{
    struct copier *cp = arg;
    uint8_t *buf = big_alloc(CHUNK);
    for (;;) {
        size_t i = atomic_fetch_add(&cp->next, 1);
        if (i >= cp->njobs || atomic_load(&cp->failed))
            break;
        sr_status s = buf ? copy_one(cp->st, &cp->jobs[i], buf, &cp->bytes)
                          : SR_FAIL(SR_ERR_NOMEM, "out of memory");
        if (s != SR_OK) {
            pthread_mutex_lock(&cp->mu);
            if (!atomic_exchange(&cp->failed, 1)) {
                cp->status = s;
                snprintf(cp->err, sizeof cp->err, "%s", sr_errmsg_user());
            }
            pthread_mutex_unlock(&cp->mu);
            break;
        }
        log_debug("copied %s -> %s", cp->jobs[i].src, cp->jobs[i].dst);
    }
    free(buf);
    return NULL;
}

/* The jobs: one object, or everything under a prefix. */
static sr_status plan(struct copier *cp, const char *src, const char *dst,
                      int recursive)
{
    if (!recursive) {
        cp->jobs = calloc(1, sizeof *cp->jobs);
        if (!cp->jobs)
            return SR_FAIL(SR_ERR_NOMEM, "out of memory");
        cp->njobs = 1;
        struct job *j = &cp->jobs[0];
        SR_TRY(storage_stat(cp->st, src, &j->size));
        const char *base = strrchr(src, '/');
        base = base ? base + 1 : src;
        size_t dl = strlen(dst);
        if (dl > 0 && dst[dl - 1] == '/')
            SR_TRY(storage_uri_join(j->dst, sizeof j->dst, dst, base));
        else if (str_copy(j->dst, sizeof j->dst, dst))
            return SR_FAIL(SR_ERR_USAGE, "location too long: %s", dst);
        if (str_copy(j->src, sizeof j->src, src))
            return SR_FAIL(SR_ERR_USAGE, "location too long: %s", src);
        return SR_OK;
    }
    char prefix[STORAGE_URI_MAX];
    SR_TRY(storage_uri_join(prefix, sizeof prefix, src, ""));
    size_t pl = strlen(prefix);
    if (pl + 2 > sizeof prefix)
        return SR_FAIL(SR_ERR_USAGE, "location too long: %s", src);
    prefix[pl] = '/';
    prefix[pl + 1] = '\0';
    struct storage_list l;
    SR_TRY(storage_list(cp->st, prefix, &l));
    if (l.n == 0) {
        storage_list_free(&l);
        return SR_FAIL(SR_ERR_NOT_FOUND, "%s: no objects under this prefix",
                       src);
    }
    cp->jobs = calloc(l.n, sizeof *cp->jobs);
    sr_status s = cp->jobs ? SR_OK : SR_FAIL(SR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; s == SR_OK && i < l.n; i++) {
        struct job *j = &cp->jobs[i];
        j->size = l.v[i].size;
        s = storage_uri_join(j->src, sizeof j->src, src, l.v[i].name);
        if (s == SR_OK)
            s = storage_uri_join(j->dst, sizeof j->dst, dst, l.v[i].name);
    }
    cp->njobs = l.n;
    storage_list_free(&l);
    return s;
}

int cmd_cp(int argc, char **argv)
{
    int recursive = 0;
    int64_t jobs = 4;
    const char *src = NULL, *dst = NULL;
    sr_status s = SR_OK;
    for (int i = 0; i < argc && s == SR_OK; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--recursive") == 0 ||
                   strcmp(argv[i], "-r") == 0) {
            recursive = 1;
        } else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) {
            if (parse_i64(&jobs, argv[++i]) || jobs < 1 || jobs > 256)
                s = SR_FAIL(SR_ERR_USAGE, "--jobs: '%s' is not 1..256",
                            argv[i]);
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            s = SR_FAIL(SR_ERR_USAGE, "unknown option %s (see `spotrun cp "
                        "--help`)", argv[i]);
        } else if (!src) {
            src = argv[i];
        } else if (!dst) {
            dst = argv[i];
        } else {
            s = SR_FAIL(SR_ERR_USAGE, "cp takes one source and one "
                        "destination");
        }
    }
    if (s == SR_OK && (!src || !dst))
        s = SR_FAIL(SR_ERR_USAGE, "cp needs SRC and DST (see `spotrun cp "
                    "--help`)");
    struct copier cp;
    memset(&cp, 0, sizeof cp);
    pthread_mutex_init(&cp.mu, NULL);
    if (s == SR_OK)
        s = storage_open(&cp.st);
    if (s == SR_OK)
        s = plan(&cp, src, dst, recursive);
    double t0 = now_s();
    if (s == SR_OK) {
        size_t n = (size_t)jobs < cp.njobs ? (size_t)jobs : cp.njobs;
        pthread_t th[256];
        size_t started = 0;
        for (; started < n; started++)
            if (pthread_create(&th[started], NULL, worker, &cp) != 0)
                break;
        if (started == 0)
            worker(&cp);
        for (size_t i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        if (atomic_load(&cp.failed))
            s = SR_FAIL(cp.status, "%s", cp.err);
    }
    if (s == SR_OK) {
        double dt = now_s() - t0;
        unsigned long long b = atomic_load(&cp.bytes);
        char h[32];
        printf("copied %zu object(s), %s in %.2f s (%.1f MB/s)\n", cp.njobs,
               fmt_bytes(h, sizeof h, b), dt, dt > 0 ? (double)b / dt / 1e6
                                                     : 0.0);
    }
    free(cp.jobs);
    if (cp.st)
        storage_close(cp.st);
    pthread_mutex_destroy(&cp.mu);
    if (s != SR_OK)
        log_status(s);
    return sr_exit_code(s);
}
