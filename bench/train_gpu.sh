#!/usr/bin/env bash
# train_gpu.sh: GPU training throughput of spotrun against PyTorch eager on
# one GPU: a wide MLP (784-4096-4096-4096-4096-10), global batch 4096,
# AdamW, Fashion-MNIST, in FP32 (TF32 off on both sides) and BF16 (BF16
# products, FP32 master weights: spotrun --precision bf16, PyTorch
# autocast). For each: samples/s of both and their ratio, the TFLOP/s both
# achieve against the GPU's peak for that precision, and spotrun's gradient
# all-reduce time per step (a one-rank NCCL communicator, --comm nccl, so
# the bucketed path runs as with more GPUs) with the part the backward did
# not hide. Prints one table.
#
# Each precision runs 3 rounds, spotrun and PyTorch alternating; a round's
# rate is the median over its epochs after the warm-up, a precision's the
# median of its rounds. Runs a single process (no mpirun needed).
#
# usage: bench/train_gpu.sh [EPOCHS]    (default 22: 2 warm-up + 20 timed)
# BENCH_PRECISIONS ("fp32 bf16"; tf32 too), BENCH_ROUNDS (3),
# BENCH_PEAK_FP32/_TF32/_BF16 (dense TFLOP/s, when the GPU is not in the
# table below), SPOTRUN_BUILD (build), FASHION_MNIST_DIR (IDX .gz files when
# the Debian dataset package is absent; without either, random data of the
# same shape). BENCH_MIN_RATIO=1.0 makes it exit 1 when a row's ratio is
# below it.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

epochs=${1:-22}
warmup=2
rounds=${BENCH_ROUNDS:-3}
precisions=${BENCH_PRECISIONS:-fp32 bf16}
hidden=4096,4096,4096,4096
batch=4096
build=${SPOTRUN_BUILD:-build}
py=${PYTHON:-python3}

command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 ||
    { echo "train_gpu.sh: no NVIDIA GPU here (nvidia-smi -L failed)" >&2; exit 2; }
"$py" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null ||
    { echo "train_gpu.sh: $py has no CUDA-enabled PyTorch" >&2; exit 2; }
if [[ ! -x $build/spotrun || ! -f $build/libspotrun_cuda.so ]]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSPOTRUN_ENABLE_CUDA=ON \
        -DSPOTRUN_BUILD_TESTS=OFF >/dev/null
    cmake --build "$build" -j "$(nproc)" --target spotrun spotrun_cuda >/dev/null
fi
spotrun=$PWD/$build/spotrun
work=$(mktemp -d /tmp/spotrun-gpubench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# the data: Fashion-MNIST, or random records of its shape
if [[ -d /usr/share/datasets/fashion-mnist || -n ${FASHION_MNIST_DIR:-} ]]; then
    "$spotrun" data import fashion-mnist --out "$work/fm" \
        ${FASHION_MNIST_DIR:+--source "$FASHION_MNIST_DIR"} 2>/dev/null
    data="Fashion-MNIST"
else
    "$py" - "$work" <<'PY'
import struct, sys
import numpy as np
rng = np.random.default_rng(0)
n = 60000
x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
y = (x.reshape(n, -1)[:, ::97].sum(axis=1) % 10).astype(np.uint8)
with open(f"{sys.argv[1]}/x.idx", "wb") as f:
    f.write(struct.pack(">iiii", 0x803, n, 28, 28) + x.tobytes())
with open(f"{sys.argv[1]}/y.idx", "wb") as f:
    f.write(struct.pack(">ii", 0x801, n) + y.tobytes())
PY
    "$spotrun" data make --from idx --x "$work/x.idx" --y "$work/y.idx" \
        --classes 10 --scale 0.00392156862745098 --out "$work/fm/train" \
        2>/dev/null
    data="random records of Fashion-MNIST's shape (60000 x 784 bytes)"
fi

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)

# dense peak TFLOP/s by precision for the GPUs spotrun targets
peak() { # precision
    local p=$1 v=
    case $p in
    fp32) v=${BENCH_PEAK_FP32:-} ;;
    tf32) v=${BENCH_PEAK_TF32:-} ;;
    bf16) v=${BENCH_PEAK_BF16:-} ;;
    esac
    if [[ -z $v ]]; then
        case $gpu in
        *H100*PCIe*) v=$(sed -n "s/^$p //p" <<<$'fp32 51.2\ntf32 378\nbf16 756') ;;
        *H100*NVL*) v=$(sed -n "s/^$p //p" <<<$'fp32 60\ntf32 418\nbf16 835') ;;
        *H100* | *H200* | *GH200*) v=$(sed -n "s/^$p //p" <<<$'fp32 67\ntf32 494.7\nbf16 989.4') ;;
        *A100*) v=$(sed -n "s/^$p //p" <<<$'fp32 19.5\ntf32 156\nbf16 312') ;;
        *L40S*) v=$(sed -n "s/^$p //p" <<<$'fp32 91.6\ntf32 183\nbf16 362') ;;
        *A10G*) v=$(sed -n "s/^$p //p" <<<$'fp32 31.2\ntf32 62.5\nbf16 125') ;;
        *L4*) v=$(sed -n "s/^$p //p" <<<$'fp32 30.3\ntf32 60\nbf16 121') ;;
        esac
    fi
    echo "${v:-0}"
}

