"""Chaos suite: real interruptions of real 2-rank jobs that stream their data
from the S3 test server and checkpoint to it, checked against an
uninterrupted run.

Scenarios (one per invocation, --scenario NAME):
  interrupts  K >= 5 notices at random steps, cycling through SIGUSR1 to
              mpirun, SIGTERM to one rank and an EC2 spot instance-action
              (IMDS stand-in); every run must exit 75, the restart must
              resume at the step it stopped, and the end result must equal
              the uninterrupted run bit for bit, with a per-record log
              showing no record skipped or repeated.
  sigkill     M >= 10 SIGKILLs of the whole job at random moments while
              checkpoints upload to a slowed-down server; every restart
              must resume from a committed checkpoint that verifies, and
              the run must finish with the uninterrupted result.
  s3faults    10% of S3 requests fail (SlowDown, 500, reset): the run must
              finish with the uninterrupted result.
  rankkill    one rank SIGKILLed mid-run: the job must exit non-zero within
              the collective timeout and leave no process behind.
  rankhang    the same with one rank frozen (SIGSTOP) instead.

Each prints one line: scenario, runs, interruptions, lost steps, result.
Environment: SPOTRUN, MPIEXEC, SOURCE_DIR, TESTDATA (as set by ctest).
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

SPOTRUN = os.environ["SPOTRUN"]
MPIEXEC = os.environ.get("MPIEXEC", "mpirun")
SOURCE = os.environ["SOURCE_DIR"]
EPOCHS = 2
STEPS = EPOCHS * (60000 // 256)         # 468 steps of Fashion-MNIST


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Env:
    """The S3 test server, the IMDS stand-in and a scratch directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="spotrun-chaos.")
        self.procs = []
        s3 = self._start(["node", "--openssl-legacy-provider", "--single-threaded-gc",
                          f"{SOURCE}/tests/s3server/server.js", "--dir",
                          f"{self.dir}/s3", "--port", "0", "--bucket", "test",
                          "--port-file", f"{self.dir}/s3.port"], "s3.port")
        imds = self._start(["/usr/bin/python3", f"{SOURCE}/tests/imds/imds.py",
                            "--port", "0", "--port-file",
                            f"{self.dir}/imds.port"], "imds.port")
        self.s3 = f"http://127.0.0.1:{s3}"
        self.imds = f"http://127.0.0.1:{imds}"
        self.env = dict(os.environ,
                        AWS_ENDPOINT_URL_S3=self.s3,
                        AWS_ACCESS_KEY_ID="spotrun-test",
                        AWS_SECRET_ACCESS_KEY="spotrun-test-secret",
                        AWS_REGION="us-east-1",
                        AWS_EC2_METADATA_SERVICE_ENDPOINT=self.imds,
                        OMPI_ALLOW_RUN_AS_ROOT="1",
                        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        self.env.pop("AWS_PROFILE", None)
        self.env.pop("AWS_SESSION_TOKEN", None)
        subprocess.run([SPOTRUN, "data", "import", "fashion-mnist", "--out",
                        "s3://test/fm"], env=self.env, check=True,
                       stderr=subprocess.DEVNULL)

    def _start(self, argv, port_file):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        path = f"{self.dir}/{port_file}"
        for _ in range(100):
            if os.path.exists(path) and open(path).read().strip():
                return int(open(path).read())
            time.sleep(0.1)
        raise Failure(f"{argv[0]} did not start")

    def control(self, base, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method)
        return json.load(urllib.request.urlopen(req, timeout=10))

    def close(self):
        for p in self.procs:
            p.terminate()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def job_args(env, name, extra=()):
    # at a lower priority than this driver, so that on a busy machine it
    # still sees the step it waits for before the job runs far past it.
    # The job is its own session, so its own scheduler autogroup: the
    # group's nice value is what counts against this driver.
    return ["sh", "-c", "echo 10 >/proc/self/autogroup 2>/dev/null; "
            'exec nice -n 10 "$@"', "sh", MPIEXEC, "--allow-run-as-root", "--bind-to", "none", "-np", "2",
            SPOTRUN, "train", "--data", "s3://test/fm/train", "--epochs",
            str(EPOCHS), "--progress", "off", "--checkpoint",
            f"s3://test/{name}/ck", "--record-log", f"{env.dir}/{name}.log",
            "--spot-poll-seconds", "0.2", *extra]


def start(env, name, extra=()):
    out = open(f"{env.dir}/{name}.out", "a")
    return subprocess.Popen(job_args(env, name, extra), env=env.env,
                            stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def rank_pids(proc):
    """The rank processes of a job (its session, mpirun itself excluded)."""
    out = subprocess.run(["pgrep", "-s", str(proc.pid), "-f",
                          f"{SPOTRUN} train"], capture_output=True,
                         text=True).stdout.split()
    return [int(x) for x in out if int(x) != proc.pid]


def logged_steps(env, name):
    """Steps recorded so far in rank 0's record log."""
    try:
        with open(f"{env.dir}/{name}.log.rank0") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def wait_for_step(env, name, proc, target, timeout=60):
    t0 = time.time()
    while logged_steps(env, name) < target:
        if proc.poll() is not None:
            return False
        check(time.time() - t0 < timeout, f"{name}: no progress to {target}")
        time.sleep(0.005)
    return True


def digest(env, name):
    text = open(f"{env.dir}/{name}.out").read()
    done = [l for l in text.splitlines() if l.startswith("done ")]
    check(done, f"{name}: no final digest")
    return done[-1].split("params_sha256=")[1].strip()


def sequence(env, name):
    """{step: ids of all ranks in rank order}, the last run of a step
    winning, and how many step executions were repeats."""
    steps, repeats = {}, 0
    for path in sorted(glob.glob(f"{env.dir}/{name}.log.rank*"),
                       key=lambda p: int(p.rsplit("rank", 1)[1])):
        seen = {}
        for line in open(path):
            f = line.split()
            if len(f) < 2:
                continue
            step = int(f[0])
            if step in seen:
                repeats += 1
            seen[step] = f[1:]
        for step, ids in seen.items():
            steps.setdefault(step, []).append(ids)
    return {s: sum(v, []) for s, v in steps.items()}, repeats // 2


def reference(env):
    p = start(env, "ref")
    check(p.wait() == 0, "uninterrupted run failed")
    return digest(env, "ref"), sequence(env, "ref")[0]


def resumed_step(env, name):
    text = open(f"{env.dir}/{name}.out").read()
    lines = [l for l in text.splitlines() if "resumed from" in l]
    return int(lines[-1].split(": step ")[1].split(",")[0]) if lines else 0


def scenario_interrupts(env, rng):
    ref_digest, ref_seq = reference(env)
    kinds = ["SIGUSR1 to mpirun", "SIGTERM to a rank", "spot instance-action"]
    runs = interruptions = 0
    step = 0
    for k in range(6):
        target = step + rng.randint(25, 70)
        p = start(env, "int")
        runs += 1
        if k == 5 or target >= STEPS - 40:
            check(p.wait() == 0, "final run failed")
            break
        check(wait_for_step(env, "int", p, target),
              f"run {runs} ended before step {target}")
        kind = kinds[k % 3]
        if kind == "SIGUSR1 to mpirun":
            os.kill(p.pid, signal.SIGUSR1)
        elif kind == "SIGTERM to a rank":
            ranks = rank_pids(p)
            check(ranks, "no rank processes found")
            os.kill(rng.choice(ranks), signal.SIGTERM)
        else:
            env.control(env.imds, "POST", "/__control/notice",
                        {"kind": "instance-action", "action": "terminate",
                         "in": 0, "lead": 120})
        rc = p.wait(timeout=60)
        env.control(env.imds, "DELETE", "/__control/notice")
        check(rc == 75, f"{kind} at step ~{target}: exit {rc}, expected 75")
        interruptions += 1
        step = logged_steps(env, "int")
    check(resumed_step(env, "int") > 0, "the last run did not resume")
    seq, repeats = sequence(env, "int")
    check(sorted(seq) == list(range(1, STEPS + 1)), "steps missing in the log")
    check(seq == ref_seq, "the record sequence differs from the uninterrupted "
          "run")
    for e in range(EPOCHS):
        ids = [i for s in range(e * 234 + 1, (e + 1) * 234 + 1) for i in seq[s]]
        check(len(ids) == len(set(ids)), f"a record repeats in epoch {e + 1}")
    check(repeats == 0, f"{repeats} steps were executed twice")
    check(digest(env, "int") == ref_digest, "final parameters differ")
    return runs, interruptions, repeats


def committed_steps(env, name):
    out = subprocess.run([SPOTRUN, "ckpt", "ls", f"s3://test/{name}/ck"],
                         env=env.env, capture_output=True, text=True).stdout
    steps = []
    for l in out.splitlines()[1:]:
        f = l.split()
        # "... committed" or "... not committed"
        if len(f) >= 2 and f[0].isdigit() and f[-1] == "committed" \
                and f[-2] != "not":
            steps.append(int(f[0]))
    return steps


def scenario_sigkill(env, rng):
    ref_digest, _ = reference(env)
    # slow uploads, so that some kills land while one is in flight
    env.control(env.s3, "PUT", "/__spotrun/faults",
                {"rate": 0.3, "faults": ["slow"], "slow_ms": 400})
    extra = ("--checkpoint-every-steps", "20")
    runs = kills = lost = 0
    for k in range(10):
        before = logged_steps(env, "kill")
        p = start(env, "kill", extra)
        runs += 1
        if rng.random() < 0.2:          # while it starts up or resumes
            time.sleep(rng.uniform(0.1, 0.8))
        else:                           # a few to a few dozen steps in
            wait_for_step(env, "kill", p, before + rng.randint(5, 40))
        if p.poll() is not None:
            check(p.returncode == 0, f"run {runs} failed: {p.returncode}")
            break
        done_steps = logged_steps(env, "kill")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        for _ in range(100):            # the whole session must be gone
            if subprocess.run(["pgrep", "-s", str(p.pid)],
                              capture_output=True).returncode != 0:
                break
            time.sleep(0.05)
        kills += 1
        committed = committed_steps(env, "kill")
        newest = max(committed) if committed else 0
        lost += max(0, done_steps - newest)
        if committed:
            v = subprocess.run([SPOTRUN, "ckpt", "verify", "s3://test/kill/ck",
                                "--step", str(newest)], env=env.env,
                               capture_output=True, text=True)
            check(v.returncode == 0, f"checkpoint {newest} does not verify: "
                  f"{v.stdout.strip()} {v.stderr.strip()}")
        # the log counts this run's steps too; the restart re-runs the rest
        truncate_log(env, "kill", newest)
    env.control(env.s3, "PUT", "/__spotrun/faults", {"rate": 0})
    newest = max(committed_steps(env, "kill"), default=0)
    p = start(env, "kill", extra)
    runs += 1
    check(p.wait() == 0, "the final run failed")
    check(newest == 0 or resumed_step(env, "kill") == newest,
          f"the final run did not resume from step {newest}, the newest "
          "committed checkpoint")
    check(kills >= 10, f"only {kills} kills landed before the run finished")
    check(digest(env, "kill") == ref_digest, "final parameters differ")
    return runs, kills, lost


def truncate_log(env, name, step):
    """Keep only steps up to `step` in every rank's record log."""
    for path in glob.glob(f"{env.dir}/{name}.log.rank*"):
        lines = [l for l in open(path) if l.split() and
                 int(l.split()[0]) <= step]
        open(path, "w").writelines(lines)


def scenario_s3faults(env, rng):
    ref_digest, ref_seq = reference(env)
    env.control(env.s3, "PUT", "/__spotrun/faults",
                {"rate": 0.1, "faults": ["slowdown", "500", "reset"],
                 "seed": rng.randint(1, 1000)})
    p = start(env, "faulty", ("--checkpoint-every-steps", "50"))
    rc = p.wait()
    stats = env.control(env.s3, "GET", "/__spotrun/stats")
    env.control(env.s3, "PUT", "/__spotrun/faults", {"rate": 0})
    check(rc == 0, f"run under faults failed: {rc}")
    faults = sum(stats["faults"].values())
    check(faults > 0, "no faults were injected")
    check(sequence(env, "faulty")[0] == ref_seq, "record sequence differs")
    check(digest(env, "faulty") == ref_digest, "final parameters differ")
    return 2, faults, 0


def scenario_rankkill(env, rng):
    return lose_rank(env, rng, signal.SIGKILL)


def scenario_rankhang(env, rng):
    return lose_rank(env, rng, signal.SIGSTOP)


def lose_rank(env, rng, sig):
    """Kill or freeze one rank: the job must end non-zero within the bound."""
    timeout = 10
    p = start(env, "rank", ("--collective-timeout", str(timeout)))
    check(wait_for_step(env, "rank", p, rng.randint(30, 150)), "no progress")
    ranks = rank_pids(p)
    check(len(ranks) == 2, f"expected 2 ranks, found {ranks}")
    t0 = time.time()
    os.kill(rng.choice(ranks), sig)
    try:
        rc = p.wait(timeout=timeout + 20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise Failure("the job did not end within the bound")
    took = time.time() - t0
    check(rc != 0, "the job exited 0 after losing a rank")
    left = []
    for _ in range(20):                 # give the launcher time to reap
        time.sleep(0.25)
        left = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-s",
                               str(p.pid)], capture_output=True,
                              text=True).stdout.strip().splitlines()
        if not left:
            break
    check(not left, f"processes left behind: {left}")
    print(f"  job ended {took:.1f} s after the kill with exit {rc}")
    return 1, 1, 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True,
                    choices=["interrupts", "sigkill", "s3faults", "rankkill",
                             "rankhang"])
    ap.add_argument("--seed", type=int, default=int(time.time()))
    a = ap.parse_args()
    rng = random.Random(a.seed)
    env = Env()
    t0 = time.time()
    try:
        runs, events, lost = globals()["scenario_" + a.scenario](env, rng)
        result = "PASS"
    except Failure as e:
        runs = events = lost = "-"
        result = f"FAIL ({e})"
        out = sorted(glob.glob(f"{env.dir}/*.out"), key=os.path.getmtime)
        if out:
            sys.stdout.write("".join(open(out[-1]).readlines()[-15:]))
    finally:
        env.close()
    print(f"chaos {a.scenario}: seed={a.seed} runs={runs} "
          f"interruptions={events} lost_steps={lost} "
          f"seconds={time.time() - t0:.0f} result={result}")
    return 0 if result == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
