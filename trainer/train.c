/*
 * train.c: the data-parallel training loop that every rank runs.
 *
 * Each step: take this rank's slice of the global batch from the sampler,
 * decode it, forward + backward on the backend (gradients pre-scaled by
 * 1/global_batch), one in-place all-reduce over the gradient buffer (the
 * step's loss rides in the same buffer), then the optimizer. Every rank
 * applies the same update to the same parameters, so they stay identical;
 * --check-sync-every compares a checksum across ranks to prove it.
 * Validation is split across ranks and the sums are reduced.
 */
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <sched.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../checkpoint/h5image.h"
#include "../common/log.h"
#include "../common/pool.h"
#include "../common/util.h"
#include "plugin.h"
#include "trainer.h"

/* Math threads: a process bound to fewer cores than the host has uses
 * exactly those; an unbound one shares the host with its local peers. */
static int default_threads(const struct comm *c)
{
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1)
        online = 1;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int bound = CPU_COUNT(&set);
        if (bound > 0 && bound < online)
            return bound;
    }
    int t = (int)(online / (c->local_size > 0 ? c->local_size : 1));
    return t > 0 ? t : 1;
}

static sr_status params_digest(struct trainer *t, unsigned char out[32])
{
    SR_TRY(t->ops->get_params(t->be, t->host_params));
    unsigned int len = 0;
    if (!EVP_Digest(t->host_params, t->m.nparams * sizeof(float), out, &len,
                    EVP_sha256(), NULL))
        return SR_FAIL(SR_ERR_CRYPTO, "SHA-256 of the parameters failed");
    return SR_OK;
}

static sr_status check_sync(struct trainer *t, int64_t step)
{
    unsigned char d[32];
    SR_TRY(params_digest(t, d));
    uint64_t h;
    memcpy(&h, d, sizeof h);
    int equal;
    SR_TRY(comm_all_equal_u64(t->c, h, &equal));
    if (!equal)
        return SR_FAIL(SR_ERR_INTERNAL, "parameters differ across ranks "
                       "after step %lld", (long long)step);
    log_debug("step %lld: parameters identical on all %d ranks",
              (long long)step, t->c->size);
    return SR_OK;
}

static sr_status open_split(struct trainer *t, struct split *sp,
                            const char *uri)
{
    SR_TRY(dataset_open(&sp->ds, t->st, uri));
    SR_TRY(batch_spec_init(&sp->spec, &sp->ds.schema, uri));
    char b[32];
    log_info("dataset %s: %llu records in %u shard(s), %s", uri,
             (unsigned long long)sp->ds.nrec, sp->ds.nshards,
             fmt_bytes(b, sizeof b, sp->ds.nrec * sp->ds.schema.record_bytes));
    return SR_OK;
}

/* All ranks learn the worst status of the phase, so either every rank
 * goes on or every rank stops with the same error. */
sr_status trainer_agree(struct trainer *t, sr_status local,
                        const char *phase)
{
    double v[2] = { (double)local, local != SR_OK };
    if (comm_max_f64(t->c, &v[0], 1) != SR_OK ||
        comm_sum_f64(t->c, &v[1], 1) != SR_OK)
        return SR_ERR_MPI;
    if (v[0] == 0)
        return SR_OK;
    if (local == SR_OK) {
        t->quiet = 1;
        return SR_FAIL((sr_status)(int)v[0], "stopped: another rank failed "
                       "during %s (see its error)", phase);
    }
    if ((int)v[1] == t->c->size && t->c->rank != 0)
        t->quiet = 1;       /* the same failure everywhere: rank 0 tells */
    return local;
}

