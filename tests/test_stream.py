"""Kafka → Delta stream ingest against a real (Tansu) broker: exactly once, restarts, dead letters,
kill -9, consumer groups and commit conflicts. No mocks of Kafka or Delta."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable, Transaction
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from lakebed.broker import (
    BrokerError,
    EmbeddedBroker,
    embedded_bootstrap,
    ensure_bootstrap,
    read_broker_file,
    start_detached,
    stop_detached,
)
from lakebed.config import get_config, reset_config
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import commit
from lakebed.pipelines.read import read_table
from lakebed.pipelines.stream import ingest as ingest_module
from lakebed.pipelines.stream.ingest import (
    Batch,
    JsonDecoder,
    StreamIngestor,
    _with_meta,
    data_app_id,
    dead_letter_app_id,
    ingest_stream,
)
from lakebed.pipelines.stream.kafka import (
    create_topic,
    end_offsets,
    new_consumer,
    produce_file,
    produce_records,
)
from lakebed.schemas.contract import ColumnSpec, TableContract

pytest_plugins = ["streaming_fixtures"]

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[1]


def event(i: int) -> dict[str, Any]:
    ts = (T0 + dt.timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
    return {"id": i, "user": f"u{i % 37}", "amount": i * 0.25, "ts": ts}


def produce_events(bootstrap: str, topic: str, start: int, count: int) -> int:
    return produce_records(bootstrap, topic, (event(i) for i in range(start, start + count)), key="user")


def kafka_coordinates(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    return {(p, o) for p, end in end_offsets(bootstrap, topic).items() for o in range(end)}


def assert_exactly_once(
    bootstrap: str, topic: str, table: str, *, dead: AbstractSet[tuple[int, int]] = frozenset()
) -> pa.Table:
    """Every Kafka record is in ``table`` exactly once (or, if listed in ``dead``, in its dead letters
    exactly once), with the values it was produced with."""
    rows = read_table(table)
    coordinates = list(
        zip(rows.column("_partition").to_pylist(), rows.column("_offset").to_pylist(), strict=True)
    )
    assert len(coordinates) == len(set(coordinates)), "duplicate (partition, offset) in the table"
    assert set(coordinates) == kafka_coordinates(bootstrap, topic) - set(dead)
    for row in rows.select(["id", "user", "amount"]).to_pylist():
        if row["id"] is not None and row["id"] >= 0:
            assert row["user"] == f"u{row['id'] % 37}" and row["amount"] == row["id"] * 0.25, row
    assert set(rows.column("_topic").to_pylist()) == {topic}
    if dead:
        letters = read_table(f"{table}__dead_letter")
        found = list(
            zip(letters.column("partition").to_pylist(), letters.column("offset").to_pylist(), strict=True)
        )
        assert len(found) == len(set(found)), "duplicate dead letters"
        assert set(found) == set(dead)
    return rows


def txn_versions(table: str, topic: str, partitions: range) -> dict[int, int | None]:
    delta = DeltaTable(Catalog().get(table).uri)
    return {p: delta.transaction_version(data_app_id(table, topic, p)) for p in partitions}


# --- decoding (no broker) -------------------------------------------------------------------------


def test_decoder_fast_path_and_bisection() -> None:
    values: list[bytes | None] = [json.dumps(event(i)).encode() for i in range(1000)]
    fast = JsonDecoder(None).decode(values)
    assert fast.table is not None and fast.table.num_rows == 1000 and not fast.dead
    assert fast.table.column("id").to_pylist() == list(range(1000))

    values[10] = b"{not json"
    values[500] = b'{"id": 1}\n{"id": 2}'  # two objects in one message
    values[600] = b'{"id":\n 600, "user": "u8", "amount": 150.0}'  # pretty-printed: fine
    values[700] = b"null"  # would crash pyarrow.json as the first line of a block
    values[999] = b'{"id": 999.5}'  # int in the rest of the block
    decoded = JsonDecoder(None).decode(values)
    reasons = dict(decoded.dead)
    assert set(reasons) == {10, 500, 700}, reasons
    assert reasons[700] == "not a JSON object (a JSON null)"
    assert decoded.table is not None and decoded.table.num_rows == 997
    assert decoded.good == [i for i in range(1000) if i not in reasons]
    assert decoded.table.schema.field("id").type == pa.float64()  # int and float pieces widen


def test_decoder_schema_contract_and_strict_drift() -> None:
    schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("day", pa.date32())])
    decoder = JsonDecoder(schema, drift="strict", required=["ts"])
    decoded = decoder.decode(
        [
            b'{"id": 1, "ts": "2025-01-01T00:00:00Z", "day": "2025-01-01"}',
            b'{"id": "2", "ts": "2025-01-01T00:00:00Z"}',
            b'{"id": 3}',
            b'{"id": 4, "ts": "2025-01-01T00:00:00Z", "extra": true}',
            b'{"id": 5, "ts": "yesterday"}',
            b'{"id": 6, "ts": "2025-01-01 10:00:00", "day": "2025-13-45"}',
        ]
    )
    reasons = dict(decoded.dead)
    assert decoded.good == [0]
    assert decoded.table is not None and decoded.table.schema == schema
    assert "wrong type for field 'id'" in reasons[1]
    assert reasons[2] == "missing required field(s) ['ts']"
    assert "['extra'] not in the table's schema" in reasons[3]
    assert "yesterday" in reasons[4]
    assert 5 in reasons


def test_batch_keeps_kafka_columns_compactly() -> None:
    from kafka.consumer.fetcher import ConsumerRecord

    def record(p: int, offset: int, value: bytes | None) -> ConsumerRecord:
        size = -1 if value is None else len(value)
        return ConsumerRecord(
            "t", p, 0, offset, 1_700_000_000_000 + offset, 0, b"k", value, [], None, 1, size, -1
        )

    batch = Batch()
    batch.extend(0, [record(0, 5, b"{}"), record(0, 6, b'{"a":1}')], 9, special=False)
    batch.extend(1, [record(1, 0, None)], 0, special=True)
    batch.extend(0, [record(0, 7, b"{}")], 2, special=False)
    assert len(batch) == 4 and batch.nbytes == 11 and batch.special
    assert batch.bounds == {0: (5, 7), 1: (0, 0)}
    topic, partitions, offsets, ts = batch.meta_columns("t", [0, 2, 3])
    assert topic.to_pylist() == ["t"] * 3 and partitions.to_pylist() == [0, 1, 0]
    assert offsets.to_pylist() == [5, 0, 7] and ts.type == pa.timestamp("us", tz="UTC")
    assert ts[0].as_py() == dt.datetime.fromtimestamp(1_700_000_000.005, dt.UTC)
    kept = batch.without({1})
    assert list(kept.offsets) == [5, 6, 7] and kept.bounds == {0: (5, 7)} and kept.nbytes == 11
    assert kept.values == [b"{}", b'{"a":1}', b"{}"] and kept.keys == [b"k"] * 3


# --- exactly once against the real broker -------------------------------------------------------


def test_exactly_once_basic(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(4)
    assert produce_events(bootstrap, topic, 0, 5000) == 5000
    result = ingest_stream(topic, "events", bootstrap=bootstrap, until_caught_up=True, max_records=1500)
    assert result.caught_up and result.records == 5000 and result.dead_letters == 0
    rows = assert_exactly_once(bootstrap, topic, "events")
    assert sorted(rows.column("id").to_pylist()) == list(range(5000))
    assert rows.schema.field("_partition").type == pa.int32()
    assert rows.schema.field("_offset").type == pa.int64()
    assert rows.schema.field("_kafka_ts").type == pa.timestamp("us", tz="UTC")
    assert rows.column("_kafka_ts").null_count == 0
    assert rows.schema.field("ts").type == pa.timestamp("us", tz="UTC")  # inferred: an instant
    assert rows.column("ts").to_pylist()[:1] == [T0 + dt.timedelta(seconds=rows.column("id")[0].as_py())]
    ends = end_offsets(bootstrap, topic)
    assert txn_versions("events", topic, range(4)) == {p: e - 1 for p, e in ends.items()}
    # One Delta commit per micro-batch, each pointing back to the run and its offsets.
    history = DeltaTable(Catalog().get("events").uri).history()
    assert len(history) == result.rounds >= 4  # at most 1500 records per batch
    assert all(h["lakebed.run_id"] == result.run_id and "lakebed.kafka.offsets" in h for h in history)


def test_restart_resumes_from_delta(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(3)
    produce_events(bootstrap, topic, 0, 3000)
    first = ingest_stream(topic, "events", bootstrap=bootstrap, max_records=700, max_batches=1)
    assert first.stopped_by == "max_batches" and 0 < first.records <= 700
    second = ingest_stream(topic, "events", bootstrap=bootstrap, max_records=700, max_batches=2)
    assert second.skipped == 0  # it seeks to Delta's offsets: nothing re-read
    assert first.records + second.records == len(read_table("events"))
    produce_events(bootstrap, topic, 3000, 1000)  # the topic grows between runs
    third = ingest_stream(topic, "events", bootstrap=bootstrap, until_caught_up=True)
    assert first.records + second.records + third.records == 4000
    rows = assert_exactly_once(bootstrap, topic, "events")
    assert sorted(rows.column("id").to_pylist()) == list(range(4000))
    again = ingest_stream(topic, "events", bootstrap=bootstrap, until_caught_up=True)
    assert again.records == 0 and again.rounds == 0


def test_kafka_committed_offsets_are_only_a_hint(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic, group = new_topic(2), "hint-group"
    produce_events(bootstrap, topic, 0, 2000)
    result = ingest_stream(topic, "events", group=group, bootstrap=bootstrap, until_caught_up=True)
    assert result.records == 2000
    tps = [TopicPartition(topic, p) for p in range(2)]
    ends = end_offsets(bootstrap, topic)
    admin = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert {tp.partition: admin.committed(tp) for tp in tps} == ends  # the hint is written
        admin.assign(tps)
        admin.commit({tp: OffsetAndMetadata(0, "", -1) for tp in tps})  # ...and now wrong
        assert {tp.partition: admin.committed(tp) for tp in tps} == {0: 0, 1: 0}
    finally:
        admin.close(autocommit=False)
    produce_events(bootstrap, topic, 2000, 500)
    again = ingest_stream(topic, "events", group=group, bootstrap=bootstrap, until_caught_up=True)
    assert again.records == 500 and again.skipped == 0
    rows = assert_exactly_once(bootstrap, topic, "events")
    assert sorted(rows.column("id").to_pylist()) == list(range(2500))


CONTRACT = TableContract(
    name="events",
    columns=(
        ColumnSpec(name="id", type="int64", nullable=False),
        ColumnSpec(name="user", type="string"),
        ColumnSpec(name="amount", type="float64"),
        ColumnSpec(name="ts", type="timestamp", nullable=False),
    ),
)
POISON: list[tuple[bytes | None, str]] = [
    (b"this is not json", "not valid JSON"),
    (b'[{"id": 1}]', "not a JSON object (a JSON array)"),
    (json.dumps({**event(-1), "amount": "lots"}).encode(), "wrong type for field 'amount'"),
    (json.dumps({"id": -2, "user": "u", "amount": 1.0}).encode(), "missing required field(s) ['ts']"),
    (json.dumps({**event(-3), "pad": "x" * 5000}).encode(), "exceeds max_bytes"),
    (None, "null value"),
    (b'{"id": -4, "user": "\xff\xfe", "ts": "2025-01-01T00:00:00Z"}', "UTF-8"),
    (json.dumps({**event(-5), "ts": "not a time"}).encode(), "'ts'"),
]


def test_poison_messages_go_to_the_dead_letter_table(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(2)
    messages: list[dict[str, Any] | bytes | None] = []
    for i in range(400):
        messages.append(event(i))
        if i % 50 == 25:
            messages.append(POISON[(i // 50) % len(POISON)][0])
    messages.append(b'{\n  "id": 400, "user": "u30",\n  "amount": 100.0, "ts": "2025-03-01T00:06:40Z"\n}')
    produce_records(bootstrap, topic, messages[: len(messages) // 2], key=lambda r: b"a", partition=0)
    produce_records(bootstrap, topic, messages[len(messages) // 2 :], key=lambda r: b"b", partition=1)

    result = ingest_stream(
        topic, "events", bootstrap=bootstrap, contract=CONTRACT, max_bytes=4096, until_caught_up=True
    )
    assert result.records == 401 and result.dead_letters == 8
    letters = read_table("events__dead_letter").to_pylist()
    by_value = {row["value"]: row for row in letters}
    for value, reason in POISON:
        assert reason in by_value[value]["error"], (reason, by_value[value]["error"])
    dead = {(row["partition"], row["offset"]) for row in letters}
    for row in letters:
        assert row["topic"] == topic and row["run_id"] == result.run_id and row["key"] in (b"a", b"b")
    rows = assert_exactly_once(bootstrap, topic, "events", dead=dead)
    assert sorted(rows.column("id").to_pylist()) == list(range(401))
    assert rows.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert rows.column("ts").null_count == 0
    # The raw table is registered with the contract plus the Kafka columns.
    registered = Catalog().get("events").contract
    assert registered is not None and [c.name for c in registered.columns][-4:] == [
        "_topic",
        "_partition",
        "_offset",
        "_kafka_ts",
    ]
    # A later run neither re-reads nor doubles anything.
    again = ingest_stream(topic, "events", bootstrap=bootstrap, max_bytes=4096, until_caught_up=True)
    assert again.records == 0 and again.dead_letters == 0
    assert len(read_table("events__dead_letter")) == 8


def test_round_retried_after_crash_never_doubles_dead_letters(
    bootstrap: str, new_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic(1)
    produce_records(bootstrap, topic, [event(0), b"garbage", event(1), b"[]", event(2)])
    real = StreamIngestor._commit_data

    def crash(self: StreamIngestor, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("worker died between the dead-letter commit and the data commit")

    monkeypatch.setattr(StreamIngestor, "_commit_data", crash)
    with pytest.raises(RuntimeError, match="worker died"):
        ingest_stream(topic, "events", bootstrap=bootstrap, until_caught_up=True)
    assert len(read_table("events__dead_letter")) == 2
    monkeypatch.setattr(StreamIngestor, "_commit_data", real)
    result = ingest_stream(topic, "events", bootstrap=bootstrap, until_caught_up=True)
    assert result.records == 3 and result.dead_letters == 0
    assert_exactly_once(bootstrap, topic, "events", dead={(0, 1), (0, 3)})


# --- kill -9 --------------------------------------------------------------------------------------


def _worker(topic: str, home: Path, bootstrap: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LAKEBED_HOME": str(home), "LAKEBED_KAFKA_BOOTSTRAP": bootstrap}
    command = [sys.executable, "-m", "lakebed.cli", "stream", "run", "--topic", topic]
    command += ["--table", "events", "--max-records", "300", "--max-seconds", "0.05", "--quiet"]
    return subprocess.Popen(
        command, env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _commits(home: Path) -> int:
    log = home / "tables" / "events" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def _kill_run(bootstrap: str, topic: str, home: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    for kill in range(kills):
        before = _commits(home)
        worker = _worker(topic, home, bootstrap)
        deadline = time.monotonic() + 60
        while _commits(home) <= before:  # let it get going: imports take a second or two
            if worker.poll() is not None:
                raise AssertionError(f"worker exited early: {worker.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                worker.kill()
                raise AssertionError("worker made no commit within 60 s")
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))  # anywhere: polling, decoding, writing files, committing
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert worker.returncode == -signal.SIGKILL, f"kill {kill}: the worker had already finished"
        worker.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kills", "records"),
    [pytest.param(3, 20_000, id="3-kills"), pytest.param(20, 100_000, id="20-kills", marks=pytest.mark.slow)],
)
def test_kill_9_at_random_points_loses_and_doubles_nothing(
    bootstrap: str, new_topic: Callable[..., str], lakebed_home: Path, kills: int, records: int
) -> None:
    topic = new_topic(4)
    poison = {i for i in range(0, records, 997)}
    messages = [b"not json %d" % i if i in poison else event(i) for i in range(records)]
    produce_records(
        bootstrap, topic, messages, key=lambda r: r.get("user") if isinstance(r, dict) else r[-2:]
    )
    seed = int(os.environ.get("LAKEBED_TEST_SEED", time.time_ns() % 100_000))
    print(f"kill -9 seed {seed} (LAKEBED_TEST_SEED={seed} reproduces)")
    _kill_run(bootstrap, topic, lakebed_home, kills, seed)
    killed = read_table("events").num_rows
    assert 0 < killed < records - len(poison), "the workers must be killed mid-stream"
    result = ingest_stream(topic, "events", bootstrap=bootstrap, until_caught_up=True)
    assert result.caught_up
    letters = read_table("events__dead_letter")
    dead = set(
        zip(letters.column("partition").to_pylist(), letters.column("offset").to_pylist(), strict=True)
    )
    assert len(dead) == len(poison) == letters.num_rows
    assert sorted(letters.column("value").to_pylist()) == sorted(b"not json %d" % i for i in poison)
    rows = assert_exactly_once(bootstrap, topic, "events", dead=dead)
    assert sorted(rows.column("id").to_pylist()) == [i for i in range(records) if i not in poison]


# --- consumer groups ------------------------------------------------------------------------------


def test_two_workers_in_one_group(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(4)
    produce_events(bootstrap, topic, 0, 8000)
    results: list[Any] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(
                ingest_stream(
                    topic,
                    "events",
                    group="two-workers",
                    bootstrap=bootstrap,
                    until_caught_up=True,
                    max_records=250,
                    max_seconds=0.1,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 2 and all(r.caught_up for r in results)
    assert sum(r.records for r in results) == 8000
    assert all(r.records > 0 for r in results), "both workers should have owned partitions"
    rows = assert_exactly_once(bootstrap, topic, "events")
    assert sorted(rows.column("id").to_pylist()) == list(range(8000))


# --- commit conflicts -----------------------------------------------------------------------------


def _claim(topic: str, batch: Batch, count: int) -> tuple[int, int]:
    """Another writer commits the first ``count`` records of the batch's busiest partition with their
    offsets (as a second worker owning it would). Returns (partition, last offset claimed)."""
    partitions = list(batch.partitions)
    partition = max(set(partitions), key=partitions.count)
    rows = [i for i, p in enumerate(partitions) if p == partition][:count]
    decoded = JsonDecoder(None).decode([batch.values[i] for i in rows])
    assert decoded.table is not None
    last = batch.offsets[rows[-1]]
    commit(
        "events",
        _with_meta(decoded.table, batch.meta_columns(topic, rows)),
        app_transactions=[Transaction(data_app_id("events", topic, partition), last)],
    )
    return partition, last


def test_concurrent_writer_between_poll_and_commit_is_fenced(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(2)
    produce_events(bootstrap, topic, 0, 2000)
    claimed: list[tuple[int, int]] = []

    class Interfered(StreamIngestor):
        def _commit_round(self, batch: Batch) -> Any:
            if not claimed:
                claimed.append(_claim(topic, batch, 100))
            return super()._commit_round(batch)

    result = Interfered(topic, "events", bootstrap=bootstrap, until_caught_up=True).run()
    assert len(claimed) == 1 and result.retries == 1
    partition, last = claimed[0]
    assert result.records == 2000 - (last + 1)
    assert txn_versions("events", topic, range(2))[partition] == end_offsets(bootstrap, topic)[partition] - 1
    rows = assert_exactly_once(bootstrap, topic, "events")
    assert sorted(rows.column("id").to_pylist()) == list(range(2000))


def test_commit_failed_error_from_delta_re_reads_offsets(
    bootstrap: str, new_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other writer commits while delta-rs writes our batch (after it loaded its snapshot): Delta's
    own conflict check raises CommitFailedError and the worker re-seeks from the stored offsets."""
    topic = new_topic(2)
    produce_events(bootstrap, topic, 0, 1000)
    ingest_stream(topic, "events", bootstrap=bootstrap, max_batches=1, max_records=200)
    produce_events(bootstrap, topic, 1000, 1000)
    seen: dict[str, Any] = {}
    real_check = ingest_module.foreign_transactions

    class Spy(StreamIngestor):
        def _commit_round(self, batch: Batch) -> Any:
            seen.setdefault("batch", batch)
            return super()._commit_round(batch)

        def _resync(self) -> None:
            seen["resyncs"] = seen.get("resyncs", 0) + 1
            super()._resync()

    def interfere(uri: str, after: int, app_ids: Any) -> str | None:
        if "claimed" not in seen and uri.endswith("/events"):
            # delta-rs is consuming our batches on one of its threads: commit from a plain thread.
            helper = threading.Thread(target=lambda: seen.update(claimed=_claim(topic, seen["batch"], 50)))
            helper.start()
            helper.join()
            return None  # pretend the log check saw nothing, so only Delta's conflict check can catch it
        return real_check(uri, after, app_ids)

    monkeypatch.setattr(ingest_module, "foreign_transactions", interfere)
    worker = Spy(topic, "events", bootstrap=bootstrap, until_caught_up=True)
    result = worker.run()
    assert "claimed" in seen and result.retries == 1
    assert seen["resyncs"] == 2  # at start, and after the CommitFailedError
    rows = assert_exactly_once(bootstrap, topic, "events")
    assert sorted(rows.column("id").to_pylist()) == list(range(2000))


