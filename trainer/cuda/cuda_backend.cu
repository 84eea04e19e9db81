/*
 * cuda_backend.cu: the MLP on a GPU, the backend_ops table of the CUDA
 * plugin, and the plugin's entry point. Matrix products are cuBLAS calls
 * (FP32, TF32 through cuBLAS's math mode, or BF16 inputs with FP32
 * accumulation and FP32 master weights); everything else is a kernel of
 * cuda_kernels.cu.
 *
 * Streams: `compute` runs forward, backward and the optimizer; `copy`
 * moves batches in (from page-locked buffers, overlapping the previous
 * step's optimizer) and snapshots out; `comm` (highest priority) sums
 * gradients. Gradients are summed in buckets of whole layers in backward
 * order: when a layer's weight gradient is written, an event lets the comm
 * stream start on every bucket that layer completes, while the compute
 * stream goes on with the layers below. The last bucket (layer 1) also
 * holds the loop's per-step scalars, stored just before the gradients on
 * the device, so one NCCL call sums both; grad_allreduce sends it and
 * waits. Nothing in a step waits on the host except grad_allreduce (the
 * loop needs the summed loss and flags) and evaluate.
 *
 * Results are deterministic for a given GPU, shapes and world size: cuBLAS
 * picks the same algorithms run after run on one stream, the kernels have
 * no atomics, and NCCL sums in a fixed order for a fixed topology.
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_comm.h"
#include "cuda_kernels.h"
#include "cuda_util.h"

/* floats in front of the gradients; the extras are their last
 * BACKEND_GRAD_EXTRA, so they and layer 1's gradients are contiguous */
#define EXTRA_PAD 64
#define STAGE_MAX ((size_t)32 << 20)
#define BUCKET_DEFAULT ((size_t)25 << 20)

static_assert(GRAD_EXTRA_LOSS == 0, "the loss is the first extra");

struct bucket {
    size_t lo, hi;          /* float range of the gradient allocation */
    int ready_layer;        /* its lowest layer: that layer's backward
                               completes it */
    int final;              /* holds layer 1 and the extras */
    cudaEvent_t t0, t1;     /* timing on the comm stream */
};

/* page-locked scalars that go back and forth every step */
struct pinned_small {
    float extra[BACKEND_GRAD_EXTRA];    /* summed extras, device -> host */
    float flags[BACKEND_GRAD_EXTRA];    /* the loop's flags, host -> device */
    double eval[2];                     /* loss sum, hits */
};

struct backend {
    struct mlp m;
    int max_batch;
    enum optim_kind optim;
    enum backend_precision precision;
    enum act_type at;               /* hidden activations and their
                                       gradients */
    size_t pes;                     /* bytes per element of the weights
                                       the products read */
    int device;
    struct backend_comm host;
    struct cuda_comm *cc;
    int broken;                     /* a step failed: no orderly goodbye */
    size_t bucket_bytes;

    cudaStream_t compute, copy, comm;
    cublasHandle_t blas;

    float *d_params;                /* FP32 master weights */
    __nv_bfloat16 *d_params16;      /* BF16 copy (BF16 only) */
    float *d_gbuf;                  /* EXTRA_PAD + nparams */
    float *d_grads, *d_extra;       /* views into d_gbuf */
    float *d_state;
    float *d_x;
    __nv_bfloat16 *d_x16;
    int32_t *d_y;
    void *d_act[MLP_MAX_LAYERS + 1];    /* [0] input, [l+1] layer l's
                                           output; the logits are FP32 */
    void *d_dact[2];                /* input gradients, ping-pong */
    __nv_bfloat16 *d_dlogits16;     /* logits' gradient (BF16 only; FP32
                                       overwrites the logits) */
    float *d_partial;               /* column-sum scratch */
    float *d_rowloss;
    int *d_hits;
    double *d_eval;

    float *h_x;                     /* staging for pageable batches */
    int32_t *h_y;
    struct pinned_small *h;
    float *h_gbuf;                  /* CC_HOST: the gradient allocation */
    void *h_stage[2];               /* snapshot and restore pieces */
    size_t stage_bytes;

    cudaEvent_t ev_input_ready, ev_input_free;
    cudaEvent_t ev_layer[MLP_MAX_LAYERS];
    cudaEvent_t ev_sync, ev_sync_comm, ev_xfer, ev_stage[2];
    cudaEvent_t ev_bwd_end, ev_comm_done;   /* timed */

    int nbuckets;
    struct bucket bk[MLP_MAX_LAYERS];
    int issued;                     /* buckets sent this step */
    int stepping;                   /* train_step ran since the last
                                       grad_allreduce */
    struct opt_segments seg;

    long long steps_timed;
    double allreduce_ms, exposed_ms;
};

static size_t state_floats(const struct backend *b)
{
    return b->m.nparams * (b->optim == OPTIM_ADAMW ? 2u : 1u);
}

static size_t act_bytes(enum act_type t)
{
    return t == ACT_BF16 ? sizeof(__nv_bfloat16) : sizeof(float);
}

