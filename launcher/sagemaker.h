/*
 * sagemaker.h: the SageMaker training container contract. Under the root
 * ($SPOTRUN_SAGEMAKER_ROOT, default /opt/ml):
 *
 *   input/config/resourceconfig.json    current_host, hosts,
 *                                       network_interface_name
 *   input/config/hyperparameters.json   the job's options (all strings)
 *   input/config/inputdataconfig.json   channels and their input mode
 *   input/config/checkpointconfig.json  LocalPath (when checkpointing)
 *   input/data/<channel>/               File and FastFile channel data
 *   model/                              the final model
 *   output/failure                      why the job failed
 *
 * SageMaker mode is on when resourceconfig.json exists under the root.
 */
#ifndef SPOTRUN_SAGEMAKER_H
#define SPOTRUN_SAGEMAKER_H

#include "../common/status.h"
#include "hosts.h"

#define SM_PATH_MAX 1024
#define SM_MAX_ARGS 16

struct sm_job {
    char root[SM_PATH_MAX / 2];
    char current_host[HOST_NAME_MAX_LEN];
    struct host_list hosts;         /* sorted; slots = processes per host */
    char iface[64];
    int leader;                     /* current_host is the first host */
    /* `spotrun train` arguments the channels and paths add */
    char *args[SM_MAX_ARGS];
    int nargs;
    char storage[SM_MAX_ARGS][SM_PATH_MAX];
};

/* The SageMaker root: $SPOTRUN_SAGEMAKER_ROOT or /opt/ml. */
const char *sm_root(void);
/* Is this a SageMaker container (resourceconfig.json under the root)? */
int sm_detected(void);
/* Read the contract. gpus: GPUs on this host (processes per host unless a
 * processes-per-host hyperparameter says otherwise; at least 1). */
sr_status sm_load(struct sm_job *j, int gpus) SR_MUST_USE;
/* output/failure under root. */
void sm_failure_path(const char *root, char *out, size_t cap);
/* Write msg (a line) to the failure file at path: replacing what is there,
 * or only if there is none yet (the first failure to be reported wins).
 * NULL or "" does nothing. */
void sm_write_failure(const char *path, const char *msg, int replace);

#endif
