/*
 * reader.c: the streaming reader (see reader.h). One mutex guards the
 * shared state. Each kind of thread sleeps on its own condition variable
 * and is woken only when it can make progress: fetchers when a chunk is
 * queued, the planner when the consumer has moved past what blocked it,
 * the consumer when it waits and a request is planned or a chunk lands.
 *
 *   planner   walks the sequence: record -> (shard, chunk); creates a chunk
 *             the first time it is needed if the window has room, queues
 *             it for fetching, and writes a plan entry per request into a
 *             ring the consumer reads. A chunk's last_use is the last
 *             planned request that needs it. It computes the sequence well
 *             ahead of what it plans, and queues the header and index of a
 *             shard it sees coming for a fetcher to load in advance.
 *   fetchers  load queued shard indexes first, then take queued chunks,
 *             read their byte range (from the local cache or storage, with
 *             retries) into a buffer and check every record's CRC; a chunk
 *             that fails either is marked failed.
 *   consumer  reader_next() takes the next n plan entries, waits for their
 *             chunks, and returns pointers into the chunk buffers.
 *
 * A chunk is freed once the consumer has moved past its last_use. Since
 * the planner plans in request order, every chunk in the window is needed
 * by a request the consumer has yet to reach, so the consumer can always
 * progress and free space: no deadlock, whatever the window.
 */
#include "reader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"

#define RING_MIN 65536
#define RING_MAX (4u << 20)

enum chunk_state { C_QUEUED, C_FETCHING, C_READY, C_FAILED };

struct chunk {
    uint32_t shard;
    uint64_t idx;               /* chunk number within the shard */
    uint64_t first, end;        /* its records [first, end) of the shard */
    uint64_t off, len;          /* byte range in the object */
    uint8_t *data;
    enum chunk_state state;
    sr_status err;
    char *errmsg;
    uint64_t last_use;          /* last planned request that needs it */
    struct chunk *rnext;        /* resident list */
    struct chunk *qnext;        /* fetch queue */
};

/* A shard's index read ahead of need: queued, being read by a fetcher,
 * or failed (the planner reads it itself when it gets there, and reports
 * that read's error) */
enum load_state { L_NONE, L_QUEUED, L_LOADING, L_FAILED };

/* The bytes a shard's header, schema and index were read into. Those of
 * unloaded shards are kept for the next shards' (an epoch reads every
 * index again, and shards are mostly of one size): new memory is what
 * costs, each page faulted in and zeroed */
#define INDEX_SPARES 2

struct index_mem {
    uint8_t *p;
    size_t cap;
};

struct shard_slot {
    int loaded;
    int refs;                   /* resident chunks of this shard */
    enum load_state load;
    int early;                  /* loaded in advance; no chunk made yet */
    struct shard_info si;       /* its index points into mem */
    struct index_mem mem;
    struct chunk **chunks;      /* while loaded: resident chunk by number */
};

/* Shards loaded in advance and not yet in use (queued, loading, or loaded
 * with no chunk made) at any time: their indexes are the memory it costs */
#define PRELOAD_MAX 4

struct plan_entry {             /* 16 bytes: the ring is new memory */
    struct chunk *c;            /* (its shard, and the record's) */
    uint64_t id;                /* global record id */
};

struct reader {
    struct storage *st;
    const struct dataset *ds;
    struct reader_opts o;
    char cache_dir[STORAGE_URI_MAX];
    reader_seq_fn seq;
    void *arg;
    uint64_t count;
    uint64_t per_chunk;         /* records per chunk */

    pthread_mutex_t mu;
    pthread_cond_t fetch_cv;    /* fetchers: a chunk or load is queued */
    pthread_cond_t plan_cv;     /* planner: the consumer moved on, or a
                                   shard it waits for is loaded */
    pthread_cond_t cons_cv;     /* consumer: planned or landed */
    int planner_waiting;
    uint64_t planner_wake;      /* cons_i at which the planner can go on */
    int consumer_waiting;
    pthread_t planner;
    pthread_t *fetchers;
    int nfetchers;
    int started;
    int stop;

    uint64_t plan_i;            /* next request to plan */
    uint64_t cons_i;            /* first request the consumer holds */
    uint64_t held_end;          /* end of the batch it holds */
    uint64_t want_end;          /* end of the batch it is waiting for */
    struct plan_entry *ring;
    uint64_t ring_cap;          /* a power of two */
    struct chunk *resident;
    struct chunk *qhead, *qtail;
    uint32_t loadq[PRELOAD_MAX];    /* shards to load in advance, FIFO */
    struct index_mem ispare[INDEX_SPARES];
    int nispare;
    int nloadq;
    int nearly;                 /* shards in advance, see PRELOAD_MAX */
    uint64_t bytes;             /* resident + in-flight */
    struct shard_slot *shards;
    sr_status fatal;            /* the planner could not go on */
    char fatal_msg[1024];
    struct reader_stats stats;

    pthread_mutex_t cache_mu;
    uint64_t cache_size;

    /* chunk buffers (chunk_bytes each) are reused instead of allocated
     * (and page-faulted) anew per chunk: at most spare_cap exist, in use
     * or spare, a window's worth and two */
    uint8_t **spare;
    size_t nspare, spare_cap, nbuffers;
};

/* A spare chunk buffer (lock held), or NULL when there is none: the
 * fetcher then allocates one after dropping the lock (big_alloc faults
 * all of its pages in, milliseconds the other threads need not wait). */
static uint8_t *take_spare(struct reader *r)
{
    return r->nspare ? r->spare[--r->nspare] : NULL;
}

