/*
 * status.h: the one status type of spotrun, and the check macros that turn a
 * library's failure (MPI, HDF5, curl, OpenSSL, ...) into a status with the
 * file and line where it happened.
 *
 * A failing function records a one-line message with sr_fail() and returns
 * its status; callers pass the status up unchanged. The top level prints
 * sr_errmsg() once. The message buffer is per thread.
 */
#ifndef SPOTRUN_STATUS_H
#define SPOTRUN_STATUS_H

#include <stdarg.h>

#define SR_MUST_USE __attribute__((warn_unused_result))
#define SR_PRINTF(a, b) __attribute__((format(printf, a, b)))

typedef enum sr_status {
    SR_OK = 0,              /* 0: success */
    SR_ERR_USAGE = 1,       /* 1: bad flag, configuration value or command */
    SR_ERR_IO = 2,          /* 2: a file or stream operation failed */
    SR_ERR_NOMEM = 3,       /* 3: out of memory */
    SR_ERR_FORMAT = 4,      /* 4: input data is malformed or corrupt */
    SR_ERR_NOT_FOUND = 5,   /* 5: an object or file does not exist */
    SR_ERR_EXISTS = 6,      /* 6: create-if-absent found the object present */
    SR_ERR_MPI = 7,         /* 7: an MPI call failed */
    SR_ERR_HDF5 = 8,        /* 8: an HDF5 call failed */
    SR_ERR_NET = 9,         /* 9: a network transfer failed */
    SR_ERR_REMOTE = 10,     /* 10: a remote service answered with an error */
    SR_ERR_AUTH = 11,       /* 11: credentials missing or refused */
    SR_ERR_CRYPTO = 12,     /* 12: an OpenSSL call failed */
    SR_ERR_CUDA = 13,       /* 13: a CUDA or NCCL call failed */
    SR_ERR_INTERRUPTED = 14,/* 14: stopped on request */
    SR_ERR_INTERNAL = 15,   /* 15: a broken invariant (a bug) */
    SR_ERR_DIVERGED = 16,   /* 16: the training loss is not finite */
    SR_STATUS_COUNT
} sr_status;

/* The short name of a status, e.g. "format error". Never NULL. */
const char *sr_status_str(sr_status s);

/* Record "file:line: message" as this thread's last error and return s. */
sr_status sr_fail(sr_status s, const char *file, int line, const char *fmt, ...)
    SR_PRINTF(4, 5);
sr_status sr_vfail(sr_status s, const char *file, int line, const char *fmt,
                   va_list ap);

/* This thread's last error message ("" when none). */
const char *sr_errmsg(void);

/* The message without its "file:line: " prefix, for users. */
const char *sr_errmsg_user(void);

/* Clear this thread's last error. */
void sr_clear_error(void);

/* Process exit code for a status: 0 ok; 2 usage, configuration or input
 * data (missing or malformed); 75 interrupted; 1 any other failure. */
int sr_exit_code(sr_status s);

#define SR_FAIL(s, ...) sr_fail((s), __FILE__, __LINE__, __VA_ARGS__)

/* Propagate a non-OK status. */
#define SR_TRY(expr) do { sr_status s_ = (expr); \
        if (s_ != SR_OK) return s_; } while (0)

#define MPI_CHECK(call) do { int r_ = (call); if (r_ != MPI_SUCCESS) { \
        char m_[MPI_MAX_ERROR_STRING]; int l_ = 0; \
        MPI_Error_string(r_, m_, &l_); \
        return SR_FAIL(SR_ERR_MPI, "%s: %s", #call, m_); } } while (0)

#define H5_CHECK(expr, what) do { if ((expr) < 0) \
        return SR_FAIL(SR_ERR_HDF5, "HDF5: %s failed", (what)); } while (0)

#endif
