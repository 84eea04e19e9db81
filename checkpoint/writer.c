/*
 * writer.c: the background checkpoint thread. One mutex guards the job
 * state; the thread sleeps on a condition variable until a job is handed
 * to it and broadcasts when done. Whoever holds the job (this thread for
 * JOB_THREAD, the caller for JOB_CALLER) is the only one building an image
 * in the arena.
 */
#include "writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"

struct ckpt_writer {
    struct ckpt_writer_opts o;
    char root[STORAGE_URI_MAX];
    char *config_json;
    float *params, *opt_state;
    struct sr_buf arena;    /* where each checkpoint's HDF5 image is built */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    enum {
        JOB_PREFAULT,       /* the thread is touching its buffers at start */
        JOB_IDLE,
        JOB_THREAD,         /* submitted: pending or running in the thread */
        JOB_CALLER,         /* ckpt_writer_write_now, in the caller's thread */
        JOB_STOP,           /* the thread is to end */
    } state;
    struct ckpt_meta job;   /* the job of JOB_THREAD or JOB_CALLER */
    sr_status last;         /* status of the last finished job */
    char last_err[512];
    struct ckpt_writer_stats stats;
};

/* Build, commit and prune one checkpoint; runs in either thread. */
static sr_status write_one(struct ckpt_writer *w, const struct ckpt_meta *m)
{
    double t0 = now_s();
    size_t len = 0;
    sr_status s = ckpt_image_in(&w->arena, &len, m, w->config_json,
                                w->params, w->opt_state);
    double t1 = now_s();
    if (s == SR_OK)
        s = ckpt_commit(w->o.st, w->root, m, w->arena.data, len);
    if (s == SR_ERR_EXISTS) {
        log_info("checkpoint step %lld already committed under %s",
                 (long long)m->step, w->root);
        s = SR_OK;
    } else if (s == SR_OK) {
        double dt = now_s() - t0, up = now_s() - t1;
        char b[32];
        log_info("checkpoint step %lld committed to %s (%s: image %.2f s, "
                 "write %.2f s, %.0f MB/s)", (long long)m->step, w->root,
                 fmt_bytes(b, sizeof b, len), t1 - t0, up,
                 up > 0 ? (double)len / up / 1e6 : 0.0);
        pthread_mutex_lock(&w->mu);
        w->stats.committed++;
        w->stats.last_step = m->step;
        w->stats.last_write_s = dt;
        w->stats.last_bytes = len;
        w->stats.write_s += dt;
        pthread_mutex_unlock(&w->mu);
        s = ckpt_prune(w->o.st, w->root, w->o.keep);
        if (s != SR_OK) {
            log_warn("removing old checkpoints failed: %s",
                     sr_errmsg_user());
            s = SR_OK;
        }
    }
    return s;
}

/* Touch the snapshot buffers and the image arena once, in this thread
 * while training starts, so the first checkpoint (often the emergency one
 * of a resumed run) does not pay a page fault per 4 KiB of state. */
static void prefault(struct ckpt_writer *w)
{
    size_t state = (w->o.nparams + w->o.nstate) * sizeof(float);
    memset(w->params, 0, w->o.nparams * sizeof(float));
    memset(w->opt_state, 0, w->o.nstate * sizeof(float));
    /* the image: the state plus a little metadata */
    size_t image = state + state / 64 + (1u << 20);
    if (buf_reserve(&w->arena, image) == SR_OK)
        memset(w->arena.data, 0, image);
    else
        sr_clear_error();      /* the first checkpoint grows it instead */
}

