"""The move/recall state machine: one operation of one table, commit by commit.

A move is three commits: (1) hot: the intent (``tier-op`` + 1, ``tier-target``); (2) cold: the hot rows
below the target, with ``tier:<table>`` = target (:mod:`lakebed.pipelines.tiering.cold_copy`); (3) hot:
remove those rows, with ``tier-done``/``tier-wm``/``tier-cold``. A recall is the mirror: (1) intent,
(2) hot: append the cold rows at or above the target, (3) cold: delete them with ``tier:<table>`` = target,
(4) hot: ``tier-done``/``tier-wm``/``tier-cold``. A crash at any point is harmless (see
:mod:`lakebed.pipelines.tiering.view` for what readers take meanwhile) and a rerun finishes the interrupted
operation first. Two movers at once: the second one's intent commit conflicts on ``tier-op`` and it stops
with :class:`TierConflictError`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError
from deltalake.transaction import AddAction, RemoveAction

from lakebed.config import LakebedConfig
from lakebed.errors import TierConflictError, TierError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext
from lakebed.pipelines.tiering.actions import (
    add_action,
    data_paths,
    file_path,
    new_path,
    partition_columns,
    remove_action,
    stats_for,
)
from lakebed.pipelines.tiering.cold_copy import commit_copy, copy_files, removals
from lakebed.pipelines.tiering.files import FilePlan, files_below, parquet_bytes, split_rows
from lakebed.pipelines.tiering.storage import (
    app_id,
    cold_uri,
    open_table,
    policy_of,
    scrub,
    storage_options,
    table_exists,
    txn,
    where,
)
from lakebed.pipelines.tiering.store import cold_files, store_errors
from lakebed.pipelines.tiering.watermark import literal, quote, sql_literal
from lakebed.storage import arrow_dataset, local_path

Progress = Callable[[str, int, int], None]
"""``progress(step, rows_done, rows_total)``."""

FAULT_ENV = "LAKEBED_TIER_FAULT"
"""Fault injection for crash tests: ``<step>`` makes the mover kill its own process (SIGKILL) at that step:
``intent`` (after the intent commit), ``copy`` (mid-copy, before the cold commit), ``copied`` (after the cold
commit), ``delete`` (before the hot delete), ``recalled`` (after a recall's hot append), ``trimmed`` (after a
recall's cold delete)."""

_ATTEMPTS = 3  # tries at the hot removal (and copies) before a move gives up for a rerun


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class MoveResult:
    table: str
    operation: str  # move, recall, resume, nothing
    watermark: Any = None
    rows: int = 0
    cold_version: int | None = None
    hot_version: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Mover:
    """One move or recall of one table. It keeps one hot table object, brought up to date incrementally
    (:meth:`hot`), and one cold one (:meth:`cold`): opening a Delta table costs a read of its log, and on
    object storage several requests. A step takes what it needs from the hot table before calling
    :meth:`hot` again, which may move the shared object on."""

    def __init__(self, table: str, config: LakebedConfig, run: RunContext, progress: Progress | None) -> None:
        self.table = table
        self.config = config
        self.run = run
        self.progress = progress
        self.entry = Catalog(config).get(table)
        policy = policy_of(self.entry)
        if policy is None:
            raise TierError(f"table {table!r} has no tiering policy in its contract")
        self.column = policy.column
        self.hot_uri = self.entry.uri
        self.hot_root = local_path(self.hot_uri)
        self.cold_uri = cold_uri(table, config)
        self.options = storage_options(self.cold_uri, config)
        self._hot = DeltaTable(self.hot_uri)
        self.dtype = pa.schema(self._hot.schema().to_arrow()).field(self.column).type
        self.result = MoveResult(table, "nothing")
        self._cold_table: DeltaTable | None = None
        self._cold_read = False
        self._copied: tuple[int, FilePlan] | None = None  # (hot version, files) this mover copied
        self._moved: dict[int, int] = {}  # rows copied per operation

    # state
    def hot(self) -> DeltaTable:
        """The hot table at its latest version."""
        self._hot.update_incremental()
        return self._hot

    def hot_at(self, version: int) -> DeltaTable:
        return DeltaTable(self.hot_uri, version=version)

    def cold(self, *, reload: bool = True) -> DeltaTable | None:
        """The cold table at its latest version (None while it does not exist); with ``reload=False``, as
        last read (if it was). Acting on an outdated cold table is safe: every cold commit carries
        ``tier:<table>``, so one made against an outdated version conflicts, and the first one creates the
        table only if it does not exist."""
        if self._cold_table is None:
            if reload or not self._cold_read:
                self._cold_table = open_table(self.cold_uri, self.config)
                self._cold_read = True
        elif reload:
            try:
                self._cold_table.update_incremental()
            except (DeltaError, OSError) as exc:
                raise TierError(
                    f"cannot read the cold tier {where(self.cold_uri)}: {scrub(str(exc), self.config)}"
                ) from exc
        return self._cold_table

    def txn(self, table: DeltaTable, name: str) -> int | None:
        return txn(table, name, self.table)

    def properties(self, transactions: dict[str, int], **extra: str) -> CommitProperties:
        now = int(time.time() * 1000)
        return CommitProperties(
            custom_metadata={
                **self.run.commit_metadata(),
                **{f"lakebed.tier.{k}": v for k, v in extra.items()},
            },
            app_transactions=[
                Transaction(app_id=app_id(name, self.table), version=value, last_updated=now)
                for name, value in transactions.items()
            ],
        )

    def hot_marker(self, transactions: dict[str, int], **extra: str) -> int:
        """An empty hot commit carrying ``transactions`` (intent and completion markers), committed against
        the hot version last read: a marker another mover committed since conflicts (same application id)."""
        hot = self._hot
        try:
            write_deltalake(
                hot,
                pa.schema(hot.schema().to_arrow()).empty_table(),
                mode="append",
                commit_properties=self.properties(transactions, **extra),
            )
        except CommitFailedError as exc:
            raise TierConflictError(
                f"{self.table}: another mover changed the tier state ({scrub(str(exc), self.config)})"
            ) from None
        return hot.version()

    def state(self) -> tuple[int, int, int | None]:
        hot = self.hot()
        return (self.txn(hot, "tier-op") or 0, self.txn(hot, "tier-done") or 0, self.txn(hot, "tier-target"))

    # operations
    def begin(self, target: int) -> int:
        """The intent commit; a concurrent mover's intent makes this fail (one wins)."""
        op, done, _ = self.state()
        if op != done:  # (this mover finished any interrupted operation first): another one just began
            raise TierConflictError(f"{self.table}: another mover began operation {op} at the same moment")
        self.hot_marker({"tier-op": op + 1, "tier-target": target}, intent=str(target))
        _fault("intent")
        return op + 1

    def move(self, op: int, target: int) -> None:
        cold = self.cold(reload=False)
        if cold is not None and self.txn(cold, "tier-copied") == op:  # copied already
            version, snapshot = cold.version(), self.txn(cold, "tier-hot")
        else:
            version, snapshot = self.copy_to_cold(op, target, cold)
        self.delete_hot(op, target, version, snapshot)

    def copy_to_cold(
        self, op: int, target: int, base: DeltaTable | None, *, again: bool = False
    ) -> tuple[int, int]:
        """Commit (2): every hot row below ``target`` into cold, with the watermark.

        A crash before the cold commit leaves nothing behind and one after it needs no copy again. The
        commit is made against ``base``, the cold table as read before the copy: every cold commit carries
        ``tier:<table>``, so a mover that committed to cold meanwhile makes this one conflict (or, for the
        first move, the table exists). ``again``: this operation copied before, from hot files that have
        changed since; the same commit removes those copies. Returns the cold version committed and the hot
        version copied."""
        hot = self.hot()
        snapshot, schema, partitions = hot.version(), hot.schema(), partition_columns(hot)
        files = files_below(hot, self.column, self.dtype, target)
        self._copied = (snapshot, files)
        errors: tuple[type[BaseException], ...] = (DeltaError, *store_errors())
        try:
            store = cold_files(self.cold_uri, self.config)
            bound = literal(target, self.dtype)
            adds, moved = copy_files(
                self.table, files, self.hot_root, self.column, bound, store, self._copying
            )
            if base is not None:
                self._evolve_cold(base, schema)
            version = commit_copy(
                self.cold_uri,
                base,
                schema,
                adds,
                replaced=self._operation_files(base) if base is not None and again else [],
                partitions=partitions,
                storage_options=self.options,
                properties=self.properties({"tier": target, "tier-hot": snapshot, "tier-copied": op}),
            )
            if base is None:
                self._cold_read = False  # opened when next asked for
        except (CommitFailedError, DeltaProtocolError) as exc:
            raise TierConflictError(
                f"{self.table}: the cold table changed during the copy ({scrub(str(exc), self.config)})"
            ) from None
        except TierError as exc:
            raise TierError(f"{self.table}: {exc}") from exc
        except errors as exc:
            if base is None and table_exists(self.cold_uri, self.config):
                raise TierConflictError(
                    f"{self.table}: another mover created the cold table meanwhile"
                ) from None
            raise TierError(
                f"{self.table}: copy to the cold tier {where(self.cold_uri)} failed, hot data untouched: "
                f"{scrub(str(exc), self.config)}"
            ) from exc
        _fault("copied")
        self._moved[op] = moved
        self.result.rows = sum(self._moved.values())
        return version, snapshot

    def _copying(self, moved: int, total: int) -> None:
        """After each file copied to cold."""
        if self.progress:
            self.progress("copy", moved, total)
        _fault("copy")

    def _evolve_cold(self, cold: DeltaTable, schema: Any) -> None:
        """Give cold the columns hot has gained (an empty commit merging the schema, carrying the cold
        watermark as it is, so that it conflicts like every cold commit)."""
        wanted = pa.schema(schema.to_arrow())
        if set(wanted.names) <= set(pa.schema(cold.schema().to_arrow()).names):
            return
        write_deltalake(
            cold,
            wanted.empty_table(),
            mode="append",
            schema_mode="merge",
            commit_properties=self.properties({"tier": self.txn(cold, "tier") or 0}, schema="hot"),
        )

    def _operation_files(self, cold: DeltaTable) -> list[AddAction | RemoveAction]:
        """Removals of the files the operation in flight added to cold: those not in the cold version of
        the last finished operation (no other operation writes to cold meanwhile)."""
        finished = self.txn(self._hot, "tier-cold")
        kept: set[str] = set()
        if finished is not None:
            before = open_table(self.cold_uri, self.config, finished)
            if before is None:
                raise TierError(f"{self.table}: the cold table is missing (version {finished} expected)")
            kept = set(data_paths(before))
        return removals(cold, kept, int(time.time() * 1000))

    def delete_hot(self, op: int, target: int, cold_version: int, snapshot: int | None) -> None:
        """Commit (3): remove the copied rows from hot, marking the operation done.

        One commit removes exactly the files the copy read (``snapshot``, the hot version named by
        ``tier-hot`` in the cold commit ``cold_version``), re-adding the rows at or above the target of
        files that straddled it, so rows written to hot since stay there, visible, for the next move. If
        those files changed meanwhile (a compaction, a delete or update of old rows), the copy is made
        again from hot as it is now, replacing this operation's files in cold (readers do not see them
        before the operation is done), and the removal is tried again."""
        for _ in range(_ATTEMPTS):
            if snapshot is not None and self.remove_files(op, target, snapshot, cold_version):
                self.result.cold_version = cold_version
                return
            cold_version, snapshot = self.copy_to_cold(op, target, self.cold(), again=True)
        raise TierError(
            f"{self.table}: the hot files kept changing during the move ({_ATTEMPTS} copies); rerun it "
            "(readers are not affected)"
        )

    def remove_files(self, op: int, target: int, snapshot: int, cold_version: int) -> bool:
        """Remove the files the copy read from hot, with the completion markers; False when they are no
        longer all there."""
        if self._copied is not None and self._copied[0] == snapshot:
            files = self._copied[1]
        else:
            files = files_below(self.hot_at(snapshot), self.column, self.dtype, target)
        actions = self._removal(files, target)
        _fault("delete")
        for _ in range(_ATTEMPTS):
            hot = self.hot()
            if (self.txn(hot, "tier-done") or 0) >= op:
                raise TierConflictError(f"{self.table}: another mover finished operation {op} meanwhile")
            present = set(data_paths(hot))
            if any(action["path"] not in present for action, _ in files):
                return False
            properties = self.properties(
                {"tier-done": op, "tier-wm": target, "tier-cold": cold_version}, done=str(target)
            )
            # No retries: delta-rs does not count a compaction's removal of a file this commit removes as a
            # conflict, so any commit in between sends us back to look at the files again.
            properties.max_commit_retries = 0
            try:
                hot.create_write_transaction(
                    actions,
                    mode="append",
                    schema=hot.schema(),
                    partition_by=partition_columns(hot) or None,
                    commit_properties=properties,
                )
            except CommitFailedError:
                continue
            self.result.hot_version = self.hot().version()
            return True
        return False

    def _removal(self, files: FilePlan, target: int) -> list[AddAction | RemoveAction]:
        """The hot actions removing ``files``, with new files holding the rows at or above ``target`` of
        those that straddle it."""
        now = int(time.time() * 1000)
        bound = literal(target, self.dtype)
        store = cold_files(self.hot_uri, self.config)  # the hot table's own folder
        actions: list[AddAction | RemoveAction] = []
        for action, whole in files:
            actions.append(remove_action(action, now))
            if not whole:
                _, kept = split_rows(self.hot_root / file_path(action["path"]), self.column, bound)
                if kept.num_rows:
                    path = new_path(action)
                    written = store.write(parquet_bytes(kept), path, kept.num_rows)
                    actions.append(add_action(path, written.size, action, stats_for(kept)))
        return actions

    def recall(self, op: int, target: int) -> None:
        """Bring cold rows at or above ``target`` back to hot (the mirror of a move)."""
        hot = self.hot()
        if (self.txn(hot, "tier-recalled") or 0) < op:
            cold = self.cold()
            assert cold is not None
            condition = ds.field(self.column) >= literal(target, self.dtype)
            schema = pa.schema(hot.schema().to_arrow())  # columns added since the rows went cold: null
            rows = arrow_dataset(cold, schema).to_table(filter=condition)
            if self.progress:
                self.progress("recall", rows.num_rows, rows.num_rows)
            write_deltalake(
                hot,
                rows,
                mode="append",
                commit_properties=self.properties({"tier-recalled": op}, recalled=str(target)),
            )
            self.result.rows = rows.num_rows
            _fault("recalled")
        cold = self.cold()
        assert cold is not None
        if self.txn(cold, "tier") != target:
            predicate = f"{quote(self.column)} >= {sql_literal(target, self.dtype)}"
            cold.delete(predicate, commit_properties=self.properties({"tier": target}))
            _fault("trimmed")
        self.hot()
        self.result.hot_version = self.hot_marker(
            {"tier-done": op, "tier-wm": target, "tier-cold": cold.version()}, done=str(target)
        )
        self.result.cold_version = cold.version()

    def resume(self) -> bool:
        """Finish an interrupted operation; False when there was none."""
        op, done, target = self.state()
        if op == done or target is None:
            return False
        wm = self.txn(self._hot, "tier-wm")
        if wm is not None and target < wm:
            self.recall(op, target)
        else:
            self.move(op, target)
        self.result.notes.append(f"finished interrupted operation {op}")
        return True
