#!/usr/bin/python3
"""imds.py: a loopback stand-in for the EC2 instance metadata service (IMDS).

Serves IMDSv2 as on an instance launched with HttpTokens=required: a session
token from PUT /latest/api/token is needed for every GET, and IMDSv1 requests
are refused. On top of a few static items it serves what spotrun reads on a
spot instance: the spot interruption notice (spot/instance-action), the
rebalance recommendation (events/recommendations/rebalance) and the instance
role's credentials (iam/security-credentials/<role>). Notices are announced
at times given on the command line or through a loopback-only control API
under /__control/, which also returns the log of the IMDS requests served.
See README.md for the AWS pages each behaviour follows.

Standard library only; run it with /usr/bin/python3.
"""

import argparse
import base64
import ipaddress
import json
import os
import re
import secrets
import signal
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

AWS_MAX_TOKEN_TTL = 21600          # six hours, the IMDSv2 limit
TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
CONTROL_PREFIX = "/__control/"
ACTIONS = ("terminate", "stop", "hibernate")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_DELAY = 86400                  # longest "announce in" or lead, seconds
TTL_RE = re.compile(r"[0-9]+")

# Static instance identity. The instance id is the one AWS's pages use.
INSTANCE_ID = "i-1234567890abcdef0"
INSTANCE_TYPE = "m5.xlarge"
AVAILABILITY_ZONE = "us-east-1a"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

# A version-specific token path such as /2021-03-23/api/token: 403.
VERSIONED_TOKEN_PATH = re.compile(r"^/[^/]+/api/token$")


def utc(seconds):
    """Unix seconds -> "2017-09-18T08:22:00Z" (whole seconds, UTC)."""
    return time.strftime(TIME_FORMAT, time.gmtime(int(seconds)))


def random_text(alphabet, n):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def default_lead(action):
    """Seconds between a notice and its action: two minutes, except that
    hibernation begins at once and so gets no lead."""
    return 0 if action == "hibernate" else 120


class Credentials:
    """The instance role's temporary credentials.

    A set is issued with Expiration = issue time + lifetime. A fetch made
    once half the lifetime has passed gets a new set (new keys, or the fixed
    keys from the command line with a new LastUpdated and Expiration). AWS
    only promises new credentials at least five minutes before expiry; the
    half-life rule meets that for any lifetime of ten minutes or more and
    lets tests see a rotation with a short lifetime.
    """

    def __init__(self, role, lifetime, fixed_keys):
        self.role = role
        self.lifetime = lifetime
        self.fixed_keys = fixed_keys        # (id, secret, token) or None
        self.profile_id = "AIPA" + random_text(string.ascii_uppercase + string.digits, 17)
        self.issued = 0.0
        self.keys = None

    def _issue(self, now):
        if self.fixed_keys:
            self.keys = self.fixed_keys
        else:
            self.keys = (
                "ASIA" + random_text(string.ascii_uppercase + string.digits, 16),
                random_text(string.ascii_letters + string.digits + "+/", 40),
                base64.b64encode(secrets.token_bytes(300)).decode())
        self.issued = now

    def document(self, now):
        """The JSON body of iam/security-credentials/<role>."""
        if self.keys is None or now - self.issued >= self.lifetime / 2:
            self._issue(now)
        key_id, secret, token = self.keys
        return imds_json({
            "Code": "Success",
            "LastUpdated": utc(self.issued),
            "Type": "AWS-HMAC",
            "AccessKeyId": key_id,
            "SecretAccessKey": secret,
            "Token": token,
            "Expiration": utc(self.issued + self.lifetime),
        })

    def info(self, now):
        """The JSON body of iam/info."""
        if self.keys is None:
            self._issue(now)
        return imds_json({
            "Code": "Success",
            "LastUpdated": utc(self.issued),
            "InstanceProfileArn":
                f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/{self.role}",
            "InstanceProfileId": self.profile_id,
        })


def imds_json(obj):
    """IAM documents as IMDS prints them: two-space indent, ' : ' between
    key and value."""
    return json.dumps(obj, indent=2, separators=(",", " : "))


