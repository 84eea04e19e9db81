# stream.sh: training streams its data. The record sequence read from
# s3:// (with 10% of requests failing) equals the one read from file://;
# a run stopped mid-epoch and resumed continues the exact sequence; a run
# that goes from 2 to 3 to 1 ranks (same global batch) sees the same global
# sequence as an uninterrupted one; and streaming a dataset five times the
# read-ahead window keeps memory within the window plus a fixed overhead.
source "$(dirname "$0")/lib.sh"
s3_start

# Fashion-MNIST train in 4 MiB shards, so shard order and chunks matter
"$SPOTRUN" data make --from idx \
    --x /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
    --y /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz \
    --classes 10 --scale 0.00392156862745098 --shard-size 4MiB \
    --out "$WORK/fm4" 2>/dev/null
"$SPOTRUN" cp --recursive "$WORK/fm4" s3://test/fm4 >/dev/null
stream=(--epochs 2 --progress off --shuffle-block 5000 --read-ahead 16MiB
        --read-chunk 1MiB)

# merge LOGPREFIX OUT: one line per step, rank slices in rank order (the
# last run of a step wins: a resumed run repeats steps after its checkpoint)
merge() {
    "$PY" - "$1" "$2" <<'PY'
import glob, sys
steps = {}
for path in sorted(glob.glob(sys.argv[1] + ".rank*"), key=lambda p: int(p.rsplit("rank", 1)[1])):
    for line in open(path):
        f = line.split()
        steps.setdefault(int(f[0]), []).append(f[1:])
with open(sys.argv[2], "w") as out:
    for s in sorted(steps):
        out.write("%d %s\n" % (s, " ".join(" ".join(x) for x in steps[s])))
PY
}

mpi 2 train --data "$WORK/fm4" "${stream[@]}" --max-steps 300 \
    --record-log "$WORK/file" >"$WORK/file.txt" 2>"$WORK/file.err" ||
    fail "file:// run: $(tail -n 3 "$WORK/file.err")"
s3_faults '{"rate": 0.1, "faults": ["slowdown", "500", "reset"], "seed": 5}'
mpi 2 train --data s3://test/fm4 "${stream[@]}" --max-steps 300 \
    --record-log "$WORK/s3" >"$WORK/s3.txt" 2>"$WORK/s3.err" ||
    fail "s3:// run: $(tail -n 3 "$WORK/s3.err")"
faults=$(curl -sf "http://127.0.0.1:$S3_PORT/__spotrun/stats" | "$PY" -c \
    'import json,sys; print(sum(json.load(sys.stdin)["faults"].values()))')
s3_faults '{"rate": 0}'
merge "$WORK/file" "$WORK/file.seq"
merge "$WORK/s3" "$WORK/s3.seq"
[[ $(wc -l <"$WORK/file.seq") -eq 300 ]] || fail "file:// log has $(wc -l <"$WORK/file.seq") steps"
cmp -s "$WORK/file.seq" "$WORK/s3.seq" || fail "s3:// and file:// sequences differ"
[[ $(digest "$WORK/s3.txt") == $(digest "$WORK/file.txt") ]] || fail "s3 and file parameters differ"
[[ $faults -gt 0 ]] || fail "no faults were injected"
pass "300 steps from s3:// with $faults injected faults: same records, same parameters as file://"

"$PY" - "$WORK/file.seq" <<'PY' || fail "the sequence repeats or skips records"
import sys
seen = {}
for line in open(sys.argv[1]):
    f = line.split()
    step, ids = int(f[0]), list(map(int, f[1:]))
    epoch = (step - 1) // (60000 // 256)
    for i in ids:
        assert (epoch, i) not in seen, (epoch, i)
        seen[(epoch, i)] = step
