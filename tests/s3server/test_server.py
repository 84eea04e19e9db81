#!/usr/bin/python3
"""test_server.py: checks the S3 test server (tests/s3server/server.js).

Starts the server on a free loopback port over a temporary directory and
talks to it the way spotrun's clients will: boto3, the AWS CLI, and raw HTTP
requests signed with botocore's SigV4 signer (some altered after signing).
Each check prints PASS or FAIL with its name; any FAIL makes the exit status 1.
Run it with /usr/bin/python3, which has Debian's boto3 and awscli.
"""

import concurrent.futures
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from unittest import mock
from urllib.parse import urlsplit

import boto3
import botocore.auth
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

HERE = pathlib.Path(__file__).resolve().parent
ACCESS_KEY = "spotrun-test"
SECRET_KEY = "spotrun-test-secret"
REGION = "us-east-1"
BUCKET = "spotrun"
MIB = 1024 * 1024
AWS_CLI = "/usr/bin/aws"
NODE = shutil.which("node")


class Server:
    """One server.js process: started on a free port, stopped with SIGTERM."""

    def __init__(self, workdir, *extra_args):
        self.data_dir = workdir / "data"
        self.port_file = workdir / "port"
        self.proc = subprocess.Popen(
            [NODE, "--openssl-legacy-provider", "--single-threaded-gc", str(HERE / "server.js"),
             "--dir", str(self.data_dir), "--port", "0", "--bucket", BUCKET,
             "--port-file", str(self.port_file), *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server.js did not start: {self.proc.stderr.read()}")
        ready = json.loads(line)
        self.port = ready["port"]
        self.endpoint = ready["endpoint"]

    def stop(self):
        """SIGTERM; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()

    def control(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, body=None if body is None else json.dumps(body))
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, json.loads(data)

    def set_faults(self, **settings):
        status, reply = self.control("PUT", "/__spotrun/faults", settings)
        if status != 200:
            raise RuntimeError(f"control endpoint refused {settings}: {reply}")
        return reply

    def stats(self):
        return self.control("GET", "/__spotrun/stats")[1]


def client(server, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, headers=None):
    """A boto3 S3 client for the server; headers maps an operation name to extra headers it sends (signed)."""
    s3 = boto3.client(
        "s3", endpoint_url=server.endpoint, region_name=region,
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
    for operation, extra in (headers or {}).items():
        def add_headers(request, extra=extra, **_):
            for name, value in extra.items():
                request.headers[name] = value
        s3.meta.events.register(f"before-sign.s3.{operation}", add_headers)
    return s3


@contextlib.contextmanager
def shifted_clock(seconds):
    """Makes botocore's signers read a clock that is `seconds` off."""
    real = datetime.datetime

    class Shifted(real):
        @classmethod
        def utcnow(cls):
            return real.utcnow() + datetime.timedelta(seconds=seconds)

    with mock.patch.object(botocore.auth.datetime, "datetime", Shifted):
        yield


class UnsignedPayloadAuth(S3SigV4Auth):
    """botocore's S3 signer, with x-amz-content-sha256: UNSIGNED-PAYLOAD."""

    def payload(self, request):
        return "UNSIGNED-PAYLOAD"


def sign(server, method, path, params=None, headers=None, body=b"", secret_key=SECRET_KEY,
         region=REGION, clock_shift=0, unsigned_payload=False):
    """Signs a request with botocore; returns (request target, headers, body) as they go on the wire."""
    request = AWSRequest(method=method, url=server.endpoint + path, params=params or {},
                         headers=headers or {}, data=body)
    signer = UnsignedPayloadAuth if unsigned_payload else S3SigV4Auth
    with shifted_clock(clock_shift):
        signer(Credentials(ACCESS_KEY, secret_key), "s3", region).add_auth(request)
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    target = url.path + (f"?{url.query}" if url.query else "")
    return target, dict(prepared.headers), body


def send(server, method, target, headers=None, body=b""):
    """Sends one raw HTTP request; returns (status, body bytes, seconds taken)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - started
    finally:
        conn.close()


def send_cut_off(server, target, headers, length, sent):
    """Starts a PUT announcing a body of `length` bytes, sends `sent` of it and hangs up."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("PUT", target, skip_accept_encoding=True)
    for name, value in {**headers, "Content-Length": str(length)}.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(sent)
    conn.close()


def no_temporary_left(server):
    """Waits up to 10 s for the server to remove its temporary files."""
    deadline = time.monotonic() + 10
    while list((server.data_dir / BUCKET).rglob("*.writing")) and time.monotonic() < deadline:
        time.sleep(0.05)
    require(not list((server.data_dir / BUCKET).rglob("*.writing")), "a temporary file was left")


def signed(server, method, path, tamper=None, **kwargs):
    """Signs, optionally alters (tamper(target, headers, body) -> same), and sends."""
    target, headers, body = sign(server, method, path, **kwargs)
    if tamper:
        target, headers, body = tamper(target, headers, body)
    return send(server, method, target, headers, body)


def error_code(body):
    text = body.decode("utf-8", "replace")
    start = text.find("<Code>")
    return text[start + 6:text.find("</Code>")] if start >= 0 else ""


def expect(status, body, want_status, want_code=None):
    got = (status, error_code(body) if want_code else None)
    if got != (want_status, want_code):
        raise AssertionError(f"want {want_status} {want_code or ''}, got {status}: {body[:300]!r}")


def expect_client_error(call, want_status, want_code):
    try:
        call()
    except ClientError as err:
        got = (err.response["ResponseMetadata"]["HTTPStatusCode"], err.response["Error"]["Code"])
        if got != (want_status, want_code):
            raise AssertionError(f"want {want_status} {want_code}, got {got}") from err
        return
    raise AssertionError(f"want {want_status} {want_code}, the call succeeded")


def require(condition, message):
    if not condition:
        raise AssertionError(message)


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def multipart_etag(parts):
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def start_upload(s3, key, parts):
    """Creates a multipart upload and uploads parts; returns (upload id, [{PartNumber, ETag}])."""
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    listed = []
    for number, data in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
        listed.append({"PartNumber": number, "ETag": etag})
    return upload_id, listed


def complete(s3, key, upload_id, listed):
    return s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": listed})


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


# --- boto3 ------------------------------------------------------------------

@check
def boto3_object_roundtrip(server, workdir):
    s3 = client(server)
    s3.create_bucket(Bucket="roundtrip")
    key = "dir/a b+c~d!é (1).txt"
    data = b"0123456789abcdefghij"
    put = s3.put_object(Bucket="roundtrip", Key=key, Body=data)
    require(put["ETag"] == f'"{md5_hex(data)}"', f"PutObject ETag {put['ETag']}")
    require(s3.get_object(Bucket="roundtrip", Key=key)["Body"].read() == data, "GET body differs")
    ranged = s3.get_object(Bucket="roundtrip", Key=key, Range="bytes=2-5")
    require(ranged["ResponseMetadata"]["HTTPStatusCode"] == 206, "ranged GET is not 206")
    require(ranged["Body"].read() == b"2345", "ranged GET body differs")
    require(ranged["ContentRange"] == f"bytes 2-5/{len(data)}", f"Content-Range {ranged['ContentRange']}")
    suffix = s3.get_object(Bucket="roundtrip", Key=key, Range="bytes=-4")
    require(suffix["Body"].read() == b"ghij", "suffix range bytes=-4 is not the last 4 bytes")
    head = s3.head_object(Bucket="roundtrip", Key=key)
    require(head["ContentLength"] == len(data), "HEAD ContentLength differs")
    expect_client_error(lambda: s3.get_object(Bucket="roundtrip", Key=key, Range="bytes=20-30"),
                        416, "InvalidRange")
    expect_client_error(lambda: s3.get_object(Bucket="roundtrip", Key="dir/absent"), 404, "NoSuchKey")
    s3.put_object(Bucket="roundtrip", Key="empty", Body=b"")
    require(s3.get_object(Bucket="roundtrip", Key="empty")["Body"].read() == b"", "empty object is not empty")
    # objects are read from disk in 1 MiB pieces: ranges across and inside them
    big = os.urandom(3 * 1048576 + 12345)
    s3.put_object(Bucket="roundtrip", Key="big", Body=big)
    require(s3.get_object(Bucket="roundtrip", Key="big")["Body"].read() == big, "GET of 3 MiB differs")
    for first, last in [(1048570, 2097160), (5, 17), (2097152, len(big) - 1), (1048576, 1048576)]:
        got = s3.get_object(Bucket="roundtrip", Key="big", Range=f"bytes={first}-{last}")["Body"].read()
        require(got == big[first:last + 1], f"range {first}-{last} differs")

    for i in range(5):
        s3.put_object(Bucket="roundtrip", Key=f"page/k{i}", Body=b"x")
    pages, token = [], None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="roundtrip", Prefix="page/", MaxKeys=2, **kwargs)
        pages.append([obj["Key"] for obj in page.get("Contents", [])])
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    require(pages == [["page/k0", "page/k1"], ["page/k2", "page/k3"], ["page/k4"]], f"pages {pages}")
    prefixed = s3.list_objects_v2(Bucket="roundtrip", Prefix="dir/a b+")
    require([o["Key"] for o in prefixed["Contents"]] == [key], "list with an encoded prefix")

    s3.delete_object(Bucket="roundtrip", Key=key)
    expect_client_error(lambda: s3.head_object(Bucket="roundtrip", Key=key), 404, "404")


@check
def boto3_multipart_upload(server, workdir):
    s3 = client(server)
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"tail" * 1000]
    upload_id, listed = start_upload(s3, "mp/object.bin", parts)
    done = complete(s3, "mp/object.bin", upload_id, listed)
    require(done["ETag"] == f'"{multipart_etag(parts)}"', f"multipart ETag {done['ETag']}")
    got = s3.get_object(Bucket=BUCKET, Key="mp/object.bin")
    require(got["Body"].read() == b"".join(parts), "multipart object reads back different")
    require(got["ETag"] == done["ETag"], "GET ETag differs from CompleteMultipartUpload's")


