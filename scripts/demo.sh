#!/usr/bin/env bash
# demo.sh: the main job. Imports Fashion-MNIST (Debian package
# dataset-fashion-mnist) into spotrun shards on local disk, then trains the
# default MLP data-parallel on 2 ranks under mpirun, printing the
# configuration, progress and one metrics line per epoch, and writes the
# model and a metrics file. Run scripts/setup.sh first.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${SPOTRUN_DEMO_DIR:-$PWD/demo}
spotrun=build/spotrun
[[ -x $spotrun ]] || { echo "demo: build/spotrun missing; run scripts/setup.sh" >&2; exit 1; }

if [[ ! -f $out/data/train/index.json || ! -f $out/data/test/index.json ]]; then
    echo "demo: importing Fashion-MNIST into $out/data"
    "$spotrun" data import fashion-mnist --out "$out/data"
fi
"$spotrun" data verify "$out/data/train"

mpi=(mpirun -np 2)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
echo "demo: ${mpi[*]} $spotrun train ..."
rm -f "$out/metrics.jsonl"
"${mpi[@]}" "$spotrun" train \
    --data "$out/data/train" --val-data "$out/data/test" \
    --model-dir "$out/model" --metrics-file "$out/metrics.jsonl"
echo "demo: model in $out/model/model.h5, metrics in $out/metrics.jsonl"