static sr_status dalloc(void **p, size_t bytes)
{
    CUDA_CHECK(cudaMalloc(p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemset(*p, 0, bytes ? bytes : 1));
    return SR_OK;
}

static sr_status halloc(void **p, size_t bytes)
{
    *p = gpu_host_alloc(bytes);
    if (!*p)
        return GPU_FAIL(SR_ERR_NOMEM, "cannot allocate %zu bytes of "
                        "page-locked host memory", bytes);
    memset(*p, 0, bytes);
    return SR_OK;
}

/* Wait for everything enqueued so far on every stream. */
static sr_status drain(struct backend *b, const char *what)
{
    CUDA_CHECK(cudaEventRecord(b->ev_sync, b->compute));
    CUDA_CHECK(cudaEventRecord(b->ev_sync_comm, b->comm));
    CUDA_CHECK(cudaEventRecord(b->ev_xfer, b->copy));
    SR_TRY(cuda_comm_wait(b->cc, b->ev_sync, what));
    SR_TRY(cuda_comm_wait(b->cc, b->ev_sync_comm, what));
    return cuda_comm_wait(b->cc, b->ev_xfer, what);
}

static void gpu_destroy(struct backend *b)
{
    if (!b)
        return;
    cudaSetDevice(b->device);
    if (b->copy && b->ev_xfer && !b->broken)
        b->broken = drain(b, "shutting down") != SR_OK;
    if (b->cc && b->host.rank == 0 && b->steps_timed > 0)
        gpu_log(GPU_LOG_INFO, "cuda: gradient all-reduce %.3f ms per step "
                "in %d bucket(s) over %s, %.3f ms of it after the backward "
                "ended (%lld steps)", b->allreduce_ms /
                (double)b->steps_timed, b->nbuckets,
                cuda_comm_kind_name(b->cc->kind), b->exposed_ms /
                (double)b->steps_timed, b->steps_timed);
    cuda_comm_destroy(b->cc, b->broken);
    void *dev[] = { b->d_params, b->d_params16, b->d_gbuf, b->d_state,
                    b->d_x, b->d_x16, b->d_y, b->d_dact[0], b->d_dact[1],
                    b->d_dlogits16, b->d_partial, b->d_rowloss, b->d_hits,
                    b->d_eval };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    for (int l = 1; l <= b->m.nlayers; l++)
        cudaFree(b->d_act[l]);
    void *host[] = { b->h_x, b->h_y, b->h, b->h_gbuf, b->h_stage[0],
                     b->h_stage[1] };
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        gpu_host_free(host[i]);
    cudaEvent_t evs[] = { b->ev_input_ready, b->ev_input_free, b->ev_sync,
                          b->ev_sync_comm, b->ev_xfer, b->ev_stage[0],
                          b->ev_stage[1], b->ev_bwd_end, b->ev_comm_done };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            cudaEventDestroy(evs[i]);
    for (int l = 0; l < MLP_MAX_LAYERS; l++)
        if (b->ev_layer[l])
            cudaEventDestroy(b->ev_layer[l]);
    for (int k = 0; k < b->nbuckets; k++) {
        if (b->bk[k].t0)
            cudaEventDestroy(b->bk[k].t0);
        if (b->bk[k].t1)
            cudaEventDestroy(b->bk[k].t1);
    }
    if (b->blas)
        cublasDestroy(b->blas);
    cudaStream_t sts[] = { b->compute, b->copy, b->comm };
    for (size_t i = 0; i < 3; i++)
        if (sts[i])
            cudaStreamDestroy(sts[i]);
    free(b);
}

/* Whole layers per bucket, in backward order, each bucket closed once it
 * reaches bucket_bytes; the last one (layer 1) reaches back over the
 * extras. */
static void plan_buckets(struct backend *b)
{
    const struct mlp *m = &b->m;
    size_t hi = EXTRA_PAD + m->nparams, bytes = 0;
    b->nbuckets = 0;
    for (int l = m->nlayers - 1; l >= 0; l--) {
        bytes += ((size_t)m->dims[l] + 1) * (size_t)m->dims[l + 1] *
                 sizeof(float);
        if (bytes < b->bucket_bytes && l > 0)
            continue;
        struct bucket *k = &b->bk[b->nbuckets++];
        k->lo = l == 0 ? EXTRA_PAD - BACKEND_GRAD_EXTRA
                       : EXTRA_PAD + m->w_off[l];
        k->hi = hi;
        k->ready_layer = l;
        k->final = l == 0;
        hi = EXTRA_PAD + m->w_off[l];
        bytes = 0;
    }
}

static sr_status create_streams_and_memory(struct backend *b)
{
    const struct mlp *m = &b->m;
    int L = m->nlayers;
    size_t rows = (size_t)b->max_batch, np = m->nparams;
    int widest = 0;
    for (int l = 0; l <= L; l++)
        if (m->dims[l] > widest)
            widest = m->dims[l];

    int prio_lo = 0, prio_hi = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&prio_lo, &prio_hi));
    CUDA_CHECK(cudaStreamCreateWithFlags(&b->compute, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&b->copy, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithPriority(&b->comm, cudaStreamNonBlocking,
                                            prio_hi));
    CUBLAS_CHECK(cublasCreate(&b->blas));
    CUBLAS_CHECK(cublasSetStream(b->blas, b->compute));
    CUBLAS_CHECK(cublasSetMathMode(b->blas,
                                   b->precision == PRECISION_TF32
                                   ? CUBLAS_TF32_TENSOR_OP_MATH
                                   : CUBLAS_DEFAULT_MATH));

    size_t ab = act_bytes(b->at);
    SR_TRY(dalloc((void **)&b->d_params, np * sizeof(float)));
    if (b->precision == PRECISION_BF16)
        SR_TRY(dalloc((void **)&b->d_params16, np * sizeof(__nv_bfloat16)));
    SR_TRY(dalloc((void **)&b->d_gbuf, (EXTRA_PAD + np) * sizeof(float)));
    b->d_grads = b->d_gbuf + EXTRA_PAD;
    b->d_extra = b->d_gbuf + EXTRA_PAD - BACKEND_GRAD_EXTRA;
    SR_TRY(dalloc((void **)&b->d_state, state_floats(b) * sizeof(float)));
    SR_TRY(dalloc((void **)&b->d_x, rows * (size_t)m->dims[0] *
                  sizeof(float)));
    if (b->at == ACT_BF16)
        SR_TRY(dalloc((void **)&b->d_x16, rows * (size_t)m->dims[0] * ab));
    b->d_act[0] = b->at == ACT_BF16 ? (void *)b->d_x16 : (void *)b->d_x;
    SR_TRY(dalloc((void **)&b->d_y, rows * sizeof(int32_t)));
    for (int l = 1; l <= L; l++)
        SR_TRY(dalloc(&b->d_act[l], rows * (size_t)m->dims[l] *
                      (l == L ? sizeof(float) : ab)));
    SR_TRY(dalloc(&b->d_dact[0], rows * (size_t)widest * ab));
    SR_TRY(dalloc(&b->d_dact[1], rows * (size_t)widest * ab));
    if (b->at == ACT_BF16)
        SR_TRY(dalloc((void **)&b->d_dlogits16, rows * (size_t)m->dims[L] *
                      ab));
    SR_TRY(dalloc((void **)&b->d_partial, (size_t)COLSUM_MAX_CHUNKS *
                  (size_t)widest * sizeof(float)));
    SR_TRY(dalloc((void **)&b->d_rowloss, rows * sizeof(float)));
    SR_TRY(dalloc((void **)&b->d_hits, rows * sizeof(int)));
    SR_TRY(dalloc((void **)&b->d_eval, 2 * sizeof(double)));

    SR_TRY(halloc((void **)&b->h_x, rows * (size_t)m->dims[0] *
                  sizeof(float)));
    SR_TRY(halloc((void **)&b->h_y, rows * sizeof(int32_t)));
    SR_TRY(halloc((void **)&b->h, sizeof *b->h));
    size_t biggest = state_floats(b) > np ? state_floats(b) : np;
    b->stage_bytes = biggest * sizeof(float) < STAGE_MAX
                     ? biggest * sizeof(float) : STAGE_MAX;
    if (b->stage_bytes < 4096)
        b->stage_bytes = 4096;
    SR_TRY(halloc(&b->h_stage[0], b->stage_bytes));
    SR_TRY(halloc(&b->h_stage[1], b->stage_bytes));

    unsigned quiet = cudaEventDisableTiming;
    CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_input_ready, quiet));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_input_free, quiet));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_sync, quiet));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_sync_comm, quiet));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_xfer, quiet));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_stage[0], quiet));
    CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_stage[1], quiet));
    for (int l = 0; l < L; l++)
        CUDA_CHECK(cudaEventCreateWithFlags(&b->ev_layer[l], quiet));
    CUDA_CHECK(cudaEventCreate(&b->ev_bwd_end));
    CUDA_CHECK(cudaEventCreate(&b->ev_comm_done));

    plan_buckets(b);
    for (int k = 0; k < b->nbuckets; k++) {
        CUDA_CHECK(cudaEventCreate(&b->bk[k].t0));
        CUDA_CHECK(cudaEventCreate(&b->bk[k].t1));
    }
    b->seg.n = 2 * L;
    for (int l = 0; l < L; l++) {
        b->seg.off[2 * l] = m->w_off[l];
        b->seg.len[2 * l] = (unsigned long long)m->dims[l] *
                            (unsigned long long)m->dims[l + 1];
        b->seg.off[2 * l + 1] = m->b_off[l];
        b->seg.len[2 * l + 1] = (unsigned long long)m->dims[l + 1];
    }
    return SR_OK;
}

