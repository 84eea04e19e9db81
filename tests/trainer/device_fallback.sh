# device_fallback.sh: choosing the backend. Where no GPU is usable (this
# build has no plugin, there is no NVIDIA driver or device, or
# $SPOTRUN_CUDA_PLUGIN names a missing file or one that is not a shared
# object), --device auto trains on the CPU with exactly one log line saying
# why, and ends bit-identical to --device cpu; --device cuda stops with
# exit 2 and that reason. On a host with a GPU, --device auto uses it.
source "$SOURCE_DIR/tests/integration/lib.sh"
: "${GPU_PROBE:?GPU_PROBE must point at the gpu_probe helper}"

have_gpu=0
"$GPU_PROBE" >"$WORK/probe.txt" 2>&1 && have_gpu=1
cat "$WORK/probe.txt"
# from here on the binary's own search (next to itself), not the tests'
# override
unset SPOTRUN_CUDA_PLUGIN

train() { # name args...: a few steps; stdout and stderr kept
    local name=$1
    shift
    "$SPOTRUN" train --data "$FM/train" --max-steps 3 --progress off "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err"
}

# fallback NAME WHAT: run NAME fell back to the CPU with one line naming
# WHAT, and ended where the CPU run did
fallback() {
    local name=$1 what=$2 lines
    lines=$(grep -c 'device auto:' "$WORK/$name.err" || true)
    [[ $lines -eq 1 ]] || fail "$name: $lines 'device auto' lines: $(cat "$WORK/$name.err")"
    grep -q "device auto: no usable GPU: .*$what.*; training on the CPU" \
        "$WORK/$name.err" || fail "$name: reason lacks '$what': $(grep 'device auto' "$WORK/$name.err")"
    grep -q "backend cpu" "$WORK/$name.err" || fail "$name: not on the CPU"
    [[ $(digest "$WORK/$name.out") == "$cpu" ]] ||
        fail "$name: CPU fallback ended elsewhere than --device cpu"
    pass "$name: $(grep -o 'device auto: .*' "$WORK/$name.err")"
}

train cpu --device cpu || fail "--device cpu: $(tail -n 3 "$WORK/cpu.err")"
cpu=$(digest "$WORK/cpu.out")
[[ -n $cpu ]] || fail "--device cpu printed no digest"
! grep -q 'device auto' "$WORK/cpu.err" || fail "--device cpu mentioned auto"

train auto || fail "--device auto: $(tail -n 3 "$WORK/auto.err")"
set +e
train cuda --device cuda
rc=$?
set -e
if [[ $have_gpu -eq 1 ]]; then
    grep -q "backend cuda" "$WORK/auto.err" || fail "auto did not use the GPU"
    [[ $rc -eq 0 ]] || fail "--device cuda on a GPU host: $(tail -n 3 "$WORK/cuda.err")"
    pass "GPU host: --device auto and --device cuda train on the GPU"
else
    fallback auto 'NVIDIA driver\|CUDA\|libspotrun_cuda.so not found'
    [[ $rc -eq 2 ]] || fail "--device cuda without a GPU exited $rc, not 2"
    grep -q "error: --device cuda: no usable GPU: " "$WORK/cuda.err" ||
        fail "--device cuda: unclear error: $(tail -n 2 "$WORK/cuda.err")"
    pass "--device cuda without a GPU: exit 2, $(grep -o 'error: .*' "$WORK/cuda.err")"
fi

SPOTRUN_CUDA_PLUGIN=/nonexistent/libspotrun_cuda.so train missing ||
    fail "missing plugin: $(tail -n 3 "$WORK/missing.err")"
fallback missing "cannot load /nonexistent/libspotrun_cuda.so"

printf 'not a shared object, only text that claims to be one\n%.0s' {1..4} \
    >"$WORK/libspotrun_cuda.so"
SPOTRUN_CUDA_PLUGIN=$WORK/libspotrun_cuda.so train corrupt ||
    fail "corrupt plugin: $(tail -n 3 "$WORK/corrupt.err")"
fallback corrupt "ELF"

set +e
SPOTRUN_CUDA_PLUGIN=/nonexistent/libspotrun_cuda.so train missing-cuda \
    --device cuda
rc=$?
set -e
[[ $rc -eq 2 ]] || fail "--device cuda with a missing plugin exited $rc"
grep -q "error: --device cuda: no usable GPU: cannot load /nonexistent/" \
    "$WORK/missing-cuda.err" || fail "unclear: $(tail -n 2 "$WORK/missing-cuda.err")"
pass "--device cuda with a missing plugin: exit 2 naming the path"