def test_recovery_while_the_poller_holds_records_never_duplicates(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """The background poller has the next records buffered when a round is fenced: the worker stops
    it, drops its buffer, re-seeks from Delta and starts a fresh one; nothing is written twice or lost,
    and no round exceeds max_records though polls come in larger chunks."""
    topic = new_topic(2)
    produce_events(bootstrap, topic, 0, 3000)
    claimed: list[tuple[int, int]] = []
    pollers: list[Any] = []
    rounds: list[int] = []

    class Interfered(StreamIngestor):
        def _commit_round(self, batch: Batch) -> Any:
            poller = self._poller
            assert poller is not None and poller.running
            pollers.append(poller._thread)
            if not claimed:
                deadline = time.monotonic() + 10
                while not poller._queue.full() and time.monotonic() < deadline:
                    time.sleep(0.01)  # let the poller buffer the records after this batch
                assert poller._queue.full()
                claimed.append(_claim(topic, batch, 100))
            return super()._commit_round(batch)

    worker = Interfered(
        topic,
        "events",
        bootstrap=bootstrap,
        until_caught_up=True,
        max_records=300,
        progress=lambda info: rounds.append(info.records),
    )
    result = worker.run()
    assert len(claimed) == 1 and result.retries == 1
    assert len({id(t) for t in pollers}) >= 2  # a fresh poller thread after the re-seek
    assert rounds and max(rounds) <= 300
    partition, last = claimed[0]
    assert result.records == 3000 - (last + 1)
    rows = assert_exactly_once(bootstrap, topic, "events")
    assert sorted(rows.column("id").to_pylist()) == list(range(3000))
    assert worker._poller is not None and not worker._poller.running  # stopped before the close


def test_resync_seeks_every_partition_to_the_stored_offset(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(2)
    produce_events(bootstrap, topic, 0, 600)
    ingest_stream(topic, "events", bootstrap=bootstrap, until_caught_up=True)
    worker = StreamIngestor(topic, "events", bootstrap=bootstrap)
    worker._consumer = new_consumer(bootstrap)
    try:
        worker._start()
        stored = txn_versions("events", topic, range(2))
        for p in range(2):
            assert worker._consumer.position(TopicPartition(topic, p)) == stored[p] + 1  # type: ignore[operator]
        # Someone else moves partition 0 back (e.g. an operator replays it): Delta is still the truth.
        commit(
            "events",
            read_table("events").slice(0, 1),
            app_transactions=[Transaction(data_app_id("events", topic, 0), 41)],
        )
        worker._batch.values.append(b"stale")
        worker._resync()
        assert len(worker._batch) == 0
        assert worker._consumer.position(TopicPartition(topic, 0)) == 42
        assert worker._next[0] == 42 and worker._stored[0] == 41
        assert dead_letter_app_id("events", topic, 0) == f"dlq:events:{topic}:0"
    finally:
        worker._consumer.close()


# --- producing, CLI, broker discovery -------------------------------------------------------------


def test_produce_file_and_cli_stream_run(
    kafka_env: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    from lakebed.cli import main as cli

    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(event(i)) + "\n" for i in range(300)))
    runner = CliRunner()
    name = f"cli-{time.time_ns()}"
    produced = runner.invoke(cli, ["produce", name, str(source), "--key", "user", "--partitions", "3"])
    assert produced.exit_code == 0, produced.output
    assert "created topic" in produced.output and "300 message(s)" in produced.output
    assert len(end_offsets(kafka_env, name)) == 3
    run = runner.invoke(cli, ["stream", "run", "--topic", name, "--table", "cli_events", "--until-caught-up"])
    assert run.exit_code == 0, run.output
    assert "300 row(s)" in run.output and "caught up" in run.output
    assert sorted(read_table("cli_events").column("id").to_pylist()) == list(range(300))
    # Parquet and CSV rows become the same JSON messages.
    pacsv.write_csv(read_table("cli_events").select(["id", "user", "amount", "ts"]), tmp_path / "e.csv")
    topic = new_topic(1)
    assert produce_file(kafka_env, topic, tmp_path / "e.csv", key="user") == 300
    ingest_stream(topic, "from_csv", bootstrap=kafka_env, until_caught_up=True)
    assert sorted(read_table("from_csv").column("id").to_pylist()) == list(range(300))


def test_bootstrap_resolution_and_detached_broker(
    lakebed_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAKEBED_KAFKA_BOOTSTRAP", raising=False)
    reset_config()
    with pytest.raises(BrokerError, match="lakebed broker start"):
        ensure_bootstrap(get_config())
    info, started = start_detached(get_config())
    try:
        assert started and read_broker_file(get_config()) == info
        assert ensure_bootstrap(get_config()) == info.bootstrap
        assert start_detached(get_config()) == (info, False)  # idempotent
        with embedded_bootstrap(get_config()) as bootstrap:  # reuses the running one
            assert bootstrap == info.bootstrap
        create_topic(info.bootstrap, "alive", 1)
    finally:
        assert stop_detached(get_config()) == info
    assert read_broker_file(get_config()) is None
    with pytest.raises(BrokerError):
        ensure_bootstrap(get_config())
    # The in-process helper starts a broker for the block, published for child processes.
    with embedded_bootstrap(get_config()) as bootstrap:
        assert ensure_bootstrap(get_config()) == bootstrap
        create_topic(bootstrap, "temporary", 1)
    assert read_broker_file(get_config()) is None
    monkeypatch.setenv("LAKEBED_KAFKA_BOOTSTRAP", "kafka.example:9092")
    reset_config()
    assert ensure_bootstrap(get_config()) == "kafka.example:9092"


def test_embedded_broker_context_manager() -> None:
    with EmbeddedBroker() as broker:
        assert broker.running and broker.bootstrap.startswith("127.0.0.1:")
        pid = broker.pid
    assert not broker.running and pid is not None


@pytest.fixture(autouse=True)
def _no_stray_kafka_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LAKEBED_KAFKA_BOOTSTRAP", raising=False)
    reset_config()
    yield