static void *writer_main(void *arg)
{
    struct ckpt_writer *w = arg;
    prefault(w);
    pthread_mutex_lock(&w->mu);
    w->state = JOB_IDLE;
    pthread_cond_broadcast(&w->cv);
    for (;;) {
        while (w->state != JOB_THREAD && w->state != JOB_STOP)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->state == JOB_STOP)
            break;
        struct ckpt_meta m = w->job;
        pthread_mutex_unlock(&w->mu);
        sr_status s = write_one(w, &m);
        pthread_mutex_lock(&w->mu);
        w->last = s;
        if (s != SR_OK) {
            snprintf(w->last_err, sizeof w->last_err, "%s", sr_errmsg());
            w->stats.failed++;
        }
        w->state = JOB_IDLE;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static float *alloc_floats(size_t n)
{
    return malloc((n ? n : 1) * sizeof(float));
}

sr_status ckpt_writer_start(struct ckpt_writer **out,
                            const struct ckpt_writer_opts *o)
{
    struct ckpt_writer *w = calloc(1, sizeof *w);
    if (!w)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    w->o = *o;
    w->stats.last_step = -1;
    w->params = alloc_floats(o->nparams);
    w->opt_state = alloc_floats(o->nstate);
    w->config_json = strdup(o->config_json ? o->config_json : "{}");
    if (!w->params || !w->opt_state || !w->config_json ||
        str_copy(w->root, sizeof w->root, o->root)) {
        free(w->params);
        free(w->opt_state);
        free(w->config_json);
        free(w);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory for the checkpoint "
                       "snapshot (%zu floats)", o->nparams + o->nstate);
    }
    w->o.root = w->root;
    w->state = JOB_PREFAULT;    /* a snapshot waits for the prefault */
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w->params);
        free(w->opt_state);
        free(w->config_json);
        free(w);
        return SR_FAIL(SR_ERR_NOMEM, "cannot start the checkpoint thread");
    }
    *out = w;
    return SR_OK;
}

void ckpt_writer_buffers(struct ckpt_writer *w, float **params,
                         float **opt_state)
{
    *params = w->params;
    *opt_state = w->opt_state;
}

int ckpt_writer_busy(struct ckpt_writer *w)
{
    pthread_mutex_lock(&w->mu);
    int b = w->state != JOB_IDLE;
    pthread_mutex_unlock(&w->mu);
    return b;
}

int64_t ckpt_writer_in_flight(struct ckpt_writer *w)
{
    pthread_mutex_lock(&w->mu);
    int64_t step = w->state == JOB_THREAD || w->state == JOB_CALLER
                   ? w->job.step : -1;
    pthread_mutex_unlock(&w->mu);
    return step;
}

void ckpt_writer_submit(struct ckpt_writer *w, const struct ckpt_meta *meta)
{
    pthread_mutex_lock(&w->mu);
    w->job = *meta;
    w->state = JOB_THREAD;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

sr_status ckpt_writer_wait(struct ckpt_writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->state != JOB_IDLE)
        pthread_cond_wait(&w->cv, &w->mu);
    sr_status s = w->last;
    char err[512];
    snprintf(err, sizeof err, "%s", w->last_err);
    w->last = SR_OK;
    w->last_err[0] = '\0';
    pthread_mutex_unlock(&w->mu);
    if (s != SR_OK)
        return SR_FAIL(s, "checkpoint write failed: %s", err);
    return SR_OK;
}

sr_status ckpt_writer_write_now(struct ckpt_writer *w,
                                const struct ckpt_meta *meta)
{
    /* the caller filled the buffers, so nothing can be in flight: the
     * loop only fills them while the writer is idle */
    pthread_mutex_lock(&w->mu);
    w->job = *meta;
    w->state = JOB_CALLER;
    pthread_mutex_unlock(&w->mu);
    sr_status s = write_one(w, meta);
    pthread_mutex_lock(&w->mu);
    w->state = JOB_IDLE;
    if (s != SR_OK)
        w->stats.failed++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return s;
}

void ckpt_writer_stats(struct ckpt_writer *w, struct ckpt_writer_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}

void ckpt_writer_stop(struct ckpt_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    while (w->state != JOB_IDLE)
        pthread_cond_wait(&w->cv, &w->mu);
    w->state = JOB_STOP;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->params);
    free(w->opt_state);
    free(w->config_json);
    buf_free(&w->arena);
    free(w);
}
