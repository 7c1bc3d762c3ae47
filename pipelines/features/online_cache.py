"""The online store's rows kept in memory by one process, never staler than the database.

A point lookup in SQLite costs 7–20 µs (the lower figure in a tight loop, the higher inside a server,
whose networking evicts the caches SQLite's pages need); a model's requests keep asking for the same hot
entities. :class:`RowCache` keeps the rows already read, and gives them out only while the database is
unchanged since they were read. It knows that from the header of SQLite's WAL index: the ``-shm`` file
next to a WAL database, which every connection of every process maps and which every commit rewrites
(its change counter, its count of WAL frames and the WAL's salts sit in the first 48 bytes). Comparing
those bytes with the ones seen when the cached rows were read costs well under a microsecond; any
difference, i.e. any commit by any connection, empties the cache. So a cached read answers exactly what a
database read would have answered at that moment.

The cache holds a connection of its own open for as long as it maps the file: SQLite deletes the ``-shm``
file when the last connection to the database closes, and a new one would be a new file, which an old
mapping would never see change.

The WAL index layout is documented (https://sqlite.org/walformat.html, "The WAL-Index Format") and
shared by every SQLite version that opens the same database at the same time, so it does not change
between versions. Without a WAL index to map (another journal mode, an exclusive lock, a closed store)
there is no cache: every read goes to the database.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
from pathlib import Path
from typing import Any

HEADER_BYTES = 48
"""The WAL index header: ``iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame, nPage,
aFrameCksum[2], aSalt[2], aCksum[2]`` (writers update its second copy, then this first one)."""


class RowCache:
    """Rows by key, at most ``capacity`` of them (the oldest are dropped first), valid while the WAL
    index header of the database at ``path`` is unchanged. Thread-safe for the store's uses: each change
    of the database starts a new dict, so a row read before the change and stored after it lands in the
    old dict, which no later lookup sees."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.capacity = capacity
        self._db_path = path
        self._shm_path = Path(f"{path}-shm")
        self._map: mmap.mmap | None = None
        self._pin: sqlite3.Connection | None = None
        self._seen = b""
        self._rows: dict[Any, Any] = {}

    def rows(self) -> dict[Any, Any] | None:
        """The rows valid now (emptied if the database changed since the last call); None when the WAL
        index cannot be mapped (call again once a connection has opened the database in WAL mode)."""
        index = self._map
        if index is None:
            index = self._map = self._open()
            if index is None:
                return None
        header = index[:HEADER_BYTES]
        if header != self._seen:
            self._rows = {}
            self._seen = header
        return self._rows

    def keep(self, rows: dict[Any, Any], key: Any, row: Any) -> None:
        """Keep ``row`` under ``key`` in ``rows`` (a dict :meth:`rows` gave before the row was read)."""
        if len(rows) >= self.capacity:
            # KeyError, RuntimeError: another thread got there first.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del rows[next(iter(rows))]
        rows[key] = row

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._pin is not None:
            self._pin.close()
            self._pin = None
        self._rows, self._seen = {}, b""

    def _open(self) -> mmap.mmap | None:
        """Map the WAL index, after opening the connection that keeps it in place (a read makes SQLite
        open the index); None, with nothing left open, when there is no WAL index to map."""
        if self.capacity <= 0:
            return None
        pin = None
        try:
            pin = sqlite3.connect(self._db_path, check_same_thread=False, isolation_level=None)
            if pin.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                raise OSError("not a WAL database")
            pin.execute("SELECT count(*) FROM sqlite_master").fetchone()
            descriptor = os.open(self._shm_path, os.O_RDONLY)
            try:
                if os.fstat(descriptor).st_size < 2 * HEADER_BYTES:
                    raise OSError("the WAL index is not initialised")
                index = mmap.mmap(descriptor, 2 * HEADER_BYTES, access=mmap.ACCESS_READ)
            finally:
                os.close(descriptor)
        except (OSError, ValueError, sqlite3.Error):
            if pin is not None:
                pin.close()
            return None
        self._pin = pin
        return index


__all__ = ["HEADER_BYTES", "RowCache"]
