# sagemaker_cluster.sh: SageMaker mode on a two-host cluster of network
# namespaces (sm_lib.sh), each host with its own address, hostname and
# /opt/ml tree, started the way SageMaker starts them (`IMAGE train`):
#   - algo-1 leads: it waits for algo-2's sshd, runs mpirun over both hosts
#     on eth0; algo-2 serves as the MPI worker and exits 0 when the job is
#     over; the result equals 2 ranks on one host, bit for bit;
#   - SIGTERM to the leader mid-run: exit 75 on the leader, the worker
#     exits, and a restart of both resumes from the leader's checkpoint to
#     the same final parameters.
source "$(dirname "$0")/../integration/lib.sh"
source "$(dirname "$0")/sm_lib.sh"
cluster_up

HP='{"epochs": "4", "hidden": "\"64\"", "batch-size": "128", "threads": "1",
     "processes-per-host": "1", "progress": "off"}'
mpi 2 train --data "$FM/train" --epochs 4 --hidden 64 --batch-size 128 \
    --threads 1 --progress off >"$WORK/ref.out" 2>&1 ||
    fail "reference run failed: $(tail -5 "$WORK/ref.out")"
ref=$(digest "$WORK/ref.out")

sm_tree "$WORK/a" algo-1 algo-1 algo-2
sm_tree "$WORK/b" algo-2 algo-1 algo-2
# the trees hold their own paths: rewrite the checkpoint path to the
# mount point every host sees as its root
sed -i "s#$WORK/a/checkpoints#$WORK/ml/checkpoints#" "$WORK/a/input/config/checkpointconfig.json"
sed -i "s#$WORK/b/checkpoints#$WORK/ml/checkpoints#" "$WORK/b/input/config/checkpointconfig.json"

# start_cluster RUN: both hosts in the background; leader pid in LEADER
start_cluster() {
    on_host b algo-2 "$WORK/b" "$SPOTRUN" train >"$WORK/$1.b" 2>&1 &
    WORKER=$!
    on_host a algo-1 "$WORK/a" "$SPOTRUN" train >"$WORK/$1.a" 2>&1 &
    LEADER=$!
}

# 1. a whole run
start_cluster run0
rc=0
wait "$LEADER" || rc=$?
[[ $rc -eq 0 ]] || { cat "$WORK/run0.a" "$WORK/run0.b"; fail "cluster run: leader exit $rc"; }
wrc=0
wait "$WORKER" || wrc=$?
[[ $wrc -eq 0 ]] || { cat "$WORK/run0.b"; fail "cluster run: worker exit $wrc"; }
grep -q -- "--host algo-1:1,algo-2:1" "$WORK/run0.a" || fail "mpirun did not span both hosts"
grep -q "oob_tcp_if_include eth0" "$WORK/run0.a" || fail "network interface not passed"
grep -q "daemon started on this host" "$WORK/run0.b" || fail "no MPI daemon ran on algo-2"
got=$(digest "$WORK/run0.a")
[[ $got == "$ref" ]] || fail "two hosts end with $got, one host with 2 ranks $ref"
[[ -s $WORK/a/model/model.h5 ]] || fail "no model on the leader"
pass "two hosts: worker served and exited 0; parameters equal 2 ranks on one host ($ref)"

# 2. SIGTERM to the leader, then a restart of both
rm -rf "$WORK/a/checkpoints" "$WORK/a/model" "$WORK/a/output"
start_cluster run1
stop_with_term "$LEADER" "$WORK/run1.a" "leader"
wrc=0
wait "$WORKER" || wrc=$?
[[ $wrc -eq 0 ]] || { cat "$WORK/run1.b"; fail "after SIGTERM: worker exit $wrc"; }
grep -q "interruption" "$WORK/a/output/failure" || fail "no reason in the leader's output/failure"
step=$(sed -nE 's/.*checkpoint of step ([0-9]+) committed.*/\1/p' "$WORK/run1.a")
[[ -n $step ]] || fail "no emergency checkpoint logged"
pass "SIGTERM to the leader: exit 75 after the checkpoint of step $step; worker exit 0"

start_cluster run2
rc=0
wait "$LEADER" || rc=$?
wait "$WORKER" || true
[[ $rc -eq 0 ]] || { cat "$WORK/run2.a"; fail "restart: leader exit $rc"; }
grep -qE "resumed from .*: step $step," "$WORK/run2.a" || { cat "$WORK/run2.a"; fail "the restart did not resume from step $step"; }
got=$(digest "$WORK/run2.a")
[[ $got == "$ref" ]] || fail "resumed cluster run ends with $got, uninterrupted $ref"
pass "restart of both hosts resumed from step $step and matched ($ref)"
