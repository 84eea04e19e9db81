/*
 * cuda_kernels.cu: the CUDA backend's own kernels (see cuda_kernels.h for
 * what each computes). Element-wise kernels are memory-bound: they move
 * 16 bytes per load where the row length allows and do their arithmetic
 * in FP32. The plugin is compiled with --fmad=false, so a formula here
 * rounds exactly as the same formula in the CPU backend.
 */
#include "cuda_kernels.h"

#include <math.h>

#include "trainer/optim.h"

#define THREADS 256

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ __nv_bfloat16
from_f<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* W consecutive elements moved as one load or store */
template <typename T, int W> struct alignas(sizeof(T) * W) vec {
    T v[W];
};

static unsigned grid_for(size_t n, unsigned cap)
{
    size_t b = (n + THREADS - 1) / THREADS;
    if (b < 1)
        b = 1;
    return (unsigned)(b < cap ? b : cap);
}

/* ---- FP32 -> BF16 ---- */

__global__ void cast_bf16_kernel(__nv_bfloat16 *dst, const float *src,
                                 size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride)
        dst[i] = __float2bfloat16_rn(src[i]);
}

sr_status k_cast_bf16(__nv_bfloat16 *dst, const float *src, size_t n,
                      cudaStream_t st)
{
    if (n == 0)
        return SR_OK;
    cast_bf16_kernel<<<grid_for(n, 8192), THREADS, 0, st>>>(dst, src, n);
    CUDA_CHECK(cudaGetLastError());
    return SR_OK;
}

/* ---- bias + activation, in place after the product ---- */

template <typename T, int W, bool RELU>
__global__ void bias_act_kernel(T *h, const float *__restrict__ bias, int n,
                                int d)
{
    typedef vec<T, W> V;
    int nv = d / W;
    for (int r = blockIdx.y; r < n; r += gridDim.y) {
        V *row = reinterpret_cast<V *>(h + (size_t)r * (size_t)d);
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < nv;
             c += gridDim.x * blockDim.x) {
            V x = row[c];
#pragma unroll
            for (int k = 0; k < W; k++) {
                float v = to_f(x.v[k]) + bias[c * W + k];
                if (RELU)
                    v = v > 0.0f ? v : 0.0f;
                x.v[k] = from_f<T>(v);
            }
            row[c] = x;
        }
    }
}

template <typename T, bool RELU>
static void launch_bias_act(T *h, const float *bias, int n, int d,
                            cudaStream_t st)
{
    const int wide = 16 / (int)sizeof(T);
    int w = d % wide == 0 ? wide : d % 2 == 0 ? 2 : 1;
    int nv = d / w;
    dim3 grid(grid_for((size_t)nv, 64), (unsigned)(n < 65535 ? n : 65535));
    if (w == wide)
        bias_act_kernel<T, 16 / sizeof(T), RELU>
            <<<grid, THREADS, 0, st>>>(h, bias, n, d);
    else if (w == 2)
        bias_act_kernel<T, 2, RELU><<<grid, THREADS, 0, st>>>(h, bias, n, d);
    else
        bias_act_kernel<T, 1, RELU><<<grid, THREADS, 0, st>>>(h, bias, n, d);
}

sr_status k_bias_act(void *h, enum act_type t, const float *bias, int n,
                     int d, int relu, cudaStream_t st)
{
    if (t == ACT_F32 && relu)
        launch_bias_act<float, true>((float *)h, bias, n, d, st);
    else if (t == ACT_F32)
        launch_bias_act<float, false>((float *)h, bias, n, d, st);
    else if (relu)
        launch_bias_act<__nv_bfloat16, true>((__nv_bfloat16 *)h, bias, n,
                                             d, st);
    else
        launch_bias_act<__nv_bfloat16, false>((__nv_bfloat16 *)h, bias, n,
                                              d, st);
    CUDA_CHECK(cudaGetLastError());
    return SR_OK;
}

/* ---- softmax cross-entropy: one warp per row ---- */

