"""Kafka → Delta stream ingest benchmarks, against the embedded Tansu broker started for the run.

``stream_ingest``: 500k small JSON messages (``--quick``: 50k) over 4 partitions of one topic, read
alternately by a bare kafka-python consumer that only polls (manual assignment of every partition, seek
to the beginning, count records until all are seen; the same consumer settings lakebed uses) and by
lakebed's ``ingest_stream(topic, table, until_caught_up=True)`` into a fresh lakebed home (decode with
pyarrow.json, Kafka columns, one fenced Delta commit per micro-batch). Each round is a pair; the ratio
is the median over the pairs of lakebed / baseline in messages/s, with its min–max. Target: lakebed ≥ 0.9 × the bare consumer.
``stream_ingest_group``: the same pairs with both sides joining a new consumer group each round
(subscribe instead of manual assignment; a single member is given every partition); same target.

``stream_peak_rss``: the same ingest in a child process for N and 10×N messages (N = 50k; ``--quick``:
5k). The peak RSS of each is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` read by a small launcher whose only
child is the ingest (see ``bench._rss_child`` for why). Each round runs both sizes (alternating which
goes first) and is one pair. Memory must stay flat as the topic grows: target median over the pairs of
peak(10×N) / peak(N) ≤ 1.3 (lower is better).

``python -m bench.stream_ingest [launch] BOOTSTRAP TOPIC HOME`` is the child (``launch`` = the launcher).
"""

from __future__ import annotations

import atexit
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import (
    BenchOptions,
    ChildRun,
    RoundTimes,
    isolated_config,
    lakebed_home,
    launch_worker,
    log,
    report,
    report_work,
    run_rss_child,
    timed,
)

if TYPE_CHECKING:
    from lakebed.broker import EmbeddedBroker

BASELINE_NAME = "bare kafka-python consumer"
PARTITIONS = 4
THROUGHPUT_MESSAGES = 500_000
THROUGHPUT_MESSAGES_QUICK = 50_000
RSS_MESSAGES = 50_000
RSS_MESSAGES_QUICK = 5_000
THROUGHPUT_TARGET = 0.90
RSS_RATIO_TARGET = 1.30
TABLE = "events_bench"

# --- one broker and the produced topics, shared by both benchmarks of a run ------------------------


class _Kafka:
    """The broker of this bench run and the topics produced on it (produced once, reused)."""

    def __init__(self) -> None:
        self.broker: EmbeddedBroker | None = None
        self.topics: dict[int, str] = {}

    @property
    def bootstrap(self) -> str:
        if self.broker is None or not self.broker.running:
            from lakebed.broker import EmbeddedBroker

            self.broker = EmbeddedBroker().start()
            self.topics.clear()
            atexit.register(self.broker.stop)
            log(f"  embedded Tansu broker at {self.broker.bootstrap} (pid {self.broker.pid})")
        return self.broker.bootstrap

    def topic(self, messages: int) -> str:
        """A topic holding ``messages`` small JSON messages over :data:`PARTITIONS` partitions."""
        if messages not in self.topics:
            from lakebed.pipelines.stream.kafka import create_topic, produce_records

            bootstrap = self.bootstrap
            name = f"bench-{messages}"
            create_topic(bootstrap, name, PARTITIONS)
            seconds, sent = timed(lambda: produce_records(bootstrap, name, _messages(messages), key=_key))
            log(f"  produced {sent:,} messages to {name} in {seconds:.1f} s ({sent / seconds:,.0f} msg/s)")
            self.topics[messages] = name
        return self.topics[messages]


_KAFKA = _Kafka()