static const char *precision_name(enum backend_precision p)
{
    return p == PRECISION_BF16 ? "bf16" : p == PRECISION_TF32 ? "tf32"
                                                             : "fp32";
}

/* Everything local to this rank: device, streams, memory. */
static sr_status create_local(struct backend *b, int *ndevices)
{
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    if (count < 1)
        return GPU_FAIL(SR_ERR_NOT_FOUND, "no CUDA device on this host");
    *ndevices = count;
    b->device = (b->host.local_rank > 0 ? b->host.local_rank : 0) % count;
    CUDA_CHECK(cudaSetDevice(b->device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, b->device));
    if (b->precision != PRECISION_FP32 && prop.major < 8)
        return GPU_FAIL(SR_ERR_USAGE, "--precision %s needs a GPU of "
                        "compute capability 8.0 or newer; device %d (%s) is "
                        "%d.%d", precision_name(b->precision), b->device,
                        prop.name, prop.major, prop.minor);
    SR_TRY(create_streams_and_memory(b));
    /* the zero fills ran on the legacy stream, which our non-blocking
     * streams do not wait for */
    CUDA_CHECK(cudaDeviceSynchronize());
    int v = 0;
    cublasGetVersion(b->blas, &v);
    gpu_log(b->host.rank == 0 ? GPU_LOG_INFO : GPU_LOG_DEBUG,
            "cuda: rank %d on device %d of %d: %s (sm_%d%d, %d SMs, %.1f "
            "GiB), cuBLAS %d, precision %s", b->host.rank, b->device,
            count, prop.name, prop.major, prop.minor,
            prop.multiProcessorCount, (double)prop.totalGlobalMem /
            1073741824.0, v, precision_name(b->precision));
    return SR_OK;
}

