# lib.sh: sourced by the benchmarks. bench_s3_start NAME makes a scratch
# directory ($work), starts the local S3 test server on a free loopback port
# with a bucket "bench", points spotrun and the AWS CLI at it, and removes
# both on exit. Also sets $spotrun, $port and $aws (Debian's AWS CLI with
# the endpoint). median, time_cmd, bench_within, cpu_mark and steal_since
# serve every benchmark.

bench_s3_start() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    bash scripts/setup.sh >/dev/null
    spotrun=$PWD/build/spotrun
    work=$(mktemp -d "/tmp/spotrun-$1.XXXXXX")
    server=
    trap bench_cleanup EXIT
    node --openssl-legacy-provider --single-threaded-gc tests/s3server/server.js --dir "$work/s3" \
        --port 0 --port-file "$work/port" --bucket bench >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do [[ -s $work/port ]] && break; sleep 0.1; done
    [[ -s $work/port ]] || { cat "$work/server.log" >&2; exit 1; }
    port=$(<"$work/port")
    export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$port
    export AWS_ACCESS_KEY_ID=spotrun-test AWS_SECRET_ACCESS_KEY=spotrun-test-secret
    export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_PAGER=""
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    unset AWS_PROFILE AWS_SESSION_TOKEN
    aws=(/usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL_S3")
}

bench_cleanup() {
    [[ -n ${server:-} ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}

# median: the middle of the numbers on stdin (one per line or space-separated)
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# bench_within VALUE OP LIMIT MESSAGE: succeed when VALUE OP LIMIT holds
# (OP is <= or >=); else print MESSAGE on stderr and fail. For the
# BENCH_MIN_* and BENCH_MAX_* thresholds.
bench_within() {
    awk -v v="$1" -v op="$2" -v m="$3" \
        'BEGIN { exit !(op == "<=" ? v <= m : v >= m) }' && return 0
    echo "$4" >&2
    return 1
}

# time_cmd CMD...: run it (stdout dropped) and print the seconds it took;
# a command that fails fails time_cmd (a command substitution does not
# stop a set -e script by itself), so no failed run is timed
time_cmd() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null || { echo "failed: $*" >&2; return 1; }
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}

# cpu_mark: "TOTAL STEAL", the machine's CPU time so far and the part of it
# the hypervisor gave to other guests (/proc/stat, in ticks)
cpu_mark() {
    awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat
}

# steal_since MARK: steal's share of the CPU time since MARK (a cpu_mark),
# in percent. Timings taken while it is high say more about the host's
# other guests than about the programs measured.
steal_since() {
    local t0 s0 t1 s1
    read -r t0 s0 <<<"$1"
    read -r t1 s1 < <(cpu_mark)
    awk -v a="$t0" -v b="$t1" -v c="$s0" -v d="$s1" \
        'BEGIN { printf "%.1f", (b > a) ? 100 * (d - c) / (b - a) : 0 }'
}
