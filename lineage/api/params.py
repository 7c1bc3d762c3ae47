"""Path and query parameters shared by the routes: one declaration each, validated by FastAPI.

Names hold slashes: a dataset is named by its absolute path, a namespace can be ``kafka://host:port`` or
``s3://bucket``. The request guard (:mod:`.guard`) leaves ``%2F`` encoded in the path it routes on, so an
encoded name is one path segment; the ``segment`` and ``name`` convertors decode it. A ``name`` may also
come unencoded, across several segments (``/datasets//tmp/lake/orders/versions``), where that cannot be
confused with a sub-resource: a dataset whose last part is ``versions`` must be encoded.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar
from urllib.parse import unquote

from fastapi import Query
from pydantic import AfterValidator, BeforeValidator
from starlette.convertors import Convertor, register_url_convertor

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_DEPTH = 100
MARQUEZ_DEPTH = 20  # Marquez's default for /lineage
LINEAGE_DEPTH = 5  # the store's default for upstream/downstream

GraphFormat = Literal["json", "svg", "dot", "mermaid", "png"]


class EncodedSegment(Convertor[str]):
    """One path segment, percent-decoded (``%2F`` becomes ``/``)."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return value


class EncodedName(Convertor[str]):
    """A name: one encoded segment or several unencoded ones, percent-decoded."""

    regex = ".+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", EncodedSegment())
register_url_convertor("name", EncodedName())

_SPACED_OFFSET = re.compile(r" (\d{2}(?::?\d{2})?)$")


def _restore_plus(value: object) -> object:
    """An unencoded ``+`` of a UTC offset arrives as a space: put it back."""
    return _SPACED_OFFSET.sub(r"+\1", value.strip()) if isinstance(value, str) else value


def _as_utc(moment: dt.datetime | None) -> dt.datetime | None:
    """A naive time means UTC."""
    return moment.replace(tzinfo=dt.UTC) if moment is not None and moment.tzinfo is None else moment


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many results to return.")]
Offset = Annotated[int, Query(ge=0, description="How many results to skip.")]
Table = Annotated[str, Query(description="A lakebed table name, or a dataset as `<namespace>:<name>`.")]
Version = Annotated[int | None, Query(ge=0, description="The Delta version (default: the latest).")]
Depth = Annotated[int, Query(ge=0, le=MAX_DEPTH, description="How many hops to follow.")]
Format = Annotated[
    GraphFormat,
    BeforeValidator(_lower),
    Query(alias="format", description="`json` (nodes and edges) or a drawing."),
]
AsOf = Annotated[
    dt.datetime | None,
    BeforeValidator(_restore_plus),
    AfterValidator(_as_utc),
    Query(alias="asOf", description="An ISO-8601 time (default: now; naive means UTC)."),
]
NodeId = Annotated[
    str,
    Query(
        alias="nodeId",
        pattern=r"^(dataset|job):.*:",
        description="`dataset:<namespace>:<name>` or `job:<namespace>:<name>`, percent-encoded.",
    ),
]


T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """``limit`` and ``offset`` of a listing."""

    limit: int
    offset: int

    def of(self, rows: list[T]) -> tuple[list[T], int]:
        """The rows of this page, and how many there are in all."""
        return rows[self.offset : self.offset + self.limit], len(rows)


def page(limit: Limit = DEFAULT_LIMIT, offset: Offset = 0) -> Page:
    return Page(limit, offset)


__all__ = [
    "DEFAULT_LIMIT",
    "LINEAGE_DEPTH",
    "MARQUEZ_DEPTH",
    "MAX_DEPTH",
    "MAX_LIMIT",
    "AsOf",
    "Depth",
    "Format",
    "GraphFormat",
    "Limit",
    "NodeId",
    "Offset",
    "Page",
    "Table",
    "Version",
    "page",
]
