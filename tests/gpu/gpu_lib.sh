# gpu_lib.sh: sourced by the GPU test scripts. The integration helpers
# (tests/integration/lib.sh: $WORK, $FM, fail, pass, digest, mpi), then
# exit 77, which ctest reports as skipped, unless the CUDA plugin finds a
# GPU ($GPU_PROBE says why not). The GPU host may have no MPI: one-rank
# runs start spotrun directly (world size 1).
source "$SOURCE_DIR/tests/integration/lib.sh"
: "${GPU_PROBE:?GPU_PROBE must point at the gpu_probe helper}"

if ! "$GPU_PROBE" >"$WORK/probe.txt" 2>&1; then
    cat "$WORK/probe.txt"
    exit 77
fi
cat "$WORK/probe.txt"

# losses NAME: the per-step losses of run NAME, one per line
losses() {
    "$PY" -c 'import json, sys
for l in open(sys.argv[1]): print(json.loads(l)["loss"])' "$WORK/$1.jsonl"
}

# compare_losses A B STEP_TOL TAIL_TOL WHAT: the worst per-step relative
# difference between runs A and B stays within STEP_TOL, and the mean loss
# of their last 20 steps within TAIL_TOL
compare_losses() {
    "$PY" - "$WORK/$1.jsonl" "$WORK/$2.jsonl" "$3" "$4" "$5" <<'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
step_tol, tail_tol, what = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
assert len(a) == len(b) and a, (len(a), len(b))
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
ta, tb = sum(a[-20:]) / len(a[-20:]), sum(b[-20:]) / len(b[-20:])
tail = abs(ta - tb) / abs(tb)
print(f"{what}: worst per-step relative loss difference {worst:.2e} "
      f"(bound {step_tol:g}), last-20 mean {ta:.6f} vs {tb:.6f} "
      f"({tail:.2e}, bound {tail_tol:g})")
assert worst <= step_tol and tail <= tail_tol, what
PY
}
