"""What every lakebed HTTP server shares: the binding rule, the error body and the way uvicorn is started
(who a request is and what it may do is :mod:`lakebed.access`'s).

* Without a token a server binds a loopback address only (with a warning); another address is refused.
* Errors are JSON ``{"error": message, "status": status}`` (plus ``detail`` for request validation).
* uvicorn's access log, when on, shows the method, path and status of each request, never its headers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Send

from lakebed.errors import ConfigError

log = logging.getLogger("lakebed.http")


class ParameterProblem(BaseModel):
    """One reason a request was refused."""

    model_config = ConfigDict(extra="forbid")

    loc: list[str | int] = Field(description="Where: e.g. `['query', 'depth']` or `['body', 'features']`.")
    msg: str
    type: str


class Error(BaseModel):
    """Every error answer: 400, 401, 404, 405, 422 and 500."""

    model_config = ConfigDict(extra="forbid")

    error: str
    status: int
    detail: list[ParameterProblem] | None = Field(default=None, description="422 only: each problem.")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error answer: ``{"error": message, "status": status}``."""
    body = Error(error=message, status=status).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def error_body(status: int, message: str) -> bytes:
    """The JSON bytes of :func:`error_response`'s body."""
    return Error(error=message, status=status).model_dump_json(exclude_none=True).encode("utf-8")


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    """The ``422`` answer for FastAPI's validation errors: one message naming each bad parameter."""
    problems = [
        ParameterProblem(loc=list(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", "")))
        for e in errors
    ]
    message = "; ".join(f"{_where(p.loc)}: {p.msg}" for p in problems) or "the request is not valid"
    body = Error(error=message, status=422, detail=problems).model_dump(mode="json")
    return JSONResponse(body, status_code=422)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler of FastAPI's ``RequestValidationError``: :func:`validation_response`."""
    from fastapi.exceptions import RequestValidationError

    return validation_response(exc.errors() if isinstance(exc, RequestValidationError) else [])


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    """The handler of lakebed's not-found errors: ``404`` with the error's own message."""
    return error_response(404, str(exc))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """The handler of anything unexpected: ``500`` without details (Starlette re-raises the exception
    after this answer, and the server logs it with its traceback)."""
    return error_response(500, "internal error; the server log has the details")


def _where(loc: list[str | int]) -> str:
    kinds = {"query": "the query parameter", "path": "the path parameter", "body": "the body field"}
    if len(loc) >= 2 and loc[0] in kinds:
        return f"{kinds[str(loc[0])]} {'.'.join(str(p) for p in loc[1:])!r}"
    if loc == ["body"]:
        return "the body"
    return ".".join(str(part) for part in loc)


def secret_value(token: str | SecretStr | None) -> str | None:
    """The token in clear, None when unset or blank."""
    value = token if isinstance(token, str) or token is None else token.get_secret_value()
    if value is None:
        return None
    return value.strip() or None


def bearer_openapi(app: Any, token_description: str) -> dict[str, Any]:
    """``app``'s OpenAPI document (a FastAPI app's, built once and kept), which also says that every
    request needs a bearer token (``token_description`` says which)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        scheme = {"type": "http", "scheme": "bearer", "description": token_description}
        document.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = scheme
        document["security"] = [{"bearerAuth": []}]
        app.openapi_schema = document
    built: dict[str, Any] = app.openapi_schema
    return built


class NotedStatus:
    """An ASGI ``send`` that passes every message on and notes the status of the answer (500 until one
    starts): for whatever records requests after they are answered."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_binding(host: str, tokens: bool, *, service: str, variable: str) -> None:
    """Without tokens only a loopback ``host`` may be served (with a warning); another is refused.

    ``service`` names what would be exposed ("the lineage API"), ``variable`` the setting of its token."""
    if tokens:
        return
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to serve {service} on {host!r} without a token: anyone who can reach it could read "
            f"what it serves. Give the project's access.yaml tokens, or set {variable}, or bind a loopback "
            "address (127.0.0.1, ::1 or localhost)."
        )
    log.warning(
        "%s on %s has no token: anyone on this machine can read it (set %s to require one)",
        service,
        host,
        variable,
    )


def server_options(host: str, port: int, *, access_log: bool = True) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for every lakebed server: the address (``[::1]`` →
    ``::1``), no ``Server`` header, lakebed's loggers on uvicorn's handler, and the access log (method,
    path and status of each request) on or off."""
    from uvicorn.config import LOGGING_CONFIG

    logging_config = {
        **LOGGING_CONFIG,
        "loggers": {
            **LOGGING_CONFIG["loggers"],
            "lakebed": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
    return {
        "host": host.strip().strip("[]"),
        "port": port,
        "server_header": False,
        "log_config": logging_config,
        "access_log": access_log,
    }


__all__ = [
    "Error",
    "NotedStatus",
    "ParameterProblem",
    "bearer_openapi",
    "check_binding",
    "error_body",
    "error_response",
    "internal_error",
    "invalid_request",
    "not_found",
    "is_loopback",
    "secret_value",
    "server_options",
    "validation_response",
]