template <typename TG>
__global__ void softmax_xent_kernel(const float *z, const int32_t *y, int n,
                                    int c, float scale, TG *dz,
                                    float *rowloss, int *hits)
{
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= n)
        return;                 /* the whole warp: row is per warp */
    const float *zr = z + (size_t)row * (size_t)c;
    /* the first maximum, as the CPU's strict > scan finds it */
    float best = -INFINITY;
    int arg = c;
    for (int j = lane; j < c; j += 32) {
        float v = zr[j];
        if (arg == c || v > best) {
            best = v;
            arg = j;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ob = __shfl_xor_sync(0xffffffffu, best, o);
        int oa = __shfl_xor_sync(0xffffffffu, arg, o);
        if (oa != c && (arg == c || ob > best || (ob == best && oa < arg))) {
            best = ob;
            arg = oa;
        }
    }
    float mx = best;
    float s = 0.0f;
    for (int j = lane; j < c; j += 32)
        s += expf(zr[j] - mx);
    /* butterfly: every lane ends with the same sum */
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    int yi = y[row];
    float zy = zr[yi];
    float lse = mx + logf(s);
    if (lane == 0) {
        rowloss[row] = lse - zy;
        hits[row] = arg == yi;
    }
    if (!dz)
        return;
    __syncwarp();               /* dz may be z: every read is done */
    float inv = scale / s;
    TG *dr = dz + (size_t)row * (size_t)c;
    for (int j = lane; j < c; j += 32) {
        float g = expf(zr[j] - mx) * inv;
        if (j == yi)
            g -= scale;
        dr[j] = from_f<TG>(g);
    }
}

sr_status k_softmax_xent(const float *z, const int32_t *y, int n, int c,
                         float scale, void *dz, enum act_type dzt,
                         float *rowloss, int *hits, cudaStream_t st)
{
    const int rows_per_block = THREADS / 32;
    unsigned grid = (unsigned)((n + rows_per_block - 1) / rows_per_block);
    if (dzt == ACT_BF16)
        softmax_xent_kernel<__nv_bfloat16><<<grid, THREADS, 0, st>>>(
            z, y, n, c, scale, (__nv_bfloat16 *)dz, rowloss, hits);
    else
        softmax_xent_kernel<float><<<grid, THREADS, 0, st>>>(
            z, y, n, c, scale, (float *)dz, rowloss, hits);
    CUDA_CHECK(cudaGetLastError());
    return SR_OK;
}

/* ---- the loss sum: one block, fixed order ---- */

__global__ void loss_sum_kernel(const float *rowloss, const int *hits, int n,
                                float scale, float *loss_out,
                                double *eval_out)
{
    __shared__ double sl[THREADS];
    __shared__ long long sh[THREADS];
    int t = threadIdx.x;
    double a = 0;
    long long h = 0;
    for (int i = t; i < n; i += THREADS) {
        a += (double)rowloss[i];
        h += hits[i];
    }
    sl[t] = a;
    sh[t] = h;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (t < s) {
            sl[t] += sl[t + s];
            sh[t] += sh[t + s];
        }
        __syncthreads();
    }
    if (t == 0) {
        if (loss_out)
            *loss_out = (float)(sl[0] * (double)scale);
        if (eval_out) {
            eval_out[0] = sl[0];
            eval_out[1] = (double)sh[0];
        }
    }
}

sr_status k_loss_sum(const float *rowloss, const int *hits, int n,
                     float scale, float *loss_out, double *eval_out,
                     cudaStream_t st)
{
    loss_sum_kernel<<<1, THREADS, 0, st>>>(rowloss, hits, n, scale, loss_out,
                                           eval_out);
    CUDA_CHECK(cudaGetLastError());
    return SR_OK;
}

/* ---- column sums (bias gradients), optionally through the ReLU ---- */

#define COLS 32
#define ROW_LANES 8

/* Block (COLS x ROW_LANES) sums COLS columns over one chunk of rows into
 * partial[chunk][col]; the chunk's rows are split over ROW_LANES threads
 * and combined in a fixed order. */
template <typename T, bool MASK>
__global__ void colsum_partial_kernel(T *dz, const T *h, int n, int d,
                                      int rows_per_chunk, float *partial)
{
    __shared__ float s[ROW_LANES][COLS + 1];
    int col = blockIdx.x * COLS + threadIdx.x;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(n, r0 + rows_per_chunk);
    float acc = 0.0f;
    if (col < d) {
        for (int r = r0 + threadIdx.y; r < r1; r += ROW_LANES) {
            size_t i = (size_t)r * (size_t)d + (size_t)col;
            float g = to_f(dz[i]);
            if (MASK && !(to_f(h[i]) > 0.0f)) {
                g = 0.0f;
                dz[i] = from_f<T>(0.0f);
            }
            acc += g;
        }
    }
    s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < d) {
        float t = 0.0f;
        for (int k = 0; k < ROW_LANES; k++)
            t += s[k][threadIdx.x];
        partial[(size_t)blockIdx.y * (size_t)d + (size_t)col] = t;
    }
}