/* Keep a buffer for reuse, or free it beyond the cap (lock held). */
static void give_buffer(struct reader *r, uint8_t *p)
{
    if (!p)
        return;
    if (r->nbuffers <= r->spare_cap && r->nspare < r->spare_cap) {
        r->spare[r->nspare++] = p;
        return;
    }
    free(p);
    r->nbuffers--;
}

void reader_default_opts(struct reader_opts *o)
{
    memset(o, 0, sizeof *o);
    o->window_bytes = READER_DEFAULT_WINDOW;
    o->chunk_bytes = READER_DEFAULT_CHUNK;
    o->fetchers = 8;
    o->attempts = 4;
    o->retry_delay_s = 0.5;
    o->cache_limit = 10ull << 30;
}

/* The resident chunk idx of shard, if any (lock held). */
static struct chunk *find_chunk(const struct reader *r, uint32_t shard,
                                uint64_t idx)
{
    const struct shard_slot *ss = &r->shards[shard];
    return ss->loaded ? ss->chunks[idx] : NULL;
}

/* Keep index memory for another shard's index, or free it (lock held). */
static void keep_index_mem(struct reader *r, struct index_mem m)
{
    if (m.p && r->nispare < INDEX_SPARES)
        r->ispare[r->nispare++] = m;
    else
        free(m.p);
}

/* Unload a shard, keeping its index memory (lock held). */
static void unload_shard(struct reader *r, struct shard_slot *ss)
{
    shard_info_free(&ss->si);
    keep_index_mem(r, ss->mem);
    ss->mem = (struct index_mem){ 0 };
    free(ss->chunks);
    ss->chunks = NULL;
    ss->loaded = 0;
}

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- local cache ---- */

static void cache_path(const struct reader *r, const struct chunk *c,
                       char *out, size_t cap)
{
    char key[STORAGE_URI_MAX + 96];
    char uri[STORAGE_URI_MAX];
    if (dataset_shard_uri(r->ds, c->shard, uri, sizeof uri) != SR_OK)
        uri[0] = '\0';
    int n = snprintf(key, sizeof key, "%s\n%llu\n%llu\n%llu", uri,
                     (unsigned long long)r->ds->shards[c->shard].bytes,
                     (unsigned long long)c->off, (unsigned long long)c->len);
    unsigned char d[32];
    unsigned int len = 0;
    EVP_Digest(key, (size_t)n, d, &len, EVP_sha256(), NULL);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    snprintf(out, cap, "%s/%.2s/%s.chunk", r->cache_dir, hex, hex + 2);
}

struct cache_file {
    char path[STORAGE_URI_MAX + 512];
    double mtime;
    uint64_t size;
};

static int older_first(const void *a, const void *b)
{
    const struct cache_file *x = a, *y = b;
    return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* Every chunk file in the cache; *total gets their bytes. */
static size_t cache_scan(const char *dir, struct cache_file **out,
                         uint64_t *total)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    *total = 0;
    DIR *top = opendir(dir);
    if (!top)
        return 0;
    struct dirent *e;
    while ((e = readdir(top)) != NULL) {
        if (strlen(e->d_name) != 2)
            continue;
        char sub[STORAGE_URI_MAX + 8];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        DIR *d = opendir(sub);
        struct dirent *f;
        while (d && (f = readdir(d)) != NULL) {
            if (!str_ends_with(f->d_name, ".chunk"))
                continue;
            struct cache_file cf;
            snprintf(cf.path, sizeof cf.path, "%s/%s", sub, f->d_name);
            struct stat sb;
            if (stat(cf.path, &sb) != 0)
                continue;
            cf.mtime = (double)sb.st_mtim.tv_sec;
            cf.size = (uint64_t)sb.st_size;
            *total += cf.size;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                struct cache_file *v = realloc(*out, nc * sizeof *v);
                if (!v)
                    break;
                *out = v;
                cap = nc;
            }
            (*out)[n++] = cf;
        }
        if (d)
            closedir(d);
    }
    closedir(top);
    return n;
}

/* Keep the cache under its limit: drop the oldest chunk files. */
static void cache_trim(struct reader *r, uint64_t incoming)
{
    if (r->cache_size + incoming <= r->o.cache_limit)
        return;
    struct cache_file *v;
    uint64_t total;
    size_t n = cache_scan(r->cache_dir, &v, &total);
    qsort(v, n, sizeof *v, older_first);
    uint64_t target = r->o.cache_limit / 10 * 9;
    for (size_t i = 0; i < n && total + incoming > target; i++)
        if (unlink(v[i].path) == 0)
            total -= v[i].size;
    r->cache_size = total;
    free(v);
}

static int cache_read(struct reader *r, const struct chunk *c, uint8_t *dst)
{
    char path[STORAGE_URI_MAX + 80];
    cache_path(r, c, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat sb;
    int ok = fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == c->len;
    for (uint64_t done = 0; ok && done < c->len;) {
        ssize_t k = pread(fd, dst + done, c->len - done, (off_t)done);
        if (k <= 0)
            ok = 0;
        else
            done += (uint64_t)k;
    }
    close(fd);
    if (ok)
        utimensat(AT_FDCWD, path, NULL, 0);     /* recently used */
    return ok;
}

/* Best effort: a chunk that cannot be cached is simply fetched again. */
static void cache_write(struct reader *r, const struct chunk *c,
                        const uint8_t *src)
{
    char path[STORAGE_URI_MAX + 80], dir[STORAGE_URI_MAX + 80];
    char tmp[STORAGE_URI_MAX + 112];
    cache_path(r, c, path, sizeof path);
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *slash = '\0';
    mkdir(dir, 0755);
    pthread_mutex_lock(&r->cache_mu);
    cache_trim(r, c->len);
    pthread_mutex_unlock(&r->cache_mu);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)gettid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    int ok = 1;
    for (uint64_t done = 0; ok && done < c->len;) {
        ssize_t k = write(fd, src + done, c->len - done);
        if (k <= 0)
            ok = 0;
        else
            done += (uint64_t)k;
    }
    close(fd);
    if (ok && rename(tmp, path) == 0) {
        pthread_mutex_lock(&r->cache_mu);
        r->cache_size += c->len;
        pthread_mutex_unlock(&r->cache_mu);
    } else {
        unlink(tmp);
    }
}

