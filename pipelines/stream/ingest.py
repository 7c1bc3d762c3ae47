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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from deltalake import DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import CommitResult, RunContext, commit
from lakebed.pipelines.deltalog import find_commit, foreign_transactions, is_local
from lakebed.pipelines.stream.kafka import (
    end_offsets,
    kafka_namespace,
    new_consumer,
    partitions_of,
    resolve_bootstrap,
)
from lakebed.schemas.contract import ColumnSpec, DriftPolicy, TableContract
from lakebed.schemas.types import delta_schema

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import CommitError, LakebedError, SchemaDriftError

log = logging.getLogger(__name__)

MiB = 1 << 20
META_SCHEMA = pa.schema(
    [
        pa.field("_topic", pa.string()),
        pa.field("_partition", pa.int32()),
        pa.field("_offset", pa.int64()),
        pa.field("_kafka_ts", pa.timestamp("us", tz="UTC")),
    ]
)
META_COLUMNS = tuple(META_SCHEMA.names)
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
_MAX_CONSECUTIVE_FAILURES = 8
BATCH_KEY = "lakebed.stream.batch"  # commit metadata: unique id of the micro-batch
_IDLE_POLL_SECONDS = 0.2
_POLL_RECORDS = 5_000  # records per poll: kafka-python's record objects live only until they are batched
# Decoded batches are allocated from the system allocator: it hands a round's large buffers back to the
# OS when the round is committed, where the default pool (mimalloc) keeps tens of MiB per round around.
# Same speed here; keeps the worker's peak RSS flat as batches come and go.
_DECODE_POOL = pa.system_memory_pool()
_UTC_MICROS = pa.timestamp("us", tz="UTC")


def data_app_id(table: str, topic: str, partition: int) -> str:
    """The Delta application id fencing ``partition`` of ``topic`` in ``table``."""
    return f"{table}:{topic}:{partition}"


def dead_letter_app_id(table: str, topic: str, partition: int) -> str:
    return f"dlq:{table}:{topic}:{partition}"


def dead_letter_table(table: str) -> str:
    return f"{table}{DEAD_LETTER_SUFFIX}"


class StreamFenced(LakebedError):
    """Another writer committed offsets of this worker's partitions since it last read them."""


@dataclass
class RoundInfo:
    """One committed micro-batch (handed to the ``progress`` callback)."""

    records: int
    dead_letters: int
    version: int | None
    offsets: dict[int, tuple[int, int]]  # partition → (first, last) offset of the round
    seconds: float


@dataclass
class StreamResult:
    """What a stream ingest run did."""

    table: str
    topic: str
    group: str | None
    run_id: str
    records: int = 0  # rows appended to the table
    dead_letters: int = 0  # rows appended to <table>__dead_letter
    skipped: int = 0  # records dropped because Delta already holds them (offset <= stored)
    rounds: int = 0  # micro-batches committed
    retries: int = 0  # rounds abandoned after a conflict and redone from Delta's offsets
    version: int | None = None  # last Delta version of the table written by this run
    offsets: dict[int, int] = field(default_factory=dict)  # partition → last offset in Delta
    seconds: float = 0.0
    caught_up: bool = False
    stopped_by: str = ""  # "caught_up" | "stop_event" | "max_batches"


# --- decoding -------------------------------------------------------------------------------------


class _DecodeError(ValueError):
    """A block decoded to the wrong number of rows."""


@dataclass
class Decoded:
    """The result of decoding a block of values: rows of the good ones, reasons for the bad ones."""

    table: pa.Table | None  # rows of the good values, in order
    good: list[int]  # index (into the values) of each row
    dead: list[tuple[int, str]]  # (index, reason) of every bad value


_JSON_COLUMN = re.compile(r"Column\(/([^)]*)\)")


def _read_type(dtype: pa.DataType) -> pa.DataType:
    """The type pyarrow.json reads a column as: JSON holds dates and times as strings (cast after)."""
    if pa.types.is_date(dtype) or pa.types.is_time(dtype):
        return pa.string()
    return dtype