/* Collective on every rank of o->comm. */
static sr_status gpu_create(struct backend **out, const struct mlp *m,
                            const struct backend_opts *o)
{
    struct backend *b = (struct backend *)calloc(1, sizeof *b);
    if (!b)
        return GPU_FAIL(SR_ERR_NOMEM, "out of memory");
    b->m = *m;
    b->max_batch = o->max_batch;
    b->optim = o->optim;
    b->precision = o->precision;
    b->at = o->precision == PRECISION_BF16 ? ACT_BF16 : ACT_F32;
    b->pes = o->precision == PRECISION_BF16 ? sizeof(__nv_bfloat16)
                                            : sizeof(float);
    b->bucket_bytes = o->bucket_bytes ? o->bucket_bytes : BUCKET_DEFAULT;
    if (o->comm)
        b->host = *o->comm;
    else
        b->host.size = 1;
    int ndevices = 0, all_ok = 0;
    sr_status s = create_local(b, &ndevices);
    /* every rank set up, or none goes on to NCCL */
    sr_status a = cuda_comm_agree(o->comm, s == SR_OK, &all_ok);
    if (s != SR_OK)
        goto out;
    s = a;
    if (s == SR_OK && !all_ok)
        s = GPU_FAIL(SR_ERR_CUDA, "another rank could not set up its GPU "
                     "(see its error)");
    if (s != SR_OK)
        goto out;
    s = cuda_comm_init(&b->cc, o->comm, o->comm_kind, ndevices, b->device,
                       o->comm_timeout_s);
    if (s != SR_OK)
        goto out;
    if (b->cc->kind == CC_HOST) {
        s = halloc((void **)&b->h_gbuf, (EXTRA_PAD + m->nparams) *
                   sizeof(float));
        if (s != SR_OK)
            goto out;
    }
    if (b->host.rank == 0 && b->cc->kind != CC_NONE)
        gpu_log(GPU_LOG_INFO, "cuda: gradients summed over %s in %d "
                "bucket(s) of up to %.1f MiB", cuda_comm_kind_name(
                b->cc->kind), b->nbuckets, (double)b->bucket_bytes /
                1048576.0);
out:
    if (s != SR_OK) {
        b->broken = 1;
        gpu_destroy(b);
        return s;
    }
    *out = b;
    return SR_OK;
}

/* ---- transfers ---- */

/* The copy stream after all work enqueued so far on compute and comm. */
static sr_status copy_after_all(struct backend *b)
{
    CUDA_CHECK(cudaEventRecord(b->ev_sync, b->compute));
    CUDA_CHECK(cudaEventRecord(b->ev_sync_comm, b->comm));
    CUDA_CHECK(cudaStreamWaitEvent(b->copy, b->ev_sync, 0));
    CUDA_CHECK(cudaStreamWaitEvent(b->copy, b->ev_sync_comm, 0));
    return SR_OK;
}

/* Bytes in staging piece i of a bytes-long transfer. */
static size_t piece_len(const struct backend *b, size_t i, size_t bytes)
{
    size_t off = i * b->stage_bytes;
    return bytes - off < b->stage_bytes ? bytes - off : b->stage_bytes;
}

static sr_status d2h_piece(struct backend *b, size_t i, const char *dev,
                           size_t bytes)
{
    size_t off = i * b->stage_bytes, len = piece_len(b, i, bytes);
    CUDA_CHECK(cudaMemcpyAsync(b->h_stage[i % 2], dev + off, len,
                               cudaMemcpyDeviceToHost, b->copy));
    CUDA_CHECK(cudaEventRecord(b->ev_stage[i % 2], b->copy));
    return SR_OK;
}

/* Device memory to the caller's host memory: an asynchronous copy into
 * page-locked memory and an event, the host waiting on the event before
 * it reads. Pageable destinations go through two staging pieces, the next
 * piece's copy running while the host moves the previous one. */
