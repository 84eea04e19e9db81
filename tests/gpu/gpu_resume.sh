# gpu_resume.sh: on the GPU, with its deterministic defaults, the same run
# twice ends with the same parameters bit for bit; a run stopped at step
# 150 and resumed from its checkpoint ends bit-identical to the
# uninterrupted 300-step run (FP32 and BF16, across the epoch boundary at
# 234); and the three gradient paths on one process (none, a one-rank NCCL
# communicator with many small buckets, MPI through host memory) give the
# same bits. Skipped without a GPU.
source "$(dirname "$0")/gpu_lib.sh"

run() { # name args...
    local name=$1
    shift
    "$SPOTRUN" train --data "$FM/train" --epochs 2 --max-steps 300 \
        --progress off --device cuda "$@" >"$WORK/$name.out" \
        2>"$WORK/$name.err" || fail "$name: $(tail -n 3 "$WORK/$name.err")"
}

for p in fp32 bf16; do
    run "ref-$p" --precision "$p"
    ref=$(digest "$WORK/ref-$p.out")
    [[ -n $ref ]] || fail "$p: no digest"
    run "again-$p" --precision "$p"
    [[ $(digest "$WORK/again-$p.out") == "$ref" ]] ||
        fail "$p: two identical runs differ"
    ck="$WORK/ck-$p"
    run "stop-$p" --precision "$p" --checkpoint "$ck" --max-steps 150
    run "resume-$p" --precision "$p" --checkpoint "$ck"
    grep -q "resumed from .*: step 150" "$WORK/resume-$p.err" ||
        fail "$p: did not resume at 150: $(grep -E 'resum' "$WORK/resume-$p.err")"
    got=$(digest "$WORK/resume-$p.out")
    [[ $got == "$ref" ]] || fail "$p: resumed $got, uninterrupted $ref"
    pass "GPU $p: deterministic, and stopped at 150 + resumed = uninterrupted ($ref)"
done

ref=$(digest "$WORK/ref-fp32.out")
run nccl --comm nccl --bucket-mb 0.05
grep -q "gradients summed over nccl in [0-9]* bucket" "$WORK/nccl.err" ||
    fail "no NCCL buckets: $(grep cuda "$WORK/nccl.err")"
[[ $(digest "$WORK/nccl.out") == "$ref" ]] || fail "one-rank NCCL path differs"
run host --comm mpi
[[ $(digest "$WORK/host.out") == "$ref" ]] || fail "host-staged path differs"
pass "none, NCCL (small buckets) and host-staged sums agree on one rank"
