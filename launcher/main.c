/*
 * main.c: the spotrun binary. One executable serves every role: `train`
 * (a rank of a data-parallel job, started by mpirun or alone), `launch`
 * (the supervisor that starts mpirun: SageMaker or a host list), `data`
 * (dataset tools) and the inspection tools; the first argument picks one.
 *
 * Exit codes: 0 finished, 75 stopped on an interruption after a committed
 * checkpoint, 1 runtime error, 2 usage or configuration error
 * (docs/operations.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "commands.h"
#include "sagemaker.h"

#ifndef SPOTRUN_VERSION
#define SPOTRUN_VERSION "0.0.0"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "spotrun %s: spot-aware data-parallel training\n\n"
            "usage: spotrun <command> [options]\n\n"
            "commands:\n"
            "  train     train a model (run under mpirun for several ranks)\n"
            "  launch    run and supervise a job: SageMaker, or a list of "
            "hosts\n"
            "  data      import, make, list and verify datasets\n"
            "  ckpt      list, show and verify checkpoints\n"
            "  cp        copy objects between s3:// and local storage\n"
            "  version   print the version\n\n"
            "`spotrun <command> --help` describes each command.\n",
            SPOTRUN_VERSION);
}

int main(int argc, char **argv)
{
    log_init();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    /* SageMaker starts the image as `IMAGE train`: outside mpirun, in a
     * SageMaker container, `train` means the launcher */
    if (strcmp(cmd, "train") == 0 && sm_detected() &&
        !getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") &&
        !getenv("PMI_RANK"))
        return cmd_launch(argc - 2, argv + 2);
    if (strcmp(cmd, "launch") == 0)
        return cmd_launch(argc - 2, argv + 2);
    if (strcmp(cmd, "train") == 0)
        return cmd_train(argc - 2, argv + 2);
    if (strcmp(cmd, "data") == 0)
        return cmd_data(argc - 2, argv + 2);
    if (strcmp(cmd, "ckpt") == 0)
        return cmd_ckpt(argc - 2, argv + 2);
    if (strcmp(cmd, "cp") == 0)
        return cmd_cp(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("spotrun %s\n", SPOTRUN_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    log_error("unknown command '%s' (try `spotrun help`)", cmd);
    return 2;
}
