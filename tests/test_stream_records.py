"""The stream worker's lean record unpacking gives exactly kafka-python's records, positions and errors."""

from __future__ import annotations

import random

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.structs import TopicPartition

from lakebed.pipelines.stream.records import LeanPartitionRecords


def _build(n: int, *, compression: int = 0, headers: bool = False, base: int = 0, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    builder = MemoryRecordsBuilder(magic=2, compression_type=compression, batch_size=1 << 30, offset=base)
    for i in range(n):
        key = None if i % 5 == 0 else (b"k%d" % i) * rnd.randint(0, 70)
        value = (
            None if i % 11 == 3 else bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 5, 100, 300])))
        )
        hs = (
            [(f"h{j}", None if j == 1 else b"v" * j * 40) for j in range(rnd.randint(0, 3))]
            if headers
            else []
        )
        builder.append(
            timestamp=1_700_000_000_000 + rnd.randint(0, 100_000), key=key, value=value, headers=hs
        )
    builder.close()
    return bytes(builder.buffer())


def _unpack(cls: type, buf: bytes, fetch_offset: int = 0) -> object:
    part = cls(fetch_offset, TopicPartition("t", 3), MemoryRecords(buf), on_drain=lambda _: None)
    out = []
    while part:
        try:
            got = part.take(7)
        except Exception as exc:  # noqa: BLE001 - the error itself is compared
            out.append((type(exc).__name__, str(exc)))
            break
        out.append((got, part.next_fetch_offset, part.records_read, part.bytes_read))
        if not got:
            break
    return out


@pytest.mark.parametrize("compression", [0, 1])
@pytest.mark.parametrize("headers", [False, True])
@pytest.mark.parametrize("fetch_offset", [0, 5, 100])
def test_same_records_as_kafka_python(compression: int, headers: bool, fetch_offset: int) -> None:
    buf = _build(300, compression=compression, headers=headers, base=5, seed=compression)
    assert _unpack(LeanPartitionRecords, buf, fetch_offset) == _unpack(
        Fetcher.PartitionRecords, buf, fetch_offset
    )


def test_several_batches() -> None:
    buf = _build(100) + _build(100, headers=True, base=100, seed=1)
    assert _unpack(LeanPartitionRecords, buf) == _unpack(Fetcher.PartitionRecords, buf)


def test_same_errors_for_corrupt_records() -> None:
    base = _build(20, headers=True)
    for i in range(61, len(base), 7):
        for byte in (0, 0x7F, 0x80, 0xFF):
            corrupt = bytearray(base)
            corrupt[i] = byte
            assert _unpack(LeanPartitionRecords, bytes(corrupt)) == _unpack(
                Fetcher.PartitionRecords, bytes(corrupt)
            )