class JsonDecoder:
    """Decodes Kafka values (JSON objects) into Arrow rows against a schema, finding bad values.

    ``schema`` holds the known columns (the table's, plus the contract's); ``None`` infers the schema
    from the values. ``drift="strict"`` makes a field outside the schema a bad value; ``evolve`` lets it
    in as a new column. ``required`` columns must be present and non-null.
    """

    def __init__(
        self,
        schema: pa.Schema | None,
        *,
        drift: DriftPolicy = "evolve",
        required: Iterable[str] = (),
        max_bytes: int = 64 * MiB,
    ) -> None:
        self.schema = schema
        self.drift = drift
        self.required = [name for name in required if name not in META_COLUMNS]
        self.max_bytes = max_bytes

    # The fast path ---------------------------------------------------------------------------------
    def decode(self, values: Sequence[bytes | None], *, screen: bool = False) -> Decoded:
        """Decode ``values``. ``screen`` checks each value for ``None`` and size first (the caller
        knows whether any value needs it)."""
        dead: list[tuple[int, str]] = []
        items: list[tuple[int, bytes]]
        if screen:
            items = []
            for index, value in enumerate(values):
                if value is None:
                    dead.append((index, "null value (a tombstone): nothing to decode"))
                elif len(value) > self.max_bytes:
                    dead.append(
                        (index, f"value of {len(value):,} bytes exceeds max_bytes {self.max_bytes:,}")
                    )
                else:
                    items.append((index, value))
            lines = [value for _, value in items]
        else:
            lines = values  # type: ignore[assignment]
            items = []
        if not lines:
            return Decoded(None, [], dead)
        payload = b"\n".join(lines)
        n = len(lines)
        clean = (
            payload[:1] == b"{"
            and payload.count(b"\n") == n - 1
            and payload.count(b"\n{") == n - 1
            and b"\r" not in payload
        )
        if clean:
            # Every value is one line starting with "{" (compact JSON): parse the joined block at once.
            try:
                table = self._parse(payload, n, self.schema, max(map(len, lines)))
            except (pa.ArrowException, ValueError):
                pass
            else:
                good = [index for index, _ in items] if screen else list(range(n))
                return self._required(Decoded(table, good, dead))
        if not screen:
            items = list(enumerate(lines))
        items = self._screen_lines(items, dead)
        return self._required(self._decode_careful(items, dead))

    def _parse(self, payload: bytes, rows: int, schema: pa.Schema | None, longest: int) -> pa.Table:
        read_schema = None
        if schema is not None:
            read_schema = pa.schema([pa.field(f.name, _read_type(f.type)) for f in schema])
        unexpected = "error" if self.drift == "strict" and schema is not None else "infer"
        table = pajson.read_json(
            pa.py_buffer(payload),
            read_options=pajson.ReadOptions(use_threads=True, block_size=max(1 << 20, longest + 2)),
            parse_options=pajson.ParseOptions(
                explicit_schema=read_schema, unexpected_field_behavior=unexpected
            ),
            memory_pool=_DECODE_POOL,
        )
        if table.num_rows != rows:
            raise _DecodeError(f"{rows} value(s) held {table.num_rows} JSON object(s)")
        table.validate(full=True)  # invalid UTF-8 in strings
        if schema is not None:
            for f in schema:
                index = table.schema.get_field_index(f.name)
                if index >= 0 and table.column(index).type != f.type:
                    table = table.set_column(
                        index, f.name, pc.cast(table.column(index), f.type, memory_pool=_DECODE_POOL)
                    )
        known = set(schema.names) if schema is not None else set()
        for index, f in enumerate(table.schema):
            if f.name not in known and pa.types.is_timestamp(f.type) and f.type.tz is None:
                # An inferred timestamp is an instant: pyarrow applies any offset in the string, and
                # one without an offset is read as UTC (as the Kafka timestamps are).
                column = pc.cast(table.column(index), _UTC_MICROS, memory_pool=_DECODE_POOL)
                table = table.set_column(index, f.name, column)
        # A field that is null in every value has no type yet: leave it out until one is seen.
        drop = [f.name for f in table.schema if pa.types.is_null(f.type) and f.name not in known]
        return table.drop_columns(drop) if drop else table

    # The careful path ------------------------------------------------------------------------------
    @staticmethod
    def _screen_lines(items: list[tuple[int, bytes]], dead: list[tuple[int, str]]) -> list[tuple[int, bytes]]:
        """Values that cannot go into a newline-joined block as they are: multi-line JSON is rewritten
        compactly; anything not starting with ``{`` is classified and sent to the dead letters (a bare
        ``null`` must never reach pyarrow.json)."""
        kept: list[tuple[int, bytes]] = []
        for index, value in items:
            if b"\n" in value or b"\r" in value:
                try:
                    obj = json.loads(value)
                except ValueError as exc:
                    dead.append((index, _json_problem(value, exc)))
                    continue
                if not isinstance(obj, dict):
                    dead.append((index, _not_object(obj)))
                    continue
                value = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
            elif value.lstrip(b" \t")[:1] != b"{":
                dead.append((index, _classify(value)))
                continue
            kept.append((index, value))
        return kept

    def _decode_careful(self, items: list[tuple[int, bytes]], dead: list[tuple[int, str]]) -> Decoded:
        schema = self.schema
        for attempt in range(4):
            pieces: list[tuple[list[int], pa.Table]] = []
            self._bisect(items, schema, pieces, dead)
            if not pieces:
                return Decoded(None, [], dead)
            try:
                table = (
                    pieces[0][1]
                    if len(pieces) == 1
                    else pa.concat_tables([t for _, t in pieces], promote_options="permissive")
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                if attempt == 3:
                    raise
                # Good pieces disagree on a new field's type: adopt the first piece's schema (explicit
                # fields plus its new ones) and decode again, so values that disagree become bad values.
                first = pieces[0][1].schema
                extra = [f for f in first if schema is None or schema.get_field_index(f.name) < 0]
                schema = pa.schema(list(schema or []) + extra)
                keep = {i for indices, _ in pieces for i in indices}
                items = [item for item in items if item[0] in keep]
                continue
            good = [i for indices, _ in pieces for i in indices]
            return Decoded(table, good, dead)
        raise AssertionError("unreachable")

    def _bisect(
        self,
        items: list[tuple[int, bytes]],
        schema: pa.Schema | None,
        pieces: list[tuple[list[int], pa.Table]],
        dead: list[tuple[int, str]],
    ) -> None:
        if not items:
            return
        lines = [value for _, value in items]
        try:
            table = self._parse(b"\n".join(lines), len(lines), schema, max(map(len, lines)))
        except (pa.ArrowException, ValueError) as exc:
            if len(items) == 1:
                dead.append((items[0][0], self._explain(items[0][1], exc, schema)))
                return
            middle = len(items) // 2
            self._bisect(items[:middle], schema, pieces, dead)
            self._bisect(items[middle:], schema, pieces, dead)
            return
        pieces.append(([index for index, _ in items], table))

    def _explain(self, value: bytes, exc: Exception, schema: pa.Schema | None) -> str:
        try:
            obj = json.loads(value)
        except ValueError as problem:
            return _json_problem(value, problem)
        if not isinstance(obj, dict):
            return _not_object(obj)
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, _DecodeError):
            return message
        if "unexpected field" in message and schema is not None:
            extra = sorted(set(obj) - set(schema.names))
            return f"field(s) {extra} not in the table's schema (drift policy: strict)"
        if "UTF8" in message or "UTF-8" in message:
            return f"not valid UTF-8: {message}"
        match = _JSON_COLUMN.search(message)
        column = match.group(1) if match else self._bad_field(obj, schema)
        if column is not None:
            expected = schema.field(column).type if schema is not None and column in schema.names else None
            got = type(obj.get(column)).__name__ if column in obj else "missing"
            want = f" (expected {expected}, got JSON {got})" if expected is not None else ""
            return f"wrong type for field {column!r}{want}: {message}"
        return f"does not fit the table's schema: {message}"

    def _bad_field(self, obj: dict[str, Any], schema: pa.Schema | None) -> str | None:
        """The first field of ``obj`` whose value alone does not convert to its column's type."""
        if schema is None:
            return None
        for f in schema:
            if f.name not in obj:
                continue
            line = json.dumps({f.name: obj[f.name]}).encode()
            try:
                self._parse(line, 1, pa.schema([f]), len(line))
            except (pa.ArrowException, ValueError):
                return f.name
        return None

    def _required(self, decoded: Decoded) -> Decoded:
        """Move rows missing a required field (absent or null) to the dead letters."""
        table = decoded.table
        if table is None or not self.required:
            return decoded
        masks: dict[str, list[bool]] = {}
        combined: Any = None
        for name in self.required:
            index = table.schema.get_field_index(name)
            mask: Any = pa.array([True] * table.num_rows) if index < 0 else pc.is_null(table.column(index))
            combined = mask if combined is None else pc.or_(combined, mask)
            masks[name] = mask.to_pylist()
        if combined is None or not pc.any(combined).as_py():
            return decoded
        good: list[int] = []
        dead = list(decoded.dead)
        for row, bad in enumerate(combined.to_pylist()):
            if bad:
                names = [name for name in self.required if masks[name][row]]
                dead.append((decoded.good[row], f"missing required field(s) {names}"))
            else:
                good.append(decoded.good[row])
        kept = table.filter(pc.invert(combined))
        return Decoded(kept if kept.num_rows else None, good, dead)


