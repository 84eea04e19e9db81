# gpu_loss_curve.sh: the same 200-step run (Fashion-MNIST, the default
# 784-256-128-10 MLP, AdamW, batch 256) on the CPU and on the GPU in each
# precision follows the same loss curve within the bounds documented in
# docs/ARCHITECTURE.md (GPU backend, tolerances), and the GPU run says it
# used the GPU. Skipped without a GPU.
source "$(dirname "$0")/gpu_lib.sh"

run() { # name args...
    local name=$1
    shift
    "$SPOTRUN" train --data "$FM/train" --max-steps 200 --progress off \
        --step-metrics-file "$WORK/$name.jsonl" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" ||
        fail "$name: $(tail -n 3 "$WORK/$name.err")"
}

run cpu --device cpu
grep -q "backend cpu" "$WORK/cpu.err" || fail "the CPU run did not use the CPU"
# precision, per-step bound, last-20-steps bound
while read -r p step_tol tail_tol; do
    run "$p" --device cuda --precision "$p"
    grep -q "backend cuda" "$WORK/$p.err" ||
        fail "$p: not on the GPU: $(grep -E 'device|backend' "$WORK/$p.err")"
    compare_losses "$p" cpu "$step_tol" "$tail_tol" "GPU $p vs CPU" ||
        fail "GPU $p loss curve outside its bounds"
    pass "GPU $p follows the CPU loss curve"
done <<'BOUNDS'
fp32 1e-3 1e-3
tf32 3e-2 1e-2
bf16 6e-2 2e-2
BOUNDS