static sr_status to_host(struct backend *b, void *host, const void *dev,
                         size_t bytes)
{
    SR_TRY(copy_after_all(b));
    if (gpu_is_pinned(host)) {
        CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost,
                                   b->copy));
        CUDA_CHECK(cudaEventRecord(b->ev_xfer, b->copy));
        return cuda_comm_wait(b->cc, b->ev_xfer, "a copy to the host");
    }
    size_t parts = (bytes + b->stage_bytes - 1) / b->stage_bytes;
    const char *d = (const char *)dev;
    char *h = (char *)host;
    if (parts > 0)
        SR_TRY(d2h_piece(b, 0, d, bytes));
    for (size_t i = 0; i < parts; i++) {
        if (i + 1 < parts)
            SR_TRY(d2h_piece(b, i + 1, d, bytes));
        SR_TRY(cuda_comm_wait(b->cc, b->ev_stage[i % 2], "a copy to the "
                              "host"));
        memcpy(h + i * b->stage_bytes, b->h_stage[i % 2],
               piece_len(b, i, bytes));
    }
    return SR_OK;
}

/* The caller's host memory to device memory, after every kernel already
 * enqueued (none may still read it); later work on compute waits. */
static sr_status to_device(struct backend *b, void *dev, const void *host,
                           size_t bytes)
{
    SR_TRY(copy_after_all(b));
    if (gpu_is_pinned(host)) {
        CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice,
                                   b->copy));
    } else {
        char *d = (char *)dev;
        const char *h = (const char *)host;
        for (size_t off = 0, i = 0; off < bytes; off += b->stage_bytes,
             i++) {
            size_t len = piece_len(b, i, bytes);
            /* the piece copied out of this buffer two rounds ago */
            SR_TRY(cuda_comm_wait(b->cc, b->ev_stage[i % 2], "a copy to "
                                  "the GPU"));
            memcpy(b->h_stage[i % 2], h + off, len);
            CUDA_CHECK(cudaMemcpyAsync(d + off, b->h_stage[i % 2], len,
                                       cudaMemcpyHostToDevice, b->copy));
            CUDA_CHECK(cudaEventRecord(b->ev_stage[i % 2], b->copy));
        }
    }
    CUDA_CHECK(cudaEventRecord(b->ev_xfer, b->copy));
    CUDA_CHECK(cudaStreamWaitEvent(b->compute, b->ev_xfer, 0));
    return cuda_comm_wait(b->cc, b->ev_xfer, "a copy to the GPU");
}

static sr_status gpu_set_params(struct backend *b, const float *host)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    SR_TRY(to_device(b, b->d_params, host, b->m.nparams * sizeof(float)));
    if (b->d_params16)
        SR_TRY(k_cast_bf16(b->d_params16, b->d_params, b->m.nparams,
                           b->compute));
    return SR_OK;
}

static sr_status gpu_get_params(struct backend *b, float *host)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    return to_host(b, host, b->d_params, b->m.nparams * sizeof(float));
}

static sr_status gpu_set_opt_state(struct backend *b, const float *host)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    return to_device(b, b->d_state, host, state_floats(b) * sizeof(float));
}

static sr_status gpu_get_opt_state(struct backend *b, float *host)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    return to_host(b, host, b->d_state, state_floats(b) * sizeof(float));
}

static sr_status gpu_set_grads(struct backend *b, const float *host)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    return to_device(b, b->d_grads, host, b->m.nparams * sizeof(float));
}

static sr_status gpu_get_grads(struct backend *b, float *host)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    SR_TRY(to_host(b, host, b->d_grads, b->m.nparams * sizeof(float)));
    return to_host(b, host + b->m.nparams, b->d_extra,
                   BACKEND_GRAD_EXTRA * sizeof(float));
}

/* A batch onto the device on the copy stream, once the previous one's
 * last reader is done; compute waits for it. A caller's page-locked
 * batch is read in place (it must stay unchanged until the step's
 * grad_allreduce or the evaluate call returns). */
static sr_status upload(struct backend *b, const float *x, const int32_t *y,
                        int n)
{
    size_t xb = (size_t)n * (size_t)b->m.dims[0] * sizeof(float);
    size_t yb = (size_t)n * sizeof(int32_t);
    const void *sx = x, *sy = y;
    if (!gpu_is_pinned(x) || !gpu_is_pinned(y)) {
        CUDA_CHECK(cudaEventSynchronize(b->ev_input_ready));
        memcpy(b->h_x, x, xb);
        memcpy(b->h_y, y, yb);
        sx = b->h_x;
        sy = b->h_y;
    }
    CUDA_CHECK(cudaStreamWaitEvent(b->copy, b->ev_input_free, 0));
    CUDA_CHECK(cudaMemcpyAsync(b->d_x, sx, xb, cudaMemcpyHostToDevice,
                               b->copy));
    CUDA_CHECK(cudaMemcpyAsync(b->d_y, sy, yb, cudaMemcpyHostToDevice,
                               b->copy));
    CUDA_CHECK(cudaEventRecord(b->ev_input_ready, b->copy));
    CUDA_CHECK(cudaStreamWaitEvent(b->compute, b->ev_input_ready, 0));
    if (b->at == ACT_BF16)
        SR_TRY(k_cast_bf16(b->d_x16, b->d_x, (size_t)n *
                           (size_t)b->m.dims[0], b->compute));
    return SR_OK;
}

/* ---- math ---- */

/* C = op(A) op(B) in cuBLAS's column-major terms (a row-major [r x c]
 * matrix is a column-major [c x r] one). FP32 and TF32: cublasSgemm under
 * the handle's math mode. BF16: BF16 inputs, FP32 accumulation, output in
 * ct. */