# --- SigV4 verification -------------------------------------------------------

@check
def anonymous_requests_denied(server, workdir):
    status, body, _ = send(server, "GET", f"/{BUCKET}?list-type=2")
    expect(status, body, 403, "AccessDenied")
    status, body, _ = send(server, "PUT", f"/{BUCKET}/anon.txt", body=b"anonymous")
    expect(status, body, 403, "AccessDenied")
    expect_client_error(lambda: client(server).head_object(Bucket=BUCKET, Key="anon.txt"), 404, "404")


@check
def wrong_secret_rejected(server, workdir):
    s3 = client(server, secret_key="not-the-secret")
    expect_client_error(lambda: s3.list_objects_v2(Bucket=BUCKET), 403, "SignatureDoesNotMatch")


@check
def unknown_access_key_rejected(server, workdir):
    s3 = client(server, access_key="AKIDUNKNOWN")
    expect_client_error(lambda: s3.list_objects_v2(Bucket=BUCKET), 403, "InvalidAccessKeyId")


@check
def wrong_region_rejected(server, workdir):
    status, body, _ = signed(server, "GET", f"/{BUCKET}", params={"list-type": "2"}, region="eu-west-1")
    expect(status, body, 400, "AuthorizationHeaderMalformed")
    require(b"<Region>us-east-1</Region>" in body, f"the error does not name the region: {body[:300]!r}")
    # botocore, like with S3, re-signs for the region that the error names.
    client(server, region="eu-west-1").list_objects_v2(Bucket=BUCKET)


