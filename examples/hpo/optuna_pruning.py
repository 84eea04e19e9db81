#!/usr/bin/python3
"""optuna_pruning.py: an Optuna study whose trials are spotrun runs, pruned
by Optuna's MedianPruner from the metrics lines spotrun prints.

Each trial starts `spotrun train` with the suggested hyperparameters and
reads its stdout line by line. Every metrics line

    epoch=3 step=705 train_loss=0.3512 val_loss=0.3861 val_accuracy=0.8712 ...

is reported with trial.report(val_loss, epoch). When trial.should_prune()
says the trial is worse than the median of the completed trials at that
epoch, the process gets the signal spotrun treats as an interruption
(SIGTERM; SIGUSR1 to mpirun with --mpi-np): it stops after the current
step, commits a checkpoint if it has --checkpoint, and exits 75. The trial
then raises optuna.TrialPruned. The trial's value is its best objective.

    /usr/bin/python3 examples/hpo/optuna_pruning.py \\
        --data fm/train --val-data fm/test --trials 20 --epochs 8

With --storage sqlite:///study.db and --study-name, several copies of this
script (on several machines) share one study, and a rerun continues it.
Needs Optuna (Debian: apt-get install python3-optuna).
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import optuna


def metrics_line(line):
    """{name: value} of a metrics line, or None for any other line."""
    if not line.startswith("epoch="):
        return None
    out = {}
    for pair in line.split():
        name, sep, value = pair.partition("=")
        if sep:
            try:
                out[name] = float(value)    # "nan" and "-nan" too
            except ValueError:
                pass
    return out


class TrialFailed(Exception):
    """spotrun exited with an error: the trial is recorded as failed."""


def suggest(trial):
    """The search space: spotrun train options and their ranges."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        "hidden": trial.suggest_categorical("hidden",
                                            ["64", "128", "256,128"]),
        "weight-decay": trial.suggest_float("weight-decay", 1e-6, 1e-3,
                                            log=True),
    }


def make_objective(opts):
    def objective(trial):
        params = suggest(trial)
        workdir = os.path.join(opts.workdir, f"trial-{trial.number:04d}")
        os.makedirs(workdir, exist_ok=True)
        cmd = []
        if opts.mpi_np:
            cmd = [opts.mpirun, "--bind-to", "none", "-np", str(opts.mpi_np)]
        cmd += [opts.spotrun, "train", "--data", opts.data,
                "--epochs", str(opts.epochs), "--progress", "off",
                "--metrics-file", os.path.join(workdir, "metrics.jsonl")]
        if opts.val_data:
            cmd += ["--val-data", opts.val_data]
        for name, value in params.items():
            cmd += [f"--{name}", f"{value:.6g}" if isinstance(value, float)
                    else str(value)]
        cmd += opts.args
        stop = signal.SIGUSR1 if opts.mpi_np else signal.SIGTERM

        best, pruned = None, False
        with open(os.path.join(workdir, "stderr.log"), "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.DEVNULL, text=True,
                                    start_new_session=True)
            for line in proc.stdout:
                m = metrics_line(line)
                if m is None or opts.objective not in m:
                    continue
                epoch, value = int(m["epoch"]), m[opts.objective]
                trial.report(value, epoch)
                if not math.isnan(value) and (
                        best is None or (value < best if opts.direction ==
                                         "minimize" else value > best)):
                    best = value
                if trial.should_prune():
                    proc.send_signal(stop)
                    pruned = True
                    say(f"trial {trial.number}: pruned at epoch {epoch} "
                        f"({opts.objective}={value:.4f})")
                    break
            # Keep reading to the end: a closed pipe would kill spotrun
            # (SIGPIPE) before its checkpoint.
            for _ in proc.stdout:
                pass
            rc = proc.wait()
        trial.set_user_attr("exit_code", rc)
        trial.set_user_attr("workdir", workdir)
        if pruned and rc in (75, 0):
            raise optuna.TrialPruned()
        if rc != 0:
            raise TrialFailed(f"trial {trial.number}: spotrun exited {rc}: "
                              f"{last_line(workdir)}")
        if best is None:
            raise TrialFailed(f"trial {trial.number}: no {opts.objective} "
                              "in spotrun's metrics lines")
        say(f"trial {trial.number}: {opts.objective}={best:.4f} "
            f"{params_text(params)}")
        return best
    return objective