static sr_status setup(struct trainer *t)
{
    const struct train_config *cfg = t->cfg;
    SR_TRY(storage_open(&t->st));
    SR_TRY(open_split(t, &t->train, cfg->data));
    if (cfg->val_data[0]) {
        SR_TRY(open_split(t, &t->val, cfg->val_data));
        t->has_val = 1;
        if (t->val.spec.in != t->train.spec.in ||
            t->val.spec.classes != t->train.spec.classes)
            return SR_FAIL(SR_ERR_USAGE, "--val-data %s has %zu inputs and "
                           "%d classes, --data has %zu and %d", cfg->val_data,
                           t->val.spec.in, t->val.spec.classes,
                           t->train.spec.in, t->train.spec.classes);
    }
    SR_TRY(mlp_shape(&t->m, (int)t->train.spec.in, cfg->hidden, cfg->nhidden,
                     t->train.spec.classes));
    t->local_batch = (int)(cfg->batch_size / t->c->size);
    t->steps_per_epoch = (int64_t)(t->train.ds.nrec /
                                   (uint64_t)cfg->batch_size);
    if (t->steps_per_epoch == 0)
        return SR_FAIL(SR_ERR_USAGE, "%s holds %llu records, fewer than one "
                       "global batch of %lld", cfg->data,
                       (unsigned long long)t->train.ds.nrec,
                       (long long)cfg->batch_size);
    t->total_steps = t->steps_per_epoch * cfg->epochs;
    if (cfg->max_steps > 0 && cfg->max_steps < t->total_steps)
        t->total_steps = cfg->max_steps;

    t->op.kind = strcmp(cfg->optimizer, "sgd") == 0 ? OPTIM_SGD : OPTIM_ADAMW;
    t->op.momentum = cfg->momentum;
    t->op.weight_decay = cfg->weight_decay;
    t->op.beta1 = cfg->beta1;
    t->op.beta2 = cfg->beta2;
    t->op.eps = cfg->eps;
    t->sched.lr = cfg->lr;
    t->sched.min_lr = cfg->min_lr;
    t->sched.warmup_steps = (uint64_t)cfg->warmup_steps;
    t->sched.total_steps = (uint64_t)(t->steps_per_epoch * cfg->epochs);

    int threads = cfg->threads > 0 ? (int)cfg->threads
                                   : default_threads(t->c);
    SR_TRY(pool_create(&t->pool, threads));

    uint64_t *counts = malloc(t->train.ds.nshards * sizeof *counts);
    if (!counts)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < t->train.ds.nshards; i++)
        counts[i] = t->train.ds.shards[i].nrec;
    sr_status s = sampler_init(&t->sampler, counts, t->train.ds.nshards,
                               cfg->seed, trainer_shuffle_block(t), 1);
    free(counts);
    SR_TRY(s);

    dataset_digest(&t->train.ds, t->dataset_id);
    progress_init(&t->progress, t->c->rank == 0 ? cfg->progress : "off",
                  cfg->progress_every_s);
    return SR_OK;
}

/* Batch buffers in the memory the backend reads fastest. */
static void *batch_alloc(const struct trainer *t, size_t bytes)
{
    if (t->ops->host_alloc)
        return t->ops->host_alloc(bytes);
    return malloc(bytes);
}

static void batch_free(const struct trainer *t, void *p)
{
    if (p && t->ops && t->ops->host_free)
        t->ops->host_free(p);
    else
        free(p);
}

static sr_status comm_bcast_cb(void *ctx, void *buf, size_t n)
{
    return comm_bcast_bytes(ctx, buf, n);
}

static sr_status comm_allreduce_cb(void *ctx, float *buf, size_t n)
{
    struct comm *c = ctx;
    return c->grad_allreduce(c, buf, n);
}

static enum backend_precision precision_of(const char *s)
{
    return strcmp(s, "bf16") == 0 ? PRECISION_BF16
         : strcmp(s, "tf32") == 0 ? PRECISION_TF32 : PRECISION_FP32;
}

static enum backend_comm_kind comm_kind_of(const char *s)
{
    return strcmp(s, "nccl") == 0 ? BACKEND_COMM_NCCL
         : strcmp(s, "mpi") == 0 ? BACKEND_COMM_MPI : BACKEND_COMM_AUTO;
}

/* Collective: the CUDA backend on every rank, or an error on every rank
 * (SR_ERR_USAGE when a rank has no usable GPU, with the reason recorded;
 * the backend's own status when it failed to start). */
static sr_status open_gpu(struct trainer *t, const struct backend_opts *bo)
{
    const struct backend_plugin *p = NULL;
    int count = 0;
    sr_status s = plugin_load_cuda(&p);
    if (s == SR_OK)
        s = p->probe(&count);
    if (s == SR_OK && count == 0)
        s = SR_FAIL(SR_ERR_NOT_FOUND, "the CUDA plugin sees no GPU on this "
                    "host");
    double bad = s != SR_OK;
    SR_TRY(comm_sum_f64(t->c, &bad, 1));
    if (bad > 0) {
        if (s == SR_OK)
            return SR_FAIL(SR_ERR_USAGE, "%.0f of %d ranks have no usable "
                           "GPU", bad, t->c->size);
        char why[768];
        snprintf(why, sizeof why, "%s", sr_errmsg_user());
        if (t->c->rank != 0)
            log_debug("no usable GPU: %s", why);
        return SR_FAIL(SR_ERR_USAGE, "no usable GPU: %s", why);
    }
    s = p->ops->create(&t->be, &t->m, bo);
    bad = s != SR_OK;
    SR_TRY(comm_sum_f64(t->c, &bad, 1));
    if (bad > 0 && s == SR_OK) {
        p->ops->destroy(t->be);
        t->be = NULL;
        return SR_FAIL(SR_ERR_CUDA, "the CUDA backend failed to start on "
                       "%.0f of %d ranks", bad, t->c->size);
    }
    if (s != SR_OK)
        return s;
    t->ops = p->ops;
    return SR_OK;
}

