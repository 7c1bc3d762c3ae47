"""A lakebed HTTP server in its own process on a free port (a real uvicorn), and plain HTTP requests to it;
the JSON answers of a server can be checked against its own OpenAPI document (:class:`Schemas`)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    url: str,
    *,
    token: str | None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = body if body is not None else (b"{}" if method in ("POST", "PUT", "PATCH") else None)
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


@dataclass
class Schemas:
    """A server's OpenAPI document: which route a path is, and what its answers must look like.

    ``lenient`` names path parameters that may span segments when sent unencoded."""

    doc: dict[str, Any]
    lenient: tuple[str, ...] = ()
    checked: set[tuple[str, int]] = field(default_factory=set)

    def route(self, path: str) -> str | None:
        """The path template ``path`` is served by (the more specific route wins, as in the server)."""
        for lenient in (False, True):
            matches = [t for t in self.doc["paths"] if self._pattern(t, lenient).fullmatch(path)]
            if matches:
                return max(matches, key=len)
        return None

    def _pattern(self, template: str, lenient: bool) -> re.Pattern[str]:
        def param(match: re.Match[str]) -> str:
            return ".+" if lenient and match.group(1) in self.lenient else "[^/]+"

        return re.compile(re.sub(r"\\\{(\w+)\\\}", param, re.escape(template.rstrip("/") or "/")))

    def check(self, reply: Reply, path: str, method: str) -> None:
        """The reply's content type is declared for its route and status, and a JSON body fits the schema."""
        template = self.route(urlsplit(path).path)
        if urlsplit(path).path == "/openapi.json" and reply.status == 200:
            return  # the document itself
        operation = (
            self.doc["paths"].get(template or "", {}).get("get" if method == "HEAD" else method.lower())
        )
        if operation is not None and str(reply.status) in operation["responses"]:
            content = operation["responses"][str(reply.status)]["content"]
        else:  # no such route or method, or a refusal before routing: the answer is an Error
            assert reply.status in (401, 404, 405), (path, method, reply.status)
            content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        media_type = reply.headers["Content-Type"].split(";")[0].strip()
        assert media_type in content, (path, reply.status, media_type)
        if method == "HEAD":
            return
        if media_type != "application/json":
            self.checked.add((template or "", reply.status))
            return
        schema = {**content[media_type]["schema"], "components": self.doc["components"]}
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(reply.json()), key=lambda e: list(e.absolute_path))
        assert not errors, (path, reply.status, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]])
        self.checked.add((template or "", reply.status))


class ServerProcess:
    """``python -m lakebed.cli <args> --host HOST --port PORT`` over ``home``, its output in ``log_path``.

    ``token_variable`` is the environment variable that carries ``token`` to the server; requests send
    ``request_token`` (default: ``token``)."""

    args: tuple[str, ...] = ()
    token_variable = ""
    lenient: tuple[str, ...] = ()

    def __init__(
        self,
        home: Path,
        log_path: Path,
        *,
        token: str | None,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        environment: dict[str, str] | None = None,
        request_token: str | None = None,
    ) -> None:
        self.home, self.log_path, self.token, self.host = home, log_path, token, host
        self.request_token = request_token or token  # what requests send by default
        self.extra_args = extra_args
        self.extra_environment = environment or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.schemas: Schemas | None = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEBED_", "OPENLINEAGE"))}
        env.update(LAKEBED_HOME=str(self.home), DAGSTER_HOME=str(self.home / "dagster"))
        if self.token is not None:
            env[self.token_variable] = self.token
        env.update(self.extra_environment)
        return env

    def command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "lakebed.cli",
            *self.args,
            "--host",
            self.host,
            "--port",
            str(port),
            *self.extra_args,
        ]

    def start(self) -> Self:
        for _ in range(3):  # another process may take the free port before uvicorn binds it
            port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(port), env=self.environment(), stdout=log, stderr=subprocess.STDOUT
                )
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_until_ready():
                self.schemas = Schemas(self.request("/openapi.json").json(), lenient=self.lenient)
                return self
        raise AssertionError(f"{' '.join(self.args)} did not start:\n{self.log()}")

    def _wait_until_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), timeout=1):
                    return True
            except OSError:
                time.sleep(0.1)
        self.stop()
        return False

    def request(
        self,
        path: str,
        *,
        token: str | None = None,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        """One request, with this server's token unless ``token`` is given; JSON answers are validated."""
        reply = send(
            self.url + path, token=token or self.request_token, method=method, headers=headers, body=body
        )
        if self.schemas is not None:
            self.schemas.check(reply, path, method)
        return reply

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