static sr_status gemm(struct backend *b, cublasOperation_t ta,
                      cublasOperation_t tb, int m, int n, int k,
                      const void *A, int lda, const void *B, int ldb,
                      void *C, enum act_type ct, int ldc)
{
    const float one = 1.0f, zero = 0.0f;
    if (b->precision != PRECISION_BF16) {
        CUBLAS_CHECK(cublasSgemm(b->blas, ta, tb, m, n, k, &one,
                                 (const float *)A, lda, (const float *)B,
                                 ldb, &zero, (float *)C, ldc));
        return SR_OK;
    }
    CUBLAS_CHECK(cublasGemmEx(b->blas, ta, tb, m, n, k, &one, A, CUDA_R_16BF,
                              lda, B, CUDA_R_16BF, ldb, &zero, C,
                              ct == ACT_BF16 ? CUDA_R_16BF : CUDA_R_32F, ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return SR_OK;
}

static const char *weights(const struct backend *b, int l)
{
    const char *w = b->d_params16 ? (const char *)b->d_params16
                                  : (const char *)b->d_params;
    return w + b->m.w_off[l] * b->pes;
}

/* act[l+1] = act[l] . W_l^T + b_l, through a ReLU but for the logits. */
static sr_status forward(struct backend *b, int n)
{
    const struct mlp *m = &b->m;
    for (int l = 0; l < m->nlayers; l++) {
        int in = m->dims[l], out = m->dims[l + 1];
        int last = l + 1 == m->nlayers;
        enum act_type ct = last ? ACT_F32 : b->at;
        SR_TRY(gemm(b, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, weights(b, l),
                    in, b->d_act[l], in, b->d_act[l + 1], ct, out));
        SR_TRY(k_bias_act(b->d_act[l + 1], ct, b->d_params + m->b_off[l], n,
                          out, !last, b->compute));
    }
    return SR_OK;
}

/* Send bucket k on the comm stream once its layers' backward is done:
 * NCCL in place, or (CC_HOST) a copy to host memory for MPI. */
static sr_status send_bucket(struct backend *b, int k)
{
    struct bucket *bk = &b->bk[k];
    CUDA_CHECK(cudaStreamWaitEvent(b->comm, b->ev_layer[bk->ready_layer],
                                   0));
    if (bk->final && b->cc->kind == CC_NCCL)
        CUDA_CHECK(cudaMemcpyAsync(b->d_extra + 1, &b->h->flags[1],
                                   (BACKEND_GRAD_EXTRA - 1) * sizeof(float),
                                   cudaMemcpyHostToDevice, b->comm));
    CUDA_CHECK(cudaEventRecord(bk->t0, b->comm));
    if (b->cc->kind == CC_NCCL)
        SR_TRY(cuda_comm_allreduce(b->cc, b->d_gbuf + bk->lo,
                                   bk->hi - bk->lo, b->comm));
    else
        CUDA_CHECK(cudaMemcpyAsync(b->h_gbuf + bk->lo, b->d_gbuf + bk->lo,
                                   (bk->hi - bk->lo) * sizeof(float),
                                   cudaMemcpyDeviceToHost, b->comm));
    CUDA_CHECK(cudaEventRecord(bk->t1, b->comm));
    return SR_OK;
}

/* Layer l's gradients are written: send what it completes (never the
 * final bucket: the loop's flags are not there yet). */
static sr_status layer_done(struct backend *b, int l)
{
    CUDA_CHECK(cudaEventRecord(b->ev_layer[l], b->compute));
    if (b->cc->kind == CC_NONE)
        return SR_OK;
    while (b->issued < b->nbuckets && !b->bk[b->issued].final &&
           b->bk[b->issued].ready_layer == l)
        SR_TRY(send_bucket(b, b->issued++));
    return SR_OK;
}

/* From the logits' gradient down: per layer dW = dZ^T . H_prev (FP32 into
 * the gradient buffer), then dH = dZ . W, masked by the previous layer's
 * ReLU while its bias gradient is summed. */
static sr_status backward(struct backend *b, int n)
{
    const struct mlp *m = &b->m;
    int L = m->nlayers;
    void *dz = b->at == ACT_BF16 ? (void *)b->d_dlogits16 : b->d_act[L];
    SR_TRY(k_colsum(dz, NULL, b->at, n, m->dims[L], b->d_partial,
                    b->d_grads + m->b_off[L - 1], b->compute));
    int ping = 0;
    for (int l = L - 1; l >= 0; l--) {
        int in = m->dims[l], out = m->dims[l + 1];
        SR_TRY(gemm(b, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, b->d_act[l], in,
                    dz, out, b->d_grads + m->w_off[l], ACT_F32, in));
        SR_TRY(layer_done(b, l));
        if (l == 0)
            break;
        void *dh = b->d_dact[ping];
        ping ^= 1;
        SR_TRY(gemm(b, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, weights(b, l),
                    in, dz, out, dh, b->at, in));
        SR_TRY(k_colsum(dh, b->d_act[l], b->at, n, in, b->d_partial,
                        b->d_grads + m->b_off[l - 1], b->compute));
        dz = dh;
    }
    return SR_OK;
}

static sr_status gpu_train_step(struct backend *b, const float *x,
                                const int32_t *y, int n, float grad_scale)
{
    const struct mlp *m = &b->m;
    if (n < 1 || n > b->max_batch)
        return GPU_FAIL(SR_ERR_INTERNAL, "batch of %d rows (max %d)", n,
                        b->max_batch);
    CUDA_CHECK(cudaSetDevice(b->device));
    SR_TRY(upload(b, x, y, n));
    /* the last step's sum may still read the gradients */
    CUDA_CHECK(cudaStreamWaitEvent(b->compute, b->ev_comm_done, 0));
    b->issued = 0;
    b->stepping = 1;
    SR_TRY(forward(b, n));
    int L = m->nlayers;
    void *dz = b->at == ACT_BF16 ? (void *)b->d_dlogits16 : b->d_act[L];
    SR_TRY(k_softmax_xent((const float *)b->d_act[L], b->d_y, n, m->dims[L],
                          grad_scale, dz, b->at, b->d_rowloss, b->d_hits,
                          b->compute));
    SR_TRY(k_loss_sum(b->d_rowloss, b->d_hits, n, grad_scale,
                      b->d_extra + GRAD_EXTRA_LOSS, NULL, b->compute));
    SR_TRY(backward(b, n));
    CUDA_CHECK(cudaEventRecord(b->ev_input_free, b->compute));
    return SR_OK;
}

/* The time the step's buckets spent in the sum, and how much of the sum
 * came after the backward ended (what overlap did not hide). */
static void account(struct backend *b)
{
    float ms = 0, total = 0;
    for (int k = 0; k < b->nbuckets; k++)
        if (cudaEventElapsedTime(&ms, b->bk[k].t0, b->bk[k].t1) ==
            cudaSuccess)
            total += ms;
    float exposed = 0;
    if (cudaEventElapsedTime(&exposed, b->ev_bwd_end, b->ev_comm_done) !=
        cudaSuccess)
        exposed = 0;
    cudaGetLastError();
    b->allreduce_ms += total;
    b->exposed_ms += exposed > 0 ? exposed : 0;
    b->steps_timed++;
}

static sr_status grad_allreduce_(struct backend *b,
                                 float extra[BACKEND_GRAD_EXTRA])
{
    struct pinned_small *h = b->h;
    size_t lo = EXTRA_PAD - BACKEND_GRAD_EXTRA;
    for (int i = 1; i < BACKEND_GRAD_EXTRA; i++)
        h->flags[i] = extra[i];
    CUDA_CHECK(cudaEventRecord(b->ev_bwd_end, b->compute));
    if (b->cc->kind == CC_NONE) {
        CUDA_CHECK(cudaStreamWaitEvent(b->comm, b->ev_bwd_end, 0));
        CUDA_CHECK(cudaMemcpyAsync(h->extra, b->d_extra, sizeof h->extra,
                                   cudaMemcpyDeviceToHost, b->comm));
        CUDA_CHECK(cudaEventRecord(b->ev_comm_done, b->comm));
        SR_TRY(cuda_comm_wait(b->cc, b->ev_comm_done, "the step's loss"));
        extra[GRAD_EXTRA_LOSS] = h->extra[GRAD_EXTRA_LOSS];
        return SR_OK;
    }
    /* every rank sends every bucket in the same order, also one whose
     * train_step did not run this step */
    CUDA_CHECK(cudaStreamWaitEvent(b->comm, b->ev_bwd_end, 0));
    while (b->issued < b->nbuckets)
        SR_TRY(send_bucket(b, b->issued++));
    if (b->cc->kind == CC_NCCL) {
        CUDA_CHECK(cudaMemcpyAsync(h->extra, b->d_extra, sizeof h->extra,
                                   cudaMemcpyDeviceToHost, b->comm));
        CUDA_CHECK(cudaEventRecord(b->ev_comm_done, b->comm));
        SR_TRY(cuda_comm_wait(b->cc, b->ev_comm_done, "the gradient "
                              "all-reduce"));
        memcpy(extra, h->extra, sizeof h->extra);
    } else {
        CUDA_CHECK(cudaEventRecord(b->ev_sync_comm, b->comm));
        SR_TRY(cuda_comm_wait(b->cc, b->ev_sync_comm, "copying gradients "
                              "to the host"));
        float *he = b->h_gbuf + lo;
        for (int i = 1; i < BACKEND_GRAD_EXTRA; i++)
            he[i] = extra[i];
        if (b->host.size > 1)
            SR_TRY(b->host.allreduce_f32(b->host.ctx, he, BACKEND_GRAD_EXTRA +
                                         b->m.nparams));
        CUDA_CHECK(cudaMemcpyAsync(b->d_gbuf + lo, he, (BACKEND_GRAD_EXTRA +
                                   b->m.nparams) * sizeof(float),
                                   cudaMemcpyHostToDevice, b->comm));
        CUDA_CHECK(cudaEventRecord(b->ev_comm_done, b->comm));
        SR_TRY(cuda_comm_wait(b->cc, b->ev_comm_done, "copying gradients "
                              "to the GPU"));
        memcpy(extra, he, BACKEND_GRAD_EXTRA * sizeof(float));
    }
    if (b->stepping)
        account(b);
    return SR_OK;
}

static sr_status gpu_grad_allreduce(struct backend *b,
                                    float extra[BACKEND_GRAD_EXTRA])
{
    CUDA_CHECK(cudaSetDevice(b->device));
    sr_status s = grad_allreduce_(b, extra);
    b->issued = 0;
    b->stepping = 0;
    if (s != SR_OK)
        b->broken = 1;
    return s;
}

static sr_status gpu_optimizer_step(struct backend *b,
                                    const struct optim_params *op, float lr,
                                    uint64_t step)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    CUDA_CHECK(cudaStreamWaitEvent(b->compute, b->ev_comm_done, 0));
    for (int t = 0; t < b->seg.n; t++)
        b->seg.wd[t] = t % 2 == 0 ? (float)op->weight_decay : 0.0f;
    if (op->kind == OPTIM_SGD)
        return k_sgd(b->d_params, b->d_grads, b->d_state, b->d_params16,
                     &b->seg, lr, (float)op->momentum, b->compute);
    float beta1 = (float)op->beta1, beta2 = (float)op->beta2;
    float step_size, inv_bc2_sqrt;
    optim_adamw_coefs(lr, beta1, beta2, step, &step_size, &inv_bc2_sqrt);
    return k_adamw(b->d_params, b->d_grads, b->d_state,
                   b->d_state + b->m.nparams, b->d_params16, &b->seg, lr,
                   beta1, beta2, (float)op->eps, step_size, inv_bc2_sqrt,
                   b->compute);
}

static sr_status gpu_evaluate(struct backend *b, const float *x,
                              const int32_t *y, int n, double *loss_sum,
                              int64_t *correct)
{
    const struct mlp *m = &b->m;
    if (n < 1 || n > b->max_batch)
        return GPU_FAIL(SR_ERR_INTERNAL, "batch of %d rows (max %d)", n,
                        b->max_batch);
    CUDA_CHECK(cudaSetDevice(b->device));
    SR_TRY(upload(b, x, y, n));
    SR_TRY(forward(b, n));
    int L = m->nlayers;
    SR_TRY(k_softmax_xent((const float *)b->d_act[L], b->d_y, n, m->dims[L],
                          0.0f, NULL, ACT_F32, b->d_rowloss, b->d_hits,
                          b->compute));
    CUDA_CHECK(cudaEventRecord(b->ev_input_free, b->compute));
    SR_TRY(k_loss_sum(b->d_rowloss, b->d_hits, n, 1.0f, NULL, b->d_eval,
                      b->compute));
    CUDA_CHECK(cudaMemcpyAsync(b->h->eval, b->d_eval, sizeof b->h->eval,
                               cudaMemcpyDeviceToHost, b->compute));
    CUDA_CHECK(cudaEventRecord(b->ev_sync, b->compute));
    SR_TRY(cuda_comm_wait(b->cc, b->ev_sync, "evaluation"));
    *loss_sum += b->h->eval[0];
    *correct += (int64_t)b->h->eval[1];
    return SR_OK;
}

/* ---- the plugin ---- */

static sr_status gpu_probe(int *count)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return GPU_FAIL(SR_ERR_NOT_FOUND, "CUDA: %s (%s)",
                        cudaGetErrorString(e), cudaGetErrorName(e));
    }
    *count = n;
    return SR_OK;
}

