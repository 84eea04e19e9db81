/*
 * cuda_util.h: what every file of the CUDA plugin shares: the services the
 * spotrun binary lent it (error recording and logging, see
 * trainer/plugin.h), the check macros that turn a failed CUDA, cuBLAS or
 * NCCL call into an sr_status carrying the call, the file and the line,
 * and page-locked host memory.
 *
 * The plugin links nothing of spotrun's own: SR_FAIL and log_msg live in
 * the binary, so plugin code uses GPU_FAIL and gpu_log, which reach them
 * through the lent table. SR_TRY (a plain macro) is fine.
 */
#ifndef SPOTRUN_CUDA_UTIL_H
#define SPOTRUN_CUDA_UTIL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "trainer/plugin.h"

enum { GPU_LOG_ERROR = 0, GPU_LOG_WARN = 1, GPU_LOG_INFO = 2,
       GPU_LOG_DEBUG = 3 };

/* Set once by the entry point, before anything else runs. */
extern const struct plugin_host *gpu_host;

sr_status gpu_fail(sr_status s, const char *file, int line, const char *fmt,
                   ...) SR_PRINTF(4, 5);
void gpu_log(int level, const char *fmt, ...) SR_PRINTF(2, 3);
int gpu_log_level(void);

#define GPU_FAIL(s, ...) gpu_fail((s), __FILE__, __LINE__, __VA_ARGS__)

#define CUDA_CHECK(call) do { cudaError_t e_ = (call); \
        if (e_ != cudaSuccess) \
            return gpu_fail(SR_ERR_CUDA, __FILE__, __LINE__, "%s: %s (%s)", \
                            #call, cudaGetErrorString(e_), \
                            cudaGetErrorName(e_)); } while (0)

#define CUBLAS_CHECK(call) do { cublasStatus_t e_ = (call); \
        if (e_ != CUBLAS_STATUS_SUCCESS) \
            return gpu_fail(SR_ERR_CUDA, __FILE__, __LINE__, "%s: %s", \
                            #call, cublasGetStatusString(e_)); } while (0)

/* Strict: ncclInProgress is a failure here. Calls on a non-blocking
 * communicator go through cuda_comm.cu, which waits them out. */
#define NCCL_CHECK(call) do { ncclResult_t e_ = (call); \
        if (e_ != ncclSuccess) \
            return gpu_fail(SR_ERR_CUDA, __FILE__, __LINE__, "%s: %s", \
                            #call, ncclGetErrorString(e_)); } while (0)

/* Monotonic seconds. */
double gpu_now(void);

/* Page-locked host memory, usable by every device's copies; NULL when
 * the allocation fails. */
void *gpu_host_alloc(size_t bytes);
void gpu_host_free(void *p);
/* Is [p, p + bytes) page-locked memory CUDA knows? */
int gpu_is_pinned(const void *p);

#endif
