/*
 * cmd_launch.c: `spotrun launch`, the supervisor that starts mpirun.
 *
 * Two modes:
 *   SageMaker  resourceconfig.json exists under the SageMaker root (also
 *              `spotrun train` in such a container when not under mpirun,
 *              since SageMaker starts the image as `IMAGE train`). The first
 *              host runs mpirun over every host; the others run sshd and
 *              wait until the leader's job has come and gone.
 *   hosts      --hostfile FILE or --discover CMD: run the job over the hosts
 *              listed now; after exit 75 (a spot notice reached a rank) or a
 *              lost host, list them again and run again, resuming from the
 *              checkpoint with the new world size (same global batch).
 *
 * Either way SIGTERM/SIGINT to the launcher become SIGUSR1 to mpirun
 * (supervise.c), and the launcher exits with the job's code.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "commands.h"
#include "config.h"
#include "hosts.h"
#include "sagemaker.h"
#include "supervise.h"

#define EXIT_INTERRUPTED 75

struct launch_opts {
    const char *hostfile;
    const char *discover;
    int slots;
    int min_hosts;
    int max_restarts;
    double wait_hosts_s;
    double restart_delay_s;
    const char *iface;
    const char *mpirun;
    const char *mpi_args;
    int ssh_port;
    const char *ssh_dir;
    int worker;
    int ntrain;
    char **train;
};

static void launch_usage(FILE *f)
{
    fprintf(f,
"usage: spotrun launch [options] [--] [train options...]\n\n"
"Runs `spotrun train` under mpirun and supervises it. In a SageMaker\n"
"container (resourceconfig.json under $SPOTRUN_SAGEMAKER_ROOT, default\n"
"/opt/ml) everything comes from SageMaker's files; otherwise name the hosts:\n\n"
"  --hostfile FILE        hosts, one a line: host, host:N or host slots=N\n"
"  --discover CMD         a command printing host:slots lines, run before\n"
"                         every start (e.g. a query for running spot nodes)\n"
"  --slots N              ranks on a host whose line gives no count [1]\n"
"  --min-hosts N          hosts needed to start [1]\n"
"  --max-restarts N       runs after the first, on exit 75 or a lost host [10]\n"
"  --wait-hosts SECONDS   how long to wait for --min-hosts hosts [600]\n"
"  --restart-delay SECONDS pause before a restart [5]\n"
"  --network-interface IF interface for MPI and NCCL traffic\n"
"  --mpirun PATH          the mpirun to use [$MPIEXEC or mpirun]\n"
"  --mpi-args \"ARGS\"      extra mpirun arguments\n"
"  --ssh-port N           sshd port on the hosts [$SPOTRUN_SSH_PORT or 22]\n"
"  --worker               SageMaker: serve as an MPI worker host\n\n"
"Signals: SIGTERM or SIGINT become SIGUSR1 to mpirun, so every rank stops\n"
"at the same step and commits a checkpoint (exit 75).\n"
"Exit codes: 0 finished, 75 interrupted with a committed checkpoint,\n"
"1 runtime error, 2 usage or configuration error.\n");
}

static int opt_int(const char *flag, const char *v, int lo, int hi, int *out)
{
    int64_t x;
    if (!v || parse_i64(&x, v) != 0 || x < lo || x > hi) {
        log_error("%s needs a whole number from %d to %d (got '%s')", flag,
                  lo, hi, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int opt_f64(const char *flag, const char *v, double *out)
{
    if (!v || parse_f64(out, v) != 0 || *out < 0) {
        log_error("%s needs a number of seconds (got '%s')", flag,
                  v ? v : "");
        return -1;
    }
    return 0;
}

static int parse_opts(struct launch_opts *o, int argc, char **argv)
{
    const char *port = getenv("SPOTRUN_SSH_PORT");
    const char *mpiexec = getenv("MPIEXEC");
    const char *ssh_dir = getenv("SPOTRUN_SSH_DIR");
    *o = (struct launch_opts){ .slots = 1, .min_hosts = 1,
                               .max_restarts = 10, .wait_hosts_s = 600,
                               .restart_delay_s = 5,
                               .mpirun = mpiexec && *mpiexec ? mpiexec
                                                             : "mpirun",
                               .ssh_port = 22,
                               .ssh_dir = ssh_dir && *ssh_dir
                                          ? ssh_dir : "/etc/spotrun/ssh" };
    if (port && opt_int("SPOTRUN_SSH_PORT", port, 1, 65535, &o->ssh_port))
        return -1;
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0, takes = 1;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "--hostfile") == 0) {
            o->hostfile = v;
        } else if (strcmp(a, "--discover") == 0) {
            o->discover = v;
        } else if (strcmp(a, "--slots") == 0) {
            rc = opt_int(a, v, 1, 4096, &o->slots);
        } else if (strcmp(a, "--min-hosts") == 0) {
            rc = opt_int(a, v, 1, HOSTS_MAX, &o->min_hosts);
        } else if (strcmp(a, "--max-restarts") == 0) {
            rc = opt_int(a, v, 0, 100000, &o->max_restarts);
        } else if (strcmp(a, "--wait-hosts") == 0) {
            rc = opt_f64(a, v, &o->wait_hosts_s);
        } else if (strcmp(a, "--restart-delay") == 0) {
            rc = opt_f64(a, v, &o->restart_delay_s);
        } else if (strcmp(a, "--network-interface") == 0) {
            o->iface = v;
        } else if (strcmp(a, "--mpirun") == 0) {
            o->mpirun = v;
        } else if (strcmp(a, "--mpi-args") == 0) {
            o->mpi_args = v;
        } else if (strcmp(a, "--ssh-port") == 0) {
            rc = opt_int(a, v, 1, 65535, &o->ssh_port);
        } else if (strcmp(a, "--worker") == 0) {
            o->worker = 1;
            takes = 0;
        } else {
            break;          /* the rest belongs to `spotrun train` */
        }
        if (rc)
            return -1;
        if (takes) {
            if (!v) {
                log_error("%s needs a value", a);
                return -1;
            }
            i++;
        }
    }
    o->train = argv + i;
    o->ntrain = argc - i;
    return 0;
}

