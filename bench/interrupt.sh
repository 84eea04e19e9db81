#!/usr/bin/env bash
# interrupt.sh: how fast a spot notice becomes a committed checkpoint, and
# a restart becomes training again, for model state (parameters + AdamW
# moments) of about 100 MB and 1 GB, checkpointing to the local S3 test
# server. A 2-rank job trains a few steps, then gets SIGUSR1 through
# mpirun (the notice); spotrun logs the time from the notice to the
# committed emergency checkpoint. The same command then starts again:
# restart -> first step runs from launching mpirun to spotrun's "training
# from step" line, checkpoint download and load included; then it takes the
# next notice. The peer: `aws s3 cp` up- and downloading the same
# checkpoint object. Medians of BENCH_ROUNDS (3) rounds; one table.
#
# usage: bench/interrupt.sh
# Targets: notice -> commit under 10 s for 1 GB; restart -> first step
# under 5 s plus the download time (aws-cli's). BENCH_STRICT=1 makes a
# missed target exit 1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_s3_start interrupt
rounds=${BENCH_ROUNDS:-3}

"$spotrun" data import fashion-mnist --out "$work/fm" >/dev/null

# run_until_notice NAME HIDDEN: start the job, wait until it trains, let it
# do 3 steps, send the notice; sets launch_to_train_s, commit_s, exit_s
run_until_notice() {
    local name=$1 hidden=$2 log=$work/$1.err t0 t_train="" t_notice
    rm -f "$work/$name.rl.rank0" "$work/$name.rl.rank1"
    t0=$EPOCHREALTIME
    setsid mpirun -np 2 --bind-to none "$spotrun" train --data "$work/fm/train" \
        --hidden "$hidden" --batch-size 64 --progress off \
        --checkpoint "s3://bench/$name" --checkpoint-every-epoch false \
        --keep-checkpoints 1 --record-log "$work/$name.rl" \
        >"$work/$name.out" 2>"$log" &
    local job=$!
    while kill -0 "$job" 2>/dev/null; do
        if [[ -z $t_train ]] && grep -q "training from step" "$log"; then
            t_train=$EPOCHREALTIME
        fi
        [[ -n $t_train && -f $work/$name.rl.rank0 ]] &&
            (($(wc -l <"$work/$name.rl.rank0") >= 3)) && break
        sleep 0.01
    done
    [[ -n $t_train ]] || { tail "$log" >&2; echo "interrupt: $name did not start" >&2; exit 1; }
    t_notice=$EPOCHREALTIME
    kill -USR1 "$job"
    local rc=0
    wait "$job" || rc=$?
    [[ $rc -eq 75 ]] || { tail "$log" >&2; echo "interrupt: $name exited $rc, expected 75" >&2; exit 1; }
    launch_to_train_s=$(awk -v a="$t0" -v b="$t_train" 'BEGIN { print b - a }')
    exit_s=$(awk -v a="$t_notice" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
    commit_s=$(sed -nE 's/.*committed ([0-9.]+) s after the first notice.*/\1/p' "$log")
    [[ -n $commit_s ]] || { tail "$log" >&2; exit 1; }
}

sizes=("100 MB:4096,1536" "1 GB:8192,8192,1024")
rows=()
for entry in "${sizes[@]}"; do
    label=${entry%%:*}
    hidden=${entry#*:}
    name=ck-${hidden//,/-}
    commit=() exits=() restart=() read=() aws_up=() aws_down=()
    run_until_notice "$name" "$hidden"          # from step 0
    commit+=("$commit_s") exits+=("$exit_s")
    for ((r = 0; r < rounds; r++)); do
        run_until_notice "$name" "$hidden"      # resumes, then the notice
        restart+=("$launch_to_train_s")
        commit+=("$commit_s") exits+=("$exit_s")
        read+=("$(sed -nE 's/.*found and read in ([0-9.]+) s.*/\1/p' "$work/$name.err")")
        obj=$("${aws[@]}" s3 ls --recursive "s3://bench/$name/" |
            awk '$4 ~ /state\.h5$/ { k = $4; b = $3 } END { print k, b }')
        bytes=${obj#* }
        aws_down+=("$(time_cmd "${aws[@]}" s3 cp --only-show-errors \
            "s3://bench/${obj% *}" "$work/state.h5")")
        aws_up+=("$(time_cmd "${aws[@]}" s3 cp --only-show-errors \
            "$work/state.h5" "s3://bench/aws/state.h5")")
        rm -f "$work/state.h5"
    done
    rows+=("$(awk -v l="$label" -v b="$bytes" -v c="$(median <<<"${commit[*]}")" \
        -v e="$(median <<<"${exits[*]}")" -v au="$(median <<<"${aws_up[*]}")" \
        -v rs="$(median <<<"${restart[*]}")" -v rd="$(median <<<"${read[*]}")" \
        -v ad="$(median <<<"${aws_down[*]}")" 'BEGIN {
        printf "| %-6s | %7.1f MB | %7.2f s | %6.2f s | %6.2f s | %5.2f | %7.2f s | %6.2f s | %6.2f s | %7.2f s |\n",
               l, b / 1e6, c, e, au, c / au, rs, rd, ad, rs - ad }')")
    "${aws[@]}" s3 rm --recursive --only-show-errors "s3://bench/" >/dev/null
done

echo
echo "bench/interrupt.sh: spot notice -> committed checkpoint -> restart, 2 ranks,"
echo "local S3 test server on the same 2-core machine; medians of $rounds rounds"
echo
echo "| state  | checkpoint | notice->commit | ->exit | aws up | ratio | restart->step | ckpt read | aws down | restart-down |"
echo "| ------ | ---------- | -------------- | ------ | ------ | ----- | ------------- | --------- | -------- | ------------ |"
printf '%s\n' "${rows[@]}"
echo
echo "notice->commit: spotrun's log, the first notice on any rank to the committed"
echo "manifest (waiting for the step in progress included); ->exit: the notice to"
echo "mpirun's exit. aws up/down: \`aws s3 cp\` of the same checkpoint object; ratio:"
echo "notice->commit / aws up. restart->step: launching mpirun to the first"
echo "training step, the checkpoint's download, verification and load included."
echo "Targets: notice->commit < 10 s at 1 GB; restart->step - aws down < 5 s."

missed=$(printf '%s\n' "${rows[@]}" | awk -F'|' '
    { gsub(/ s/, ""); if ($2 ~ /1 GB/ && $4 + 0 >= 10) m++; if ($11 + 0 >= 5) m++ }
    END { print m + 0 }')
echo "targets missed: $missed"
[[ ${BENCH_STRICT:-0} == 1 && $missed -gt 0 ]] && exit 1
exit 0
