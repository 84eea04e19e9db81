# s3_wiring.sh: every location flag takes s3:// URIs: data import, ls and
# verify, training data, model, metrics and checkpoints; a run on S3 data
# ends with the same parameters as on local data. Wrong credentials and an
# unreachable endpoint fail clearly, and secrets never reach the output. On
# https the peer is always verified: AWS_CA_BUNDLE is the way to trust it.
source "$(dirname "$0")/lib.sh"
s3_start

"$SPOTRUN" data import fashion-mnist --out s3://test/fm 2>/dev/null
"$SPOTRUN" data ls s3://test/fm/train | grep -qE '^total +60000 ' || fail "data ls on s3"
"$SPOTRUN" data verify s3://test/fm/test | grep -q '^verified' || fail "data verify on s3"
pass "data import, ls and verify on s3://"

run() { # data-prefix out-prefix
    mpi 2 train --data "$1/train" --val-data "$1/test" --epochs 1 \
        --progress off --model-dir "$2/model" \
        --metrics-file "$2/metrics.jsonl" --checkpoint "$2/ck" \
        --checkpoint-every-steps 100 "${@:3}"
}
run s3://test/fm s3://test/run >"$WORK/s3.txt" 2>"$WORK/s3.err" ||
    fail "training on s3: $(tail -n 3 "$WORK/s3.err")"
run "$FM" "$WORK/local" >"$WORK/local.txt" 2>"$WORK/local.err" ||
    fail "training on local files: $(tail -n 3 "$WORK/local.err")"
[[ $(digest "$WORK/s3.txt") == $(digest "$WORK/local.txt") ]] ||
    fail "s3 and local runs differ"
aws s3 cp s3://test/run/model/model.h5 "$WORK/model.h5" >/dev/null
"$PY" -c "import h5py,sys; f=h5py.File(sys.argv[1]); assert f['fc1.weight'].shape==(256,784)" \
    "$WORK/model.h5" || fail "model on s3"
aws s3 cp s3://test/run/metrics.jsonl - | grep -q '"epoch": *1' || fail "metrics on s3"
"$SPOTRUN" ckpt verify s3://test/run/ck >"$WORK/ck.txt" || fail "ckpt verify on s3"
grep -q '^ok      step 100' "$WORK/ck.txt" && grep -q '^ok      step 234' "$WORK/ck.txt" ||
    fail "checkpoints on s3: $(cat "$WORK/ck.txt")"
pass "training reads s3:// data and writes model, metrics and checkpoints there; same result as local"

run s3://test/fm s3://test/run2 --max-steps 150 >/dev/null 2>&1 || fail "stop at 150"
run s3://test/fm s3://test/run2 >"$WORK/again.txt" 2>"$WORK/again.err" ||
    fail "rerun: $(tail -n 3 "$WORK/again.err")"
grep -q 'resumed from s3://test/run2/ck/step-0000000150' "$WORK/again.err" ||
    fail "no resume from s3: $(grep -i resum "$WORK/again.err")"
[[ $(digest "$WORK/again.txt") == $(digest "$WORK/local.txt") ]] ||
    fail "resumed s3 run differs"
pass "a run stopped at step 150 resumes from its s3:// checkpoint to the same result"

secret=s3cr3t-must-not-leak-$$
token=t0ken-must-not-leak-$$
set +e
AWS_SECRET_ACCESS_KEY=$secret AWS_SESSION_TOKEN=$token \
    mpi 2 train --data s3://test/fm/train --progress off >"$WORK/bad.txt" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] || fail "wrong secret: exit 0"
grep -q 'SignatureDoesNotMatch\|InvalidAccessKeyId\|403' "$WORK/bad.txt" ||
    fail "wrong secret: unclear error: $(grep error "$WORK/bad.txt")"
grep -q 's3://test/fm/train' "$WORK/bad.txt" || fail "wrong secret: error does not name the location"
! grep -q -e "$secret" -e "$token" "$WORK/bad.txt" || fail "a secret reached the output"
pass "wrong credentials -> exit $rc: $(grep -m1 'error:' "$WORK/bad.txt" | sed 's/.*error: //'); no secret in the output"

set +e
SPOTRUN_LOG_LEVEL=debug AWS_ENDPOINT_URL_S3=http://127.0.0.1:9 SPOTRUN_S3_MAX_ATTEMPTS=2 \
    "$SPOTRUN" data ls s3://test/fm/train >"$WORK/down.txt" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] || fail "unreachable endpoint: exit 0"
grep -q '127.0.0.1:9' "$WORK/down.txt" || fail "unreachable endpoint not named: $(cat "$WORK/down.txt")"
! grep -q -e spotrun-test-secret "$WORK/down.txt" || fail "a secret reached the debug log"
pass "unreachable endpoint -> exit $rc: $(grep -m1 'error:' "$WORK/down.txt" | sed 's/.*error: //')"

# https: the peer's certificate is always verified; AWS_CA_BUNDLE names a
# CA to trust (here the server's own self-signed certificate)
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/tls.key" \
    -out "$WORK/tls.crt" 2>/dev/null || fail "openssl could not make a certificate"
s3_stop
s3_start --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key"
[[ $AWS_ENDPOINT_URL_S3 == https://* ]] || fail "the server is not on https"
head -c 3000000 /dev/urandom >"$WORK/tls.bin"
set +e
"$SPOTRUN" cp "$WORK/tls.bin" s3://test/tls/obj >"$WORK/tls.txt" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] || fail "https: an untrusted certificate was accepted"
grep -q 'not trusted' "$WORK/tls.txt" || fail "https: unclear error: $(cat "$WORK/tls.txt")"
AWS_CA_BUNDLE=$WORK/tls.crt "$SPOTRUN" cp "$WORK/tls.bin" s3://test/tls/obj >/dev/null ||
    fail "https with AWS_CA_BUNDLE: upload failed"
AWS_CA_BUNDLE=$WORK/tls.crt "$SPOTRUN" cp s3://test/tls/obj "$WORK/tls.back" >/dev/null ||
    fail "https with AWS_CA_BUNDLE: download failed"
cmp -s "$WORK/tls.bin" "$WORK/tls.back" || fail "https: the object came back different"
# the streaming reader's ranged reads (received in place, every record's
# CRC checked) over TLS
AWS_CA_BUNDLE=$WORK/tls.crt "$SPOTRUN" data import fashion-mnist --out s3://test/tlsfm \
    >/dev/null 2>&1 || fail "https: data import failed"
AWS_CA_BUNDLE=$WORK/tls.crt "$SPOTRUN" data stream s3://test/tlsfm/train --read-chunk 8MiB \
    >"$WORK/tls-stream.txt" 2>&1 || fail "https: data stream failed: $(tail -n 2 "$WORK/tls-stream.txt")"
grep -q '^streamed 60000 records' "$WORK/tls-stream.txt" ||
    fail "https: data stream: $(cat "$WORK/tls-stream.txt")"
pass "https: an untrusted certificate -> exit $rc: $(grep -m1 'error:' "$WORK/tls.txt" | sed 's/.*error: //'); trusted through AWS_CA_BUNDLE, an object goes and comes back intact and a dataset streams"