def params_text(params):
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def last_line(workdir):
    with open(os.path.join(workdir, "stderr.log"), errors="replace") as f:
        lines = [l.strip() for l in f if l.strip()]
    return lines[-1] if lines else ""


def say(msg):
    print(f"optuna: {msg}", flush=True)


def parse_args(argv):
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    else:
        extra = []
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to every spotrun train.")
    a = p.add_argument
    a("--data", required=True, help="training data URI")
    a("--val-data", help="validation data URI (needed for val_* objectives)")
    a("--trials", type=int, default=20, help="trials to run [20]")
    a("--epochs", type=int, default=8, help="epochs per trial [8]")
    a("--objective", default="val_loss", help="metric to optimise [val_loss]")
    a("--direction", choices=("minimize", "maximize"), default="minimize")
    a("--warmup-epochs", type=int, default=2,
      help="epochs before a trial can be pruned [2]")
    a("--startup-trials", type=int, default=3,
      help="completed trials before any pruning [3]")
    a("--seed", type=int, default=0, help="sampler seed [0]")
    a("--enqueue", metavar="JSON", action="append", default=[],
      help='parameters to try first, e.g. \'{"lr": 0.003, "hidden": "128", '
           '"weight-decay": 0.0001}\' (repeatable)')
    a("--storage", help="Optuna storage URL, e.g. sqlite:///study.db")
    a("--study-name", default="spotrun")
    a("--spotrun", default=os.environ.get("SPOTRUN") or
      shutil.which("spotrun") or "spotrun")
    a("--mpi-np", type=int, default=0, help="ranks per trial under mpirun")
    a("--mpirun", default=os.environ.get("MPIEXEC") or "mpirun")
    a("--workdir", help="per-trial metrics and logs [a temporary directory]")
    a("--results", metavar="FILE", help="write every trial as JSON here")
    opts = p.parse_args(argv)
    opts.args = extra
    if opts.objective.startswith("val_") and not opts.val_data:
        p.error(f"--objective {opts.objective} needs --val-data")
    return opts


def main(argv):
    opts = parse_args(argv)
    opts.workdir = opts.workdir or tempfile.mkdtemp(prefix="spotrun-optuna.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=opts.study_name, storage=opts.storage,
        load_if_exists=True, direction=opts.direction,
        sampler=optuna.samplers.TPESampler(seed=opts.seed),
        # Optuna counts steps from the value given to report(): epochs here,
        # so pruning may start at epoch warmup + 1.
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=opts.startup_trials,
            n_warmup_steps=opts.warmup_epochs + 1))
    for text in opts.enqueue:
        study.enqueue_trial(json.loads(text))
    say(f"{opts.trials} trials, {opts.objective} ({opts.direction}), "
        f"median pruning after epoch {opts.warmup_epochs}; logs in "
        f"{opts.workdir}")
    study.optimize(make_objective(opts), n_trials=opts.trials,
                   catch=(TrialFailed,))

    trials = study.get_trials(deepcopy=False)
    counts = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    say("done: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if opts.results:
        with open(opts.results, "w") as f:
            json.dump([{"number": t.number, "state": t.state.name,
                        "params": t.params, "value": t.value,
                        "intermediate": {str(k): v for k, v in
                                         t.intermediate_values.items()},
                        **t.user_attrs} for t in trials], f, indent=1)
    if counts.get("complete"):
        b = study.best_trial
        say(f"best: trial {b.number} {opts.objective}={b.value:.4f} "
            f"{params_text(b.params)}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
