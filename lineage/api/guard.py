"""The gate every request passes before routing: the bearer token and its role, then the method, then the path.

* Every request, ``/openapi.json`` and ``/`` included, needs ``Authorization: Bearer <token>`` when
  tokens are configured (the project's ``access.yaml``, or ``LAKEBED_LINEAGE_API_TOKEN``; see
  :mod:`lakebed.access`); tokens are compared by their SHA-256 and never logged. Without one the answer is
  ``401`` with ``WWW-Authenticate: Bearer``.
* Authentication comes first, for every method and path: a client without the token learns nothing, not
  even which paths or methods exist. Then any method but ``GET`` or ``HEAD`` gets ``405`` with
  ``Allow: GET, HEAD``: the API never changes anything. ``HEAD`` is answered as ``GET`` without the body.
  Then the token's role needs ``read_lineage`` (``403`` naming it otherwise); a role that may not
  ``read_table`` every table gets the details of the tables it may not read masked (:mod:`.masking`).
* The path routed on is the raw path percent-decoded except ``%2F`` (and ``%25``), so an encoded name
  with slashes stays one segment (:mod:`.params`); a trailing slash is dropped, and so are query
  parameters with a blank value (a blank value means "not given").
* Every answer says ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``, and every
  answered request is kept by the gate's access log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lakebed.access import Gate, Principal
from lakebed.http import error_response
from lakebed.lineage.api.masking import MASKING_STATE, Masking
from lakebed.lineage.api.routes.responses import ALLOW
from lakebed.version import __version__

REALM = "lakebed-lineage"
READ_METHODS = ("GET", "HEAD")
_KEPT_ENCODED = re.compile(rb"%(2[fF]|25)")
EXTRA_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"server", f"lakebed-lineage/{__version__}".encode()),
]


def routing_path(raw_path: bytes) -> str:
    """The path to route on: percent-decoded except ``%2F`` and ``%25``, without a trailing slash."""
    parts = _KEPT_ENCODED.split(raw_path)
    decoded = b"".join(
        b"%" + part.upper() if index % 2 else unquote_to_bytes(part) for index, part in enumerate(parts)
    )
    path = decoded.decode("utf-8", errors="replace")
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


def _without_blank_values(query: bytes) -> bytes:
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if v.strip()]).encode("latin-1")


class RequestGuard:
    """ASGI middleware in front of the app (see the module docstring). ``masking(principal)`` is how the
    principal's answers are masked, None when it may read every table."""

    def __init__(self, app: ASGIApp, *, gate: Gate, masking: Callable[[Principal], Masking | None]) -> None:
        self.app = app
        self.gate = gate
        self.masking = masking

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = routing_path(raw.split(b"?", 1)[0])
        scope = {
            **scope,
            "path": path,
            "raw_path": path.encode("utf-8"),
            "query_string": _without_blank_values(scope.get("query_string", b"")),
            "method": "GET" if method == "HEAD" else method,
        }
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *EXTRA_HEADERS]}
            elif message["type"] == "http.response.body" and method == "HEAD":
                message = {**message, "body": b""}
            await send(message)

        who = self.gate.identify(scope)
        if not isinstance(who, Principal):
            self.gate.record(scope, None, None, None, allowed=False, status=401)
            await who(scope, receive, send_with_headers)
            return
        refusal = None
        if method not in READ_METHODS:
            refusal = error_response(
                405, f"the lineage API is read-only: {method} is not allowed (use {ALLOW})", {"Allow": ALLOW}
            )
        elif not self.gate.allows(who, "read_lineage", "*"):
            refusal = Gate.refusal(who, "read_lineage", "*")
        if refusal is not None:
            self.gate.record(scope, who, "read_lineage", path, allowed=False, status=refusal.status_code)
            await refusal(scope, receive, send_with_headers)
            return
        masking = self.masking(who)
        scope["state"] = {**scope.get("state", {}), MASKING_STATE: masking}
        try:
            await self.app(
                scope, receive, send_with_headers if masking is None else _masked(send_with_headers, masking)
            )
        finally:
            self.gate.record(scope, who, "read_lineage", path, allowed=True, status=status)


def _masked(send: Send, masking: Masking) -> Send:
    """``send`` with JSON answers masked: the start of the answer is held until its body is complete."""
    held: Message | None = None
    chunks: list[bytes] = []

    async def masked_send(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            kind = dict(message.get("headers", [])).get(b"content-type", b"")
            if kind.startswith(b"application/json"):
                held = message
                return
        elif message["type"] == "http.response.body" and held is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = json.dumps(masking.json(json.loads(b"".join(chunks))), separators=(",", ":")).encode()
            headers = [(k, v) for k, v in held.get("headers", []) if k != b"content-length"]
            await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return masked_send


__all__ = ["READ_METHODS", "REALM", "RequestGuard", "routing_path"]