/* ---- fetching ---- */

/* Checking records as their bytes land. The tap of a chunk's read runs
 * one CRC over the pieces while each is in cache, as long as they come
 * in order from the chunk's start (a retry starts there again); the
 * landed chunk then passes if that CRC is what the records' stored CRCs
 * give joined (shard_run_ok). Otherwise (pieces out of order, from the
 * cache, or a shard whose index is not dense) the chunk is checked in
 * dst afterwards. */
struct landing {
    const struct chunk *c;
    uint64_t next;              /* object offset the run has reached */
    uint32_t crc;               /* of bytes c->off..next */
    int in_order;
};

static void landing_tap(void *arg, uint64_t off, const void *p, size_t n)
{
    struct landing *l = arg;
    if (off == l->c->off) {     /* the first piece, or a retry's */
        l->next = off;
        l->crc = 0;
        l->in_order = 1;
    }
    if (!l->in_order || off != l->next) {
        l->in_order = 0;
        return;
    }
    l->crc = shard_crc(l->crc, p, n);
    l->next += n;
}

/* Read one chunk's bytes (of the shard at uri): the cache, else storage
 * with retries. */
static sr_status fetch_chunk(struct reader *r, struct chunk *c,
                             const char *uri, uint8_t *dst,
                             const struct storage_tap *tap, int *from_cache,
                             int *tries)
{
    *from_cache = 0;
    *tries = 0;
    if (r->cache_dir[0] && cache_read(r, c, dst)) {
        *from_cache = 1;
        return SR_OK;
    }
    double delay = r->o.retry_delay_s;
    sr_status s = SR_OK;
    for (int a = 0; a < r->o.attempts; a++) {
        *tries = a + 1;
        s = storage_read_tap(r->st, uri, c->off, dst, (size_t)c->len, tap);
        if (s == SR_OK)
            break;
        if (a + 1 < r->o.attempts) {
            log_warn("reading %s bytes %llu-%llu failed (%s); trying again "
                     "in %.1f s", uri, (unsigned long long)c->off,
                     (unsigned long long)(c->off + c->len - 1),
                     sr_errmsg_user(), delay);
            sleep_s(delay);
            delay *= 2;
        }
    }
    if (s != SR_OK)
        return SR_FAIL(s, "%s: bytes %llu-%llu could not be read after %d "
                       "attempts: %s", uri, (unsigned long long)c->off,
                       (unsigned long long)(c->off + c->len - 1),
                       r->o.attempts, sr_errmsg_user());
    if (r->cache_dir[0])
        cache_write(r, c, dst);
    return SR_OK;
}

/* Check every record of a landed chunk against its CRC, once, off the
 * consumer's path: by the tap's CRC when it saw every byte in order,
 * else in the buffer (shard_check_records: one CRC over a dense run,
 * record by record when that fails, naming the first bad record). The
 * shard's index stays loaded while the chunk is resident. */
static sr_status verify_chunk(const struct shard_info *si,
                              const struct landing *l, const char *uri,
                              const uint8_t *data)
{
    const struct chunk *c = l->c;
    if (l->in_order && l->next == c->off + c->len &&
        shard_run_ok(si, c->first, c->end, l->crc))
        return SR_OK;
    return shard_check_records(si, c->first, c->end, data, c->off, uri);
}

static sr_status load_shard_locked(struct reader *r, uint32_t s);

/* Load the first queued shard in advance (lock held; dropped while it is
 * read). */
static void preload_one(struct reader *r)
{
    uint32_t s = r->loadq[0];
    memmove(r->loadq, r->loadq + 1, (size_t)(--r->nloadq) * sizeof *r->loadq);
    r->shards[s].load = L_LOADING;
    if (load_shard_locked(r, s) != SR_OK) {
        r->shards[s].load = L_FAILED;
        r->nearly--;
    }
    if (r->planner_waiting)
        pthread_cond_signal(&r->plan_cv);
}

/*
 * The read-ahead threads (fetchers and planner) run READER_NICE below the
 * thread that opened the reader: the loop that uses the records comes
 * first, and so does a storage server sharing the machine, as the
 * benchmark's does. They wake at every piece received and every chunk
 * landed; at equal priority each wakeup could take a core from a busy
 * thread, and the server's event loop waited the longer for one. Lower,
 * they run where a core is free, and under full load still get a share
 * (nice 10: a tenth of a nice-0 thread's weight each).
 */
#define READER_NICE 10

static void lower_priority(void)
{
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, 0);  /* this thread's, on Linux */
    if (errno == 0)
        (void)setpriority(PRIO_PROCESS, 0, cur + READER_NICE);
}

