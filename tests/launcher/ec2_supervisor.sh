# ec2_supervisor.sh: `spotrun launch --discover CMD` on a two-host cluster
# of network namespaces (sm_lib.sh), as on EC2 spot nodes reached by ssh:
#   - a spot notice reaches the rank on algo-2 (SIGUSR1) while discovery
#     stops listing algo-2: the job exits 75, the supervisor starts it again
#     on algo-1 alone, which resumes with world size 1 (same global batch)
#     and finishes;
#   - algo-2 vanishes (every process on it killed) without notice: mpirun
#     fails, the supervisor sees the host gone, restarts on algo-1 from the
#     last checkpoint and finishes;
#   - SIGTERM to the supervisor: exit 75, no restart.
source "$(dirname "$0")/../integration/lib.sh"
source "$(dirname "$0")/sm_lib.sh"
cluster_up

# keys and sshd on algo-2, as the cluster's own setup would provide
mkdir -p "$WORK/ssh" "$WORK/empty" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id_ed25519"
cp "$WORK/ssh/id_ed25519.pub" "$WORK/ssh/authorized_keys"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/ssh_host_ed25519_key"
start_sshd() {
    on_host b algo-2 "$WORK/empty" /usr/sbin/sshd -D -e -f /dev/null -p 22 \
        -h "$WORK/ssh/ssh_host_ed25519_key" \
        -o AuthorizedKeysFile="$WORK/ssh/authorized_keys" \
        -o PermitRootLogin=prohibit-password -o StrictModes=no \
        -o UsePAM=no -o PidFile=none >>"$WORK/sshd.log" 2>&1 &
}

TRAIN=(--data "$FM/train" --epochs 4 --hidden 64 --batch-size 128
       --threads 1 --progress off)
# supervise NAME: the supervisor on algo-1 in the background (pid in SUP)
supervise() {
    on_host a algo-1 "$WORK/empty" "$SPOTRUN" launch \
        --discover "cat $WORK/hostlist" --min-hosts 1 --restart-delay 1 \
        --max-restarts 3 -- "${TRAIN[@]}" --checkpoint "$WORK/$1" \
        >"$WORK/$1.out" 2>&1 &
    SUP=$!
}
# on_b_pids COMM: pids named COMM on algo-2
on_b_pids() {
    local p
    for p in $(ip netns pids "$TAG-b"); do
        [[ $(cat /proc/$p/comm 2>/dev/null) == "$1" ]] && echo "$p"
    done
    return 0
}
total=$(( 60000 / 128 * 4 ))

# 1. a notice on algo-2 while it leaves the host list
start_sshd
printf 'algo-1:1\nalgo-2:1\n' >"$WORK/hostlist"
supervise notice
wait_for "$WORK/notice.out" '^epoch=1 '
printf 'algo-1:1\n' >"$WORK/hostlist"
kill -USR1 $(on_b_pids spotrun)
rc=0
wait "$SUP" || rc=$?
[[ $rc -eq 0 ]] || { cat "$WORK/notice.out"; fail "notice: supervisor exit $rc, want 0"; }
grep -q "run 1: 2 host(s), 2 rank(s)" "$WORK/notice.out" || { cat "$WORK/notice.out"; fail "first run was not on 2 hosts"; }
grep -q "interrupted (exit 75): starting again" "$WORK/notice.out" || { cat "$WORK/notice.out"; fail "no restart after exit 75"; }
grep -q "run 2: 1 host(s), 1 rank(s): algo-1:1" "$WORK/notice.out" || { cat "$WORK/notice.out"; fail "second run was not on algo-1 alone"; }
grep -q "world size changed" "$WORK/notice.out" || { cat "$WORK/notice.out"; fail "the second run did not resume with the new world size"; }
grep -q "^done steps=$total " "$WORK/notice.out" || { cat "$WORK/notice.out"; fail "the run did not finish all $total steps"; }
pass "notice on algo-2: exit 75, restarted on algo-1 alone, resumed with world size 1, finished $total steps"

# 2. algo-2 lost without notice
printf 'algo-1:1\nalgo-2:1\n' >"$WORK/hostlist"
supervise lost
wait_for "$WORK/lost.out" 'checkpoint step [0-9]+ committed'
printf 'algo-1:1\n' >"$WORK/hostlist"
for p in $(ip netns pids "$TAG-b"); do kill -9 "$p" 2>/dev/null || true; done
rc=0
wait "$SUP" || rc=$?
[[ $rc -eq 0 ]] || { cat "$WORK/lost.out"; fail "lost host: supervisor exit $rc, want 0"; }
grep -q "a host was lost: starting again" "$WORK/lost.out" || { cat "$WORK/lost.out"; fail "no restart after losing algo-2"; }
grep -q "world size changed" "$WORK/lost.out" || fail "no resume after losing algo-2"
grep -q "^done steps=$total " "$WORK/lost.out" || fail "the run did not finish after losing algo-2"
pass "algo-2 lost: restarted on algo-1 from the last checkpoint and finished"

# 3. SIGTERM to the supervisor: the job checkpoints, no restart
start_sshd
printf 'algo-1:1\nalgo-2:1\n' >"$WORK/hostlist"
supervise term
stop_with_term "$SUP" "$WORK/term.out" "supervisor"
grep -q "run 2" "$WORK/term.out" && fail "restarted after its own SIGTERM"
"$SPOTRUN" ckpt verify "$WORK/term" >/dev/null || fail "SIGTERM: checkpoint does not verify"
pass "SIGTERM to the supervisor: exit 75, checkpoint committed, no restart"
