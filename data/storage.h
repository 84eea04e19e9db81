/*
 * storage.h: the one interface through which spotrun touches data, models,
 * metrics and checkpoints. A location is a URI: s3://bucket/key,
 * file:///abs/path, or a plain path (treated as file://).
 *
 * Operations: stat, ranged read, list by prefix, streaming write with an
 * explicit commit (or abort), create-if-absent, delete. Each backend
 * (file://, s3://) implements struct storage_ops; callers never see which.
 * Writes become visible only at commit: on disk through a temp file, fsync
 * and rename; on S3 through a single PUT or a completed multipart upload.
 *
 * A struct storage holds per-process backend state (for S3: the client,
 * credentials, connection pool). All functions are safe to call from
 * several threads on one struct storage.
 */
#ifndef SPOTRUN_STORAGE_H
#define SPOTRUN_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../common/status.h"

#define STORAGE_URI_MAX 1024

struct storage;
struct storage_writer;

enum storage_scheme { STORAGE_FILE = 0, STORAGE_S3 = 1 };

/* A parsed location. For file:// `path` is the filesystem path; for s3://
 * `bucket` and `key` (no leading slash). */
struct storage_uri {
    enum storage_scheme scheme;
    char bucket[256];
    char path[STORAGE_URI_MAX];   /* file path, or S3 key */
};

struct storage_entry {
    char *name;           /* relative to the listed prefix */
    uint64_t size;
    double mtime;         /* seconds since the epoch, 0 if unknown */
};

struct storage_list {
    struct storage_entry *v;
    size_t n;
};

enum storage_write_flags {
    STORAGE_CREATE_EXCL = 1,   /* fail with SR_ERR_EXISTS if present */
    STORAGE_NO_SYNC = 2,       /* file://: atomic rename, but no fsync (a
                                  copy that need not survive a crash) */
};

sr_status storage_uri_parse(struct storage_uri *out, const char *uri)
    SR_MUST_USE;
/* dst = base + "/" + name (one slash between them). */
sr_status storage_uri_join(char *dst, size_t cap, const char *base,
                           const char *name) SR_MUST_USE;
int storage_uri_is_s3(const char *uri);

sr_status storage_open(struct storage **out) SR_MUST_USE;
void storage_close(struct storage *st);

/* Size of one object; SR_ERR_NOT_FOUND when absent. */
sr_status storage_stat(struct storage *st, const char *uri, uint64_t *size)
    SR_MUST_USE;
/* Read exactly len bytes at off; a short object is SR_ERR_FORMAT. */
sr_status storage_read(struct storage *st, const char *uri, uint64_t off,
                       void *dst, size_t len) SR_MUST_USE;

/* A tap on a read: fn sees each piece of the range as it lands in dst,
 * with its object offset, while the bytes are still in the CPU's cache
 * (p points at them; valid during the call only). Pieces of one request
 * come in order; a range read by several requests, or again after a
 * failed attempt, may be seen out of order or more than once. */
struct storage_tap {
    void (*fn)(void *arg, uint64_t off, const void *p, size_t n);
    void *arg;
};
/* storage_read, with every piece shown to tap (NULL: none). */
sr_status storage_read_tap(struct storage *st, const char *uri, uint64_t off,
                           void *dst, size_t len,
                           const struct storage_tap *tap) SR_MUST_USE;
/* Read a whole object into out (appended). */
sr_status storage_read_all(struct storage *st, const char *uri,
                           struct sr_buf *out) SR_MUST_USE;
/* Every object under prefix (recursively), sorted by name, byte order.
 * A prefix that names a directory lists its contents. */
sr_status storage_list(struct storage *st, const char *prefix,
                       struct storage_list *out) SR_MUST_USE;
void storage_list_free(struct storage_list *l);
/* Remove one object; absent is not an error. */
sr_status storage_delete(struct storage *st, const char *uri) SR_MUST_USE;

/* Streaming write: open, write any number of times, then commit or abort.
 * Nothing is visible at uri before commit succeeds. commit and abort free
 * the writer. */
sr_status storage_writer_open(struct storage *st, const char *uri, int flags,
                              struct storage_writer **out) SR_MUST_USE;
sr_status storage_writer_write(struct storage_writer *w, const void *p,
                               size_t n) SR_MUST_USE;
sr_status storage_writer_commit(struct storage_writer *w) SR_MUST_USE;
void storage_writer_abort(struct storage_writer *w);

/* One-call write of a whole buffer, committed. */
sr_status storage_put(struct storage *st, const char *uri, const void *p,
                      size_t n, int flags) SR_MUST_USE;

/* Backend table; one per scheme. */
struct storage_ops {
    const char *name;
    sr_status (*stat)(struct storage *, const struct storage_uri *,
                      uint64_t *);
    sr_status (*read)(struct storage *, const struct storage_uri *, uint64_t,
                      void *, size_t, const struct storage_tap *);
    sr_status (*list)(struct storage *, const struct storage_uri *,
                      struct storage_list *);
    sr_status (*del)(struct storage *, const struct storage_uri *);
    sr_status (*writer_open)(struct storage *, const struct storage_uri *,
                             int, struct storage_writer **);
    /* Optional: a whole buffer in one call, with the flags of
     * writer_open, sent from the caller's memory (a writer stages a copy,
     * since its caller may reuse each buffer it writes). NULL = through a
     * writer. */
    sr_status (*put)(struct storage *, const struct storage_uri *,
                     const void *, size_t, int);
    /* Optional per-storage state (e.g. the S3 client), made on the
     * backend's first use and freed by storage_close. */
    sr_status (*state_open)(void **);
    void (*state_close)(void *);
};

/* Fields every backend's writer starts with. */
struct storage_writer {
    sr_status (*write)(struct storage_writer *, const void *, size_t);
    sr_status (*commit)(struct storage_writer *);
    void (*abort)(struct storage_writer *);
    char uri[STORAGE_URI_MAX];
};

/* The backend state of a scheme, created by its state_open on the first
 * call (once, even when several threads ask at the same time). */
sr_status storage_backend_state(struct storage *st, enum storage_scheme sch,
                                void **out) SR_MUST_USE;

extern const struct storage_ops storage_file_ops;
extern const struct storage_ops storage_s3_ops;

#endif
