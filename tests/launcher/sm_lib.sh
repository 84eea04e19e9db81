# sm_lib.sh: SageMaker trees and a two-host cluster on one machine, for the
# launcher tests. Sourced after tests/integration/lib.sh.
#
# A host is a network namespace (its own eth0 on a veth pair, its own
# address), a UTS namespace (hostname algo-N) and a mount namespace in which
# $WORK/ml is its own SageMaker tree and /etc/hosts names every host. All
# hosts share the binary, the test data and the ssh keys, as containers of
# one image would.

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
TAG=sr$$

# sm_tree DIR HOST HOSTS...: a SageMaker tree for HOST of a job on HOSTS
# with a train channel (File mode) and checkpoints under the tree. The
# hyperparameters come from $HP (a JSON object).
sm_tree() {
    local dir=$1 host=$2
    shift 2
    mkdir -p "$dir/input/config" "$dir/input/data"
    ln -sfn "$FM/train" "$dir/input/data/train"
    "$PY" - "$dir" "$host" "$@" <<'EOF'
import json, sys
d, host, hosts = sys.argv[1], sys.argv[2], sys.argv[3:]
cfg = d + "/input/config/"
json.dump({"current_host": host, "hosts": hosts,
           "network_interface_name": "eth0"},
          open(cfg + "resourceconfig.json", "w"))
json.dump({"train": {"TrainingInputMode": "File",
                     "S3DistributionType": "FullyReplicated",
                     "RecordWrapperType": "None"}},
          open(cfg + "inputdataconfig.json", "w"))
json.dump({"S3Uri": "s3://bucket/checkpoints", "LocalPath": d + "/checkpoints"},
          open(cfg + "checkpointconfig.json", "w"))
EOF
    printf '%s\n' "$HP" >"$dir/input/config/hyperparameters.json"
}

# cluster_up: two hosts, algo-1 (10.77.N.1) and algo-2 (10.77.N.2); exits
# 77 (skipped) where namespaces or sshd are not available.
CLUSTER=0
cluster_up() {
    [[ -x /usr/sbin/sshd ]] || { echo "SKIP: no /usr/sbin/sshd (scripts/setup.sh installs it)"; exit 77; }
    command -v ip >/dev/null || { echo "SKIP: no ip(8)"; exit 77; }
    local net=$(( $$ % 200 + 20 ))
    trap 'cluster_down; rm -rf "$WORK"' EXIT
    if ! ip netns add "$TAG-a" 2>"$WORK/netns.err"; then
        echo "SKIP: cannot create network namespaces: $(cat "$WORK/netns.err")"
        exit 77
    fi
    CLUSTER=1
    # a host also needs its own hostname and mounts
    if ! ip netns exec "$TAG-a" unshare -u sh -c \
        'hostname algo-probe && mount --bind /etc/hosts /etc/hosts' \
        2>"$WORK/netns.err"; then
        echo "SKIP: cannot set a hostname or bind-mount in a namespace: $(cat "$WORK/netns.err")"
        exit 77
    fi
    ip netns add "$TAG-b"
    ip link add "$TAG-va" type veth peer name "$TAG-vb"
    ip link set "$TAG-va" netns "$TAG-a"
    ip link set "$TAG-vb" netns "$TAG-b"
    ip -n "$TAG-a" link set "$TAG-va" name eth0
    ip -n "$TAG-b" link set "$TAG-vb" name eth0
    ip -n "$TAG-a" addr add "10.77.$net.1/24" dev eth0
    ip -n "$TAG-b" addr add "10.77.$net.2/24" dev eth0
    local n
    for n in a b; do
        ip -n "$TAG-$n" link set lo up
        ip -n "$TAG-$n" link set eth0 up
    done
    printf '127.0.0.1 localhost\n10.77.%d.1 algo-1\n10.77.%d.2 algo-2\n' \
        "$net" "$net" >"$WORK/hosts"
    mkdir -p "$WORK/ml"
}

cluster_down() {
    [[ $CLUSTER == 1 ]] || return 0
    local n p
    for n in a b; do
        for p in $(ip netns pids "$TAG-$n" 2>/dev/null); do
            kill -9 "$p" 2>/dev/null || true
        done
        ip netns del "$TAG-$n" 2>/dev/null || true
    done
    CLUSTER=0
}

# on_host a|b NAME TREE CMD...: run CMD as host NAME with TREE as its
# SageMaker tree at $WORK/ml
on_host() {
    local ns=$TAG-$1 name=$2 tree=$3
    shift 3
    # in a background subshell, become the host so that $! is its pid
    local run=()
    [[ $BASHPID != "$$" ]] && run=(exec)
    "${run[@]}" ip netns exec "$ns" unshare -u sh -c '
        hostname "$1" && mount --bind "$2" /etc/hosts &&
        mount --bind "$3" "$4" && shift 4 && exec "$@"' sh \
        "$name" "$WORK/hosts" "$tree" "$WORK/ml" \
        env SPOTRUN_SAGEMAKER_ROOT="$WORK/ml" SPOTRUN_SSH_DIR="$WORK/ssh" "$@"
}

# stop_with_term PID LOG WHAT: once LOG shows epoch 1, SIGTERM to PID (a
# launcher started in the background), which must then exit 75
stop_with_term() {
    wait_for "$2" '^epoch=1 '
    kill -TERM "$1"
    local rc=0
    wait "$1" || rc=$?
    [[ $rc -eq 75 ]] || { cat "$2"; fail "$3: exit $rc after SIGTERM, want 75"; }
}

# wait_for FILE REGEX [SECONDS]: until a line of FILE matches
wait_for() {
    local i
    for ((i = 0; i < ${3:-120} * 10; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$1" >&2
    fail "no line matching '$2' in $1"
}
