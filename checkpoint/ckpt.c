/*
 * ckpt.c: checkpoint images (HDF5), manifests (JSON), commit, discovery,
 * verification and retention. All I/O goes through the storage layer, so
 * the same code commits to a local directory and to S3.
 */
#include "ckpt.h"

#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"
#include "h5image.h"

static const char *const moment_names[2][2] = {
    [OPTIM_SGD] = { "momentum_buffer", NULL },
    [OPTIM_ADAMW] = { "exp_avg", "exp_avg_sq" },
};

static const char *optim_name(enum optim_kind k)
{
    return k == OPTIM_SGD ? "sgd" : "adamw";
}

sr_status ckpt_uri(char *out, size_t cap, const char *root, int64_t step,
                   const char *object)
{
    char rel[64];
    if (object)
        snprintf(rel, sizeof rel, "step-%010" PRId64 "/%s", step, object);
    else
        snprintf(rel, sizeof rel, "step-%010" PRId64, step);
    return storage_uri_join(out, cap, root, rel);
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char d[32];
    unsigned int len = 0;
    if (!EVP_Digest(p, n, d, &len, EVP_sha256(), NULL))
        memset(d, 0, sizeof d);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* ---- image ---- */

static sr_status write_tensors(struct h5img *h, const struct mlp *m,
                               const char *group, const float *base)
{
    for (int t = 0; t < mlp_ntensors(m); t++) {
        char name[32], path[96];
        int ndim;
        size_t dims[2], off, cnt;
        mlp_tensor(m, t, name, sizeof name, &ndim, dims, &off, &cnt);
        snprintf(path, sizeof path, "%s/%s", group, name);
        SR_TRY(h5img_write_f32(h, path, base + off, ndim, dims));
    }
    return SR_OK;
}

static sr_status read_tensors(struct h5img *h, const struct mlp *m,
                              const char *group, float *base)
{
    for (int t = 0; t < mlp_ntensors(m); t++) {
        char name[32], path[96];
        int ndim;
        size_t dims[2], off, cnt;
        mlp_tensor(m, t, name, sizeof name, &ndim, dims, &off, &cnt);
        snprintf(path, sizeof path, "%s/%s", group, name);
        SR_TRY(h5img_read_f32(h, path, base + off, cnt));
    }
    return SR_OK;
}

static sr_status write_meta(struct h5img *h, const struct ckpt_meta *mt,
                            const char *config_json)
{
    int64_t v1 = CKPT_FORMAT_VERSION;
    int64_t dims[MLP_MAX_LAYERS + 1];
    for (int l = 0; l <= mt->shape.nlayers; l++)
        dims[l] = mt->shape.dims[l];
    int64_t nrec = (int64_t)mt->dataset_records;
    SR_TRY(h5img_attr_str(h, "/", "format", "spotrun-checkpoint"));
    SR_TRY(h5img_attr_i64(h, "/", "format_version", &v1, 1));
    SR_TRY(h5img_attr_i64(h, "/", "step", &mt->step, 1));
    SR_TRY(h5img_attr_i64(h, "/", "epoch", &mt->epoch, 1));
    SR_TRY(h5img_attr_i64(h, "/", "position", &mt->position, 1));
    SR_TRY(h5img_attr_i64(h, "/", "world_size", &mt->world_size, 1));
    SR_TRY(h5img_attr_i64(h, "/", "global_batch", &mt->global_batch, 1));
    int64_t block = (int64_t)mt->shuffle_block;
    SR_TRY(h5img_attr_i64(h, "/", "shuffle_block", &block, 1));
    SR_TRY(h5img_attr_str(h, "/", "model", "mlp"));
    SR_TRY(h5img_attr_i64(h, "/", "layer_sizes", dims,
                          (size_t)mt->shape.nlayers + 1));
    SR_TRY(h5img_attr_str(h, "/", "optimizer", optim_name(mt->optim)));
    SR_TRY(h5img_attr_i64(h, "/", "dataset_records", &nrec, 1));
    SR_TRY(h5img_attr_str(h, "/", "dataset_id", mt->dataset_id));
    SR_TRY(h5img_attr_f64(h, "/", "epoch_loss_sum", mt->epoch_loss_sum));
    SR_TRY(h5img_attr_i64(h, "/", "epoch_steps", &mt->epoch_steps, 1));
    SR_TRY(h5img_attr_f64(h, "/", "epoch_wait_s", mt->epoch_wait_s));
    SR_TRY(h5img_attr_f64(h, "/", "created", mt->created));
    SR_TRY(h5img_attr_str(h, "/", "config", config_json ? config_json
                                                         : "{}"));
    /* The only randomness after initialisation is the data order, a pure
     * function of (seed, epoch, position): the generator has no state to
     * carry beyond the seed and the cursor above. */
    uint64_t rng[2] = { mt->seed, 0 };
    SR_TRY(h5img_write_u64(h, "rng/seed", rng, 1));
    SR_TRY(h5img_attr_str(h, "/rng", "algorithm",
                          "xoshiro256** seeded by splitmix64; streams "
                          "derived from (seed, epoch, shuffle block)"));
    return SR_OK;
}

static sr_status write_checkpoint(struct h5img *h,
                                  const struct ckpt_meta *meta,
                                  const char *config_json,
                                  const float *params, const float *opt_state)
{
    const struct mlp *m = &meta->shape;
    SR_TRY(write_meta(h, meta, config_json));
    SR_TRY(write_tensors(h, m, "params", params));
    for (int k = 0; k < optim_state_per_param(meta->optim); k++) {
        char group[64];
        snprintf(group, sizeof group, "optimizer/%s",
                 moment_names[meta->optim][k]);
        SR_TRY(write_tensors(h, m, group,
                             opt_state + (size_t)k * m->nparams));
    }
    return SR_OK;
}

sr_status ckpt_build_image(struct sr_buf *out, const struct ckpt_meta *meta,
                           const char *config_json, const float *params,
                           const float *opt_state)
{
    struct h5img *h;
    SR_TRY(h5img_create(&h));
    sr_status s = write_checkpoint(h, meta, config_json, params, opt_state);
    if (s != SR_OK) {
        h5img_free(h);
        return s;
    }
    return h5img_finish(h, out);
}

sr_status ckpt_image_in(struct sr_buf *arena, size_t *len,
                        const struct ckpt_meta *meta, const char *config_json,
                        const float *params, const float *opt_state)
{
    struct h5img *h;
    SR_TRY(h5img_create_in(&h, arena));
    sr_status s = write_checkpoint(h, meta, config_json, params, opt_state);
    if (s != SR_OK) {
        h5img_free(h);
        return s;
    }
    return h5img_finish_in(h, len);
}

sr_status ckpt_read_meta(struct ckpt_meta *mt, const void *img, size_t len,
                         const char *what)
{
    memset(mt, 0, sizeof *mt);
    struct h5img *h;
    SR_TRY(h5img_open(&h, img, len, what));
    sr_status s = SR_OK;
    char *fmt = NULL, *opt = NULL, *dsid = NULL;
    int64_t version = 0, nrec = 0;
    size_t nsizes = 0;
    int64_t dims[MLP_MAX_LAYERS + 1];
    s = h5img_get_attr_str(h, "/", "format", &fmt);
    if (s == SR_OK && strcmp(fmt, "spotrun-checkpoint") != 0)
        s = SR_FAIL(SR_ERR_FORMAT, "%s: not a spotrun checkpoint", what);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "format_version", &version, 1);
    if (s == SR_OK && (version < 1 || version > CKPT_FORMAT_VERSION))
        s = SR_FAIL(SR_ERR_FORMAT, "%s: checkpoint format version %lld (this "
                    "build reads 1 to %d)", what, (long long)version,
                    CKPT_FORMAT_VERSION);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "step", &mt->step, 1);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "epoch", &mt->epoch, 1);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "position", &mt->position, 1);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "world_size", &mt->world_size, 1);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "global_batch", &mt->global_batch, 1);
    int64_t block = 0;      /* format 1 did not record it: unknown */
    if (s == SR_OK && version >= 2)
        s = h5img_get_attr_i64(h, "/", "shuffle_block", &block, 1);
    mt->shuffle_block = (uint64_t)block;
    if (s == SR_OK)
        s = h5img_get_attr_str(h, "/", "optimizer", &opt);
    if (s == SR_OK) {
        if (strcmp(opt, "sgd") == 0)
            mt->optim = OPTIM_SGD;
        else if (strcmp(opt, "adamw") == 0)
            mt->optim = OPTIM_ADAMW;
        else
            s = SR_FAIL(SR_ERR_FORMAT, "%s: unknown optimizer '%s'", what,
                        opt);
    }
    if (s == SR_OK)
        s = h5img_attr_len(h, "/", "layer_sizes", &nsizes);
    if (s == SR_OK && (nsizes < 3 || nsizes > MLP_MAX_LAYERS + 1))
        s = SR_FAIL(SR_ERR_FORMAT, "%s: bad layer_sizes", what);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "layer_sizes", dims, nsizes);
    if (s == SR_OK) {
        int hidden[MLP_MAX_LAYERS];
        for (size_t i = 1; i + 1 < nsizes; i++)
            hidden[i - 1] = (int)dims[i];
        s = mlp_shape(&mt->shape, (int)dims[0], hidden, (int)nsizes - 2,
                      (int)dims[nsizes - 1]);
        if (s != SR_OK)
            s = SR_FAIL(SR_ERR_FORMAT, "%s: bad layer_sizes", what);
    }
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "dataset_records", &nrec, 1);
    if (s == SR_OK)
        s = h5img_get_attr_str(h, "/", "dataset_id", &dsid);
    if (s == SR_OK && str_copy(mt->dataset_id, sizeof mt->dataset_id, dsid))
        s = SR_FAIL(SR_ERR_FORMAT, "%s: bad dataset_id", what);
    if (s == SR_OK)
        s = h5img_get_attr_f64(h, "/", "epoch_loss_sum", &mt->epoch_loss_sum);
    if (s == SR_OK)
        s = h5img_get_attr_i64(h, "/", "epoch_steps", &mt->epoch_steps, 1);
    if (s == SR_OK)
        s = h5img_get_attr_f64(h, "/", "epoch_wait_s", &mt->epoch_wait_s);
    if (s == SR_OK)
        s = h5img_get_attr_f64(h, "/", "created", &mt->created);
    if (s == SR_OK)
        s = h5img_read_u64(h, "rng/seed", &mt->seed, 1);
    mt->dataset_records = (uint64_t)nrec;
    free(fmt);
    free(opt);
    free(dsid);
    h5img_free(h);
    return s;
}

