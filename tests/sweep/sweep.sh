# sweep.sh: scripts/sweep on small grids of real spotrun runs.
#
#   1. four trials, two at a time: two learning rates that train and one
#      far too small (1e-6) at two widths. The median rule must prune both
#      small-rate trials and keep the others; results.csv, results.md and
#      objective.png must exist, the PNG must be one, and every row must
#      agree with its trial's metrics file (epochs run, best objective and
#      its epoch, status, the epoch it was pruned at, where the rule held).
#   2. the same command again resumes: nothing runs, the table is the same;
#      a different grid into the same directory is refused.
#   3. under mpirun (2 ranks): the small-rate trial is pruned through
#      SIGUSR1 to mpirun and exits 75.
#   4. SIGTERM to the sweep stops the running trial with a checkpoint
#      (exit 75); the same command then resumes that trial from it.
#   5. bad specs exit 2 with a message; the example specs parse.
source "$(dirname "$0")/../integration/lib.sh"

SWEEP=$SOURCE_DIR/scripts/sweep
DATA=(--data "$FM/train" --val-data "$FM/test")

# check_sweep OUT TRIALS EPOCHS STATUS_BY_LR: the tables, the plot and
# sweep.json against each trial's metrics file. STATUS_BY_LR is
# "lr:status,...", the status every trial of that learning rate must have.
check_sweep() {
    "$PY" - "$@" <<'PY'
import csv, json, math, os, statistics, struct, sys

out, trials, planned = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
expect = sys.argv[4]
expect = dict(p.split(":") for p in expect.split(","))

def fail(msg):
    sys.exit(f"FAIL: {msg}")

for name in ("results.csv", "results.md", "objective.png", "sweep.json"):
    if not os.path.isfile(os.path.join(out, name)):
        fail(f"{name} missing in {out}")

# The plot: a PNG signature and an IHDR chunk with a plausible size.
png = open(os.path.join(out, "objective.png"), "rb").read()
if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
    fail("objective.png is not a PNG")
w, h = struct.unpack(">II", png[16:24])
if not (200 <= w <= 4000 and 200 <= h <= 4000) or b"IEND" not in png[-12:]:
    fail(f"objective.png: odd size {w}x{h} or truncated")

rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
doc = json.load(open(os.path.join(out, "sweep.json")))
if len(rows) != trials or len(doc["trials"]) != trials:
    fail(f"{len(rows)} rows in results.csv, expected {trials}")

# Each trial's own metrics file, as spotrun wrote it.
metrics = {}
for r in rows:
    path = os.path.join(out, "trials", r["trial"], "metrics.jsonl")
    recs = [json.loads(l) for l in open(path) if l.strip()]
    metrics[r["trial"]] = {rec["epoch"]: rec["val_loss"] for rec in recs}

completed = [r for r in rows if r["status"] == "completed"]
for r in rows:
    t, vals = r["trial"], metrics[r["trial"]]
    want = expect[r["lr"]]
    if r["status"] != want:
        fail(f"trial {t} (lr={r['lr']}) is {r['status']}, expected {want}")
    if sorted(vals) != list(range(1, len(vals) + 1)):
        fail(f"trial {t}: epochs {sorted(vals)} are not 1..n")
    if int(r["epochs"]) != len(vals):
        fail(f"trial {t}: table says {r['epochs']} epochs, "
             f"metrics file has {len(vals)}")
    best_epoch = min(vals, key=lambda e: (vals[e], e))
    if float(r["best_val_loss"]) != vals[best_epoch] or \
            int(r["best_epoch"]) != best_epoch:
        fail(f"trial {t}: table best {r['best_val_loss']} at "
             f"{r['best_epoch']}, metrics file {vals[best_epoch]} at "
             f"{best_epoch}")
    if float(r["last_val_loss"]) != vals[max(vals)]:
        fail(f"trial {t}: last value differs from the metrics file")
    if r["status"] == "completed":
        if len(vals) != planned or r["exit_code"] != "0":
            fail(f"trial {t}: completed with {len(vals)} of {planned} "
                 f"epochs, exit {r['exit_code']}")
    if r["status"] == "pruned":
        e = int(r["pruned_at_epoch"])
        if r["exit_code"] != "75":
            fail(f"trial {t}: pruned but exit {r['exit_code']}")
        if not (3 <= e <= len(vals) < planned):
            fail(f"trial {t}: pruned at epoch {e} after the warm-up of 2, "
                 f"ran {len(vals)} of {planned}")
        # The rule held: its best up to e is worse than the median of the
        # completed trials' values at e.
        best = min(v for k, v in vals.items() if k <= e)
        med = statistics.median(metrics[c["trial"]][e] for c in completed)
        if not best > med:
            fail(f"trial {t}: pruned at epoch {e} with best {best} "
                 f"not worse than the median {med}")

# sweep.json carries the same per-epoch values.
for tj in doc["trials"]:
    got = {int(e): v for e, v in tj["objective"].items()}
    if got != metrics[tj["trial"]]:
        fail(f"sweep.json trial {tj['trial']}: values differ from metrics")

# The Markdown table: one row per trial, ranked by best value, each row
# the CSV's values as printed.
md = [l for l in open(os.path.join(out, "results.md")) if l.startswith("| ")]
header = [c.strip() for c in md[0].strip().strip("|").split("|")]
body = [[c.strip() for c in l.strip().strip("|").split("|")] for l in md[2:]]
if header[:3] != ["rank", "trial", "status"] or len(body) != len(rows):
    fail(f"results.md: header {header[:3]}, {len(body)} rows")
by_trial = {r["trial"]: r for r in rows}
bests = []
for cells in body:
    m = dict(zip(header, cells))
    r = by_trial[m["trial"]]
    if m["status"] != r["status"] or m["epochs"] != r["epochs"] or \
            m["best_val_loss"] != f"{float(r['best_val_loss']):.4f}":
        fail(f"results.md row {cells} disagrees with results.csv {r}")
    bests.append(float(r["best_val_loss"]))
if bests != sorted(bests):
    fail("results.md is not ranked by the best value")
print(f"{len(rows)} trials: " + ", ".join(
    f"{r['trial']} lr={r['lr']} {r['status']} {r['epochs']} epochs "
    f"best {float(r['best_val_loss']):.4f}" for r in rows))
PY
}