/* Collective: choose the backend (--device), create it, allocate the batch
 * buffers in the memory it reads best, and load the initial parameters.
 * --device auto falls back to the CPU with one line saying why. */
static sr_status setup_backend(struct trainer *t)
{
    const struct train_config *cfg = t->cfg;
    t->bcomm = (struct backend_comm){
        .rank = t->c->rank, .size = t->c->size,
        .local_rank = t->c->local_rank, .local_size = t->c->local_size,
        .ctx = t->c, .bcast = comm_bcast_cb,
        .allreduce_f32 = comm_allreduce_cb,
    };
    struct backend_opts bo = {
        .max_batch = t->local_batch > cfg->eval_batch_size
                     ? t->local_batch : (int)cfg->eval_batch_size,
        .pool = t->pool,
        .optim = t->op.kind,
        .comm = &t->bcomm,
        .precision = precision_of(cfg->precision),
        .comm_kind = comm_kind_of(cfg->comm),
        .bucket_bytes = (size_t)(cfg->bucket_mb * 1048576.0),
        .comm_timeout_s = cfg->collective_timeout_s,
    };
    if (strcmp(cfg->device, "cpu") != 0) {
        sr_status s = open_gpu(t, &bo);
        char why[768];
        snprintf(why, sizeof why, "%s", s != SR_OK ? sr_errmsg_user() : "");
        if (s != SR_OK && strcmp(cfg->device, "cuda") == 0) {
            if (s == SR_ERR_USAGE || s == SR_ERR_NOT_FOUND)
                return SR_FAIL(SR_ERR_USAGE, "--device cuda: %s", why);
            return s;
        }
        if (s != SR_OK && t->c->rank == 0)
            log_info("device auto: %s; training on the CPU", why);
    }
    if (!t->be) {
        t->ops = &backend_cpu_ops;
        SR_TRY(t->ops->create(&t->be, &t->m, &bo));
    }
    size_t rows = (size_t)bo.max_batch;
    t->host_params = malloc(t->m.nparams * sizeof(float));
    t->x = batch_alloc(t, rows * t->train.spec.in * sizeof(float));
    t->y = batch_alloc(t, rows * sizeof(int32_t));
    t->recs = malloc(rows * sizeof *t->recs);
    t->ids = malloc(rows * sizeof *t->ids);
    if (!t->host_params || !t->x || !t->y || !t->recs || !t->ids)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory for batch buffers");
    mlp_init_params(&t->m, t->host_params, cfg->seed);
    SR_TRY(t->ops->set_params(t->be, t->host_params));

    char dims[128];
    size_t dl = 0;
    for (int l = 0; l <= t->m.nlayers && dl + 12 < sizeof dims; l++)
        dl += (size_t)snprintf(dims + dl, sizeof dims - dl, "%s%d",
                               l ? "-" : "", t->m.dims[l]);
    log_info("model mlp %s (%zu parameters), optimizer %s, backend %s, %d "
             "rank(s) x %d thread(s), global batch %lld (%d per rank), "
             "%lld steps/epoch", dims, t->m.nparams, cfg->optimizer,
             t->ops->name, t->c->size, pool_size(t->pool),
             (long long)cfg->batch_size, t->local_batch,
             (long long)t->steps_per_epoch);
    return SR_OK;
}

struct decode_job {
    const struct split *sp;
    const struct trainer *t;
    int n;
    const char *what;
    sr_status status[64];
};

static void decode_rows(void *arg, int w, int nw)
{
    struct decode_job *j = arg;
    size_t lo, hi;
    pool_range((size_t)j->n, w, nw, 1, &lo, &hi);
    sr_status s = SR_OK;
    if (hi > lo)
        s = batch_fill(&j->sp->spec, j->t->recs + lo, j->t->ids + lo,
                       (int)(hi - lo), j->t->x + lo * j->sp->spec.in,
                       j->t->y + lo, j->what);
    if (w < 64)
        j->status[w] = s;
}

/* Decode t->recs[0..n) into t->x and t->y on every thread of the pool. */
static sr_status decode(struct trainer *t, const struct split *sp, int n,
                        const char *what)
{
    struct decode_job j = { .sp = sp, .t = t, .n = n, .what = what };
    if (pool_size(t->pool) > 64)
        return batch_fill(&sp->spec, t->recs, t->ids, n, t->x, t->y, what);
    pool_run(t->pool, decode_rows, &j);
    for (int w = 0; w < pool_size(t->pool); w++)
        if (j.status[w] != SR_OK)
            return j.status[w];
    return SR_OK;
}