sr_status ckpt_read_tensors(const void *img, size_t len, const char *what,
                            const struct ckpt_meta *meta, float *params,
                            float *opt_state)
{
    struct h5img *h;
    SR_TRY(h5img_open(&h, img, len, what));
    const struct mlp *m = &meta->shape;
    sr_status s = read_tensors(h, m, "params", params);
    for (int k = 0; k < optim_state_per_param(meta->optim) && s == SR_OK;
         k++) {
        char group[64];
        snprintf(group, sizeof group, "optimizer/%s",
                 moment_names[meta->optim][k]);
        s = read_tensors(h, m, group, opt_state + (size_t)k * m->nparams);
    }
    h5img_free(h);
    return s;
}

/* ---- manifest and commit ---- */

struct digest_job {
    pthread_t thread;
    const void *data;
    size_t len;
    char hex[65];
};

static void *digest_main(void *arg)
{
    struct digest_job *j = arg;
    sha256_hex(j->data, j->len, j->hex);
    return NULL;
}

sr_status ckpt_commit(struct storage *st, const char *root,
                      const struct ckpt_meta *meta, const void *img,
                      size_t len)
{
    char manifest_uri[STORAGE_URI_MAX], state_uri[STORAGE_URI_MAX];
    SR_TRY(ckpt_uri(manifest_uri, sizeof manifest_uri, root, meta->step,
                    CKPT_MANIFEST));
    SR_TRY(ckpt_uri(state_uri, sizeof state_uri, root, meta->step,
                    CKPT_STATE_OBJECT));
    /* never overwrite the data of a committed checkpoint */
    uint64_t size;
    sr_status s = storage_stat(st, manifest_uri, &size);
    if (s == SR_OK)
        return SR_FAIL(SR_ERR_EXISTS, "%s: step %lld is already committed",
                       manifest_uri, (long long)meta->step);
    if (s != SR_ERR_NOT_FOUND)
        return s;
    sr_clear_error();
    /* the manifest's digest is computed while the object uploads */
    struct digest_job dj = { .data = img, .len = len };
    int threaded = pthread_create(&dj.thread, NULL, digest_main, &dj) == 0;
    s = storage_put(st, state_uri, img, len, 0);
    if (threaded)
        pthread_join(dj.thread, NULL);
    else
        digest_main(&dj);
    if (s != SR_OK)
        return s;
    const char *hex = dj.hex;
    json_t *j = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:f, s:[{s:s, s:I, "
                          "s:s}]}", "format", "spotrun-checkpoint-manifest",
                          "version", CKPT_MANIFEST_VERSION, "step",
                          (json_int_t)meta->step, "epoch",
                          (json_int_t)meta->epoch, "position",
                          (json_int_t)meta->position, "world_size",
                          (json_int_t)meta->world_size, "created",
                          meta->created, "objects", "name",
                          CKPT_STATE_OBJECT, "bytes", (json_int_t)len,
                          "sha256", hex);
    char *text = j ? json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER)
                   : NULL;
    json_decref(j);
    if (!text)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    s = storage_put(st, manifest_uri, text, strlen(text), STORAGE_CREATE_EXCL);
    free(text);
    return s;
}

