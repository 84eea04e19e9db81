/*
 * cuda_util.cu: errors and log lines handed to the binary, the clock, and
 * page-locked host memory (see cuda_util.h).
 */
#include "cuda_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

const struct plugin_host *gpu_host;

sr_status gpu_fail(sr_status s, const char *file, int line, const char *fmt,
                   ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (gpu_host)
        gpu_host->vfail(s, file, line, fmt, ap);
    va_end(ap);
    return s;
}

int gpu_log_level(void)
{
    return gpu_host ? gpu_host->log_level() : GPU_LOG_INFO;
}

void gpu_log(int level, const char *fmt, ...)
{
    if (!gpu_host || level > gpu_host->log_level())
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    gpu_host->log_line(level, line);
}

double gpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void *gpu_host_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable) !=
        cudaSuccess) {
        cudaGetLastError();     /* not sticky; clear it */
        return NULL;
    }
    return p;
}

void gpu_host_free(void *p)
{
    if (p)
        cudaFreeHost(p);
}

int gpu_is_pinned(const void *p)
{
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeHost;
}