static sr_status validate(struct trainer *t, double *loss, double *acc)
{
    const struct split *sp = &t->val;
    uint64_t n = sp->ds.nrec;
    double loss_sum = 0;
    int64_t correct = 0;
    sr_status s = SR_OK;
    for (uint64_t i = 0; s == SR_OK && i < t->vseq.n;) {
        int k = (int)(t->vseq.n - i < (uint64_t)t->cfg->eval_batch_size
                      ? t->vseq.n - i : (uint64_t)t->cfg->eval_batch_size);
        s = reader_next(sp->rd, (size_t)k, t->recs, t->ids);
        if (s == SR_OK)
            s = decode(t, sp, k, t->cfg->val_data);
        if (s == SR_OK)
            s = t->ops->evaluate(t->be, t->x, t->y, k, &loss_sum, &correct);
        i += (uint64_t)k;
    }
    double sums[3] = { loss_sum, (double)correct, s != SR_OK };
    SR_TRY(comm_sum_f64(t->c, sums, 3));
    if (sums[2] != 0)
        return trainer_agree(t, s, "validation");
    *loss = sums[0] / (double)n;
    *acc = sums[1] / (double)n;
    return SR_OK;
}

static sr_status save_model(struct trainer *t, int64_t step, int64_t epoch)
{
    const char *dir = t->cfg->model_dir;
    char uri[STORAGE_URI_MAX];
    SR_TRY(storage_uri_join(uri, sizeof uri, dir, "model.h5"));
    SR_TRY(t->ops->get_params(t->be, t->host_params));
    struct h5img *h;
    SR_TRY(h5img_create(&h));
    sr_status s = SR_OK;
    for (int i = 0; i < mlp_ntensors(&t->m) && s == SR_OK; i++) {
        char name[32];
        int ndim;
        size_t dims[2], off, cnt;
        mlp_tensor(&t->m, i, name, sizeof name, &ndim, dims, &off, &cnt);
        s = h5img_write_f32(h, name, t->host_params + off, ndim, dims);
    }
    int64_t d[MLP_MAX_LAYERS + 1];
    for (int l = 0; l <= t->m.nlayers; l++)
        d[l] = t->m.dims[l];
    if (s == SR_OK)
        s = h5img_attr_str(h, "/", "format", "spotrun-model");
    int64_t version = 1;
    if (s == SR_OK)
        s = h5img_attr_i64(h, "/", "format_version", &version, 1);
    if (s == SR_OK)
        s = h5img_attr_str(h, "/", "model", "mlp");
    if (s == SR_OK)
        s = h5img_attr_i64(h, "/", "layer_sizes", d,
                           (size_t)t->m.nlayers + 1);
    if (s == SR_OK)
        s = h5img_attr_i64(h, "/", "step", &step, 1);
    if (s == SR_OK)
        s = h5img_attr_i64(h, "/", "epoch", &epoch, 1);
    if (s == SR_OK)
        s = h5img_attr_str(h, "/", "config", t->config_json);
    if (s != SR_OK) {
        h5img_free(h);
        return s;
    }
    struct sr_buf img = { 0 };
    s = h5img_finish(h, &img);
    if (s == SR_OK)
        s = storage_put(t->st, uri, img.data, img.len, 0);
    if (s == SR_OK) {
        char b[32];
        log_info("model written to %s (%s)", uri,
                 fmt_bytes(b, sizeof b, img.len));
    }
    buf_free(&img);
    return s;
}

/* One optimizer step at the cursor; advances it. A rank that cannot get
 * or process its data still joins the all-reduce, with its failure
 * flagged in it, so every rank stops at this step with the same status. */
