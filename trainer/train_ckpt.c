/*
 * train_ckpt.c: the training loop's checkpoints. Every rank holds the same
 * parameters and optimizer state, so rank 0 alone snapshots and writes;
 * the other ranks never wait for a checkpoint. On resume rank 0 finds the
 * newest checkpoint that verifies, checks it fits this run, and broadcasts
 * the image; every rank loads it and continues from its cursor.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../checkpoint/ckpt.h"
#include "../common/log.h"
#include "../common/util.h"
#include "trainer.h"

static void shape_str(const struct mlp *m, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int l = 0; l <= m->nlayers && n + 12 < cap; l++)
        n += (size_t)snprintf(out + n, cap - n, "%s%d", l ? "-" : "",
                              m->dims[l]);
}

/* Can this run continue from meta? Refuses what would load garbage or
 * silently change the sample sequence. */
static sr_status check_fits(const struct trainer *t,
                            const struct ckpt_meta *mt, const char *what)
{
    const struct train_config *cfg = t->cfg;
    char a[128], b[128];
    shape_str(&mt->shape, a, sizeof a);
    shape_str(&t->m, b, sizeof b);
    const char *hint = "use another --checkpoint location or --no-resume";
    if (strcmp(a, b) != 0)
        return SR_FAIL(SR_ERR_USAGE, "%s holds model %s, this run builds %s; "
                       "%s", what, a, b, hint);
    if (mt->optim != t->op.kind)
        return SR_FAIL(SR_ERR_USAGE, "%s was made with optimizer %s, this "
                       "run uses %s; %s", what,
                       mt->optim == OPTIM_SGD ? "sgd" : "adamw",
                       cfg->optimizer, hint);
    if (mt->dataset_records != t->train.ds.nrec ||
        strcmp(mt->dataset_id, t->dataset_id) != 0)
        return SR_FAIL(SR_ERR_USAGE, "%s was made on other training data "
                       "(%llu records, shard list %.12s...), --data %s has "
                       "%llu (%.12s...); %s", what,
                       (unsigned long long)mt->dataset_records,
                       mt->dataset_id, cfg->data,
                       (unsigned long long)t->train.ds.nrec, t->dataset_id,
                       hint);
    if (mt->global_batch != cfg->batch_size)
        return SR_FAIL(SR_ERR_USAGE, "%s was made with global batch %lld, "
                       "this run uses %lld (the sample sequence would "
                       "change); %s", what, (long long)mt->global_batch,
                       (long long)cfg->batch_size, hint);
    if (mt->seed != cfg->seed)
        return SR_FAIL(SR_ERR_USAGE, "%s was made with seed %llu, this run "
                       "uses %llu; %s", what, (unsigned long long)mt->seed,
                       (unsigned long long)cfg->seed, hint);
    if (mt->shuffle_block != 0 &&          /* 0: format 1, not recorded */
        sampler_effective_block(mt->shuffle_block, t->train.ds.nrec) !=
        t->sampler.block)
        return SR_FAIL(SR_ERR_USAGE, "%s was made with a shuffle block of "
                       "%llu records, this run uses %llu (the sample "
                       "sequence would change); pass --shuffle-block %llu "
                       "to continue it, or %s", what,
                       (unsigned long long)mt->shuffle_block,
                       (unsigned long long)trainer_shuffle_block(t),
                       (unsigned long long)mt->shuffle_block, hint);
    if (mt->position % cfg->batch_size != 0 || mt->epoch < 0 ||
        mt->step < 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: inconsistent cursor", what);
    return SR_OK;
}

/* Rank 0: the newest checkpoint that verifies and fits, into img and mt.
 * *found = 0 when there is none. Unusable ones are reported and skipped;
 * one that verifies but does not fit stops the run. */
static sr_status find_checkpoint(struct trainer *t, struct sr_buf *img,
                                 struct ckpt_meta *mt, int *found)
{
    const char *root = t->cfg->checkpoint;
    *found = 0;
    struct ckpt_entry *v;
    size_t n;
    SR_TRY(ckpt_list(t->st, root, &v, &n));
    sr_status s = SR_OK;
    for (size_t i = 0; i < n && !*found && s == SR_OK; i++) {
        char what[STORAGE_URI_MAX];
        s = ckpt_uri(what, sizeof what, root, v[i].step, NULL);
        if (s != SR_OK)
            break;
        if (!v[i].committed) {
            log_warn("skipping checkpoint %s: no manifest (never committed)",
                     what);
            continue;
        }
        sr_status l = ckpt_load(t->st, root, v[i].step, img);
        if (l == SR_OK)
            l = ckpt_read_meta(mt, img->data, img->len, what);
        if (l == SR_ERR_FORMAT || l == SR_ERR_NOT_FOUND) {
            log_warn("skipping checkpoint %s: %s", what, sr_errmsg_user());
            continue;
        }
        if (l != SR_OK) {
            s = l;
            break;
        }
        s = check_fits(t, mt, what);
        if (s == SR_OK)
            *found = 1;
    }
    free(v);
    return s;
}

/* Collective: rank 0 finds, everyone receives and loads. */
static sr_status resume(struct trainer *t)
{
    struct comm *c = t->c;
    struct sr_buf img = { 0 };
    struct ckpt_meta mt;
    int found = 0;
    sr_status s = SR_OK;
    double t0 = now_s();
    if (c->rank == 0)
        s = find_checkpoint(t, &img, &mt, &found);
    double t_found = now_s();
    int64_t hdr[2] = { s, s == SR_OK && found ? (int64_t)img.len : -1 };
    sr_status m = comm_bcast_bytes(c, hdr, sizeof hdr);
    if (m == SR_OK && hdr[0] != SR_OK && c->rank != 0)
        m = SR_FAIL((sr_status)hdr[0], "rank 0 could not resume (see its "
                    "error)");
    if (m == SR_OK && hdr[0] == SR_OK && hdr[1] >= 0 && c->size > 1) {
        if (c->rank != 0) {
            m = buf_reserve(&img, (size_t)hdr[1]);
            img.len = (size_t)hdr[1];
        }
        if (m == SR_OK)
            m = comm_bcast_bytes(c, img.data, (size_t)hdr[1]);
    }
    if (s == SR_OK)
        s = m;
    if (s == SR_OK && hdr[1] < 0) {
        log_info("no checkpoint under %s; starting from step 0",
                 t->cfg->checkpoint);
        buf_free(&img);
        return SR_OK;
    }
    char what[STORAGE_URI_MAX];
    if (s == SR_OK && c->rank != 0)
        s = ckpt_read_meta(&mt, img.data, img.len, t->cfg->checkpoint);
    if (s == SR_OK)
        s = ckpt_uri(what, sizeof what, t->cfg->checkpoint, mt.step, NULL);
    float *state = NULL;
    if (s == SR_OK) {
        state = malloc((trainer_opt_state_len(t) ? trainer_opt_state_len(t)
                        : 1) * sizeof(float));
        if (!state)
            s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
    }
    if (s == SR_OK)
        s = ckpt_read_tensors(img.data, img.len, what, &mt, t->host_params,
                              state);
    if (s == SR_OK)
        s = t->ops->set_params(t->be, t->host_params);
    if (s == SR_OK)
        s = t->ops->set_opt_state(t->be, state);
    free(state);
    buf_free(&img);
    if (s != SR_OK)
        return s;
    t->cur = (struct cursor){
        .step = mt.step, .epoch = mt.epoch, .position = mt.position,
        .loss_sum = mt.epoch_loss_sum, .steps = mt.epoch_steps,
        .wait_s = mt.epoch_wait_s,
    };
    char sz[32];
    log_info("resumed from %s: step %lld, epoch %lld, %lld records into it%s "
             "(%s: found and read in %.2f s, loaded in %.2f s)", what,
             (long long)mt.step, (long long)mt.epoch + 1,
             (long long)mt.position, mt.world_size != c->size
             ? " (world size changed)" : "",
             fmt_bytes(sz, sizeof sz, (uint64_t)hdr[1]), t_found - t0,
             now_s() - t_found);
    if (mt.world_size != c->size)
        log_info("checkpoint was written by %lld rank(s), this run has %d; "
                 "the global sample sequence continues unchanged",
                 (long long)mt.world_size, c->size);
    t->last_ckpt = now_s();
    return SR_OK;
}

sr_status trainer_ckpt_setup(struct trainer *t)
{
    const struct train_config *cfg = t->cfg;
    if (!cfg->checkpoint[0])
        return SR_OK;
    if (t->c->rank == 0) {
        struct ckpt_writer_opts o = {
            .st = t->st, .root = cfg->checkpoint,
            .keep = (int)cfg->keep_checkpoints, .nparams = t->m.nparams,
            .nstate = trainer_opt_state_len(t),
            .config_json = t->config_json,
        };
        SR_TRY(ckpt_writer_start(&t->ckw, &o));
    }
    t->last_ckpt = now_s();
    if (cfg->no_resume) {
        log_info("--no-resume: starting from step 0; checkpoints go to %s",
                 cfg->checkpoint);
        return SR_OK;
    }
    return resume(t);
}

static void fill_meta(const struct trainer *t, struct ckpt_meta *mt)
{
    memset(mt, 0, sizeof *mt);
    mt->step = t->cur.step;
    mt->epoch = t->cur.epoch;
    mt->position = t->cur.position;
    mt->world_size = t->c->size;
    mt->global_batch = t->cfg->batch_size;
    mt->seed = t->cfg->seed;
    mt->shuffle_block = trainer_shuffle_block(t);
    mt->optim = t->op.kind;
    mt->shape = t->m;
    mt->dataset_records = t->train.ds.nrec;
    memcpy(mt->dataset_id, t->dataset_id, sizeof mt->dataset_id);
    mt->epoch_loss_sum = t->cur.loss_sum;
    mt->epoch_steps = t->cur.steps;
    mt->epoch_wait_s = t->cur.wait_s;
    mt->created = wall_s();
}

/* Copy the backend's state into the writer's buffers: the stall. */
static sr_status snapshot(struct trainer *t, struct ckpt_meta *mt)
{
    double t0 = now_s();
    float *p, *st;
    ckpt_writer_buffers(t->ckw, &p, &st);
    SR_TRY(t->ops->get_params(t->be, p));
    SR_TRY(t->ops->get_opt_state(t->be, st));
    fill_meta(t, mt);
    double dt = now_s() - t0;
    t->stall_s += dt;
    t->last_ckpt = now_s();
    log_debug("checkpoint step %lld: snapshot took %.4f s",
              (long long)mt->step, dt);
    return SR_OK;
}

/* Report a background write that failed; training goes on. */
static void collect(struct trainer *t)
{
    if (ckpt_writer_wait(t->ckw) != SR_OK)
        log_warn("%s; the next checkpoint will try again", sr_errmsg_user());
}

sr_status trainer_ckpt_maybe(struct trainer *t, int force)
{
    const struct train_config *cfg = t->cfg;
    if (!t->ckw)
        return SR_OK;
    int due = force || t->ckpt_pending ||
              (cfg->checkpoint_every_steps > 0 &&
               t->cur.step % cfg->checkpoint_every_steps == 0) ||
              (cfg->checkpoint_every_s > 0 &&
               now_s() - t->last_ckpt >= cfg->checkpoint_every_s);
    if (!due)
        return SR_OK;
    int64_t busy = ckpt_writer_in_flight(t->ckw);
    if (busy >= 0) {
        if (!t->ckpt_pending)
            log_info("checkpoint due at step %lld, but step %lld is still "
                     "being written; taking it at the first step after that "
                     "one commits", (long long)t->cur.step, (long long)busy);
        t->ckpt_pending = 1;
        return SR_OK;
    }
    t->ckpt_pending = 0;
    collect(t);
    struct ckpt_meta mt;
    /* only rank 0 is here: a failed snapshot must not end its run alone */
    if (snapshot(t, &mt) != SR_OK) {
        log_error("checkpoint at step %lld skipped: %s",
                  (long long)t->cur.step, sr_errmsg_user());
        return SR_OK;
    }
    ckpt_writer_submit(t->ckw, &mt);
    return SR_OK;
}

sr_status trainer_ckpt_now(struct trainer *t)
{
    if (!t->ckw)
        return SR_OK;
    collect(t);
    struct ckpt_writer_stats stats;
    ckpt_writer_stats(t->ckw, &stats);
    if (stats.last_step == t->cur.step)
        return SR_OK;       /* the newest checkpoint is this very state */
    struct ckpt_meta mt;
    SR_TRY(snapshot(t, &mt));
    return ckpt_writer_write_now(t->ckw, &mt);
}

void trainer_ckpt_teardown(struct trainer *t)
{
    if (!t->ckw)
        return;
    collect(t);
    struct ckpt_writer_stats s;
    ckpt_writer_stats(t->ckw, &s);
    if (s.committed > 0)
        log_info("checkpoints: %lld committed, %lld failed, training stalled "
                 "%.3f s for snapshots, %.2f s of background writing",
                 (long long)s.committed, (long long)s.failed, t->stall_s,
                 s.write_s);
    ckpt_writer_stop(t->ckw);
    t->ckw = NULL;
}
