#!/usr/bin/env bash
# s3_transfer.sh: upload and download throughput of `spotrun cp` against
# `aws s3 cp` (Debian's AWS CLI) on the same 1 GiB object set, both
# against the local S3 test server (SigV4-verifying s3rver on loopback).
# Each transfer runs 3 times per tool, alternating; the table shows the
# median MB/s and the ratio spotrun / aws-cli for each object set.
#
# usage: bench/s3_transfer.sh [NxMIB ...]   (default: 16x64 4x256, two
# 1 GiB sets: shard-sized objects, and objects large enough for multipart)
# BENCH_MIN_DOWNLOAD_RATIO / BENCH_MIN_UPLOAD_RATIO make it exit 1 when a
# row is below.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sets=${*:-16x64 4x256}
bench_s3_start s3bench

median_mbs() { # bytes "t1 t2 t3" -> MB/s of the median time
    tr ' ' '\n' <<<"$2" | grep . | sort -n | awk -v b="$1" \
        '{v[NR]=$1} END {printf "%.0f", b / v[int((NR+1)/2)] / 1e6}'
}

# bench_set OBJECTS MIB: 3 alternating rounds per tool; prints 2 rows
bench_set() {
    local objects=$1 mib=$2 i round tool dst up down
    rm -rf "$work/src"
    mkdir -p "$work/src"
    for i in $(seq -w 1 "$objects"); do
        head -c $((mib << 20)) /dev/urandom >"$work/src/obj-$i"
    done
    local bytes=$((objects * (mib << 20)))
    declare -A runs=()
    for round in 1 2 3; do
        for tool in spotrun aws; do
            dst=s3://bench/$tool-$round
            if [[ $tool == spotrun ]]; then
                up=$(time_cmd "$spotrun" cp --recursive --jobs 4 "$work/src" "$dst")
                down=$(time_cmd "$spotrun" cp --recursive --jobs 4 "$dst" "$work/down")
            else
                up=$(time_cmd "${aws[@]}" s3 cp --recursive --only-show-errors "$work/src" "$dst")
                down=$(time_cmd "${aws[@]}" s3 cp --recursive --only-show-errors "$dst" "$work/down")
            fi
            diff -rq "$work/src" "$work/down" >/dev/null ||
                { echo "$tool round $round: downloaded bytes differ" >&2; exit 1; }
            rm -rf "$work/down"
            "${aws[@]}" s3 rm --recursive --only-show-errors "$dst" >/dev/null
            runs[$tool-up]+="$up "
            runs[$tool-down]+="$down "
        done
    done
    local label="$objects x $mib MiB"
    local sd ad su au
    sd=$(median_mbs $bytes "${runs[spotrun-down]}")
    ad=$(median_mbs $bytes "${runs[aws-down]}")
    su=$(median_mbs $bytes "${runs[spotrun-up]}")
    au=$(median_mbs $bytes "${runs[aws-up]}")
    awk -v l="$label" -v s="$sd" -v a="$ad" 'BEGIN {printf "| %-13s | download  | %10d | %10d | %5.2f |\n", l, s, a, s/a}'
    awk -v l="$label" -v s="$su" -v a="$au" 'BEGIN {printf "| %-13s | upload    | %10d | %10d | %5.2f |\n", l, s, a, s/a}'
    echo "$label: seconds spotrun up ${runs[spotrun-up]}/ down ${runs[spotrun-down]}; aws up ${runs[aws-up]}/ down ${runs[aws-down]}" >>"$work/times"
}

rows=()
for set in $sets; do
    rows+=("$(bench_set "${set%x*}" "${set#*x}")")
done

echo
echo "S3 transfer against the local S3 test server (s3rver + SigV4 verification,"
echo "node, on the same 2-core machine); MB/s of the median of 3 runs"
echo
echo "| object set    | direction | spotrun cp | aws s3 cp  | ratio |"
echo "|---------------|-----------|------------|------------|-------|"
printf '%s\n' "${rows[@]}"
echo
echo "spotrun cp: 4 objects at once; objects up to 64 MiB as one PutObject, larger"
echo "ones in 8 MiB parts, 8 in flight; reads as 8 MiB ranged GETs, 8 in flight."
echo "$(/usr/bin/aws --version 2>&1 | cut -d' ' -f1) s3 cp: defaults (10 requests, multipart above 8 MiB, 8 MiB parts)."
cat "$work/times"

for r in "${rows[@]}"; do
    dir=$(awk -F'|' '{gsub(/ /, "", $3); print $3}' <<<"$r")
    ratio=$(awk -F'|' '{print $6}' <<<"$r")
    min=
    [[ $dir == download ]] && min=${BENCH_MIN_DOWNLOAD_RATIO:-}
    [[ $dir == upload ]] && min=${BENCH_MIN_UPLOAD_RATIO:-}
    [[ -z $min ]] && continue
    bench_within "$ratio" ">=" "$min" "$dir ratio $ratio below $min" || exit 1
done
