/*
 * gpu_probe.c: does this host have a GPU spotrun can use? Exits 0
 * (printing the plugin's build and the device count) when there is one,
 * 77 (printing why not) otherwise: the GPU test scripts run it first and
 * pass 77 on, which ctest reports as skipped.
 */
#include "gpu_probe.h"

int main(void)
{
    return gpu_plugin_or_skip() ? 0 : 77;
}