# --- 1. a grid with pruning, two at a time ---------------------------------
grid=(--grid lr=0.003,0.000001 --grid hidden=32,48 --parallel 2
    --prune-warmup 2 --prune-min-trials 2)
"$SWEEP" "${grid[@]}" --out "$WORK/s1" -- "${DATA[@]}" --epochs 8 \
    >"$WORK/s1.txt" 2>&1 || fail "sweep exited $?: $(tail -n 5 "$WORK/s1.txt")"
cat "$WORK/s1.txt"
[[ $(grep -c ' start ' "$WORK/s1.txt") -eq 4 ]] || fail "not 4 trials started"
[[ $(grep -c ' done ' "$WORK/s1.txt") -eq 4 ]] || fail "not 4 trials done"
check_sweep "$WORK/s1" 4 8 "0.003:completed,0.000001:pruned" ||
    fail "results of the grid sweep"
pass "grid sweep: 2 completed, 2 pruned; tables and plot agree with the" \
    "metrics files"

# --- 2. the same command resumes; another grid is refused ------------------
cp "$WORK/s1/results.csv" "$WORK/s1.csv"
"$SWEEP" "${grid[@]}" --out "$WORK/s1" -- "${DATA[@]}" --epochs 8 \
    >"$WORK/s1b.txt" 2>&1 || fail "resumed sweep exited $?"
grep -q 'resuming: 4 of 4 trials already done' "$WORK/s1b.txt" ||
    fail "no resume: $(cat "$WORK/s1b.txt")"
! grep -q ' start ' "$WORK/s1b.txt" || fail "a finished trial ran again"
cmp -s "$WORK/s1.csv" "$WORK/s1/results.csv" || fail "results.csv changed"
rc=0
"$SWEEP" --grid lr=0.01 --out "$WORK/s1" -- "${DATA[@]}" \
    >"$WORK/other.txt" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q 'holds a different sweep' "$WORK/other.txt" ||
    fail "a different sweep into the same --out: rc=$rc $(cat "$WORK/other.txt")"
pass "same command resumes without running anything; another grid is refused"

# --- 3. under mpirun: pruned through SIGUSR1 to mpirun ---------------------
"$SWEEP" --grid lr=0.003,0.002,0.000001 --grid hidden=32 --mpi-np 2 \
    --mpirun "$MPIEXEC" --mpi-arg=--oversubscribe --prune-min-trials 2 \
    --out "$WORK/s2" -- "${DATA[@]}" --epochs 6 >"$WORK/s2.txt" 2>&1 ||
    fail "mpirun sweep exited $?: $(tail -n 5 "$WORK/s2.txt")"
