# lib.sh: helpers shared by the integration tests. Sourced, not run.
# Environment (set by ctest): SPOTRUN, MPIEXEC, TESTDATA, SOURCE_DIR.
set -euo pipefail

: "${SPOTRUN:?SPOTRUN must point at the spotrun binary}"
: "${MPIEXEC:=mpirun}"
: "${TESTDATA:?TESTDATA must name the test data directory}"
PY=/usr/bin/python3
FM="$TESTDATA/fm"

WORK=$(mktemp -d /tmp/spotrun-it.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

pass() {
    echo "PASS: $*"
}

# mpi N args...: spotrun under mpirun with N ranks (oversubscribed if needed)
mpi() {
    local n=$1
    shift
    "$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np "$n" \
        "$SPOTRUN" "$@"
}

# metric NAME FILE [EPOCH]: value of NAME on the epoch line (last by default)
metric() {
    local name=$1 file=$2 epoch=${3:-}
    local line
    if [[ -n $epoch ]]; then
        line=$(grep -E "^epoch=$epoch " "$file" || true)
    else
        line=$(grep -E '^epoch=' "$file" | tail -n 1 || true)
    fi
    [[ -n $line ]] || fail "no epoch line in $file"
    sed -nE "s/.*(^| )$name=([^ ]+).*/\2/p" <<<"$line"
}

# flip_byte FILE OFFSET: invert one byte in place
flip_byte() {
    "$PY" -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); b = f.read(1)
f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))' "$1" "$2"
}

# digest FILE: the params_sha256 a run printed
digest() {
    sed -nE 's/^done .*params_sha256=([0-9a-f]{64}).*/\1/p' "$1"
}

# s3_start [SERVER FLAGS...]: start the S3 test server (SigV4-verifying
# s3rver) on a free loopback port with bucket "test", point spotrun and the
# AWS CLI at it (https with --tls-cert), and stop it when the test exits.
S3_PID=
s3_start() {
    local node_modules=$SOURCE_DIR/tests/s3server/node_modules
    [[ -d $node_modules ]] ||
        fail "the S3 test server is not installed: run scripts/setup.sh"
    mkdir -p "$WORK/s3"
    rm -f "$WORK/s3.port"
    node --openssl-legacy-provider --single-threaded-gc "$SOURCE_DIR/tests/s3server/server.js" \
        --dir "$WORK/s3" --port 0 --port-file "$WORK/s3.port" \
        --bucket test "$@" >"$WORK/s3.log" 2>&1 &
    S3_PID=$!
    trap 's3_stop; rm -rf "$WORK"' EXIT
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $WORK/s3.port ]] && break
        sleep 0.1
    done
    [[ -s $WORK/s3.port ]] || fail "S3 test server did not start: $(cat "$WORK/s3.log")"
    S3_PORT=$(<"$WORK/s3.port")
    local scheme=http
    [[ " $* " == *" --tls-cert "* ]] && scheme=https
    export AWS_ENDPOINT_URL_S3="$scheme://127.0.0.1:$S3_PORT"
    export AWS_ACCESS_KEY_ID=spotrun-test AWS_SECRET_ACCESS_KEY=spotrun-test-secret
    export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_PAGER=""
    unset AWS_PROFILE AWS_SESSION_TOKEN
}

s3_stop() {
    [[ -n $S3_PID ]] && kill "$S3_PID" 2>/dev/null && wait "$S3_PID" 2>/dev/null
    S3_PID=
    return 0
}

# s3_faults JSON: change the server's fault injection while it runs
s3_faults() {
    curl -sf -X PUT --data "$1" "http://127.0.0.1:$S3_PORT/__spotrun/faults" >/dev/null ||
        fail "could not set S3 faults"
}

# aws ARGS...: Debian's AWS CLI against the test server
aws() {
    /usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL_S3" "$@"
}