class State:
    """Tokens, notices, credentials and the request log, shared by the
    handler threads under one lock.

    A notice is stored with the Unix time at which it is announced; until
    then the metadata item stays absent (404), so announcing "in N seconds"
    needs no timer.
    """

    def __init__(self, args):
        self.lock = threading.Lock()
        self.max_ttl = args.max_token_ttl
        self.tokens = {}                    # token -> monotonic expiry
        self.instance_action = None         # {"action", "lead", "at"}
        self.rebalance = None               # {"at"}
        self.log = []
        self.credentials = None
        if args.role:
            fixed = None
            if args.access_key:
                fixed = (args.access_key, args.secret_key, args.session_token)
            self.credentials = Credentials(args.role, args.credentials_expire_in, fixed)
        start = time.time()
        if args.instance_action_after is not None:
            lead = args.action_lead if args.action_lead is not None else default_lead(args.action)
            self.set_instance_action(args.action, start + args.instance_action_after, lead)
        if args.rebalance_after is not None:
            self.set_rebalance(start + args.rebalance_after)

    # Tokens -------------------------------------------------------------

    def new_token(self, ttl):
        now = time.monotonic()
        token = "AQAE" + secrets.token_urlsafe(42)
        with self.lock:
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
            self.tokens[token] = now + ttl
        return token

    def token_valid(self, token):
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    # Notices -------------------------------------------------------------

    def set_instance_action(self, action, at, lead):
        with self.lock:
            self.instance_action = {"action": action, "lead": lead, "at": at}

    def set_rebalance(self, at):
        with self.lock:
            self.rebalance = {"at": at}

    def clear_notices(self):
        with self.lock:
            self.instance_action = None
            self.rebalance = None

    def notices(self, now):
        """The documents of the notices announced by `now`, by kind."""
        out = {}
        with self.lock:
            ia, rb = self.instance_action, self.rebalance
        if ia and ia["at"] <= now:
            out["instance-action"] = {"action": ia["action"],
                                      "time": utc(int(ia["at"]) + ia["lead"])}
        if rb and rb["at"] <= now:
            out["rebalance"] = {"noticeTime": utc(rb["at"])}
        return out

    def describe(self, now):
        """The body of GET /__control/state."""
        shown = self.notices(now)
        with self.lock:
            ia, rb = self.instance_action, self.rebalance
        state = {"now": utc(now), "instance-action": None, "rebalance": None}
        if ia:
            state["instance-action"] = {
                "action": ia["action"], "lead": ia["lead"],
                "announce_at": utc(ia["at"]),
                "announced": "instance-action" in shown,
                "document": shown.get("instance-action")}
        if rb:
            state["rebalance"] = {
                "announce_at": utc(rb["at"]),
                "announced": "rebalance" in shown,
                "document": shown.get("rebalance")}
        return state

    # Metadata tree -----------------------------------------------------

    def tree(self, now):
        """The metadata under /latest/ as it stands now: a dict per
        directory, a string per item, or a function giving the string for
        items whose reading has effects (credentials rotate when fetched,
        not when listed). Items that do not exist at this moment
        (a notice not yet announced, a role not attached) are left out, so
        they answer 404 and are missing from their directory's listing."""
        meta = {
            "instance-id": INSTANCE_ID,
            "instance-life-cycle": "spot",
            "instance-type": INSTANCE_TYPE,
            "placement": {"availability-zone": AVAILABILITY_ZONE,
                          "region": REGION},
        }
        shown = self.notices(now)
        if "instance-action" in shown:
            doc = shown["instance-action"]
            spot = {"instance-action": json.dumps(doc)}
            # The older item, kept by AWS for compatibility: terminations only.
            if doc["action"] == "terminate":
                spot["termination-time"] = doc["time"]
            meta["spot"] = spot
        if "rebalance" in shown:
            meta["events"] = {"recommendations": {
                "rebalance": json.dumps(shown["rebalance"])}}
        if self.credentials:
            creds = self.credentials
            meta["iam"] = {
                "info": lambda: creds.info(now),
                "security-credentials": {creds.role: lambda: creds.document(now)}}
        return {"meta-data": meta}

    def lookup(self, path, now):
        """Body for a GET of `path`, or None for 404. A directory, asked for
        with or without its trailing slash, lists its entries one a line,
        subdirectories with a trailing slash; the last line has no line
        feed, which is what clients that use the body of
        iam/security-credentials/ as the role name rely on."""
        if not path.startswith("/latest/"):
            return None
        node = self.tree(now)
        rest = path[len("/latest/"):]
        parts = rest.rstrip("/").split("/") if rest.strip("/") else []
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        if not isinstance(node, dict):
            if path.endswith("/"):
                return None
            if callable(node):
                with self.lock:
                    return node()
            return node
        return "\n".join(k + "/" if isinstance(v, dict) else k
                         for k, v in sorted(node.items()))

    # Request log -------------------------------------------------------

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def log_copy(self):
        with self.lock:
            return list(self.log)


