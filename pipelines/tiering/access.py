"""What reads of a tiered table touched, for the ``unread_for`` tiering policy ("move what nobody reads").

For each table whose policy has ``unread_for``, every read records the lowest value of the tiering column
it touched on the hot tier, per UTC day, in ``<home>/tiering/access/<table>.json``:

* ``read_table`` with ``since=`` or ``filter=``: the lowest value of the hot files the read could not skip
  (by their statistics), so a read of last week touches last week only;
* a read whose range lakebed cannot see (``scan_table``, ``lakebed sql``, a dataset, feature retrieval)
  counts as touching every row: the policy then only ever keeps more on the hot tier, never less.

Recording never fails a read: a process that cannot write the home leaves no record (its reads are not
seen by the policy). A damaged record counts as a read of every row on the day it is found.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import filelock

from lakebed.config import LakebedConfig

EVERYTHING = "all"
"""A day's record when some read touched every row."""
_KEEP_DAYS = 400

log = logging.getLogger(__name__)


def _path(table: str, config: LakebedConfig) -> Path:
    return Path(config.home) / "tiering" / "access" / f"{table}.json"


def record(table: str, lowest: int | None, config: LakebedConfig, *, now: dt.datetime | None = None) -> None:
    """Record a read of ``table`` that touched hot rows from ``lowest`` up (watermark units; None: every
    row). The record is replaced whole (a new file renamed over it), under a lock readers in other
    processes share; a reader never waits more than ~50 ms for that lock (it then leaves no record)."""
    day = (now or dt.datetime.now(dt.UTC)).date().isoformat()
    path = _path(table, config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_suffix(".lock")):
            try:
                days = _parse(path.read_text(encoding="utf-8")) if path.exists() else {}
            except ValueError:
                days, lowest = {}, None  # damaged: count today as a read of every row
            before = days.get(day)
            if before == EVERYTHING or (isinstance(before, int) and lowest is not None and before <= lowest):
                return  # nothing new today
            days[day] = EVERYTHING if lowest is None else lowest
            oldest = (dt.date.fromisoformat(day) - dt.timedelta(days=_KEEP_DAYS)).isoformat()
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps({"days": {d: v for d, v in sorted(days.items()) if d >= oldest}}))
            os.replace(partial, path)
    except (OSError, TimeoutError) as exc:
        log.debug("cannot record a read of %s in %s: %s", table, path, exc)


def _locked(path: Path, wait: float = 0.05) -> filelock.BaseFileLock:
    """An exclusive lock on ``path`` shared with other processes, given up after ``wait`` seconds
    (:class:`filelock.Timeout`, a :class:`TimeoutError`). The lock file is kept: removing it on release
    would let a process waiting on the old file and one creating a new file both hold the lock."""
    return filelock.FileLock(path, timeout=wait, poll_interval=0.005, preserve_lock_file=True)


def lowest_read(table: str, since: dt.datetime, config: LakebedConfig) -> int | str | None:
    """The lowest hot value reads of ``table`` touched on the days from ``since`` on: an int (watermark
    units), :data:`EVERYTHING`, or None when nothing read it."""
    path = _path(table, config)
    with contextlib.suppress(FileNotFoundError):
        try:
            days = _parse(path.read_text(encoding="utf-8"))
        except ValueError:
            return EVERYTHING
        seen = [value for day, value in days.items() if day >= since.date().isoformat()]
        if EVERYTHING in seen:
            return EVERYTHING
        numbers = [value for value in seen if isinstance(value, int)]
        return min(numbers) if numbers else None
    return None


def _parse(text: str) -> dict[str, Any]:
    """The days recorded; ValueError when the record is damaged."""
    if not text.strip():
        return {}
    days = json.loads(text).get("days") if text.lstrip().startswith("{") else None
    if not isinstance(days, dict) or not all(v == EVERYTHING or isinstance(v, int) for v in days.values()):
        raise ValueError("damaged access record")
    return {str(k): v for k, v in days.items()}


__all__ = ["EVERYTHING", "lowest_read", "record"]
