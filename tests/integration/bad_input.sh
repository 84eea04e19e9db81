# bad_input.sh: every bad input ends with exit code 2 and one error line
# that names the problem, and nothing is written; so does a run whose loss
# blows up, with exit code 1.
source "$(dirname "$0")/lib.sh"

cp -r "$FM/test" "$WORK/corrupt"
flip_byte "$WORK/corrupt/shard-000000.srs" 5000000
mkdir -p "$WORK/badjson"
echo '{"format": "spotrun-dataset", "version": 1,' >"$WORK/badjson/index.json"

# expect_exit CODE DESCRIPTION PATTERN RANKS ARGS...
expect_exit() {
    local code=$1 what=$2 pattern=$3 n=$4
    shift 4
    set +e
    mpi "$n" train --model-dir "$WORK/out/model" \
        --metrics-file "$WORK/out/metrics.jsonl" --progress off "$@" \
        >"$WORK/o.txt" 2>"$WORK/e.txt"
    local rc=$?
    set -e
    [[ $rc -eq $code ]] ||
        fail "$what: exit $rc, expected $code: $(cat "$WORK/e.txt")"
    local errs
    errs=$(grep -c 'error:' "$WORK/e.txt" || true)
    [[ $errs -eq 1 ]] || fail "$what: $errs error lines: $(cat "$WORK/e.txt")"
    grep -qE -e "$pattern" "$WORK/e.txt" ||
        fail "$what: error does not say '$pattern': $(cat "$WORK/e.txt")"
    [[ ! -e $WORK/out ]] || fail "$what: something was written"
    pass "$what -> exit $code: $(grep 'error:' "$WORK/e.txt" | sed 's/.*error: //')"
}

expect_usage() { expect_exit 2 "$@"; }

expect_usage "missing data" "$WORK/none: no dataset here" 2 \
    --data "$WORK/none"
expect_usage "malformed index" "index.json: not valid JSON" 2 \
    --data "$WORK/badjson"
expect_usage "corrupt shard" "shard-000000.srs: record [0-9]+ at byte [0-9]+: checksum mismatch" 2 \
    --data "$WORK/corrupt"
expect_usage "unknown flag" "unknown option --learning-rate" 2 \
    --data "$FM/test" --learning-rate 0.1
expect_usage "batch not divisible" "--batch-size 256 does not divide by the 3 ranks" 3 \
    --data "$FM/test"
expect_usage "empty hidden" "--hidden needs at least one size" 1 \
    --data "$FM/test" --hidden ""
expect_usage "negative lr" "--lr must be in" 2 --data "$FM/test" --lr -0.1
expect_usage "batch larger than the data" "fewer than one global batch" 1 \
    --data "$FM/test" --batch-size 20000
expect_usage "no data" "--data is required" 1

# a learning rate the loss cannot survive: the run stops at the first
# step whose loss is not finite, on every rank, before the parameters take
# that step, and writes no model and no metrics
expect_exit 1 "diverging loss" \
    "training diverged: the loss of step [0-9]+ \(epoch 1\) is (NaN|infinite) at learning rate" \
    2 --data "$FM/test" --optimizer sgd --lr 10000
