/*
 * status.c: status names, the per-thread last-error message, and the mapping
 * from a status to the process exit code documented in docs/operations.md.
 */
#include "status.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[1024];
static _Thread_local size_t errprefix;

static const char *const names[SR_STATUS_COUNT] = {
    [SR_OK] = "ok",
    [SR_ERR_USAGE] = "usage error",
    [SR_ERR_IO] = "I/O error",
    [SR_ERR_NOMEM] = "out of memory",
    [SR_ERR_FORMAT] = "format error",
    [SR_ERR_NOT_FOUND] = "not found",
    [SR_ERR_EXISTS] = "already exists",
    [SR_ERR_MPI] = "MPI error",
    [SR_ERR_HDF5] = "HDF5 error",
    [SR_ERR_NET] = "network error",
    [SR_ERR_REMOTE] = "remote error",
    [SR_ERR_AUTH] = "authentication error",
    [SR_ERR_CRYPTO] = "crypto error",
    [SR_ERR_CUDA] = "CUDA error",
    [SR_ERR_INTERRUPTED] = "interrupted",
    [SR_ERR_INTERNAL] = "internal error",
    [SR_ERR_DIVERGED] = "training diverged",
};

const char *sr_status_str(sr_status s)
{
    if ((int)s < 0 || s >= SR_STATUS_COUNT || !names[s])
        return "unknown status";
    return names[s];
}

sr_status sr_vfail(sr_status s, const char *file, int line, const char *fmt,
                   va_list ap)
{
    const char *base = strrchr(file, '/');
    int n = snprintf(errbuf, sizeof errbuf, "%s:%d: ", base ? base + 1 : file,
                     line);
    if (n < 0 || (size_t)n >= sizeof errbuf)
        n = 0;
    errprefix = (size_t)n;
    vsnprintf(errbuf + n, sizeof errbuf - (size_t)n, fmt, ap);
    return s;
}

sr_status sr_fail(sr_status s, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sr_vfail(s, file, line, fmt, ap);
    va_end(ap);
    return s;
}

const char *sr_errmsg(void)
{
    return errbuf;
}

const char *sr_errmsg_user(void)
{
    return errbuf + errprefix;
}

void sr_clear_error(void)
{
    errbuf[0] = '\0';
    errprefix = 0;
}

int sr_exit_code(sr_status s)
{
    switch (s) {
    case SR_OK: return 0;
    case SR_ERR_USAGE:
    case SR_ERR_FORMAT:
    case SR_ERR_NOT_FOUND: return 2;
    case SR_ERR_INTERRUPTED: return 75;
    default: return 1;
    }
}