/* The binary the ranks run: this one. */
static const char *self_path(void)
{
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0)
        return "spotrun";
    path[n] = '\0';
    return path;
}

/* ---- ssh between hosts ---- */

/* A key pair, its authorized_keys and a host key in dir, made once: built
 * in a scratch directory and renamed into place, so hosts sharing a file
 * system agree on one. A container image bakes them in at build time. */
static sr_status ssh_prepare(const char *dir)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/id_ed25519", dir);
    if (access(path, R_OK) == 0)
        return SR_OK;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", dir, (int)getpid());
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "set -e; mkdir -p \"$(dirname '%s')\" '%s'; "
             "ssh-keygen -q -t ed25519 -N '' -C spotrun -f '%s/id_ed25519'; "
             "cp '%s/id_ed25519.pub' '%s/authorized_keys'; "
             "ssh-keygen -q -t ed25519 -N '' -C spotrun-host "
             "-f '%s/ssh_host_ed25519_key'; chmod 700 '%s'",
             dir, tmp, tmp, tmp, tmp, tmp, tmp);
    int rc = system(cmd);
    if (rc != 0)
        return SR_FAIL(SR_ERR_IO, "cannot create ssh keys in %s (is "
                       "openssh-client installed?)", tmp);
    if (rename(tmp, dir) != 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            log_warn("could not remove %s", tmp);
        if (access(path, R_OK) != 0)
            return SR_FAIL(SR_ERR_IO, "cannot put ssh keys in %s: %s", dir,
                           strerror(errno));
    }
    return SR_OK;
}

static void ssh_agent(char *out, size_t cap, const char *dir, int port)
{
    snprintf(out, cap, "ssh -i %s/id_ed25519 -p %d -o BatchMode=yes "
             "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
             "-o LogLevel=ERROR -o ConnectTimeout=30", dir, port);
}

static pid_t sshd_start(const char *dir, int port)
{
    char p[16], hostkey[1200], keys[1200];
    snprintf(p, sizeof p, "%d", port);
    snprintf(hostkey, sizeof hostkey, "%s/ssh_host_ed25519_key", dir);
    snprintf(keys, sizeof keys, "AuthorizedKeysFile=%s/authorized_keys",
             dir);
    if (mkdir("/run/sshd", 0755) != 0 && errno != EEXIST)
        log_warn("cannot create /run/sshd: %s", strerror(errno));
    char *argv[] = { "/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null",
                     "-p", p, "-h", hostkey, "-o", keys,
                     "-o", "PermitRootLogin=prohibit-password",
                     "-o", "PasswordAuthentication=no",
                     "-o", "StrictModes=no", "-o", "UsePAM=no",
                     "-o", "PidFile=none", NULL };
    return sv_spawn(argv);
}

/* ---- running the job ---- */

static int run_once(const struct launch_opts *o, const struct host_list *hl,
                    const char *iface, const char *agent, int ntrain,
                    char **train)
{
    struct mpirun_opts mo = {
        .mpirun = o->mpirun, .iface = iface, .ssh_agent = agent,
        .extra = o->mpi_args, .spotrun = self_path(),
    };
    char **argv;
    sr_status s = mpirun_argv(&argv, hl, &mo, ntrain, train);
    if (s != SR_OK) {
        log_status(s);
        return 1;
    }
    char line[8192];
    argv_format(argv, line, sizeof line);
    log_info("running: %s", line);
    int rc = sv_run(argv);
    argv_free(argv);
    return rc < 0 ? 1 : rc;
}

