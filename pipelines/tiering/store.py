"""Data files into a cold tier, each one verified against what the store then holds.

* ``file://``: the kernel copies the bytes (``shutil.copyfile``); the copy is verified by its size, the row
  count in its Parquet footer and a SHA-256 of that footer (every column chunk's offset, size and
  statistics), read back from the copy and compared with the source's.
* ``s3://``: one PUT per file carrying a SHA-256 of its bytes, which the store checks on receipt and keeps;
  the copy is verified by a HEAD request (the size and that checksum).

A mismatch is a :class:`TierError` naming the file, what was sent and what the store holds.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pyarrow as pa

from lakebed.config import LakebedConfig
from lakebed.errors import TierError
from lakebed.storage import local_path

T = TypeVar("T")


@dataclass(frozen=True)
class Copied:
    """A data file in the cold store: its path in the table, size, rows and checksum."""

    path: str
    size: int
    rows: int
    checksum: str


class ColdFiles(Protocol):
    def copy(self, source: Path, path: str, rows: int) -> Copied:
        """Copy the local data file ``source`` (holding ``rows`` rows) to ``path`` in the cold table."""

    def write(self, data: bytes, path: str, rows: int) -> Copied:
        """Store a Parquet file's bytes at ``path`` in the cold table."""


def cold_files(uri: str, config: LakebedConfig) -> ColdFiles:
    """The writer of data files for the cold table at ``uri``."""
    if uri.startswith("s3://"):
        return _S3Files(uri, config)
    return _LocalFiles(local_path(uri).resolve())


PARALLEL_COPIES = 4  # files copied to (and verified in) the cold store at once
_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def in_parallel(tasks: Sequence[Callable[[], T]]) -> Iterator[T]:
    """Run ``tasks`` on the process's copy threads (started once), yielding their results in order. When
    one fails (or the caller stops), the tasks not started are cancelled and the running ones waited for,
    so nothing is still writing to the store once the error is seen."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(PARALLEL_COPIES, thread_name_prefix="lakebed-tier")
        pool = _POOL
    futures = [pool.submit(task) for task in tasks]
    try:
        for future in futures:
            yield future.result()
    finally:
        for future in futures:
            future.cancel()
        concurrent.futures.wait(futures)


def store_errors() -> tuple[type[BaseException], ...]:
    """What a failing store raises: OSError, and botocore's errors (unreachable endpoint, missing bucket,
    refused credentials)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, BotoCoreError, ClientError)


def footer(data: Any, size: int) -> tuple[int, str]:
    """The row count in a Parquet file's footer and a SHA-256 of the footer (its metadata, length and magic
    bytes), from reads of the file's tail. ``data`` is a binary file object or bytes."""
    import pyarrow.parquet as pq

    def tail(start: int) -> bytes:
        if isinstance(data, bytes | bytearray | memoryview):
            return bytes(data[start:size])
        data.seek(start)
        chunk: bytes = data.read(size - start)
        return chunk

    end = tail(max(0, size - (64 << 10)))
    length = int.from_bytes(end[-8:-4], "little")
    if length + 8 > len(end):
        end = tail(size - 8 - length)
    meta = end[-(length + 8) :]
    rows = pq.ParquetFile(pa.BufferReader(b"PAR1" + meta)).metadata.num_rows
    return rows, "footer:" + hashlib.sha256(meta).hexdigest()


def _verify(sent: Copied, stored: Copied) -> Copied:
    if stored != sent:
        raise TierError(
            f"verification failed for {sent.path}: copied {sent.size:,} bytes, {sent.rows:,} rows, checksum "
            f"{sent.checksum}; the cold store holds {stored.size:,} bytes, {stored.rows:,} rows, checksum "
            f"{stored.checksum}; hot data untouched"
        )
    return stored


class _LocalFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def _replacing(self, path: str) -> Iterator[Path]:
        """A temporary file that then takes ``path``'s place at once: a reader (or a mover that copied the
        same file first) never sees a file half written."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")  # not hidden: vacuum sees it
        try:
            yield partial
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def copy(self, source: Path, path: str, rows: int) -> Copied:
        with self._replacing(path) as partial:
            shutil.copyfile(source, partial)
        size = source.stat().st_size
        with open(source, "rb") as handle:
            return _verify(Copied(path, size, *footer(handle, size)), self._stored(path))

    def write(self, data: bytes, path: str, rows: int) -> Copied:
        with self._replacing(path) as partial:
            partial.write_bytes(data)
        return _verify(Copied(path, len(data), *footer(data, len(data))), self._stored(path))

    def _stored(self, path: str) -> Copied:
        target = self.root / path
        if not target.is_file():
            return Copied(path, -1, -1, "missing")
        size = target.stat().st_size
        with open(target, "rb") as handle:
            return Copied(path, size, *footer(handle, size))


_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child has none of the parent's threads (nor safe copies of its connections)."""
    global _POOL, _POOL_LOCK, _CLIENTS_LOCK
    _POOL, _POOL_LOCK, _CLIENTS_LOCK = None, threading.Lock(), threading.Lock()
    _CLIENTS.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _client(config: LakebedConfig) -> Any:
    """A boto3 S3 client for ``config``'s settings, made once per process (making one takes ~20 ms;
    clients are thread-safe)."""
    import boto3

    settings = config.s3.to_boto3_kwargs()
    key = tuple(sorted(settings.items()))
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = boto3.client("s3", **settings)
        return _CLIENTS[key]


class _S3Files:
    def __init__(self, uri: str, config: LakebedConfig) -> None:
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.bucket, self.prefix = bucket, prefix.rstrip("/")
        self.client = _client(config)

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def copy(self, source: Path, path: str, rows: int) -> Copied:
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
            handle.seek(0)  # the body is streamed from the file: a file of any size needs little memory
            return self._put(handle, source.stat().st_size, digest, path, rows)

    def write(self, data: bytes, path: str, rows: int) -> Copied:
        return self._put(data, len(data), hashlib.sha256(data), path, rows)

    def _put(self, body: Any, size: int, digest: Any, path: str, rows: int) -> Copied:
        sent = base64.b64encode(digest.digest()).decode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(path),
            Body=body,
            ContentLength=size,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=sent,
        )
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(path), ChecksumMode="ENABLED")
        checksum = head.get("ChecksumSHA256")
        # Equal checksums mean equal bytes: the rows stored are the rows sent.
        stored = Copied(path, int(head["ContentLength"]), rows, f"sha256:{checksum}" if checksum else "none")
        return _verify(Copied(path, size, rows, f"sha256:{sent}"), stored)
