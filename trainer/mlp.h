/*
 * mlp.h: the multilayer perceptron's shape and parameter layout. All
 * parameters live in one contiguous float buffer, tensor after tensor:
 * fc1.weight [h1 x in], fc1.bias [h1], fc2.weight ..., so one all-reduce
 * covers every gradient and one copy snapshots the model. Weights are stored
 * [out x in], the PyTorch nn.Linear convention.
 *
 * This module knows shapes and initialisation only; the math is in the
 * backends (backend_cpu.c, the CUDA plugin).
 */
#ifndef SPOTRUN_MLP_H
#define SPOTRUN_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

#define MLP_MAX_LAYERS 16

struct mlp {
    int nlayers;                    /* linear layers = hidden layers + 1 */
    int dims[MLP_MAX_LAYERS + 1];   /* dims[0] input ... dims[nlayers] classes */
    size_t w_off[MLP_MAX_LAYERS];   /* offsets into the parameter buffer */
    size_t b_off[MLP_MAX_LAYERS];
    size_t nparams;
};

sr_status mlp_shape(struct mlp *m, int input, const int *hidden, int nhidden,
                    int classes) SR_MUST_USE;

/* Number of tensors (2 per layer) and tensor t's name, shape and offset. */
int mlp_ntensors(const struct mlp *m);
void mlp_tensor(const struct mlp *m, int t, char *name, size_t cap,
                int *ndim, size_t dims[2], size_t *offset, size_t *count);
/* Is tensor t a weight matrix (weight decay applies) rather than a bias? */
int mlp_tensor_is_weight(int t);

/* PyTorch's nn.Linear default: weight and bias ~ U(-k, k), k = 1/sqrt(in),
 * drawn from the (seed, RNG_STREAM_INIT) generator. Same on every rank. */
void mlp_init_params(const struct mlp *m, float *params, uint64_t seed);

/* Floating-point operations of one training step per sample (forward +
 * backward, multiply-add = 2), for throughput reporting. */
double mlp_train_flops_per_sample(const struct mlp *m);

#endif
