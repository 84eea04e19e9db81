# sagemaker_local.sh: SageMaker mode on one host in a temp /opt/ml tree:
#   - `spotrun train` as SageMaker starts it (no mpirun around it) becomes
#     the launcher: channel, checkpoint and model paths come from the tree,
#     processes-per-host from the hyperparameters (SDK-encoded strings);
#   - SIGTERM to the launcher mid-run: exit 75, output/failure says why;
#     the restart resumes and ends with the parameters of an uninterrupted
#     run;
#   - broken hyperparameters.json / resourceconfig.json / input mode: a
#     clear error, exit 2, and the reason in output/failure.
source "$(dirname "$0")/../integration/lib.sh"
source "$(dirname "$0")/sm_lib.sh"

HP='{"epochs": "\"4\"", "hidden": "\"64\"", "batch-size": "128",
     "threads": "1", "processes-per-host": "2", "progress": "off",
     "sagemaker_program": "\"train.py\"", "sagemaker_region": "\"us-east-1\""}'

# reference: the same job, uninterrupted, under plain mpirun
mpi 2 train --data "$FM/train" --epochs 4 --hidden 64 --batch-size 128 \
    --threads 1 --progress off >"$WORK/ref.out" 2>&1 ||
    fail "reference run failed: $(tail -5 "$WORK/ref.out")"
ref=$(digest "$WORK/ref.out")

T=$WORK/opt/ml
sm_tree "$T" algo-1 algo-1
export SPOTRUN_SAGEMAKER_ROOT=$T
"$SPOTRUN" train >"$WORK/run1.out" 2>&1 &
pid=$!
stop_with_term "$pid" "$WORK/run1.out" "launcher"
grep -q "SIGUSR1 to" "$WORK/run1.out" || fail "SIGTERM was not turned into SIGUSR1"
grep -q -- "--data $T/input/data/train" "$WORK/run1.out" || fail "train channel not used"
grep -q "interruption" "$T/output/failure" || fail "no reason in output/failure after exit 75"
[[ -z $(pgrep -f "spotrun train --data $T" || true) ]] || fail "ranks left running"
pass "SIGTERM to the launcher: SIGUSR1 to mpirun, exit 75, reason in output/failure"

"$SPOTRUN" train >"$WORK/run2.out" 2>&1 ||
    { cat "$WORK/run2.out"; fail "restart failed"; }
grep -qE "resumed from .*: step [0-9]+," "$WORK/run2.out" ||
    { cat "$WORK/run2.out"; fail "the restart did not resume"; }
got=$(digest "$WORK/run2.out")
[[ $got == "$ref" ]] || fail "resumed run ends with $got, uninterrupted $ref"
[[ -s $T/model/model.h5 ]] || fail "no model in $T/model"
[[ ! -e $T/output/failure ]] || fail "output/failure left after a successful run"
"$SPOTRUN" ckpt verify "$T/checkpoints" >/dev/null || fail "checkpoints do not verify"
pass "restart resumed and matched the uninterrupted run ($ref); model in $T/model"

# bad input: each gives exit 2 and a reason that names the file
bad() {
    local what=$1 file=$2 content=$3 want=$4
    local B=$WORK/bad-$what
    sm_tree "$B" algo-1 algo-1
    printf '%s\n' "$content" >"$B/input/config/$file"
    rm -f "$B/output/failure"
    rc=0
    SPOTRUN_SAGEMAKER_ROOT=$B "$SPOTRUN" train >"$WORK/bad-$what.out" 2>&1 || rc=$?
    [[ $rc -eq 2 ]] || { cat "$WORK/bad-$what.out"; fail "$what: exit $rc, want 2"; }
    [[ -s $B/output/failure ]] || fail "$what: no output/failure"
    grep -qE "$want" "$B/output/failure" ||
        fail "$what: output/failure says '$(cat "$B/output/failure")', want /$want/"
    pass "$what: exit 2, failure: $(head -c 150 "$B/output/failure")"
}
bad malformed-hp hyperparameters.json '{"epochs": "4",' 'hyperparameters.json'
bad unknown-hp hyperparameters.json '{"epoch": "4"}' 'epoch'
bad bad-value hyperparameters.json '{"batch-size": "\"lots\""}' 'batch-size'
bad no-hosts resourceconfig.json '{"current_host": "algo-1", "hosts": []}' 'resourceconfig.json.*hosts'
bad stranger resourceconfig.json '{"current_host": "algo-9", "hosts": ["algo-1"]}' 'algo-9'
bad pipe inputdataconfig.json '{"train": {"TrainingInputMode": "Pipe"}}' 'Pipe'
