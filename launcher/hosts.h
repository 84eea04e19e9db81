/*
 * hosts.h: the hosts a job runs on and the mpirun command over them.
 *
 * A host list comes from an Open MPI style hostfile ("host slots=N"), from
 * lines of "host:slots" (the output of a discovery command), or from
 * SageMaker's resourceconfig.json. The mpirun command is built from it with
 * one rank per slot, the network interface to use, the ssh agent that
 * reaches the other hosts and the environment the ranks need.
 */
#ifndef SPOTRUN_HOSTS_H
#define SPOTRUN_HOSTS_H

#include <stddef.h>

#include "../common/status.h"

#define HOSTS_MAX 256
#define HOST_NAME_MAX_LEN 256

struct host {
    char name[HOST_NAME_MAX_LEN];
    int slots;
};

struct host_list {
    struct host h[HOSTS_MAX];
    int n;
};

/* Parse text holding one host a line: "host", "host:N", "host slots=N" or
 * "host slots=N max_slots=M"; '#' starts a comment. Hosts without a count
 * get default_slots. what names the source in errors. No hosts at all is
 * not an error: a cluster may be between instances. */
sr_status hosts_parse(struct host_list *hl, const char *text,
                      int default_slots, const char *what) SR_MUST_USE;
/* Read a hostfile, or run a discovery command (sh -c) and parse its
 * output. */
sr_status hosts_from_file(struct host_list *hl, const char *path,
                          int default_slots) SR_MUST_USE;
sr_status hosts_from_command(struct host_list *hl, const char *cmd,
                             int default_slots) SR_MUST_USE;

int hosts_total_slots(const struct host_list *hl);
/* Is every host of a also in b? */
int hosts_contains_all(const struct host_list *b, const struct host_list *a);
/* "a:2,b:2" */
void hosts_format(const struct host_list *hl, char *out, size_t cap);

struct mpirun_opts {
    const char *mpirun;         /* the mpirun binary */
    const char *iface;          /* network interface, or NULL */
    const char *ssh_agent;      /* plm_rsh_agent, or NULL for mpirun's */
    const char *extra;          /* extra mpirun arguments, space separated */
    const char *spotrun;        /* the spotrun binary for the ranks */
};

/* argv (NULL-terminated, heap) for mpirun over hl running
 * `spotrun train ARGS...`; free with argv_free. */
sr_status mpirun_argv(char ***out, const struct host_list *hl,
                      const struct mpirun_opts *o, int nargs,
                      char *const *args) SR_MUST_USE;
void argv_free(char **argv);
/* One line for the log: the command, shell-quoted where needed. */
void argv_format(char *const *argv, char *out, size_t cap);

#endif
