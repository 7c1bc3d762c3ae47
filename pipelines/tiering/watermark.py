"""Watermarks: int64 in the tiering column's units (microseconds since the epoch for timestamps, days for
dates, the value for integers), and their forms as values, Arrow scalars and SQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa


def to_units(value: Any, dtype: pa.DataType) -> int:
    """A column value (datetime, date, ISO text or int) as a watermark in the column's units."""
    if pa.types.is_timestamp(dtype):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time())
        if isinstance(value, dt.datetime):
            value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return int(value)
    if pa.types.is_date(dtype):
        if isinstance(value, str):
            value = dt.date.fromisoformat(value[:10])
        if isinstance(value, dt.datetime):
            value = value.date()
        if isinstance(value, dt.date):
            return (value - dt.date(1970, 1, 1)).days
        return int(value)
    return int(value)


def from_units(units: int | None, dtype: pa.DataType) -> Any:
    """A watermark as a value people read (a datetime, date or int)."""
    if units is None:
        return None
    if pa.types.is_timestamp(dtype):
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=units)
    if pa.types.is_date(dtype):
        return dt.date(1970, 1, 1) + dt.timedelta(days=units)
    return units


def upper_bound(largest: Any, dtype: pa.DataType) -> int:
    """An upper bound of a file's values from its ``max`` statistic: Delta keeps timestamps to the
    millisecond (delta-rs truncates), so the true largest may be up to 999 microseconds more."""
    units = to_units(largest, dtype)
    return units + 999 if pa.types.is_timestamp(dtype) else units


def literal(units: int, dtype: pa.DataType) -> pa.Scalar:
    """The watermark as an Arrow scalar of the column's type (for dataset filters)."""
    if pa.types.is_timestamp(dtype):
        return pa.scalar(units, pa.int64()).cast(pa.timestamp("us", tz=dtype.tz)).cast(dtype)
    if pa.types.is_date(dtype):
        return pa.scalar(units, pa.int32()).cast(pa.date32()).cast(dtype)
    return pa.scalar(units, pa.int64()).cast(dtype)


def quote(column: str) -> str:
    """``column`` as a quoted SQL identifier."""
    return '"' + column.replace('"', '""') + '"'


def sql_units(column: str, dtype: pa.DataType) -> str:
    """A DuckDB expression giving ``column`` in watermark units."""
    quoted = quote(column)
    if pa.types.is_timestamp(dtype):
        return f"epoch_us({quoted})"
    if pa.types.is_date(dtype):
        return f"({quoted} - DATE '1970-01-01')"
    return quoted


def sql_literal(units: int, dtype: pa.DataType) -> str:
    """The watermark as a SQL literal delta-rs predicates understand."""
    value = from_units(units, dtype)
    if pa.types.is_timestamp(dtype):
        unit = {"s": "Second", "ms": "Millisecond", "us": "Microsecond", "ns": "Nanosecond"}[dtype.unit]
        zone = f'Some("{dtype.tz}")' if dtype.tz else "None"
        text = value.strftime("%Y-%m-%dT%H:%M:%S.%f") + ("Z" if dtype.tz else "")
        return f"arrow_cast('{text}', 'Timestamp({unit}, {zone})')"
    if pa.types.is_date(dtype):
        return f"'{value.isoformat()}'::date"
    return str(value)