static sr_status list_hosts(const struct launch_opts *o,
                            struct host_list *hl)
{
    if (o->discover)
        return hosts_from_command(hl, o->discover, o->slots);
    return hosts_from_file(hl, o->hostfile, o->slots);
}

/* Hosts now listed, waiting up to --wait-hosts for --min-hosts of them. */
static sr_status wait_for_hosts(const struct launch_opts *o,
                                struct host_list *hl)
{
    double end = now_s() + o->wait_hosts_s;
    for (int said = 0;; said = 1) {
        sr_status s = list_hosts(o, hl);
        if (s == SR_OK && hl->n >= o->min_hosts)
            return SR_OK;
        /* a missing or malformed hostfile will not mend itself; a
         * discovery command that failed (an API hiccup) may */
        if (s != SR_OK && !(o->discover && s == SR_ERR_IO))
            return s;
        if (s != SR_OK) {
            log_warn("%s; trying again", sr_errmsg_user());
            hl->n = 0;
        }
        if (now_s() >= end)
            return s != SR_OK ? s
                   : SR_FAIL(SR_ERR_NET, "%d host(s) available, fewer "
                             "than --min-hosts %d after %.0f s", hl->n,
                             o->min_hosts, o->wait_hosts_s);
        if (!said)
            log_info("%d host(s) available, waiting for %d", hl->n,
                     o->min_hosts);
        if (sv_sleep(5))
            return SR_FAIL(SR_ERR_INTERRUPTED, "stopped while waiting for "
                           "hosts");
    }
}

static int launch_hosts(const struct launch_opts *o)
{
    if (!o->hostfile == !o->discover) {
        log_error("spotrun launch needs --hostfile FILE or --discover CMD "
                  "(outside SageMaker)");
        return 2;
    }
    char agent[1400] = "";
    char key[1200];
    snprintf(key, sizeof key, "%s/id_ed25519", o->ssh_dir);
    if (access(key, R_OK) == 0)
        ssh_agent(agent, sizeof agent, o->ssh_dir, o->ssh_port);
    struct host_list hl;
    int rc = 1;
    for (int run = 0; run <= o->max_restarts; run++) {
        sr_status s = wait_for_hosts(o, &hl);
        if (s != SR_OK) {
            log_status(s);
            return sr_exit_code(s);
        }
        char list[4096];
        hosts_format(&hl, list, sizeof list);
        log_info("run %d: %d host(s), %d rank(s): %s", run + 1, hl.n,
                 hosts_total_slots(&hl), list);
        rc = run_once(o, &hl, o->iface, agent, o->ntrain, o->train);
        if (rc == 0 || rc == 2 || sv_stop_requested())
            break;
        struct host_list now;
        int lost = list_hosts(o, &now) == SR_OK &&
                   !hosts_contains_all(&now, &hl);
        if (rc != EXIT_INTERRUPTED && !lost) {
            log_error("the job failed (exit %d) with every host still "
                      "listed: not restarting", rc);
            break;
        }
        if (run == o->max_restarts) {
            log_error("exit %d after %d restart(s) (--max-restarts): giving "
                      "up", rc, o->max_restarts);
            break;
        }
        log_warn("%s: starting again in %.0f s with the hosts listed then",
                 rc == EXIT_INTERRUPTED ? "interrupted (exit 75)"
                                        : "a host was lost", o->restart_delay_s);
        if (sv_sleep(o->restart_delay_s))
            break;
    }
    return rc;
}

/* ---- SageMaker ---- */

static int count_gpus(void)
{
    int n = 0;
    char path[32];
    for (int i = 0; i < 64; i++) {
        snprintf(path, sizeof path, "/dev/nvidia%d", i);
        n += access(path, F_OK) == 0;
    }
    return n;
}

static int sm_fail(const char *root, sr_status s)
{
    log_status(s);
    char path[SM_PATH_MAX + 32];
    sm_failure_path(root, path, sizeof path);
    sm_write_failure(path, sr_errmsg_user(), 1);
    return sr_exit_code(s);
}

/* Worker host: sshd for the leader's mpirun, until its daemon has come
 * and gone (or never came within SPOTRUN_WORKER_WAIT seconds). */
