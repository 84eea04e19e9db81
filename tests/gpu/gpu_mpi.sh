# gpu_mpi.sh: 2 ranks sharing one GPU with --comm mpi (gradients summed
# through host memory) follow the 1-rank GPU loss curve with the same
# global batch (per step within 1e-4 relative, the ranks' parameters
# checked identical every 10 steps); --comm auto picks the host path by
# itself when ranks share a GPU, and --comm nccl refuses with a clear
# message. Skipped without a GPU or without a working mpirun.
source "$(dirname "$0")/gpu_lib.sh"

if ! "$MPIEXEC" --version >/dev/null 2>&1; then
    echo "SKIPPED: no usable mpirun ($MPIEXEC)"
    exit 77
fi
ngpu=$(sed -nE 's/.*, ([0-9]+) GPU\(s\)$/\1/p' "$WORK/probe.txt")

"$SPOTRUN" train --data "$FM/train" --max-steps 100 --progress off \
    --device cuda --step-metrics-file "$WORK/one.jsonl" >"$WORK/one.out" \
    2>"$WORK/one.err" || fail "1 rank: $(tail -n 3 "$WORK/one.err")"
mpi 2 train --data "$FM/train" --max-steps 100 --progress off \
    --device cuda --comm mpi --check-sync-every 10 \
    --step-metrics-file "$WORK/two.jsonl" >"$WORK/two.out" \
    2>"$WORK/two.err" || fail "2 ranks: $(tail -n 3 "$WORK/two.err")"
compare_losses two one 1e-4 1e-4 "2 ranks (--comm mpi) vs 1 rank" ||
    fail "2 ranks on one GPU drift from 1 rank"
pass "2 ranks on one GPU (--comm mpi) = 1 rank within 1e-4"

if [[ ${ngpu:-1} -lt 2 ]]; then
    mpi 2 train --data "$FM/train" --max-steps 5 --progress off \
        --device cuda >"$WORK/auto.out" 2>"$WORK/auto.err" ||
        fail "2 ranks, --comm auto: $(tail -n 3 "$WORK/auto.err")"
    grep -q "ranks share GPUs" "$WORK/auto.err" ||
        fail "--comm auto did not choose the host path"
    set +e
    mpi 2 train --data "$FM/train" --max-steps 5 --progress off \
        --device cuda --comm nccl >"$WORK/nccl.out" 2>"$WORK/nccl.err"
    rc=$?
    set -e
    [[ $rc -ne 0 ]] || fail "--comm nccl with 2 ranks on 1 GPU succeeded"
    grep -q "needs a GPU per rank" "$WORK/nccl.err" ||
        fail "unclear --comm nccl error: $(tail -n 2 "$WORK/nccl.err")"
    pass "--comm auto shares the GPU through the host; --comm nccl refuses (exit $rc)"
fi
