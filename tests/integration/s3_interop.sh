# s3_interop.sh: objects spotrun writes to the S3 test server read back
# identical with the AWS CLI, and objects the AWS CLI writes (multipart
# included) read back identical with spotrun; both clients' signed
# requests pass the server's SigV4 verification. With 10% of requests
# failing, spotrun still copies every byte.
source "$(dirname "$0")/lib.sh"
s3_start
# multipart above one 8 MiB part (not the 64 MiB default), so the 20 MiB
# object and the 45 MiB one under faults go as parts
export SPOTRUN_S3_MULTIPART_THRESHOLD=8MiB

head -c $((20 << 20)) /dev/urandom >"$WORK/a.bin"       # 3 parts of 8 MiB
head -c $((45 << 20)) /dev/urandom >"$WORK/b.bin"
head -c 1000 /dev/urandom >"$WORK/small.bin"

"$SPOTRUN" cp "$WORK/a.bin" "s3://test/from spotrun/a ü+.bin" >/dev/null
"$SPOTRUN" cp "$WORK/small.bin" s3://test/from-spotrun/small.bin >/dev/null
aws s3 cp "s3://test/from spotrun/a ü+.bin" "$WORK/a.back" >/dev/null
aws s3 cp s3://test/from-spotrun/small.bin "$WORK/small.back" >/dev/null
cmp "$WORK/a.bin" "$WORK/a.back" || fail "aws read of a spotrun multipart object differs"
cmp "$WORK/small.bin" "$WORK/small.back" || fail "aws read of a spotrun object differs"
etag=$(aws s3api head-object --bucket test --key "from spotrun/a ü+.bin" \
    --query ETag --output text)
[[ $etag == *-3\" ]] || fail "spotrun's 20 MiB upload is not 3 parts: ETag $etag"
pass "AWS CLI reads spotrun's objects (20 MiB in 3 parts, 1000 B) identical"

aws s3 cp "$WORK/b.bin" s3://test/from-aws/b.bin >/dev/null
etag=$(aws s3api head-object --bucket test --key from-aws/b.bin --query ETag --output text)
[[ $etag == *-* ]] || fail "the AWS CLI did not use multipart: ETag $etag"
"$SPOTRUN" cp s3://test/from-aws/b.bin "$WORK/b.back" >/dev/null
cmp "$WORK/b.bin" "$WORK/b.back" || fail "spotrun read of an aws multipart object differs"
pass "spotrun reads the AWS CLI's multipart object (ETag $etag) identical"

mkdir -p "$WORK/tree/x/y"
for i in 1 2 3; do head -c $((i * 300000)) /dev/urandom >"$WORK/tree/x/f$i"; done
cp "$WORK/small.bin" "$WORK/tree/x/y/deep"
"$SPOTRUN" cp --recursive "$WORK/tree" s3://test/tree >/dev/null
[[ $(aws s3 ls --recursive s3://test/tree/ | wc -l) -eq 4 ]] || fail "aws ls of the tree"
aws s3 cp --recursive s3://test/tree "$WORK/tree.aws" >/dev/null
diff -r "$WORK/tree" "$WORK/tree.aws" || fail "aws copy of spotrun's tree differs"
"$SPOTRUN" cp --recursive s3://test/tree "$WORK/tree.back" >/dev/null
diff -r "$WORK/tree" "$WORK/tree.back" || fail "spotrun round trip of a tree differs"
pass "a tree copied with spotrun cp --recursive lists and reads back in the AWS CLI"

auth=$(curl -sf "http://127.0.0.1:$S3_PORT/__spotrun/stats" | "$PY" -c \
    'import json,sys; print(json.load(sys.stdin)["auth_failures"])')
[[ $auth -eq 0 ]] || fail "$auth requests failed signature verification"
pass "every request of both clients passed SigV4 verification"

s3_faults '{"rate": 0.1, "faults": ["slowdown", "500", "reset"], "seed": 3}'
"$SPOTRUN" cp "$WORK/b.bin" s3://test/faulty/b.bin >/dev/null ||
    fail "upload under 10% faults"
"$SPOTRUN" cp s3://test/faulty/b.bin "$WORK/b.faulty" >/dev/null ||
    fail "download under 10% faults"
faults=$(curl -sf "http://127.0.0.1:$S3_PORT/__spotrun/stats" | "$PY" -c \
    'import json,sys; print(sum(json.load(sys.stdin)["faults"].values()))')
s3_faults '{"rate": 0}'
cmp "$WORK/b.bin" "$WORK/b.faulty" || fail "bytes differ after faults"
aws s3 cp s3://test/faulty/b.bin "$WORK/b.faulty.aws" >/dev/null
cmp "$WORK/b.bin" "$WORK/b.faulty.aws" || fail "aws read after faults differs"
[[ $faults -gt 0 ]] || fail "no faults were injected"
pass "45 MiB up and down with $faults injected faults: identical"