static int sm_worker(const struct launch_opts *o, const struct sm_job *j)
{
    sr_status s = ssh_prepare(o->ssh_dir);
    if (s != SR_OK)
        return sm_fail(j->root, s);
    pid_t sshd = sshd_start(o->ssh_dir, o->ssh_port);
    if (sshd < 0)
        return sm_fail(j->root, SR_FAIL(SR_ERR_IO, "cannot start sshd"));
    double wait = 3600;
    const char *w = getenv("SPOTRUN_WORKER_WAIT");
    if (w && parse_f64(&wait, w) != 0)
        wait = 3600;
    log_info("%s: worker host, sshd on port %d; waiting for the job from "
             "%s", j->current_host, o->ssh_port, j->hosts.h[0].name);
    double end = now_s() + wait;
    int seen = 0, rc = 0;
    for (;;) {
        if (!sv_alive(sshd)) {
            rc = sm_fail(j->root, SR_FAIL(SR_ERR_IO, "sshd on port %d "
                                          "exited", o->ssh_port));
            break;
        }
        int n = sv_count_descendants(sshd, "orted");
        if (n > 0 && !seen)
            log_info("the job's daemon started on this host");
        seen |= n > 0;
        if (seen && n == 0) {
            log_info("the job's daemon is gone: done");
            break;
        }
        if (!seen && (now_s() > end || sv_stop_requested())) {
            log_info("no job came: done");
            break;
        }
        /* a stop signal: the ranks here get it from mpirun; keep serving */
        sv_sleep(0.5);
    }
    kill(sshd, SIGTERM);
    return rc;
}

static int sm_leader(const struct launch_opts *o, const struct sm_job *j,
                     int ntrain, char **train)
{
    char agent[1400] = "";
    struct host_list hl = j->hosts;
    if (hl.n == 1) {
        /* one host: mpirun starts every rank itself */
        snprintf(hl.h[0].name, sizeof hl.h[0].name, "localhost");
    } else {
        sr_status s = ssh_prepare(o->ssh_dir);
        if (s != SR_OK)
            return sm_fail(j->root, s);
        ssh_agent(agent, sizeof agent, o->ssh_dir, o->ssh_port);
        for (int i = 1; i < hl.n && s == SR_OK; i++)
            s = sv_wait_port(hl.h[i].name, o->ssh_port, 300);
        if (s != SR_OK)
            return sm_fail(j->root, s);
    }
    log_info("SageMaker: %d host(s) x %d process(es), leader %s%s%s",
             hl.n, hl.h[0].slots, j->current_host,
             j->iface[0] ? ", interface " : "", j->iface);
    int rc = run_once(o, &hl, j->iface[0] ? j->iface : NULL, agent, ntrain,
                      train);
    /* unless a rank already said why */
    char path[SM_PATH_MAX + 32], msg[160];
    sm_failure_path(j->root, path, sizeof path);
    if (rc == EXIT_INTERRUPTED)
        sm_write_failure(path, "stopped on an interruption notice after "
                         "committing a checkpoint (exit 75); start the job "
                         "again to resume from it", 0);
    else if (rc != 0) {
        snprintf(msg, sizeof msg, "training failed (exit %d); see the job "
                 "log", rc);
        sm_write_failure(path, msg, 0);
    }
    return rc;
}

static int launch_sagemaker(const struct launch_opts *o)
{
    struct sm_job j;
    sr_status s = sm_load(&j, count_gpus());
    if (s != SR_OK)
        return sm_fail(sm_root(), s);
    char failure[SM_PATH_MAX + 32];
    sm_failure_path(j.root, failure, sizeof failure);
    unlink(failure);
    if (o->worker || !j.leader)
        return sm_worker(o, &j);
    /* the ranks write their own error there (cmd_train.c) */
    setenv("SPOTRUN_FAILURE_FILE", failure, 1);
    setenv("SPOTRUN_SAGEMAKER_ROOT", j.root, 1);
    /* SageMaker's arguments first, then the caller's (which win) */
    int n = j.nargs + o->ntrain;
    char **train = calloc((size_t)n + 1, sizeof *train);
    if (!train)
        return sm_fail(j.root, SR_FAIL(SR_ERR_NOMEM, "out of memory"));
    memcpy(train, j.args, (size_t)j.nargs * sizeof *train);
    memcpy(train + j.nargs, o->train, (size_t)o->ntrain * sizeof *train);
    /* check the whole configuration here, before any host starts */
    static struct config_state cs;
    s = config_load(&cs, n, train);
    if (s == SR_OK)
        s = config_validate(&cs.cfg, hosts_total_slots(&j.hosts));
    int rc = s == SR_OK ? sm_leader(o, &j, n, train) : sm_fail(j.root, s);
    free(train);
    return rc;
}

int cmd_launch(int argc, char **argv)
{
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            launch_usage(stdout);
            return 0;
        }
    sv_init();
    struct launch_opts o;
    if (parse_opts(&o, argc, argv) != 0)
        return 2;
    if (sm_detected() && !o.hostfile && !o.discover)
        return launch_sagemaker(&o);
    if (o.worker) {
        log_error("--worker is for SageMaker mode (no resourceconfig.json "
                  "under %s)", sm_root());
        return 2;
    }
    return launch_hosts(&o);
}
