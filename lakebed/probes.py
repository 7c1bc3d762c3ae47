"""What every lakebed HTTP server adds for operations: ``GET /metrics``, ``GET /ready`` (and ``GET
/health`` where the server has none), and the request-latency histogram.

* ``/ready`` answers ``200`` when the lake home, the broker and the object store are reachable, ``503``
  naming each failing check otherwise (load balancers and Kubernetes take a server out of rotation on
  ``503``). The same checks back ``lakebed status``.
* ``/metrics`` is the Prometheus text exposition of :mod:`lakebed.metrics` (aggregated over every worker
  process in multiprocess mode), plus a server's own collectors (the feature server's freshness gauges).
* Each request's latency goes to ``lakebed_http_request_duration_seconds`` labelled by the route's
  template (``/api/v1/namespaces/{namespace}``, never the raw path), so the label set stays bounded.

The routes are declared on the app's own router, so they are in its OpenAPI document and pass its
middleware (the bearer check) like any route.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lakebed import metrics
from lakebed.config import LakebedConfig
from lakebed.http import NotedStatus

BROKER_FILE = "broker.json"  # written by lakebed.broker for the embedded broker of a home
_TIMEOUT = 1.0  # seconds a readiness check may wait for a connection


class Check(BaseModel):
    """One readiness check."""

    name: Literal["home", "broker", "object_store"]
    ok: bool
    detail: str = Field(description="What was checked, or why it failed.")


class Readiness(BaseModel):
    """The answer of ``GET /ready`` (``200`` ready, ``503`` not)."""

    ready: bool
    checks: list[Check]
    failing: list[str] = Field(description="The names of the failing checks.")


class Alive(BaseModel):
    status: Literal["ok"] = "ok"


def readiness(config: LakebedConfig) -> Readiness:
    """The lake home (a writable folder), the broker (when one is configured or recorded for the home)
    and the object store (when the cold tier is on one), each checked now."""
    checks = [_home(config.home), _broker(config), _object_store(config)]
    return Readiness(
        ready=all(c.ok for c in checks), checks=checks, failing=[c.name for c in checks if not c.ok]
    )


def broker_address(config: LakebedConfig) -> str | None:
    """``LAKEBED_KAFKA_BOOTSTRAP``, else the embedded broker recorded in ``HOME/broker.json``, else None."""
    if config.kafka_bootstrap:
        return config.kafka_bootstrap
    try:
        return str(json.loads((config.home / BROKER_FILE).read_text())["bootstrap"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _home(home: Path) -> Check:
    if not home.is_dir():
        return Check(name="home", ok=False, detail=f"lake home {home} does not exist")
    try:
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        return Check(name="home", ok=False, detail=f"lake home {home} is not writable: {exc.strerror or exc}")
    return Check(name="home", ok=True, detail=f"lake home {home} is writable")


def _broker(config: LakebedConfig) -> Check:
    address = broker_address(config)
    if address is None:
        return Check(name="broker", ok=True, detail="no broker configured (LAKEBED_KAFKA_BOOTSTRAP unset)")
    first = address.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if _connects(host.strip("[]") or "localhost", int(port or 9092)):
        return Check(name="broker", ok=True, detail=f"broker {first} accepts connections")
    return Check(name="broker", ok=False, detail=f"broker {first} does not accept connections")


def _object_store(config: LakebedConfig) -> Check:
    cold = config.cold_uri
    if not cold.startswith("s3://"):
        return Check(name="object_store", ok=True, detail=f"cold tier {cold} is local")
    bucket = urlsplit(cold).netloc
    try:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            config=Config(connect_timeout=_TIMEOUT, read_timeout=_TIMEOUT, retries={"max_attempts": 1}),
            **config.s3.to_boto3_kwargs(),
        )
        client.head_bucket(Bucket=bucket)
    except Exception as exc:  # any failure (network, credentials, no bucket) means not ready
        reason = str(exc).splitlines()[0][:200]
        return Check(name="object_store", ok=False, detail=f"bucket {bucket!r} not reachable: {reason}")
    return Check(name="object_store", ok=True, detail=f"bucket {bucket!r} is reachable")


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_TIMEOUT):
            return True
    except OSError:
        return False


class RequestTimer:
    """ASGI middleware: each request's seconds into ``lakebed_http_request_duration_seconds``."""

    def __init__(self, app: ASGIApp, *, server: str) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        noted = NotedStatus(send)
        try:
            await self.app(scope, receive, noted)
        finally:
            route = getattr(
                scope.get("route"), "path_format", "unmatched"
            )  # the template, convertors dropped
            metrics.HTTP_DURATION.labels(self.server, route, scope["method"], str(noted.status)).observe(
                time.perf_counter() - started
            )


class RouteTimer:
    """The histogram children of one route (one per status), for an app's own fast path that answers
    before the middleware, observed through :class:`lakebed.metrics.Buffered` (an append)."""

    def __init__(self, server: str, route: str, method: str) -> None:
        self._labels = (server, route, method)
        self._children: dict[int, Any] = {}

    def observe(self, status: int, started: float) -> None:
        child = self._children.get(status)
        if child is None:
            child = self._children[status] = metrics.Buffered(
                metrics.HTTP_DURATION.labels(*self._labels, str(status))
            )
        child.observe(time.perf_counter() - started)


def instrument(
    app: FastAPI,
    *,
    server: str,
    config: Callable[[], LakebedConfig],
    collectors: CollectorRegistry | None = None,
    health: bool = False,
) -> None:
    """Add ``/ready`` and ``/metrics`` (and ``/health`` with ``health``) to ``app`` and time its requests.

    ``config`` gives the config the readiness checks read; ``collectors`` is a registry of the server's
    own scrape-time collectors, exposed after lakebed's metrics."""

    @app.get(
        "/ready",
        response_model=Readiness,
        tags=["Meta"],
        summary="Whether the lake home, the broker and the object store are reachable.",
        responses={503: {"model": Readiness, "description": "A check failed (named in `failing`)."}},
    )
    def ready() -> JSONResponse:
        answer = readiness(config())
        return JSONResponse(answer.model_dump(mode="json"), status_code=200 if answer.ready else 503)

    @app.get(
        "/metrics",
        tags=["Meta"],
        summary="Prometheus metrics of this server (every worker process).",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "The text exposition format."}},
    )
    def prometheus() -> Response:
        return Response(metrics.exposition(collectors), media_type=metrics.CONTENT_TYPE)

    if health:

        @app.get("/health", response_model=Alive, tags=["Meta"], summary="Alive.")
        async def alive() -> Alive:
            return Alive()

    app.add_middleware(RequestTimer, server=server)


__all__ = ["Check", "Readiness", "RequestTimer", "RouteTimer", "broker_address", "instrument", "readiness"]