# FLOP per sample of a training step: forward 2mk, weight gradient 2mk,
# input gradient 2mk except for the first layer
flops=$(awk -v h=$hidden 'BEGIN {n=split("784," h ",10", d, ","); f=0;
    for (i=1; i<n; i++) { m=d[i]*d[i+1]; f+=4*m; if (i>1) f+=2*m } print f}')

# run_spotrun PRECISION: "samples/s allreduce_ms exposed_ms"
run_spotrun() {
    "$spotrun" train --data "$work/fm/train" --epochs "$epochs" \
        --batch-size $batch --hidden $hidden --device cuda --precision "$1" \
        --comm nccl --progress off >"$work/s.out" 2>"$work/s.err" ||
        { tail -n 5 "$work/s.err" >&2; exit 1; }
    local rate ar ex
    rate=$(grep -E '^epoch=' "$work/s.out" | tail -n +$((warmup + 1)) |
        sed -E 's/.*samples_per_sec=([0-9]+).*/\1/' | median)
    ar=$(sed -nE 's/.*gradient all-reduce ([0-9.]+) ms per step.*/\1/p' "$work/s.err")
    ex=$(sed -nE 's/.*, ([0-9.]+) ms of it after the backward.*/\1/p' "$work/s.err")
    echo "$rate ${ar:-nan} ${ex:-nan}"
}

run_torch() { # precision
    "$py" bench/torch_mlp_gpu.py "$work/fm/train" "$epochs" $warmup $hidden \
        $batch "$1" 2>"$work/t.err" | sed -E 's/samples_per_sec=([0-9]+).*/\1/' ||
        { tail -n 5 "$work/t.err" >&2; exit 1; }
}

rows=()
ratios=()
for p in $precisions; do
    sr="" pr="" ars="" exs=""
    for ((r = 0; r < rounds; r++)); do
        read -r s ar ex < <(run_spotrun "$p")
        t=$(run_torch "$p")
        [[ -n $s && -n $t ]] || { echo "train_gpu.sh: a $p round gave no rate" >&2; exit 1; }
        sr+="$s " pr+="$t " ars+="$ar " exs+="$ex "
    done
    s=$(median <<<"$sr") t=$(median <<<"$pr")
    ar=$(median <<<"$ars") ex=$(median <<<"$exs")
    pk=$(peak "$p")
    ratios+=("$(awk -v s="$s" -v t="$t" 'BEGIN {printf "%.3f", s / t}')")
    rows+=("$(awk -v p="$p" -v s="$s" -v t="$t" -v f="$flops" -v pk="$pk" \
        -v ar="$ar" -v ex="$ex" 'BEGIN {
        ts = s * f / 1e12; tt = t * f / 1e12
        of = pk > 0 ? sprintf("%5.1f%%", 100 * ts / pk) : "  n/a "
        printf "| %-9s | %9.0f | %9.0f | %5.2f | %7.1f | %7.1f | %7s | %7s | %8.3f | %8.3f |\n",
               p, s, t, s / t, ts, tt, (pk > 0 ? pk : "n/a"), of, ar, ex }')")
done

echo
echo "GPU training, MLP 784-${hidden//,/-}-10, global batch $batch, AdamW, one process"
echo "$gpu (driver $driver), spotrun $("$spotrun" --version 2>/dev/null | head -n 1),"
echo "PyTorch $("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
echo "data: $data"
echo "samples/s: median of $rounds alternating rounds, each the median of epochs $((warmup + 1))..$epochs;"
echo "$(awk -v f="$flops" 'BEGIN {printf "%.1f", f / 1e6}') MFLOP per sample"
echo
echo "| precision | spotrun   | PyTorch   | ratio | spotrun | PyTorch | peak    | spotrun | all-     | exposed  |"
echo "|           | samples/s | samples/s |       | TFLOP/s | TFLOP/s | TFLOP/s | of peak | reduce ms| ms/step  |"
echo "|-----------|-----------|-----------|-------|---------|---------|---------|---------|----------|----------|"
printf '%s\n' "${rows[@]}"
echo
echo "peak: dense tensor-core TFLOP/s for tf32/bf16, CUDA-core for fp32, from the"
echo "GPU's data sheet (BENCH_PEAK_* override). all-reduce: NCCL time per step over"
echo "spotrun's gradient buckets (one rank, so a device copy: the cost of the"
echo "path, not of a network); exposed: the part after the backward ended."
echo "PyTorch: eager, torch.optim.AdamW (default foreach), autocast for bf16,"
echo "batches gathered on the host and copied from page-locked memory."

if [[ -n ${BENCH_MIN_RATIO:-} ]]; then
    for r in "${ratios[@]}"; do
        bench_within "$r" ">=" "$BENCH_MIN_RATIO" \
            "ratio $r below BENCH_MIN_RATIO=$BENCH_MIN_RATIO" || exit 1
    done
fi
