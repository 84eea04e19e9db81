/*
 * cuda_comm.cu: the CUDA backend's communicator: choosing NCCL or host
 * MPI, joining NCCL without blocking, the watchdog that aborts a stuck or
 * failed communicator, and waits that cannot hang (see cuda_comm.h).
 */
#include "cuda_comm.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *cuda_comm_kind_name(enum cuda_comm_kind k)
{
    return k == CC_NCCL ? "nccl" : k == CC_HOST ? "mpi (host memory)"
                                                : "none (one process)";
}

sr_status cuda_comm_agree(const struct backend_comm *host, int ok,
                          int *all_ok)
{
    if (!host || host->size <= 1) {
        *all_ok = ok;
        return SR_OK;
    }
    float bad = ok ? 0.0f : 1.0f;
    SR_TRY(host->allreduce_f32(host->ctx, &bad, 1));
    *all_ok = bad == 0.0f;
    return SR_OK;
}

static void pause_briefly(double since_start)
{
    if (since_start < 0.001) {
        sched_yield();
        return;
    }
    struct timespec ts = { 0, 20000 };
    nanosleep(&ts, NULL);
}

/* With cc->mu held. */
static void abort_locked(struct cuda_comm *cc, const char *why)
{
    if (cc->aborted)
        return;
    snprintf(cc->reason, sizeof cc->reason, "%s", why);
    gpu_log(GPU_LOG_ERROR, "NCCL: %s; aborting the communicator", why);
    ncclCommAbort(cc->nccl);
    cc->aborted_at = gpu_now();
    __atomic_store_n(&cc->aborted, 1, __ATOMIC_RELEASE);
}

static void *watchdog_main(void *arg)
{
    struct cuda_comm *cc = (struct cuda_comm *)arg;
    cudaSetDevice(cc->device);
    pthread_mutex_lock(&cc->mu);
    while (!cc->stop || cc->aborted) {
        double now = gpu_now();
        if (cc->aborted && now - cc->aborted_at > cc->timeout_s) {
            gpu_log(GPU_LOG_ERROR, "still running %.0f s after the NCCL "
                    "communicator was aborted (%s); exiting", now -
                    cc->aborted_at, cc->reason);
            fflush(stdout);
            fflush(stderr);
            _exit(1);
        }
        if (!cc->aborted && cc->since > 0) {
            ncclResult_t st = ncclSuccess;
            ncclResult_t r = ncclCommGetAsyncError(cc->nccl, &st);
            char why[224];
            why[0] = '\0';
            if (r != ncclSuccess)
                snprintf(why, sizeof why, "ncclCommGetAsyncError: %s",
                         ncclGetErrorString(r));
            else if (st != ncclSuccess && st != ncclInProgress)
                snprintf(why, sizeof why, "%s failed: %s", cc->what,
                         ncclGetErrorString(st));
            else if (now - cc->since > cc->timeout_s)
                snprintf(why, sizeof why, "%s made no progress for %.0f s "
                         "(--collective-timeout): another rank died or "
                         "stopped responding", cc->what, now - cc->since);
            if (why[0])
                abort_locked(cc, why);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 20 * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&cc->cv, &cc->mu, &until);
    }
    pthread_mutex_unlock(&cc->mu);
    return NULL;
}

/* Wait until the communicator's pending call completes (a non-blocking
 * communicator answers ncclInProgress first). Bounded by the timeout. */
