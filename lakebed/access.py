"""Who a request is and what it may do: the gate in front of every lakebed server, and the access log.

A server builds one :class:`Gate` from the project's access policy (``access.yaml``, see
:mod:`lakebed.schemas.access`) and, for compatibility, its single token setting
(``LAKEBED_FEATURE_SERVER_TOKEN``, ``LAKEBED_LINEAGE_API_TOKEN``: that token acts as an ``engineer``).

* A request's bearer token is hashed (SHA-256) and looked up among the policy's token hashes: tokens are
  never held in clear by the policy, and never logged. No token, or an unknown one, is ``401``.
* Without any token configured a server is open to whoever reaches it, which the binding rule
  (:func:`lakebed.http.check_binding`) allows on loopback addresses only; requests then act as
  ``anonymous`` with the ``engineer`` role.
* :meth:`Gate.allows` is deny by default: a grant of the role must name the action and match the
  resource (by name pattern or by one of its tags). A denial is ``403`` naming the action and resource.
* Every answered request (allowed or not, ``401`` included) is kept by the :class:`AccessLog`, which
  the server appends in batches to the ``access_log`` table (every five seconds, and when it stops).

This guards the HTTP servers. In-process Python (``lakebed.read_table``, ``FeatureStore``) is not a
security boundary: whoever runs Python with the lake's credentials reads what those credentials reach
(docs/access.md says how to map roles to object-store credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import Scope

from lakebed import metrics
from lakebed.http import error_response, secret_value
from lakebed.schemas.access import AccessPolicy, Action

log = logging.getLogger("lakebed.access")


@dataclass(frozen=True)
class Principal:
    """Who a request is: the name of its token and the token's role."""

    name: str
    role: str


ANONYMOUS = Principal("anonymous", "engineer")


def token_digest(token: str) -> str:
    """The SHA-256 (hex) a policy stores for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Gate:
    """Identifies requests by their bearer token and decides what their role may do (module docstring)."""

    def __init__(
        self,
        *,
        realm: str,
        policy: AccessPolicy | None = None,
        token: str | SecretStr | None = None,
        tags: Callable[[str], Sequence[str]] | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.realm = realm
        self.policy = policy or AccessPolicy()
        self._principals = {t.sha256: Principal(t.name, t.role) for t in self.policy.tokens}
        single = secret_value(token)
        if single is not None:
            self._principals.setdefault(token_digest(single), Principal(f"{realm} token", "engineer"))
        self._tags = tags
        self.access_log = access_log
        self._known: dict[bytes, Principal] = {}  # Authorization headers already checked → who
        self._decisions: dict[tuple[str, str, tuple[str, ...]], bool] = {}

    @property
    def required(self) -> bool:
        """Whether requests need a token (one is configured)."""
        return bool(self._principals)

    def identify(self, scope: Scope) -> Principal | JSONResponse:
        """The request's principal, or its ``401`` answer (with ``WWW-Authenticate``)."""
        if not self._principals:
            return ANONYMOUS
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        known = self._known.get(header)
        if known is not None:
            return known
        scheme, _, credentials = header.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            principal = self._principals.get(token_digest(credentials.strip()))
            if principal is not None:
                if len(self._known) >= 1024:
                    self._known.clear()
                self._known[header] = principal
                return principal
            problem, message = "invalid", "the bearer token is not valid"
            challenge = f'Bearer realm="{self.realm}", error="invalid_token"'
        else:
            problem, message = "missing", "a bearer token is required: send 'Authorization: Bearer <token>'"
            challenge = f'Bearer realm="{self.realm}"'
        client = scope.get("client") or ("?", 0)
        log.warning(
            "%s: %s token from %s for %s %s", self.realm, problem, client[0], scope["method"], scope["path"]
        )
        return error_response(401, message, {"WWW-Authenticate": challenge})

    def allows(self, principal: Principal, action: Action, resource: str, *aliases: str) -> bool:
        """Whether ``principal``'s role may do ``action`` on ``resource`` (also known as ``aliases``)."""
        names = (resource, *aliases)
        key = (principal.role, action, names)
        decided = self._decisions.get(key)
        if decided is None:
            tags = tuple(self._tags(resource)) if self._tags is not None else ()
            decided = self.policy.allows(principal.role, action, names, tags)
            if len(self._decisions) >= 65_536:
                self._decisions.clear()
            self._decisions[key] = decided
        return decided

    def everywhere(self, principal: Principal, action: Action) -> bool:
        """Whether ``principal``'s role may do ``action`` on every resource (a grant with ``"*"``)."""
        role = self.policy.all_roles.get(principal.role)
        return role is not None and any(action in g.actions and "*" in g.resources for g in role.allow)

    @staticmethod
    def refusal(principal: Principal, action: Action, resource: str) -> JSONResponse:
        return error_response(403, forbidden_message(principal, action, resource))

    def record(
        self,
        scope: Scope,
        principal: Principal | None,
        action: str | None,
        resource: str | None,
        *,
        allowed: bool,
        status: int,
    ) -> None:
        """Keep one answered request for the access log (a no-op without one)."""
        if self.access_log is not None:
            client = scope.get("client")
            self.access_log.record(
                principal.name if principal is not None else None,
                principal.role if principal is not None else None,
                action,
                resource,
                allowed,
                status,
                scope.get("method", ""),
                scope.get("path", ""),
                str(client[0]) if client else "",
            )