static sr_status train_step(struct trainer *t)
{
    const struct split *sp = &t->train;
    struct cursor *cur = &t->cur;
    double t0 = now_s();
    sr_status s = reader_next(sp->rd, (size_t)t->local_batch, t->recs,
                              t->ids);
    cur->wait_s += now_s() - t0;
    if (s == SR_OK)
        s = decode(t, sp, t->local_batch, t->cfg->data);
    if (s == SR_OK)
        s = t->ops->train_step(t->be, t->x, t->y, t->local_batch,
                               1.0f / (float)t->cfg->batch_size);
    float extra[BACKEND_GRAD_EXTRA] = { 0 };
    struct spot_notice sn;
    extra[GRAD_EXTRA_STOP] = spot_stop_requested(t->spot, &sn) ? 1.0f : 0.0f;
    if (strcmp(t->cfg->on_rebalance, "ignore") != 0 &&
        spot_take_rebalance(t->spot, &sn)) {
        log_warn("%s: %s", sn.what, strcmp(t->cfg->on_rebalance, "stop") == 0
                 ? "stopping as for an interruption"
                 : "taking a checkpoint and going on");
        extra[strcmp(t->cfg->on_rebalance, "stop") == 0 ? GRAD_EXTRA_STOP
                                                         : GRAD_EXTRA_CKPT] =
            1.0f;
    }
    extra[GRAD_EXTRA_FAILED] = s != SR_OK ? 1.0f : 0.0f;
    SR_TRY(t->ops->grad_allreduce(t->be, extra));
    if (extra[GRAD_EXTRA_FAILED] != 0.0f)
        return trainer_agree(t, s, "a training step");
    /* every rank saw the same sums: all stop (or checkpoint) after this
     * very step */
    t->stop_agreed = extra[GRAD_EXTRA_STOP] != 0.0f;
    t->ckpt_requested = extra[GRAD_EXTRA_CKPT] != 0.0f;
    if (t->record_log) {
        fprintf(t->record_log, "%lld", (long long)cur->step + 1);
        for (int i = 0; i < t->local_batch; i++)
            fprintf(t->record_log, " %llu", (unsigned long long)t->ids[i]);
        fputc('\n', t->record_log);
    }
    double loss = extra[GRAD_EXTRA_LOSS];
    double lr = lr_at(&t->sched, (uint64_t)cur->step);
    if (!isfinite(loss)) {  /* the same sum on every rank: rank 0 tells */
        t->quiet = t->c->rank != 0;
        return SR_FAIL(SR_ERR_DIVERGED, "training diverged: the loss of "
                       "step %lld (epoch %lld) is %s at learning rate %.4g; "
                       "stopped before the parameters took that step, "
                       "checkpoints already committed are kept. Lower --lr "
                       "(or raise --warmup-steps) and run again",
                       (long long)cur->step + 1, (long long)cur->epoch + 1,
                       isnan(loss) ? "NaN" : "infinite", lr);
    }
    SR_TRY(t->ops->optimizer_step(t->be, &t->op, (float)lr,
                                  (uint64_t)cur->step + 1));
    cur->step++;
    cur->steps++;
    cur->loss_sum += loss;
    cur->position += t->cfg->batch_size;
    if (t->c->rank == 0 && t->cfg->step_metrics_file[0])
        SR_TRY(buf_printf(&t->step_log, "{\"step\":%lld,\"loss\":%.9g,"
                          "\"lr\":%.9g}\n", (long long)cur->step, loss, lr));
    return SR_OK;
}

/* What the data path did: at debug level every epoch, at info level once
 * at the end (rank 0), with the process's peak memory. */
static void report_data(struct trainer *t, enum log_level lvl)
{
    struct reader_stats rs;
    reader_get_stats(t->train.rd, &rs);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char a[32], b[32], c[32], d[32], e[32];
    log_msg(lvl, "data: %s fetched in %llu requests (%llu retried), %llu "
            "chunks from the cache (%s), %llu shard indexes read (%llu "
            "ahead of need), read-ahead peak %s of %s; peak memory %s",
            fmt_bytes(a, sizeof a, rs.bytes_fetched),
            (unsigned long long)rs.requests, (unsigned long long)rs.retries,
            (unsigned long long)rs.cache_hits,
            fmt_bytes(b, sizeof b, rs.cache_bytes),
            (unsigned long long)rs.indexes,
            (unsigned long long)rs.indexes_ahead,
            fmt_bytes(c, sizeof c, rs.peak_bytes),
            fmt_bytes(d, sizeof d, t->cfg->read_ahead),
            fmt_bytes(e, sizeof e, (uint64_t)ru.ru_maxrss * 1024));
}

/* Finish the epoch at the cursor: validation, the metrics line, and the
 * cursor moved to the next epoch's start. The loss covers the whole epoch;
 * the speed only the steps after the first `resumed` (which an earlier run
 * did). */
static sr_status end_epoch(struct trainer *t, double epoch_start,
                           int64_t resumed)
{
    const struct train_config *cfg = t->cfg;
    struct cursor *cur = &t->cur;
    double train_s = now_s() - epoch_start;
    progress_end(&t->progress);
    struct epoch_metrics em = {
        .epoch = cur->epoch + 1,
        .step = cur->step,
        .train_loss = cur->loss_sum / (double)cur->steps,
        .samples_per_sec = (double)(cur->steps - resumed) *
                           (double)cfg->batch_size / train_s,
    };
    double waits[1] = { cur->wait_s };
    SR_TRY(comm_max_f64(t->c, waits, 1));
    em.data_wait_s = waits[0];
    if (t->has_val) {
        SR_TRY(validate(t, &em.val_loss, &em.val_accuracy));
        em.has_val = 1;
    }
    em.epoch_s = now_s() - epoch_start;
    sr_status s = SR_OK;
    if (t->c->rank == 0) {
        s = metrics_epoch(&t->metrics, &em, stdout);
        if (s == SR_OK && cfg->step_metrics_file[0])
            s = storage_put(t->st, cfg->step_metrics_file, t->step_log.data,
                            t->step_log.len, 0);
    }
    SR_TRY(trainer_agree(t, s, "the end of the epoch"));
    if (log_get_level() >= LOG_DEBUG)
        report_data(t, LOG_DEBUG);
    *cur = (struct cursor){ .step = cur->step, .epoch = cur->epoch + 1 };
    return SR_OK;
}

