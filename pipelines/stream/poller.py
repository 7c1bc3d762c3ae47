"""A background thread that polls a Kafka consumer into a small bounded queue.

Polling with kafka-python is pure-Python work; decoding (``pyarrow.json``) and the Delta commit (delta-rs)
mostly run without the GIL. A :class:`Poller` lets the next micro-batch be fetched while the worker
decodes and commits the current one.

The rules that keep exactly-once simple: while a poller runs, only its thread touches the consumer
(kafka-python consumers are not thread-safe), so the worker seeks, reads positions or closes the consumer
only after :meth:`Poller.stop`, which joins the thread and drops everything it buffered. A poller
therefore only ever runs between two explicit seeks: after a re-seek from Delta the worker starts a fresh
one, and nothing polled before the seek can reach a batch. Manual assignment only: in group mode the
rebalance callbacks run inside ``poll()`` and the worker polls on its own thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from kafka import KafkaConsumer

from lakebed.pipelines.stream.batch import Polled

# One item of the queue: the records of one poll; after a poll that returned nothing (when asked for),
# the consumer's position of each assigned partition (offsets may have gaps, e.g. transaction markers, so
# the position tells whether a partition reached its end); and the high watermark of each partition the
# fetches have seen (the end offsets the lag metrics measure against).
Item = tuple[list[Polled], dict[int, int] | None, dict[int, int]]
_PUT_WAIT = 0.05  # seconds between checks of the stop flag while the queue is full


class Poller:
    """Polls ``consumer`` on a daemon thread into a queue of at most ``capacity`` polls of at most
    ``max_records`` records each (memory stays bounded however far behind the worker is)."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        *,
        max_records: int,
        capacity: int,
        timeout_ms: int = 50,
        positions: bool = False,
    ) -> None:
        self.consumer = consumer
        self.max_records = max(1, max_records)
        self.capacity = max(1, capacity)
        self.timeout_ms = timeout_ms
        self.positions = positions
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._queue: queue.Queue[Item | BaseException] = queue.Queue(self.capacity)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        # A fresh flag and queue per run: a thread being stopped can never reach the next run's queue.
        self._halt = threading.Event()
        self._queue = queue.Queue(self.capacity)
        self._thread = threading.Thread(
            target=self._run, args=(self._halt, self._queue), name="lakebed-stream-poller", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, wait for the thread and drop whatever it buffered (thread-safe to call twice)."""
        thread = self._thread
        if thread is None:
            return
        self._halt.set()
        thread.join()
        self._thread = None
        self._queue = queue.Queue(self.capacity)

    def get(self, timeout: float) -> Item | None:
        """The next poll's records (None if nothing came within ``timeout`` seconds); re-raises an
        error of the polling thread."""
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self.stop()
            raise item
        return item

    def _run(self, halt: threading.Event, out: queue.Queue[Item | BaseException]) -> None:
        consumer = self.consumer
        try:
            while not halt.is_set():
                polled = consumer.poll(timeout_ms=self.timeout_ms, max_records=self.max_records)
                if halt.is_set():
                    return  # stopped (a re-seek is coming): these records must not reach a batch
                chunks = [Polled.of(tp.partition, records) for tp, records in polled.items() if records]
                del polled
                positions = None
                if not chunks and self.positions:
                    positions = {tp.partition: consumer.position(tp) for tp in consumer.assignment()}
                if not chunks and positions is None:
                    continue
                _put(out, (chunks, positions, highwaters(consumer)), halt)
        except BaseException as exc:  # handed to the worker, which raises it
            _put(out, exc, halt)


def highwaters(consumer: KafkaConsumer) -> dict[int, int]:
    """The high watermark (end offset) of each assigned partition the consumer's fetches have seen."""
    marks = {tp.partition: consumer.highwater(tp) for tp in consumer.assignment()}
    return {p: int(mark) for p, mark in marks.items() if mark is not None}


def _put(out: queue.Queue[Any], item: Any, halt: threading.Event) -> None:
    while not halt.is_set():
        try:
            out.put(item, timeout=_PUT_WAIT)
            return
        except queue.Full:
            continue


__all__ = ["Item", "Poller", "highwaters"]
