# checkpoint.sh: a run stopped at step k and resumed ends with the same
# parameters, bit for bit, as an uninterrupted run (1 and 2 ranks, several
# k including mid-epoch) and reports the same metrics; a corrupted or
# uncommitted newest checkpoint is skipped for the previous one; an
# incompatible configuration is refused; h5py and h5dump read a
# checkpoint; `spotrun ckpt` lists, shows and verifies.
source "$(dirname "$0")/lib.sh"

# 2 epochs of 234 steps on the test split's 10000 records would be short:
# use the training split, 468 steps
train() { # ranks args...
    local n=$1
    shift
    mpi "$n" train --data "$FM/train" --val-data "$FM/test" --epochs 2 \
        --progress off "$@"
}

for n in 1 2; do
    train $n >"$WORK/ref$n.txt" 2>"$WORK/ref$n.err" ||
        fail "reference run ($n ranks): $(tail -n 3 "$WORK/ref$n.err")"
    ref=$(digest "$WORK/ref$n.txt")
    ks="100 234 300"
    [[ $n -eq 2 ]] && ks="150 400"
    for k in $ks; do
        ck="$WORK/ck-$n-$k"
        train $n --checkpoint "$ck" --max-steps "$k" >"$WORK/a.txt" \
            2>"$WORK/a.err" || fail "stop at $k: $(tail -n 3 "$WORK/a.err")"
        train $n --checkpoint "$ck" >"$WORK/b.txt" 2>"$WORK/b.err" ||
            fail "resume at $k: $(tail -n 3 "$WORK/b.err")"
        grep -q "resumed from .*step-0*$k: step $k" "$WORK/b.err" ||
            fail "did not resume at $k: $(grep -E 'resum|checkpoint' "$WORK/b.err")"
        got=$(digest "$WORK/b.txt")
        [[ $got == "$ref" ]] || fail "$n ranks, stop at $k: $got != $ref"
        # the resumed run's epoch lines report what the uninterrupted did
        for e in 1 2; do
            grep -q "^epoch=$e " "$WORK/b.txt" || continue
            for key in step train_loss val_loss val_accuracy; do
                [[ $(metric $key "$WORK/b.txt" $e) == $(metric $key "$WORK/ref$n.txt" $e) ]] ||
                    fail "$n ranks, stop at $k: epoch $e $key differs"
            done
        done
        pass "$n rank(s), stopped at step $k and resumed: params_sha256=$got as uninterrupted"
    done
done

# the newest checkpoint corrupted, then uncommitted: the previous one wins
ck="$WORK/ck-1-300"    # holds steps 234, 300 and 468 (keep 3)
"$SPOTRUN" ckpt ls "$ck" >"$WORK/ls.txt"
grep -qE '^468 .* committed' "$WORK/ls.txt" || fail "ckpt ls: $(cat "$WORK/ls.txt")"
"$SPOTRUN" ckpt verify "$ck" >/dev/null || fail "ckpt verify on intact checkpoints"
"$SPOTRUN" ckpt show "$ck" >"$WORK/show.txt"
grep -q '^step            468' "$WORK/show.txt" || fail "ckpt show"
grep -q 'optimizer/exp_avg_sq/fc1.weight *float32 \[256, 784\]' "$WORK/show.txt" ||
    fail "ckpt show tensors"
pass "ckpt ls/show/verify on intact checkpoints"

rm -r "$ck/step-0000000468"
state="$ck/step-0000000300/state.h5"
flip_byte "$state" 4000
set +e
"$SPOTRUN" ckpt verify "$ck" >"$WORK/v.txt" 2>&1
rc=$?
set -e
[[ $rc -eq 2 ]] && grep -q 'FAILED  step 300: .*SHA-256 mismatch' "$WORK/v.txt" ||
    fail "ckpt verify on a corrupted checkpoint: rc $rc: $(cat "$WORK/v.txt")"
train 1 --checkpoint "$ck" >"$WORK/c.txt" 2>"$WORK/c.err" || fail "resume past corruption"
grep -q 'skipping checkpoint .*step-0000000300: .*SHA-256 mismatch' "$WORK/c.err" ||
    fail "no skip report: $(grep -E 'skip|resum' "$WORK/c.err")"
grep -q 'resumed from .*step-0000000234' "$WORK/c.err" || fail "did not fall back to 234"
[[ $(digest "$WORK/c.txt") == $(digest "$WORK/ref1.txt") ]] || fail "after fallback"
pass "a corrupted newest checkpoint is skipped; resumed from step 234, same result"

ck="$WORK/ck-1-100"
rm -r "$ck/step-0000000468"
rm "$ck/step-0000000234/MANIFEST.json"
train 1 --checkpoint "$ck" >"$WORK/d.txt" 2>"$WORK/d.err" || fail "resume past missing manifest"
grep -q 'skipping checkpoint .*step-0000000234: no manifest' "$WORK/d.err" ||
    fail "no skip report: $(grep -E 'skip|resum' "$WORK/d.err")"
grep -q 'resumed from .*step-0000000100' "$WORK/d.err" || fail "did not fall back to 100"
[[ $(digest "$WORK/d.txt") == $(digest "$WORK/ref1.txt") ]] || fail "after fallback"
pass "an uncommitted newest checkpoint is skipped; resumed from step 100, same result"

