/*
 * log.c: the stderr logger. One fprintf per line so lines from concurrent
 * threads and ranks do not interleave mid-line.
 */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static enum log_level level = LOG_INFO;
static int log_rank = 0;
static int log_world = 1;

int log_parse_level(const char *s)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_WARN;
    return -1;
}

void log_init(void)
{
    const char *env = getenv("SPOTRUN_LOG_LEVEL");
    if (env && *env) {
        int l = log_parse_level(env);
        if (l >= 0)
            level = (enum log_level)l;
    }
}

void log_set_level(enum log_level lvl) { level = lvl; }
enum log_level log_get_level(void) { return level; }

void log_set_rank(int rank, int world)
{
    log_rank = rank;
    log_world = world;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *const tags[] = { "error", "warn", "info", "debug" };
    if (lvl > level)
        return;
    if (lvl == LOG_INFO && log_rank != 0 && level < LOG_DEBUG)
        return;
    char line[2048];
    int n;
    if (log_world > 1)
        n = snprintf(line, sizeof line, "spotrun[%d]: %s: ", log_rank,
                     tags[lvl]);
    else
        n = snprintf(line, sizeof line, "spotrun: %s: ", tags[lvl]);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

void log_status(sr_status s)
{
    if (s == SR_OK)
        return;
    if (level >= LOG_DEBUG)
        log_msg(LOG_ERROR, "%s", sr_errmsg());
    else
        log_msg(LOG_ERROR, "%s", sr_errmsg_user());
}