static void *fetcher_main(void *arg)
{
    struct reader *r = arg;
    lower_priority();
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->qhead && !r->nloadq && !r->stop)
            pthread_cond_wait(&r->fetch_cv, &r->mu);
        if (r->stop)
            break;
        if (r->nloadq) {    /* what the planner will soon wait for */
            preload_one(r);
            continue;
        }
        struct chunk *c = r->qhead;
        r->qhead = c->qnext;
        if (!r->qhead)
            r->qtail = NULL;
        c->state = C_FETCHING;
        uint8_t *buf = take_spare(r);
        int fresh = !buf;
        pthread_mutex_unlock(&r->mu);
        if (fresh)
            buf = big_alloc(r->o.chunk_bytes);

        int from_cache = 0, tries = 0;
        const struct shard_info *si = &r->shards[c->shard].si;
        struct landing l = { .c = c };
        struct storage_tap tap = { landing_tap, &l };
        char uri[STORAGE_URI_MAX];
        sr_status s = buf
            ? dataset_shard_uri(r->ds, c->shard, uri, sizeof uri)
            : SR_FAIL(SR_ERR_NOMEM, "out of memory for a %llu-byte chunk",
                      (unsigned long long)c->len);
        if (s == SR_OK)
            s = fetch_chunk(r, c, uri, buf, si->dense ? &tap : NULL,
                            &from_cache, &tries);
        if (s == SR_OK)
            s = verify_chunk(si, &l, uri, buf);
        char *msg = s == SR_OK ? NULL : strdup(sr_errmsg_user());

        pthread_mutex_lock(&r->mu);
        if (fresh && buf)
            r->nbuffers++;
        if (s == SR_OK) {
            c->data = buf;
            c->state = C_READY;
            if (from_cache) {
                r->stats.cache_hits++;
                r->stats.cache_bytes += c->len;
            } else {
                r->stats.requests += (uint64_t)tries;
                r->stats.bytes_fetched += c->len;
                r->stats.retries += (uint64_t)(tries - 1);
            }
        } else {
            give_buffer(r, buf);
            c->state = C_FAILED;
            c->err = s;
            c->errmsg = msg;
        }
        if (r->consumer_waiting)
            pthread_cond_signal(&r->cons_cv);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- planning ---- */

/* Make m hold at least n bytes, keeping what it holds. */
static int index_mem_fit(struct index_mem *m, size_t n)
{
    if (m->cap >= n)
        return 1;
    uint8_t *p = realloc(m->p, n);
    if (!p)
        return 0;
    m->p = p;
    m->cap = n;
    return 1;
}

/* Header, schema and index of shard s (lock not held), read into m (an
 * index read kept from another shard, or empty), where si's index then
 * points. One read, sized from the
 * record count the dataset lists (schema text is small), gets them all
 * in the usual case; a second one fetches whatever is left. */
#define SCHEMA_SLACK (16u << 10)

static sr_status load_shard(struct reader *r, uint32_t s,
                            struct shard_info *si, struct index_mem *m)
{
    char uri[STORAGE_URI_MAX];
    SR_TRY(dataset_shard_uri(r->ds, s, uri, sizeof uri));
    const struct dataset_shard *d = &r->ds->shards[s];
    uint64_t size = d->bytes;
    uint64_t got = SHARD_HEADER_BYTES + SCHEMA_SLACK +
                   d->nrec * SHARD_INDEX_ENTRY_BYTES;
    if (got > size)
        got = size;
    if (got < SHARD_HEADER_BYTES)
        got = SHARD_HEADER_BYTES;      /* too short: the header says so */
    if (!index_mem_fit(m, (size_t)got))
        return SR_FAIL(SR_ERR_NOMEM, "%s: out of memory for the index", uri);
    struct shard_header h;
    sr_status st = storage_read(r->st, uri, 0, m->p, (size_t)got);
    if (st == SR_OK)
        st = shard_parse_header(&h, m->p, size, uri);
    uint64_t plen = st == SR_OK ? shard_prefix_bytes(&h) : 0;
    if (st == SR_OK && plen > got) {
        if (!index_mem_fit(m, (size_t)plen))
            st = SR_FAIL(SR_ERR_NOMEM, "%s: out of memory for the index",
                         uri);
        if (st == SR_OK)
            st = storage_read(r->st, uri, got, m->p + got,
                              (size_t)(plen - got));
    }
    if (st == SR_OK)
        st = shard_parse_in_place(si, m->p, plen, size, uri);
    if (st == SR_OK) {
        st = dataset_check_shard(r->ds, s, si, uri);
        if (st != SR_OK)
            shard_info_free(si);
    }
    return st;
}

/* load_shard, and make the index current with an empty table of the
 * shard's chunks (lock held; dropped while the shard is read). */
static sr_status load_shard_locked(struct reader *r, uint32_t s)
{
    struct shard_info si;
    struct chunk **chunks = NULL;
    struct index_mem m = { 0 };
    if (r->nispare)
        m = r->ispare[--r->nispare];
    pthread_mutex_unlock(&r->mu);
    sr_status st = load_shard(r, s, &si, &m);
    if (st == SR_OK) {
        uint64_t n = (si.h.nrec + r->per_chunk - 1) / r->per_chunk;
        chunks = calloc(n ? n : 1, sizeof *chunks);
        if (!chunks) {
            shard_info_free(&si);
            st = SR_FAIL(SR_ERR_NOMEM, "out of memory");
        }
    }
    pthread_mutex_lock(&r->mu);
    if (st != SR_OK) {
        keep_index_mem(r, m);
        return st;
    }
    struct shard_slot *ss = &r->shards[s];
    int early = ss->load == L_LOADING;
    ss->load = L_NONE;
    ss->si = si;
    ss->mem = m;
    ss->chunks = chunks;
    ss->loaded = 1;
    ss->early = early;
    r->stats.indexes++;
    r->stats.indexes_ahead += (uint64_t)early;
    return SR_OK;
}

