"""The error answers each route declares in the OpenAPI document (all are :class:`~..models.Error`)."""

from __future__ import annotations

from typing import Any

from lakebed.http import Error

ALLOW = "GET, HEAD"


def _error(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": Error, "description": description}
    if headers:
        answer["headers"] = headers
    return answer


UNAUTHORIZED = _error(
    "The bearer token is missing or wrong.", **{"WWW-Authenticate": {"schema": {"type": "string"}}}
)
METHOD_NOT_ALLOWED = _error(
    "The API is read-only: only GET and HEAD.", Allow={"schema": {"type": "string", "const": ALLOW}}
)
FORBIDDEN = _error("The token's role may not read_lineage (the access policy of the project).")
INTERNAL = _error("Something unexpected failed; the server logged it.")
NOT_FOUND = _error("No such namespace, dataset, version, job or run.")
INVALID = _error("A parameter is missing or malformed.")

ALWAYS: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    405: METHOD_NOT_ALLOWED,
    500: INTERNAL,
}
"""Every route can answer these."""
API: dict[int | str, dict[str, Any]] = {**ALWAYS, 404: NOT_FOUND, 422: INVALID}
"""The ``/api/v1`` routes can answer these too."""

__all__ = [
    "ALLOW",
    "ALWAYS",
    "API",
    "FORBIDDEN",
    "INTERNAL",
    "INVALID",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "UNAUTHORIZED",
]