/* Every rank stops after the same step: rank 0 commits the emergency
 * checkpoint (after any in-flight one), the others wait for it, then all
 * exit 75. The time from the earliest notice on any rank to the commit,
 * and what is left before the announced deadline, are logged. */
static sr_status interrupt(struct trainer *t)
{
    struct spot_notice sn;
    memset(&sn, 0, sizeof sn);
    int mine = spot_stop_requested(t->spot, &sn);
    double v[2] = { mine ? sn.noticed : 1e300,
                    mine && sn.deadline > 0 ? sn.deadline : 1e300 };
    SR_TRY(comm_min_f64(t->c, v, 2));
    if (mine)
        log_warn("%s received: stopping after step %lld", sn.what,
                 (long long)t->cur.step);
    /* rank 0 may take a while to write; the others wait that long */
    comm_watchdog_timeout(t->cfg->collective_timeout_s + 600);
    sr_status s = SR_OK;
    if (t->c->rank == 0 && t->ckw)
        s = trainer_ckpt_now(t);
    s = trainer_agree(t, s, "the emergency checkpoint");
    comm_watchdog_timeout(t->cfg->collective_timeout_s);
    if (s != SR_OK)
        return s;
    double now = wall_s();
    if (t->c->rank == 0 && t->ckw) {
        char left[64] = "no deadline announced";
        if (v[1] < 1e299)
            snprintf(left, sizeof left, "%.1f s before the announced "
                     "deadline", v[1] - now);
        log_info("interrupted: checkpoint of step %lld committed %.2f s "
                 "after the first notice; %s", (long long)t->cur.step,
                 now - v[0], left);
    } else if (t->c->rank == 0) {
        log_warn("interrupted after step %lld, but --checkpoint is not set: "
                 "nothing to resume from", (long long)t->cur.step);
    }
    t->quiet = 1;       /* stopping is not an error to print */
    return SR_FAIL(SR_ERR_INTERRUPTED, "interrupted after step %lld; run "
                   "the same command again to resume",
                   (long long)t->cur.step);
}

static sr_status run_epochs(struct trainer *t)
{
    const struct train_config *cfg = t->cfg;
    struct cursor *cur = &t->cur;
    while (cur->epoch < cfg->epochs && cur->step < t->total_steps) {
        /* steps already done this epoch (resumed mid-epoch) do not count
         * towards its speed */
        int64_t done0 = cur->steps;
        double e0 = now_s();
        while (cur->position / cfg->batch_size < t->steps_per_epoch &&
               cur->step < t->total_steps && !t->stop_agreed) {
            SR_TRY(train_step(t));
            if (cfg->check_sync_every > 0 &&
                cur->step % cfg->check_sync_every == 0)
                SR_TRY(check_sync(t, cur->step));
            double el = now_s() - e0;
            progress_update(&t->progress, cur->epoch + 1, cfg->epochs,
                            cur->position / cfg->batch_size,
                            t->steps_per_epoch,
                            cur->loss_sum / (double)cur->steps,
                            el > 0 ? (double)(cur->steps - done0) *
                            (double)cfg->batch_size / el : 0);
            if (cur->position / cfg->batch_size < t->steps_per_epoch &&
                !t->stop_agreed)
                SR_TRY(trainer_ckpt_maybe(t, t->ckpt_requested));
        }
        if (t->stop_agreed) {
            progress_end(&t->progress);
            return interrupt(t);
        }
        if (cur->position / cfg->batch_size < t->steps_per_epoch)
            break;      /* --max-steps ended it mid-epoch */
        SR_TRY(end_epoch(t, e0, done0));
        SR_TRY(trainer_ckpt_maybe(t, cfg->checkpoint_every_epoch));
    }
    SR_TRY(check_sync(t, cur->step));
    SR_TRY(trainer_ckpt_now(t));
    if (t->c->rank == 0 && cfg->step_metrics_file[0])  /* a partial epoch */
        SR_TRY(storage_put(t->st, cfg->step_metrics_file, t->step_log.data,
                           t->step_log.len, 0));
    report_data(t, LOG_INFO);
    unsigned char d[32];
    SR_TRY(params_digest(t, d));
    if (t->c->rank == 0) {
        char hex[65];
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
        printf("done steps=%lld params_sha256=%s\n", (long long)cur->step,
               hex);
        fflush(stdout);
        if (cfg->model_dir[0])
            SR_TRY(save_model(t, cur->step, cur->epoch));
    }
    return SR_OK;
}

