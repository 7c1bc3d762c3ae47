"""Quality rules declared in table contracts. Pure data: quality/ compiles them into engines.

Column rules sit on the column itself (``nullable``, ``unique``, ``min``, ``max``, ``allowed``, ``regex``,
with one ``severity`` for that column's rules); custom row rules are SQL boolean expressions over a row's
columns (``rules:``); table rules judge the data as a whole (``table_rules:`` row-count bounds, key
uniqueness, freshness of the newest event time).

Row rules follow SQL ``CHECK`` semantics: a null value passes every rule except ``not_null``.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from lakebed.schemas.durations import format_duration, parse_duration

Severity = Literal["error", "warn"]
Scalar = bool | int | float | str


class ExprRule(BaseModel):
    """A custom row rule: ``sql`` is a boolean SQL expression (e.g. ``unit_price * quantity < 100000``)
    that every row must satisfy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    sql: str
    severity: Severity = "error"
    description: str | None = None

    @field_validator("sql")
    @classmethod
    def _parses(cls, value: str) -> str:
        sql_columns(value)  # raises ValueError with the parser's message
        return value


class RowCountRule(BaseModel):
    """Bounds on the number of rows of the table (after the write, in the write path)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    severity: Severity = "error"

    @model_validator(mode="after")
    def _ordered(self) -> RowCountRule:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class UniqueKeysRule(BaseModel):
    """No two rows share the same key (``columns``, default: the contract's ``keys``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: tuple[str, ...] = ()
    severity: Severity = "error"


class FreshnessRule(BaseModel):
    """The newest value of ``column`` (an event time) is at most ``max_lag`` old when the data is written
    (or, checking a past version, when that version was committed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    max_lag: dt.timedelta
    severity: Severity = "warn"

    @field_validator("max_lag", mode="before")
    @classmethod
    def _duration(cls, value: object) -> dt.timedelta:
        return parse_duration(value)

    @field_serializer("max_lag")
    def _duration_text(self, value: dt.timedelta) -> str:
        return format_duration(value)


class TableRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    row_count: RowCountRule | None = None
    unique_keys: UniqueKeysRule | None = None
    freshness: FreshnessRule | None = None


def sql_columns(sql: str) -> set[str]:
    """The column names a SQL boolean expression reads; ``ValueError`` if it does not parse."""
    import polars as pl

    try:
        return set(pl.sql_expr(sql).meta.root_names())
    except Exception as exc:  # polars raises SQLSyntaxError / ComputeError / InvalidOperationError
        raise ValueError(f"invalid SQL expression {sql!r}: {str(exc).strip().splitlines()[0]}") from None


__all__ = [
    "ExprRule",
    "FreshnessRule",
    "RowCountRule",
    "Scalar",
    "Severity",
    "TableRules",
    "UniqueKeysRule",
    "sql_columns",
]
