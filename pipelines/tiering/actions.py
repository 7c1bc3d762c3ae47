"""Delta add and remove actions for the data files a move or recall writes, copies or removes.

delta-rs writes the actions of the files it writes itself; the files a move copies byte for byte, or
writes from the rows of a file that straddles the watermark, are committed with actions encoded here:

* **statistics** (``numRecords``, ``minValues``, ``maxValues``, ``nullCount``): of a copied file, the
  statistics delta-rs recorded for the original (from ``get_add_actions(flatten=False)``), re-encoded; of a
  new file, computed from its rows. Timestamps are kept to the millisecond (as Delta does) and rounded
  outwards: the minimum down, the maximum up, so the range always holds every value (delta-rs truncates
  the maximum; readers of tiers allow for that, see ``watermark.upper_bound``). Strings are recorded whole
  (delta-rs keeps 64 bytes, its maximum rounded up). NaN is left out of the bounds (as delta-rs leaves it
  out); a bound that is NaN or infinite (not JSON) is not recorded (delta-rs writes null), nor are bounds of
  types without a JSON form here (decimals, binary, nested); readers then read the file. Null counts are
  kept for every column. ``tests/test_delta_actions.py`` compares all of it with what delta-rs writes.
* **partition values**: text as the protocol writes it in the log (``true``/``false``, dates ISO,
  timestamps ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, null for a null partition).
* **paths**: relative to the table's root, decoded from the log's URL-encoded form (delta-rs encodes them
  again when it writes the log); **sizes**: the bytes the store holds.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import uuid
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.transaction import AddAction, RemoveAction


def file_path(path: str) -> str:
    """A data file's path relative to the table's root (where it is, and what add and remove actions
    take) from its path as the Delta log has it (URL-encoded)."""
    return unquote(path)


def new_path(like: dict[str, Any]) -> str:
    """A new data file's path beside ``like``'s (in the same partition folder)."""
    folder = file_path(like["path"]).rsplit("/", 1)[0] + "/" if "/" in like["path"] else ""
    return f"{folder}part-{uuid.uuid4()}-c000.zstd.parquet"


def partition_columns(table: DeltaTable) -> list[str]:
    return list(table.metadata().partition_columns)


def data_paths(table: DeltaTable) -> list[str]:
    """The data files of ``table``'s loaded version (relative paths, as in the Delta log)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return actions.column("path").to_pylist() if actions.num_rows else []


def add_action(path: str, size: int, like: dict[str, Any], stats: str) -> AddAction:
    """The addition of the data file at ``path`` (``size`` bytes, statistics ``stats``) in the partition
    of ``like`` (an add action as ``get_add_actions(flatten=False)`` gives it)."""
    return AddAction(
        path=path,
        size=size,
        partition_values=partition_values(like),
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=stats,
    )


def remove_action(action: dict[str, Any], now: int) -> RemoveAction:
    """The removal of a data file, from its add action as ``get_add_actions(flatten=False)`` gives it."""
    return RemoveAction(
        path=file_path(action["path"]),
        data_change=True,
        deletion_timestamp=now,
        size=int(action["size_bytes"]),
        partition_values=partition_values(action) or None,
    )


def partition_values(action: dict[str, Any]) -> dict[str, str | None]:
    """A file's partition values (text, as in the log) from ``get_add_actions(flatten=False)``."""
    values = action.get("partition") or {}
    return {k: None if v is None else _partition_text(v) for k, v in values.items()}


def _partition_text(value: Any) -> str:
    """A partition value as the Delta protocol writes it in the log."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def stats_of(action: dict[str, Any]) -> str:
    """The statistics of a file as delta-rs recorded them, from ``get_add_actions(flatten=False)``."""
    return _stats_json(
        int(action["num_records"]),
        action.get("min") or {},
        action.get("max") or {},
        action.get("null_count") or {},
    )


def stats_for(rows: pa.Table) -> str:
    """The statistics of a file holding ``rows``."""
    low, high, nulls = {}, {}, {}
    for name in rows.column_names:
        column = rows.column(name)
        nulls[name] = column.null_count
        try:
            bounds = pc.min_max(column).as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            continue
        low[name], high[name] = bounds["min"], bounds["max"]
    return _stats_json(rows.num_rows, low, high, nulls)


def _stats_json(rows: int, low: dict[str, Any], high: dict[str, Any], nulls: dict[str, Any]) -> str:
    def clean(values: dict[str, Any], is_high: bool) -> dict[str, Any]:
        out = {k: _stat_value(v, is_high) for k, v in values.items() if v is not None}
        return {k: v for k, v in out.items() if v is not None}

    return json.dumps(
        {
            "numRecords": rows,
            "minValues": clean(low, False),
            "maxValues": clean(high, True),
            "nullCount": {k: int(v) for k, v in nulls.items() if isinstance(v, int)},
        }
    )


def _stat_value(value: Any, high: bool) -> Any:
    """A statistics value as Delta writes it (timestamps to milliseconds, rounded outwards)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value
        millis = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if high and millis != value:
            millis += dt.timedelta(milliseconds=1)
        return millis.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are not JSON: no statistic (readers then read the file)
    if isinstance(value, bool | int | float | str):
        return value
    return None
