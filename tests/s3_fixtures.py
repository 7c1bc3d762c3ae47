"""Pytest fixtures for object-store tests: a real S3 API endpoint (moto's server) and buckets on it.

Test modules load it with ``pytest_plugins = ["s3_fixtures"]`` (``tests/`` has no ``__init__.py``, so pytest
puts the folder on ``sys.path`` and the module imports by its bare name).

The server runs in a child process, never in the test process: delta-rs calls that keep the GIL while they
wait on the network (``DeltaTable.history`` does) would otherwise deadlock against a server thread that needs
the GIL to answer. One server serves the whole session; every test gets a fresh bucket.

For "the store is down" tests, :class:`S3Proxy` is a TCP forwarder (also a child process) in front of the
server: killing it makes the endpoint refuse connections while the server keeps its state, and starting it
again on the same port brings the same buckets back.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from lakebed.config import reset_config

ACCESS_KEY = "lakebed-test-access"
SECRET_KEY = "lakebed-test-secret-5f3c9a"  # long enough to be recognisable when it leaks into a message
REGION = "us-east-1"

_SERVER = """
import sys
from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
server.stop()
"""

_PROXY = """
import socket, sys, threading

listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(128)
print(server.getsockname()[1], flush=True)


def pump(source, target):
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, target):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve():
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
"""


def _launch(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _spawn(
    script: str, *args: str, what: str, process: subprocess.Popen[str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start ``script`` in a child Python (or take one already started); it prints its port first."""
    process = process or _launch(script, *args)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.isdigit():
        process.kill()
        process.wait()
        raise RuntimeError(f"{what} did not start (exit code {process.poll()}, said {line!r})")
    return process, int(line)


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class MotoServer:
    """moto's S3 server in a child process (state lives as long as the process)."""

    def __init__(self, started: subprocess.Popen[str] | None = None) -> None:
        self.process, self.port = _spawn(_SERVER, what="moto server", process=started)
        _wait_listening(self.port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def client(self, service: str = "s3", **credentials: str):  # noqa: ANN201 - a boto3 client
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=credentials.get("access_key", ACCESS_KEY),
            aws_secret_access_key=credentials.get("secret_key", SECRET_KEY),
        )

    def create_bucket(self, prefix: str = "lakebed") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def set_authentication(self, enabled: bool) -> None:
        """Turn moto's request authentication (signatures and IAM keys checked) on or off."""
        count = b"0" if enabled else b"inf"
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count,
            method="POST",
            headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            json.load(response)

    def stop(self) -> None:
        if self.running:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class S3Proxy:
    """A TCP forwarder in front of a :class:`MotoServer`: :meth:`stop` takes the endpoint down (connections
    refused, live ones cut), :meth:`start` brings it back on the same port with the server's state intact."""

    def __init__(self, upstream: MotoServer) -> None:
        self.upstream = upstream
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                self.process, self.port = _spawn(
                    _PROXY, str(self.port), str(self.upstream.port), what="S3 proxy"
                )
                break
            except RuntimeError:  # the old port not free yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        _wait_listening(self.port)

    def stop(self) -> None:
        """Kill the forwarder (SIGKILL): the endpoint refuses connections until :meth:`start`."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass(frozen=True)
class S3Target:
    """Where a test's cold tier lives."""

    endpoint: str
    bucket: str
    cold_root: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY


def point_lakebed_at(
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    bucket: str,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    prefix: str = "cold",
) -> S3Target:
    """Set the AWS_* variables and ``LAKEBED_COLD_ROOT`` (child processes inherit them) and re-read the config."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    cold_root = f"s3://{bucket}/{prefix}"
    monkeypatch.setenv("LAKEBED_COLD_ROOT", cold_root)
    reset_config()
    return S3Target(endpoint, bucket, cold_root, access_key, secret_key)


_early: list[subprocess.Popen[str]] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the server's process (importing moto takes seconds) as soon as a collected test needs it."""
    if session.config.option.collectonly:
        return
    if any("s3_server" in getattr(item, "fixturenames", ()) for item in session.items):
        _early.append(_launch(_SERVER))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """A real S3 API endpoint (moto server, in-memory) on a free port of 127.0.0.1, for the session."""
    server = MotoServer(_early.pop() if _early else None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoServer) -> str:
    """A fresh, empty bucket on the session's S3 endpoint."""
    return s3_server.create_bucket()


@pytest.fixture
def s3_cold(s3_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3Target:
    """lakebed's cold tier at ``s3://<fresh bucket>/cold`` on the session's endpoint."""
    return point_lakebed_at(monkeypatch, s3_server.endpoint, s3_bucket)


@pytest.fixture
def point_lakebed(monkeypatch: pytest.MonkeyPatch) -> Callable[..., S3Target]:
    """``point_lakebed(endpoint, bucket, access_key=..., secret_key=...)``: :func:`point_lakebed_at` for this test."""
    return functools.partial(point_lakebed_at, monkeypatch)


@pytest.fixture
def s3_proxy(s3_server: MotoServer) -> Iterator[S3Proxy]:
    """A forwarder in front of the session's server that a test may stop and start (store down/up)."""
    proxy = S3Proxy(s3_server)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def s3_cold_via_proxy(
    s3_proxy: S3Proxy, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[S3Target, S3Proxy]:
    """lakebed's cold tier on a fresh bucket reached through :func:`s3_proxy` (so the store can go down)."""
    return point_lakebed_at(monkeypatch, s3_proxy.endpoint, s3_bucket), s3_proxy


@pytest.fixture
def s3_authenticating(s3_server: MotoServer) -> Iterator[tuple[str, str, str]]:
    """Turn on moto's authentication for one test: returns ``(bucket, access key, secret key)`` of an IAM
    user allowed everything on S3 (any other credentials are refused). Authentication is off again after."""
    iam = s3_server.client("iam")
    user = f"tier-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    bucket = s3_server.create_bucket()
    s3_server.set_authentication(True)
    try:
        yield bucket, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        s3_server.set_authentication(False)


__all__ = [
    "ACCESS_KEY",
    "SECRET_KEY",
    "MotoServer",
    "S3Proxy",
    "S3Target",
    "point_lakebed",
    "point_lakebed_at",
    "s3_authenticating",
    "s3_bucket",
    "s3_cold",
    "s3_cold_via_proxy",
    "s3_proxy",
    "s3_server",
]
