/*
 * plugin.h: the contract between the spotrun binary and a backend plugin
 * (the CUDA backend, libspotrun_cuda.so), and the loader that finds it.
 *
 * The binary has no link-time dependency on CUDA, cuBLAS or NCCL: the
 * plugin links them and is opened with dlopen when a run asks for a GPU.
 * The plugin exports one symbol, SPOTRUN_PLUGIN_ENTRY, a function that
 * takes the services the binary lends it (error recording, logging) and
 * returns a versioned description with its backend_ops table. It links
 * nothing of spotrun's own, so errors it records land in the binary's
 * per-thread message buffer and its log lines in the binary's log.
 *
 * The loader looks in $SPOTRUN_CUDA_PLUGIN (a file; when set, nowhere
 * else), then next to the running binary (/proc/self/exe), then in ../lib
 * from there. It opens the plugin only where the NVIDIA driver (libcuda,
 * itself opened at run time) sees a GPU. The plugin stays loaded for the
 * life of the process.
 */
#ifndef SPOTRUN_PLUGIN_H
#define SPOTRUN_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>

#include "../common/status.h"
#include "backend.h"

/* Bumped whenever backend.h or this file changes incompatibly. */
#define SPOTRUN_PLUGIN_ABI 1
#define SPOTRUN_PLUGIN_ENTRY "spotrun_backend_plugin"
#define SPOTRUN_CUDA_PLUGIN_FILE "libspotrun_cuda.so"

/* What the binary lends a plugin. The sizes let the plugin refuse a binary
 * built from other headers. */
struct plugin_host {
    int abi;
    size_t ops_size, opts_size, mlp_size;
    /* record "file:line: message" as this thread's error; returns s */
    sr_status (*vfail)(sr_status s, const char *file, int line,
                       const char *fmt, va_list ap);
    /* one log line at a level of common/log.h (0 error ... 3 debug) */
    void (*log_line)(int level, const char *msg);
    int (*log_level)(void);
};

struct backend_plugin {
    int abi;
    const char *name;               /* "cuda" */
    const char *build;              /* toolkit and library versions */
    /* Usable devices on this host: *count (0 or more), or a status with
     * the reason recorded. */
    sr_status (*probe)(int *count);
    const struct backend_ops *ops;
};

/* The exported entry: NULL (with the reason recorded through host->vfail)
 * when the plugin cannot serve this binary. */
typedef const struct backend_plugin *(*backend_plugin_entry_fn)(
    const struct plugin_host *host);

/* Find the CUDA plugin, check that it is a shared object and that the
 * driver sees a GPU, then open and check it. On failure the reason (the
 * paths tried, the driver's answer or what dlopen said) is the recorded
 * error. */
sr_status plugin_load_cuda(const struct backend_plugin **out) SR_MUST_USE;

/* Open the plugin at path exactly (tests). */
sr_status plugin_load_path(const struct backend_plugin **out,
                           const char *path) SR_MUST_USE;

#endif