# the shuffle block is part of the order: another one is refused, naming
# the block that continues the run; a block of at least the dataset's
# 60000 records gives the same order as the default one (64 MiB of
# 785-byte records) and resumes
set +e
train 1 --checkpoint "$WORK/ck-1-234" --shuffle-block 5000 >/dev/null 2>"$WORK/sb.err"
rc=$?
set -e
auto=$((64 * 1048576 / 785))
[[ $rc -eq 2 ]] && grep -q "shuffle block of $auto records, this run uses 5000 .*pass --shuffle-block $auto to continue it" "$WORK/sb.err" ||
    fail "another shuffle block: rc $rc: $(grep error "$WORK/sb.err")"
train 1 --checkpoint "$WORK/ck-1-234" --shuffle-block 60000 >/dev/null 2>"$WORK/sb2.err" ||
    fail "a shuffle block of the whole dataset: $(grep error "$WORK/sb2.err")"
grep -q 'resumed from .*step-0000000468' "$WORK/sb2.err" ||
    fail "a shuffle block of the whole dataset did not resume: $(grep -E 'resum|checkpoint' "$WORK/sb2.err")"
pass "another shuffle block is refused (exit 2, naming --shuffle-block $auto); one of the whole dataset resumes"

set +e
train 1 --checkpoint "$WORK/ck-1-234" --hidden 64 >/dev/null 2>"$WORK/e.err"
rc=$?
set -e
[[ $rc -eq 2 ]] && grep -q 'holds model 784-256-128-10, this run builds 784-64-10' "$WORK/e.err" ||
    fail "incompatible model: rc $rc: $(grep error "$WORK/e.err")"
train 1 --checkpoint "$WORK/ck-1-234" --hidden 64 --no-resume --max-steps 5 \
    >/dev/null 2>"$WORK/f.err" || fail "--no-resume: $(grep error "$WORK/f.err")"
pass "an incompatible checkpoint is refused (exit 2); --no-resume starts fresh"

# h5py and h5dump read a checkpoint; its parameters equal the model file
# written at the same step
train 2 --checkpoint "$WORK/ck5" --max-steps 50 --model-dir "$WORK/m5" \
    >/dev/null 2>&1 || fail "run for the h5py check"
"$PY" - "$WORK/ck5/step-0000000050/state.h5" "$WORK/m5/model.h5" <<'PY'
import json, sys
import h5py, numpy as np
c = h5py.File(sys.argv[1], "r")
m = h5py.File(sys.argv[2], "r")
a = c.attrs
assert a["format"] == "spotrun-checkpoint" and a["format_version"] == 2
assert (a["step"], a["epoch"], a["position"]) == (50, 0, 50 * 256)
assert a["world_size"] == 2 and a["global_batch"] == 256 and a["shuffle_block"] > 0
assert list(a["layer_sizes"]) == [784, 256, 128, 10]
assert json.loads(a["config"])["checkpoint"].endswith("ck5")
assert c["rng/seed"][0] == 42
for t in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"):
    assert np.array_equal(c["params/" + t][:], m[t][:]), t
    assert c["optimizer/exp_avg/" + t].shape == m[t].shape
    assert (c["optimizer/exp_avg_sq/" + t][:] >= 0).all()
PY
h5dump -A "$WORK/ck5/step-0000000050/state.h5" >"$WORK/dump.txt" ||
    fail "h5dump cannot read the checkpoint"
grep -q 'DATASET "fc1.weight"' "$WORK/dump.txt" && grep -q 'GROUP "exp_avg_sq"' "$WORK/dump.txt" ||
    fail "h5dump shows no tensors"
pass "h5py and h5dump read a checkpoint; its parameters equal model.h5 at step 50"

# a format-1 checkpoint (no shuffle_block attribute) still resumes
cp -r "$WORK/ck5" "$WORK/ck5v1"
"$PY" - "$WORK/ck5v1/step-0000000050" <<'PY'
import hashlib, json, os, sys
import h5py
d = sys.argv[1]
with h5py.File(d + "/state.h5", "r+") as f:
    assert f.attrs["shuffle_block"] > 0
    del f.attrs["shuffle_block"]
    f.attrs["format_version"] = 1
m = json.load(open(d + "/MANIFEST.json"))
data = open(d + "/state.h5", "rb").read()
m["objects"][0].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
json.dump(m, open(d + "/MANIFEST.json", "w"))
PY
train 2 --checkpoint "$WORK/ck5v1" --max-steps 60 >/dev/null 2>"$WORK/v1.err" ||
    fail "resume from a format-1 checkpoint: $(tail -3 "$WORK/v1.err")"
grep -q "resumed from .*step-0000000050: step 50" "$WORK/v1.err" ||
    fail "a format-1 checkpoint was not resumed: $(grep -i checkpoint "$WORK/v1.err" | head -3)"
pass "a format-1 checkpoint (no shuffle_block) resumes"

train 1 --checkpoint "$WORK/ck6" --checkpoint-every-steps 40 --keep-checkpoints 2 \
    --max-steps 200 >/dev/null 2>"$WORK/g.err" || fail "retention run"
n=$(ls "$WORK/ck6" | wc -l)
[[ $n -eq 2 && -d $WORK/ck6/step-0000000200 && -d $WORK/ck6/step-0000000160 ]] ||
    fail "retention kept: $(ls "$WORK/ck6")"
pass "--keep-checkpoints 2 keeps steps 160 and 200 of 40, 80, ..., 200"
