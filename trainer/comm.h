/*
 * comm.h: collective communication between ranks, MPI on host buffers.
 * Backends reach it through struct backend_comm (backend.h): the CPU
 * backend sums its gradients with comm.grad_allreduce; the CUDA backend
 * sums them itself with NCCL, using MPI only to broadcast NCCL's unique id
 * (or, with --comm mpi, this same hook on host copies). Everything else
 * (scalars, checks, broadcasts of small host data) goes through MPI.
 *
 * A single-process run without mpirun is world size 1 and every collective
 * returns at once.
 */
#ifndef SPOTRUN_COMM_H
#define SPOTRUN_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

struct comm {
    MPI_Comm world;
    int rank, size;
    int local_rank, local_size;     /* within this host */
    /* in-place SUM over n host floats (MPI) */
    sr_status (*grad_allreduce)(struct comm *c, float *buf, size_t n);
};

sr_status comm_init(struct comm *c) SR_MUST_USE;
void comm_free(struct comm *c);

/* Bound how long any collective may block: past timeout_s (a peer died or
 * hangs), the process logs it and exits 1, which ends the job under
 * mpirun. Off until started. */
sr_status comm_watchdog_start(struct comm *c, double timeout_s) SR_MUST_USE;
void comm_watchdog_stop(void);
/* Change the bound (e.g. longer while rank 0 writes a large checkpoint). */
void comm_watchdog_timeout(double timeout_s);

sr_status comm_sum_f64(struct comm *c, double *v, int n) SR_MUST_USE;
sr_status comm_min_f64(struct comm *c, double *v, int n) SR_MUST_USE;
sr_status comm_sum_i64(struct comm *c, int64_t *v, int n) SR_MUST_USE;
sr_status comm_max_f64(struct comm *c, double *v, int n) SR_MUST_USE;
/* Do all ranks hold the same value? (debug check of replicated state) */
sr_status comm_all_equal_u64(struct comm *c, uint64_t v, int *equal)
    SR_MUST_USE;
sr_status comm_barrier(struct comm *c) SR_MUST_USE;
/* Rank 0's n bytes to every rank (collective; n must agree). */
sr_status comm_bcast_bytes(struct comm *c, void *buf, size_t n) SR_MUST_USE;

#endif
