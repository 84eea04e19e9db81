/*
 * sagemaker.c: reading SageMaker's configuration files into a launch plan:
 * which hosts, how many ranks on each, which interface, and the `spotrun
 * train` arguments that the channels and paths imply (a hyperparameter of
 * the same name always wins). Every problem is a usage error that names the
 * file and what is wrong; the caller writes it to output/failure.
 */
#include "sagemaker.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/util.h"

const char *sm_root(void)
{
    const char *r = getenv("SPOTRUN_SAGEMAKER_ROOT");
    return r && *r ? r : "/opt/ml";
}

int sm_detected(void)
{
    char path[SM_PATH_MAX];
    snprintf(path, sizeof path, "%s/input/config/resourceconfig.json",
             sm_root());
    return access(path, F_OK) == 0;
}

void sm_failure_path(const char *root, char *out, size_t cap)
{
    snprintf(out, cap, "%s/output/failure", root);
}

void sm_write_failure(const char *path, const char *msg, int replace)
{
    if (!path || !*path)
        return;
    char dir[SM_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return;
    }
    int fd = open(path, O_WRONLY | O_CREAT | (replace ? O_TRUNC : O_EXCL),
                  0644);
    if (fd < 0)
        return;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return;
    }
    fprintf(f, "%s\n", msg);
    fclose(f);
}

static sr_status load_json(json_t **out, const char *root, const char *name,
                           int required)
{
    char path[SM_PATH_MAX];
    snprintf(path, sizeof path, "%s/input/config/%s", root, name);
    *out = NULL;
    if (!required && access(path, F_OK) != 0)
        return SR_OK;
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        return SR_FAIL(SR_ERR_USAGE, "%s: %s (line %d)", path, err.text,
                       err.line);
    if (!json_is_object(j)) {
        json_decref(j);
        return SR_FAIL(SR_ERR_USAGE, "%s: must hold a JSON object", path);
    }
    *out = j;
    return SR_OK;
}

/* A hyperparameter as a plain string: SageMaker passes strings, and the
 * Python SDK JSON-encodes them ("\"adamw\"" for adamw). NULL if absent. */
static const char *hyperparameter(json_t *hp, const char *key, char *buf,
                                  size_t cap)
{
    json_t *v = hp ? json_object_get(hp, key) : NULL;
    if (!v)
        return NULL;
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    if (s[0] == '"') {
        json_t *inner = json_loads(s, JSON_DECODE_ANY, NULL);
        if (inner && json_is_string(inner)) {
            snprintf(buf, cap, "%s", json_string_value(inner));
            json_decref(inner);
            return buf;
        }
        json_decref(inner);
    }
    snprintf(buf, cap, "%s", s);
    return buf;
}

static sr_status add_arg(struct sm_job *j, const char *flag,
                         const char *value)
{
    if (j->nargs + 2 > SM_MAX_ARGS)
        return SR_FAIL(SR_ERR_INTERNAL, "too many SageMaker arguments");
    snprintf(j->storage[j->nargs], SM_PATH_MAX, "%s", flag);
    j->args[j->nargs] = j->storage[j->nargs];
    j->nargs++;
    if (str_copy(j->storage[j->nargs], SM_PATH_MAX, value) != 0)
        return SR_FAIL(SR_ERR_USAGE, "%s: path too long", flag);
    j->args[j->nargs] = j->storage[j->nargs];
    j->nargs++;
    return SR_OK;
}

static int cmp_host(const void *a, const void *b)
{
    return strcmp(((const struct host *)a)->name,
                  ((const struct host *)b)->name);
}

static sr_status load_resources(struct sm_job *j, json_t *rc, int ppn)
{
    char path[SM_PATH_MAX];
    snprintf(path, sizeof path, "%s/input/config/resourceconfig.json",
             j->root);
    json_t *cur = json_object_get(rc, "current_host");
    json_t *hosts = json_object_get(rc, "hosts");
    json_t *iface = json_object_get(rc, "network_interface_name");
    if (!json_is_string(cur) || !*json_string_value(cur))
        return SR_FAIL(SR_ERR_USAGE, "%s: \"current_host\" must be a "
                       "non-empty string", path);
    if (!json_is_array(hosts) || json_array_size(hosts) == 0)
        return SR_FAIL(SR_ERR_USAGE, "%s: \"hosts\" must be a non-empty "
                       "list of host names", path);
    if (iface && !json_is_string(iface))
        return SR_FAIL(SR_ERR_USAGE, "%s: \"network_interface_name\" must "
                       "be a string", path);
    if (str_copy(j->current_host, sizeof j->current_host,
                 json_string_value(cur)) != 0)
        return SR_FAIL(SR_ERR_USAGE, "%s: current_host too long", path);
    if (iface)
        snprintf(j->iface, sizeof j->iface, "%s", json_string_value(iface));
    j->hosts.n = 0;
    size_t i;
    json_t *h;
    int found = 0;
    json_array_foreach(hosts, i, h) {
        if (!json_is_string(h) || !*json_string_value(h) ||
            j->hosts.n == HOSTS_MAX ||
            str_copy(j->hosts.h[j->hosts.n].name, HOST_NAME_MAX_LEN,
                     json_string_value(h)) != 0)
            return SR_FAIL(SR_ERR_USAGE, "%s: hosts[%zu] is not a host "
                           "name", path, i);
        j->hosts.h[j->hosts.n++].slots = ppn;
        found |= strcmp(json_string_value(h), j->current_host) == 0;
    }
    if (!found)
        return SR_FAIL(SR_ERR_USAGE, "%s: current_host \"%s\" is not in "
                       "hosts", path, j->current_host);
    /* the first host by name leads, as SageMaker's own toolkit does */
    qsort(j->hosts.h, (size_t)j->hosts.n, sizeof j->hosts.h[0], cmp_host);
    j->leader = strcmp(j->hosts.h[0].name, j->current_host) == 0;
    return SR_OK;
}

