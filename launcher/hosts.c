/*
 * hosts.c: host lists (hostfiles, discovery output) and the mpirun command
 * line built over them. The ranks get the caller's AWS_*, SPOTRUN_*,
 * NCCL_*, OMP_*, OPENBLAS_*, CUDA_* and sanitizer variables by name
 * (-x NAME), so no value
 * (a secret key, say) ever appears on a command line or in a log.
 */
#include "hosts.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/buf.h"
#include "../common/util.h"

extern char **environ;

static sr_status parse_line(struct host_list *hl, char *line, int lineno,
                            int default_slots, const char *what)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *s = str_trim(line);
    if (!*s)
        return SR_OK;
    int slots = default_slots;
    char *rest = s + strcspn(s, " \t:");
    if (*rest == ':') {                     /* host:N */
        *rest++ = '\0';
        int64_t v;
        if (parse_i64(&v, str_trim(rest)) != 0 || v < 1 || v > 4096)
            return SR_FAIL(SR_ERR_USAGE, "%s line %d: '%s' is not a slot "
                           "count (host:N with N >= 1)", what, lineno, rest);
        slots = (int)v;
    } else if (*rest) {                     /* host slots=N [max_slots=M] */
        *rest++ = '\0';
        for (char *tok = strtok(rest, " \t"); tok; tok = strtok(NULL, " \t")) {
            int64_t v;
            if (strncmp(tok, "slots=", 6) == 0) {
                if (parse_i64(&v, tok + 6) != 0 || v < 1 || v > 4096)
                    return SR_FAIL(SR_ERR_USAGE, "%s line %d: bad '%s'",
                                   what, lineno, tok);
                slots = (int)v;
            } else if (strncmp(tok, "max_slots=", 10) != 0) {
                return SR_FAIL(SR_ERR_USAGE, "%s line %d: unknown field "
                               "'%s' (want host, host:N or host slots=N)",
                               what, lineno, tok);
            }
        }
    }
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' &&
            *p != '_')
            return SR_FAIL(SR_ERR_USAGE, "%s line %d: '%s' is not a host "
                           "name or address", what, lineno, s);
    for (int i = 0; i < hl->n; i++)
        if (strcmp(hl->h[i].name, s) == 0)
            return SR_FAIL(SR_ERR_USAGE, "%s line %d: host %s is listed "
                           "twice", what, lineno, s);
    if (hl->n == HOSTS_MAX)
        return SR_FAIL(SR_ERR_USAGE, "%s: more than %d hosts", what,
                       HOSTS_MAX);
    if (str_copy(hl->h[hl->n].name, sizeof hl->h[0].name, s) != 0)
        return SR_FAIL(SR_ERR_USAGE, "%s line %d: host name too long", what,
                       lineno);
    hl->h[hl->n++].slots = slots;
    return SR_OK;
}

sr_status hosts_parse(struct host_list *hl, const char *text,
                      int default_slots, const char *what)
{
    hl->n = 0;
    char *copy = strdup(text);
    if (!copy)
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    sr_status s = SR_OK;
    int lineno = 0;
    for (char *line = copy; line && s == SR_OK; lineno++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        s = parse_line(hl, line, lineno + 1, default_slots, what);
        line = nl ? nl + 1 : NULL;
    }
    free(copy);
    return s;
}

static sr_status read_stream(FILE *f, struct sr_buf *b, const char *what)
{
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        SR_TRY(buf_append(b, chunk, n));
    if (ferror(f))
        return SR_FAIL(SR_ERR_IO, "%s: read failed: %s", what,
                       strerror(errno));
    return buf_append(b, "", 1);
}

sr_status hosts_from_file(struct host_list *hl, const char *path,
                          int default_slots)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return SR_FAIL(SR_ERR_USAGE, "hostfile %s: %s", path,
                       strerror(errno));
    struct sr_buf b = { 0 };
    sr_status s = read_stream(f, &b, path);
    fclose(f);
    if (s == SR_OK)
        s = hosts_parse(hl, (const char *)b.data, default_slots, path);
    buf_free(&b);
    return s;
}