__global__ void colsum_finish_kernel(const float *partial, int chunks, int d,
                                     float *out)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d)
        return;
    float t = 0.0f;
    for (int k = 0; k < chunks; k++)
        t += partial[(size_t)k * (size_t)d + (size_t)col];
    out[col] = t;
}

template <typename T>
static void launch_colsum(T *dz, const T *h, int n, int d, int rpc,
                          int chunks, float *partial, cudaStream_t st)
{
    dim3 block(COLS, ROW_LANES);
    dim3 grid((unsigned)((d + COLS - 1) / COLS), (unsigned)chunks);
    if (h)
        colsum_partial_kernel<T, true><<<grid, block, 0, st>>>(dz, h, n, d,
                                                               rpc, partial);
    else
        colsum_partial_kernel<T, false><<<grid, block, 0, st>>>(dz, h, n, d,
                                                                rpc, partial);
}

sr_status k_colsum(void *dz, const void *h, enum act_type t, int n, int d,
                   float *partial, float *out, cudaStream_t st)
{
    /* chunks depend on n only, so the summation order is fixed */
    int rpc = (n + COLSUM_MAX_CHUNKS - 1) / COLSUM_MAX_CHUNKS;
    if (rpc < 4 * ROW_LANES)
        rpc = 4 * ROW_LANES;
    int chunks = (n + rpc - 1) / rpc;
    if (t == ACT_F32)
        launch_colsum<float>((float *)dz, (const float *)h, n, d, rpc,
                             chunks, partial, st);
    else
        launch_colsum<__nv_bfloat16>((__nv_bfloat16 *)dz,
                                     (const __nv_bfloat16 *)h, n, d, rpc,
                                     chunks, partial, st);
    CUDA_CHECK(cudaGetLastError());
    colsum_finish_kernel<<<grid_for((size_t)d, 65535), THREADS, 0, st>>>(
        partial, chunks, d, out);
    CUDA_CHECK(cudaGetLastError());
    return SR_OK;
}

/* ---- optimizers: blockIdx.y picks the tensor ---- */

__global__ void sgd_kernel(float *p, const float *g, float *mom,
                           __nv_bfloat16 *p16, struct opt_segments seg,
                           float lr, float momentum)
{
    size_t off = seg.off[blockIdx.y], len = seg.len[blockIdx.y];
    float wd = seg.wd[blockIdx.y];
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < len;
         k += stride) {
        size_t i = off + k;
        float pi = optim_sgd_one(p[i], g[i], &mom[i], lr, momentum, wd);
        p[i] = pi;
        if (p16)
            p16[i] = __float2bfloat16_rn(pi);
    }
}

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v,
                             __nv_bfloat16 *p16, struct opt_segments seg,
                             float lr, float beta1, float beta2, float eps,
                             float step_size, float inv_bc2_sqrt)
{
    size_t off = seg.off[blockIdx.y], len = seg.len[blockIdx.y];
    float decay = 1.0f - lr * seg.wd[blockIdx.y];
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < len;
         k += stride) {
        size_t i = off + k;
        float pi = optim_adamw_one(p[i], g[i], &m[i], &v[i], beta1, beta2,
                                   eps, decay, step_size, inv_bc2_sqrt);
        p[i] = pi;
        if (p16)
            p16[i] = __float2bfloat16_rn(pi);
    }
}

static dim3 opt_grid(const struct opt_segments *seg)
{
    unsigned long long widest = 1;
    for (int s = 0; s < seg->n; s++)
        if (seg->len[s] > widest)
            widest = seg->len[s];
    return dim3(grid_for((size_t)widest, 4096), (unsigned)seg->n);
}

sr_status k_sgd(float *p, const float *g, float *mom, __nv_bfloat16 *p16,
                const struct opt_segments *seg, float lr, float momentum,
                cudaStream_t st)
{
    sgd_kernel<<<opt_grid(seg), THREADS, 0, st>>>(p, g, mom, p16, *seg, lr,
                                                  momentum);
    CUDA_CHECK(cudaGetLastError());
    return SR_OK;
}

sr_status k_adamw(float *p, const float *g, float *m, float *v,
                  __nv_bfloat16 *p16, const struct opt_segments *seg,
                  float lr, float beta1, float beta2, float eps,
                  float step_size, float inv_bc2_sqrt, cudaStream_t st)
{
    adamw_kernel<<<opt_grid(seg), THREADS, 0, st>>>(
        p, g, m, v, p16, *seg, lr, beta1, beta2, eps, step_size, inv_bc2_sqrt);
    CUDA_CHECK(cudaGetLastError());
    return SR_OK;
}
