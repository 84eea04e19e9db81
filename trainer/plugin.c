/*
 * plugin.c: finding and opening a backend plugin (see plugin.h). The only
 * place that calls dlopen for backends; a plugin that is missing, is not a
 * shared object, lacks the entry symbol, or was built against other headers
 * is refused with one line saying which and where.
 */
#include "plugin.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"

static const struct backend_plugin *loaded;

static void host_log_line(int level, const char *msg)
{
    if (level < LOG_ERROR)
        level = LOG_ERROR;
    if (level > LOG_DEBUG)
        level = LOG_DEBUG;
    log_msg((enum log_level)level, "%s", msg);
}

static int host_log_level(void)
{
    return (int)log_get_level();
}

static const struct plugin_host host = {
    .abi = SPOTRUN_PLUGIN_ABI,
    .ops_size = sizeof(struct backend_ops),
    .opts_size = sizeof(struct backend_opts),
    .mlp_size = sizeof(struct mlp),
    .vfail = sr_vfail,
    .log_line = host_log_line,
    .log_level = host_log_level,
};

static int ops_complete(const struct backend_ops *o)
{
    return o && o->name && o->create && o->destroy && o->set_params &&
           o->get_params && o->set_opt_state && o->get_opt_state &&
           o->train_step && o->grad_allreduce && o->set_grads &&
           o->get_grads && o->optimizer_step && o->evaluate &&
           !o->host_alloc == !o->host_free;
}

sr_status plugin_load_path(const struct backend_plugin **out,
                           const char *path)
{
    /* RTLD_NOW: a missing symbol or library is found here, not mid-run */
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return SR_FAIL(SR_ERR_NOT_FOUND, "cannot load %s: %s", path,
                       dlerror());
    sr_status s = SR_OK;
    const struct backend_plugin *p = NULL;
    backend_plugin_entry_fn entry;
    void *sym = dlsym(h, SPOTRUN_PLUGIN_ENTRY);
    if (!sym) {
        s = SR_FAIL(SR_ERR_FORMAT, "%s is not a spotrun backend plugin (no "
                    "symbol %s)", path, SPOTRUN_PLUGIN_ENTRY);
        goto out;
    }
    memcpy(&entry, &sym, sizeof entry);
    /* replaced by the plugin's own reason when it records one */
    (void)SR_FAIL(SR_ERR_FORMAT, "it was built for another version of "
                  "spotrun");
    p = entry(&host);
    if (!p) {
        char why[512];
        snprintf(why, sizeof why, "%s", sr_errmsg_user());
        s = SR_FAIL(SR_ERR_FORMAT, "%s refused to load: %s", path, why);
        goto out;
    }
    if (p->abi != SPOTRUN_PLUGIN_ABI || !p->probe || !ops_complete(p->ops))
        s = SR_FAIL(SR_ERR_FORMAT, "%s was built for plugin interface %d, "
                    "this binary speaks %d (or its table is incomplete); "
                    "rebuild it with this binary", path, p->abi,
                    SPOTRUN_PLUGIN_ABI);
out:
    if (s != SR_OK) {
        dlclose(h);
        return s;
    }
    *out = p;
    return SR_OK;
}

/* The directory of the running binary, without the trailing slash. */
static int exe_dir(char *out, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1)
        return -1;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    return 0;
}

sr_status plugin_load_cuda(const struct backend_plugin **out)
{
    if (loaded) {
        *out = loaded;
        return SR_OK;
    }
    const char *env = getenv("SPOTRUN_CUDA_PLUGIN");
    if (env && *env) {
        SR_TRY(plugin_load_path(&loaded, env));
        *out = loaded;
        return SR_OK;
    }
    char dir[PATH_MAX];
    if (exe_dir(dir, sizeof dir) != 0)
        return SR_FAIL(SR_ERR_NOT_FOUND, "cannot find the running binary "
                       "(/proc/self/exe) to look for %s next to it; set "
                       "SPOTRUN_CUDA_PLUGIN", SPOTRUN_CUDA_PLUGIN_FILE);
    char cand[2][PATH_MAX + 64];
    snprintf(cand[0], sizeof cand[0], "%s/%s", dir,
             SPOTRUN_CUDA_PLUGIN_FILE);
    snprintf(cand[1], sizeof cand[1], "%s/../lib/%s", dir,
             SPOTRUN_CUDA_PLUGIN_FILE);
    for (int i = 0; i < 2; i++) {
        if (access(cand[i], F_OK) != 0)
            continue;
        /* present but broken is reported, not skipped */
        SR_TRY(plugin_load_path(&loaded, cand[i]));
        *out = loaded;
        return SR_OK;
    }
    return SR_FAIL(SR_ERR_NOT_FOUND, "%s not found (looked in %s and "
                   "%s/../lib; this build may have no CUDA backend)",
                   SPOTRUN_CUDA_PLUGIN_FILE, dir, dir);
}
