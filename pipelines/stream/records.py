"""Leaner unpacking of fetched Kafka records for the stream ingest worker's consumer.

kafka-python turns every record of a fetched batch into a ``DefaultRecord`` (seven varint calls and
a dozen property reads) and then into a ``ConsumerRecord``; that per-record Python work is most of
what polling costs. :class:`LeanPartitionRecords` reads the records of a message-format-v2 batch
straight from the batch's (decompressed) buffer in one loop and builds the same ``ConsumerRecord``
values, field for field: topic, partition, leader epoch, offset, timestamp (``LogAppendTime``: the
batch's max timestamp), timestamp type, key, value, headers, checksum (None in v2) and the key, value
and header sizes. Everything around the records is kafka-python's own logic, unchanged: CRC checks of
each batch, aborted transactions and control batches (``read_committed``), the fetch position
(``next_fetch_offset`` after every record), the fetch metrics and the errors for a corrupt record.
Legacy batches (magic 0/1) and consumers with key or value deserializers take kafka-python's path.

:func:`install_lean_records` puts it on one consumer (its fetcher's ``PartitionRecords``); other
consumers in the process are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

log = logging.getLogger(__name__)

_LOG_APPEND_TIME = DefaultRecordBatch.LOG_APPEND_TIME


class LeanPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's ``PartitionRecords`` with the records of v2 batches unpacked in one loop."""

    def _unpack_records(
        self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
    ) -> Iterator[Any]:
        if key_deserializer is not None or value_deserializer is not None:
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        try:
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch

                if self.check_crcs and not batch.validate_crc():
                    raise kafka_errors.CorruptRecordError(
                        f"Record batch for partition {self.topic_partition} at offset "
                        f"{batch.base_offset} failed crc check"
                    )

                if batch.magic == 2:
                    self.leader_epoch = batch.leader_epoch
                    if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
                        self._consume_aborted_transactions_up_to(batch.last_offset)
                        producer_id = batch.producer_id
                        if self._contains_abort_marker(batch):
                            self.aborted_producer_ids.discard(producer_id)
                        elif self._is_batch_aborted(batch):
                            log.debug(
                                "Skipping aborted record batch from partition %s with producer_id %s "
                                "and offsets %s to %s",
                                self.topic_partition,
                                producer_id,
                                batch.base_offset,
                                batch.last_offset,
                            )
                            self.next_fetch_offset = batch.next_offset
                            batch = records.next_batch()
                            continue

                    # Control batches hold one record (a transaction marker): never returned.
                    if batch.is_control_batch:
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue

                if type(batch) is DefaultRecordBatch:
                    yield from self._v2_records(tp, batch)
                else:
                    yield from self._legacy_records(tp, batch)

                batch = records.next_batch()
            else:
                # Message format v2 keeps the last offset of a batch even if compaction removed the
                # last record: the next fetch starts after the batch.
                if last_batch and last_batch.magic == 2:
                    self.next_fetch_offset = last_batch.next_offset
                self.drain()
        except StopIteration:
            log.exception("StopIteration raised unpacking messageset")
            raise RuntimeError("StopIteration raised unpacking messageset") from None

    def _legacy_records(self, tp: Any, batch: Any) -> Iterator[Any]:
        """kafka-python's record loop, for batches of the legacy message formats."""
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise kafka_errors.CorruptRecordError(
                    f"Record for partition {self.topic_partition} at offset {record.offset} failed crc check"
                )
            key = record.key
            value = record.value
            headers = record.headers
            header_size = (
                sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers)
                if headers
                else -1
            )
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(
                tp.topic,
                tp.partition,
                self.leader_epoch,
                record.offset,
                record.timestamp,
                record.timestamp_type,
                key,
                value,
                record.headers,
                record.checksum,
                len(key) if key is not None else -1,
                len(value) if value is not None else -1,
                header_size,
            )

    def _v2_records(self, tp: Any, batch: DefaultRecordBatch) -> Iterator[Any]:
        """The records of a v2 batch, read from its buffer as ``DefaultRecordBatch`` reads them (same
        values, same ``CorruptRecordError`` for a malformed record)."""
        batch._maybe_uncompress()
        data = bytes(batch._buffer)  # slices of bytes are the key and value objects at once
        pos = batch._pos
        end = len(data)
        count = batch._num_records
        header = batch._header_data
        base_offset = header[0]
        timestamp_type = batch.timestamp_type
        log_append = timestamp_type == _LOG_APPEND_TIME
        first_timestamp = header[7]
        max_timestamp = header[8]
        topic = tp.topic
        partition = tp.partition
        epoch = self.leader_epoch
        varint = decode_varint
        record = ConsumerRecord
        index = 0
        while index < count:
            try:
                # Length, Attributes, TimestampDelta, OffsetDelta, Key, Value, Headers. A one-byte
                # varint (most of them here) is decoded inline: zigzag (b >> 1) ^ -(b & 1).
                b = data[pos]
                if b < 0x80:
                    length = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    length, pos = varint(data, pos)
                body = pos
                b = data[pos]
                if b < 0x80:
                    pos += 1  # attributes: unused
                else:
                    _, pos = varint(data, pos)
                b = data[pos]
                if b < 0x80:
                    ts_delta = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    ts_delta, pos = varint(data, pos)
                b = data[pos]
                if b < 0x80:
                    offset_delta = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    offset_delta, pos = varint(data, pos)
                b = data[pos]
                if b < 0x80:
                    key_len = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    key_len, pos = varint(data, pos)
                if key_len >= 0:
                    key: bytes | None = data[pos : pos + key_len]
                    pos += key_len
                else:
                    key = None
                b = data[pos]
                if b < 0x80:
                    value_len = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    value_len, pos = varint(data, pos)
                if value_len >= 0:
                    value: bytes | None = data[pos : pos + value_len]
                    pos += value_len
                else:
                    value = None
                b = data[pos]
                if b < 0x80:
                    header_count = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    header_count, pos = varint(data, pos)
                if header_count < 0:
                    raise kafka_errors.CorruptRecordError(
                        f"Found invalid number of record headers {header_count}"
                    )
                headers: list[tuple[str, bytes | None]] = []
                header_size = -1
                if header_count:
                    header_size = 0
                    while header_count:
                        h_key_len, pos = varint(data, pos)
                        if h_key_len < 0:
                            raise kafka_errors.CorruptRecordError(
                                f"Invalid negative header key size {h_key_len}"
                            )
                        h_key = data[pos : pos + h_key_len].decode("utf-8")
                        pos += h_key_len
                        h_value_len, pos = varint(data, pos)
                        h_value: bytes | None
                        if h_value_len >= 0:
                            h_value = data[pos : pos + h_value_len]
                            pos += h_value_len
                        else:
                            h_value = None
                        headers.append((h_key, h_value))
                        header_size += len(h_key.encode("utf-8")) + (
                            len(h_value) if h_value is not None else 0
                        )
                        header_count -= 1
                if pos - body != length:
                    raise kafka_errors.CorruptRecordError(
                        f"Invalid record size: expected to read {length} bytes in record payload, but instead "
                        f"read {pos - body}"
                    )
            except kafka_errors.CorruptRecordError:
                raise
            except (ValueError, IndexError) as err:
                raise kafka_errors.CorruptRecordError(f"Found invalid record structure: {err!r}") from None
            index += 1
            offset = base_offset + offset_delta
            self.records_read += 1
            self.bytes_read += length
            self.next_fetch_offset = offset + 1
            yield record(
                topic,
                partition,
                epoch,
                offset,
                max_timestamp if log_append else first_timestamp + ts_delta,
                timestamp_type,
                key,
                value,
                headers,
                None,
                len(key) if key is not None else -1,
                len(value) if value is not None else -1,
                header_size,
            )
        if pos != end:
            raise kafka_errors.CorruptRecordError(f"{end - pos} unconsumed bytes after all records consumed")


def install_lean_records(consumer: KafkaConsumer) -> bool:
    """Make ``consumer`` unpack fetched records with :class:`LeanPartitionRecords` (True if it could:
    the consumer has kafka-python's fetcher)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if not isinstance(fetcher, Fetcher):
        return False
    fetcher.PartitionRecords = LeanPartitionRecords
    return True


__all__ = ["LeanPartitionRecords", "install_lean_records"]
