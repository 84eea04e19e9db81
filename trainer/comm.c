/*
 * comm.c: MPI collectives. Gradients are summed in place in one call over
 * the contiguous gradient buffer (MPI_IN_PLACE, MPI_SUM). Chunks above
 * INT_MAX elements are split because MPI counts are ints.
 *
 * Every collective is watched: a thread checks once a second how long the
 * current one has been blocked, and past the timeout exits the process
 * (a blocked MPI call cannot be interrupted; exiting makes mpirun end the
 * whole job, the hung peer included).
 */
#include "comm.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"

static struct {
    pthread_t thread;
    int running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    double timeout;
    double since;           /* monotonic start of the blocked call, 0 */
    const char *what;
} wd = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wd.mu);
    while (!wd.stop) {
        if (wd.since > 0 && now_s() - wd.since > wd.timeout) {
            log_error("waited %.0f s in %s (--collective-timeout): another "
                      "rank died or stopped responding; exiting", now_s() -
                      wd.since, wd.what);
            fflush(stdout);
            fflush(stderr);
            _exit(1);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&wd.cv, &wd.mu, &until);
    }
    pthread_mutex_unlock(&wd.mu);
    return NULL;
}

static void guard(const char *what)
{
    if (!wd.running)
        return;
    pthread_mutex_lock(&wd.mu);
    wd.since = now_s();
    wd.what = what;
    pthread_mutex_unlock(&wd.mu);
}

static void unguard(void)
{
    if (!wd.running)
        return;
    pthread_mutex_lock(&wd.mu);
    wd.since = 0;
    pthread_mutex_unlock(&wd.mu);
}

sr_status comm_watchdog_start(struct comm *c, double timeout_s)
{
    if (wd.running || c->size == 1)
        return SR_OK;
    wd.timeout = timeout_s;
    wd.stop = 0;
    if (pthread_create(&wd.thread, NULL, watchdog_main, NULL) != 0)
        return SR_FAIL(SR_ERR_NOMEM, "cannot start the collective "
                       "watchdog");
    wd.running = 1;
    return SR_OK;
}

void comm_watchdog_stop(void)
{
    if (!wd.running)
        return;
    pthread_mutex_lock(&wd.mu);
    wd.stop = 1;
    pthread_cond_broadcast(&wd.cv);
    pthread_mutex_unlock(&wd.mu);
    pthread_join(wd.thread, NULL);
    wd.running = 0;
}

void comm_watchdog_timeout(double timeout_s)
{
    pthread_mutex_lock(&wd.mu);
    wd.timeout = timeout_s;
    pthread_mutex_unlock(&wd.mu);
}

static sr_status mpi_grad_allreduce(struct comm *c, float *buf, size_t n)
{
    if (c->size == 1)
        return SR_OK;
    guard("the gradient all-reduce");
    while (n > 0) {
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int r = MPI_Allreduce(MPI_IN_PLACE, buf, k, MPI_FLOAT, MPI_SUM,
                              c->world);
        if (r != MPI_SUCCESS) {
            unguard();
            return SR_FAIL(SR_ERR_MPI, "gradient all-reduce failed");
        }
        buf += k;
        n -= (size_t)k;
    }
    unguard();
    return SR_OK;
}

sr_status comm_init(struct comm *c)
{
    c->world = MPI_COMM_WORLD;
    MPI_CHECK(MPI_Comm_rank(c->world, &c->rank));
    MPI_CHECK(MPI_Comm_size(c->world, &c->size));
    MPI_Comm local;
    MPI_CHECK(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank,
                                  MPI_INFO_NULL, &local));
    MPI_CHECK(MPI_Comm_rank(local, &c->local_rank));
    MPI_CHECK(MPI_Comm_size(local, &c->local_size));
    MPI_Comm_free(&local);
    c->grad_allreduce = mpi_grad_allreduce;
    return SR_OK;
}

void comm_free(struct comm *c)
{
    (void)c;
}

/* Complete a nonblocking collective without holding a core: poll hard
 * for 2 ms (a quick collective costs nothing extra), then once a
 * millisecond. A blocking MPI call busy-polls at 100% CPU; the ranks that
 * wait for rank 0's checkpoint or checkpoint download would take that CPU
 * from it on a shared host. */
static int wait_idle(MPI_Request *req)
{
    double t0 = now_s();
    for (;;) {
        int done = 0;
        int r = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (r != MPI_SUCCESS || done)
            return r;
        if (now_s() - t0 > 0.002) {
            struct timespec ms = { 0, 1000000 };
            nanosleep(&ms, NULL);
        }
    }
}

/* A small in-place all-reduce, watched. */
static sr_status reduce(struct comm *c, void *v, int n, MPI_Datatype t,
                        MPI_Op op, const char *what)
{
    if (c->size == 1)
        return SR_OK;
    guard(what);
    MPI_Request req;
    int r = MPI_Iallreduce(MPI_IN_PLACE, v, n, t, op, c->world, &req);
    if (r == MPI_SUCCESS)
        r = wait_idle(&req);
    unguard();
    if (r != MPI_SUCCESS)
        return SR_FAIL(SR_ERR_MPI, "%s failed", what);
    return SR_OK;
}

sr_status comm_sum_f64(struct comm *c, double *v, int n)
{
    return reduce(c, v, n, MPI_DOUBLE, MPI_SUM, "an all-reduce (sum)");
}

sr_status comm_max_f64(struct comm *c, double *v, int n)
{
    return reduce(c, v, n, MPI_DOUBLE, MPI_MAX, "an all-reduce (max)");
}

sr_status comm_min_f64(struct comm *c, double *v, int n)
{
    return reduce(c, v, n, MPI_DOUBLE, MPI_MIN, "an all-reduce (min)");
}

sr_status comm_sum_i64(struct comm *c, int64_t *v, int n)
{
    return reduce(c, v, n, MPI_INT64_T, MPI_SUM, "an all-reduce (sum)");
}

sr_status comm_all_equal_u64(struct comm *c, uint64_t v, int *equal)
{
    uint64_t mm[2] = { v, ~v };
    SR_TRY(reduce(c, mm, 2, MPI_UINT64_T, MPI_MAX, "the parameter check"));
    /* max(v) == v and max(~v) == ~v on every rank iff all v are equal */
    int all = mm[0] == v && mm[1] == ~v;
    SR_TRY(reduce(c, &all, 1, MPI_INT, MPI_MIN, "the parameter check"));
    *equal = all;
    return SR_OK;
}

sr_status comm_barrier(struct comm *c)
{
    if (c->size == 1)
        return SR_OK;
    guard("a barrier");
    MPI_Request req;
    int r = MPI_Ibarrier(c->world, &req);
    if (r == MPI_SUCCESS)
        r = wait_idle(&req);
    unguard();
    if (r != MPI_SUCCESS)
        return SR_FAIL(SR_ERR_MPI, "barrier failed");
    return SR_OK;
}

sr_status comm_bcast_bytes(struct comm *c, void *buf, size_t n)
{
    if (c->size == 1)
        return SR_OK;
    guard("a broadcast from rank 0");
    uint8_t *p = buf;
    int r = MPI_SUCCESS;
    while (n > 0 && r == MPI_SUCCESS) {
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        MPI_Request req;
        r = MPI_Ibcast(p, k, MPI_BYTE, 0, c->world, &req);
        if (r == MPI_SUCCESS)
            r = wait_idle(&req);
        p += k;
        n -= (size_t)k;
    }
    unguard();
    if (r != MPI_SUCCESS)
        return SR_FAIL(SR_ERR_MPI, "broadcast from rank 0 failed");
    return SR_OK;
}