def _messages(count: int) -> list[bytes]:
    """Small JSON events (~100 bytes), the shape a clickstream or payments topic carries."""
    return [
        b'{"id":%d,"user":"u%d","amount":%d.%02d,"ts":"2025-03-01T%02d:%02d:%02dZ","kind":"%s"}'
        % (
            i,
            i % 1009,
            i % 997,
            i % 100,
            (i // 3600) % 24,
            (i // 60) % 60,
            i % 60,
            (b"view", b"buy")[i % 7 == 0],
        )
        for i in range(count)
    ]


def _key(value: bytes) -> bytes:
    return value[value.index(b'"user":') + 8 : value.index(b'","amount"')]


# --- throughput ---------------------------------------------------------------------------------------


def _bare_consume(bootstrap: str, topic: str, expected: int, group: str | None = None) -> int:
    """The baseline: poll every record of the topic and count it, nothing else (with ``group``: as a
    member of that new consumer group, subscribed to the topic, instead of assigning every partition)."""
    from kafka import TopicPartition

    from lakebed.pipelines.stream.kafka import new_consumer, partitions_of

    consumer = new_consumer(bootstrap, group=group)
    try:
        if group is None:
            tps = [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
        else:
            consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 600
        while seen < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                seen += len(records)
        return seen
    finally:
        consumer.close(autocommit=False)


def _run_baseline(bootstrap: str, topic: str, expected: int, group: str | None) -> tuple[float, int]:
    return timed(lambda: _bare_consume(bootstrap, topic, expected, group))


def _run_lakebed(bootstrap: str, topic: str, home: Path, group: str | None) -> tuple[float, int]:
    from lakebed.pipelines.stream.ingest import ingest_stream

    with lakebed_home(home) as config:
        seconds, result = timed(
            lambda: ingest_stream(
                topic, TABLE, bootstrap=bootstrap, group=group, until_caught_up=True, config=config
            )
        )
        if result.dead_letters:
            raise RuntimeError(f"{result.dead_letters} dead letters in a clean topic")
    return seconds, result.records


def _throughput(opts: BenchOptions, name: str, topic: str, messages: int, *, groups: bool) -> str:
    """Alternating pairs of the bare consumer and lakebed's ingest; with ``groups`` both join a new
    consumer group each round (one member: it is given every partition)."""
    bootstrap = _KAFKA.bootstrap
    times = RoundTimes(name, "msg/s", BASELINE_NAME, THROUGHPUT_TARGET, opts.quick)
    for round_no in range(1, opts.rounds + 1):
        group = f"bench-bare-{round_no}-{time.time_ns()}" if groups else None
        seconds, seen = _run_baseline(bootstrap, topic, messages, group)
        if seen != messages:
            raise RuntimeError(f"the bare consumer saw {seen:,} of {messages:,} messages")
        times.record("baseline", round_no, seconds, f"{messages / seconds:9,.0f} msg/s")
        group = f"bench-lakebed-{round_no}-{time.time_ns()}" if groups else None
        seconds, rows = _run_lakebed(bootstrap, topic, opts.workdir / "lakebed_home", group)
        if rows != messages:
            raise RuntimeError(f"lakebed wrote {rows:,} rows for {messages:,} messages")
        times.record("lakebed", round_no, seconds, f"{messages / seconds:9,.0f} msg/s  {rows:,} rows")
    return times.summary(messages)


def run_throughput(opts: BenchOptions) -> str:
    messages = THROUGHPUT_MESSAGES_QUICK if opts.quick else THROUGHPUT_MESSAGES
    log(f"stream_ingest{opts.label}: Kafka → Delta, lakebed ingest vs {BASELINE_NAME}, {messages:,} messages")
    bootstrap = _KAFKA.bootstrap
    topic = _KAFKA.topic(messages)
    # Untimed warm-up of both paths (imports, first connections) on a small topic.
    warm = _KAFKA.topic(2_000)
    _run_baseline(bootstrap, warm, 2_000, None)
    _run_lakebed(bootstrap, warm, opts.workdir / "warmup_home", None)
    single = _throughput(opts, "stream_ingest", topic, messages, groups=False)
    log(single)
    log(f"stream_ingest_group{opts.label}: the same, both as a member of a new consumer group")
    grouped = _throughput(opts, "stream_ingest_group", topic, messages, groups=True)
    return f"{single}\n{grouped}"


# --- peak RSS -----------------------------------------------------------------------------------------


def _run_child(bootstrap: str, topic: str, home: Path) -> ChildRun:
    return run_rss_child("bench.stream_ingest", [bootstrap, topic, str(home)], home, what="stream ingest")


def run_peak_rss(opts: BenchOptions) -> str:
    small = RSS_MESSAGES_QUICK if opts.quick else RSS_MESSAGES
    large = 10 * small
    log(f"stream_peak_rss{opts.label}: peak RSS of a child ingesting {small:,} vs {large:,} messages")
    bootstrap = _KAFKA.bootstrap
    ratios: list[float] = []
    peaks: dict[int, list[float]] = {small: [], large: []}
    for round_no in range(1, opts.rounds + 1):
        runs: dict[int, ChildRun] = {}
        # Alternate which size goes first.
        for messages in (small, large) if round_no % 2 else (large, small):
            run = _run_child(bootstrap, _KAFKA.topic(messages), opts.workdir / f"rss_{messages}")
            if run.rows != messages:
                raise RuntimeError(f"the child wrote {run.rows:,} rows for {messages:,} messages")
            runs[messages] = run
            peaks[messages].append(run.peak_rss_kib / 1024)
            log(
                f"  round {round_no} {messages:>9,} messages: peak RSS {run.peak_rss_kib / 1024:6.0f} MiB "
                f"(VmHWM {run.hwm_text}), {run.seconds:6.2f} s ({messages / run.seconds:,.0f} msg/s)"
            )
        ratios.append(runs[large].peak_rss_kib / runs[small].peak_rss_kib)
    return report(
        "stream_peak_rss",
        ratios,
        target=RSS_RATIO_TARGET,
        better="lower",
        detail=f"peak RSS at {large:,} / at {small:,} messages per pair (median "
        f"{statistics.median(peaks[large]):,.0f} vs {statistics.median(peaks[small]):,.0f} MiB)",
        quick=opts.quick,
    )


# --- the child ----------------------------------------------------------------------------------------


def _work(bootstrap: str, topic: str, home: Path) -> int:
    from lakebed.pipelines.stream.ingest import ingest_stream

    return report_work(
        lambda: (
            ingest_stream(
                topic,
                TABLE,
                bootstrap=bootstrap,
                until_caught_up=True,
                config=isolated_config(home.resolve()),
            ).records
        )
    )


def main(argv: list[str]) -> int:
    launch = bool(argv) and argv[0] == "launch"
    args = argv[1:] if launch else argv
    if len(args) != 3:
        print("usage: python -m bench.stream_ingest [launch] BOOTSTRAP TOPIC HOME", file=sys.stderr)
        return 2
    return launch_worker("bench.stream_ingest", args) if launch else _work(args[0], args[1], Path(args[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
