#!/usr/bin/env bash
# checkpoint.sh: the cost of a checkpoint to S3 (the local S3 test server)
# for model state (parameters + AdamW moments) of about 10 MB, 100 MB and
# 1 GB: the time training stalls per checkpoint in background mode next to
# a synchronous write + upload, and spotrun's upload MB/s next to
# `aws s3 cp` of the same bytes. Medians of 3 rounds; one table.
#
# usage: bench/checkpoint.sh
# BENCH_MAX_STALL_SHARE (e.g. 0.05) makes it exit 1 when a stall exceeds
# that share of the synchronous time.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_s3_start ckbench
ckb=$PWD/build/bench/ckpt_bench

# hidden layers giving about 10 MB, 100 MB and 1 GB of state (12 bytes per
# parameter: the parameter and two AdamW moments)
sizes=("10 MB:1024" "100 MB:4096,1536" "1 GB:8192,8192,1024")
rows=()
for entry in "${sizes[@]}"; do
    label=${entry%%:*}
    hidden=${entry#*:}
    line=$("$ckb" "s3://bench/ck-${hidden//,/-}" "$hidden" "$work/image.h5" 3)
    val() { sed -nE "s/.*(^| )$1=([^ ]+).*/\2/p" <<<"$line"; }
    state=$(val state_bytes)
    image=$(val image_bytes)
    ts=()
    for _ in 1 2 3; do
        t0=$(date +%s.%N)
        "${aws[@]}" s3 cp --only-show-errors \
            "$work/image.h5" "s3://bench/aws-${hidden//,/-}.h5"
        t1=$(date +%s.%N)
        ts+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
    done
    aws_s=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n 2p)
    rows+=("$(awk -v l="$label" -v st="$state" -v p="$(val params)" \
        -v stall="$(val stall_s)" -v sync="$(val sync_s)" -v up="$(val upload_mbps)" \
        -v img="$image" -v a="$aws_s" 'BEGIN {
        am = img / a / 1e6
        printf "| %-6s | %6.1f MB | %6.2fM | %9.1f ms | %8.2f s | %6.2f%% | %8.0f | %8.0f | %5.2f |\n",
               l, st / 1e6, p / 1e6, stall * 1e3, sync, 100 * stall / sync, up, am, up / am }')")
    rm -f "$work/image.h5"
done

echo
echo "Checkpoints to the local S3 test server (s3rver + SigV4 verification, node,"
echo "same 2-core machine); medians of 3 rounds"
echo
echo "| state  | bytes     | params  | stall (bg)   | sync      | stall/ | spotrun  | aws s3   | ratio |"
echo "|        |           |         | per ckpt     | write+up  | sync   | up MB/s  | cp MB/s  |       |"
echo "|--------|-----------|---------|--------------|-----------|--------|----------|----------|-------|"
printf '%s\n' "${rows[@]}"
echo
echo "stall: copying parameters and optimizer state into the snapshot buffers,"
echo "the only time the loop waits in background mode. sync: snapshot + HDF5"
echo "image + upload + manifest. upload: the finished image through the storage"
echo "layer (one PutObject up to 64 MiB, else 8 MiB parts, 8 in flight) vs"
echo "aws s3 cp of the same file (multipart above 8 MiB)."

if [[ -n ${BENCH_MAX_STALL_SHARE:-} ]]; then
    for r in "${rows[@]}"; do
        share=$(awk -F'|' '{gsub(/[ %]/, "", $7); print $7 / 100}' <<<"$r")
        bench_within "$share" "<=" "$BENCH_MAX_STALL_SHARE" \
            "stall share $share above $BENCH_MAX_STALL_SHARE" || exit 1
    done
fi
