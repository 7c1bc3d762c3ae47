"""A hot table's data files by their tiering values: which lie below a watermark, and their rows split at
one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from lakebed.pipelines.tiering.actions import partition_columns
from lakebed.pipelines.tiering.watermark import to_units, upper_bound

FilePlan = list[tuple[dict[str, Any], bool]]
"""Hot files holding rows below a watermark: (add action, True when every row is below it)."""

FileBounds = list[tuple[dict[str, Any], int | None, int | None]]
"""Each hot file's add action with the lowest and (an upper bound of) the highest tiering value in it."""


def file_bounds(hot: DeltaTable, column: str, dtype: pa.DataType) -> FileBounds:
    """Every file of ``hot`` (its add action from ``get_add_actions(flatten=False)``) with the lowest and
    an upper bound of the highest value of ``column`` in it, in watermark units: from the file's statistics,
    or its partition value when ``column`` is a partition column. None where unknown (no statistics) or
    null (a null partition)."""
    partitioned = column in partition_columns(hot)
    bounds: FileBounds = []
    for action in pa.table(hot.get_add_actions(flatten=False)).to_pylist():
        if partitioned:
            value = (action.get("partition") or {}).get(column)
            low = high = None if value is None else to_units(value, dtype)
        else:
            smallest = (action.get("min") or {}).get(column)
            largest = (action.get("max") or {}).get(column)
            low = None if smallest is None else to_units(smallest, dtype)
            high = None if largest is None else upper_bound(largest, dtype)
        bounds.append((action, low, high))
    return bounds


def files_below(hot: DeltaTable, column: str, dtype: pa.DataType, target: int) -> FilePlan:
    """The hot files holding rows below ``target``, from the files' statistics (or partition values).
    Files without statistics are taken as straddling (their rows are then read). Rows whose column is
    null never move (nor does a null partition)."""
    partitioned = column in partition_columns(hot)
    chosen = []
    for action, low, high in file_bounds(hot, column, dtype):
        if high is not None and high < target:
            chosen.append((action, True))
        elif partitioned and low is None:
            continue
        elif low is None or low < target:  # straddles the target (or has no statistics)
            chosen.append((action, False))
    return chosen


def split_rows(source: Path, column: str, bound: pa.Scalar) -> tuple[pa.Table, pa.Table]:
    """The rows of a data file below ``bound`` and the others (nulls included), from one read."""
    import pyarrow.parquet as pq

    rows = pq.read_table(source)
    below = pc.fill_null(pc.less(rows.column(column), bound), False)
    return rows.filter(below), rows.filter(pc.invert(below))


def parquet_bytes(rows: pa.Table) -> bytes:
    """``rows`` as the bytes of a Parquet file (zstd)."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink, compression="zstd")
    return bytes(sink.getvalue())
