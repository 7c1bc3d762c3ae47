"""The lineage API application: the app factory, its error answers, its OpenAPI document, and ``serve``.

Errors are JSON ``{"error": ..., "status": ...}``: ``401`` (no or a wrong token), ``404`` for an unknown
path or for a table, dataset, job, run or version the store does not know (with the store's message),
``405`` for any method but ``GET`` and ``HEAD``, ``422`` for a bad parameter (a depth or version that is
no integer, a time that is no ISO-8601 instant, an unknown format; ``detail`` lists each problem), and
``500`` for anything unexpected, which the server logs with its traceback and never shows the client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from lakebed.access import Gate, Principal, flushing
from lakebed.errors import LineageNotFoundError
from lakebed.http import (
    bearer_openapi,
    check_binding,
    error_response,
    internal_error,
    invalid_request,
    not_found,
    secret_value,
    server_options,
)
from lakebed.lineage.api.guard import REALM, RequestGuard
from lakebed.lineage.api.masking import Masking
from lakebed.lineage.api.routes import ROUTERS
from lakebed.lineage.api.state import LineageState
from lakebed.probes import instrument
from lakebed.version import __version__

if TYPE_CHECKING:
    from pydantic import SecretStr

    from lakebed.lineage.store import LineageStore

log = logging.getLogger("lakebed.lineage.api")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5005
TITLE = "lakebed lineage API"
SUMMARY = "Read-only lineage of a lakebed home: Marquez-compatible endpoints plus version-exact provenance."
TAGS = [
    {"name": "Meta"},
    {"name": "Namespaces"},
    {"name": "Datasets"},
    {"name": "Jobs"},
    {"name": "Runs"},
    {"name": "Lineage"},
    {"name": "lakebed", "description": "lakebed's additions to the Marquez API."},
]
BEARER_DESCRIPTION = (
    "A token of the project's access.yaml, or LAKEBED_LINEAGE_API_TOKEN; required when configured."
)


class LineageApp(FastAPI):
    """The app, whose OpenAPI document also names the bearer token every request needs."""

    def openapi(self) -> dict[str, Any]:
        return bearer_openapi(self, BEARER_DESCRIPTION)


def create_app(
    store: LineageStore,
    *,
    token: str | SecretStr | None = None,
    gate: Gate | None = None,
    tables: Callable[[str, str], str | None] | None = None,
) -> LineageApp:
    """The lineage API over ``store``.

    ``gate`` identifies requests and decides what their roles may do (:mod:`lakebed.access`); by default
    one of the single ``token`` (default: the store config's ``lineage_api_token``), acting as an engineer.
    ``tables(namespace, name)`` names the lakebed table of a dataset (None: not a table), so that the
    details of tables a role may not read are masked; without it only datasets whose answers name their
    table can be masked. Binding is :func:`serve`'s business: it refuses a non-loopback address without a
    token."""
    app = LineageApp(
        title=TITLE,
        version=__version__,
        summary=SUMMARY,
        description=(__doc__ or "").strip(),
        openapi_tags=TAGS,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        lifespan=_lifespan,
    )
    app.state.lineage = LineageState(store)
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(LineageNotFoundError, not_found)
    app.add_exception_handler(Exception, internal_error)
    instrument(app, server="lineage", config=lambda: store.config, health=True)
    gate = gate or Gate(realm=REALM, token=resolve_token(store, token))
    app.add_middleware(RequestGuard, gate=gate, masking=_masking(gate, tables or _no_table))
    app.state.gate = gate
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While serving, the access log is appended every five seconds (and once more at the end)."""
    async with flushing(app.state.gate.access_log):
        yield


def _no_table(namespace: str, name: str) -> str | None:
    return None


def _masking(gate: Gate, tables: Callable[[str, str], str | None]) -> Callable[[Principal], Masking | None]:
    """The masking of a principal's answers: None for a role that may read every table."""

    def masking(who: Principal) -> Masking | None:
        if gate.everywhere(who, "read_table"):
            return None

        def readable_table(table: str) -> bool:
            return gate.allows(who, "read_table", table)

        def readable(namespace: str, name: str) -> bool:
            table = tables(namespace, name)
            return table is None or readable_table(table)

        return Masking(readable=readable, readable_table=readable_table)

    return masking


def resolve_token(store: LineageStore, token: str | SecretStr | None) -> str | None:
    """The token to require: ``token``, else the store config's; None when neither is set (or blank)."""
    return secret_value(token if token is not None else store.config.lineage_api_token)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):
        return await internal_error(request, exc)
    message = f"no such endpoint: {request.url.path}" if exc.status_code == 404 else exc.detail
    return error_response(exc.status_code, message, exc.headers)


def serve(
    store: LineageStore,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | SecretStr | None = None,
    gate: Gate | None = None,
    tables: Callable[[str, str], str | None] | None = None,
) -> None:
    """Serve the lineage API with uvicorn until interrupted (Ctrl-C or SIGTERM).

    Uvicorn's access log shows the method, path and status of each request, never its headers."""
    import uvicorn

    gate = gate or Gate(realm=REALM, token=resolve_token(store, token))
    check_binding(host, gate.required, service="the lineage API", variable="LAKEBED_LINEAGE_API_TOKEN")
    app = create_app(store, gate=gate, tables=tables)
    uvicorn.run(app, **server_options(host, port))


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LineageApp",
    "create_app",
    "serve",
]