@check
def altered_requests_rejected(server, workdir):
    s3 = client(server)
    s3.put_object(Bucket=BUCKET, Key="sig/one", Body=b"first object")
    s3.put_object(Bucket=BUCKET, Key="sig/two", Body=b"other object")
    get_one = dict(method="GET", path=f"/{BUCKET}/sig/one", headers={"Range": "bytes=0-4"})
    list_sig = dict(method="GET", path=f"/{BUCKET}", params={"list-type": "2", "prefix": "sig/"})

    status, body, _ = signed(server, **get_one)
    require((status, body) == (206, b"first"), f"unaltered signed GET: {status} {body!r}")
    status, body, _ = signed(server, **list_sig)
    expect(status, body, 200)

    def header(target, headers, body):
        return target, {**headers, "Range": "bytes=0-5"}, body

    def query(target, headers, body):
        return target.replace("prefix=sig%2F", "prefix=sig%2Ft"), headers, body

    def path(target, headers, body):
        return target.replace("/sig/one", "/sig/two"), headers, body

    def extra_amz_header(target, headers, body):
        return target, {**headers, "x-amz-meta-added": "later"}, body

    status, body, _ = signed(server, tamper=header, **get_one)
    expect(status, body, 403, "SignatureDoesNotMatch")
    status, body, _ = signed(server, tamper=query, **list_sig)
    expect(status, body, 403, "SignatureDoesNotMatch")
    status, body, _ = signed(server, tamper=path, **get_one)
    expect(status, body, 403, "SignatureDoesNotMatch")
    status, body, _ = signed(server, tamper=extra_amz_header, **get_one)
    expect(status, body, 403, "AccessDenied")


