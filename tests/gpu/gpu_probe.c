/*
 * gpu_probe.c: does this host have a GPU spotrun can use? Loads the CUDA
 * plugin the way `spotrun train --device auto` does and asks it for
 * devices. Exits 0 (printing the plugin's build and the device count) when
 * there is one, 77 (printing why not) otherwise: the GPU test scripts run
 * it first and pass 77 on, which ctest reports as skipped.
 */
#include <stdio.h>

#include "common/status.h"
#include "trainer/plugin.h"

int main(void)
{
    const struct backend_plugin *p = NULL;
    int count = 0;
    if (plugin_load_cuda(&p) != SR_OK || p->probe(&count) != SR_OK) {
        printf("SKIPPED: no usable GPU: %s\n", sr_errmsg_user());
        return 77;
    }
    if (count < 1) {
        printf("SKIPPED: the CUDA plugin sees no GPU\n");
        return 77;
    }
    printf("%s, %d GPU(s)\n", p->build, count);
    return 0;
}
