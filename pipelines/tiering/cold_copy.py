"""Commit (2) of a move: the hot rows below the target into the cold table.

Files wholly below the target are copied byte for byte (no decoding: object-store speed, their statistics
reused); the rows below the target of files that straddle it are written as new files. Every file is
verified in the store (:mod:`lakebed.pipelines.tiering.store`) before the one cold commit that adds them all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from lakebed.errors import TierError
from lakebed.pipelines.tiering.actions import (
    add_action,
    file_path,
    new_path,
    remove_action,
    stats_for,
    stats_of,
)
from lakebed.pipelines.tiering.files import FilePlan, parquet_bytes, split_rows
from lakebed.pipelines.tiering.store import ColdFiles, Copied, in_parallel

Planned = tuple[str, dict[str, Any], str]
"""A file to be added to cold: (path, the hot file's add action, statistics)."""


def plan_copies(
    files: FilePlan, hot_root: Path, column: str, bound: pa.Scalar, store: ColdFiles
) -> tuple[list[Callable[[], Copied]], list[Planned], int]:
    """The copies to make of ``files`` (the hot files holding rows below ``bound``), what each adds to cold,
    and the rows they hold."""
    tasks: list[Callable[[], Copied]] = []
    planned: list[Planned] = []
    total = 0
    for action, whole in files:
        source = hot_root / file_path(action["path"])
        if whole:
            path, rows, stat = file_path(action["path"]), int(action["num_records"]), stats_of(action)
            tasks.append(partial(store.copy, source, path, rows))
        else:
            below, _ = split_rows(source, column, bound)
            if not below.num_rows:
                continue
            path, rows, stat = new_path(action), below.num_rows, stats_for(below)
            tasks.append(partial(store.write, parquet_bytes(below), path, rows))
        planned.append((path, action, stat))
        total += rows
    return tasks, planned, total


def copy_files(
    table: str,
    files: FilePlan,
    hot_root: Path,
    column: str,
    bound: pa.Scalar,
    store: ColdFiles,
    copied: Callable[[int, int], None],
) -> tuple[list[AddAction], int]:
    """Copy the rows below ``bound`` of ``files`` into ``store``, four files at a time, each verified; the
    add actions of the copies and the rows they hold. ``copied(rows_done, rows_total)`` follows each file."""
    tasks, planned, total = plan_copies(files, hot_root, column, bound, store)
    adds: list[AddAction] = []
    moved = 0
    for done, (path, like, stat) in zip(in_parallel(tasks), planned, strict=True):
        adds.append(add_action(path, done.size, like, stat))
        moved += done.rows
        copied(moved, total)
    if moved != total:
        raise TierError(
            f"{table}: the cold store holds {moved:,} of the {total:,} rows below the watermark "
            "(the Delta log and the data files disagree); nothing was moved"
        )
    return adds, moved


def commit_copy(
    uri: str,
    base: DeltaTable | None,
    schema: Any,
    adds: list[AddAction],
    *,
    replaced: list[AddAction | RemoveAction],
    partitions: list[str],
    storage_options: dict[str, str] | None,
    properties: CommitProperties,
) -> int:
    """The cold commit of a copy, against ``base`` (the cold table as read before the copy; None: the
    first move, which creates it, failing if another mover did meanwhile), removing ``replaced`` too.
    Returns the cold version."""
    if base is None:
        create_table_with_add_actions(
            uri,
            schema,
            adds,
            mode="error",  # another mover created it meanwhile: stop, never add twice
            partition_by=partitions or None,
            storage_options=storage_options,
            commit_properties=properties,
        )
        return 0
    base.create_write_transaction(
        [*replaced, *adds],
        mode="append",
        schema=schema,
        partition_by=partitions or None,
        commit_properties=properties,
    )
    base.update_incremental()
    return base.version()


def removals(cold: DeltaTable, kept: set[str], now: int) -> list[AddAction | RemoveAction]:
    """Removals of the files of ``cold`` not in ``kept`` (paths as in the log)."""
    return [
        remove_action(action, now)
        for action in pa.table(cold.get_add_actions(flatten=False)).to_pylist()
        if action["path"] not in kept
    ]