@check
def payload_hash_checked(server, workdir):
    def swap_body(target, headers, body):
        return target, headers, b"HELLO WORLD"

    def drop_hash(target, headers, body):
        return target, {k: v for k, v in headers.items() if k.lower() != "x-amz-content-sha256"}, body

    status, body, _ = signed(server, "PUT", f"/{BUCKET}/hash/object", body=b"hello world", tamper=swap_body)
    expect(status, body, 400, "XAmzContentSHA256Mismatch")
    expect_client_error(lambda: client(server).head_object(Bucket=BUCKET, Key="hash/object"), 404, "404")
    status, body, _ = signed(server, "PUT", f"/{BUCKET}/hash/object", body=b"hello world", tamper=drop_hash)
    expect(status, body, 400, "InvalidRequest")
    status, body, _ = signed(server, "PUT", f"/{BUCKET}/hash/object", body=b"hello world")
    expect(status, body, 200)
    status, body, _ = signed(server, "PUT", f"/{BUCKET}/hash/unsigned", body=b"unsigned body",
                             unsigned_payload=True)
    expect(status, body, 200)
    # bodies of 1 MiB and more are hashed on worker threads: the same checks
    large = os.urandom(3 * MIB + 7)
    flipped = bytes([large[0] ^ 1]) + large[1:]
    status, body, _ = signed(server, "PUT", f"/{BUCKET}/hash/large", body=large,
                             tamper=lambda target, headers, _body: (target, headers, flipped))
    expect(status, body, 400, "XAmzContentSHA256Mismatch")
    expect_client_error(lambda: client(server).head_object(Bucket=BUCKET, Key="hash/large"), 404, "404")
    status, body, _ = signed(server, "PUT", f"/{BUCKET}/hash/large", body=large)
    expect(status, body, 200)
    got = client(server).get_object(Bucket=BUCKET, Key="hash/large")
    require(got["Body"].read() == large, "a body hashed on a worker thread is stored differently")
    require(got["ETag"] == f'"{md5_hex(large)}"', f"ETag {got['ETag']} of a body hashed on a worker thread")
    # their buffers are reused once stored: bodies of one size, one after
    # another and then at once, each reads back as it was sent
    bodies = [os.urandom(3 * MIB + 4096 * i) for i in range(8)]

    def put(i):
        status, body, _ = signed(server, "PUT", f"/{BUCKET}/hash/pooled-{i}", body=bodies[i])
        expect(status, body, 200)

    for i in range(2):
        put(i)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(put, range(2, len(bodies))))
    for i, data in enumerate(bodies):
        got = client(server).get_object(Bucket=BUCKET, Key=f"hash/pooled-{i}")
        require(got["Body"].read() == data, f"body {i} of a reused buffer is stored differently")
        require(got["ETag"] == f'"{md5_hex(data)}"', f"ETag {got['ETag']} of body {i} in a reused buffer")
    # one cut off half way (read into a pooled buffer, never hashed) leaves
    # the object as it was, and the next body of that size is stored whole
    target, headers, _ = sign(server, "PUT", f"/{BUCKET}/hash/pooled-0", body=bodies[1])
    send_cut_off(server, target, headers, len(bodies[1]), bodies[1][:len(bodies[1]) // 2])
    no_temporary_left(server)
    put(1)
    require(client(server).get_object(Bucket=BUCKET, Key="hash/pooled-0")["Body"].read() == bodies[0],
            "a large body cut off half way changed the object")
    require(client(server).get_object(Bucket=BUCKET, Key="hash/pooled-1")["Body"].read() == bodies[1],
            "the body after one cut off half way is stored differently")


@check
def clock_skew_rejected(server, workdir):
    status, body, _ = signed(server, "GET", f"/{BUCKET}", params={"list-type": "2"}, clock_shift=-20 * 60)
    expect(status, body, 403, "RequestTimeTooSkewed")
    status, body, _ = signed(server, "GET", f"/{BUCKET}", params={"list-type": "2"}, clock_shift=20 * 60)
    expect(status, body, 403, "RequestTimeTooSkewed")
    status, body, _ = signed(server, "GET", f"/{BUCKET}", params={"list-type": "2"}, clock_shift=-10 * 60)
    expect(status, body, 200)


@check
def presigned_urls(server, workdir):
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION,
                      aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    s3.put_object(Bucket=BUCKET, Key="presign/object", Body=b"presigned content")
    url = urlsplit(s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "presign/object"},
                                             ExpiresIn=300))
    status, body, _ = send(server, "GET", f"{url.path}?{url.query}")
    require((status, body) == (200, b"presigned content"), f"presigned GET: {status} {body[:200]!r}")
    status, body, _ = send(server, "GET", f"{url.path}x?{url.query}")
    expect(status, body, 403, "SignatureDoesNotMatch")
    with shifted_clock(-3600):
        old = urlsplit(s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "presign/object"},
                                                 ExpiresIn=60))
    status, body, _ = send(server, "GET", f"{old.path}?{old.query}")
    expect(status, body, 403, "AccessDenied")


# --- conditional writes ------------------------------------------------------

