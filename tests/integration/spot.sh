# spot.sh: the spot watcher end to end, against the IMDS stand-in
# (tests/imds/imds.py) and the S3 test server:
#   - an instance-action notice stops both ranks, commits a checkpoint, logs
#     the time left before the announced deadline, and exits 75; every
#     metadata GET carried an IMDSv2 token;
#   - a rebalance recommendation under --on-rebalance checkpoint | stop |
#     ignore: an extra checkpoint and the run goes on, exit 75, nothing;
#   - AWS_EC2_METADATA_DISABLED=true: the service is never asked;
#   - more signals while the emergency checkpoint uploads (slowly) do not
#     abort it: still exit 75, and the checkpoint verifies.
source "$(dirname "$0")/lib.sh"
s3_start

IMDS_PID=
imds_start() {
    rm -f "$WORK/imds.port"
    "$PY" "$SOURCE_DIR/tests/imds/imds.py" --port 0 \
        --port-file "$WORK/imds.port" "$@" >"$WORK/imds.log" 2>&1 &
    IMDS_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $WORK/imds.port ]] && break
        sleep 0.1
    done
    [[ -s $WORK/imds.port ]] || fail "IMDS stand-in did not start"
    IMDS="http://127.0.0.1:$(<"$WORK/imds.port")"
}
imds_stop() {
    [[ -n $IMDS_PID ]] && kill "$IMDS_PID" 2>/dev/null && wait "$IMDS_PID" 2>/dev/null
    IMDS_PID=
    return 0
}
trap 'imds_stop; s3_stop; rm -rf "$WORK"' EXIT

# A run long enough to be interrupted: 2 ranks, small batches.
job() {
    local name=$1
    shift
    mpi 2 train --data "$FM/train" --epochs 10 --batch-size 64 \
        --hidden 64 --threads 1 --progress off --spot-poll-seconds 0.2 \
        --checkpoint "s3://test/$name" "$@"
}

# json_count EXPR: count log records matching a Python predicate on r
imds_log_count() {
    curl -sf "$IMDS/__control/log" | "$PY" -c '
import json, sys
log = json.load(sys.stdin)
print(sum(1 for r in log if eval(sys.argv[1])))' "$1"
}

# midrun_checkpoints NAME FINAL: committed checkpoints before step FINAL
midrun_checkpoints() {
    "$SPOTRUN" ckpt ls "s3://test/$1" 2>/dev/null |
        awk -v f="$2" '$1 ~ /^[0-9]+$/ && $1 < f && /committed/ { n++ } END { print n + 0 }'
}

# 1. An instance-action notice, announced 1.5 s into the run, two minutes ahead.
imds_start --instance-action-after 1 --action terminate
rc=0
AWS_EC2_METADATA_SERVICE_ENDPOINT=$IMDS job ia >"$WORK/ia.out" 2>&1 || rc=$?
[[ $rc -eq 75 ]] || { cat "$WORK/ia.out"; fail "instance-action: exit $rc, want 75"; }
grep -q "instance-action" "$WORK/ia.out" || fail "the notice is not named in the log"
left=$(sed -nE 's/.*; ([0-9.]+) s before the announced deadline.*/\1/p' "$WORK/ia.out")
[[ -n $left ]] || { cat "$WORK/ia.out"; fail "no time left before the deadline logged"; }
"$PY" -c "import sys; sys.exit(not 100 < $left <= 120)" ||
    fail "time left before the deadline is $left s, want 100..120"
step=$(sed -nE 's/.*checkpoint of step ([0-9]+) committed.*/\1/p' "$WORK/ia.out")
"$SPOTRUN" ckpt verify "s3://test/ia" >"$WORK/ia.verify" 2>&1 ||
    fail "the emergency checkpoint does not verify: $(cat "$WORK/ia.verify")"
"$SPOTRUN" ckpt ls "s3://test/ia" | grep -qE "(^| )$step( |$)" ||
    fail "no checkpoint of step $step listed"
gets=$(imds_log_count 'r["method"] == "GET"')
untokened=$(imds_log_count 'r["method"] == "GET" and not r["token"]')
puts=$(imds_log_count 'r["method"] == "PUT" and r["path"] == "/latest/api/token"')
rebal=$(imds_log_count '"rebalance" in r["path"]')
[[ $gets -gt 0 && $puts -gt 0 && $rebal -gt 0 ]] ||
    fail "metadata not polled as expected: $gets GETs, $puts token PUTs, $rebal rebalance GETs"
[[ $untokened -eq 0 ]] || fail "$untokened metadata GETs without an IMDSv2 token"
pass "instance-action: exit 75 at step $step, $left s before the deadline; $gets GETs all with tokens ($puts token PUTs)"
imds_stop

# 2. Rebalance recommendations under each policy.
imds_start --rebalance-after 1
rc=0
AWS_EC2_METADATA_SERVICE_ENDPOINT=$IMDS job rb-ck --on-rebalance checkpoint \
    --checkpoint-every-epoch false >"$WORK/rb-ck.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { cat "$WORK/rb-ck.out"; fail "rebalance checkpoint: exit $rc, want 0"; }
