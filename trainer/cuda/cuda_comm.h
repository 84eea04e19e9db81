/*
 * cuda_comm.h: how the CUDA backend's ranks talk. Either nothing (one
 * process), an NCCL communicator (one GPU per rank), or the binary's MPI
 * collectives on host memory (--comm mpi: several ranks may share a GPU;
 * the staging itself is in cuda_backend.cu).
 *
 * NCCL: rank 0 makes the unique id, the binary's MPI broadcast carries it,
 * every rank joins with ncclCommInitRankConfig on a non-blocking
 * communicator, so no NCCL call can block the host. While the host waits
 * for GPU work (cuda_comm_wait), a watchdog thread polls
 * ncclCommGetAsyncError; an asynchronous error, or the work not finishing
 * within the timeout (--collective-timeout: a peer died or hangs), aborts
 * the communicator, which ends its kernels, and the wait returns an error.
 * If the process is still alive a while after an abort (a hung peer can
 * also stall MPI_Finalize), the watchdog exits it with status 1, as the
 * binary's MPI watchdog does.
 */
#ifndef SPOTRUN_CUDA_COMM_H
#define SPOTRUN_CUDA_COMM_H

#include <pthread.h>

#include "cuda_util.h"

enum cuda_comm_kind { CC_NONE = 0, CC_NCCL = 1, CC_HOST = 2 };

struct cuda_comm {
    enum cuda_comm_kind kind;
    struct backend_comm host;   /* the binary's collectives */
    int device;
    double timeout_s;
    ncclComm_t nccl;
    /* watchdog (NCCL only) */
    pthread_t thread;
    int thread_running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    double since;               /* when the host began waiting; 0 = idle */
    const char *what;           /* what it waits for */
    int aborted;
    double aborted_at;
    char reason[256];
};

/* Collective. Chooses the kind (want: --comm; world size 1 and auto give
 * CC_NONE; auto with several ranks gives NCCL when every rank has a GPU of
 * its own on its host, else CC_HOST) and sets NCCL up. cc is allocated
 * here because an aborted communicator's watchdog outlives the backend. */
sr_status cuda_comm_init(struct cuda_comm **out, const struct backend_comm *host,
                         enum backend_comm_kind want, int ndevices,
                         int device, double timeout_s) SR_MUST_USE;
/* failed: tear down without waiting for peers (abort, not finalize). */
void cuda_comm_destroy(struct cuda_comm *cc, int failed);

/* Collective: do all ranks report ok? */
sr_status cuda_comm_agree(const struct backend_comm *host, int ok,
                          int *all_ok) SR_MUST_USE;

/* Enqueue an in-place NCCL SUM over n floats on stream st. */
sr_status cuda_comm_allreduce(struct cuda_comm *cc, float *buf, size_t n,
                              cudaStream_t st) SR_MUST_USE;

/* Wait for ev (recorded after work that may include collectives) without
 * blocking forever: with NCCL, under the watchdog. what names the wait in
 * errors. cc may be NULL. */
sr_status cuda_comm_wait(struct cuda_comm *cc, cudaEvent_t ev,
                         const char *what) SR_MUST_USE;

const char *cuda_comm_kind_name(enum cuda_comm_kind k);

#endif
