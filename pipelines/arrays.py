"""Arrow arrays built from buffers.

``pa.array`` over a numpy array or a Python list loads pandas on first use (pyarrow probes for pandas
types): ~100 MiB of RSS and a second of imports that a plain file ingest never needs. Arrays built from
buffers skip the probe.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def int64_array(values: np.ndarray) -> pa.Array:
    """``values`` as an int64 Arrow array (no copy when they are int64 already)."""
    data = pa.py_buffer(values.astype(np.int64, copy=False))
    return pa.Array.from_buffers(pa.int64(), len(values), [None, data])


def repeated_text(value: str, count: int) -> pa.Array:
    """A string array holding ``value`` ``count`` times."""
    data = value.encode()
    offsets = pa.py_buffer(np.array([0, len(data)], np.int32))
    one = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(data)])
    return one.take(pa.Array.from_buffers(pa.int32(), count, [None, pa.py_buffer(np.zeros(count, np.int32))]))


def last_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """The last row of each distinct ``keys`` value (nulls equal), in table order; ``table`` itself when
    no key repeats."""
    if table.num_rows < 2:
        return table
    row = "__lakebed_row"
    numbered = table.select(keys).append_column(row, int64_array(np.arange(table.num_rows)))
    last = numbered.group_by(keys, use_threads=False).aggregate([(row, "max")]).column(f"{row}_max")
    if len(last) == table.num_rows:
        return table
    return table.take(int64_array(np.sort(last.to_numpy())))
