"""The gate every request passes before routing: the bearer token, then the method, then the path.

* Every request, ``/openapi.json`` and ``/`` included, needs ``Authorization: Bearer <token>`` when a
  token is configured; the token is compared in constant time (:func:`secrets.compare_digest`) and never
  logged. Without it the answer is ``401`` with ``WWW-Authenticate: Bearer``.
* Authentication comes first, for every method and path: a client without the token learns nothing, not
  even which paths or methods exist. Then any method but ``GET`` or ``HEAD`` gets ``405`` with
  ``Allow: GET, HEAD``: the API never changes anything. ``HEAD`` is answered as ``GET`` without the body.
* The path routed on is the raw path percent-decoded except ``%2F`` (and ``%25``), so an encoded name
  with slashes stays one segment (:mod:`.params`); a trailing slash is dropped, and so are query
  parameters with a blank value (a blank value means "not given").
* Every answer says ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lakebed.http import BearerCheck, error_response
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
    """ASGI middleware in front of the app (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self._bearer = BearerCheck(token, realm=REALM)

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

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *EXTRA_HEADERS]}
            elif message["type"] == "http.response.body" and method == "HEAD":
                message = {**message, "body": b""}
            await send(message)

        refusal = self._bearer.refusal(scope)
        if refusal is None and method not in READ_METHODS:
            refusal = error_response(
                405, f"the lineage API is read-only: {method} is not allowed (use {ALLOW})", {"Allow": ALLOW}
            )
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


__all__ = ["READ_METHODS", "REALM", "RequestGuard", "routing_path"]