static struct backend_ops ops;
static struct backend_plugin plugin;
static char build[128];

extern "C" __attribute__((visibility("default")))
const struct backend_plugin *spotrun_backend_plugin(
    const struct plugin_host *host)
{
    if (!host || host->abi != SPOTRUN_PLUGIN_ABI)
        return NULL;            /* another layout: not even vfail is safe */
    if (host->ops_size != sizeof(struct backend_ops) ||
        host->opts_size != sizeof(struct backend_opts) ||
        host->mlp_size != sizeof(struct mlp)) {
        gpu_host = host;
        (void)GPU_FAIL(SR_ERR_FORMAT, "built from other backend headers "
                       "than this binary (table sizes differ)");
        gpu_host = NULL;
        return NULL;
    }
    gpu_host = host;
    ops.name = "cuda";
    ops.create = gpu_create;
    ops.destroy = gpu_destroy;
    ops.set_params = gpu_set_params;
    ops.get_params = gpu_get_params;
    ops.set_opt_state = gpu_set_opt_state;
    ops.get_opt_state = gpu_get_opt_state;
    ops.train_step = gpu_train_step;
    ops.grad_allreduce = gpu_grad_allreduce;
    ops.set_grads = gpu_set_grads;
    ops.get_grads = gpu_get_grads;
    ops.optimizer_step = gpu_optimizer_step;
    ops.evaluate = gpu_evaluate;
    ops.host_alloc = gpu_host_alloc;
    ops.host_free = gpu_host_free;
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    snprintf(build, sizeof build, "CUDA runtime %d.%d (built with %d.%d), "
             "NCCL %d.%d.%d", rt / 1000, rt % 1000 / 10, CUDART_VERSION / 1000,
             CUDART_VERSION % 1000 / 10, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
    plugin.abi = SPOTRUN_PLUGIN_ABI;
    plugin.name = "cuda";
    plugin.build = build;
    plugin.probe = gpu_probe;
    plugin.ops = &ops;
    return &plugin;
}
