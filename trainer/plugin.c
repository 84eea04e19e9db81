/*
 * plugin.c: finding and opening a backend plugin (see plugin.h). The only
 * place that calls dlopen for backends; a plugin that is missing, is not a
 * shared object, lacks the entry symbol, or was built against other headers
 * is refused with one line saying which and where.
 */
#include "plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
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

/* Where the CUDA plugin should be: $SPOTRUN_CUDA_PLUGIN, else the first
 * of the binary's directory and ../lib that holds it. */
static sr_status find_cuda_plugin(char *path, size_t cap)
{
    const char *env = getenv("SPOTRUN_CUDA_PLUGIN");
    if (env && *env) {
        if ((size_t)snprintf(path, cap, "%s", env) >= cap)
            return SR_FAIL(SR_ERR_USAGE, "SPOTRUN_CUDA_PLUGIN is too long");
        return SR_OK;
    }
    char dir[PATH_MAX];
    if (exe_dir(dir, sizeof dir) != 0)
        return SR_FAIL(SR_ERR_NOT_FOUND, "cannot find the running binary "
                       "(/proc/self/exe) to look for %s next to it; set "
                       "SPOTRUN_CUDA_PLUGIN", SPOTRUN_CUDA_PLUGIN_FILE);
    static const char *const where[] = { "%s/%s", "%s/../lib/%s" };
    for (int i = 0; i < 2; i++) {
        snprintf(path, cap, where[i], dir, SPOTRUN_CUDA_PLUGIN_FILE);
        if (access(path, F_OK) == 0)
            return SR_OK;
    }
    return SR_FAIL(SR_ERR_NOT_FOUND, "%s not found (looked in %s and "
                   "%s/../lib; this build may have no CUDA backend)",
                   SPOTRUN_CUDA_PLUGIN_FILE, dir, dir);
}

/* The file is there and starts like a shared object. */
static sr_status check_elf(const char *path)
{
    unsigned char magic[4] = { 0 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return SR_FAIL(SR_ERR_NOT_FOUND, "cannot load %s: %s", path,
                       strerror(errno));
    ssize_t n = read(fd, magic, sizeof magic);
    close(fd);
    if (n != (ssize_t)sizeof magic || memcmp(magic, "\177ELF", 4) != 0)
        return SR_FAIL(SR_ERR_FORMAT, "cannot load %s: not a shared object "
                       "(no ELF header)", path);
    return SR_OK;
}

/* Is there an NVIDIA driver that sees a GPU? Asked of libcuda itself, so
 * that a host without one never opens the plugin (with cuBLAS and NCCL,
 * about 150 MB of memory and 0.1 s of start-up for nothing). The driver
 * stays loaded: the plugin uses it. */
static sr_status check_driver(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return SR_FAIL(SR_ERR_NOT_FOUND, "no NVIDIA driver (%s)", dlerror());
    int (*init)(unsigned) = NULL;
    int (*count)(int *) = NULL;
    int (*name)(int, const char **) = NULL;
    void *sym[3] = { dlsym(h, "cuInit"), dlsym(h, "cuDeviceGetCount"),
                     dlsym(h, "cuGetErrorName") };
    memcpy(&init, &sym[0], sizeof init);
    memcpy(&count, &sym[1], sizeof count);
    memcpy(&name, &sym[2], sizeof name);
    if (!init || !count)
        return SR_FAIL(SR_ERR_NOT_FOUND, "libcuda.so.1 lacks cuInit or "
                       "cuDeviceGetCount");
    int n = 0;
    int r = init(0);
    if (r == 0)
        r = count(&n);
    if (r != 0) {
        const char *what = NULL;
        if (!name || name(r, &what) != 0 || !what)
            what = "an error";
        return SR_FAIL(SR_ERR_NOT_FOUND, "the NVIDIA driver answers %s (CUDA "
                       "driver error %d)", what, r);
    }
    if (n < 1)
        return SR_FAIL(SR_ERR_NOT_FOUND, "the NVIDIA driver sees no GPU");
    return SR_OK;
}

sr_status plugin_load_cuda(const struct backend_plugin **out)
{
    if (loaded) {
        *out = loaded;
        return SR_OK;
    }
    char path[PATH_MAX + 64];
    SR_TRY(find_cuda_plugin(path, sizeof path));
    /* present but broken is reported, not skipped */
    SR_TRY(check_elf(path));
    SR_TRY(check_driver());
    SR_TRY(plugin_load_path(&loaded, path));
    *out = loaded;
    return SR_OK;
}
