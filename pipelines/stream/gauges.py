"""The stream worker's metrics: records and dead letters per partition, and the lag in two stages.

The worker already tracks every fact these need: the offsets its Delta transactions hold (the truth),
the next offset it accepted into the micro-batch and the high watermarks its fetches saw. This module
only turns them into the ``lakebed_stream_*`` series of :mod:`lakebed.metrics`, with the label children
bound once per partition (a round touches a few partitions; setting a bound child costs about a
microsecond).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lakebed import metrics


class StreamMetrics:
    """The series of one worker (``table`` ← ``topic``), one child per partition and metric."""

    def __init__(self, table: str, topic: str) -> None:
        self.table = table
        self.topic = topic
        self._children: dict[tuple[Any, int], Any] = {}

    def _child(self, metric: Any, partition: int) -> Any:
        key = (metric, partition)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(self.table, self.topic, str(partition))
            self._children[key] = child
        return child

    def committed(self, partitions: array[int], rows: Sequence[int] | None) -> None:
        """Count the records of ``partitions`` (the batch's partition of each record; ``rows`` the ones
        handed to the write path, None for all) as appended."""
        values = np.frombuffer(partitions, dtype=np.int32)
        if rows is not None:
            values = values[np.asarray(rows, dtype=np.int64)]
        if not len(values):
            return
        counts = np.bincount(values)
        for partition in np.flatnonzero(counts):
            self._child(metrics.STREAM_RECORDS, int(partition)).inc(int(counts[partition]))

    def dead_letters(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._child(metrics.STREAM_DEAD_LETTERS, partition).inc()

    def offsets(
        self, committed: Mapping[int, int], fetched: Mapping[int, int], ends: Mapping[int, int]
    ) -> None:
        """Per partition: ``fetched`` (the next offset accepted into the batch) minus ``committed`` (the
        next offset after the Delta transactions) is buffered; the end offset minus ``committed`` is
        the lag (set only once an end offset is known)."""
        for partition, done in committed.items():
            self._child(metrics.STREAM_BUFFERED, partition).set(max(0, fetched.get(partition, done) - done))
            end = ends.get(partition)
            if end is not None:
                self._child(metrics.STREAM_LAG, partition).set(max(0, end - done))

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the gauges of partitions another worker now owns (their lag is that worker's)."""
        for partition in partitions:
            for metric in (metrics.STREAM_BUFFERED, metrics.STREAM_LAG):
                if self._children.pop((metric, partition), None) is not None:
                    metric.remove(self.table, self.topic, str(partition))


__all__ = ["StreamMetrics"]
