/*
 * log.h: leveled logging to stderr. Every line carries a level tag and, in a
 * multi-rank job, the rank. Metrics lines are not logs: they go to stdout via
 * trainer/metrics.c.
 *
 * The level comes from SPOTRUN_LOG_LEVEL (error|warn|info|debug) or
 * log_set_level(). Info lines from ranks other than 0 are dropped unless the
 * level is debug, so an N-rank job prints one story, not N.
 */
#ifndef SPOTRUN_LOG_H
#define SPOTRUN_LOG_H

#include "status.h"

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Read SPOTRUN_LOG_LEVEL; call once at start. */
void log_init(void);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* Parse "error|warn|info|debug"; returns -1 when unknown. */
int log_parse_level(const char *s);
/* Tag lines with this rank from now on (world > 1 only). */
void log_set_rank(int rank, int world);

void log_msg(enum log_level lvl, const char *fmt, ...) SR_PRINTF(2, 3);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_get_level() >= LOG_DEBUG) \
        log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

/* Print this thread's last error (sr_errmsg) once, at error level. */
void log_status(sr_status s);

#endif
