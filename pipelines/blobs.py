"""A content-addressed store of bytes by sha256: the blob store that unstructured ingest keeps beside a table.

Each blob is a file ``<root>/<sha256[:2]>/<sha256>``. Bytes are written to a temp file under ``<root>/.tmp``,
fsynced, then hard-linked into place (renamed on a file system without hard links), so a blob appears whole
or not at all and an existing blob is never rewritten; blobs are made read-only and nothing here deletes
them. The store checks nothing about the bytes it is given: callers hash them (:meth:`BlobStore.spool` hashes
while it copies) and :func:`~lakebed.pipelines.unstructured.read_content` verifies what it reads back.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

from lakebed.errors import LakebedError

_CHUNK = 1 << 20


class BlobTooLargeError(LakebedError):
    """A stream given to :meth:`BlobStore.spool` holds more than its limit; ``size`` is what was read."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(f"more than the {limit:,}-byte limit")
        self.size = size


class BlobStore:
    """Content-addressed files ``<root>/<sha256[:2]>/<sha256>``: written once, atomically, read-only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: set[str] = set()
        self._listed = False

    @classmethod
    def beside(cls, table_uri: str, table: str) -> BlobStore:
        """The store of ``table``: a ``<table>__blobs`` folder next to the table's folder."""
        parsed = urlparse(table_uri)
        if parsed.scheme in ("", "file"):
            local = Path(unquote(parsed.path)) if parsed.scheme else Path(table_uri)
            return cls(local.parent / f"{table}__blobs")
        raise LakebedError(
            f"table {table!r} lives at {table_uri}: unstructured ingest keeps its blob store beside the "
            "table and needs a local table location"
        )

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        if sha256 in self._known:
            return True
        if self._listed:  # listed once: only blobs added since (by another writer) need a look
            return False
        if self.path(sha256).is_file():
            self._known.add(sha256)
            return True
        return False

    def list_known(self) -> None:
        """Read the store's listing once, so :meth:`exists` answers from memory (a run over many files
        saves a ``stat`` per file). A blob another writer adds later reads as missing: putting it again
        is harmless (an existing blob is never rewritten)."""
        known: set[str] = set()
        try:
            folders = [e for e in os.scandir(self.root) if e.is_dir() and len(e.name) == 2]
        except FileNotFoundError:
            folders = []
        for folder in folders:
            known.update(e.name for e in os.scandir(folder.path) if e.name.startswith(folder.name))
        self._known |= known
        self._listed = True

    def read(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def spool(self, handle: IO[bytes], limit: int, head_size: int) -> tuple[Path, str, int, bytes]:
        """Copy a stream to a temp file in the store while hashing it: (temp path, sha256, size, head), where
        head is the first ``head_size`` bytes. Raises :class:`BlobTooLargeError` (and removes the temp file)
        as soon as more than ``limit`` bytes arrive; the caller adopts or removes the temp file otherwise."""
        temp = self._temp()
        digest, size, head = hashlib.sha256(), 0, b""
        try:
            with open(temp, "wb") as out:
                while chunk := handle.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise BlobTooLargeError(limit, size)
                    if len(head) < head_size:
                        head += chunk[: head_size - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp, digest.hexdigest(), size, head

    def put(self, sha256: str, data: bytes) -> bool:
        """Store bytes under their hash; False when the blob was already there."""
        if self.exists(sha256):
            return False
        temp = self._temp()
        try:
            with open(temp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return self.adopt(temp, sha256)

    def adopt(self, temp: Path, sha256: str) -> bool:
        """Move a complete temp file to its content address (never replacing an existing blob)."""
        target = self.path(sha256)
        written = False
        try:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(temp, 0o444)
                try:
                    os.link(temp, target)
                    written = True
                except FileExistsError:
                    pass
                except OSError:  # a file system without hard links: rename (same folder tree, atomic)
                    os.replace(temp, target)
                    written = True
        finally:
            temp.unlink(missing_ok=True)
        self._known.add(sha256)
        return written

    def _temp(self) -> Path:
        folder = self.root / ".tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.part"


__all__ = ["BlobStore", "BlobTooLargeError"]
