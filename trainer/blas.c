/*
 * blas.c: dlopen of OpenBLAS with kernel selection (see blas.h).
 */
#include "blas.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

#include "../common/log.h"

struct blas_lib blas;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sr_status load_status;

static int has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512cd") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

static void load(void)
{
    const char *env = getenv("OPENBLAS_CORETYPE");
    if ((!env || !*env) && has_avx512())
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 0);
    static const char *const names[] = { "libopenblas.so.0",
                                         "libopenblas.so" };
    void *h = NULL;
    for (size_t i = 0; i < 2 && !h; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        load_status = SR_FAIL(SR_ERR_USAGE, "OpenBLAS not found (%s); "
                              "install libopenblas0 (scripts/setup.sh does)",
                              dlerror());
        return;
    }
    *(void **)&blas.sgemm = dlsym(h, "cblas_sgemm");
    *(void **)&blas.set_num_threads = dlsym(h, "openblas_set_num_threads");
    *(void **)&blas.get_corename = dlsym(h, "openblas_get_corename");
    if (!blas.sgemm || !blas.set_num_threads || !blas.get_corename) {
        load_status = SR_FAIL(SR_ERR_USAGE, "the loaded BLAS library lacks "
                              "cblas_sgemm or the OpenBLAS thread controls");
        return;
    }
    log_debug("OpenBLAS kernel: %s", blas.get_corename());
    load_status = SR_OK;
}

sr_status blas_load(void)
{
    pthread_once(&once, load);
    if (load_status != SR_OK)
        return SR_FAIL(load_status, "OpenBLAS could not be loaded; see the "
                       "first error");
    return SR_OK;
}
