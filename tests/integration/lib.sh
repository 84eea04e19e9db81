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
