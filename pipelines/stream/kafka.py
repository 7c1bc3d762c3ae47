"""The Kafka side of stream ingest: topics, end offsets, consumers and producing files.

Everything here speaks the plain Kafka protocol through kafka-python, so it works the same against the
embedded Tansu broker (:mod:`lakebed.broker`) and a real cluster (``LAKEBED_KAFKA_BOOTSTRAP``). Callers pass the
bootstrap address; nothing here looks for or starts a broker.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from lakebed.errors import InputError, LakebedError, ProduceError, TopicNotFoundError
from lakebed.pipelines.formats import detect_format, open_file

# Consumer settings shared by the ingest worker and the benchmark's bare baseline. The group timeouts
# keep a group join at ~3 s on Tansu (the defaults wait up to the full rebalance timeout).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "max_poll_interval_ms": 10_000,
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 500,
    "fetch_max_bytes": 4 << 20,
    "max_partition_fetch_bytes": 1 << 20,
    "client_id": "lakebed-stream",
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 10,
    "batch_size": 1 << 20,
    "max_request_size": 64 << 20,
    "client_id": "lakebed-producer",
}
_PRODUCE_BATCH_ROWS = 10_000


class _QuietClose(logging.Filter):
    """kafka-python logs an ERROR when a client closes while a metadata refresh is in flight
    ("Metadata refresh: failed Cancelled"); it is part of a normal close, so it is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Metadata refresh: failed %s" and "Cancelled" in str(record.args))


logging.getLogger("kafka.cluster").addFilter(_QuietClose())


def kafka_namespace(bootstrap: str) -> str:
    """The OpenLineage dataset namespace of a Kafka cluster: ``kafka://host:port`` (first server)."""
    return "kafka://" + bootstrap.split(",")[0].strip()


def new_consumer(bootstrap: str, *, group: str | None = None, **overrides: Any) -> KafkaConsumer:
    """A KafkaConsumer with lakebed's defaults (no auto commit, earliest reset, short group timeouts)."""
    settings = {**CONSUMER_DEFAULTS, **overrides}
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, **settings)


def partitions_of(consumer: KafkaConsumer, topic: str, *, timeout: float = 5.0) -> list[int]:
    """The partition ids of ``topic`` (waits briefly for metadata of a topic created just now)."""
    deadline = time.monotonic() + timeout
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        if time.monotonic() >= deadline:
            raise TopicNotFoundError(
                f"Kafka topic {topic!r} does not exist; create it first "
                "(`lakebed produce TOPIC FILE --partitions N` creates it)"
            )
        time.sleep(0.1)


@contextmanager
def _admin(bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="lakebed-admin")
    try:
        yield admin
    finally:
        admin.close()


def create_topic(bootstrap: str, topic: str, partitions: int = 1, *, exist_ok: bool = True) -> bool:
    """Create ``topic`` with ``partitions`` partitions; True if created, False if it already existed.

    The replication factor is the cluster's default (1 on the embedded broker). An existing topic is left
    as it is (its partition count is not changed).
    """
    if partitions < 1:
        raise ValueError("a topic needs at least one partition")
    try:
        with _admin(bootstrap) as admin:
            admin.create_topics([NewTopic(topic, partitions, -1)])
    except TopicAlreadyExistsError:
        if not exist_ok:
            raise LakebedError(f"Kafka topic {topic!r} already exists") from None
        return False
    except KafkaError as exc:
        raise LakebedError(f"cannot create Kafka topic {topic!r} on {bootstrap}: {exc}") from exc
    # Wait until the topic is visible in metadata so producers and consumers can use it at once.
    consumer = new_consumer(bootstrap)
    try:
        partitions_of(consumer, topic, timeout=10.0)
    finally:
        consumer.close()
    return True


def end_offsets(bootstrap: str, topic: str, *, timeout: float = 10.0) -> dict[int, int]:
    """The end offset (offset of the next message to be written) of every partition of ``topic``.

    The listed end offsets are checked against the high watermark of a fetch of each partition's last
    batch: Tansu 0.6 (the embedded broker) answers ListOffsets(latest) with the base offset of the last
    record batch + 1, not the high watermark. Against Kafka both agree.
    """
    consumer = new_consumer(bootstrap, fetch_max_wait_ms=20, max_partition_fetch_bytes=1 << 16)
    try:
        tps = [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
        listed = {tp: int(offset) for tp, offset in consumer.end_offsets(tps).items()}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(listed[tp] - 1, 0))  # the last batch starts at or before this offset
        deadline = time.monotonic() + timeout
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() >= deadline:
                raise LakebedError(
                    f"no fetch answer for topic {topic!r} on {bootstrap} within {timeout:.0f} s"
                )
            consumer.poll(timeout_ms=50, max_records=100_000)
        return {tp.partition: max(listed[tp], int(consumer.highwater(tp) or 0)) for tp in tps}
    finally:
        consumer.close(autocommit=False)


