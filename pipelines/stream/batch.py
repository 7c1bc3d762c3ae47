"""The records of one stream ingest micro-batch and the Kafka columns they add to the table.

A :class:`Batch` keeps polled Kafka records column-wise (values, keys, partitions, offsets, timestamps)
so the record objects can be let go at once, and turns its Kafka coordinates into the four Arrow
columns of :data:`META_SCHEMA` (``_topic``, ``_partition``, ``_offset``, ``_kafka_ts``) without a
per-row pass. :class:`RoundInfo` describes one committed micro-batch.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

UTC_MICROS = pa.timestamp("us", tz="UTC")  # the type of ``_kafka_ts`` (and of inferred JSON timestamps)
META_SCHEMA = pa.schema(
    [
        pa.field("_topic", pa.string()),
        pa.field("_partition", pa.int32()),
        pa.field("_offset", pa.int64()),
        pa.field("_kafka_ts", UTC_MICROS),
    ]
)
META_COLUMNS = tuple(META_SCHEMA.names)


@dataclass
class RoundInfo:
    """One committed micro-batch (handed to the ``progress`` callback)."""

    records: int
    dead_letters: int
    version: int | None
    offsets: dict[int, tuple[int, int]]  # partition → (first, last) offset of the round
    seconds: float


_VALUE = attrgetter("value")
_KEY = attrgetter("key")
_OFFSET = attrgetter("offset")
_TIMESTAMP = attrgetter("timestamp")
_SIZE = attrgetter("serialized_value_size")


class Polled:
    """Consecutive records of one partition (offsets increasing), kept column-wise as soon as they are
    polled: the record objects go at once, and each column is taken in one C-level pass (no per-record
    Python code)."""

    __slots__ = ("keys", "offsets", "partition", "sizes", "timestamps", "values")

    def __init__(
        self,
        partition: int,
        values: list[bytes | None],
        keys: list[bytes | None],
        offsets: array[int],
        timestamps: array[int],
        sizes: list[int],
    ) -> None:
        self.partition = partition
        self.values = values
        self.keys = keys
        self.offsets = offsets
        self.timestamps = timestamps
        self.sizes = sizes  # serialized value sizes: -1 for a null value

    @classmethod
    def of(cls, partition: int, records: Sequence[Any]) -> Polled:
        """The columns of kafka-python ``records`` (``timestamp`` None becomes -1)."""
        stamps = list(map(_TIMESTAMP, records))
        if None in stamps:
            stamps = [-1 if t is None else t for t in stamps]
        return cls(
            partition,
            list(map(_VALUE, records)),
            list(map(_KEY, records)),
            array("q", map(_OFFSET, records)),
            array("q", stamps),
            list(map(_SIZE, records)),
        )

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int | None = None) -> Polled:
        return Polled(
            self.partition,
            self.values[start:stop],
            self.keys[start:stop],
            self.offsets[start:stop],
            self.timestamps[start:stop],
            self.sizes[start:stop],
        )


class Batch:
    """The records of one micro-batch, kept column-wise: the Kafka record objects are let go as soon as
    they are polled (about half the memory per record), and the Kafka columns become Arrow arrays
    without a per-row pass."""

    __slots__ = (
        "bounds",
        "keys",
        "nbytes",
        "offsets",
        "partitions",
        "special",
        "started",
        "timestamps",
        "values",
    )

    def __init__(self) -> None:
        self.values: list[bytes | None] = []
        self.keys: list[bytes | None] = []
        self.partitions = array("i")
        self.offsets = array("q")
        self.timestamps = array("q")
        self.bounds: dict[int, tuple[int, int]] = {}  # partition → (first, last) offset
        self.nbytes = 0
        self.special = False  # a null or oversized value is in the batch
        self.started = 0.0

    def __len__(self) -> int:
        return len(self.values)

    def extend(self, partition: int, records: Sequence[Any], nbytes: int, special: bool) -> None:
        """Append ``records`` (consecutive records of one partition, offsets increasing)."""
        if not self.values:
            self.started = time.monotonic()
        self.values.extend([r.value for r in records])
        self.keys.extend([r.key for r in records])
        self.offsets.extend([r.offset for r in records])
        self.timestamps.extend([r.timestamp if r.timestamp is not None else -1 for r in records])
        self.partitions.extend(array("i", [partition]) * len(records))
        first = self.bounds.get(partition)
        self.bounds[partition] = (first[0] if first else records[0].offset, records[-1].offset)
        self.nbytes += nbytes
        self.special = self.special or special

    def extend_polled(self, polled: Polled, nbytes: int, special: bool) -> None:
        """Append the column-wise ``polled`` records (the column lists are extended, never copied per
        record)."""
        n = len(polled)
        if not n:
            return
        if not self.values:
            self.started = time.monotonic()
        p = polled.partition
        self.values.extend(polled.values)
        self.keys.extend(polled.keys)
        self.offsets.extend(polled.offsets)
        self.timestamps.extend(polled.timestamps)
        self.partitions.extend(array("i", [p]) * n)
        first = self.bounds.get(p)
        self.bounds[p] = (first[0] if first else polled.offsets[0], polled.offsets[-1])
        self.nbytes += nbytes
        self.special = self.special or special

    def without(self, partitions: set[int]) -> Batch:
        """A copy without the records of ``partitions``."""
        kept = Batch()
        for i, p in enumerate(self.partitions):
            if p in partitions:
                continue
            value = self.values[i]
            kept.values.append(value)
            kept.keys.append(self.keys[i])
            kept.partitions.append(p)
            kept.offsets.append(self.offsets[i])
            kept.timestamps.append(self.timestamps[i])
            first = kept.bounds.get(p)
            kept.bounds[p] = (first[0] if first else self.offsets[i], self.offsets[i])
            kept.nbytes += len(value) if value is not None else 0
        kept.special = self.special and bool(kept.values)
        kept.started = self.started
        return kept

    def meta_columns(self, topic: str, rows: Sequence[int] | None = None) -> list[pa.Array]:
        """``_topic``, ``_partition``, ``_offset`` and ``_kafka_ts`` of the batch (or of ``rows`` of it)."""
        partitions = _from_array(self.partitions, pa.int32())
        offsets = _from_array(self.offsets, pa.int64())
        millis = _from_array(self.timestamps, pa.int64())
        if rows is not None:
            index = pa.array(rows, pa.int64())
            partitions, offsets, millis = partitions.take(index), offsets.take(index), millis.take(index)
        millis = pc.if_else(pc.less(millis, 0), pa.scalar(None, pa.int64()), millis)
        return [
            pa.repeat(pa.scalar(topic, pa.string()), len(offsets)),
            partitions,
            offsets,
            pc.multiply(millis, 1000).cast(UTC_MICROS),
        ]


def _from_array(values: array[int], dtype: pa.DataType) -> pa.Array:
    """An Arrow array of a Python ``array``: one copy of its memory, no per-item work (a copy, so the
    ``array`` stays resizable)."""
    return pa.Array.from_buffers(dtype, len(values), [None, pa.py_buffer(bytes(values))])


__all__ = ["META_COLUMNS", "META_SCHEMA", "UTC_MICROS", "Batch", "Polled", "RoundInfo"]
