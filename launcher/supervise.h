/*
 * supervise.h: running the job's processes from the launcher, which may be
 * PID 1 of a container.
 *
 * SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 to the launcher become one SIGUSR1
 * to mpirun: mpirun forwards SIGUSR1 to every rank at once and leaves the
 * job running, so the ranks agree on a step, commit a checkpoint and exit
 * 75 within the full grace period (mpirun turns a SIGTERM into SIGKILL
 * after seconds). Every child is reaped, orphans included.
 */
#ifndef SPOTRUN_SUPERVISE_H
#define SPOTRUN_SUPERVISE_H

#include <sys/types.h>

#include "../common/status.h"

/* Block the signals above so that they queue for sv_run and sv_sleep;
 * call once, before any thread or child exists. */
void sv_init(void);

/* Has a stop signal reached the launcher (since sv_init)? */
int sv_stop_requested(void);

/* Run argv in its own process group and wait for it, forwarding stop
 * signals as SIGUSR1. Returns its exit code (128 + N when killed by signal
 * N), or -1 with the reason logged when it could not be started. */
int sv_run(char *const argv[]);

/* Start argv in the background (its own process group); its pid or -1. */
pid_t sv_spawn(char *const argv[]);

/* Sleep up to seconds while reaping children and noting stop signals;
 * returns early (1) on a stop signal, else 0. */
int sv_sleep(double seconds);

/* Is pid (a child started by sv_spawn) still running? */
int sv_alive(pid_t pid);

/* Wait until host:port accepts a TCP connection; SR_ERR_NET after
 * timeout_s. */
sr_status sv_wait_port(const char *host, int port, double timeout_s)
    SR_MUST_USE;

/* Number of running processes named comm (as in /proc/PID/comm) that
 * descend from ancestor. */
int sv_count_descendants(pid_t ancestor, const char *comm);

#endif