def beginning_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The first available offset of every partition of ``topic``."""
    consumer = new_consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
        return {tp.partition: int(offset) for tp, offset in consumer.beginning_offsets(tps).items()}
    finally:
        consumer.close()


# --- producing ------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """JSON for the Python values Arrow rows hold that ``json`` cannot write itself."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)  # lossless; pyarrow.json reads a decimal column from a string
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def to_json_bytes(record: Mapping[str, Any]) -> bytes:
    """One record as compact JSON (UTF-8, no spaces)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()


def _key_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class _Sender:
    """A producer that counts deliveries and keeps the first failure (checked after ``flush``)."""

    def __init__(self, bootstrap: str, topic: str, settings: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, **{**PRODUCER_DEFAULTS, **(settings or {})}
        )
        self.sent = 0
        self.failed = 0
        self.first_error: BaseException | None = None

    def _errback(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = exc

    def send(self, value: bytes | None, key: bytes | None = None, partition: int | None = None) -> None:
        future = self.producer.send(self.topic, value=value, key=key, partition=partition)
        future.add_errback(self._errback)
        self.sent += 1

    def finish(self) -> int:
        """Flush, close and return the number delivered; raise if any message failed."""
        try:
            self.producer.flush()
        finally:
            self.producer.close()
        if self.failed:
            raise ProduceError(
                f"{self.failed:,} of {self.sent:,} message(s) to topic {self.topic!r} failed: {self.first_error}"
            )
        return self.sent

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the original error matters, not the close
            self.producer.close(timeout=0)


def produce_records(
    bootstrap: str,
    topic: str,
    records: Iterable[Mapping[str, Any] | bytes | str | None],
    *,
    key: str | Callable[[Any], Any] | None = None,
    partition: int | None = None,
    producer_settings: Mapping[str, Any] | None = None,
) -> int:
    """Send ``records`` to ``topic``; returns how many were delivered.

    A mapping is sent as compact JSON; ``bytes`` and ``str`` are sent as they are (a ``str`` UTF-8
    encoded), ``None`` as a tombstone (null value). ``key`` names the mapping field whose string value
    keys the message (Kafka partitions by key), or is a function of the record giving the key.
    ``partition`` pins every message to one partition.
    """
    sender = _Sender(bootstrap, topic, producer_settings)
    try:
        for record in records:
            if isinstance(record, Mapping):
                value: bytes | None = to_json_bytes(record)
            elif isinstance(record, str):
                value = record.encode()
            else:
                value = record
            if key is None:
                message_key = None
            elif callable(key):
                message_key = _key_bytes(key(record))
            else:
                message_key = _key_bytes(record.get(key)) if isinstance(record, Mapping) else None
            sender.send(value, message_key, partition)
    except BaseException:
        sender.abort()
        raise
    return sender.finish()


def _batch_json(batch: pa.RecordBatch) -> list[bytes]:
    return [to_json_bytes(row) for row in batch.to_pylist()]


def _batch_keys(batch: pa.RecordBatch, key: str, path: Path) -> list[bytes | None]:
    index = batch.schema.get_field_index(key)
    if index < 0:
        raise InputError(
            f"key column {key!r} is not in the file (columns: {', '.join(batch.schema.names)})",
            path=str(path),
            column=key,
        )
    column = batch.column(index)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return [None if k is None else k.encode() for k in column.to_pylist()]


def produce_file(
    bootstrap: str,
    topic: str,
    path: str | Path,
    *,
    key: str | None = None,
    format: str | None = None,  # noqa: A002 - the CLI's name
    batch_rows: int = _PRODUCE_BATCH_ROWS,
    producer_settings: Mapping[str, Any] | None = None,
) -> int:
    """Send every row of a JSON-lines, CSV or Parquet file to ``topic`` as one compact JSON message.

    The file is read in Arrow batches (constant memory); ``key`` names the column whose string value
    keys each message. Returns the number of messages delivered. A malformed record stops the
    producer with its file and line.
    """
    source = Path(path)
    stream = open_file(source, detect_format(source, format), batch_rows=batch_rows)
    sender = _Sender(bootstrap, topic, producer_settings)
    try:
        for batch in stream.batches:
            if not batch.num_rows:
                continue
            values = _batch_json(batch)
            keys: list[bytes | None] = _batch_keys(batch, key, source) if key else [None] * len(values)
            for value, message_key in zip(values, keys, strict=True):
                sender.send(value, message_key)
    except BaseException:
        sender.abort()
        raise
    return sender.finish()


__all__ = [
    "CONSUMER_DEFAULTS",
    "PRODUCER_DEFAULTS",
    "ProduceError",
    "TopicNotFoundError",
    "beginning_offsets",
    "create_topic",
    "end_offsets",
    "kafka_namespace",
    "new_consumer",
    "partitions_of",
    "produce_file",
    "produce_records",
    "to_json_bytes",
]
