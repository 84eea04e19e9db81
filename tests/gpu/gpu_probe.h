/*
 * gpu_probe.h: load the CUDA plugin the way `spotrun train --device auto`
 * does and ask it for devices. Prints the plugin's build and the device
 * count and returns the plugin when there is a GPU; prints "SKIPPED: "
 * and why not and returns NULL otherwise (the caller exits 77, which
 * ctest reports as skipped).
 */
#ifndef SPOTRUN_TESTS_GPU_PROBE_H
#define SPOTRUN_TESTS_GPU_PROBE_H

#include <stdio.h>

#include "common/status.h"
#include "trainer/plugin.h"

static inline const struct backend_plugin *gpu_plugin_or_skip(void)
{
    const struct backend_plugin *p = NULL;
    int count = 0;
    if (plugin_load_cuda(&p) != SR_OK || p->probe(&count) != SR_OK) {
        printf("SKIPPED: no usable GPU: %s\n", sr_errmsg_user());
        return NULL;
    }
    if (count < 1) {
        printf("SKIPPED: the CUDA plugin sees no GPU\n");
        return NULL;
    }
    printf("%s, %d GPU(s)\n", p->build, count);
    return p;
}

#endif