/* Free chunks the consumer is done with (lock held). */
static void release_done(struct reader *r)
{
    struct chunk **pp = &r->resident;
    while (*pp) {
        struct chunk *c = *pp;
        if (c->last_use >= r->cons_i || c->state == C_QUEUED ||
            c->state == C_FETCHING) {
            pp = &c->rnext;
            continue;
        }
        *pp = c->rnext;
        r->bytes -= c->len;
        struct shard_slot *ss = &r->shards[c->shard];
        ss->chunks[c->idx] = NULL;
        if (--ss->refs == 0)
            unload_shard(r, ss);
        give_buffer(r, c->data);
        free(c->errmsg);
        free(c);
    }
}

/* Records and byte range of chunk c (shard and idx set) of a loaded
 * shard. */
static void chunk_span(const struct reader *r, struct chunk *c)
{
    const struct shard_info *si = &r->shards[c->shard].si;
    uint64_t first = c->idx * r->per_chunk;
    uint64_t end = first + r->per_chunk < si->h.nrec ? first + r->per_chunk
                                                     : si->h.nrec;
    c->first = first;
    c->end = end;
    if (si->dense) {    /* records back to back: no need to look */
        c->off = si->h.data_off + first * si->schema.record_bytes;
        c->len = (end - first) * si->schema.record_bytes;
        return;
    }
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t k = first; k < end; k++) {
        uint64_t o;
        uint32_t l;
        shard_record_span(si, k, &o, &l);
        if (o < lo)
            lo = o;
        if (o + l > hi)
            hi = o + l;
    }
    c->off = lo;
    c->len = hi - lo;
}

static void set_fatal(struct reader *r, sr_status s)
{
    r->fatal = s;
    snprintf(r->fatal_msg, sizeof r->fatal_msg, "%s", sr_errmsg_user());
    pthread_cond_broadcast(&r->cons_cv);
}

/* The planner sleeps until the consumer reaches request `wake`, asks for
 * a request not planned yet, or the reader stops (lock held). Those are
 * checked first: the planner may have dropped the lock since it looked. */
static void planner_wait(struct reader *r, uint64_t wake)
{
    if (r->stop || r->cons_i >= wake || r->plan_i < r->want_end)
        return;
    r->planner_waiting = 1;
    r->planner_wake = wake;
    pthread_cond_wait(&r->plan_cv, &r->mu);
    r->planner_waiting = 0;
}

/* The first cons_i at which release_done frees a resident chunk: one past
 * the smallest last_use (lock held). */
static uint64_t first_release(const struct reader *r)
{
    uint64_t m = UINT64_MAX;
    for (const struct chunk *c = r->resident; c; c = c->rnext)
        if (c->last_use < m)
            m = c->last_use;
    return m == UINT64_MAX ? m : m + 1;
}

/* The planner's lookahead: the next requests' records, computed without
 * the lock. Entries [pj, pn) are requests plan_i, plan_i + 1, ... It holds
 * at least cap / 2 of them (while there are that many left); cap is a
 * window's worth of records (within bounds). The planner goes through a
 * shuffle block's requests in a burst once the window has room for its
 * chunks, and then waits at the next block; by then the lookahead has
 * seen the shards after that, and their indexes are loaded while it
 * waits (entries [pj, sj) have been looked at for that).
 *
 * A resident chunk that one of the next KEEP_AHEAD requests reads is kept
 * at least until then: entries [pj, kn) count in last_use. A shuffle block
 * shares a chunk with the next one; without this, that chunk would be
 * freed as the first block ends and fetched again for the second. (Only
 * the near ones: a chunk kept for a far request would hold window space
 * the requests before it need.) */
#define KEEP_AHEAD 4096
#define LOOKAHEAD_MAX (512u << 10)

struct lookahead {
    uint64_t *ids;
    uint32_t *shards;
    uint32_t *chunks;           /* chunk number in the shard */
    size_t cap;
    size_t pj, pn, kn, sj;
    uint32_t recent[4];         /* shards of the last records found, newest
                                 * first: a shuffle block spans a few */
};

static void lookahead_free(struct lookahead *la)
{
    if (!la)
        return;
    free(la->ids);
    free(la->chunks);
    free(la->shards);
    free(la);
}

static struct lookahead *lookahead_new(const struct reader *r)
{
    struct lookahead *la = calloc(1, sizeof *la);
    if (!la)
        return NULL;
    uint64_t n = r->o.window_bytes / r->ds->schema.record_bytes;
    la->cap = n < KEEP_AHEAD * 2 ? KEEP_AHEAD * 2
            : n > LOOKAHEAD_MAX ? LOOKAHEAD_MAX : (size_t)n;
    la->ids = malloc(la->cap * sizeof *la->ids);
    la->chunks = malloc(la->cap * sizeof *la->chunks);
    la->shards = malloc(la->cap * sizeof *la->shards);
    if (!la->ids || !la->chunks || !la->shards) {
        lookahead_free(la);
        return NULL;
    }
    return la;
}

/* The shard holding record id: one of the recent ones, else looked up. */
static uint32_t shard_of(const struct dataset *ds, struct lookahead *la,
                         uint64_t id)
{
    for (int i = 0; i < 4; i++) {
        const struct dataset_shard *h = &ds->shards[la->recent[i]];
        if (id >= h->first && id - h->first < h->nrec)
            return la->recent[i];
    }
    memmove(la->recent + 1, la->recent, 3 * sizeof *la->recent);
    la->recent[0] = dataset_find_shard(ds, id);
    return la->recent[0];
}

