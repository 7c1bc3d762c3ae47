"""The sources of unstructured ingest: what to ingest, and reading each of it once. :func:`plan_sources`
expands the files, folders, globs and ``.zip`` archives a caller names into a flat, de-duplicated list of
:class:`SourceItem` before anything is read or written (the walking rules are in the docstring of
:mod:`lakebed.pipelines.unstructured`); problems found while planning (a link outside the root, an unlistable
folder, a bad archive, a ``zip_slip`` entry) become items carrying their reject reason, and only a source that
does not exist, or a glob matching nothing, raises :class:`~lakebed.errors.SourceNotFoundError`.
:class:`SourceReader` then reads each item once, within ``max_file_bytes``, hashing it on the way: small files
into memory, large ones spooled into the blob store, raising :class:`RejectedFile` for a file that cannot be
ingested.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lakebed.config import LakebedConfig
from lakebed.errors import SourceNotFoundError
from lakebed.pipelines.blobs import BlobStore, BlobTooLargeError
from lakebed.pipelines.unstructured_extract import SNIFF_BYTES


# Planning ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceItem:
    """One file to ingest: on disk (``path``) or a zip entry (``path`` is the archive), or already rejected."""

    source_path: str
    path: str | None = None
    entry: zipfile.ZipInfo | None = None
    reject: tuple[str, str] | None = None
    size: int | None = None

    @property
    def file_name(self) -> str:
        return self.source_path.rsplit("/", 1)[-1]


def plan_sources(sources: str | Path | Sequence[str | Path]) -> list[SourceItem]:
    """Expand files, folders, globs and zip archives into the files to ingest, de-duplicated, in order."""
    given = [sources] if isinstance(sources, str | Path) else list(sources)
    if not given:
        raise SourceNotFoundError("no sources given")
    items: dict[str, SourceItem] = {}
    for source in given:
        text = os.fspath(source)
        if os.path.exists(text):
            path = os.path.abspath(text)
            if os.path.isdir(path):
                root = os.path.realpath(path)
                _add_tree(path, root, items, frozenset({root}))
            else:
                _add_file(path, items)
        elif any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise SourceNotFoundError("glob matches nothing", path=text)
            root = os.path.realpath(_glob_base(text))
            for match in matches:
                path, real = os.path.abspath(match), os.path.realpath(match)
                if not _within(real, root):
                    items[path] = SourceItem(
                        path, reject=("symlink_outside_root", f"resolves to {real}, outside {root}")
                    )
                elif os.path.isdir(path):
                    _add_tree(path, root, items, frozenset({real}))
                else:
                    _add_file(path, items)
        else:
            raise SourceNotFoundError("no such file or folder", path=text)
    return list(items.values())


def _add_tree(folder: str, root: str, items: dict[str, SourceItem], ancestors: frozenset[str]) -> None:
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        items[folder] = SourceItem(folder, reject=("unreadable", f"cannot list folder: {exc.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = entry.path
        if entry.is_symlink():
            real = os.path.realpath(path)
            if not _within(real, root):
                items[path] = SourceItem(
                    path, reject=("symlink_outside_root", f"resolves to {real}, outside {root}")
                )
            elif not os.path.exists(real):
                items[path] = SourceItem(path, reject=("unreadable", f"broken symlink to {real}"))
            elif os.path.isdir(real):
                if real not in ancestors:  # a link to a folder above us would loop forever
                    _add_tree(path, root, items, ancestors | {real})
            else:
                _add_file(path, items)
        elif entry.is_dir(follow_symlinks=False):
            _add_tree(path, root, items, ancestors | {os.path.realpath(path)})
        else:
            _add_file(path, items)


def _add_file(path: str, items: dict[str, SourceItem]) -> None:
    if not path.lower().endswith(".zip"):
        items[path] = SourceItem(path, path=path)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        items[path] = SourceItem(path, reject=("bad_zip", f"not a readable zip archive: {exc}"))
        return
    except OSError as exc:
        items[path] = SourceItem(path, reject=("unreadable", f"cannot open archive: {exc.strerror or exc}"))
        return
    for info in infos:
        name = info.filename
        source_path = f"{path}!/{name}"
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            detail = "entry name escapes the archive root (absolute path or '..' part)"
            items[source_path] = SourceItem(source_path, reject=("zip_slip", detail), size=info.file_size)
        elif not info.is_dir() and not any(p.startswith(".") or p == "__MACOSX" for p in parts):
            items[source_path] = SourceItem(source_path, path=path, entry=info, size=info.file_size)


def _glob_base(pattern: str) -> str:
    """The fixed folder in front of a glob's first wildcard (``data/**/*.md`` → ``data``)."""
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return os.path.join(*fixed) if fixed else "."


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# Reading -------------------------------------------------------------------------------------------------
class RejectedFile(Exception):
    """A file that cannot be ingested: ``reason`` names why in a word (``empty``, ``too_large``...)."""

    def __init__(self, reason: str, detail: str, *, size: int | None = None, sha256: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.size, self.sha256 = reason, detail, size, sha256


@dataclass(slots=True)
class LoadedFile:
    """A file read once: hashed, its first bytes kept for sniffing, its body in memory or spooled."""

    sha256: str
    size: int
    head: bytes
    data: bytes | None = None
    spooled: Path | None = None


class SourceReader:
    """Reads planned items once each, within ``max_file_bytes``; keeps the last zip archive open until
    :meth:`close` or an item of another archive."""

    def __init__(self, config: LakebedConfig, blobs: BlobStore) -> None:
        self.config, self.blobs = config, blobs
        self._archive: tuple[str, zipfile.ZipFile] | None = None

    def load(self, item: SourceItem) -> LoadedFile:
        """Read an item that was not rejected while planning: a file on disk or a zip entry."""
        assert item.path is not None
        if item.entry is None:
            try:
                info = os.stat(item.path)
            except OSError as exc:
                raise RejectedFile("unreadable", f"cannot stat file: {exc.strerror or exc}") from exc
            if not stat.S_ISREG(info.st_mode):
                raise RejectedFile("unreadable", "not a regular file (device, socket or pipe)")
            self._check_size(info.st_size)
            try:
                with open(item.path, "rb") as handle:
                    return self._read(handle, info.st_size)
            except OSError as exc:
                raise RejectedFile(
                    "unreadable", f"cannot read file: {exc.strerror or exc}", size=info.st_size
                ) from exc
        entry = item.entry
        if entry.flag_bits & 0x1:
            raise RejectedFile("unreadable", "encrypted zip entry", size=entry.file_size)
        self._check_size(entry.file_size)
        try:
            with self._zip(item.path).open(entry) as handle:
                return self._read(handle, entry.file_size)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
            raise RejectedFile("bad_zip", f"entry cannot be read: {exc}", size=entry.file_size) from exc

    def _check_size(self, size: int) -> None:
        if size == 0:
            raise RejectedFile("empty", "file is empty (0 bytes)", size=0)
        limit = self.config.max_file_bytes
        if size > limit:
            raise RejectedFile("too_large", f"{size:,} bytes exceeds max_file_bytes ({limit:,})", size=size)

    def _read(self, handle: IO[bytes], declared: int) -> LoadedFile:
        """Read a file once: whole into memory when small, else spooled to the blob store while hashing."""
        limit = self.config.max_file_bytes
        if declared > self.config.inline_content_bytes:
            try:
                temp, sha, size, head = self.blobs.spool(handle, limit, SNIFF_BYTES)
            except BlobTooLargeError as exc:
                raise RejectedFile("too_large", str(exc), size=exc.size) from exc
            loaded = LoadedFile(sha, size, head, spooled=temp)
        else:
            data = handle.read(declared + 1)  # one more byte than expected reveals a file that grew
            if len(data) > declared:
                data += handle.read(limit + 1 - len(data))
            if len(data) > limit:
                raise RejectedFile("too_large", f"grew past max_file_bytes ({limit:,})", size=len(data))
            loaded = LoadedFile(hashlib.sha256(data).hexdigest(), len(data), data[:SNIFF_BYTES], data=data)
        if loaded.size == 0:
            if loaded.spooled is not None:
                loaded.spooled.unlink(missing_ok=True)
            raise RejectedFile("empty", "file is empty (0 bytes)", size=0)
        return loaded

    def close(self) -> None:
        if self._archive is not None:
            self._archive[1].close()
            self._archive = None

    def _zip(self, path: str) -> zipfile.ZipFile:
        if self._archive is None or self._archive[0] != path:
            self.close()
            self._archive = (path, zipfile.ZipFile(path))
        return self._archive[1]


__all__ = ["LoadedFile", "RejectedFile", "SourceItem", "SourceReader", "plan_sources"]