grep -q "taking a checkpoint and going on" "$WORK/rb-ck.out" ||
    fail "rebalance checkpoint: no log line"
final=$(sed -nE 's/^done steps=([0-9]+) .*/\1/p' "$WORK/rb-ck.out")
n=$(midrun_checkpoints rb-ck "$final")
[[ $n -eq 1 ]] || { "$SPOTRUN" ckpt ls "s3://test/rb-ck"; fail "rebalance checkpoint: $n checkpoints before the last step, want 1"; }
pass "rebalance=checkpoint: one checkpoint mid-run, and the run finished (step $final)"
imds_stop

imds_start --rebalance-after 1
rc=0
AWS_EC2_METADATA_SERVICE_ENDPOINT=$IMDS job rb-stop --on-rebalance stop \
    >"$WORK/rb-stop.out" 2>&1 || rc=$?
[[ $rc -eq 75 ]] || { cat "$WORK/rb-stop.out"; fail "rebalance stop: exit $rc, want 75"; }
"$SPOTRUN" ckpt verify "s3://test/rb-stop" >/dev/null 2>&1 ||
    fail "rebalance stop: the checkpoint does not verify"
pass "rebalance=stop: exit 75 with a committed checkpoint"

rc=0
AWS_EC2_METADATA_SERVICE_ENDPOINT=$IMDS job rb-ign --on-rebalance ignore \
    --checkpoint-every-epoch false >"$WORK/rb-ign.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { cat "$WORK/rb-ign.out"; fail "rebalance ignore: exit $rc, want 0"; }
grep -qiE "rebalance.*(checkpoint|stopping)" "$WORK/rb-ign.out" &&
    fail "rebalance ignore: the recommendation was acted on"
final=$(sed -nE 's/^done steps=([0-9]+) .*/\1/p' "$WORK/rb-ign.out")
n=$(midrun_checkpoints rb-ign "$final")
[[ $n -eq 0 ]] || fail "rebalance ignore: $n checkpoints before the last step"
pass "rebalance=ignore: no checkpoint before the last step, exit 0"
imds_stop

# 3. AWS_EC2_METADATA_DISABLED: a notice is announced but never asked for.
imds_start --instance-action-after 0
rc=0
AWS_EC2_METADATA_SERVICE_ENDPOINT=$IMDS AWS_EC2_METADATA_DISABLED=true \
    job off --epochs 1 >"$WORK/off.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { cat "$WORK/off.out"; fail "metadata disabled: exit $rc, want 0"; }
asked=$(imds_log_count 'True')
[[ $asked -eq 0 ]] || fail "metadata disabled, yet the service got $asked requests"
pass "AWS_EC2_METADATA_DISABLED=true: the service was never asked"
imds_stop

# 4. Signals again and again while the emergency checkpoint uploads slowly.
mkdir -p "$WORK/sig"
"$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 2 \
    "$SPOTRUN" train --data "$FM/train" --epochs 3 --batch-size 64 \
    --hidden 512,512 --threads 1 --progress off --checkpoint s3://test/sig \
    --checkpoint-every-epoch false >"$WORK/sig.out" 2>&1 &
job_pid=$!
# up to 5 minutes: a sanitizer build on a busy 2-core machine is slow
for ((i = 0; i < 3000; i++)); do
    grep -q "^epoch=1 " "$WORK/sig.out" && break
    kill -0 "$job_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q "^epoch=1 " "$WORK/sig.out" || { cat "$WORK/sig.out"; fail "the run did not reach epoch 1"; }
# every S3 request now waits a second
s3_faults '{"rate": 1.0, "faults": ["slow"], "slow_ms": 1000}'
kill -USR1 "$job_pid"
for ((i = 0; i < 100; i++)); do
    grep -q "received: stopping" "$WORK/sig.out" && break
    sleep 0.05
done
ranks=$(pgrep -f "spotrun train --data $FM/train --epochs 3" | grep -v "^$job_pid$" || true)
[[ $(wc -w <<<"$ranks") -eq 2 ]] || fail "want the 2 rank pids to signal, found: $ranks"
for sig in TERM INT USR2 TERM; do
    sleep 0.3
    kill -"$sig" $ranks 2>/dev/null || true
    kill -USR1 "$job_pid" 2>/dev/null || true
done
rc=0
wait "$job_pid" || rc=$?
s3_faults '{"rate": 0}'
[[ $rc -eq 75 ]] || { cat "$WORK/sig.out"; fail "repeated signals: exit $rc, want 75"; }
grep -q "committed" "$WORK/sig.out" || fail "repeated signals: no commit logged"
"$SPOTRUN" ckpt verify s3://test/sig >"$WORK/sig.verify" 2>&1 ||
    fail "repeated signals: the checkpoint does not verify: $(cat "$WORK/sig.verify")"
pass "signals during a slow emergency checkpoint: exit 75, the checkpoint verifies"