static sr_status settle(struct cuda_comm *cc, const char *what)
{
    double t0 = gpu_now();
    for (;;) {
        ncclResult_t st = ncclInProgress;
        pthread_mutex_lock(&cc->mu);
        if (cc->aborted) {
            pthread_mutex_unlock(&cc->mu);
            return GPU_FAIL(SR_ERR_CUDA, "%s: communicator aborted: %s",
                            what, cc->reason);
        }
        ncclResult_t r = ncclCommGetAsyncError(cc->nccl, &st);
        char why[224];
        why[0] = '\0';
        if (r != ncclSuccess)
            snprintf(why, sizeof why, "%s: ncclCommGetAsyncError: %s", what,
                     ncclGetErrorString(r));
        else if (st != ncclSuccess && st != ncclInProgress)
            snprintf(why, sizeof why, "%s: %s (%s)", what,
                     ncclGetErrorString(st), ncclGetLastError(cc->nccl));
        else if (st == ncclInProgress && gpu_now() - t0 > cc->timeout_s)
            snprintf(why, sizeof why, "%s: no progress for %.0f s "
                     "(--collective-timeout)", what, gpu_now() - t0);
        if (why[0])
            abort_locked(cc, why);
        pthread_mutex_unlock(&cc->mu);
        if (why[0])
            return GPU_FAIL(SR_ERR_CUDA, "NCCL: %s", why);
        if (st == ncclSuccess)
            return SR_OK;
        pause_briefly(gpu_now() - t0);
    }
}

/* Rank 0's unique id travels over the binary's MPI broadcast, with rank
 * 0's status so that a failure there stops every rank. */
static sr_status nccl_join(struct cuda_comm *cc)
{
    struct {
        int32_t status;
        ncclUniqueId id;
    } msg;
    memset(&msg, 0, sizeof msg);
    if (cc->host.rank == 0)
        msg.status = (int32_t)ncclGetUniqueId(&msg.id);
    if (cc->host.size > 1)
        SR_TRY(cc->host.bcast(cc->host.ctx, &msg, sizeof msg));
    if (msg.status != ncclSuccess)
        return GPU_FAIL(SR_ERR_CUDA, "rank 0 could not create the NCCL "
                        "unique id: %s",
                        ncclGetErrorString((ncclResult_t)msg.status));
    CUDA_CHECK(cudaSetDevice(cc->device));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&cc->nccl, cc->host.size > 0
                                            ? cc->host.size : 1, msg.id,
                                            cc->host.rank, &config);
    if (r != ncclSuccess && r != ncclInProgress)
        return GPU_FAIL(SR_ERR_CUDA, "ncclCommInitRankConfig: %s",
                        ncclGetErrorString(r));
    return settle(cc, "joining the NCCL communicator");
}

sr_status cuda_comm_init(struct cuda_comm **out,
                         const struct backend_comm *host,
                         enum backend_comm_kind want, int ndevices,
                         int device, double timeout_s)
{
    struct cuda_comm *cc = (struct cuda_comm *)calloc(1, sizeof *cc);
    if (!cc)
        return GPU_FAIL(SR_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&cc->mu, NULL);
    pthread_cond_init(&cc->cv, NULL);
    if (host)
        cc->host = *host;
    else
        cc->host.size = 1;
    cc->device = device;
    cc->timeout_s = timeout_s > 0 ? timeout_s : 60;
    *out = cc;

    int size = cc->host.size > 0 ? cc->host.size : 1;
    int shared = cc->host.local_size > ndevices;
    int all_ok = 1;
    if (want == BACKEND_COMM_MPI) {
        cc->kind = CC_HOST;
    } else if (want == BACKEND_COMM_NCCL) {
        cc->kind = CC_NCCL;
    } else if (size <= 1) {
        cc->kind = CC_NONE;
    } else {
        SR_TRY(cuda_comm_agree(&cc->host, !shared, &all_ok));
        cc->kind = all_ok ? CC_NCCL : CC_HOST;
        if (!all_ok && cc->host.rank == 0)
            gpu_log(GPU_LOG_INFO, "cuda: ranks share GPUs on some host: "
                    "gradients are summed with MPI through host memory "
                    "(--comm mpi)");
    }
    if (cc->kind != CC_NCCL)
        return SR_OK;

    int ok = !shared;
    SR_TRY(cuda_comm_agree(&cc->host, ok, &all_ok));
    if (!ok)
        return GPU_FAIL(SR_ERR_USAGE, "--comm nccl needs a GPU per rank: "
                        "%d ranks share %d GPU(s) on this host (use --comm "
                        "mpi)", cc->host.local_size, ndevices);
    if (!all_ok)
        return GPU_FAIL(SR_ERR_USAGE, "--comm nccl needs a GPU per rank, "
                        "and another host has more ranks than GPUs");
    sr_status s = nccl_join(cc);
    SR_TRY(cuda_comm_agree(&cc->host, s == SR_OK, &all_ok));
    if (s != SR_OK)
        return s;
    if (!all_ok)
        return GPU_FAIL(SR_ERR_CUDA, "another rank could not join the NCCL "
                        "communicator (see its error)");
    if (pthread_create(&cc->thread, NULL, watchdog_main, cc) != 0)
        return GPU_FAIL(SR_ERR_NOMEM, "cannot start the NCCL watchdog");
    cc->thread_running = 1;
    int v = 0;
    NCCL_CHECK(ncclGetVersion(&v));
    gpu_log(GPU_LOG_DEBUG, "NCCL %d communicator: rank %d of %d on device "
            "%d, non-blocking", v, cc->host.rank, size, device);
    return SR_OK;
}