/* Raise c's last_use to `use` (a request that reads it). */
static void keep_until(struct chunk *c, uint64_t use)
{
    if (c->last_use < use)
        c->last_use = use;
}

/* Fill the lookahead up to cap requests (lock held; dropped while the
 * sequence is computed, which only the planner does, as it alone makes
 * and frees chunks). */
static sr_status lookahead_fill(struct reader *r, struct lookahead *la)
{
    size_t have = la->pn - la->pj;
    memmove(la->ids, la->ids + la->pj, have * sizeof *la->ids);
    memmove(la->shards, la->shards + la->pj, have * sizeof *la->shards);
    memmove(la->chunks, la->chunks + la->pj, have * sizeof *la->chunks);
    /* (the planner may have gone past where the scans stopped) */
    la->kn = la->kn > la->pj ? la->kn - la->pj : 0;
    la->sj = la->sj > la->pj ? la->sj - la->pj : 0;
    la->pj = 0;
    la->pn = have;
    uint64_t first = r->plan_i + have, left = r->count - first;
    size_t k = left < la->cap - have ? (size_t)left : la->cap - have;
    pthread_mutex_unlock(&r->mu);
    sr_status bad = SR_OK;
    for (size_t j = have; j < have + k; j++) {
        uint64_t id = r->seq(r->arg, first + (j - have));
        if (id >= r->ds->nrec) {
            bad = SR_FAIL(SR_ERR_INTERNAL, "request %llu asks for record "
                          "%llu of %llu",
                          (unsigned long long)(first + (j - have)),
                          (unsigned long long)id,
                          (unsigned long long)r->ds->nrec);
            break;
        }
        la->ids[j] = id;
        uint32_t shard = shard_of(r->ds, la, id);
        la->shards[j] = shard;
        la->chunks[j] = (uint32_t)((id - r->ds->shards[shard].first) /
                                   r->per_chunk);
    }
    pthread_mutex_lock(&r->mu);
    if (bad != SR_OK)
        return bad;
    la->pn = have + k;
    return SR_OK;
}

/* Count the entries up to KEEP_AHEAD past pj in their resident chunks'
 * last_use (lock held). */
static void keep_ahead(struct reader *r, struct lookahead *la)
{
    size_t end = la->pj + KEEP_AHEAD < la->pn ? la->pj + KEEP_AHEAD : la->pn;
    for (size_t j = la->kn > la->pj ? la->kn : la->pj; j < end; j++) {
        struct chunk *c = find_chunk(r, la->shards[j], la->chunks[j]);
        if (c)
            keep_until(c, r->plan_i + (j - la->pj));
    }
    la->kn = end;
}

/* A new chunk for lookahead entry pj: kept for the entries after it, up
 * to kn, that read it too. */
static void keep_for_lookahead(struct reader *r, const struct lookahead *la,
                               struct chunk *c)
{
    for (size_t k = la->pj + 1; k < la->kn; k++)
        if (la->shards[k] == c->shard && la->chunks[k] == c->idx)
            keep_until(c, r->plan_i + (k - la->pj));
}

/* Queue the index loads of shards the lookahead sees coming, nearest
 * first, while fewer than PRELOAD_MAX are in advance (lock held). Each
 * entry is looked at once: a shard still loaded then, and dropped before
 * its turn, is loaded by the planner where it needs it. (Looking again
 * after every drop read no more ahead: 59-61 of 63 indexes either way in
 * three two-epoch `data stream` runs of 32 shards each.) */
static void preload_ahead(struct reader *r, struct lookahead *la)
{
    uint32_t last = UINT32_MAX;
    size_t j = la->sj > la->pj ? la->sj : la->pj;
    for (; j < la->pn && r->nearly < PRELOAD_MAX; j++) {
        uint32_t s = la->shards[j];
        if (s == last)
            continue;
        last = s;
        struct shard_slot *ss = &r->shards[s];
        if (ss->loaded || ss->load != L_NONE)
            continue;
        ss->load = L_QUEUED;
        r->loadq[r->nloadq++] = s;
        r->nearly++;
        pthread_cond_signal(&r->fetch_cv);
    }
    la->sj = j;
}

/* Get shard s's index for the plan (lock held; dropped while it is read
 * or waited for). Returns 0 when the planner must look again from the
 * top (it waited), 1 when the shard is loaded, -1 on a fatal error. A
 * shard whose read ahead failed is read here once more: a run fails on
 * the error of a read where the plan needs the shard, or not at all. */
static int need_shard(struct reader *r, uint32_t s)
{
    struct shard_slot *ss = &r->shards[s];
    if (ss->load == L_LOADING) {    /* a fetcher has it: wait */
        r->planner_waiting = 1;
        pthread_cond_wait(&r->plan_cv, &r->mu);
        r->planner_waiting = 0;
        return 0;
    }
    if (ss->load == L_QUEUED) {     /* not started: load it here */
        int i = 0;
        while (r->loadq[i] != s)
            i++;
        memmove(r->loadq + i, r->loadq + i + 1,
                (size_t)(r->nloadq - i - 1) * sizeof *r->loadq);
        r->nloadq--;
        r->nearly--;
    }
    ss->load = L_NONE;
    sr_status st = load_shard_locked(r, s);
    if (st != SR_OK) {
        set_fatal(r, st);
        return -1;
    }
    return 1;
}