@check
def if_none_match_put(server, workdir):
    s3 = client(server, headers={"PutObject": {"If-None-Match": "*"}})
    s3.put_object(Bucket=BUCKET, Key="cond/put", Body=b"first")
    expect_client_error(lambda: s3.put_object(Bucket=BUCKET, Key="cond/put", Body=b"second"),
                        412, "PreconditionFailed")
    require(s3.get_object(Bucket=BUCKET, Key="cond/put")["Body"].read() == b"first", "object was overwritten")


@check
def if_none_match_complete_multipart(server, workdir):
    s3 = client(server, headers={"CompleteMultipartUpload": {"If-None-Match": "*"}})
    client(server).put_object(Bucket=BUCKET, Key="cond/mp-exists", Body=b"already here")
    upload_id, listed = start_upload(s3, "cond/mp-exists", [b"new content"])
    expect_client_error(lambda: complete(s3, "cond/mp-exists", upload_id, listed), 412, "PreconditionFailed")
    require(s3.get_object(Bucket=BUCKET, Key="cond/mp-exists")["Body"].read() == b"already here",
            "object was overwritten")
    upload_id, listed = start_upload(s3, "cond/mp-new", [b"new content"])
    complete(s3, "cond/mp-new", upload_id, listed)
    require(s3.get_object(Bucket=BUCKET, Key="cond/mp-new")["Body"].read() == b"new content", "new object")


@check
def if_match_put(server, workdir):
    etag = client(server).put_object(Bucket=BUCKET, Key="cond/latest", Body=b"v1")["ETag"]
    client(server, headers={"PutObject": {"If-Match": etag}}).put_object(Bucket=BUCKET, Key="cond/latest", Body=b"v2")
    stale = client(server, headers={"PutObject": {"If-Match": etag}})
    expect_client_error(lambda: stale.put_object(Bucket=BUCKET, Key="cond/latest", Body=b"v3"),
                        412, "PreconditionFailed")
    expect_client_error(lambda: stale.put_object(Bucket=BUCKET, Key="cond/missing", Body=b"v1"), 404, "NoSuchKey")
    require(stale.get_object(Bucket=BUCKET, Key="cond/latest")["Body"].read() == b"v2", "If-Match put")