void cuda_comm_destroy(struct cuda_comm *cc, int failed)
{
    if (!cc)
        return;
    int aborted = __atomic_load_n(&cc->aborted, __ATOMIC_ACQUIRE);
    if (cc->thread_running && aborted) {
        /* the watchdog still guards the way out, and needs cc */
        pthread_detach(cc->thread);
        return;
    }
    if (cc->thread_running) {
        pthread_mutex_lock(&cc->mu);
        cc->stop = 1;
        pthread_cond_broadcast(&cc->cv);
        pthread_mutex_unlock(&cc->mu);
        pthread_join(cc->thread, NULL);
        cc->thread_running = 0;
    }
    if (cc->kind == CC_NCCL && cc->nccl && !cc->aborted) {
        if (failed) {
            ncclCommAbort(cc->nccl);
        } else {
            ncclResult_t r = ncclCommFinalize(cc->nccl);
            if ((r == ncclSuccess || r == ncclInProgress) &&
                settle(cc, "finalizing the NCCL communicator") == SR_OK)
                ncclCommDestroy(cc->nccl);
            else if (!cc->aborted)
                ncclCommAbort(cc->nccl);
        }
    }
    pthread_mutex_destroy(&cc->mu);
    pthread_cond_destroy(&cc->cv);
    free(cc);
}

sr_status cuda_comm_allreduce(struct cuda_comm *cc, float *buf, size_t n,
                              cudaStream_t st)
{
    pthread_mutex_lock(&cc->mu);
    if (cc->aborted) {
        pthread_mutex_unlock(&cc->mu);
        return GPU_FAIL(SR_ERR_CUDA, "NCCL communicator aborted: %s",
                        cc->reason);
    }
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum,
                                   cc->nccl, st);
    pthread_mutex_unlock(&cc->mu);
    if (r == ncclInProgress)
        return settle(cc, "enqueueing a gradient all-reduce");
    if (r != ncclSuccess)
        return GPU_FAIL(SR_ERR_CUDA, "ncclAllReduce of %zu floats: %s", n,
                        ncclGetErrorString(r));
    return SR_OK;
}

sr_status cuda_comm_wait(struct cuda_comm *cc, cudaEvent_t ev,
                         const char *what)
{
    if (!cc || cc->kind != CC_NCCL) {
        CUDA_CHECK(cudaEventSynchronize(ev));
        return SR_OK;
    }
    pthread_mutex_lock(&cc->mu);
    cc->what = what;
    cc->since = gpu_now();
    pthread_mutex_unlock(&cc->mu);
    double t0 = gpu_now();
    sr_status s = SR_OK;
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess)
            break;
        if (e != cudaErrorNotReady) {
            s = GPU_FAIL(SR_ERR_CUDA, "%s: %s (%s)", what,
                         cudaGetErrorString(e), cudaGetErrorName(e));
            break;
        }
        if (__atomic_load_n(&cc->aborted, __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&cc->mu);
            s = GPU_FAIL(SR_ERR_CUDA, "%s: NCCL communicator aborted: %s",
                         what, cc->reason);
            pthread_mutex_unlock(&cc->mu);
            break;
        }
        pause_briefly(gpu_now() - t0);
    }
    pthread_mutex_lock(&cc->mu);
    cc->since = 0;
    pthread_mutex_unlock(&cc->mu);
    return s;
}
