/*
 * cuda_kernels.h: the element-wise and reduction kernels of the CUDA
 * backend; the matrix products are cuBLAS calls in cuda_backend.cu.
 *
 * Implements: bias + ReLU after a product (k_bias_act), softmax
 * cross-entropy with its gradient (k_softmax_xent) and the loss sum
 * (k_loss_sum), the ReLU mask on an input gradient fused with the bias
 * gradient's column sums (k_colsum), the optimizers (k_sgd, k_adamw, one
 * launch over every tensor) and the FP32 -> BF16 cast.
 *
 * Every reduction runs in a fixed order (no atomics), so results depend
 * only on the shapes: the same inputs give the same bits, run after run.
 * Activations are FP32 or BF16 (enum act_type); accumulation, gradients
 * and optimizer state are always FP32.
 */
#ifndef SPOTRUN_CUDA_KERNELS_H
#define SPOTRUN_CUDA_KERNELS_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "trainer/mlp.h"
#include "cuda_util.h"

enum act_type { ACT_F32 = 0, ACT_BF16 = 1 };

/* Row blocks of the column sums: a partial-sum buffer holds
 * COLSUM_MAX_CHUNKS x widest-layer floats. */
#define COLSUM_MAX_CHUNKS 64

/* dst[i] = src[i] rounded to BF16 */
sr_status k_cast_bf16(__nv_bfloat16 *dst, const float *src, size_t n,
                      cudaStream_t st) SR_MUST_USE;

/* h (n x d, row-major, type t) += bias per column, then ReLU if relu. */
sr_status k_bias_act(void *h, enum act_type t, const float *bias, int n,
                     int d, int relu, cudaStream_t st) SR_MUST_USE;

/* Softmax cross-entropy of n rows of c FP32 logits z against labels y:
 * rowloss[i] = logsumexp(z_i) - z_i[y_i], hits[i] = (first argmax ==
 * y_i). When dz is not NULL it receives d(loss * scale)/dz (type dzt; dz
 * may be z itself when dzt is FP32). */
sr_status k_softmax_xent(const float *z, const int32_t *y, int n, int c,
                         float scale, void *dz, enum act_type dzt,
                         float *rowloss, int *hits, cudaStream_t st)
    SR_MUST_USE;

/* Sum of the n row losses (in double, fixed order) and hits. When
 * loss_out is not NULL, *loss_out = (float)(sum * scale) (the training
 * step's GRAD_EXTRA_LOSS); when eval_out is not NULL, eval_out[0] = sum and
 * eval_out[1] = hits. */
sr_status k_loss_sum(const float *rowloss, const int *hits, int n,
                     float scale, float *loss_out, double *eval_out,
                     cudaStream_t st) SR_MUST_USE;

/* out[j] = sum over the n rows of dz[., j] (dz: n x d, type t). When h is
 * not NULL, first dz = dz where h > 0, else 0 (the ReLU's backward, in
 * place). partial: COLSUM_MAX_CHUNKS x d floats of scratch. */
sr_status k_colsum(void *dz, const void *h, enum act_type t, int n, int d,
                   float *partial, float *out, cudaStream_t st) SR_MUST_USE;

/* The parameter tensors an optimizer launch walks, with their decay. */
struct opt_segments {
    int n;
    unsigned long long off[2 * MLP_MAX_LAYERS];
    unsigned long long len[2 * MLP_MAX_LAYERS];
    float wd[2 * MLP_MAX_LAYERS];
};

/* trainer/optim.c's optim_sgd_cpu and optim_adamw_cpu over every segment,
 * the same float operations in the same order. p16, when not NULL, gets
 * the updated parameters rounded to BF16. For AdamW, the host computes
 * step_size = lr / (1 - beta1^step) and inv_bc2_sqrt = 1 / sqrt(1 - beta2^step)
 * as optim.c does. */
sr_status k_sgd(float *p, const float *g, float *mom, __nv_bfloat16 *p16,
                const struct opt_segments *seg, float lr, float momentum,
                cudaStream_t st) SR_MUST_USE;
sr_status k_adamw(float *p, const float *g, float *m, float *v,
                  __nv_bfloat16 *p16, const struct opt_segments *seg,
                  float lr, float beta1, float beta2, float eps,
                  float step_size, float inv_bc2_sqrt, cudaStream_t st)
    SR_MUST_USE;

#endif