def _json_problem(value: bytes, exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8: {exc.reason} at byte {exc.start}"
    if isinstance(exc, json.JSONDecodeError):
        if not value.strip():
            return "empty value: not a JSON object"
        return f"not valid JSON: {exc.msg} at character {exc.pos}"
    return f"not valid JSON: {exc}"


def _not_object(obj: Any) -> str:
    kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(obj), "null" if obj is None else type(obj).__name__
    )
    return f"not a JSON object (a JSON {kind})"


def _classify(value: bytes) -> str:
    try:
        obj = json.loads(value)
    except ValueError as exc:
        return _json_problem(value, exc)
    return _not_object(obj)


# --- the worker -----------------------------------------------------------------------------------


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
            pc.multiply(millis, 1000).cast(_UTC_MICROS),
        ]


def _from_array(values: array[int], dtype: pa.DataType) -> pa.Array:
    """An Arrow array of a Python ``array``: one copy of its memory, no per-item work (a copy, so the
    ``array`` stays resizable)."""
    return pa.Array.from_buffers(dtype, len(values), [None, pa.py_buffer(bytes(values))])


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
        group: str | None = None,
        until_caught_up: bool = False,
        max_records: int = 50_000,
        max_bytes: int = 64 * MiB,
        max_seconds: float = 1.0,
        max_batches: int | None = None,
        contract: TableContract | None = None,
        run: RunContext | None = None,
        config: LakebedConfig | None = None,
        bootstrap: str | None = None,
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
        self.bootstrap = resolve_bootstrap(bootstrap, self.config)
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
        try:
            self._start()
            self._loop()
        finally:
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
            self._resync()
        else:
            consumer.subscribe(topics=[self.topic], listener=_Listener(self))

    def _require_consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            raise LakebedError("the stream worker is not running")
        return self._consumer

    def _uri(self, name: str, kind: str) -> str:
        entry = self.catalog.find(name)
        return entry.uri if entry is not None else self.catalog.default_uri(name, kind=kind)

    def _open_registered(self, name: str, kind: str, contract: TableContract | None) -> DeltaTable | None:
        """Open a table; one that exists but is missing from the catalog (a worker killed between its
        first commit and the registration) is registered now."""
        entry = self.catalog.find(name)
        uri = entry.uri if entry is not None else self.catalog.default_uri(name, kind=kind)
        table = _open(uri)
        if table is not None and entry is None:
            self.catalog.register(name, uri=uri, kind=kind, contract=contract)
        return table

    def _revoke(self, partitions: set[int]) -> None:
        self._assigned -= partitions
        self._synced -= partitions
        for p in partitions:
            self._next.pop(p, None)
        # Records of revoked partitions are dropped: their new owner starts from Delta's offsets.
        if len(self._batch):
            self._batch = self._batch.without(partitions)

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
        seek each to stored + 1 and forget pending records."""
        consumer = self._require_consumer()
        data = self._open_registered(self.table, "table", self._commit_contract)
        dead = self._open_registered(self.dead_table, "rejects", None)
        self._data_version = data.version() if data is not None else -1
        self._dead_version = dead.version() if dead is not None else -1
        self._schema = _data_schema(data) if data is not None else None
        self._batch = Batch()
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
        log.debug("resynced %s from Delta v%s: %s", self.table, self._data_version, self._stored)

    # the loop --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        consumer = self._require_consumer()
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
            polled = consumer.poll(
                timeout_ms=int(timeout * 1000),
                max_records=max(1, min(_POLL_RECORDS, self.max_records - len(batch))),
            )
            if self._needs_resync:
                self._resync()
                continue
            if polled:
                self._accept(polled)
            del polled  # the batch holds what it needs: let the record objects go
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

    def _accept(self, polled: Mapping[TopicPartition, list[Any]]) -> None:
        epoch = self._epoch
        for tp, records in polled.items():
            p = tp.partition
            if p not in self._synced or not records:
                continue  # assigned but not yet positioned from Delta: refetched after the resync
            expected = self._next[p]
            if records[0].offset < expected:  # already in Delta (or in this batch): drop
                kept = [r for r in records if r.offset >= expected]
                self.result.skipped += len(records) - len(kept)
                records = kept
                if not records:
                    continue
            sizes = [r.serialized_value_size for r in records]  # -1 for a null value
            nbytes = sum(sizes)
            special = min(sizes) < 0 or max(sizes) > self.max_bytes
            if not special and self._batch.nbytes + nbytes <= self.max_bytes:
                self._batch.extend(p, records, nbytes, special=False)  # the usual case: all at once
            else:
                for record, size in zip(records, sizes, strict=True):
                    size = max(size, 0)
                    if len(self._batch) and self._batch.nbytes + size > self.max_bytes:
                        self._flush()
                        if self._epoch != epoch:
                            return  # the flush failed and re-seeked: the rest of this poll is stale
                    self._batch.extend(
                        p, [record], size, special=record.value is None or size > self.max_bytes
                    )
            self._next[p] = records[-1].offset + 1

    def _reached_ends(self) -> bool:
        return bool(self._assigned) and all(
            p in self._synced and self._next.get(p, 0) >= self._ends.get(p, 0) for p in self._assigned
        )

    def _caught_up(self) -> bool:
        consumer = self._require_consumer()
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
            # Offsets may have gaps (compaction, transaction markers): the consumer's position counts.
            if consumer.position(TopicPartition(self.topic, p)) < end:
                return False
        return True

    def _delta_complete(self) -> bool:
        data = _open(self._uri(self.table, "table"))
        dead = _open(self._uri(self.dead_table, "rejects"))
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
        """Decode and commit one batch: its dead letters, then its rows (one Delta commit each)."""
        decoded = self._decoder().decode(batch.values, screen=batch.special)
        dead_rows = [
            (index, reason)
            for index, reason in decoded.dead
            if batch.offsets[index] > _or(self._dead_stored.get(batch.partitions[index]), -1)
        ]
        data = None
        if decoded.table is not None and decoded.good:
            rows = None if len(decoded.good) == len(batch) else decoded.good
            data = _with_meta(decoded.table, batch.meta_columns(self.topic, rows))
        del decoded
        if dead_rows:
            self._commit_dead_letters(batch, dead_rows)
        self.result.dead_letters += len(dead_rows)
        version = None
        written = 0
        if data is not None:
            result, version = self._commit_data(data, batch.bounds)
            written = result.rows
            self.result.records += written
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
        now = dt.datetime.now(dt.UTC)
        index = [i for i, _ in dead_rows]
        rows = pa.table(
            {
                "topic": pa.array([self.topic] * len(index), pa.string()),
                "partition": pa.array([batch.partitions[i] for i in index], pa.int32()),
                "offset": pa.array([batch.offsets[i] for i in index], pa.int64()),
                "key": pa.array([batch.keys[i] for i in index], pa.binary()),
                "value": pa.array([batch.values[i] for i in index], pa.binary()),
                "error": pa.array([reason for _, reason in dead_rows], pa.string()),
                "run_id": pa.array([self.run_context.run_id] * len(index), pa.string()),
                "failed_at": pa.array([now] * len(index), pa.timestamp("us", tz="UTC")),
            },
            schema=DEAD_LETTER_SCHEMA,
        )
        bounds = batch.bounds
        partitions = sorted({batch.partitions[i] for i in index})
        versions = {
            dead_letter_app_id(self.table, self.topic, p): max(
                bounds[p][1], _or(self._dead_stored.get(p), -1)
            )
            for p in partitions
        }
        _, version = self._fenced_commit(
            self.dead_table, rows, versions, kind="rejects", base_version=self._dead_version, bounds=bounds
        )
        for p in partitions:
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
        batch_id = uuid.uuid4().hex
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
                metadata={**self._metadata(bounds), BATCH_KEY: batch_id},
                app_transactions=[
                    Transaction(app_id=app_id, version=version, last_updated=now_ms)
                    for app_id, version in versions.items()
                ],
                config=self.config,
                catalog=self.catalog,
            )
        except Exception:
            if tripped:
                raise StreamFenced(f"{name}: another writer committed {tripped[0]}") from None
            raise
        # CommitResult.version comes from DeltaTable.history(), which mislabels versions while other
        # writers commit (delta-rs 1.6); the log itself is exact.
        version = find_commit(uri, base_version, batch_id) if is_local(uri) else result.version
        return result, version

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


def _open(uri: str) -> DeltaTable | None:
    try:
        return DeltaTable(uri)
    except DeltaTableNotFoundError:
        return None


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


def ingest_stream(
    topic: str,
    table: str,
    *,
    group: str | None = None,
    until_caught_up: bool = False,
    max_records: int = 50_000,
    max_bytes: int = 64 * MiB,
    max_seconds: float = 1.0,
    max_batches: int | None = None,
    contract: TableContract | None = None,
    run: RunContext | None = None,
    config: LakebedConfig | None = None,
    bootstrap: str | None = None,
    stop_event: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> StreamResult:
    """Ingest Kafka ``topic`` into lakebed table ``table`` exactly once (see :class:`StreamIngestor`).

    Micro-batches hold at most ``max_records`` records, ``max_bytes`` bytes of values and
    ``max_seconds`` of waiting. ``until_caught_up`` stops once the end offsets read at start are
    reached ("available now"); ``max_batches`` stops after that many committed micro-batches;
    otherwise the worker runs until ``stop_event`` is set.
    """
    return StreamIngestor(
        topic,
        table,
        group=group,
        until_caught_up=until_caught_up,
        max_records=max_records,
        max_bytes=max_bytes,
        max_seconds=max_seconds,
        max_batches=max_batches,
        contract=contract,
        run=run,
        config=config,
        bootstrap=bootstrap,
        stop_event=stop_event,
        progress=progress,
    ).run()


__all__ = [
    "BATCH_KEY",
    "DEAD_LETTER_SCHEMA",
    "META_COLUMNS",
    "META_SCHEMA",
    "Batch",
    "Decoded",
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