static void *planner_main(void *arg)
{
    struct reader *r = arg;
    lower_priority();
    struct lookahead *la = lookahead_new(r);
    uint64_t released_at = UINT64_MAX;
    pthread_mutex_lock(&r->mu);
    if (!la)
        set_fatal(r, SR_FAIL(SR_ERR_NOMEM, "out of memory for the reader"));
    while (!r->stop && r->fatal == SR_OK) {
        /* (the lookahead first: what it reads is not released) */
        if (la->pn - la->pj < la->cap / 2 &&
            r->plan_i + (la->pn - la->pj) < r->count) {
            sr_status bad = lookahead_fill(r, la);
            if (bad != SR_OK) {
                set_fatal(r, bad);
                break;
            }
        }
        keep_ahead(r, la);
        preload_ahead(r, la);
        if (r->cons_i != released_at) {
            release_done(r);
            released_at = r->cons_i;
        }
        if (la->pj == la->pn) {
            /* all is planned; what is left is to release chunks as the
             * consumer moves on */
            planner_wait(r, first_release(r));
            continue;
        }
        /* plan entries until the lookahead is done or something must
         * wait */
        size_t planned = 0;
        int again = 0;
        while (la->pj < la->pn) {
            if (r->plan_i - r->cons_i >= r->ring_cap)
                break;
            size_t pj = la->pj;
            uint32_t shard = la->shards[pj];
            struct shard_slot *ss = &r->shards[shard];
            if (!ss->loaded) {
                int got = need_shard(r, shard);
                if (got <= 0) {
                    again = got == 0;
                    break;
                }
            }
            if (la->kn - pj < KEEP_AHEAD / 2)
                keep_ahead(r, la);
            uint64_t idx = la->chunks[pj];
            struct chunk *c = find_chunk(r, shard, idx);
            if (!c && r->cons_i != released_at) {
                /* the consumer moved on while this was planned: release
                 * what it is done with first, from the top */
                again = 1;
                break;
            }
            if (!c) {
                struct chunk geo = { .shard = shard, .idx = idx };
                chunk_span(r, &geo);
                /* Room comes as the consumer moves on; but a request of
                 * the batch it is waiting for is always admitted (a batch
                 * spread over more chunks than the window holds would
                 * otherwise wait forever). */
                if (r->bytes + geo.len > r->o.window_bytes && r->resident &&
                    r->plan_i >= r->want_end)
                    break;
                c = calloc(1, sizeof *c);
                if (!c) {
                    set_fatal(r, SR_FAIL(SR_ERR_NOMEM, "out of memory"));
                    break;
                }
                *c = geo;
                c->state = C_QUEUED;
                pthread_cond_signal(&r->fetch_cv);
                ss->chunks[idx] = c;
                c->rnext = r->resident;
                r->resident = c;
                if (r->qtail)
                    r->qtail->qnext = c;
                else
                    r->qhead = c;
                r->qtail = c;
                ss->refs++;
                if (ss->early) {    /* in use now: room for another */
                    ss->early = 0;
                    r->nearly--;
                    preload_ahead(r, la);
                }
                r->bytes += c->len;
                if (r->bytes > r->stats.peak_bytes)
                    r->stats.peak_bytes = r->bytes;
                keep_for_lookahead(r, la, c);
            }
            keep_until(c, r->plan_i);
            r->ring[r->plan_i & (r->ring_cap - 1)] = (struct plan_entry){
                .c = c, .id = la->ids[pj] };
            r->plan_i++;
            la->pj++;
            planned++;
        }
        if (r->fatal != SR_OK)
            break;
        if (planned && r->consumer_waiting)
            pthread_cond_signal(&r->cons_cv);
        if (planned || again || la->pj == la->pn)
            continue;
        /* blocked: wait for the consumer */
        if (r->plan_i - r->cons_i >= r->ring_cap)
            planner_wait(r, r->plan_i - r->ring_cap + 1);
        else
            planner_wait(r, first_release(r));
    }
    pthread_mutex_unlock(&r->mu);
    lookahead_free(la);
    return NULL;
}

/* ---- public ---- */

