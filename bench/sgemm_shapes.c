/*
 * sgemm_shapes.c: the OpenBLAS sgemm ceiling for one MLP training step.
 * Runs exactly the matrix products of a training step (forward, weight
 * gradient, input gradient; the shapes backend_cpu.c uses) back to back,
 * with no element-wise work in between, and prints the achieved GFLOP/s
 * and the equivalent samples/s. bench/train_cpu.sh compares spotrun
 * against this number.
 *
 * usage: sgemm_shapes BATCH THREADS SECONDS IN H1 [H2 ...] CLASSES
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "trainer/blas.h"

#define MAXL 16

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s BATCH THREADS SECONDS IN H1 [H2 ...] "
                "CLASSES\n", argv[0]);
        return 2;
    }
    int64_t batch, threads;
    double secs;
    if (parse_i64(&batch, argv[1]) || parse_i64(&threads, argv[2]) ||
        parse_f64(&secs, argv[3]) || batch < 1 || threads < 1) {
        fprintf(stderr, "bad BATCH, THREADS or SECONDS\n");
        return 2;
    }
    int nd = argc - 4;
    if (nd > MAXL + 1) {
        fprintf(stderr, "too many layers\n");
        return 2;
    }
    int dims[MAXL + 1];
    for (int i = 0; i < nd; i++) {
        int64_t d;
        if (parse_i64(&d, argv[4 + i]) || d < 1) {
            fprintf(stderr, "bad layer size %s\n", argv[4 + i]);
            return 2;
        }
        dims[i] = (int)d;
    }
    if (blas_load() != SR_OK) {
        fprintf(stderr, "%s\n", sr_errmsg());
        return 1;
    }
    blas.set_num_threads((int)threads);
    int n = (int)batch, L = nd - 1;
    float *act[MAXL + 1], *w[MAXL], *gw[MAXL], *d1, *d2;
    int widest = 0;
    for (int l = 0; l <= L; l++) {
        act[l] = calloc((size_t)n * (size_t)dims[l], sizeof(float));
        if (dims[l] > widest)
            widest = dims[l];
    }
    for (int l = 0; l < L; l++) {
        size_t k = (size_t)dims[l] * (size_t)dims[l + 1];
        w[l] = malloc(k * sizeof(float));
        gw[l] = malloc(k * sizeof(float));
        for (size_t i = 0; i < k; i++)
            w[l][i] = 0.01f * (float)(i % 97);
    }
    d1 = calloc((size_t)n * (size_t)widest, sizeof(float));
    d2 = calloc((size_t)n * (size_t)widest, sizeof(float));
    for (size_t i = 0; i < (size_t)n * (size_t)dims[0]; i++)
        act[0][i] = (float)(i % 255) / 255.0f;
    double flops = 0;
    for (int l = 0; l < L; l++) {
        double mk = 2.0 * n * dims[l] * dims[l + 1];
        flops += 2 * mk + (l > 0 ? mk : 0);
    }
    long iters = 0;
    double t0 = 0, start = now_s();
    for (;;) {
        if (iters == 20)        /* warm-up done */
            t0 = now_s();
        for (int l = 0; l < L; l++)
            blas.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n,
                        dims[l + 1], dims[l], 1.0f, act[l], dims[l], w[l],
                        dims[l], 0.0f, act[l + 1], dims[l + 1]);
        float *dz = act[L];
        for (int l = L - 1; l >= 0; l--) {
            blas.sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dims[l + 1],
                        dims[l], n, 1.0f, dz, dims[l + 1], act[l], dims[l],
                        0.0f, gw[l], dims[l]);
            if (l == 0)
                break;
            float *dh = dz == d1 ? d2 : d1;
            blas.sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dims[l],
                        dims[l + 1], 1.0f, dz, dims[l + 1], w[l], dims[l],
                        0.0f, dh, dims[l]);
            dz = dh;
        }
        iters++;
        if (iters > 20 && now_s() - t0 >= secs)
            break;
        if (now_s() - start > 10 * secs + 5)
            break;
    }
    double el = now_s() - t0;
    long timed = iters - 20;
    double gflops = flops * (double)timed / el / 1e9;
    printf("sgemm_gflops=%.2f samples_per_sec=%.0f steps=%ld seconds=%.3f "
           "kernel=%s\n", gflops, (double)timed * n / el, timed, el,
           blas.get_corename());
    return 0;
}