static void teardown(struct trainer *t)
{
    if (t->be)
        t->ops->destroy(t->be);
    pool_destroy(t->pool);
    spot_stop(t->spot);
    reader_close(t->train.rd);
    reader_close(t->val.rd);
    sampler_free(&t->sampler);
    dataset_close(&t->train.ds);
    dataset_close(&t->val.ds);
    batch_free(t, t->x);
    batch_free(t, t->y);
    free(t->recs);
    free(t->ids);
    free(t->host_params);
    trainer_ckpt_teardown(t);
    if (t->record_log)
        fclose(t->record_log);
    metrics_close(&t->metrics);
    buf_free(&t->step_log);
    storage_close(t->st);
}

size_t trainer_opt_state_len(const struct trainer *t)
{
    return t->m.nparams * (size_t)optim_state_per_param(t->op.kind);
}

uint64_t trainer_shuffle_block(const struct trainer *t)
{
    if (t->cfg->shuffle_block > 0)
        return t->cfg->shuffle_block;
    return sampler_auto_block(t->train.ds.schema.record_bytes);
}

/* The planner's view of the training sequence (runs in its thread). */
static uint64_t train_seq_at(void *arg, uint64_t i)
{
    struct train_seq *q = arg;
    uint64_t step = i / q->local, k = i % q->local;
    uint64_t first = q->steps_per_epoch - q->step0;
    uint64_t epoch, s;
    if (step < first) {
        epoch = q->epoch0;
        s = q->step0 + step;
    } else {
        epoch = q->epoch0 + 1 + (step - first) / q->steps_per_epoch;
        s = (step - first) % q->steps_per_epoch;
    }
    if (epoch != q->epoch) {
        sampler_set_epoch(q->sampler, epoch);
        q->epoch = epoch;
    }
    return sampler_at(q->sampler, sampler_slice_start(s, q->batch, q->rank,
                                                      q->world) + k);
}

static uint64_t val_seq_at(void *arg, uint64_t i)
{
    const struct val_seq *q = arg;
    return q->lo + i % q->n;
}

/* Start streaming from the cursor: training slices to the last step, and
 * this rank's validation range once per remaining epoch. */
static sr_status open_readers(struct trainer *t)
{
    const struct train_config *cfg = t->cfg;
    struct reader_opts o;
    reader_default_opts(&o);
    o.window_bytes = cfg->read_ahead;
    o.chunk_bytes = cfg->read_chunk;
    o.fetchers = (int)cfg->read_concurrency;
    o.cache_dir = cfg->cache_dir;
    o.cache_limit = cfg->cache_limit;
    t->tseq = (struct train_seq){
        .sampler = &t->sampler, .batch = (uint64_t)cfg->batch_size,
        .local = (uint64_t)t->local_batch, .rank = t->c->rank,
        .world = t->c->size, .steps_per_epoch = (uint64_t)t->steps_per_epoch,
        .epoch0 = (uint64_t)t->cur.epoch,
        .step0 = (uint64_t)(t->cur.position / cfg->batch_size),
        .epoch = UINT64_MAX,
    };
    uint64_t steps = t->total_steps > t->cur.step
                     ? (uint64_t)(t->total_steps - t->cur.step) : 0;
    uint64_t block_bytes = trainer_shuffle_block(t) *
                           t->train.ds.schema.record_bytes;
    if (block_bytes > cfg->read_ahead / 2 && block_bytes < t->train.ds.nrec *
        t->train.ds.schema.record_bytes) {
        char a[32], b[32];
        log_warn("the shuffle block (%s of records) is larger than half the "
                 "read-ahead window (%s): chunks will be fetched more than "
                 "once per epoch; raise --read-ahead or lower "
                 "--shuffle-block", fmt_bytes(a, sizeof a, block_bytes),
                 fmt_bytes(b, sizeof b, cfg->read_ahead));
    }
    SR_TRY(reader_open(&t->train.rd, t->st, &t->train.ds, &o, train_seq_at,
                       &t->tseq, steps * (uint64_t)t->local_batch));
    if (!t->has_val)
        return SR_OK;
    uint64_t n = t->val.ds.nrec;
    uint64_t lo = n * (uint64_t)t->c->rank / (uint64_t)t->c->size;
    uint64_t hi = n * (uint64_t)(t->c->rank + 1) / (uint64_t)t->c->size;
    t->vseq = (struct val_seq){ .lo = lo, .n = hi - lo };
    uint64_t epochs = cfg->epochs > t->cur.epoch
                      ? (uint64_t)(cfg->epochs - t->cur.epoch) : 0;
    o.window_bytes = cfg->read_ahead / 4 > (1u << 20) ? cfg->read_ahead / 4
                                                      : (1u << 20);
    return reader_open(&t->val.rd, t->st, &t->val.ds, &o, val_seq_at,
                       &t->vseq, t->vseq.n ? t->vseq.n * epochs : 0);
}

