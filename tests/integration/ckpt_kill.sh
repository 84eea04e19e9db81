# ckpt_kill.sh: SIGKILL of the whole job while a checkpoint upload to S3 is
# in flight (the S3 test server slowed down) leaves that checkpoint
# uncommitted; the restart resumes from the previous committed one, which
# verifies, and ends with the same parameters as an uninterrupted run.
source "$(dirname "$0")/lib.sh"
s3_start

# a 10 MB state in 5 MiB parts: a killed client can never complete it
export SPOTRUN_S3_MULTIPART_THRESHOLD=5MiB SPOTRUN_S3_PART_SIZE=5MiB
model=(--data "$FM/train" --epochs 1 --max-steps 150 --hidden 1024 --progress off)
args=("${model[@]}" --checkpoint s3://test/ck --checkpoint-every-steps 50
      --checkpoint-every-epoch false)
mpi 2 train "${model[@]}" >"$WORK/ref.txt" 2>/dev/null || fail "reference run"

setsid "$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 2 \
    "$SPOTRUN" train "${args[@]}" >"$WORK/a.txt" 2>"$WORK/a.err" &
job=$!
for _ in $(seq 300); do
    grep -q 'checkpoint step 50 committed' "$WORK/a.err" && break
    sleep 0.1
done
grep -q 'checkpoint step 50 committed' "$WORK/a.err" || fail "no first checkpoint"
# every request from now on takes 20 s: the next upload hangs. That is
# step 100's, or, when step 50's write outlasted 50 steps, the one taken
# right after it; the step-150 checkpoint then finds it in flight.
s3_faults '{"rate": 1.0, "faults": ["slow"], "slow_ms": 20000}'
in_flight='step (1[0-4][0-9]) is still being written'
for _ in $(seq 300); do
    grep -qE "$in_flight" "$WORK/a.err" && break
    sleep 0.1
done
grep -qE "$in_flight" "$WORK/a.err" ||
    fail "the second upload was not in flight: $(grep checkpoint "$WORK/a.err")"
hung=$(sed -nE "s/.*$in_flight.*/\1/p" "$WORK/a.err" | head -n 1)
# the job is its own session (setsid): kill everything in it at once
pkill -KILL -s "$job" 2>/dev/null || kill -KILL "$job"
wait "$job" 2>/dev/null || true
for _ in $(seq 50); do pgrep -s "$job" >/dev/null || break; sleep 0.1; done
pgrep -s "$job" >/dev/null && fail "processes of the killed job remain: $(pgrep -a -s "$job")"
s3_faults '{"rate": 0}'
pass "killed (SIGKILL) while the step-$hung checkpoint was uploading"

"$SPOTRUN" ckpt ls s3://test/ck >"$WORK/ls.txt"
grep -qE '^50 .* committed' "$WORK/ls.txt" || fail "step 50 lost: $(cat "$WORK/ls.txt")"
if grep -E "^$hung " "$WORK/ls.txt" | grep -qv 'not committed'; then
    fail "step $hung committed after a kill mid-upload"
fi
"$SPOTRUN" ckpt verify s3://test/ck --step 50 >/dev/null || fail "step 50 does not verify"

mpi 2 train "${args[@]}" >"$WORK/b.txt" 2>"$WORK/b.err" ||
    fail "restart: $(tail -n 3 "$WORK/b.err")"
grep -q 'resumed from s3://test/ck/step-0000000050: step 50' "$WORK/b.err" ||
    fail "restart did not resume from step 50: $(grep -iE 'resum|skip' "$WORK/b.err")"
[[ $(digest "$WORK/b.txt") == $(digest "$WORK/ref.txt") ]] ||
    fail "resumed run differs from the uninterrupted one"
pass "restart resumed from the committed step 50 and ended bit-identical"
