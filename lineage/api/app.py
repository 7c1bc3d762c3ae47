"""The lineage API application: the app factory, its error answers, its OpenAPI document, and ``serve``.

Errors are JSON ``{"error": ..., "status": ...}``: ``401`` (no or a wrong token), ``404`` for an unknown
path or for a table, dataset, job, run or version the store does not know (with the store's message),
``405`` for any method but ``GET`` and ``HEAD``, ``422`` for a bad parameter (a depth or version that is
no integer, a time that is no ISO-8601 instant, an unknown format; ``detail`` lists each problem), and
``500`` for anything unexpected, which the server logs with its traceback and never shows the client.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from lakebed.errors import ConfigError, LineageNotFoundError
from lakebed.lineage.api.guard import RequestGuard, error_response
from lakebed.lineage.api.models import Error, ParameterProblem
from lakebed.lineage.api.routes import ROUTERS
from lakebed.lineage.api.state import LineageState
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
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "LAKEBED_LINEAGE_API_TOKEN; required on every request when configured.",
}


class LineageApp(FastAPI):
    """The app, whose OpenAPI document also names the bearer token every request needs."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = get_openapi(
                title=self.title,
                version=self.version,
                summary=self.summary,
                description=self.description,
                routes=self.routes,
                tags=self.openapi_tags,
            )
            document.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = BEARER
            document["security"] = [{"bearerAuth": []}]
            self.openapi_schema = document
        return self.openapi_schema


def create_app(store: LineageStore, *, token: str | SecretStr | None = None) -> LineageApp:
    """The lineage API over ``store``; ``token`` defaults to the store config's ``lineage_api_token``.

    Binding is :func:`serve`'s business: it refuses a non-loopback address without a token."""
    app = LineageApp(
        title=TITLE,
        version=__version__,
        summary=SUMMARY,
        description=(__doc__ or "").strip(),
        openapi_tags=TAGS,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.lineage = LineageState(store)
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(LineageNotFoundError, _not_found)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(RequestGuard, token=resolve_token(store, token))
    return app


def resolve_token(store: LineageStore, token: str | SecretStr | None) -> str | None:
    """The token to require: ``token``, else the store config's; None when neither is set (or blank)."""
    chosen = token if token is not None else store.config.lineage_api_token
    value = chosen if isinstance(chosen, str) or chosen is None else chosen.get_secret_value()
    return value or None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):
        return await _internal_error(request, exc)
    message = f"no such endpoint: {request.url.path}" if exc.status_code == 404 else exc.detail
    return error_response(exc.status_code, message, exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    problems = [
        ParameterProblem(loc=list(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", "")))
        for e in (exc.errors() if isinstance(exc, RequestValidationError) else [])
    ]
    message = "; ".join(f"{_where(p.loc)}: {p.msg}" for p in problems) or "the request is not valid"
    body = Error(error=message, status=422, detail=problems).model_dump(mode="json")
    return JSONResponse(body, status_code=422)


def _where(loc: list[str | int]) -> str:
    kinds = {"query": "the query parameter", "path": "the path parameter"}
    if len(loc) >= 2 and loc[0] in kinds:
        return f"{kinds[str(loc[0])]} {loc[1]!r}"
    return ".".join(str(part) for part in loc)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # The server logs the exception with its traceback (Starlette re-raises it after this answer).
    return error_response(500, "internal error; the server log has the details")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Without a token only a loopback ``host`` may be served (with a warning); another is refused."""
    if token is not None:
        return
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the lineage API on {host!r} without a token: anyone who can reach it "
            "could read the lineage. Set LAKEBED_LINEAGE_API_TOKEN (or pass token=), or bind a "
            "loopback address (127.0.0.1, ::1 or localhost)."
        )
    log.warning(
        "the lineage API on %s has no token: anyone on this machine can read the lineage "
        "(set LAKEBED_LINEAGE_API_TOKEN to require one)",
        host,
    )


def serve(
    store: LineageStore,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | SecretStr | None = None,
) -> None:
    """Serve the lineage API with uvicorn until interrupted (Ctrl-C or SIGTERM).

    Uvicorn's access log shows the method, path and status of each request, never its headers."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    secret = resolve_token(store, token)
    check_binding(host, secret)
    logging_config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "loggers": {
            **LOGGING_CONFIG["loggers"],
            "lakebed": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
    uvicorn.run(
        create_app(store, token=secret),
        host=host.strip().strip("[]"),
        port=port,
        server_header=False,
        log_config=logging_config,
    )


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LineageApp",
    "check_binding",
    "create_app",
    "is_loopback",
    "serve",
]