/* ---- discovery ---- */

/* Step of a name "step-NNNNNNNNNN/...", -1 if it is not one. */
static int64_t name_step(const char *name, const char **rest)
{
    if (strncmp(name, "step-", 5) != 0)
        return -1;
    const char *slash = strchr(name + 5, '/');
    if (!slash || slash - (name + 5) > 19)
        return -1;
    char digits[24];
    snprintf(digits, sizeof digits, "%.*s", (int)(slash - (name + 5)),
             name + 5);
    int64_t v;
    if (parse_i64(&v, digits) || v < 0)
        return -1;
    if (rest)
        *rest = slash + 1;
    return v;
}

static int entry_desc(const void *a, const void *b)
{
    const struct ckpt_entry *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

/* Every object under root/ with names relative to root. */
static sr_status list_root(struct storage *st, const char *root,
                           struct storage_list *l)
{
    char prefix[STORAGE_URI_MAX];
    SR_TRY(storage_uri_join(prefix, sizeof prefix, root, ""));
    size_t pl = strlen(prefix);
    if (pl + 2 > sizeof prefix)
        return SR_FAIL(SR_ERR_USAGE, "location too long: %s", root);
    if (pl == 0 || prefix[pl - 1] != '/') {
        prefix[pl] = '/';
        prefix[pl + 1] = '\0';
    }
    return storage_list(st, prefix, l);
}

sr_status ckpt_list(struct storage *st, const char *root,
                    struct ckpt_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct storage_list l;
    SR_TRY(list_root(st, root, &l));
    struct ckpt_entry *v = calloc(l.n ? l.n : 1, sizeof *v);
    if (!v) {
        storage_list_free(&l);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < l.n; i++) {
        const char *rest;
        int64_t step = name_step(l.v[i].name, &rest);
        if (step < 0)
            continue;
        if (k == 0 || v[k - 1].step != step) {  /* names come sorted */
            v[k].step = step;
            k++;
        }
        struct ckpt_entry *e = &v[k - 1];
        e->bytes += l.v[i].size;
        if (l.v[i].mtime > e->mtime)
            e->mtime = l.v[i].mtime;
        if (strcmp(rest, CKPT_MANIFEST) == 0)
            e->committed = 1;
    }
    storage_list_free(&l);
    qsort(v, k, sizeof *v, entry_desc);
    *out = v;
    *n = k;
    return SR_OK;
}

sr_status ckpt_load(struct storage *st, const char *root, int64_t step,
                    struct sr_buf *img)
{
    char uri[STORAGE_URI_MAX];
    SR_TRY(ckpt_uri(uri, sizeof uri, root, step, CKPT_MANIFEST));
    struct sr_buf text = { 0 };
    sr_status s = storage_read_all(st, uri, &text);
    if (s == SR_ERR_NOT_FOUND)
        s = SR_FAIL(SR_ERR_NOT_FOUND, "%s is missing (not committed)", uri);
    if (s != SR_OK) {
        buf_free(&text);
        return s;
    }
    json_error_t jerr;
    json_t *j = json_loadb((const char *)text.data, text.len, 0, &jerr);
    buf_free(&text);
    const char *fmt = json_string_value(json_object_get(j, "format"));
    json_t *objs = json_object_get(j, "objects");
    json_t *o = json_array_get(objs, 0);
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *want = json_string_value(json_object_get(o, "sha256"));
    json_int_t bytes = json_integer_value(json_object_get(o, "bytes"));
    if (!j || !fmt || strcmp(fmt, "spotrun-checkpoint-manifest") != 0 ||
        json_integer_value(json_object_get(j, "step")) != step ||
        json_array_size(objs) != 1 || !name ||
        strcmp(name, CKPT_STATE_OBJECT) != 0 || !want || bytes <= 0) {
        json_decref(j);
        return SR_FAIL(SR_ERR_FORMAT, "%s: malformed manifest", uri);
    }
    char expect[65];
    snprintf(expect, sizeof expect, "%s", want);
    json_decref(j);
    SR_TRY(ckpt_uri(uri, sizeof uri, root, step, CKPT_STATE_OBJECT));
    img->len = 0;
    s = storage_read_all(st, uri, img);
    if (s != SR_OK)
        return s;
    if ((json_int_t)img->len != bytes)
        return SR_FAIL(SR_ERR_FORMAT, "%s: %zu bytes, the manifest says %lld",
                       uri, img->len, (long long)bytes);
    char hex[65];
    sha256_hex(img->data, img->len, hex);
    if (strcmp(hex, expect) != 0)
        return SR_FAIL(SR_ERR_FORMAT, "%s: SHA-256 mismatch (manifest %.12s..., "
                       "object %.12s...)", uri, expect, hex);
    return SR_OK;
}

/* Delete every listed object of one step, the manifest first. */
static sr_status delete_step(struct storage *st, const char *root,
                             int64_t step, const struct storage_list *l)
{
    char uri[STORAGE_URI_MAX];
    SR_TRY(ckpt_uri(uri, sizeof uri, root, step, CKPT_MANIFEST));
    SR_TRY(storage_delete(st, uri));
    for (size_t i = 0; i < l->n; i++) {
        const char *rest;
        if (name_step(l->v[i].name, &rest) != step ||
            strcmp(rest, CKPT_MANIFEST) == 0)
            continue;
        SR_TRY(ckpt_uri(uri, sizeof uri, root, step, rest));
        SR_TRY(storage_delete(st, uri));
    }
    return SR_OK;
}

sr_status ckpt_prune(struct storage *st, const char *root, int keep)
{
    if (keep <= 0)
        return SR_OK;
    struct ckpt_entry *v;
    size_t n;
    SR_TRY(ckpt_list(st, root, &v, &n));
    struct storage_list l = { 0 };
    sr_status s = list_root(st, root, &l);
    int kept = 0;
    int64_t newest_committed = -1;
    for (size_t i = 0; s == SR_OK && i < n; i++) {
        if (v[i].committed) {
            if (newest_committed < 0)
                newest_committed = v[i].step;
            if (kept < keep) {
                kept++;
                continue;
            }
        } else if (newest_committed < 0 || v[i].step > newest_committed) {
            continue;   /* maybe still being written */
        }
        log_debug("removing checkpoint step %lld under %s",
                  (long long)v[i].step, root);
        s = delete_step(st, root, v[i].step, &l);
    }
    storage_list_free(&l);
    free(v);
    return s;
}