/* Rank 0's metrics and step files, keeping only what precedes the cursor
 * (a run resumed from an older checkpoint reports later epochs again), and
 * every rank's record log. */
static sr_status open_outputs(struct trainer *t)
{
    if (t->cfg->record_log[0]) {
        char path[STORAGE_URI_MAX + 16];
        snprintf(path, sizeof path, "%s.rank%d", t->cfg->record_log,
                 t->c->rank);
        t->record_log = fopen(path, "a");
        if (!t->record_log)
            return SR_FAIL(SR_ERR_IO, "--record-log: cannot open %s: %s",
                           path, strerror(errno));
        setvbuf(t->record_log, NULL, _IOLBF, 0);   /* whole lines survive a
                                                      kill */
    }
    if (t->c->rank != 0)
        return SR_OK;
    SR_TRY(metrics_open(&t->metrics, t->st, t->cfg->metrics_file,
                        t->cur.epoch));
    if (t->cfg->step_metrics_file[0])
        SR_TRY(jsonl_load(&t->step_log, t->st, t->cfg->step_metrics_file,
                          "step", t->cur.step));
    return SR_OK;
}

/* Rank 0's last line: how the run ended and its goodput (steps whose work
 * survives, in the model or a committed checkpoint, over steps executed). */
static void summary(struct trainer *t, sr_status s)
{
    if (t->c->rank != 0 || !t->be)
        return;
    int64_t executed = t->cur.step - t->start_step;
    int64_t counted = executed;
    struct ckpt_writer_stats ws = { .last_step = -1 };
    if (t->ckw)
        ckpt_writer_stats(t->ckw, &ws);
    const char *how = s == SR_OK ? "finished"
                    : s == SR_ERR_INTERRUPTED ? "interrupted" : "failed";
    if (s != SR_OK && s != SR_ERR_INTERRUPTED)
        counted = ws.last_step > t->start_step ? ws.last_step - t->start_step
                                               : 0;
    printf("summary status=%s steps_executed=%lld steps_counted=%lld "
           "goodput=%.4f checkpoints=%lld checkpoint_write_s=%.3f "
           "checkpoint_stall_s=%.3f\n", how, (long long)executed,
           (long long)counted, executed ? (double)counted / (double)executed
                                        : 1.0, (long long)ws.committed,
           ws.write_s, t->stall_s);
    fflush(stdout);
}

sr_status train_run(const struct train_config *cfg, const char *config_json,
                    struct comm *c, int *quiet)
{
    struct trainer t;
    memset(&t, 0, sizeof t);
    t.cfg = cfg;
    t.config_json = config_json;
    t.c = c;
    struct spot_opts so = { .poll_metadata = c->local_rank == 0,
                            .poll_interval_s = cfg->spot_poll_s };
    sr_status s = spot_start(&t.spot, &so);
    if (s == SR_OK && spot_polling(t.spot))
        log_info("watching the EC2 instance metadata for spot notices every "
                 "%g s", cfg->spot_poll_s);
    if (s == SR_OK)
        s = trainer_agree(&t, setup(&t), "setup");
    if (s == SR_OK)
        s = trainer_agree(&t, setup_backend(&t), "setup");
    if (s == SR_OK)
        s = trainer_agree(&t, trainer_ckpt_setup(&t), "resume");
    if (s == SR_OK)
        s = trainer_agree(&t, open_outputs(&t), "setup");
    if (s == SR_OK)
        s = trainer_agree(&t, open_readers(&t), "setup");
    t.start_step = t.cur.step;
    if (s == SR_OK && c->rank == 0)
        log_info("training from step %lld, %.2f s after the process started",
                 (long long)t.cur.step, process_age_s());
    if (s == SR_OK)
        s = comm_watchdog_start(c, cfg->collective_timeout_s);
    if (s == SR_OK)
        s = run_epochs(&t);
    summary(&t, s);
    comm_watchdog_stop();
    teardown(&t);
    *quiet = t.quiet;
    return s;
}