cat "$WORK/s2.txt"
check_sweep "$WORK/s2" 3 6 "0.003:completed,0.002:completed,0.000001:pruned" ||
    fail "results of the mpirun sweep"
grep -q '2 rank(s)' "$WORK/s2/trials/000/stderr.log" ||
    fail "trials not on 2 ranks"
pass "mpirun sweep: the small learning rate pruned through SIGUSR1, exit 75"

# --- 4. SIGTERM to the sweep, then the same command resumes ---------------
term=(--grid lr=0.003 --grid hidden=64 --checkpoint-trials --out "$WORK/s3"
    -- "${DATA[@]}" --epochs 6)
"$SWEEP" "${term[@]}" >"$WORK/s3.txt" 2>&1 &
sweep_pid=$!
for ((i = 0; i < 300; i++)); do
    [[ -f $WORK/s3/trials/000/metrics.jsonl ]] &&
        (($(wc -l <"$WORK/s3/trials/000/metrics.jsonl") >= 2)) && break
    sleep 0.1
done
kill -TERM "$sweep_pid"
rc=0
wait "$sweep_pid" || rc=$?
[[ $rc -eq 75 ]] ||
    fail "SIGTERM to the sweep: exit $rc, expected 75: $(cat "$WORK/s3.txt")"
grep -q '000 done .*interrupted' "$WORK/s3.txt" ||
    fail "trial not interrupted: $(cat "$WORK/s3.txt")"
ls "$WORK/s3/trials/000/checkpoints" | grep -q '^step-' ||
    fail "no checkpoint left"
"$SWEEP" "${term[@]}" >"$WORK/s3b.txt" 2>&1 ||
    fail "resume exited $?: $(cat "$WORK/s3b.txt")"
grep -q '000 start .*(resuming)' "$WORK/s3b.txt" ||
    fail "not resumed: $(cat "$WORK/s3b.txt")"
grep -Eq 'training from step [1-9]' "$WORK/s3/trials/000/stderr.log" ||
    fail "trial started over instead of resuming from its checkpoint"
check_sweep "$WORK/s3" 1 6 "0.003:completed" || fail "results after the resume"
pass "SIGTERM: trial checkpointed and exit 75; the same command resumed it"

# --- 5. bad specs, example specs ----------------------------------------
bad() { # bad EXPECTED_MESSAGE ARGS...: exit 2 and the message
    local want=$1 rc=0
    shift
    "$SWEEP" "$@" --dry-run >"$WORK/bad.txt" 2>&1 || rc=$?
    [[ $rc -eq 2 ]] && grep -q -- "$want" "$WORK/bad.txt" ||
        fail "sweep $*: rc=$rc, expected 2 and '$want': $(cat "$WORK/bad.txt")"
}
bad "nothing to search"
bad "expected NAME=VALUE" --grid lr
bad "empty value" --grid lr=0.1,,0.2
bad "not a spotrun train option" --grid learning-rate=0.1
bad "cannot be a trial argument" --grid lr=0.1 -- --checkpoint "$WORK/c"
bad "both searched and fixed" --grid lr=0.1 -- --lr 0.2
bad "needs a random search" --dist lr=loguniform:1e-4:1e-2
bad "positive low bound" --random 3 --dist lr=loguniform:0:1
bad "only 2 distinct trials" --random 3 --grid lr=0.1,0.2
printf '{"params": {"lr": []}}' >"$WORK/empty.json"
bad "empty list of values" --spec "$WORK/empty.json"
printf '{"params": {"lr": [0.1]}, "epochs": 3}' >"$WORK/unknown.json"
bad "unknown key(s) epochs" --spec "$WORK/unknown.json"

for spec in "$SOURCE_DIR"/examples/sweeps/*.{json,yaml}; do
    FM=$FM "$SWEEP" --spec "$spec" --dry-run >"$WORK/dry.txt" 2>&1 ||
        fail "example $spec: $(cat "$WORK/dry.txt")"
    grep -q "$FM/train" "$WORK/dry.txt" || fail "example $spec: no data path"
    # a random search draws the same trials from the same seed
    FM=$FM "$SWEEP" --spec "$spec" --dry-run >"$WORK/dry2.txt" 2>&1
    cmp -s "$WORK/dry.txt" "$WORK/dry2.txt" ||
        fail "example $spec: not reproducible"
done
pass "bad specs exit 2 with a message; the example specs parse"
