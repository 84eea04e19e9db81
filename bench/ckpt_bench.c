/*
 * ckpt_bench.c: what a checkpoint costs the training loop. For an MLP
 * whose state (parameters + AdamW moments) has a given size, it measures
 * on the real CPU backend and checkpoint writer:
 *   stall  - background mode: the snapshot copy the loop waits for,
 *   sync   - synchronous mode: snapshot + HDF5 image + upload + commit,
 *   upload - storage_put of the image alone (MB/s),
 * and leaves the image in IMAGE_OUT for the peer (aws s3 cp) to upload.
 *
 * usage: ckpt_bench URI HIDDEN IMAGE_OUT [ROUNDS]   (HIDDEN like 4096,1536)
 * prints one line of name=value pairs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ckpt.h"
#include "checkpoint/writer.h"
#include "common/log.h"
#include "common/util.h"
#include "trainer/backend.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

static int parse_hidden(const char *s, int *h)
{
    int n = 0;
    char buf[256];
    if (str_copy(buf, sizeof buf, s))
        return -1;
    for (char *tok = strtok(buf, ","); tok && n < MLP_MAX_LAYERS - 1;
         tok = strtok(NULL, ",")) {
        int64_t v;
        if (parse_i64(&v, tok) || v < 1)
            return -1;
        h[n++] = (int)v;
    }
    return n;
}

#define CHECK(expr) do { if ((expr) != SR_OK) { \
        fprintf(stderr, "ckpt_bench: %s\n", sr_errmsg()); return 1; } \
    } while (0)

int main(int argc, char **argv)
{
    log_init();
    if (argc < 4) {
        fprintf(stderr, "usage: %s URI HIDDEN IMAGE_OUT [ROUNDS]\n", argv[0]);
        return 2;
    }
    const char *uri = argv[1];
    int hidden[MLP_MAX_LAYERS], nh = parse_hidden(argv[2], hidden);
    int64_t rounds = 3;
    if (nh < 1 || (argc > 4 && (parse_i64(&rounds, argv[4]) || rounds < 1 ||
                                rounds > 20))) {
        fprintf(stderr, "bad HIDDEN or ROUNDS\n");
        return 2;
    }
    struct mlp m;
    CHECK(mlp_shape(&m, 784, hidden, nh, 10));
    size_t np = m.nparams, ns = 2 * np;
    struct backend *be;
    struct backend_opts bo = { .max_batch = 1, .optim = OPTIM_ADAMW };
    CHECK(backend_cpu_ops.create(&be, &m, &bo));
    float *init = malloc(ns * sizeof(float));
    if (!init)
        return 1;
    mlp_init_params(&m, init, 1);
    CHECK(backend_cpu_ops.set_params(be, init));
    for (size_t i = 0; i < ns; i++)
        init[i] = 1e-3f * (float)(i % 1000);
    CHECK(backend_cpu_ops.set_opt_state(be, init));
    free(init);

    struct storage *st;
    CHECK(storage_open(&st));
    struct ckpt_writer *w;
    struct ckpt_writer_opts wo = { .st = st, .root = uri, .keep = 1,
                                   .nparams = np, .nstate = ns,
                                   .config_json = "{}" };
    CHECK(ckpt_writer_start(&w, &wo));
    struct ckpt_meta meta = { .world_size = 1, .global_batch = 256,
                              .optim = OPTIM_ADAMW, .shape = m,
                              .dataset_records = 1 };
    snprintf(meta.dataset_id, sizeof meta.dataset_id, "bench");
    double stall[20], sync[20], up[20];
    float *p, *s;
    int64_t step = 0;
    for (int r = 0; r < rounds; r++) {     /* background mode */
        CHECK(ckpt_writer_wait(w));
        double t0 = now_s();
        ckpt_writer_buffers(w, &p, &s);
        CHECK(backend_cpu_ops.get_params(be, p));
        CHECK(backend_cpu_ops.get_opt_state(be, s));
        meta.step = ++step;
        ckpt_writer_submit(w, &meta);
        stall[r] = now_s() - t0;
    }
    CHECK(ckpt_writer_wait(w));
    for (int r = 0; r < rounds; r++) {     /* synchronous mode */
        double t0 = now_s();
        CHECK(ckpt_writer_wait(w));
        ckpt_writer_buffers(w, &p, &s);
        CHECK(backend_cpu_ops.get_params(be, p));
        CHECK(backend_cpu_ops.get_opt_state(be, s));
        meta.step = ++step;
        CHECK(ckpt_writer_write_now(w, &meta));
        sync[r] = now_s() - t0;
    }
    struct sr_buf img = { 0 };
    CHECK(ckpt_build_image(&img, &meta, "{}", p, s));
    char obj[STORAGE_URI_MAX];
    CHECK(storage_uri_join(obj, sizeof obj, uri, "upload-only.h5"));
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        CHECK(storage_put(st, obj, img.data, img.len, 0));
        up[r] = now_s() - t0;
    }
    CHECK(storage_put(st, argv[3], img.data, img.len, STORAGE_NO_SYNC));
    printf("state_bytes=%zu image_bytes=%zu params=%zu stall_s=%.4f "
           "sync_s=%.3f upload_s=%.3f upload_mbps=%.0f\n",
           (np + ns) * sizeof(float), img.len, np, median(stall, (int)rounds),
           median(sync, (int)rounds), median(up, (int)rounds),
           (double)img.len / median(up, (int)rounds) / 1e6);
    buf_free(&img);
    ckpt_writer_stop(w);
    backend_cpu_ops.destroy(be);
    storage_close(st);
    return 0;
}
