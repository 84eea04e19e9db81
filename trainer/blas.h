/*
 * blas.h: OpenBLAS, loaded at run time. Loading it ourselves (rather than
 * at program start) lets spotrun pick the kernel before the library reads
 * OPENBLAS_CORETYPE: OpenBLAS 0.3.21 does not recognise recent Xeons
 * (Sapphire Rapids) and falls back to its AVX2 kernels, which run sgemm at
 * about 60% of the AVX-512 ones. When the CPU has AVX-512 (F, CD, BW, DQ,
 * VL) and the user has not set OPENBLAS_CORETYPE, spotrun sets SkylakeX.
 */
#ifndef SPOTRUN_BLAS_H
#define SPOTRUN_BLAS_H

#include <cblas.h>

#include "../common/status.h"

struct blas_lib {
    void (*sgemm)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE,
                  enum CBLAS_TRANSPOSE, blasint m, blasint n, blasint k,
                  float alpha, const float *a, blasint lda, const float *b,
                  blasint ldb, float beta, float *c, blasint ldc);
    void (*set_num_threads)(int);
    char *(*get_corename)(void);
};

extern struct blas_lib blas;

/* Load OpenBLAS once (thread-safe); later calls return the first result. */
sr_status blas_load(void) SR_MUST_USE;

#endif
