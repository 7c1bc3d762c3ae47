"""Direct reads of a local Delta log's JSON commit files.

delta-rs 1.6's ``DeltaTable.history()`` can label versions off by one while other writers commit, so the
questions "which version did my commit get" and "did another writer advance these transactions" are
answered here from the commit files themselves. Remote (object-store) tables return None: callers fall
back to Delta's own conflict detection and history.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from lakebed.storage import is_local, local_path


def _commits_after(uri: str, after_version: int) -> Iterator[tuple[int, bytes]]:
    """The JSON commit files of a local table after ``after_version``, in order, until the first gap."""
    folder = local_path(uri) / "_delta_log"
    version = after_version + 1
    while True:
        try:
            yield version, (folder / f"{version:020d}.json").read_bytes()
        except FileNotFoundError:
            return
        version += 1


def foreign_transactions(uri: str, after_version: int, app_ids: Iterable[str]) -> str | None:
    """Whether a commit of ``uri`` after ``after_version`` set one of ``app_ids`` (i.e. another writer
    advanced those partitions). Reads the JSON commit files of the Delta log directly; None when not."""
    if not is_local(uri):
        return None
    wanted = set(app_ids)
    for version, data in _commits_after(uri, after_version):
        if b'"txn"' not in data:
            continue
        for line in data.splitlines():
            txn = json.loads(line).get("txn") if b'"txn"' in line else None
            if txn and txn.get("appId") in wanted:
                return f"version {version} set {txn['appId']} to {txn.get('version')}"
    return None


def find_commit(uri: str, after_version: int, marker: str) -> int | None:
    """The version of the commit of ``uri`` after ``after_version`` whose JSON holds ``marker`` (a unique id
    in its commit metadata); None when there is none or the table is not local."""
    if not is_local(uri):
        return None
    needle = marker.encode()
    return next((version for version, data in _commits_after(uri, after_version) if needle in data), None)


def commits_with(uri: str, after_version: int, marker: str) -> list[int]:
    """The versions of a local table after ``after_version`` whose commit JSON holds ``marker`` (e.g. a run
    id in the commit metadata); empty for remote tables."""
    if not is_local(uri):
        return []
    needle = marker.encode()
    return [version for version, data in _commits_after(uri, after_version) if needle in data]


def appended_files(uri: str, after_version: int, up_to: int) -> set[str] | None:
    """The names of the data files the commits of a local table after ``after_version`` up to ``up_to``
    added, when those commits only added files (an append); None when one removed a file (a delete,
    merge, overwrite or compaction), when a commit file is missing (log cleaned up) or the table is not
    local: the caller then compares the two versions' file lists."""
    if not is_local(uri):
        return None
    added: set[str] = set()
    last = after_version
    for version, data in _commits_after(uri, after_version):
        if version > up_to:
            break
        last = version
        if b'"remove"' in data:
            return None
        for line in data.splitlines():
            if line.startswith(b'{"add"'):
                added.add(str(json.loads(line)["add"]["path"]).rsplit("/", 1)[-1])
    return added if last == up_to else None


def added_bytes(uri: str, version: int | None) -> int | None:
    """Bytes of the data files commit ``version`` of a local table added (None when unknown)."""
    if version is None or not is_local(uri):
        return None
    try:
        data = (local_path(uri) / "_delta_log" / f"{version:020d}.json").read_bytes()
    except FileNotFoundError:
        return None
    total = 0
    for line in data.splitlines():
        if line.startswith(b'{"add"'):
            total += int(json.loads(line)["add"].get("size") or 0)
    return total