@check
def writes_whole_when_answered(server, workdir):
    """A write's answer comes once the stored file holds all of it (s3rver
    alone answers while its write stream still has bytes to write, in
    place), so a read or a listing right after sees the whole object."""
    s3 = client(server)
    body = os.urandom(16 * MIB)

    def put_and_look(i):
        key = f"settle/obj-{i}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        stored = server.data_dir / BUCKET / "settle" / f"obj-{i}._S3rver_object"
        return stored.stat().st_size

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(put_and_look, range(16)))
    require(sizes == [len(body)] * 16, f"stored sizes right after PutObject: {sizes}")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="settle/")["Contents"]
    require([o["Size"] for o in listed] == [len(body)] * 16, "listed sizes differ")

    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="settle/mp")["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key="settle/mp", UploadId=upload, PartNumber=1, Body=body)
    # (the part is written into its slot of the upload's assembly file)
    slots = [p for p in (server.data_dir / BUCKET).rglob("1.slot") if upload in str(p)]
    require(len(slots) == 1, f"part record right after UploadPart: {slots}")
    assembly = slots[0].parent / "assembly"
    require(assembly.read_bytes()[:len(body)] == body, "part not whole right after UploadPart")
    inode = assembly.stat().st_ino
    s3.complete_multipart_upload(Bucket=BUCKET, Key="settle/mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    stored = server.data_dir / BUCKET / "settle" / "mp._S3rver_object"
    require(stored.stat().st_size == len(body), "object file right after CompleteMultipartUpload")
    require(stored.stat().st_ino == inode, "the assembly was copied, not renamed into place")

    # a body cut off half way leaves the old object as it was, and no
    # temporary file
    target, headers, _ = sign(server, "PUT", f"/{BUCKET}/settle/obj-0", unsigned_payload=True)
    send_cut_off(server, target, headers, len(body), b"y" * MIB)
    no_temporary_left(server)
    got = s3.get_object(Bucket=BUCKET, Key="settle/obj-0")["Body"].read()
    require(got == body, "an interrupted overwrite changed the object")


@check
def concurrent_conditional_write_conflicts(server, workdir):
    key = f"/{BUCKET}/cond/race"
    first_body = b"x" * 4096
    target, headers, _ = sign(server, "PUT", key, headers={"If-None-Match": "*"}, unsigned_payload=True)
    slow = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        slow.putrequest("PUT", target, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(first_body))}.items():
            slow.putheader(name, value)
        slow.endheaders()
        slow.send(first_body[:100])
        deadline = time.monotonic() + 10
        while server.stats()["conditional_writes_in_flight"] != 1:
            require(time.monotonic() < deadline, "the first conditional write never started")
            time.sleep(0.02)
        status, body, _ = signed(server, "PUT", key, headers={"If-None-Match": "*"}, body=b"racer")
        expect(status, body, 409, "ConditionalRequestConflict")
        slow.send(first_body[100:])
        resp = slow.getresponse()
        require(resp.status == 200, f"the first conditional write got {resp.status}: {resp.read()!r}")
    finally:
        slow.close()
    status, body, _ = signed(server, "PUT", key, headers={"If-None-Match": "*"}, body=b"late")
    expect(status, body, 412, "PreconditionFailed")


# --- multipart realism ---------------------------------------------------------

@check
def abort_multipart_upload(server, workdir):
    s3 = client(server)
    upload_id, listed = start_upload(s3, "abort/object", [b"part one"])
    reply = s3.abort_multipart_upload(Bucket=BUCKET, Key="abort/object", UploadId=upload_id)
    require(reply["ResponseMetadata"]["HTTPStatusCode"] == 204, "abort is not 204")
    expect_client_error(lambda: s3.abort_multipart_upload(Bucket=BUCKET, Key="abort/object", UploadId=upload_id),
                        404, "NoSuchUpload")
    expect_client_error(lambda: s3.upload_part(Bucket=BUCKET, Key="abort/object", UploadId=upload_id,
                                               PartNumber=2, Body=b"late"), 404, "NoSuchUpload")
    expect_client_error(lambda: complete(s3, "abort/object", upload_id, listed), 404, "NoSuchUpload")
    expect_client_error(lambda: s3.head_object(Bucket=BUCKET, Key="abort/object"), 404, "404")


@check
def multipart_part_checks(server, workdir):
    s3 = client(server)
    upload_id, listed = start_upload(s3, "parts/object", [b"a" * MIB, b"small last part"])
    expect_client_error(lambda: complete(s3, "parts/object", upload_id, listed), 400, "EntityTooSmall")
    wrong_etag = [listed[0], {"PartNumber": 2, "ETag": '"' + "0" * 32 + '"'}]
    expect_client_error(lambda: complete(s3, "parts/object", upload_id, wrong_etag), 400, "InvalidPart")
    unknown = [listed[0], {"PartNumber": 3, "ETag": listed[1]["ETag"]}]
    expect_client_error(lambda: complete(s3, "parts/object", upload_id, unknown), 400, "InvalidPart")
    expect_client_error(lambda: complete(s3, "parts/object", upload_id, listed[::-1]), 400, "InvalidPartOrder")
    complete(s3, "parts/object", upload_id, listed[1:])
    require(s3.get_object(Bucket=BUCKET, Key="parts/object")["Body"].read() == b"small last part",
            "upload with its last part alone")


@check
def multipart_part_layouts(server, workdir):
    """Parts that do not fit the assembly's slots (a part longer than the
    stride, one that comes before the stride is known, a part uploaded
    again, a gap in the part numbers, a part short of the stride before the
    last) still complete into the right bytes."""
    s3 = client(server)
    first, longer, last = os.urandom(5 * MIB), os.urandom(6 * MIB), b"tail" * 1000
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="layouts/a")["UploadId"]
    listed = {}
    for number, data in [(3, last), (1, first), (2, longer)]:
        etag = s3.upload_part(Bucket=BUCKET, Key="layouts/a", UploadId=upload_id,
                              PartNumber=number, Body=data)["ETag"]
        listed[number] = {"PartNumber": number, "ETag": etag}
    done = complete(s3, "layouts/a", upload_id, [listed[n] for n in (1, 2, 3)])
    require(done["ETag"] == f'"{multipart_etag([first, longer, last])}"', f"ETag {done['ETag']}")
    got = s3.get_object(Bucket=BUCKET, Key="layouts/a")["Body"].read()
    require(got == first + longer + last, "parts out of their slots join wrong")

    parts = [os.urandom(5 * MIB) for _ in range(3)] + [b"end" * 100]
    upload_id, listed = start_upload(s3, "layouts/b", parts)
    again = os.urandom(5 * MIB)
    etag = s3.upload_part(Bucket=BUCKET, Key="layouts/b", UploadId=upload_id, PartNumber=2, Body=again)["ETag"]
    expect_client_error(lambda: complete(s3, "layouts/b", upload_id, listed), 400, "InvalidPart")
    listed[1] = {"PartNumber": 2, "ETag": etag}
    complete(s3, "layouts/b", upload_id, [listed[0], listed[1], listed[3]])
    got = s3.get_object(Bucket=BUCKET, Key="layouts/b")["Body"].read()
    require(got == parts[0] + again + parts[3], "a part uploaded again, or a gap, joins wrong")

    # all in their slots, but the middle one short of the stride
    parts = [os.urandom(6 * MIB), os.urandom(5 * MIB), b"end" * 100]
    upload_id, listed = start_upload(s3, "layouts/c", parts)
    complete(s3, "layouts/c", upload_id, listed)
    got = s3.get_object(Bucket=BUCKET, Key="layouts/c")["Body"].read()
    require(got == b"".join(parts), "a part short of its slot joins wrong")