sr_status hosts_from_command(struct host_list *hl, const char *cmd,
                             int default_slots)
{
    char what[300];
    snprintf(what, sizeof what, "host discovery command `%s`", cmd);
    FILE *f = popen(cmd, "r");
    if (!f)
        return SR_FAIL(SR_ERR_IO, "%s: %s", what, strerror(errno));
    struct sr_buf b = { 0 };
    sr_status s = read_stream(f, &b, what);
    int rc = pclose(f);
    if (s == SR_OK && rc != 0)
        s = SR_FAIL(SR_ERR_IO, "%s failed (exit status %d)", what,
                    WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    if (s == SR_OK)
        s = hosts_parse(hl, (const char *)b.data, default_slots, what);
    buf_free(&b);
    return s;
}

int hosts_total_slots(const struct host_list *hl)
{
    int n = 0;
    for (int i = 0; i < hl->n; i++)
        n += hl->h[i].slots;
    return n;
}

int hosts_contains_all(const struct host_list *b, const struct host_list *a)
{
    for (int i = 0; i < a->n; i++) {
        int found = 0;
        for (int j = 0; j < b->n && !found; j++)
            found = strcmp(a->h[i].name, b->h[j].name) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

void hosts_format(const struct host_list *hl, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < hl->n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s:%d",
                                i ? "," : "", hl->h[i].name,
                                hl->h[i].slots);
}

/* ---- mpirun command line ---- */

struct argv_b {
    char **v;
    int n, cap;
    int failed;
};

static void push(struct argv_b *a, const char *s)
{
    if (a->failed)
        return;
    if (a->n + 2 > a->cap) {
        int cap = a->cap ? a->cap * 2 : 64;
        char **v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) {
            a->failed = 1;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    if (!(a->v[a->n] = strdup(s))) {
        a->failed = 1;
        return;
    }
    a->v[++a->n] = NULL;
}

static int forwarded(const char *var)
{
    /* sanitizer settings too, so a test build behaves alike on every host */
    static const char *const prefixes[] = { "AWS_", "SPOTRUN_", "NCCL_",
                                            "OMP_", "OPENBLAS_", "CUDA_",
                                            "ASAN_", "LSAN_", "UBSAN_" };
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(var, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

sr_status mpirun_argv(char ***out, const struct host_list *hl,
                      const struct mpirun_opts *o, int nargs,
                      char *const *args)
{
    struct argv_b a = { 0 };
    char tmp[HOSTS_MAX * (HOST_NAME_MAX_LEN + 8)];
    push(&a, o->mpirun);
    if (geteuid() == 0)
        push(&a, "--allow-run-as-root");
    snprintf(tmp, sizeof tmp, "%d", hosts_total_slots(hl));
    push(&a, "-np");
    push(&a, tmp);
    hosts_format(hl, tmp, sizeof tmp);
    push(&a, "--host");
    push(&a, tmp);
    push(&a, "--bind-to");
    push(&a, "none");
    push(&a, "--map-by");
    push(&a, "slot");
    if (o->iface && *o->iface) {
        push(&a, "--mca");
        push(&a, "btl_tcp_if_include");
        push(&a, o->iface);
        push(&a, "--mca");
        push(&a, "oob_tcp_if_include");
        push(&a, o->iface);
        snprintf(tmp, sizeof tmp, "NCCL_SOCKET_IFNAME=%s", o->iface);
        push(&a, "-x");
        push(&a, tmp);
    }
    if (o->ssh_agent && *o->ssh_agent) {
        push(&a, "--mca");
        push(&a, "plm_rsh_agent");
        push(&a, o->ssh_agent);
    }
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !forwarded(*e) || (size_t)(eq - *e) >= sizeof tmp)
            continue;
        memcpy(tmp, *e, (size_t)(eq - *e));
        tmp[eq - *e] = '\0';
        push(&a, "-x");
        push(&a, tmp);
    }
    if (o->extra && *o->extra) {
        char *copy = strdup(o->extra);
        char *save = NULL;
        if (!copy)
            a.failed = 1;
        for (char *t = copy ? strtok_r(copy, " \t", &save) : NULL; t;
             t = strtok_r(NULL, " \t", &save))
            push(&a, t);
        free(copy);
    }
    push(&a, o->spotrun);
    push(&a, "train");
    for (int i = 0; i < nargs; i++)
        push(&a, args[i]);
    if (a.failed) {
        argv_free(a.v);
        return SR_FAIL(SR_ERR_NOMEM, "out of memory");
    }
    *out = a.v;
    return SR_OK;
}

void argv_free(char **argv)
{
    for (char **p = argv; p && *p; p++)
        free(*p);
    free(argv);
}

void argv_format(char *const *argv, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; argv[i] && len + 1 < cap; i++) {
        int plain = *argv[i] != '\0';
        for (const char *p = argv[i]; *p && plain; p++)
            plain = isalnum((unsigned char)*p) || strchr("-_./:=,@%+", *p);
        len += (size_t)snprintf(out + len, cap - len, plain ? "%s%s"
                                : "%s'%s'", i ? " " : "", argv[i]);
    }
}
