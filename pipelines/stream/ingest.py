"""Exactly-once Kafka → Delta stream ingest (the kafka-delta-ingest design).

A worker polls a topic and writes micro-batches, each bounded by records, bytes and seconds, into a raw
Delta table through the one write path (:func:`lakebed.pipelines.delta.commit`):

* Values are decoded by joining them with newlines and handing the block to ``pyarrow.json`` (no per-row
  Python dicts on the happy path). When a block fails, it is bisected down to the bad records.
* Four columns are added: ``_topic`` string, ``_partition`` int32, ``_offset`` int64 and ``_kafka_ts``
  timestamp(us, UTC).
* Each data commit carries ``Transaction(app_id=f"{table}:{topic}:{p}", version=last_offset)`` for every
  partition in the batch. The Delta transactions are the truth: on start, on partition assignment and
  after a failed commit the worker re-reads them, seeks every partition to stored + 1 and drops records
  with offset <= stored. Kafka's committed offsets are written after the Delta commit only as a hint.
* Bad records (not JSON, not an object, wrong types for the table/contract, a required field missing,
  a value over ``max_bytes``, a null value) go to ``<table>__dead_letter``, committed before the data
  commit of the same round with their own transactions ``dlq:{table}:{topic}:{p}``, so a retried round
  never doubles them. The stream never stops on a bad record.

Fencing: a commit conflicts in Delta with any concurrent commit setting the same application
transaction, but :func:`commit` loads the table afresh. To leave no window between the offsets this
worker last saw and the snapshot the commit is made on, the batches handed to :func:`commit` end with a
check of the table's commit log since that version for foreign transactions on this worker's
partitions (delta-rs loads the snapshot before it reads the batches, so anything later is caught by
Delta's own conflict detection). A zombie worker therefore fails its commit instead of writing
duplicates. (The log check needs a local table path; on object stores only Delta's conflict detection
applies.) The version of each commit is found in the log too, by a batch id in its metadata.

A round whose records are all bad makes no data commit (the write path makes no empty commits), so the
table's transactions stay behind those records; a restart reads them again and finds their dead letters
already written (the ``dlq:`` transactions).

The pieces live beside this module: decoding in :mod:`lakebed.pipelines.stream.decode`, the column-wise
micro-batch in :mod:`lakebed.pipelines.stream.batch` and the dead-letter table and application ids in
:mod:`lakebed.pipelines.stream.dead_letter`; this module is the worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import CommitError, LakebedError, SchemaDriftError, StreamFenced
from lakebed.lineage.events import kafka_dataset
from lakebed.lineage.runs import child_run, lineage_run
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import CommitResult, RunContext, commit, open_delta
from lakebed.pipelines.deltalog import foreign_transactions
from lakebed.pipelines.stream.batch import META_COLUMNS, META_SCHEMA, Batch, Polled, RoundInfo
from lakebed.pipelines.stream.dead_letter import (
    data_app_id,
    dead_letter_app_id,
    dead_letter_rows,
    dead_letter_table,
)
from lakebed.pipelines.stream.decode import JsonDecoder, MiB
from lakebed.pipelines.stream.gauges import StreamMetrics
from lakebed.pipelines.stream.kafka import (
    end_offsets,
    kafka_namespace,
    new_consumer,
    partitions_of,
)
from lakebed.pipelines.stream.poller import Poller, highwaters
from lakebed.pipelines.stream.records import install_lean_records
from lakebed.schemas.contract import ColumnSpec, DriftPolicy, TableContract
from lakebed.schemas.types import delta_schema

log = logging.getLogger(__name__)

_MAX_CONSECUTIVE_FAILURES = 8
_IDLE_POLL_SECONDS = 0.2
# Records per poll: kafka-python's record objects live only until they are batched (column-wise); fewer,
# larger polls cut kafka-python's per-poll overhead (measured: 5k → 20k records per poll, ~+20%).
_POLL_RECORDS = 20_000
# Manual assignment: a background poller fetches the next records while a round decodes and commits.
# It buffers at most this many records ahead of the batch (column-wise), so memory stays flat.
_PREFETCH_RECORDS = 20_000


@dataclass
class StreamResult:
    """What a stream ingest run did."""

    table: str
    topic: str
    group: str | None
    run_id: str
    records: int = 0  # rows appended to the table
    dead_letters: int = 0  # rows appended to <table>__dead_letter
    quarantined: int = 0  # rows that broke the contract's quality rules, in <table>__quarantine
    skipped: int = 0  # records dropped because Delta already holds them (offset <= stored)
    rounds: int = 0  # micro-batches committed
    retries: int = 0  # rounds abandoned after a conflict and redone from Delta's offsets
    version: int | None = None  # last Delta version of the table written by this run
    offsets: dict[int, int] = field(default_factory=dict)  # partition → last offset in Delta
    seconds: float = 0.0
    caught_up: bool = False
    stopped_by: str = ""  # "caught_up" | "stop_event" | "max_batches"


class _Listener(ConsumerRebalanceListener):
    """Group mode: partitions come and go; every assignment re-reads the offsets from Delta."""

    def __init__(self, ingestor: StreamIngestor) -> None:
        self.ingestor = ingestor

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.ingestor._revoke({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.ingestor._assign({tp.partition for tp in assigned})


ProgressCallback = Callable[[RoundInfo], None]


class StreamIngestor:
    """One stream ingest worker: Kafka ``topic`` → lakebed table ``table``, exactly once.

    Without ``group`` the worker reads every partition of the topic itself (manual assignment). With
    ``group`` it joins that consumer group and reads the partitions the group gives it, so several
    workers share a topic. Either way the offsets come from the table's Delta transactions.

    Stops when ``stop_event`` is set, after ``max_batches`` committed micro-batches, or, with
    ``until_caught_up``, once every assigned partition reached the end offset read at start.
    """

    def __init__(
        self,
        topic: str,
        table: str,
        *,
        bootstrap: str,
        group: str | None = None,
        until_caught_up: bool = False,
        max_records: int = 50_000,
        max_bytes: int = 64 * MiB,
        max_seconds: float = 1.0,
        max_batches: int | None = None,
        contract: TableContract | None = None,
        run: RunContext | None = None,
        config: LakebedConfig | None = None,
        stop_event: threading.Event | None = None,
        progress: ProgressCallback | None = None,
        consumer_settings: Mapping[str, Any] | None = None,
    ) -> None:
        if max_records < 1 or max_bytes < 1 or max_seconds <= 0:
            raise ValueError("max_records, max_bytes and max_seconds must be positive")
        self.topic = topic
        self.table = table
        self.group = group
        self.until_caught_up = until_caught_up
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.max_batches = max_batches
        self.config = config or get_config()
        self.catalog = Catalog(self.config)
        self.bootstrap = bootstrap
        self.run_context = run or RunContext(job=f"stream_ingest:{topic}")
        self.stop_event = stop_event or threading.Event()
        self.progress = progress
        self.consumer_settings = dict(consumer_settings or {})
        self.dead_table = dead_letter_table(table)
        entry = self.catalog.find(table)
        self.contract = contract or (entry.contract if entry is not None else None)
        self._commit_contract = _with_meta_columns(self.contract) if self.contract is not None else None
        self.result = StreamResult(table=table, topic=topic, group=group, run_id=self.run_context.run_id)

        self._consumer: KafkaConsumer | None = None
        self._all_partitions: list[int] = []
        self._assigned: set[int] = set()
        self._synced: set[int] = set()
        self._needs_resync = False
        self._next: dict[int, int] = {}
        self._stored: dict[int, int | None] = {}
        self._dead_stored: dict[int, int | None] = {}
        self._data_version = -1
        self._dead_version = -1
        self._schema: pa.Schema | None = None
        self._ends: dict[int, int] = {}
        self._batch = Batch()
        self._pending: deque[Polled] = deque()  # polled records that did not fit into the batch yet
        self._poller: Poller | None = None  # manual assignment only (see pipelines/stream/poller.py)
        self._positions: dict[int, int] = {}  # the poller's last reported consumer positions
        self._highwater: dict[int, int] = {}  # the end offsets the fetches last saw (for the lag)
        self._metrics = StreamMetrics(table, topic)
        self._uris: dict[str, str] = {}
        self._epoch = 0
        self._failures = 0
        self._last_idle_check = 0.0

    # public ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to commit what it holds and return (thread-safe)."""
        self.stop_event.set()

    def run(self) -> StreamResult:
        started = time.perf_counter()
        self._consumer = new_consumer(self.bootstrap, group=self.group, **self.consumer_settings)
        install_lean_records(self._consumer)  # same records, less per-record work (see records.py)
        try:
            # The worker is a streaming job; each micro-batch is a child run (see _commit_round).
            with lineage_run(self.run_context, processing="STREAMING", config=self.config):
                self._start()
                self._loop()
        finally:
            self._stop_poller()
            with contextlib.suppress(Exception):
                self._consumer.close(autocommit=False)
            self._consumer = None
            self.result.seconds = time.perf_counter() - started
        return self.result

    # setup -----------------------------------------------------------------------------------------
    def _start(self) -> None:
        consumer = self._require_consumer()
        self._all_partitions = partitions_of(consumer, self.topic)
        if self.until_caught_up:
            self._ends = end_offsets(self.bootstrap, self.topic)
        if self.group is None:
            consumer.assign([TopicPartition(self.topic, p) for p in self._all_partitions])
            self._assigned = set(self._all_partitions)
            poll_records = min(_POLL_RECORDS, self.max_records)
            self._poller = Poller(
                consumer,
                max_records=poll_records,
                capacity=max(1, min(self.max_records, _PREFETCH_RECORDS) // poll_records),
                positions=self.until_caught_up,
            )
            self._resync()
        else:
            consumer.subscribe(topics=[self.topic], listener=_Listener(self))

    def _require_consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            raise LakebedError("the stream worker is not running")
        return self._consumer

    def _uri(self, name: str, kind: str) -> str:
        # A registered table's uri does not change while the worker runs: read the catalog (a Delta
        # table) once per table, not once per commit.
        cached = self._uris.get(name)
        if cached is not None:
            return cached
        entry = self.catalog.find(name)
        if entry is not None:
            self._uris[name] = entry.uri
            return entry.uri
        return self.catalog.default_uri(name, kind=kind)

    def _open_registered(self, name: str, kind: str, contract: TableContract | None) -> DeltaTable | None:
        """Open a table; one that exists but is missing from the catalog (a worker killed between its
        first commit and the registration) is registered now."""
        entry = self.catalog.find(name)
        uri = entry.uri if entry is not None else self.catalog.default_uri(name, kind=kind)
        table = open_delta(uri)
        if table is not None and entry is None:
            self.catalog.register(name, uri=uri, kind=kind, contract=contract)
        return table

    def _revoke(self, partitions: set[int]) -> None:
        self._assigned -= partitions
        self._metrics.forget(partitions)
        self._synced -= partitions
        for p in partitions:
            self._next.pop(p, None)
        # Records of revoked partitions are dropped: their new owner starts from Delta's offsets.
        if len(self._batch):
            self._batch = self._batch.without(partitions)
        if self._pending:
            self._pending = deque(c for c in self._pending if c.partition not in partitions)

    def _assign(self, partitions: set[int]) -> None:
        self._assigned = set(partitions)
        try:
            self._resync()
        except Exception:  # never fail inside poll(); the main loop retries before using any record
            log.exception("re-reading offsets from Delta after a rebalance failed; retrying")
            self._synced.clear()
            self._needs_resync = True

    def _resync(self) -> None:
        """Make Delta the truth again: re-read both tables' transactions for every assigned partition,
        seek each to stored + 1 and forget pending records (the poller is stopped first and its buffer
        dropped; the loop starts a fresh one after the seeks)."""
        consumer = self._require_consumer()
        self._stop_poller()
        self._uris.clear()
        data = self._open_registered(self.table, "table", self._commit_contract)
        dead = self._open_registered(self.dead_table, "rejects", None)
        self._data_version = data.version() if data is not None else -1
        self._dead_version = dead.version() if dead is not None else -1
        self._schema = _data_schema(data) if data is not None else None
        self._batch = Batch()
        self._pending.clear()
        self._positions.clear()
        self._epoch += 1
        self._synced.clear()
        for p in sorted(self._assigned):
            stored = data.transaction_version(data_app_id(self.table, self.topic, p)) if data else None
            dead_stored = (
                dead.transaction_version(dead_letter_app_id(self.table, self.topic, p)) if dead else None
            )
            self._stored[p] = stored
            self._dead_stored[p] = dead_stored
            tp = TopicPartition(self.topic, p)
            if stored is None:
                consumer.seek_to_beginning(tp)
                self._next[p] = 0
            else:
                consumer.seek(tp, stored + 1)
                self._next[p] = stored + 1
                self.result.offsets[p] = stored
            self._synced.add(p)
        self._needs_resync = False
        self._observe()
        log.debug("resynced %s from Delta v%s: %s", self.table, self._data_version, self._stored)

    def _stop_poller(self) -> None:
        """Stop the background poller (if any) and drop what it buffered: the consumer is ours again."""
        if self._poller is not None:
            self._poller.stop()

    def _next_polled(self, timeout: float) -> list[Polled] | None:
        """Records to add to the batch: left over from an earlier poll, or the next poll's."""
        if self._pending:
            return []  # _accept takes from self._pending
        consumer = self._require_consumer()
        if self._poller is not None:
            if not self._poller.running:
                self._poller.start()
            item = self._poller.get(timeout)
            if item is None:
                return None
            chunks, positions, marks = item
            if positions is not None:
                self._positions.update(positions)
            self._highwater.update(marks)
            return chunks
        polled = consumer.poll(
            timeout_ms=int(timeout * 1000),
            max_records=max(1, min(_POLL_RECORDS, self.max_records - len(self._batch))),
        )
        self._highwater.update(highwaters(consumer))
        return [Polled.of(tp.partition, records) for tp, records in polled.items() if records]

    # the loop --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if self.stop_event.is_set():
                self._flush()
                self.result.stopped_by = "stop_event"
                return
            if self.max_batches is not None and self.result.rounds >= self.max_batches:
                self.result.stopped_by = "max_batches"
                return
            batch = self._batch
            if len(batch):
                timeout = max(0.0, batch.started + self.max_seconds - time.monotonic())
            else:
                timeout = min(_IDLE_POLL_SECONDS, self.max_seconds)
            polled = self._next_polled(timeout)
            if self._needs_resync:
                self._resync()
                continue
            if polled is not None:
                self._accept(polled)
                self._observe()
            del polled
            batch = self._batch
            if len(batch) and (
                len(batch) >= self.max_records
                or batch.nbytes >= self.max_bytes
                or time.monotonic() >= batch.started + self.max_seconds
                or (self.until_caught_up and self._reached_ends())
            ):
                self._flush()
            if self.until_caught_up and not len(self._batch) and self._caught_up():
                self.result.caught_up = True
                self.result.stopped_by = "caught_up"
                return

    def _accept(self, polled: list[Polled]) -> None:
        """Move polled records into the batch, at most ``max_records`` of them; the rest wait in
        ``_pending`` for the next round."""
        epoch = self._epoch
        pending = self._pending
        pending.extend(polled)
        while pending and len(self._batch) < self.max_records:
            chunk = pending.popleft()
            p = chunk.partition
            if p not in self._synced or not len(chunk):
                continue  # assigned but not yet positioned from Delta: refetched after the resync
            expected = self._next[p]
            if chunk.offsets[0] < expected:  # already in Delta (or in this batch): drop
                cut = bisect_left(chunk.offsets, expected)
                self.result.skipped += cut
                chunk = chunk.slice(cut)
                if not len(chunk):
                    continue
            room = self.max_records - len(self._batch)
            if len(chunk) > room:
                pending.appendleft(chunk.slice(room))
                chunk = chunk.slice(0, room)
            sizes = chunk.sizes  # -1 for a null value
            nbytes = sum(sizes)
            special = min(sizes) < 0 or max(sizes) > self.max_bytes
            if not special and self._batch.nbytes + nbytes <= self.max_bytes:
                self._batch.extend_polled(chunk, nbytes, special=False)  # the usual case: all at once
            else:
                for i, size in enumerate(sizes):
                    size = max(size, 0)
                    if len(self._batch) and self._batch.nbytes + size > self.max_bytes:
                        self._flush()
                        if self._epoch != epoch:
                            return  # the flush failed and re-seeked: the rest of this poll is stale
                    self._batch.extend_polled(
                        chunk.slice(i, i + 1),
                        size,
                        special=chunk.values[i] is None or size > self.max_bytes,
                    )
            self._next[p] = chunk.offsets[-1] + 1

    def _observe(self) -> None:
        """Set the lag gauges from the offsets the worker holds: the next offset after its Delta
        transactions (data or dead letters, whichever is further), the next offset accepted into the
        batch and the end offsets (the fetches' high watermarks, else the ones read at start)."""
        committed = {
            p: max(_or(self._stored.get(p), -1), _or(self._dead_stored.get(p), -1)) + 1 for p in self._synced
        }
        self._metrics.offsets(committed, self._next, {**self._ends, **self._highwater})

    def _reached_ends(self) -> bool:
        return bool(self._assigned) and all(
            p in self._synced and self._next.get(p, 0) >= self._ends.get(p, 0) for p in self._assigned
        )

    def _caught_up(self) -> bool:
        consumer = self._require_consumer()
        if self._pending:
            return False
        if not self._assigned:
            # Group mode without partitions (yet): done once Delta holds every partition up to its end.
            now = time.monotonic()
            if now - self._last_idle_check < self.max_seconds:
                return False
            self._last_idle_check = now
            return self._delta_complete()
        for p in self._assigned:
            if p not in self._synced:
                return False
            end = self._ends.get(p, 0)
            if self._next.get(p, 0) >= end:
                continue
            # Offsets may have gaps (compaction, transaction markers): the consumer's position counts
            # (as the poller last reported it, in order with the records: it owns the consumer).
            if self._poller is not None:
                if self._positions.get(p, -1) < end:
                    return False
            elif consumer.position(TopicPartition(self.topic, p)) < end:
                return False
        return True

    def _delta_complete(self) -> bool:
        data = open_delta(self._uri(self.table, "table"))
        dead = open_delta(self._uri(self.dead_table, "rejects"))
        for p in self._all_partitions:
            end = self._ends.get(p, 0)
            if end == 0:
                continue
            stored = [
                v
                for v in (
                    data.transaction_version(data_app_id(self.table, self.topic, p)) if data else None,
                    dead.transaction_version(dead_letter_app_id(self.table, self.topic, p)) if dead else None,
                )
                if v is not None
            ]
            if not stored or max(stored) < end - 1:
                return False
        return True

    # one round -------------------------------------------------------------------------------------
    def _flush(self) -> bool:
        """Commit the pending records as one round (dead letters, then data). False if the round was
        abandoned after a conflict (the worker then resumes from Delta's offsets)."""
        batch = self._batch
        if not len(batch):
            return True
        count = len(batch)
        self._batch = Batch()
        started = time.perf_counter()
        try:
            info = self._commit_round(batch)
        except (CommitFailedError, StreamFenced, CommitError, SchemaDriftError) as exc:
            self._failures += 1
            self.result.retries += 1
            if self._failures > _MAX_CONSECUTIVE_FAILURES:
                raise
            log.info("round of %d record(s) abandoned (%s); resuming from Delta's offsets", count, exc)
            if not isinstance(exc, CommitFailedError | StreamFenced):
                time.sleep(min(2.0, 0.05 * 2**self._failures))  # e.g. two workers creating the table
            self._resync()
            return False
        self._failures = 0
        info.seconds = time.perf_counter() - started
        self._observe()
        self.result.rounds += 1
        if self.progress is not None:
            self.progress(info)
        return True

    def _decoder(self) -> JsonDecoder:
        known = list(self._schema) if self._schema is not None else []
        required: list[str] = [f.name for f in known if not f.nullable]
        drift: DriftPolicy = "evolve"
        if self.contract is not None:
            drift = self.contract.drift
            names = {f.name for f in known}
            for column in self.contract.columns:
                if column.name not in names and column.name not in META_COLUMNS:
                    known.append(pa.field(column.name, column.arrow_type, column.nullable))
                if not column.nullable:
                    required.append(column.name)
        schema = pa.schema(known) if known else None
        return JsonDecoder(schema, drift=drift, required=dict.fromkeys(required), max_bytes=self.max_bytes)

    def _commit_round(self, batch: Batch) -> RoundInfo:
        """Decode and commit one batch (a child run reading the batch's offset ranges): its dead letters,
        then its rows (one Delta commit each)."""
        source = kafka_dataset(self.bootstrap, self.topic, batch.bounds)
        with child_run(
            self.run_context, job=f"{self.run_context.job}.micro_batch", inputs=[source], config=self.config
        ):
            return self._commit_decoded(batch)

    def _commit_decoded(self, batch: Batch) -> RoundInfo:
        decoded = self._decoder().decode(batch.values, screen=batch.special)
        dead_rows = [
            (index, reason)
            for index, reason in decoded.dead
            if batch.offsets[index] > _or(self._dead_stored.get(batch.partitions[index]), -1)
        ]
        data = None
        rows: Sequence[int] | None = None
        if decoded.table is not None and decoded.good:
            rows = None if len(decoded.good) == len(batch) else decoded.good
            data = _with_meta(decoded.table, batch.meta_columns(self.topic, rows))
        del decoded
        if dead_rows:
            self._commit_dead_letters(batch, dead_rows)
            self._metrics.dead_letters(batch.partitions[i] for i, _ in dead_rows)
        self.result.dead_letters += len(dead_rows)
        version = None
        written = 0
        if data is not None:
            result, version = self._commit_data(data, batch.bounds)
            self._metrics.committed(batch.partitions, rows)
            written = result.rows
            self.result.records += written
            self.result.quarantined += result.quarantined
            self._commit_kafka_offsets(batch.bounds)
        return RoundInfo(
            records=written, dead_letters=len(dead_rows), version=version, offsets=batch.bounds, seconds=0
        )

    def _metadata(self, bounds: Mapping[int, tuple[int, int]]) -> dict[str, str]:
        return {
            "lakebed.kafka.topic": self.topic,
            "lakebed.kafka.cluster": kafka_namespace(self.bootstrap),
            "lakebed.kafka.offsets": json.dumps({str(p): list(b) for p, b in sorted(bounds.items())}),
        }

    def _commit_dead_letters(self, batch: Batch, dead_rows: list[tuple[int, str]]) -> None:
        rows = dead_letter_rows(batch, dead_rows, topic=self.topic, run_id=self.run_context.run_id)
        bounds = batch.bounds
        # Each partition's dead-letter transaction covers its dead records only, never the good records
        # of the same round, whose data commit comes after (and may fail).
        last_dead: dict[int, int] = {}
        for i, _ in dead_rows:
            partition = batch.partitions[i]
            last_dead[partition] = max(last_dead.get(partition, -1), batch.offsets[i])
        versions = {
            dead_letter_app_id(self.table, self.topic, p): max(last, _or(self._dead_stored.get(p), -1))
            for p, last in sorted(last_dead.items())
        }
        _, version = self._fenced_commit(
            self.dead_table, rows, versions, kind="rejects", base_version=self._dead_version, bounds=bounds
        )
        for p in last_dead:
            self._dead_stored[p] = versions[dead_letter_app_id(self.table, self.topic, p)]
        self._advance("_dead_version", version)

    def _commit_data(
        self, data: pa.Table, bounds: Mapping[int, tuple[int, int]]
    ) -> tuple[CommitResult, int | None]:
        versions = {data_app_id(self.table, self.topic, p): last for p, (_, last) in bounds.items()}
        result, version = self._fenced_commit(
            self.table,
            data,
            versions,
            kind="table",
            base_version=self._data_version,
            bounds=bounds,
            contract=self._commit_contract,
        )
        for p, (_, last) in bounds.items():
            self._stored[p] = last
            self.result.offsets[p] = last
        self._schema = _strip_meta(result.schema)
        self.result.version = version
        self._advance("_data_version", version)
        return result, version

    def _advance(self, attribute: str, version: int | None) -> None:
        if version is None:
            # The version of our commit is unknown: re-read the state from Delta before the next round.
            self._needs_resync = True
        else:
            setattr(self, attribute, version)

    def _fenced_commit(
        self,
        name: str,
        rows: pa.Table,
        versions: Mapping[str, int],
        *,
        kind: str,
        base_version: int,
        bounds: Mapping[int, tuple[int, int]],
        contract: TableContract | None = None,
    ) -> tuple[CommitResult, int | None]:
        """Commit ``rows`` with ``versions`` as application transactions, fenced against other writers
        since ``base_version``; returns the result and the exact version of the commit."""
        uri = self._uri(name, kind)
        tripped: list[str] = []

        def batches() -> Iterator[pa.RecordBatch]:
            yield from rows.to_batches()
            # Runs while delta-rs consumes the data, after it loaded the snapshot it commits against.
            violation = foreign_transactions(uri, base_version, versions)
            if violation is not None:
                tripped.append(violation)
                raise StreamFenced(f"{name}: another writer committed {violation}")

        now_ms = int(time.time() * 1000)
        try:
            result = commit(
                name,
                pa.RecordBatchReader.from_batches(rows.schema, batches()),
                kind=kind,
                contract=contract,
                run=self.run_context,
                metadata=self._metadata(bounds),
                app_transactions=[
                    Transaction(app_id=app_id, version=version, last_updated=now_ms)
                    for app_id, version in versions.items()
                ],
                quarantine_key=META_COLUMNS[:3] if kind == "table" else (),  # topic, partition, offset
                config=self.config,
                catalog=self.catalog,
            )
        except Exception:
            if tripped:
                raise StreamFenced(f"{name}: another writer committed {tripped[0]}") from None
            raise
        return result, result.version

    def _commit_kafka_offsets(self, bounds: Mapping[int, tuple[int, int]]) -> None:
        """Group mode: tell Kafka how far we are (a hint for tools; Delta stays the truth)."""
        if self.group is None or self._consumer is None:
            return
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(last + 1, "", -1)
            for p, (_, last) in bounds.items()
            if p in self._assigned
        }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:  # e.g. a rebalance in progress: harmless, Delta has the offsets
            log.debug("Kafka offset commit skipped: %s", exc)