# --- fault injection -------------------------------------------------------------

def signed_get(server, key="faults/object"):
    return signed(server, "GET", f"/{BUCKET}/{key}")


@contextlib.contextmanager
def faults(server, **settings):
    server.set_faults(**settings)
    try:
        yield
    finally:
        server.set_faults(rate=0)


@check
def fault_slowdown(server, workdir):
    with faults(server, rate=1.0, faults=["slowdown"]):
        status, body, _ = signed_get(server)
        expect(status, body, 503, "SlowDown")
        status, body, _ = signed(server, "PUT", f"/{BUCKET}/faults/never-written", body=b"dropped")
        expect(status, body, 503, "SlowDown")
    expect_client_error(lambda: client(server).head_object(Bucket=BUCKET, Key="faults/never-written"), 404, "404")


@check
def fault_internal_error(server, workdir):
    with faults(server, rate=1.0, faults=["500"]):
        status, body, _ = signed_get(server)
        expect(status, body, 500, "InternalError")


@check
def fault_connection_reset(server, workdir):
    with faults(server, rate=1.0, faults=["reset"]):
        try:
            status, body, _ = signed_get(server)
        except ConnectionError:
            return
        raise AssertionError(f"want a connection reset, got {status}: {body[:200]!r}")


@check
def fault_slow_response(server, workdir):
    client(server).put_object(Bucket=BUCKET, Key="faults/object", Body=b"slow but fine")
    with faults(server, rate=1.0, faults=["slow"], slow_ms=400):
        status, body, seconds = signed_get(server)
    require((status, body) == (200, b"slow but fine"), f"slow fault answer: {status} {body[:200]!r}")
    require(seconds >= 0.4, f"slow fault answered after {seconds:.3f}s, want >= 0.4s")


@check
def fault_rate_fraction(server, workdir):
    client(server).put_object(Bucket=BUCKET, Key="faults/object", Body=b"payload")
    before = server.stats()
    with faults(server, rate=0.3, faults=["slowdown", "500"], seed=2024):
        statuses = [signed_get(server)[0] for _ in range(200)]
    after = server.stats()
    faulted = sum(status != 200 for status in statuses)
    require(set(statuses) <= {200, 500, 503}, f"unexpected statuses {set(statuses)}")
    require(0.2 <= faulted / 200 <= 0.4, f"fault fraction {faulted / 200:.3f} outside 0.2..0.4")
    counted = sum(after["faults"][k] - before["faults"][k] for k in ("slowdown", "500"))
    require(counted == faulted, f"stats count {counted} faults, clients saw {faulted}")
    require(after["requests"] - before["requests"] == 200, "stats request counter")


@check
def fault_sequence_reproducible(server, workdir):
    def run(seed):
        with faults(server, rate=0.5, faults=["slowdown", "500"], seed=seed):
            return [signed_get(server)[0] for _ in range(40)]

    first, again, other = run(7), run(7), run(8)
    require(first == again, "the same seed gave a different fault sequence")
    require(first != other, "different seeds gave the same fault sequence")


@check
def control_endpoint(server, workdir):
    status, reply = server.control("PUT", "/__spotrun/faults", {"rate": 0.25, "faults": ["reset"], "slow_ms": 50})
    require(status == 200 and reply["rate"] == 0.25 and reply["faults"] == ["reset"] and reply["slow_ms"] == 50,
            f"PUT faults: {status} {reply}")
    status, reply = server.control("GET", "/__spotrun/faults")
    require(status == 200 and reply["rate"] == 0.25, f"GET faults: {status} {reply}")
    for bad in ({"rate": 2}, {"faults": ["meteor"]}, {"rate": 0.5, "faults": []}, {"colour": "red"}):
        status, reply = server.control("PUT", "/__spotrun/faults", bad)
        require(status == 400 and "error" in reply, f"{bad} accepted: {status} {reply}")
    server.set_faults(rate=0)
    before = server.stats()
    send(server, "GET", f"/{BUCKET}")
    after = server.stats()
    require(after["requests"] == before["requests"] + 1, "requests counter")
    require(after["auth_failures"] == before["auth_failures"] + 1, "auth failure counter")
    require(set(after["faults"]) == {"slowdown", "500", "reset", "slow"}, f"fault counters {after['faults']}")


