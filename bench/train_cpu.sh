#!/usr/bin/env bash
# train_cpu.sh: CPU training throughput of spotrun against PyTorch (Debian
# python3-torch, same OpenBLAS) on the same MLP, data, optimizer and global
# batch, single process and 2 processes (mpirun vs PyTorch DDP over gloo),
# plus spotrun's GFLOP/s next to OpenBLAS sgemm on the same matrix shapes
# measured in the same run. Prints one table.
#
# Each configuration runs 3 rounds, spotrun and PyTorch alternating, so
# both see the same machine conditions; a round's rate is the median over
# its epochs after the first (warm-up), and a configuration's the median of
# its rounds.
#
# usage: bench/train_cpu.sh [EPOCHS]    (default 5: 1 warm-up + 4 timed)
# BENCH_MIN_RATIO=2.0 makes it exit 1 when a row's ratio is below it.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

epochs=${1:-5}
rounds=3
hidden=256,128
batch=256
threads=$(nproc)
bash scripts/setup.sh --bench >/dev/null
spotrun=$PWD/build/spotrun
sgemm=$PWD/build/bench/sgemm_shapes
work=$(mktemp -d /tmp/spotrun-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$spotrun" data import fashion-mnist --out "$work/fm" 2>/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# median of the samples_per_sec of every epoch after the first
spotrun_rate() {
    grep -E '^epoch=' | tail -n +2 | sed -E 's/.*samples_per_sec=([0-9]+).*/\1/' |
        sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

run_spotrun() { # ranks, threads per rank
    mpirun -np "$1" --bind-to none "$spotrun" train --data "$work/fm/train" \
        --epochs "$epochs" --batch-size $batch --hidden $hidden \
        --threads "$2" --progress off 2>/dev/null | spotrun_rate
}

run_torch() { # processes, threads per process, extra env...
    local procs=$1 t=$2
    shift 2
    env "$@" /usr/bin/python3 bench/torch_mlp.py "$work/fm/train" "$procs" "$t" \
        "$epochs" $hidden $batch 2>/dev/null | sed -E 's/samples_per_sec=([0-9]+).*/\1/'
}

# sgemm ceiling: the step's matrix products, no element-wise work, for
# `procs` concurrent processes of `t` threads each on batch/procs rows
run_sgemm_once() {
    local procs=$1 t=$2 rows=$((batch / $1)) i
    for ((i = 0; i < procs; i++)); do
        "$sgemm" $rows "$t" 3 784 ${hidden//,/ } 10 >"$work/sgemm.$i" &
    done
    wait
    cat "$work"/sgemm.* | sed -E 's/sgemm_gflops=([0-9.]+).*/\1/' |
        awk '{s+=$1} END {printf "%.1f", s}'
    rm -f "$work"/sgemm.*
}

# the higher of OpenBLAS's own threading over the whole batch and one
# single-threaded product per core on a slice of it (what spotrun does)
run_sgemm() {
    local procs=$1 t=$2 a b
    a=$(run_sgemm_once "$procs" "$t")
    b=$(run_sgemm_once $((procs * t)) 1)
    awk -v a="$a" -v b="$b" 'BEGIN {print (a > b) ? a : b}'
}

flops=$(awk -v h=$hidden 'BEGIN {n=split("784," h ",10", d, ","); f=0;
    for (i=1; i<n; i++) { m=d[i]*d[i+1]; f+=4*m; if (i>1) f+=2*m } print f}')
kernel=$("$sgemm" 8 1 0.01 784 16 10 | sed -E 's/.*kernel=([^ ]+).*/\1/')

# measure LABEL RANKS THREADS: alternating rounds of spotrun and PyTorch;
# prints "spotrun_rate torch_rate"
measure() {
    local ranks=$2 t=$3 r s p pb sr="" pr=""
    for ((r = 0; r < rounds; r++)); do
        s=$(run_spotrun "$ranks" "$t")
        if [[ $ranks -eq 1 ]]; then
            # PyTorch's OpenMP pool spinning against OpenBLAS's threads
            # halves it: take the better of its default and a passive wait
            p=$(run_torch 1 "$t")
            pb=$(run_torch 1 "$t" OMP_WAIT_POLICY=PASSIVE)
            ((pb > p)) && p=$pb
        else
            p=$(run_torch "$ranks" "$t")
        fi
        sr+="$s "
        pr+="$p "
    done
    echo "$(median <<<"$sr") $(median <<<"$pr")"
}

row() { # label ranks threads
    local s p g c
    read -r s p < <(measure "$1" "$2" "$3")
    c=$(run_sgemm "$2" "$3")
    g=$(awk -v s="$s" -v f="$flops" 'BEGIN {printf "%.1f", s*f/1e9}')
    awk -v l="$1" -v s="$s" -v p="$p" -v g="$g" -v c="$c" 'BEGIN {
        printf "| %-26s | %9.0f | %9.0f | %5.2f | %7.1f | %7.1f | %5.1f%% |\n",
               l, s, p, s/p, g, c, 100*g/c }'
}

mark=$(cpu_mark)
r1=$(row "1 process x $threads threads" 1 "$threads")
steal1=$(steal_since "$mark")
mark=$(cpu_mark)
r2=$(row "2 processes x 1 thread" 2 1)
steal2=$(steal_since "$mark")

echo
echo "CPU training, MLP 784-${hidden//,/-}-10, global batch $batch, AdamW, Fashion-MNIST"
echo "$(lscpu | sed -nE 's/^Model name: +//p'), $threads cores, OpenBLAS kernel $kernel,"
echo "samples/s: median of $rounds alternating rounds, each the median of epochs 2..$epochs;"
echo "$(awk -v f="$flops" 'BEGIN {printf "%.3f", f/1e6}') MFLOP per sample"
echo
echo "| configuration              | spotrun   | PyTorch   | ratio | spotrun | sgemm   | of     |"
echo "|                            | samples/s | samples/s |       | GFLOP/s | GFLOP/s | sgemm  |"
echo "|----------------------------|-----------|-----------|-------|---------|---------|--------|"
echo "$r1"
echo "$r2"
echo
echo "PyTorch: 1 process = torch.set_num_threads($threads), best of default and"
echo "OMP_WAIT_POLICY=PASSIVE; 2 processes = DistributedDataParallel, gloo."
echo "sgemm: OpenBLAS on the step's own products (forward, dW, dX) with no"
echo "element-wise work: the better of T OpenBLAS threads on the whole batch"
echo "and T concurrent single-threaded products on batch/T rows each."
echo "CPU steal (time the host gave to other guests) while each row ran:"
echo "$steal1% and $steal2%."

if [[ -n ${BENCH_MIN_RATIO:-} ]]; then
    for r in "$r1" "$r2"; do
        ratio=$(awk -F'|' '{print $5}' <<<"$r")
        bench_within "$ratio" ">=" "$BENCH_MIN_RATIO" \
            "ratio $ratio below BENCH_MIN_RATIO=$BENCH_MIN_RATIO" || exit 1
    done
fi
