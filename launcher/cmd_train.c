/*
 * cmd_train.c: `spotrun train`: MPI start-up, configuration, the effective
 * configuration table on rank 0, the training run, and the exit code.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../trainer/comm.h"
#include "../trainer/train.h"
#include "commands.h"
#include "config.h"
#include "sagemaker.h"

static int wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

int cmd_train(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        config_usage(stdout);
        return 0;
    }
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) !=
        MPI_SUCCESS) {
        log_error("MPI initialisation failed");
        return 1;
    }
    struct comm c;
    static struct config_state cs;
    char *json = NULL;
    int quiet = 0;
    sr_status s = comm_init(&c);
    if (s == SR_OK) {
        log_set_rank(c.rank, c.size);
        s = config_load(&cs, argc, argv);
    }
    if (s == SR_OK) {
        int lvl = log_parse_level(cs.cfg.log_level);
        if (lvl >= 0)
            log_set_level((enum log_level)lvl);
        s = config_validate(&cs.cfg, c.size);
    }
    if (s == SR_OK) {
        json = config_to_json(&cs);
        if (!json)
            s = SR_FAIL(SR_ERR_NOMEM, "out of memory");
    }
    if (s == SR_OK && c.rank == 0) {
        printf("spotrun train: %d rank(s), effective configuration:\n",
               c.size);
        config_print(&cs, stdout);
    }
    if (s == SR_OK)
        s = train_run(&cs.cfg, json, &c, &quiet);
    else if (c.rank != 0)
        quiet = 1;      /* flags and files are the same on every rank */
    if (s != SR_OK && !quiet)
        log_status(s);
    if (s != SR_OK && s != SR_ERR_INTERRUPTED && !quiet)
        /* under the SageMaker launcher: output/failure */
        sm_write_failure(getenv("SPOTRUN_FAILURE_FILE"), sr_errmsg_user(), 0);
    free(json);
    comm_free(&c);
    MPI_Finalize();
    return sr_exit_code(s);
}