@check
def command_line_and_shutdown(server, workdir):
    other_dir = workdir / "cli"
    other_dir.mkdir()
    other = Server(other_dir, "--access-key", "first", "--secret-key", "first-secret",
                   "--access-key", "second", "--secret-key", "second-secret",
                   "--fault-rate", "1", "--faults", "500", "--seed", "3")
    try:
        require(int((other_dir / "port").read_text()) == other.port, "--port-file")
        status, body, _ = send(other, "GET", f"/{BUCKET}")
        expect(status, body, 500, "InternalError")
        other.set_faults(rate=0)
        for access_key, secret_key in (("first", "first-secret"), ("second", "second-secret")):
            client(other, access_key, secret_key).put_object(Bucket=BUCKET, Key=access_key, Body=b"ok")
        expect_client_error(lambda: client(other).list_objects_v2(Bucket=BUCKET), 403, "InvalidAccessKeyId")
    finally:
        status = other.stop()
    require(status == 0, f"exit status {status} after SIGTERM")
    bad = subprocess.run([NODE, "--openssl-legacy-provider", "--single-threaded-gc", str(HERE / "server.js"), "--dir", str(other_dir),
                          "--fault-rate", "2"], capture_output=True, text=True, timeout=30)
    require(bad.returncode == 2 and "--fault-rate" in bad.stderr, f"bad flag: {bad.returncode} {bad.stderr!r}")


# --- AWS CLI --------------------------------------------------------------------

@check
def aws_cli(server, workdir):
    require(os.access(AWS_CLI, os.X_OK), f"{AWS_CLI} is missing: install Debian's awscli package")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }

    def aws(*args):
        run = subprocess.run([AWS_CLI, "--endpoint-url", server.endpoint, *args], env=env,
                             capture_output=True, text=True, timeout=120)
        require(run.returncode == 0, f"aws {' '.join(args)}: rc {run.returncode}: {run.stderr.strip()}")
        return run.stdout

    big = workdir / "big.bin"
    big.write_bytes(os.urandom(20 * MIB))
    small = workdir / "small.txt"
    small.write_text("small object from the AWS CLI\n")
    before = server.stats()
    aws("s3", "cp", str(big), f"s3://{BUCKET}/cli/big.bin", "--only-show-errors")
    aws("s3", "cp", f"s3://{BUCKET}/cli/big.bin", str(workdir / "big.back"), "--only-show-errors")
    require((workdir / "big.back").read_bytes() == big.read_bytes(), "aws s3 cp round trip differs")
    listing = aws("s3", "ls", f"s3://{BUCKET}/cli/")
    require("big.bin" in listing and str(20 * MIB) in listing, f"aws s3 ls: {listing!r}")
    aws("s3api", "put-object", "--bucket", BUCKET, "--key", "cli/small.txt", "--body", str(small))
    aws("s3api", "get-object", "--bucket", BUCKET, "--key", "cli/small.txt", str(workdir / "small.back"))
    require((workdir / "small.back").read_bytes() == small.read_bytes(), "s3api round trip differs")
    after = server.stats()
    require(after["auth_failures"] == before["auth_failures"], "some AWS CLI requests failed verification")
    etag = client(server).head_object(Bucket=BUCKET, Key="cli/big.bin")["ETag"]
    require(etag.endswith('-3"'), f"aws s3 cp of 20 MiB should be a 3-part upload, ETag {etag}")


def main():
    if not (HERE / "node_modules" / "s3rver").is_dir():
        print(f"FAIL setup: {HERE / 'node_modules'} is missing: run `npm ci --prefix tests/s3server` "
              "from the repository root (scripts/setup.sh does this)")
        return 1
    if not NODE:
        print("FAIL setup: node is not on PATH (Node.js 20 is needed)")
        return 1
    failures = 0
    with tempfile.TemporaryDirectory(prefix="spotrun-s3server-") as tmp:
        workdir = pathlib.Path(tmp)
        server = Server(workdir)
        try:
            for fn in CHECKS:
                checkdir = workdir / fn.__name__
                checkdir.mkdir()
                started = time.monotonic()
                try:
                    fn(server, checkdir)
                    print(f"PASS {fn.__name__} ({time.monotonic() - started:.2f}s)", flush=True)
                except Exception as err:
                    failures += 1
                    print(f"FAIL {fn.__name__}: {err}", flush=True)
                    if not isinstance(err, AssertionError):
                        traceback.print_exc()
                    server.set_faults(rate=0)
        finally:
            status = server.stop()
    print(f"{len(CHECKS) - failures}/{len(CHECKS)} checks passed")
    if status != 0:
        print(f"FAIL server_shutdown: exit status {status} after SIGTERM")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
