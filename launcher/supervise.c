/*
 * supervise.c: children of the launcher. The stop signals and SIGCHLD stay
 * blocked in the launcher and are taken with sigtimedwait, so there is no
 * handler and no race: a signal is either forwarded or still pending.
 * Children get an empty signal mask and default dispositions back before
 * exec, and their own process group, so a terminal's ^C reaches only the
 * launcher (which turns it into SIGUSR1 for the job).
 */
#include "supervise.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"

static sigset_t sv_set;
static int sv_stops;

void sv_init(void)
{
    sigemptyset(&sv_set);
    sigaddset(&sv_set, SIGTERM);
    sigaddset(&sv_set, SIGINT);
    sigaddset(&sv_set, SIGUSR1);
    sigaddset(&sv_set, SIGUSR2);
    sigaddset(&sv_set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &sv_set, NULL);
}

int sv_stop_requested(void)
{
    return sv_stops > 0;
}

static pid_t spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(argv[0], argv);
    fprintf(stderr, "spotrun launch: cannot run %s: %s\n", argv[0],
            strerror(errno));
    _exit(127);
}

pid_t sv_spawn(char *const argv[])
{
    pid_t pid = spawn(argv);
    if (pid < 0)
        log_error("cannot start %s: %s", argv[0], strerror(errno));
    return pid;
}

/* Reap every exited child; 1 and its status when one was `watch` (0 when
 * none is watched). */
static int reap(pid_t watch, int *status)
{
    int found = 0, st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0)
        if (p == watch && status) {
            *status = st;
            found = 1;
        }
    return found;
}

/* Wait for one signal of the set, up to seconds; the signal or 0. */
static int next_signal(double seconds)
{
    struct timespec ts = { (time_t)seconds,
                           (long)((seconds - (double)(time_t)seconds) * 1e9) };
    int sig = sigtimedwait(&sv_set, NULL, &ts);
    return sig < 0 ? 0 : sig;
}

static int note_stop(int sig)
{
    if (sig == SIGCHLD || sig == 0)
        return 0;
    sv_stops++;
    return 1;
}

int sv_run(char *const argv[])
{
    pid_t pid = sv_spawn(argv);
    if (pid < 0)
        return -1;
    int status = 0;
    for (;;) {
        if (reap(pid, &status))
            break;
        int sig = next_signal(1.0);
        if (note_stop(sig)) {
            log_warn("%s received: asking the job to checkpoint and stop "
                     "(SIGUSR1 to %s)", strsignal(sig), argv[0]);
            kill(pid, SIGUSR1);
        }
    }
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

int sv_sleep(double seconds)
{
    double end = now_s() + seconds;
    for (;;) {
        reap(0, NULL);
        double left = end - now_s();
        if (left <= 0)
            return 0;
        if (note_stop(next_signal(left < 0.5 ? left : 0.5)))
            return 1;
    }
}

int sv_alive(pid_t pid)
{
    int st;
    pid_t p = waitpid(pid, &st, WNOHANG);
    return p == 0;
}

sr_status sv_wait_port(const char *host, int port, double timeout_s)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    double end = now_s() + timeout_s;
    const char *why = "no answer";
    char reason[160];
    for (;;) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
        int rc = getaddrinfo(host, service, &hints, &ai);
        if (rc != 0) {
            snprintf(reason, sizeof reason, "%s", gai_strerror(rc));
            why = reason;
        }
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
            int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
            if (fd < 0)
                continue;
            int ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
            if (!ok) {
                snprintf(reason, sizeof reason, "%s", strerror(errno));
                why = reason;
            }
            close(fd);
            if (ok) {
                freeaddrinfo(ai);
                return SR_OK;
            }
        }
        if (ai)
            freeaddrinfo(ai);
        if (now_s() >= end)
            return SR_FAIL(SR_ERR_NET, "host %s port %d did not answer "
                           "within %.0f s (%s)", host, port, timeout_s, why);
        if (sv_sleep(0.5))
            return SR_FAIL(SR_ERR_INTERRUPTED, "stopped while waiting for "
                           "host %s", host);
    }
}

static pid_t parent_of(pid_t pid, char *comm, size_t cap)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* pid (comm) state ppid ...; comm may hold spaces and parentheses */
    char *open = strchr(buf, '('), *close = strrchr(buf, ')');
    if (!open || !close || close < open)
        return -1;
    if (comm) {
        size_t len = (size_t)(close - open - 1);
        if (len >= cap)
            len = cap - 1;
        memcpy(comm, open + 1, len);
        comm[len] = '\0';
    }
    int ppid;
    if (sscanf(close + 1, " %*c %d", &ppid) != 1)
        return -1;
    return ppid;
}

int sv_count_descendants(pid_t ancestor, const char *comm)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t v;
        if (parse_i64(&v, e->d_name) != 0)
            continue;
        char name[64];
        pid_t p = parent_of((pid_t)v, name, sizeof name);
        if (p < 0 || strcmp(name, comm) != 0)
            continue;
        for (int depth = 0; p > 1 && depth < 64; depth++) {
            if (p == ancestor) {
                count++;
                break;
            }
            p = parent_of(p, NULL, 0);
        }
    }
    closedir(d);
    return count;
}