sr_status reader_open(struct reader **out, struct storage *st,
                      const struct dataset *ds,
                      const struct reader_opts *opts, reader_seq_fn seq,
                      void *arg, uint64_t count)
{
    struct reader *r = calloc(1, sizeof *r);
    if (!r)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    r->st = st;
    r->ds = ds;
    r->o = *opts;
    if (r->o.window_bytes < (1u << 20))
        r->o.window_bytes = 1u << 20;
    if (r->o.chunk_bytes > r->o.window_bytes / 4)
        r->o.chunk_bytes = r->o.window_bytes / 4;
    if (r->o.fetchers < 1)
        r->o.fetchers = 1;
    if (r->o.attempts < 1)
        r->o.attempts = 1;
    r->seq = seq;
    r->arg = arg;
    r->count = count;
    size_t rb = ds->schema.record_bytes;
    r->per_chunk = r->o.chunk_bytes / rb ? r->o.chunk_bytes / rb : 1;
    r->ring_cap = RING_MIN;     /* a window's records, rounded up */
    while (r->ring_cap < r->o.window_bytes / rb && r->ring_cap < RING_MAX)
        r->ring_cap *= 2;
    sr_status s = SR_OK;
    for (uint32_t i = 0; i < ds->nshards && s == SR_OK; i++)
        if (ds->shards[i].nrec / r->per_chunk >= UINT32_MAX)
            s = SR_FAIL(SR_ERR_USAGE, "%s: %llu records make too many "
                        "chunks of %llu bytes; raise --read-chunk",
                        ds->shards[i].name,
                        (unsigned long long)ds->shards[i].nrec,
                        (unsigned long long)r->o.chunk_bytes);
    if (s == SR_OK && opts->cache_dir && opts->cache_dir[0]) {
        if (str_copy(r->cache_dir, sizeof r->cache_dir, opts->cache_dir))
            s = SR_FAIL(SR_ERR_USAGE, "--cache-dir is too long");
        else if (mkdir(r->cache_dir, 0755) != 0 && errno != EEXIST)
            s = SR_FAIL(SR_ERR_IO, "%s: cannot create the cache directory: "
                        "%s", r->cache_dir, strerror(errno));
    }
    r->ring = calloc(r->ring_cap, sizeof *r->ring);
    r->shards = calloc(ds->nshards, sizeof *r->shards);
    r->spare_cap = (size_t)(r->o.window_bytes / r->o.chunk_bytes) + 2;
    r->spare = calloc(r->spare_cap, sizeof *r->spare);
    r->fetchers = calloc((size_t)r->o.fetchers, sizeof *r->fetchers);
    if (s == SR_OK && (!r->ring || !r->shards || !r->fetchers || !r->spare))
        s = SR_FAIL(SR_ERR_NOMEM, "out of memory for the reader");
    if (s != SR_OK) {
        free(r->ring);
        free(r->shards);
        free(r->fetchers);
        free(r->spare);
        free(r);
        return s;
    }
    if (r->cache_dir[0]) {
        struct cache_file *v;
        cache_scan(r->cache_dir, &v, &r->cache_size);
        free(v);
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->cache_mu, NULL);
    pthread_cond_init(&r->fetch_cv, NULL);
    pthread_cond_init(&r->plan_cv, NULL);
    pthread_cond_init(&r->cons_cv, NULL);
    r->started = pthread_create(&r->planner, NULL, planner_main, r) == 0;
    for (int i = 0; r->started && i < r->o.fetchers; i++) {
        if (pthread_create(&r->fetchers[i], NULL, fetcher_main, r) != 0)
            break;
        r->nfetchers++;
    }
    if (!r->started || r->nfetchers == 0) {
        reader_close(r);
        return SR_FAIL(SR_ERR_NOMEM, "cannot start the reader's threads");
    }
    *out = r;
    return SR_OK;
}

static void consumer_wait(struct reader *r)
{
    r->consumer_waiting = 1;
    pthread_cond_wait(&r->cons_cv, &r->mu);
    r->consumer_waiting = 0;
}

sr_status reader_next(struct reader *r, size_t n, const uint8_t **recs,
                      uint64_t *ids)
{
    double t0 = now_s();
    sr_status s = SR_OK;
    pthread_mutex_lock(&r->mu);
    if (n > r->ring_cap)
        s = SR_FAIL(SR_ERR_INTERNAL, "reader: %zu requests at once, ring "
                    "holds %llu", n, (unsigned long long)r->ring_cap);
    if (s == SR_OK && r->held_end + n > r->count)
        s = SR_FAIL(SR_ERR_INTERNAL, "reader: asked past the %llu planned "
                    "requests", (unsigned long long)r->count);
    if (s == SR_OK) {
        r->cons_i = r->held_end;    /* the previous batch is released */
        r->want_end = r->held_end + n;
        if (r->planner_waiting && (r->cons_i >= r->planner_wake ||
                                   r->plan_i < r->want_end))
            pthread_cond_signal(&r->plan_cv);
    }
    uint64_t start = r->cons_i;
    for (size_t k = 0; s == SR_OK && k < n; k++) {
        uint64_t i = start + k;
        while (r->plan_i <= i && r->fatal == SR_OK)
            consumer_wait(r);
        if (r->plan_i <= i) {
            s = SR_FAIL(r->fatal, "%s", r->fatal_msg);
            break;
        }
        struct plan_entry *e = &r->ring[i & (r->ring_cap - 1)];
        while (e->c->state == C_QUEUED || e->c->state == C_FETCHING)
            consumer_wait(r);
        if (e->c->state == C_FAILED) {
            s = SR_FAIL(e->c->err, "%s", e->c->errmsg ? e->c->errmsg
                        : "chunk read failed");
            break;
        }
        uint32_t shard = e->c->shard;
        uint64_t off = shard_record_off(&r->shards[shard].si,
                                        e->id - r->ds->shards[shard].first);
        recs[k] = e->c->data + (off - e->c->off);
        ids[k] = e->id;
    }
    if (s == SR_OK)
        r->held_end = start + n;
    r->stats.wait_s += now_s() - t0;
    if (s == SR_OK)
        r->stats.records += n;
    pthread_mutex_unlock(&r->mu);
    return s;
}

void reader_get_stats(struct reader *r, struct reader_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

void reader_close(struct reader *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->fetch_cv);
    pthread_cond_broadcast(&r->plan_cv);
    pthread_cond_broadcast(&r->cons_cv);
    pthread_mutex_unlock(&r->mu);
    if (r->started)
        pthread_join(r->planner, NULL);
    for (int i = 0; i < r->nfetchers; i++)
        pthread_join(r->fetchers[i], NULL);
    for (struct chunk *c = r->resident, *next; c; c = next) {
        next = c->rnext;
        free(c->data);
        free(c->errmsg);
        free(c);
    }
    for (uint32_t s = 0; r->shards && s < r->ds->nshards; s++)
        if (r->shards[s].loaded)
            unload_shard(r, &r->shards[s]);
    pthread_cond_destroy(&r->fetch_cv);
    pthread_cond_destroy(&r->plan_cv);
    pthread_cond_destroy(&r->cons_cv);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->cache_mu);
    for (size_t i = 0; i < r->nspare; i++)
        free(r->spare[i]);
    for (int i = 0; i < r->nispare; i++)
        free(r->ispare[i].p);
    free(r->spare);
    free(r->ring);
    free(r->shards);
    free(r->fetchers);
    free(r);
}
