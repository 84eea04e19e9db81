/*
 * comm.c: MPI collectives. Gradients are summed in place in one call over
 * the contiguous gradient buffer (MPI_IN_PLACE, MPI_SUM). Chunks above
 * INT_MAX elements are split because MPI counts are ints.
 */
#include "comm.h"

#include <limits.h>

static sr_status mpi_grad_allreduce(struct comm *c, float *buf, size_t n)
{
    if (c->size == 1)
        return SR_OK;
    while (n > 0) {
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, k, MPI_FLOAT, MPI_SUM,
                                c->world));
        buf += k;
        n -= (size_t)k;
    }
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

sr_status comm_sum_f64(struct comm *c, double *v, int n)
{
    if (c->size > 1)
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM,
                                c->world));
    return SR_OK;
}

sr_status comm_max_f64(struct comm *c, double *v, int n)
{
    if (c->size > 1)
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_MAX,
                                c->world));
    return SR_OK;
}

sr_status comm_sum_i64(struct comm *c, int64_t *v, int n)
{
    if (c->size > 1)
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM,
                                c->world));
    return SR_OK;
}

sr_status comm_all_equal_u64(struct comm *c, uint64_t v, int *equal)
{
    uint64_t mm[2] = { v, ~v };
    if (c->size > 1)
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, mm, 2, MPI_UINT64_T, MPI_MAX,
                                c->world));
    /* max(v) == v and max(~v) == ~v on every rank iff all v are equal */
    *equal = mm[0] == v && mm[1] == ~v;
    int all = *equal;
    if (c->size > 1)
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN,
                                c->world));
    *equal = all;
    return SR_OK;
}

sr_status comm_barrier(struct comm *c)
{
    if (c->size > 1)
        MPI_CHECK(MPI_Barrier(c->world));
    return SR_OK;
}
