"""How far each stream ingest is behind its topic, read from the truth: the Delta application transactions.

A table fed by a stream names its topic in its commits' metadata (``lakebed.kafka.topic``, written by
the worker). For each partition of that topic the next offset to ingest is one past the greatest of the
data and dead-letter transactions (``{table}:{topic}:{p}``, ``dlq:…``); the lag is the end offset minus
it. No worker needs to run: this is what ``lakebed status`` shows, the same numbers a running worker's
``lakebed_stream_lag_records`` gauge reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from lakebed.config import LakebedConfig
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import open_delta
from lakebed.pipelines.stream.dead_letter import data_app_id, dead_letter_app_id, dead_letter_table
from lakebed.pipelines.stream.kafka import end_offsets

TOPIC_KEY = "lakebed.kafka.topic"


@dataclass(frozen=True)
class PartitionLag:
    table: str
    topic: str
    partition: int
    end_offset: int
    next_offset: int  # one past the last offset in Delta (data or dead letters)

    @property
    def lag(self) -> int:
        return max(0, self.end_offset - self.next_offset)


def stream_tables(config: LakebedConfig) -> dict[str, str]:
    """Each table a stream ingest wrote, with its topic (from its latest commit's metadata)."""
    found = {}
    for entry in Catalog(config).list(kind="table"):
        table = open_delta(entry.uri)
        if table is None:
            continue
        metadata = table.history(1)[0] if table.version() >= 0 else {}
        topic = metadata.get(TOPIC_KEY)
        if isinstance(topic, str):
            found[entry.name] = topic
    return found


def stream_lag(config: LakebedConfig, bootstrap: str) -> list[PartitionLag]:
    """Every partition of every stream-fed table: its end offset and the next offset Delta expects."""
    catalog = Catalog(config)
    lags = []
    for name, topic in sorted(stream_tables(config).items()):
        data = open_delta(catalog.get(name).uri)
        dead_entry = catalog.find(dead_letter_table(name))
        dead = open_delta(dead_entry.uri) if dead_entry is not None else None
        for partition, end in sorted(end_offsets(bootstrap, topic).items()):
            stored = [
                v
                for v in (
                    data.transaction_version(data_app_id(name, topic, partition)) if data else None,
                    dead.transaction_version(dead_letter_app_id(name, topic, partition)) if dead else None,
                )
                if v is not None
            ]
            lags.append(PartitionLag(name, topic, partition, end, max(stored) + 1 if stored else 0))
    return lags


__all__ = ["PartitionLag", "stream_lag", "stream_tables"]
