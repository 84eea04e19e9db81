#!/usr/bin/env bash
# demo.sh: the main job, a spot training run end to end on this machine.
#
#   1. starts the bundled S3 server (tests/s3server: SigV4-verifying s3rver)
#      and the EC2 instance metadata stand-in (tests/imds) on loopback ports
#   2. imports Fashion-MNIST (Debian package dataset-fashion-mnist) into
#      s3://spotrun/fashion-mnist, once
#   3. trains the default MLP data-parallel on 2 ranks under mpirun,
#      streaming the shards from S3 and checkpointing to S3
#   4. part-way, the metadata service announces a spot interruption: every
#      rank stops after the same step, one emergency checkpoint is
#      committed, and the job exits 75
#   5. on "a new instance" (no notice), the same command resumes from that
#      checkpoint and trains to the end
#   6. trains the same job once more without the interruption and checks
#      that both end with bit-identical parameters
#
# Everything lives under $SPOTRUN_DEMO_DIR (default ./demo): the S3 server's
# data, the metrics file and the model. Run scripts/setup.sh first.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
out=${SPOTRUN_DEMO_DIR:-$root/demo}
spotrun=$root/build/spotrun
bucket=spotrun
notice_after_epoch=${SPOTRUN_DEMO_NOTICE_EPOCH:-3}

say() { printf '\ndemo: %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[[ -x $spotrun ]] || die "build/spotrun missing; run scripts/setup.sh"
mkdir -p "$out"

# --- 1. local services ----------------------------------------------------
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# start_service VAR NAME PORT_FILE COMMAND...: background it, wait for its
# port and put it in VAR (no command substitution: the pid must reach
# cleanup in this shell)
start_service() {
    local var=$1 name=$2 port_file=$3
    shift 3
    rm -f "$port_file"
    "$@" >"$out/$name.log" 2>&1 </dev/null &
    pids+=($!)
    for _ in $(seq 100); do
        [[ -s $port_file ]] && { printf -v "$var" '%s' "$(<"$port_file")"; return 0; }
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 5 "$out/$name.log" >&2
    die "$name did not start; see $out/$name.log"
}

[[ -d tests/s3server/node_modules/s3rver ]] ||
    die "the S3 server is not installed; run scripts/setup.sh"
start_service s3_port s3server "$out/s3server.port" \
    node --openssl-legacy-provider --single-threaded-gc tests/s3server/server.js \
    --dir "$out/s3" --host 127.0.0.1 --port 0 --bucket "$bucket" \
    --access-key spotrun-demo --secret-key spotrun-demo-secret \
    --port-file "$out/s3server.port"
start_service imds_port imds "$out/imds.port" \
    /usr/bin/python3 tests/imds/imds.py --port 0 --port-file "$out/imds.port"
imds=http://127.0.0.1:$imds_port

export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$s3_port
export AWS_ACCESS_KEY_ID=spotrun-demo AWS_SECRET_ACCESS_KEY=spotrun-demo-secret
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$imds
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_EC2_METADATA_DISABLED
say "S3 server at $AWS_ENDPOINT_URL_S3 (bucket $bucket, data in $out/s3)"
say "EC2 metadata stand-in at $imds (IMDSv2; no notice yet)"

# --- 2. the dataset, in S3 ------------------------------------------------
data=s3://$bucket/fashion-mnist
if ! "$spotrun" data ls "$data/train" >/dev/null 2>&1 ||
    ! "$spotrun" data ls "$data/test" >/dev/null 2>&1; then
    say "importing Fashion-MNIST into $data"
    "$spotrun" data import fashion-mnist --out "$data"
fi
"$spotrun" data ls "$data/train"

# --- 3. the job -----------------------------------------------------------
job=s3://$bucket/jobs/$(date -u +%Y%m%dT%H%M%SZ)
mpi=(mpirun -np 2 --bind-to none)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
train=("${mpi[@]}" "$spotrun" train
    --data "$data/train" --val-data "$data/test"
    --checkpoint "$job/checkpoints" --checkpoint-every-steps 200
    --model-dir "$out/model" --metrics-file "$out/metrics.jsonl"
    --spot-poll-seconds 1)
rm -rf "$out/model" "$out/metrics.jsonl"

say "run 1: ${train[*]}"
"${train[@]}" &
job_pid=$!

# --- 4. the spot notice, after epoch $notice_after_epoch ------------------
noticed=0
while kill -0 "$job_pid" 2>/dev/null; do
    epochs=0
    [[ -f $out/metrics.jsonl ]] && epochs=$(wc -l <"$out/metrics.jsonl")
    if ((epochs >= notice_after_epoch)); then
        say "EC2 announces a spot interruption (instance-action terminate, two minutes from now)"
        curl -sf -X POST "$imds/__control/notice" \
            -d '{"kind": "instance-action", "action": "terminate", "in": 0, "lead": 120}' \
            >/dev/null || die "the metadata stand-in refused the notice"
        noticed=1
        break
    fi
    sleep 0.2
done
rc=0
wait "$job_pid" || rc=$?
((noticed)) || die "run 1 ended (exit $rc) before the spot notice"
[[ $rc -eq 75 ]] || die "run 1 exited $rc after the spot notice; expected 75"
say "run 1 stopped on the notice with exit 75 (interrupted, checkpoint committed)"

say "checkpoints under $job/checkpoints:"
"$spotrun" ckpt ls "$job/checkpoints"
"$spotrun" ckpt verify "$job/checkpoints"

# --- 5. resume ------------------------------------------------------------
curl -sf -X DELETE "$imds/__control/notice" >/dev/null
say "run 2 (a new instance, no notice): the same command resumes"
"${train[@]}" | tee "$out/run2.out" || die "run 2 failed with exit ${PIPESTATUS[0]}"
resumed=$(sed -n 's/^done .*params_sha256=//p' "$out/run2.out")

# --- 6. the same job without the interruption, for comparison -------------
say "run 3 (for comparison): the same job, uninterrupted, no checkpoints"
"${mpi[@]}" "$spotrun" train --data "$data/train" --progress off \
    --log-level warn | tee "$out/run3.out" >/dev/null ||
    die "run 3 failed with exit ${PIPESTATUS[0]}"
straight=$(sed -n 's/^done .*params_sha256=//p' "$out/run3.out")
[[ -n $resumed && $resumed == "$straight" ]] ||
    die "the resumed job's parameters ($resumed) differ from the uninterrupted job's ($straight)"

say "done: the job resumed at the emergency checkpoint and finished with parameters bit-identical to the uninterrupted job (sha256 $resumed)"
say "model in $out/model/model.h5, metrics in $out/metrics.jsonl, checkpoints in $job/checkpoints"
tail -n 1 "$out/metrics.jsonl"
