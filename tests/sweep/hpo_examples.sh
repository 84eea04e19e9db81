# hpo_examples.sh: the hyperparameter-tuner examples in examples/hpo/
# against spotrun's real output.
#
#   1. SageMaker: sagemaker_hpo.py --dry-run builds a tuning request that
#      botocore's SageMaker model accepts; a run with its static
#      hyperparameters and a point of its ranges prints a log from which
#      every MetricDefinitions regex reads exactly the per-epoch values of
#      the metrics file, and nothing from the progress or summary lines.
#   2. Katib: the Experiment's trial command, its parameters filled in and
#      the S3 data swapped for the local copy, runs; Katib's StdOut
#      collector (its default filter, in the old and the current form)
#      finds the objective and the additional metrics once per epoch, with
#      the metrics file's values.
#   3. Optuna: optuna_pruning.py with two good and one too small
#      learning rate: the third trial is pruned (spotrun exits 75) and every
#      reported value is the one spotrun printed.
source "$(dirname "$0")/../integration/lib.sh"

HPO=$SOURCE_DIR/examples/hpo
"$SPOTRUN" train --help >"$WORK/help.txt"

# check_log LOG METRICS_FILE MODE SPEC: the metric extraction of one tuner
# (MODE sagemaker or katib) from LOG equals the metrics file.
check_log() {
    "$PY" - "$@" "$WORK/help.txt" <<'PY'
import json, re, sys
log_path, metrics_path, mode, spec_path, help_path = sys.argv[1:]
log = open(log_path).read().splitlines()
recs = [json.loads(l) for l in open(metrics_path) if l.strip()]
if len(recs) < 2:
    sys.exit(f"FAIL: only {len(recs)} epochs in {metrics_path}")

def printed(name, v):
    """A value as the metrics line prints it."""
    if name in ("epoch", "step"):
        return float(v)
    return round(v) if name == "samples_per_sec" else round(v, 4)

def same(name, got):
    if any(name not in r for r in recs):
        sys.exit(f"FAIL: {mode}: spotrun's metrics have no {name}")
    want = [printed(name, r[name]) for r in recs]
    if [float(g) for g in got] != want:
        sys.exit(f"FAIL: {mode}: {name} read as {got}, metrics file {want}")

if mode == "sagemaker":
    # SageMaker applies each definition to every log line; group 1 is
    # the value.
    defs = json.load(open(spec_path))["TrainingJobDefinition"][
        "AlgorithmSpecification"]["MetricDefinitions"]
    for d in defs:
        rx = re.compile(d["Regex"])
        got = [m.group(1) for m in map(rx.search, log) if m]
        same(d["Name"], got)
    print(f"sagemaker: {len(defs)} metric definitions, {len(recs)} epochs")
else:
    # Katib's TEXT parsing: lines holding a metric name, every match of
    # the filter whose name is one of the metrics.
    import yaml
    exp = yaml.safe_load(open(spec_path))["spec"]
    names = [exp["objective"]["objectiveMetricName"]] + \
        exp["objective"].get("additionalMetricNames", [])
    filters = [r"([\w|-]+)\s*=\s*((-?\d+)(\.\d+)?)",
               r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"]
    for f in filters:
        rx = re.compile(f)
        got = {n: [] for n in names}
        for line in log:
            if not any(n in line for n in names):
                continue
            for m in rx.finditer(line):
                if m.group(1).strip() in got:
                    got[m.group(1).strip()].append(m.group(2).strip())
        for n in names:
            same(n, got[n])
    print(f"katib: {', '.join(names)} per epoch with both default filters")
PY
}

# --- 1. SageMaker ----------------------------------------------------------
"$PY" "$HPO/sagemaker_hpo.py" --dry-run --image example/spotrun:latest \
    --role arn:aws:iam::123456789012:role/SageMakerRole \
    --data s3://example-bucket/fashion-mnist --output s3://example-bucket/hpo \
    --name spotrun-test --spot --epochs 3 >"$WORK/sm.json" 2>"$WORK/sm.err" ||
    fail "sagemaker_hpo.py --dry-run: $(cat "$WORK/sm.err")"
# The static hyperparameters and the low end of each range, as flags.
mapfile -t sm_args < <("$PY" - "$WORK/sm.json" "$WORK/help.txt" <<'PY'
import json, re, sys
req = json.load(open(sys.argv[1]))
known = set(re.findall(r"^\s+--([a-z0-9-]+)", open(sys.argv[2]).read(), re.M))
job = req["TrainingJobDefinition"]
cfg = req["HyperParameterTuningJobConfig"]
hp = dict(job["StaticHyperParameters"])
ranges = cfg["ParameterRanges"]
for r in ranges.get("ContinuousParameterRanges", []):
    hp[r["Name"]] = r["MinValue"]
for r in ranges.get("CategoricalParameterRanges", []):
    hp[r["Name"]] = r["Values"][0]
names = {d["Name"] for d in job["AlgorithmSpecification"]["MetricDefinitions"]}
obj = cfg["HyperParameterTuningJobObjective"]["MetricName"]
assert obj in names, f"objective {obj} has no metric definition"
assert not set(hp) - known, f"not spotrun options: {set(hp) - known}"
assert job["EnableManagedSpotTraining"] and \
    job["StoppingCondition"]["MaxWaitTimeInSeconds"] >= \
    job["StoppingCondition"]["MaxRuntimeInSeconds"]
for k, v in hp.items():
    print(f"--{k}")
    print(v)
PY
) || fail "the SageMaker request"
"$SPOTRUN" train --data "$FM/train" --val-data "$FM/test" "${sm_args[@]}" \
    --progress lines --progress-every-seconds 0.1 \
    --metrics-file "$WORK/sm.jsonl" >"$WORK/sm.log" 2>&1 ||
    fail "spotrun, SageMaker hyperparameters: $(tail -n 3 "$WORK/sm.log")"
grep -q 'step [0-9]*/234.* loss=' "$WORK/sm.log" ||
    fail "no progress lines in the log to tell apart"
check_log "$WORK/sm.log" "$WORK/sm.jsonl" sagemaker "$WORK/sm.json" ||
    fail "SageMaker metric definitions"
pass "SageMaker: the request validates; MetricDefinitions read the" \
    "metrics lines only"

# --- 2. Katib --------------------------------------------------------------
mapfile -t katib_cmd < <("$PY" - "$HPO/katib-experiment.yaml" "$FM" <<'PY'
import re, sys
import yaml
exp = yaml.safe_load(open(sys.argv[1]))
fm = sys.argv[2]
spec = exp["spec"]
assert exp["kind"] == "Experiment" and spec["metricsCollectorSpec"][
    "collector"]["kind"] == "StdOut"
params = {p["name"]: p for p in spec["parameters"]}
tmpl = spec["trialTemplate"]
tp = {t["name"]: t["reference"] for t in tmpl["trialParameters"]}
assert set(tp.values()) <= set(params), "a trial parameter references nothing"
c = tmpl["trialSpec"]["spec"]["template"]["spec"]["containers"]
c = [x for x in c if x["name"] == tmpl["primaryContainerName"]][0]

def sample(p):
    fs = p["feasibleSpace"]
    return fs["list"][0] if "list" in fs else fs["min"]

cmd = []
for arg in c["command"]:
    for name in re.findall(r"\$\{trialParameters\.(\w+)\}", arg):
        arg = arg.replace("${trialParameters.%s}" % name,
                          sample(params[tp[name]]))
    arg = re.sub(r"s3://BUCKET/fashion-mnist", fm, arg)
    arg = re.sub(r"--epochs=\d+", "--epochs=3", arg)
    cmd.append(arg)
assert cmd[:2] == ["spotrun", "train"], cmd
print("\n".join(cmd[1:]))
PY
) || fail "the Katib experiment"
# Katib's collector reads stdout and stderr together (2>&1).
"$SPOTRUN" "${katib_cmd[@]}" --metrics-file "$WORK/katib.jsonl" \
    >"$WORK/katib.log" 2>&1 ||
    fail "spotrun with the Katib trial command: $(tail -n 3 "$WORK/katib.log")"
check_log "$WORK/katib.log" "$WORK/katib.jsonl" katib \
    "$HPO/katib-experiment.yaml" || fail "Katib's collector"
pass "Katib: the trial command runs; the StdOut collector finds each" \
    "metric once per epoch"

# --- 3. Optuna -------------------------------------------------------------
"$PY" -c 'import optuna' 2>/dev/null ||
    fail "Optuna is missing: run scripts/setup.sh (python3-optuna)"
good='"hidden": "64", "weight-decay": 0.0001'
"$PY" "$HPO/optuna_pruning.py" --spotrun "$SPOTRUN" --data "$FM/train" \
    --val-data "$FM/test" --trials 3 --epochs 5 --startup-trials 2 \
    --enqueue "{\"lr\": 0.003, $good}" --enqueue "{\"lr\": 0.002, $good}" \
    --enqueue "{\"lr\": 0.0001, $good}" --workdir "$WORK/optuna" \
    --results "$WORK/optuna.json" -- --threads 1 >"$WORK/optuna.txt" 2>&1 ||
    fail "optuna_pruning.py: $(tail -n 5 "$WORK/optuna.txt")"
cat "$WORK/optuna.txt"
"$PY" - "$WORK/optuna.json" <<'PY' || fail "the Optuna study"
import json, os, sys
trials = json.load(open(sys.argv[1]))
states = [t["state"] for t in trials]
assert states == ["COMPLETE", "COMPLETE", "PRUNED"], states
for t in trials:
    recs = [json.loads(l) for l in
            open(os.path.join(t["workdir"], "metrics.jsonl")) if l.strip()]
    got = {int(k): v for k, v in t["intermediate"].items()}
    want = {r["epoch"]: round(r["val_loss"], 4) for r in recs}
    if t["state"] == "PRUNED":    # it may finish an epoch after the report
        want = {e: v for e, v in want.items() if e <= max(got)}
    assert got == want, (t["number"], got, want)
    if t["state"] == "COMPLETE":
        assert len(got) == 5 and t["exit_code"] == 0, t
        assert t["value"] == min(got.values()), t
    else:
        assert t["exit_code"] == 75 and 3 <= len(got) < 5, t
print("optuna: trials", states, "reported values match the metrics files")
PY
pass "Optuna: the small learning rate pruned (exit 75); reports match" \
    "spotrun's lines"
