"""The dead-letter side of stream ingest and the Delta application ids that fence both tables.

Bad records go to ``<table>__dead_letter`` (:data:`DEAD_LETTER_SCHEMA`: where the record came from, its
raw key and value, the reason and the run) instead of stopping the stream. Every commit to the data
table carries a transaction per partition under :func:`data_app_id`, every commit to the dead-letter
table one under :func:`dead_letter_app_id`; those transactions are the worker's offsets, so a retried
round never writes a record or a dead letter twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa

from lakebed.pipelines.stream.batch import Batch

DEAD_LETTER_SUFFIX = "__dead_letter"
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("error", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("failed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def data_app_id(table: str, topic: str, partition: int) -> str:
    """The Delta application id fencing ``partition`` of ``topic`` in ``table``."""
    return f"{table}:{topic}:{partition}"


def dead_letter_app_id(table: str, topic: str, partition: int) -> str:
    """The Delta application id of the dead letters of ``partition`` of ``topic`` for ``table``."""
    return f"dlq:{table}:{topic}:{partition}"


def dead_letter_table(table: str) -> str:
    """The name of the dead-letter table of ``table``."""
    return f"{table}{DEAD_LETTER_SUFFIX}"


def dead_letter_rows(batch: Batch, dead: Sequence[tuple[int, str]], *, topic: str, run_id: str) -> pa.Table:
    """The dead-letter rows of the records ``dead`` names (index into ``batch``, reason), failed now."""
    now = dt.datetime.now(dt.UTC)
    index = [i for i, _ in dead]
    return pa.table(
        {
            "topic": pa.array([topic] * len(index), pa.string()),
            "partition": pa.array([batch.partitions[i] for i in index], pa.int32()),
            "offset": pa.array([batch.offsets[i] for i in index], pa.int64()),
            "key": pa.array([batch.keys[i] for i in index], pa.binary()),
            "value": pa.array([batch.values[i] for i in index], pa.binary()),
            "error": pa.array([reason for _, reason in dead], pa.string()),
            "run_id": pa.array([run_id] * len(index), pa.string()),
            "failed_at": pa.array([now] * len(index), pa.timestamp("us", tz="UTC")),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


__all__ = [
    "DEAD_LETTER_SCHEMA",
    "DEAD_LETTER_SUFFIX",
    "data_app_id",
    "dead_letter_app_id",
    "dead_letter_rows",
    "dead_letter_table",
]