n0 = sum(1 for k in seen if k[0] == 0)
assert n0 == (60000 // 256) * 256, n0
PY
pass "no record repeats within an epoch; epoch 1 used $(( (60000 / 256) * 256 )) distinct records"

mpi 2 train --data s3://test/fm4 "${stream[@]}" --max-steps 100 \
    --checkpoint s3://test/ck --record-log "$WORK/resume" >/dev/null 2>&1 ||
    fail "run stopped at step 100"
mpi 2 train --data s3://test/fm4 "${stream[@]}" --max-steps 300 \
    --checkpoint s3://test/ck --record-log "$WORK/resume" >"$WORK/r.txt" 2>"$WORK/r.err" ||
    fail "resume: $(tail -n 3 "$WORK/r.err")"
grep -q 'resumed from s3://test/ck/step-0000000100' "$WORK/r.err" || fail "did not resume at 100"
merge "$WORK/resume" "$WORK/resume.seq"
cmp -s "$WORK/file.seq" "$WORK/resume.seq" || fail "resumed sequence differs"
[[ $(digest "$WORK/r.txt") == $(digest "$WORK/file.txt") ]] || fail "resumed parameters differ"
pass "stopped at step 100 (mid-epoch) and resumed: the same 300-step sequence and parameters"

elastic=(--data "$WORK/fm4" "${stream[@]}" --batch-size 192)
mpi 2 train "${elastic[@]}" --max-steps 400 --record-log "$WORK/e-ref" \
    --step-metrics-file "$WORK/e-ref.jsonl" >/dev/null 2>&1 || fail "elastic reference"
mpi 2 train "${elastic[@]}" --max-steps 150 --checkpoint "$WORK/eck" \
    --record-log "$WORK/e" --step-metrics-file "$WORK/e.jsonl" >/dev/null 2>&1 || fail "2 ranks"
mpi 3 train "${elastic[@]}" --max-steps 330 --checkpoint "$WORK/eck" \
    --record-log "$WORK/e" --step-metrics-file "$WORK/e.jsonl" >/dev/null 2>"$WORK/e3.err" ||
    fail "3 ranks: $(tail -n 3 "$WORK/e3.err")"
grep -q 'checkpoint was written by 2 rank(s), this run has 3' "$WORK/e3.err" ||
    fail "3-rank run did not resume the 2-rank checkpoint"
mpi 1 train "${elastic[@]}" --max-steps 400 --checkpoint "$WORK/eck" \
    --record-log "$WORK/e" --step-metrics-file "$WORK/e.jsonl" >/dev/null 2>&1 || fail "1 rank"
merge "$WORK/e-ref" "$WORK/e-ref.seq"
merge "$WORK/e" "$WORK/e.seq"
cmp -s "$WORK/e-ref.seq" "$WORK/e.seq" || fail "2 -> 3 -> 1 ranks: the global sequence differs"
"$PY" - "$WORK/e-ref.jsonl" "$WORK/e.jsonl" <<'PY'
import json, sys
a = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1]))}
b = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2]))}
assert sorted(a) == sorted(b) == list(range(1, 401))
# the 2-rank part is the same computation; after that only the float
# summation order differs, a difference that training amplifies: on one
# CPU it stayed near 1e-7 through step 220 and reached 4e-5 by step 250
assert all(a[s] == b[s] for s in range(1, 151)), "steps 1-150 differ"
near = max(abs(a[s] - b[s]) / a[s] for s in range(151, 201))
late = abs(sum(a[s] - b[s] for s in range(351, 401))) / sum(a[s] for s in range(351, 401))
print("relative loss difference: %.1e at most over steps 151-200, %.1e in the "
      "mean of steps 351-400" % (near, late))
assert near < 1e-5 and late < 0.02, (near, late)
PY
pass "2 -> 3 -> 1 ranks across an epoch boundary: same global sequence, loss within float tolerance"

# five copies of the training split (235 MB) through a 32 MiB window
"$PY" - "$WORK" <<'PY'
import gzip, sys
import numpy as np
d = "/usr/share/datasets/fashion-mnist"
x = np.frombuffer(gzip.open(f"{d}/train-images-idx3-ubyte.gz").read()[16:], np.uint8)
y = np.frombuffer(gzip.open(f"{d}/train-labels-idx1-ubyte.gz").read()[8:], np.uint8)
n = 5 * len(y)
with open(sys.argv[1] + "/big-x.idx", "wb") as f:
    f.write(np.array([0x803, n, 28, 28], ">u4").tobytes())
    for _ in range(5):
        f.write(x.tobytes())
with open(sys.argv[1] + "/big-y.idx", "wb") as f:
    f.write(np.array([0x801, n], ">u4").tobytes())
    for _ in range(5):
        f.write(y.tobytes())
PY
"$SPOTRUN" data make --from idx --x "$WORK/big-x.idx" --y "$WORK/big-y.idx" \
    --scale 0.00392156862745098 --shard-size 16MiB --out "$WORK/big" 2>/dev/null
rm "$WORK/big-x.idx" "$WORK/big-y.idx"
window=(--read-ahead 32MiB --read-chunk 2MiB --shuffle-block 10000 --progress off --threads 1)
peak() { sed -nE 's/.*peak memory ([0-9.]+) MiB.*/\1/p' "$1"; }
mpi 1 train --data "$FM/test" --epochs 1 "${window[@]}" >/dev/null 2>"$WORK/small.err" ||
    fail "baseline run"
mpi 1 train --data "$WORK/big" --epochs 1 --max-steps 700 "${window[@]}" \
    >/dev/null 2>"$WORK/big.err" || fail "big run: $(tail -n 3 "$WORK/big.err")"
small=$(peak "$WORK/small.err")
big=$(peak "$WORK/big.err")
fetched=$(sed -nE 's/.*data: ([0-9.]+) MiB fetched.*/\1/p' "$WORK/big.err")
"$PY" - "$small" "$big" "$fetched" <<'PY'
import sys
small, big, fetched = map(float, sys.argv[1:])
print(f"peak memory: {small:.1f} MiB on a 7.5 MiB split, {big:.1f} MiB streaming "
      f"{fetched:.0f} MiB of a 235 MiB dataset through a 32 MiB window")
assert fetched > 3 * 32, "streamed less than 3 windows"
assert big <= small + 32 + 16, "more than the window plus 16 MiB above the baseline"
PY
pass "streaming $fetched MiB through a 32 MiB window: peak memory $big MiB (baseline $small MiB)"
