# train_mpi.sh: a 2-rank and a 4-rank (oversubscribed) run: metrics line
# and JSON file agree, ranks stay bit-identical (checked every few steps),
# the model file opens in h5py and h5dump with the right shapes.
source "$(dirname "$0")/lib.sh"

mpi 2 train --data "$FM/train" --val-data "$FM/test" --epochs 2 \
    --check-sync-every 25 --metrics-file "$WORK/m.jsonl" \
    --model-dir "$WORK/model" --step-metrics-file "$WORK/steps.jsonl" \
    --progress lines --progress-every-seconds 0.1 >"$WORK/out.txt" 2>"$WORK/err.txt" ||
    fail "2-rank run failed: $(tail -n 5 "$WORK/err.txt")"
grep -q '^option ' "$WORK/out.txt" || fail "no configuration table"
lines=$(grep -cE '^epoch=[0-9]+ step=[0-9]+ train_loss=[0-9.]+ val_loss=[0-9.]+ val_accuracy=[0-9.]+ samples_per_sec=[0-9]+ data_wait_s=[0-9.]+ epoch_s=[0-9.]+$' "$WORK/out.txt")
[[ $lines -eq 2 ]] || fail "expected 2 metrics lines, got $lines"
[[ $(metric step "$WORK/out.txt" 2) -eq 468 ]] || fail "step count"
grep -qE 'epoch 1/2 step [0-9]+/234' "$WORK/err.txt" ||
    fail "no progress lines on a non-terminal"
acc=$(metric val_accuracy "$WORK/out.txt")
"$PY" - "$WORK/m.jsonl" "$WORK/out.txt" "$WORK/steps.jsonl" <<'PY'
import json, re, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
lines = [l for l in open(sys.argv[2]) if l.startswith("epoch=")]
assert len(recs) == 2 == len(lines), (len(recs), len(lines))
for r, l in zip(recs, lines):
    kv = dict(p.split("=") for p in l.split())
    for k in ("epoch", "step"):
        assert int(kv[k]) == r[k], k
    for k in ("train_loss", "val_loss", "val_accuracy"):
        assert abs(float(kv[k]) - r[k]) < 1e-4, k
steps = [json.loads(l) for l in open(sys.argv[3])]
assert len(steps) == 468 and steps[-1]["step"] == 468
PY
"$PY" -c "import sys; sys.exit(0 if float('$acc') > 0.8 else 1)" ||
    fail "2 epochs reached only val_accuracy=$acc"
pass "2 ranks: metrics line and JSON agree, val_accuracy=$acc"

"$PY" - "$WORK/model/model.h5" "$acc" <<'PY'
import gzip, json, sys
import h5py
import numpy as np
f = h5py.File(sys.argv[1], "r")
assert f.attrs["format"] == "spotrun-model"
assert list(f.attrs["layer_sizes"]) == [784, 256, 128, 10]
shapes = {k: f[k].shape for k in f}
assert shapes == {"fc1.weight": (256, 784), "fc1.bias": (256,),
                  "fc2.weight": (128, 256), "fc2.bias": (128,),
                  "fc3.weight": (10, 128), "fc3.bias": (10,)}, shapes
assert json.loads(f.attrs["config"])["hidden"] == [256, 128]
assert int(f.attrs["step"]) == 468
# the saved parameters reproduce spotrun's own validation accuracy
d = "/usr/share/datasets/fashion-mnist"
x = np.frombuffer(gzip.open(f"{d}/t10k-images-idx3-ubyte.gz").read()[16:],
                  np.uint8).reshape(-1, 784).astype(np.float32) / 255
y = np.frombuffer(gzip.open(f"{d}/t10k-labels-idx1-ubyte.gz").read()[8:],
                  np.uint8)
h = x
for i in (1, 2, 3):
    h = h @ f[f"fc{i}.weight"][:].T + f[f"fc{i}.bias"][:]
    if i < 3:
        h = np.maximum(h, 0)
acc = (h.argmax(1) == y).mean()
assert abs(acc - float(sys.argv[2])) <= 0.001, (acc, sys.argv[2])
PY
h5dump -H "$WORK/model/model.h5" >"$WORK/dump.txt" ||
    fail "h5dump cannot read the model"
grep -q 'DATASET "fc1.weight"' "$WORK/dump.txt" || fail "h5dump shows no fc1.weight"
pass "model.h5 opens in h5py and h5dump; numpy inference on it gives val_accuracy=$acc"

mpi 4 train --data "$FM/train" --epochs 1 --max-steps 60 \
    --check-sync-every 5 --progress off >"$WORK/out4.txt" 2>"$WORK/err4.txt" ||
    fail "4-rank run failed: $(tail -n 5 "$WORK/err4.txt")"
grep -q '4 rank(s) x 1 thread(s), global batch 256 (64 per rank)' \
    "$WORK/err4.txt" || fail "4-rank slices: $(grep model "$WORK/err4.txt")"
[[ -n $(digest "$WORK/out4.txt") ]] || fail "4-rank run printed no digest"
pass "4 ranks on 2 cores: parameters identical across ranks every 5 steps"