def forbidden_message(principal: Principal, action: str, resource: str) -> str:
    return (
        f"{principal.name} (role {principal.role}) may not {action} on {resource!r}: "
        f"the access policy grants the role no {action} there"
    )


FLUSH_SECONDS = 5
"""Seconds between two appends of a server's access log (a commit a second cost the feature server a
tenth of its throughput at 14,000 requests a second)."""


class AccessLog:
    """Answered requests, kept in memory as tuples in the order of the ``access_log`` table's columns
    (:data:`lakebed.pipelines.access_log.SCHEMA`; ``requested_at`` in microseconds since the epoch): a
    request costs an append. ``sink`` appends them in batches: :meth:`flush` takes what is kept. A
    server flushes it every five seconds from its event loop (:func:`flushing`) and once more when it
    stops. A failed append is logged and retried with the next batch (up to ``limit`` records are kept; beyond that the
    oldest are dropped, with an error in the log)."""

    def __init__(
        self,
        sink: Callable[[list[tuple[Any, ...]]], None],
        *,
        server: str,
        limit: int = 1_000_000,
    ) -> None:
        self.sink, self.server = sink, server
        self.limit = limit
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one append at a time, in order

    def record(
        self,
        principal: str | None,
        role: str | None,
        action: str | None,
        resource: str | None,
        allowed: bool,
        status: int,
        method: str,
        path: str,
        client: str,
    ) -> None:
        row = (
            time.time_ns() // 1_000,
            self.server,
            principal,
            role,
            action,
            resource,
            allowed,
            status,
            method,
            path,
            client,
        )
        with self._lock:
            self._rows.append(row)

    def flush(self) -> int:
        """Append what is kept now; returns the records appended."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                self.sink(rows)
            except Exception:
                log.exception(
                    "access log: %d record(s) could not be appended; kept for the next batch", len(rows)
                )
                with self._lock:
                    self._rows = rows + self._rows
                    if len(self._rows) > self.limit:
                        dropped = len(self._rows) - self.limit
                        del self._rows[:dropped]
                        log.error(
                            "access log: %d record(s) dropped (more than %d waiting)", dropped, self.limit
                        )
                return 0
            return len(rows)


@contextlib.asynccontextmanager
async def flushing(access_log: AccessLog | None) -> AsyncIterator[None]:
    """For a server's lifespan: every second while the server runs, fold the buffered metrics
    (:func:`lakebed.metrics.fold`: other worker processes' scrapes see them then), and every
    :data:`FLUSH_SECONDS` flush ``access_log`` on a worker thread; when it stops, flush what is left."""

    async def every_interval() -> None:
        tick = 0
        while True:
            await asyncio.sleep(1.0)
            metrics.fold()
            tick += 1
            if access_log is not None and tick % FLUSH_SECONDS == 0:
                await run_in_threadpool(access_log.flush)

    task = asyncio.create_task(every_interval(), name="lakebed-housekeeping")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        metrics.fold()
        if access_log is not None:
            await run_in_threadpool(access_log.flush)


__all__ = [
    "ANONYMOUS",
    "AccessLog",
    "Gate",
    "Principal",
    "flushing",
    "forbidden_message",
    "token_digest",
]
