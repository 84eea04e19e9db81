#!/usr/bin/python3
"""test_imds.py: checks the IMDS stand-in (tests/imds/imds.py).

Starts the server on free loopback ports and checks each behaviour it takes
from AWS's IMDSv2 documentation, plus its control API, and that botocore's
credential chain reads the role's keys from it. Each check prints PASS or
FAIL with its name; any FAIL makes the exit status 1. Run it with
/usr/bin/python3 (Debian's, which has botocore).
"""

import calendar
import http.client
import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
SERVER = HERE / "imds.py"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ROLE = "spotrun-test"
FAILURES = []
SERVERS = []         # every process started, killed at exit if still running


def check(name, cond, detail=""):
    print(f"{'PASS' if cond else 'FAIL'} {name}" + ("" if cond else f": {detail}"),
          flush=True)
    if not cond:
        FAILURES.append(name)


def seconds(stamp):
    """ "2017-09-18T08:22:00Z" -> Unix seconds."""
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


class Server:
    """One imds.py process on a free port; stopped with SIGTERM."""

    def __init__(self, workdir, *args):
        # stderr goes to a file, which no amount of --verbose output fills.
        name = pathlib.Path(workdir) / f"server{len(SERVERS)}"
        self.port_file = name.with_suffix(".port")
        self.stderr_file = name.with_suffix(".stderr")
        with open(self.stderr_file, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(SERVER), "--port", "0",
                 "--port-file", str(self.port_file), *args],
                stdout=subprocess.PIPE, stderr=err, text=True)
        SERVERS.append(self.proc)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise RuntimeError(f"imds.py did not start: {self.stderr_file.read_text()}")
        self.ready = json.loads(line)
        self.ready_at = time.time()
        self.port = self.ready["port"]

    def request(self, method, path, headers=None, body=None):
        """-> (status, headers as a dict with lower-case names, body text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return (resp.status, {k.lower(): v for k, v in resp.getheaders()},
                    resp.read().decode())
        finally:
            conn.close()

    def token(self, ttl=60):
        status, _, body = self.request("PUT", "/latest/api/token", {TTL_HEADER: str(ttl)})
        if status != 200:
            raise RuntimeError(f"token PUT answered {status}")
        return body

    def get(self, path, token):
        return self.request("GET", path, {TOKEN_HEADER: token})

    def control(self, method, what, obj=None):
        body = json.dumps(obj) if obj is not None else None
        status, _, text = self.request(method, "/__control/" + what, body=body)
        return status, json.loads(text)

    def stop(self, sig=signal.SIGTERM):
        """-> (exit status or None if it did not exit, stderr)."""
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        return rc, self.stderr_file.read_text()


def sleep_until(t):
    time.sleep(max(0.0, t - time.time()))


def poll(fn, until):
    """Call fn() until it returns something true or time `until` passes."""
    while True:
        out = fn()
        if out or time.time() >= until:
            return out
        time.sleep(0.1)


def check_instance_action(name, status, headers, body, action):
    """The documented shape: 200, text/plain, {"action": ..., "time": ...}."""
    check(f"{name}: 200", status == 200, f"status {status}")
    check(f"{name}: Content-Type text/plain",
          headers.get("content-type") == "text/plain", headers.get("content-type"))
    doc = json.loads(body) if status == 200 else {}
    check(f"{name}: exactly action and time", sorted(doc) == ["action", "time"], body)
    check(f"{name}: action {action}", doc.get("action") == action, body)
    check(f"{name}: time format", bool(TIME_RE.match(doc.get("time", ""))), body)
    check(f"{name}: body in AWS's form",
          body == f'{{"action": "{action}", "time": "{doc.get("time")}"}}', body)
    return doc


def check_rebalance(name, status, headers, body):
    check(f"{name}: 200", status == 200, f"status {status}")
    check(f"{name}: Content-Type text/plain",
          headers.get("content-type") == "text/plain", headers.get("content-type"))
    doc = json.loads(body) if status == 200 else {}
    check(f"{name}: exactly noticeTime", sorted(doc) == ["noticeTime"], body)
    check(f"{name}: time format", bool(TIME_RE.match(doc.get("noticeTime", ""))), body)
    check(f"{name}: body in AWS's form",
          body == f'{{"noticeTime": "{doc.get("noticeTime")}"}}', body)
    return doc


def test_main_server(workdir):
    """Tokens, notices from the command line and the control API, the
    instance role, the log and shutdown, on one server."""
    after, lead, lifetime = 4, 60, 4
    launched = time.time()
    srv = Server(workdir, "--instance-action-after", str(after), "--action", "stop",
                 "--action-lead", str(lead), "--rebalance-after", str(after),
                 "--role", ROLE, "--credentials-expire-in", str(lifetime), "--verbose")
    check("ready line", srv.ready == {"ready": True, "port": srv.port,
                                      "endpoint": f"http://127.0.0.1:{srv.port}"},
          srv.ready)
    check("port file", srv.port_file.read_text().strip() == str(srv.port))
    issued = []          # every token and secret handed out, for the log check

    # Token PUT.
    status, headers, token = srv.request("PUT", "/latest/api/token", {TTL_HEADER: "21600"})
    issued.append(token)
    check("token PUT: 200 and a token", status == 200 and len(token) > 20, (status, token))
    check("token PUT: TTL echoed", headers.get(TTL_HEADER.lower()) == "21600", headers)
    other = srv.token()
    issued.append(other)
    check("token PUT: each token fresh", other != token)
    for label, hdrs in (("missing", {}), ("0", {TTL_HEADER: "0"}),
                        ("21601", {TTL_HEADER: "21601"}), ("-5", {TTL_HEADER: "-5"}),
                        ("1.5", {TTL_HEADER: "1.5"}), ("abc", {TTL_HEADER: "abc"})):
        status, _, _ = srv.request("PUT", "/latest/api/token", hdrs)
        check(f"token PUT: TTL {label} -> 400", status == 400, f"status {status}")
    status, _, _ = srv.request("PUT", "/latest/api/token",
                               {TTL_HEADER: "60", "X-Forwarded-For": "203.0.113.7"})
    check("token PUT: X-Forwarded-For -> 403", status == 403, f"status {status}")
    status, _, _ = srv.request("PUT", "/2021-03-23/api/token", {TTL_HEADER: "60"})
    check("token PUT: version-specific path -> 403", status == 403, f"status {status}")

    # Short-lived token: good now, expired after its TTL.
    short = srv.token(ttl=1)
    issued.append(short)
    short_at = time.time()
    status, _, _ = srv.get("/latest/meta-data/instance-id", short)
    check("GET with a fresh TTL-1 token -> 200", status == 200, f"status {status}")

    # GET needs a valid token; IMDSv1 is not served.
    status, _, _ = srv.request("GET", "/latest/meta-data/instance-id")
    check("GET without token -> 401", status == 401, f"status {status}")
    status, _, _ = srv.get("/latest/meta-data/instance-id", "AQAEbogus")
    check("GET with bogus token -> 401", status == 401, f"status {status}")
    status, _, _ = srv.get("/latest/meta-data/instance-id", "")
    check("GET with empty token -> 401", status == 401, f"status {status}")
    for method in ("POST", "DELETE"):
        status, headers, _ = srv.request(method, "/latest/meta-data/", {TOKEN_HEADER: token})
        check(f"{method} -> 405", status == 405, f"status {status}")
    status, headers, body = srv.request("HEAD", "/latest/meta-data/instance-id",
                                        {TOKEN_HEADER: token})
    check("HEAD with token -> 200, no body", status == 200 and body == "", (status, body))

    # Probing items.
    status, headers, body = srv.get("/latest/meta-data/", token)
    listing = body.split("\n")
    check("meta-data/ listing", status == 200 and {"instance-id", "instance-type",
          "placement/", "iam/"} <= set(listing), body)
    check("meta-data/ listing is text/plain",
          headers.get("content-type") == "text/plain", headers)
    check("meta-data/ lists no spot/ or events/ before a notice",
          "spot/" not in listing and "events/" not in listing, body)
    status, _, body = srv.get("/latest/meta-data/instance-id", token)
    check("instance-id", status == 200 and re.match(r"^i-[0-9a-f]{8,17}$", body), body)
    status, _, body = srv.get("/latest/meta-data/instance-type", token)
    check("instance-type", status == 200 and "." in body, body)
    status, _, body = srv.get("/latest/meta-data/placement/availability-zone", token)
    check("placement/availability-zone",
          status == 200 and re.match(r"^[a-z]+-[a-z]+-\d[a-z]$", body), body)
    status, _, _ = srv.get("/latest/meta-data/no-such-item", token)
    check("unknown path -> 404", status == 404, f"status {status}")

    # No notice yet.
    status, _, _ = srv.get("/latest/meta-data/spot/instance-action", token)
    check("instance-action before notice -> 404", status == 404, f"status {status}")
    status, _, _ = srv.get("/latest/meta-data/events/recommendations/rebalance", token)
    check("rebalance before notice -> 404", status == 404, f"status {status}")

    # Instance role.
    status, _, body = srv.get("/latest/meta-data/iam/security-credentials/", token)
    check("security-credentials/ -> role name, no line feed",
          status == 200 and body == ROLE, repr(body))
    fetched = time.time()
    status, headers, body = srv.get(f"/latest/meta-data/iam/security-credentials/{ROLE}", token)
    creds = json.loads(body) if status == 200 else {}
    issued += [creds.get("SecretAccessKey", "-"), creds.get("Token", "-")]
    check("credentials: 200 text/plain",
          status == 200 and headers.get("content-type") == "text/plain", (status, headers))
    check("credentials: fields",
          sorted(creds) == sorted(["Code", "LastUpdated", "Type", "AccessKeyId",
                                   "SecretAccessKey", "Token", "Expiration"]), body)
    check("credentials: Code Success, Type AWS-HMAC",
          creds.get("Code") == "Success" and creds.get("Type") == "AWS-HMAC", body)
    check("credentials: ASIA key id and non-empty secret and token",
          creds.get("AccessKeyId", "").startswith("ASIA") and creds.get("SecretAccessKey")
          and creds.get("Token"), body)
    times_ok = all(TIME_RE.match(creds.get(k, "")) for k in ("LastUpdated", "Expiration"))
    check("credentials: Expiration = now + lifetime", times_ok and
          abs(seconds(creds["Expiration"]) - (fetched + lifetime)) <= 1.5, body)
    _, _, again = srv.get(f"/latest/meta-data/iam/security-credentials/{ROLE}", token)
    check("credentials: same keys before half the lifetime",
          json.loads(again).get("AccessKeyId") == creds.get("AccessKeyId"))
    status, _, _ = srv.get("/latest/meta-data/iam/security-credentials/other-role", token)
    check("credentials: other role -> 404", status == 404, f"status {status}")
    status, _, body = srv.get("/latest/meta-data/iam/info", token)
    info = json.loads(body) if status == 200 else {}
    check("iam/info", info.get("Code") == "Success" and
          info.get("InstanceProfileArn", "").endswith(f":instance-profile/{ROLE}"), body)

    sleep_until(short_at + 1.3)
    status, _, _ = srv.get("/latest/meta-data/instance-id", short)
    check("GET with an expired token (TTL 1) -> 401", status == 401, f"status {status}")

    sleep_until(fetched + lifetime / 2 + 0.3)
    _, _, body = srv.get(f"/latest/meta-data/iam/security-credentials/{ROLE}", token)
    rotated = json.loads(body)
    issued += [rotated["SecretAccessKey"], rotated["Token"]]
    check("credentials: new keys after half the lifetime",
          rotated["AccessKeyId"] != creds.get("AccessKeyId") and
          seconds(rotated["Expiration"]) > seconds(creds.get("Expiration", "1970-01-01T00:00:00Z")),
          body)

    # Notices announced by the command line.
    path_ia = "/latest/meta-data/spot/instance-action"
    path_rb = "/latest/meta-data/events/recommendations/rebalance"
    got = poll(lambda: srv.get(path_ia, token)[0] == 200, srv.ready_at + after + 2)
    check("--instance-action-after: notice appears", got)
    doc_ia = check_instance_action("--instance-action-after", *srv.get(path_ia, token), "stop")
    doc_rb = check_rebalance("--rebalance-after", *srv.get(path_rb, token))
    if doc_ia and doc_rb:
        announced = seconds(doc_rb["noticeTime"])
        check("--rebalance-after: noticeTime = start + after",
              int(launched) + after - 1 <= announced <= srv.ready_at + after, doc_rb)
        check("--instance-action-after: time = announce + lead",
              seconds(doc_ia["time"]) == announced + lead, (doc_ia, doc_rb))
    status, _, body = srv.get("/latest/meta-data/spot/", token)
    check("spot/ lists instance-action only (no termination-time for stop)",
          status == 200 and body == "instance-action", repr(body))
    status, _, body = srv.get("/latest/meta-data/", token)
    check("meta-data/ lists spot/ and events/ once announced",
          {"spot/", "events/"} <= set(body.split("\n")), body)

    # DELETE clears both.
    status, state = srv.control("DELETE", "notice")
    check("DELETE /__control/notice: 200, state empty", status == 200 and
          state["instance-action"] is None and state["rebalance"] is None, state)
    check("DELETE: instance-action 404 again", srv.get(path_ia, token)[0] == 404)
    check("DELETE: rebalance 404 again", srv.get(path_rb, token)[0] == 404)

    # Notices announced through the control API.
    before = time.time()
    status, _ = srv.control("POST", "notice", {"kind": "instance-action",
                                               "action": "terminate", "in": 0, "lead": 120})
    status2, state = srv.control("POST", "notice", {"kind": "rebalance", "in": 0})
    after_post = time.time()
    check("POST /__control/notice: 200", status == 200 and status2 == 200, (status, status2))
    doc_ia = check_instance_action("control instance-action", *srv.get(path_ia, token),
                                   "terminate")
    doc_rb = check_rebalance("control rebalance", *srv.get(path_rb, token))
    if doc_ia and doc_rb:
        announced = seconds(state["instance-action"]["announce_at"])
        check("control instance-action: time = announce + lead",
              int(before) <= announced <= after_post and
              seconds(doc_ia["time"]) == announced + 120, (doc_ia, state))
        check("control rebalance: noticeTime = announce time",
              doc_rb["noticeTime"] == state["rebalance"]["announce_at"] and
              int(before) <= seconds(doc_rb["noticeTime"]) <= after_post, (doc_rb, state))
        status, _, body = srv.get("/latest/meta-data/spot/termination-time", token)
        check("termination-time = instance-action time for terminate",
              status == 200 and body == doc_ia["time"], (status, body))
    _, state = srv.control("GET", "state")
    check("GET /__control/state shows both", state["instance-action"]["announced"] and
          state["rebalance"]["announced"] and
          state["instance-action"]["document"] == doc_ia, state)

    # A notice scheduled for later stays absent until its time.
    srv.control("DELETE", "notice")
    posted = time.time()
    srv.control("POST", "notice", {"kind": "rebalance", "in": 1})
    check("control rebalance in 1 s: 404 at first", srv.get(path_rb, token)[0] == 404)
    _, state = srv.control("GET", "state")
    check("control rebalance in 1 s: state says pending",
          state["rebalance"]["announced"] is False, state)
    got = poll(lambda: srv.get(path_rb, token)[0] == 200, posted + 3)
    check("control rebalance in 1 s: 200 after it", got and time.time() >= posted + 1)

    # Control API errors.
    for label, obj in (("unknown kind", {"kind": "reboot"}),
                       ("bad action", {"kind": "instance-action", "action": "explode"}),
                       ("negative in", {"kind": "rebalance", "in": -1}),
                       ("in as a string", {"kind": "rebalance", "in": "5"}),
                       ("bad lead", {"kind": "instance-action", "lead": "soon"})):
        status, _ = srv.control("POST", "notice", obj)
        check(f"POST /__control/notice {label} -> 400", status == 400, f"status {status}")
    status, _, _ = srv.request("POST", "/__control/notice", body="{not json")
    check("POST /__control/notice bad JSON -> 400", status == 400, f"status {status}")
    status, _ = srv.control("GET", "notice")
    check("GET /__control/notice -> 405", status == 405, f"status {status}")

    # The request log.
    status, log = srv.control("GET", "log")
    check("log: 200 and a list", status == 200 and isinstance(log, list) and log, status)
    check("log: entry fields", all(sorted(e) == ["method", "path", "status", "time", "token"]
                                   for e in log), log[:2])
    check("log: control requests left out",
          not any(e["path"].startswith("/__control/") for e in log))
    check("log: token PUT recorded", any(e["method"] == "PUT" and
          e["path"] == "/latest/api/token" and e["status"] == 200 for e in log))
    check("log: GET without token recorded as such", any(
        e["method"] == "GET" and not e["token"] and e["status"] == 401 for e in log))
    polls = [e for e in log if e["path"] == path_ia]
    check("log: instance-action polls recorded with token",
          len(polls) >= 3 and all(e["token"] for e in polls), polls[:3])
    check("log: times in order", all(a["time"] <= b["time"] for a, b in zip(log, log[1:])))

    # Shutdown.
    rc, stderr = srv.stop()
    check("SIGTERM: exits 0", rc == 0, f"exit status {rc}")
    check("--verbose: requests logged to stderr",
          f"GET {path_ia} -> 200 (token)" in stderr, stderr[-500:])
    check("--verbose: no token or secret in the log",
          not any(s and s in stderr for s in issued))


def test_second_server(workdir):
    """No role, a lower TTL limit, hibernation from the command line."""
    srv = Server(workdir, "--max-token-ttl", "60", "--instance-action-after", "0",
                 "--action", "hibernate")
    status, _, _ = srv.request("PUT", "/latest/api/token", {TTL_HEADER: "61"})
    check("--max-token-ttl 60: TTL 61 -> 400", status == 400, f"status {status}")
    token = srv.token(60)
    status, _, _ = srv.get("/latest/meta-data/iam/security-credentials/", token)
    check("no --role: security-credentials/ -> 404", status == 404, f"status {status}")
    _, _, body = srv.get("/latest/meta-data/", token)
    check("no --role: iam/ not listed", "iam/" not in body.split("\n"), body)
    doc = check_instance_action("hibernate", *srv.get(
        "/latest/meta-data/spot/instance-action", token), "hibernate")
    _, state = srv.control("GET", "state")
    check("hibernate: no two-minute lead by default",
          doc.get("time") == state["instance-action"]["announce_at"], (doc, state))
    rc, _ = srv.stop(signal.SIGINT)
    check("SIGINT: exits 0", rc == 0, f"exit status {rc}")


def test_fixed_keys(workdir):
    """Keys given on the command line are the ones handed out."""
    srv = Server(workdir, "--role", ROLE, "--access-key", "AKIDSPOTRUN",
                 "--secret-key", "spotrun-secret", "--session-token", "spotrun-token",
                 "--credentials-expire-in", "600")
    token = srv.token()
    _, _, body = srv.get(f"/latest/meta-data/iam/security-credentials/{ROLE}", token)
    creds = json.loads(body)
    check("fixed keys: handed out as given",
          (creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]) ==
          ("AKIDSPOTRUN", "spotrun-secret", "spotrun-token"), body)
    check("fixed keys: Expiration = LastUpdated + lifetime",
          seconds(creds["Expiration"]) - seconds(creds["LastUpdated"]) == 600, body)
    botocore_reads_credentials(srv)
    srv.stop()
    bad = subprocess.run([sys.executable, str(SERVER), "--access-key", "AKID"],
                         capture_output=True, text=True, timeout=10)
    check("keys without --role or their partners: usage error", bad.returncode == 2,
          bad.stderr)


BOTOCORE_CLIENT = """
import json, botocore.session
creds = botocore.session.Session().get_credentials()
print(json.dumps([creds.method, creds.access_key, creds.secret_key, creds.token]))
"""


def botocore_reads_credentials(srv):
    """botocore's credential chain, with nothing but IMDS to find, gets the
    role's keys through IMDSv2 alone (Debian's botocore in /usr/bin/python3)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_SERVICE_ENDPOINT=srv.ready["endpoint"],
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    start = len(srv.control("GET", "log")[1])
    out = subprocess.run(["/usr/bin/python3", "-c", BOTOCORE_CLIENT], env=env,
                         capture_output=True, text=True, timeout=30)
    got = json.loads(out.stdout) if out.returncode == 0 else out.stderr[-300:]
    check("botocore: credentials from the role",
          got == ["iam-role", "AKIDSPOTRUN", "spotrun-secret", "spotrun-token"], got)
    log = srv.control("GET", "log")[1][start:]
    check("botocore: token PUT first, every GET with a token",
          log and log[0]["method"] == "PUT" and
          all(e["token"] and e["status"] == 200 for e in log[1:]), log)


def main():
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="imds-test-") as workdir:
        for test in (test_main_server, test_second_server, test_fixed_keys):
            try:
                test(workdir)
            except Exception:                       # report, then go on
                traceback.print_exc()
                check(f"{test.__name__} ran to the end", False)
        for proc in SERVERS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{len(FAILURES)} failed; {time.time() - started:.1f} s", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