/* --data / --val-data from a channel, unless a hyperparameter names it */
static sr_status channel(struct sm_job *j, json_t *hp, json_t *idc,
                         const char *name, const char *key, int required)
{
    char buf[SM_PATH_MAX];
    if (hyperparameter(hp, key, buf, sizeof buf))
        return SR_OK;
    json_t *ch = idc ? json_object_get(idc, name) : NULL;
    if (!ch) {
        if (required)
            return SR_FAIL(SR_ERR_USAGE, "no \"%s\" channel in %s/input/"
                           "config/inputdataconfig.json and no \"%s\" "
                           "hyperparameter: spotrun needs training data",
                           name, j->root, key);
        return SR_OK;
    }
    json_t *mode = json_object_get(ch, "TrainingInputMode");
    const char *m = json_is_string(mode) ? json_string_value(mode) : "File";
    if (strcmp(m, "File") != 0 && strcmp(m, "FastFile") != 0)
        return SR_FAIL(SR_ERR_USAGE, "channel \"%s\": input mode %s is not "
                       "supported (use File or FastFile, or give an s3:// "
                       "URI as the \"%s\" hyperparameter)", name, m, key);
    snprintf(buf, sizeof buf, "%s/input/data/%s", j->root, name);
    char flag[32];
    snprintf(flag, sizeof flag, "--%s", key);
    return add_arg(j, flag, buf);
}

sr_status sm_load(struct sm_job *j, int gpus)
{
    memset(j, 0, sizeof *j);
    if (str_copy(j->root, sizeof j->root, sm_root()) != 0)
        return SR_FAIL(SR_ERR_USAGE, "SPOTRUN_SAGEMAKER_ROOT is too long");
    json_t *rc = NULL, *hp = NULL, *idc = NULL, *cc = NULL;
    sr_status s = load_json(&rc, j->root, "resourceconfig.json", 1);
    if (s == SR_OK)
        s = load_json(&hp, j->root, "hyperparameters.json", 0);
    if (s == SR_OK)
        s = load_json(&idc, j->root, "inputdataconfig.json", 0);
    if (s == SR_OK)
        s = load_json(&cc, j->root, "checkpointconfig.json", 0);
    int ppn = gpus > 0 ? gpus : 1;
    char buf[SM_PATH_MAX];
    if (s == SR_OK && hyperparameter(hp, "processes-per-host", buf,
                                     sizeof buf)) {
        int64_t v;
        if (parse_i64(&v, buf) != 0 || v < 1 || v > 1024)
            s = SR_FAIL(SR_ERR_USAGE, "%s/input/config/hyperparameters."
                        "json: processes-per-host \"%s\" is not a count of "
                        "1 or more", j->root, buf);
        else
            ppn = (int)v;
    }
    if (s == SR_OK)
        s = load_resources(j, rc, ppn);
    if (s == SR_OK)
        s = channel(j, hp, idc, "train", "data", 1);
    if (s == SR_OK)
        s = channel(j, hp, idc, "validation", "val-data", 0);
    if (s == SR_OK && cc && !hyperparameter(hp, "checkpoint", buf,
                                            sizeof buf)) {
        json_t *lp = json_object_get(cc, "LocalPath");
        const char *p = json_is_string(lp) && *json_string_value(lp)
                        ? json_string_value(lp) : "/opt/ml/checkpoints";
        s = add_arg(j, "--checkpoint", p);
    }
    if (s == SR_OK && !hyperparameter(hp, "model-dir", buf, sizeof buf)) {
        snprintf(buf, sizeof buf, "%s/model", j->root);
        s = add_arg(j, "--model-dir", buf);
    }
    json_decref(rc);
    json_decref(hp);
    json_decref(idc);
    json_decref(cc);
    return s;
}