# --- helpers --------------------------------------------------------------------------------------


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _strip_meta(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name not in META_COLUMNS])


def _data_schema(table: DeltaTable) -> pa.Schema:
    return _strip_meta(delta_schema(pa.schema(table.schema().to_arrow())))


def _with_meta_columns(contract: TableContract) -> TableContract:
    """The contract the raw table is registered with: the user's columns plus the four Kafka columns."""
    names = {c.name for c in contract.columns}
    if not contract.columns:
        return contract
    extra = tuple(
        ColumnSpec(name=f.name, type=t, nullable=True)
        for f, t in zip(META_SCHEMA, ("string", "int32", "int64", "timestamp"), strict=True)
        if f.name not in names
    )
    return contract.model_copy(update={"columns": contract.columns + extra}) if extra else contract


def _with_meta(table: pa.Table, columns: Sequence[pa.Array]) -> pa.Table:
    """``table`` plus the Kafka columns (``_topic``, ``_partition``, ``_offset``, ``_kafka_ts``)."""
    present = [name for name in META_COLUMNS if name in table.column_names]
    if present:
        table = table.drop_columns(present)  # the Kafka coordinates win over same-named JSON fields
    for f, column in zip(META_SCHEMA, columns, strict=True):
        table = table.append_column(f, column)
    return table


def ingest_stream(topic: str, table: str, *, bootstrap: str, **options: Any) -> StreamResult:
    """Ingest Kafka ``topic`` of the cluster at ``bootstrap`` into lakebed table ``table`` exactly once
    (``options``: see :class:`StreamIngestor`). Callers resolve ``bootstrap`` (the CLI and Dagster with
    :func:`lakebed.broker.ensure_bootstrap`); the library never looks for or starts a broker itself.

    Micro-batches hold at most ``max_records`` records, ``max_bytes`` bytes of values and
    ``max_seconds`` of waiting. ``until_caught_up`` stops once the end offsets read at start are
    reached ("available now"); ``max_batches`` stops after that many committed micro-batches;
    otherwise the worker runs until ``stop_event`` is set.
    """
    return StreamIngestor(topic, table, bootstrap=bootstrap, **options).run()


# The worker's API and the names of its parts that used to be defined here (still importable from here).
__all__ = [
    "META_COLUMNS",
    "META_SCHEMA",
    "Batch",
    "JsonDecoder",
    "RoundInfo",
    "StreamFenced",
    "StreamIngestor",
    "StreamResult",
    "data_app_id",
    "dead_letter_app_id",
    "dead_letter_table",
    "ingest_stream",
]