class Handler(BaseHTTPRequestHandler):
    """One connection. HTTP/1.1 with keep-alive, as IMDS serves it."""

    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    state = None        # set in main()
    verbose = False

    def dispatch(self):
        path = urlsplit(self.path).path
        self.metadata_request = not path.startswith(CONTROL_PREFIX)
        try:
            self.read_body()
        except ValueError:                  # a malformed length or chunk size
            self.close_connection = True
            self.reply_error(400, "Bad Request")
            return
        if self.metadata_request:
            self.serve_metadata(path)
        else:
            self.control(path)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = dispatch
    do_PATCH = do_OPTIONS = do_TRACE = dispatch

    def read_body(self):
        """Read any request body so the connection stays in step."""
        self.body = b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():   # trailers
                        pass
                    return
                self.body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.body = self.rfile.read(length)

    def reply(self, status, body="", ctype="text/plain", headers=()):
        self.note(status)
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def note(self, status):
        """Log the request before answering it, so that a client that has
        its answer finds it in /__control/log. Only metadata requests go
        there, so that a test sees its client's polling undisturbed by its
        own control calls."""
        path = urlsplit(self.path).path
        has_token = self.headers.get(TOKEN_HEADER) is not None
        if self.metadata_request:
            self.state.record({"method": self.command, "path": path,
                               "status": status, "token": has_token,
                               "time": time.time()})
        if self.verbose:
            sys.stderr.write(f"imds: {self.command} {path} -> {status}"
                             f"{' (token)' if has_token else ''}\n")

    def reply_error(self, status, reason, headers=()):
        return self.reply(status, f"{status} - {reason}", headers=headers)

    # IMDS ----------------------------------------------------------------

    def serve_metadata(self, path):
        if self.command == "PUT":
            if path == TOKEN_PATH:
                return self.put_token()
            if VERSIONED_TOKEN_PATH.match(path):
                return self.reply_error(403, "Forbidden")
            return self.reply_error(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
        if self.command not in ("GET", "HEAD"):
            allow = "PUT" if path == TOKEN_PATH else "GET, HEAD"
            return self.reply_error(405, "Method Not Allowed", [("Allow", allow)])
        token = self.headers.get(TOKEN_HEADER)
        if not token or not self.state.token_valid(token):
            return self.reply_error(401, "Unauthorized")
        if path == TOKEN_PATH:
            return self.reply_error(405, "Method Not Allowed", [("Allow", "PUT")])
        body = self.state.lookup(path, time.time())
        if body is None:
            return self.reply_error(404, "Not Found")
        return self.reply(200, body)

    def put_token(self):
        # IMDS refuses to open a session for a request that came through a
        # proxy, which it tells by the X-Forwarded-For header.
        if self.headers.get("X-Forwarded-For") is not None:
            return self.reply_error(403, "Forbidden")
        ttl = (self.headers.get(TTL_HEADER) or "").strip()
        if not TTL_RE.fullmatch(ttl) or not 1 <= int(ttl) <= self.state.max_ttl:
            return self.reply_error(400, "Missing or Invalid Parameters")
        token = self.state.new_token(int(ttl))
        return self.reply(200, token, headers=[(TTL_HEADER, str(int(ttl)))])

    # Control API ---------------------------------------------------------

    def control(self, path):
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            return self.reply_error(403, "Forbidden")
        now = time.time()
        route = (self.command, path[len(CONTROL_PREFIX):])
        if route == ("POST", "notice"):
            return self.post_notice(now)
        if route == ("DELETE", "notice"):
            self.state.clear_notices()
            return self.reply_json(200, self.state.describe(now))
        if route == ("GET", "log"):
            return self.reply_json(200, self.state.log_copy())
        if route == ("GET", "state"):
            return self.reply_json(200, self.state.describe(now))
        if route[1] in ("notice", "log", "state"):
            return self.reply_json(405, {"error": f"{self.command} not allowed on {path}"})
        return self.reply_json(404, {"error": f"no control endpoint {path}"})

    def reply_json(self, status, obj):
        return self.reply(status, json.dumps(obj) + "\n", ctype="application/json")

    def post_notice(self, now):
        """{"kind": "instance-action", "action": ..., "in": s, "lead": s} or
        {"kind": "rebalance", "in": s}; replaces a notice of the same kind."""
        try:
            req = json.loads(self.body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("the body must be a JSON object")
            delay = req.get("in", 0)
            if not is_number(delay) or not 0 <= delay <= MAX_DELAY:
                raise ValueError(f'"in" must be a number of seconds, 0..{MAX_DELAY}')
            kind = req.get("kind")
            if kind == "instance-action":
                action = req.get("action", "terminate")
                if action not in ACTIONS:
                    raise ValueError(f'"action" must be one of {", ".join(ACTIONS)}')
                lead = req.get("lead", default_lead(action))
                if not is_number(lead) or not 0 <= lead <= MAX_DELAY or lead != int(lead):
                    raise ValueError(f'"lead" must be whole seconds, 0..{MAX_DELAY}')
                lead = int(lead)
                self.state.set_instance_action(action, now + delay, lead)
            elif kind == "rebalance":
                self.state.set_rebalance(now + delay)
            else:
                raise ValueError('"kind" must be "instance-action" or "rebalance"')
        except ValueError as exc:                  # JSONDecodeError is one too
            return self.reply_json(400, {"error": str(exc)})
        return self.reply_json(200, self.state.describe(now))

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        """Quiet: note() logs requests under --verbose, without header
        values (tokens) or bodies (credentials)."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Loopback stand-in for the EC2 instance metadata service (IMDSv2).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", help="write the bound port here")
    p.add_argument("--instance-action-after", type=float, metavar="SECONDS",
                   help="announce a spot instance-action this long after start")
    p.add_argument("--action", choices=ACTIONS, default="terminate")
    p.add_argument("--action-lead", type=int, metavar="SECONDS",
                   help="seconds from the notice to the action "
                        "(default 120; 0 for hibernate)")
    p.add_argument("--rebalance-after", type=float, metavar="SECONDS",
                   help="announce a rebalance recommendation this long after start")
    p.add_argument("--role", help="attach an instance role of this name")
    p.add_argument("--access-key")
    p.add_argument("--secret-key")
    p.add_argument("--session-token")
    p.add_argument("--credentials-expire-in", type=int, default=6 * 3600,
                   metavar="SECONDS", help="credential lifetime (default 6 h)")
    p.add_argument("--max-token-ttl", type=int, default=AWS_MAX_TOKEN_TTL,
                   metavar="SECONDS", help="largest token TTL accepted (at most 21600)")
    p.add_argument("--verbose", action="store_true",
                   help="log each metadata request to stderr")
    args = p.parse_args(argv)
    keys = (args.access_key, args.secret_key, args.session_token)
    if any(keys) and not all(keys):
        p.error("--access-key, --secret-key and --session-token go together")
    if any(keys) and not args.role:
        p.error("--access-key and the others need --role")
    if not 1 <= args.max_token_ttl <= AWS_MAX_TOKEN_TTL:
        p.error(f"--max-token-ttl must be 1..{AWS_MAX_TOKEN_TTL}")
    if args.credentials_expire_in < 1:
        p.error("--credentials-expire-in must be >= 1")
    for name in ("instance_action_after", "rebalance_after", "action_lead"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= MAX_DELAY:
            p.error(f"--{name.replace('_', '-')} must be 0..{MAX_DELAY}")
    return args


def main(argv):
    args = parse_args(argv)
    Handler.state = State(args)
    Handler.verbose = args.verbose
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()

    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)   # readers never see a partial file
    print(json.dumps({"ready": True, "port": port,
                      "endpoint": f"http://{args.host}:{port}"},
                     separators=(",", ":")), flush=True)

    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
