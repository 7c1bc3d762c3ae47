"""The lineage store: every OpenLineage event in a Delta table, and the auditor's questions as DuckDB queries.

:meth:`LineageStore.sync` loads new lines of ``HOME/lineage/events.jsonl`` into the Delta table
``HOME/system/lineage_events`` exactly once (the byte offset loaded up to is a Delta application
transaction of the same commit); malformed lines are skipped with a warning. The table is written with
``deltalake`` directly, never through the write path, so storing lineage never makes lineage.

Queries run on an in-memory DuckDB copy of the table's compact columns (reloaded when the table moves on):
``events`` (one row per event) and ``io`` (one row per input or output dataset of an event). From those:
who produced a table version (:meth:`producer`), what it came from (:meth:`upstream`, also column by
column), what depends on it (:meth:`downstream`), its versions (:meth:`history`), the graph as of a time
(:meth:`graph`), and runs (:meth:`runs`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import LineageNotFoundError
from lakebed.lineage.answers import (
    DatasetVersion,
    GraphBuilder,
    RunInfo,
    component,
    cyclic_gc_paused,
    long_lived_index,
    resolve,
    run_info,
)
from lakebed.lineage.emit import events_path
from lakebed.lineage.graph import Graph, dataset_id
from lakebed.lineage.index import TERMINAL_SQL, LineageIndex
from lakebed.lineage.records import COMPACT_COLUMNS, STORE_SCHEMA, event_row
from lakebed.storage import arrow_dataset

log = logging.getLogger("lakebed.lineage")
STORE_NAME = "lineage_events"
SYNC_APP_ID = "lineage-events-file"
SYNC_CHUNK_BYTES = 32 << 20
TERMINAL = ("COMPLETE", "FAIL", "ABORT")


class LineageStore:
    """The lineage of one lakebed home: sync events in, ask questions (see the module docstring)."""

    def __init__(self, config: LakebedConfig | None = None) -> None:
        self.config = config or get_config()
        self.uri = str(Path(self.config.system_root) / STORE_NAME)
        self.source = events_path(self.config)
        self._lock = threading.RLock()
        self._loaded_version: int | None = -2
        self._seen_size = -1
        self._db: Any = None
        self._index: LineageIndex | None = None

    # --- loading ----------------------------------------------------------------------------------

    def sync(self) -> int:
        """Load events appended to the event file since the last sync; returns how many were added."""
        with self._lock:
            added, conflicts = 0, 0
            while conflicts < 10:
                try:
                    count, more = self._sync_once()
                except CommitFailedError:  # another process synced at the same moment: re-read
                    conflicts += 1
                    continue
                added += count
                if not more:
                    break
            return added

    def _sync_once(self) -> tuple[int, bool]:
        """Load the next chunk of the event file (at most ``SYNC_CHUNK_BYTES``, so memory stays bounded);
        returns the events added and whether more remain."""
        table = self._table()
        done = (table.transaction_version(SYNC_APP_ID) if table is not None else None) or 0
        try:
            size = self.source.stat().st_size
        except FileNotFoundError:
            return 0, False
        if size <= done:
            if size < done:
                log.warning(
                    "lineage event file %s is shorter than what was loaded; was it replaced?", self.source
                )
            return 0, False
        with open(self.source, "rb") as handle:
            handle.seek(done)
            data = handle.read(min(size - done, SYNC_CHUNK_BYTES))
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next sync
        if end == 0:
            return 0, False
        rows = []
        offset = done
        for number, line in enumerate(data[:end].splitlines(keepends=True)):
            position = offset
            offset += len(line)
            if not line.strip():
                continue
            try:
                rows.append(event_row(json.loads(line), line.decode(), position))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning(
                    "skipping malformed lineage event at byte %d of %s (line %d of this sync): %s",
                    position,
                    self.source,
                    number + 1,
                    exc,
                )
        batch = pa.Table.from_pylist(rows, schema=STORE_SCHEMA)
        Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(
            self.uri,
            batch,
            mode="append",
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=SYNC_APP_ID, version=done + end)],
                custom_metadata={"lakebed.job": "lineage_sync"},
            ),
        )
        return len(rows), done + end < size

    def _table(self) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri)
        except DeltaTableNotFoundError:
            return None

    def refresh(self) -> None:
        """Sync, and reload the query copy if the store moved on (a no-op while the event file has not
        grown since the last refresh)."""
        with self._lock:
            try:
                size = self.source.stat().st_size
            except FileNotFoundError:
                size = 0
            if self._db is not None and size == self._seen_size:
                return
            self._seen_size = size
            self.sync()
            table = self._table()
            version = table.version() if table is not None else -1
            if version == self._loaded_version and self._db is not None:
                return
            import duckdb

            db = duckdb.connect()
            if table is not None:
                data = arrow_dataset(table).to_table(columns=COMPACT_COLUMNS)
            else:
                data = pa.Table.from_pylist([], schema=STORE_SCHEMA).select(COMPACT_COLUMNS)
            db.register("events_arrow", data)
            db.execute("CREATE TABLE events AS SELECT * FROM events_arrow")
            db.unregister("events_arrow")
            db.execute(
                """
                CREATE TABLE io AS
                SELECT run_id, event_type, event_time, job_namespace, job_name, 'input' AS role, d.*
                FROM (SELECT *, unnest(inputs) AS d FROM events)
                UNION ALL
                SELECT run_id, event_type, event_time, job_namespace, job_name, 'output' AS role, d.*
                FROM (SELECT *, unnest(outputs) AS d FROM events)
                """
            )
            db.execute(
                """
                CREATE TABLE runs AS
                SELECT run_id,
                       any_value(job_namespace) AS job_namespace,
                       any_value(job_name) AS job_name,
                       coalesce(arg_max(event_type, event_time)
                                FILTER (WHERE event_type IN ('COMPLETE', 'FAIL', 'ABORT')), 'RUNNING') AS state,
                       min(event_time) FILTER (WHERE event_type = 'START') AS started_at,
                       max(event_time) FILTER (WHERE event_type IN ('COMPLETE', 'FAIL', 'ABORT')) AS ended_at,
                       any_value(code_version) AS code_version,
                       any_value(processing) AS processing,
                       any_value(parent_run_id) AS parent_run_id,
                       any_value(parent_job_namespace) AS parent_job_namespace,
                       any_value(parent_job_name) AS parent_job_name,
                       any_value(error) FILTER (WHERE error IS NOT NULL) AS error,
                       min(event_time) AS first_seen
                FROM events GROUP BY run_id
                """
            )
            db.execute(
                "CREATE TABLE edges AS SELECT DISTINCT run_id, role, namespace, name, version FROM io "
                f"WHERE role = 'input' OR event_type IN {TERMINAL_SQL}"
            )
            self._index = long_lived_index(db)
            self._db = db
            self._loaded_version = version

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        self.refresh()
        with self._lock:
            cursor = self._db.execute(sql, list(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # --- datasets ---------------------------------------------------------------------------------

    def _indexed(self) -> LineageIndex:
        """The index of the current state (one snapshot: a walk holds on to it)."""
        self.refresh()
        with self._lock:
            assert self._index is not None
            return self._index

    def resolve(self, table: str) -> tuple[str, str]:
        """The (namespace, name) of a lakebed table (or of a dataset given as ``namespace:name``)."""
        return resolve(self._indexed(), table)

    def _latest_version(self, namespace: str, name: str) -> str | None:
        return self._indexed().latest.get((namespace, name))

    def _producing_run(self, namespace: str, name: str, version: str) -> str | None:
        return self._indexed().producers.get((namespace, name, version))

    # --- the auditor's questions ------------------------------------------------------------------

    def producer(self, table: str, version: int | str | None = None) -> RunInfo:
        """The run that wrote ``table`` at ``version`` (default: its latest): job, code version, inputs at
        their versions, quality results, times, and the Dagster run it belongs to."""
        index = self._indexed()
        namespace, name = resolve(index, table)
        wanted = str(version) if version is not None else index.latest.get((namespace, name))
        if wanted is None:
            raise LineageNotFoundError(f"no version of {table!r} was written with lineage")
        run_id = index.producers.get((namespace, name, wanted))
        if run_id is None:
            known = self.history(table)
            versions = ", ".join(str(v["version"]) for v in known[:10])
            raise LineageNotFoundError(
                f"no run in the lineage store wrote version {wanted} of {table!r} (known versions: {versions})"
            )
        return run_info(index, run_id)

    def run(self, run_id: str) -> RunInfo:
        """Everything known about one run."""
        return run_info(self._indexed(), run_id)

    def history(self, table: str) -> list[dict[str, Any]]:
        """Every version of ``table`` written with lineage, newest first: run, job, time, code version."""
        namespace, name = self.resolve(table)
        return self._query(
            """
            SELECT TRY_CAST(io.version AS BIGINT) AS version, io.run_id, io.job_name AS job, io.event_time AS written_at,
                   r.code_version, io.rows, io.size, r.parent_run_id
            FROM io JOIN runs r USING (run_id)
            WHERE io.role = 'output' AND io.event_type IN ('COMPLETE', 'FAIL', 'ABORT')
              AND io.namespace = ? AND io.name = ?
            ORDER BY version DESC NULLS LAST, written_at DESC
            """,
            [namespace, name],
        )

    def runs(self, *, failed: bool = False, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Runs, newest first (only failed ones with ``failed``)."""
        where, params = ["TRUE"], []
        if failed:
            where.append("state IN ('FAIL', 'ABORT')")
        if job:
            where.append("job_name = ?")
            params.append(job)
        return self._query(
            f"SELECT run_id, job_name AS job, state, started_at, ended_at, code_version, parent_run_id, error "
            f"FROM runs WHERE {' AND '.join(where)} ORDER BY coalesce(started_at, first_seen) DESC LIMIT {int(limit)}",
            params,
        )

    def last_runs(self) -> list[dict[str, Any]]:
        """The newest run of each job (each asset, each stream worker, each command), by job name."""
        return self._query(
            "SELECT job_name AS job, run_id, state, started_at, ended_at, error FROM runs "
            "QUALIFY row_number() OVER (PARTITION BY job_name ORDER BY coalesce(started_at, first_seen) DESC) = 1 "
            "ORDER BY job_name",
            [],
        )

    def upstream(
        self, table: str, version: int | str | None = None, *, depth: int = 5, column: str | None = None
    ) -> Graph:
        """Where ``table`` at ``version`` came from, ``depth`` runs back: each producing run and the exact
        versions it read. With ``column``: only the columns that column derives from."""
        index = self._indexed()
        namespace, name = resolve(index, table)
        start = str(version) if version is not None else index.latest.get((namespace, name))
        if start is not None and (namespace, name, start) not in index.producers:
            raise LineageNotFoundError(f"no run in the lineage store wrote version {start} of {table!r}")
        with cyclic_gc_paused():
            return self._upstream(index, namespace, name, start, depth, column)

    def _upstream(
        self,
        index: LineageIndex,
        namespace: str,
        name: str,
        start: str | None,
        depth: int,
        column: str | None,
    ) -> Graph:
        producers, runs = index.producers, index.runs
        builder = GraphBuilder(index)
        builder.dataset(namespace, name, start, columns=[column] if column else None)
        frontier: list[tuple[str, str, str | None, str | None]] = [(namespace, name, start, column)]
        seen: set[tuple[str, str, str | None, str | None]] = set()
        for _ in range(depth):
            following: list[tuple[str, str, str | None, str | None]] = []
            for ns, nm, ver, col in frontier:
                if ver is None or (ns, nm, ver, col) in seen:
                    continue
                seen.add((ns, nm, ver, col))
                run_id = producers.get((ns, nm, ver))
                if run_id is None:
                    continue
                run = runs[run_id]
                job = builder.job(run.job_id, run.job_namespace, run.job_name, run_id)
                builder.edge(job, dataset_id(ns, nm), f"v{ver}")
                sources = index.column_sources(run_id, ns, nm, ver, col) if col else None
                for source in run.inputs:
                    if sources is not None and (source.namespace, source.name) not in sources:
                        continue
                    fields = sorted(sources[(source.namespace, source.name)]) if sources is not None else None
                    node = builder.dataset(source.namespace, source.name, source.version, columns=fields)
                    builder.edge(node, job, f"v{source.version}" if source.version else None)
                    for field_name in fields if fields is not None else [None]:
                        following.append((source.namespace, source.name, source.version, field_name))
            frontier = following
        return builder.graph()

    def downstream(self, table: str, version: int | str | None = None, *, depth: int = 5) -> Graph:
        """What was made from ``table`` (from ``version`` on, default any version), ``depth`` runs forward."""
        index = self._indexed()
        namespace, name = resolve(index, table)
        start = None if version is None else str(version)
        # Only the start dataset is filtered by version (TRY_CAST(version AS BIGINT) >= TRY_CAST(start ...)).
        least = self._as_bigint(start) if start is not None else None
        with cyclic_gc_paused():
            return self._downstream(index, namespace, name, start, least, depth)

    def _downstream(
        self, index: LineageIndex, namespace: str, name: str, start: str | None, least: int | None, depth: int
    ) -> Graph:
        readers_of = index.readers
        builder = GraphBuilder(index)
        builder.dataset(namespace, name, start)
        edges = builder.edges
        frontier: dict[tuple[str, str], None] = {(namespace, name): None}
        seen: set[tuple[str, str]] = set()
        for level in range(depth):
            # Each dataset once per level, in the order first met (a later repeat would be skipped as seen).
            following: dict[tuple[str, str], None] = {}
            for dataset in frontier:
                if dataset in seen:
                    continue
                seen.add(dataset)
                reads = readers_of.get(dataset, ())
                if level == 0 and start is not None:
                    reads = [r for r in reads if least is not None and r[0] is not None and r[0] >= least]
                for _number, run_id, job, job_namespace, job_name, edge, written in reads:
                    builder.job(job, job_namespace, job_name, run_id)
                    edges[edge] = None
                    for out in written:
                        builder.written(out)
                        following[out.dataset] = None
            frontier = following
        return builder.graph()

    def _as_bigint(self, value: str) -> int | None:
        """``TRY_CAST(value AS BIGINT)`` as DuckDB does it."""
        rows = self._query("SELECT TRY_CAST(? AS BIGINT) AS n", [value])
        return None if rows[0]["n"] is None else int(rows[0]["n"])

    def graph(self, *, as_of: dt.datetime | None = None, include_system: bool = False) -> Graph:
        """Every job and dataset and how they connect, from the events up to ``as_of`` (default: now)."""
        cutoff = as_of or dt.datetime.now(dt.UTC)
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=dt.UTC)
        system = "" if include_system else " AND coalesce(kind, '') <> 'system'"
        rows = self._query(
            "SELECT DISTINCT job_namespace, job_name, role, namespace, name, table_name FROM io "
            f"WHERE event_time <= ? AND (role = 'input' OR event_type IN ('COMPLETE', 'FAIL', 'ABORT')){system}",
            [cutoff],
        )
        builder = GraphBuilder(self._indexed())
        for row in rows:
            job = builder.job_named(row["job_namespace"], row["job_name"])
            node = builder.dataset(row["namespace"], row["name"], None, table=row["table_name"])
            if row["role"] == "input":
                builder.edge(node, job)
            else:
                builder.edge(job, node)
        return builder.graph()

    # --- Marquez-style listings (the HTTP API) ----------------------------------------------------

    def namespaces(self) -> list[str]:
        rows = self._query(
            "SELECT DISTINCT job_namespace AS ns FROM events UNION SELECT DISTINCT namespace FROM io ORDER BY 1"
        )
        return [r["ns"] for r in rows]

    def datasets(self, namespace: str) -> list[dict[str, Any]]:
        return self._query(
            """
            SELECT name, any_value(table_name) AS table_name, max(event_time) AS updated_at,
                   arg_max(version, TRY_CAST(version AS BIGINT)) FILTER (WHERE role = 'output') AS current_version
            FROM io WHERE namespace = ? GROUP BY name ORDER BY name
            """,
            [namespace],
        )

    def dataset_versions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT version, run_id, event_time AS created_at, rows, size FROM io WHERE role = 'output' "
            "AND event_type IN ('COMPLETE', 'FAIL', 'ABORT') AND namespace = ? AND name = ? "
            "ORDER BY TRY_CAST(version AS BIGINT) DESC NULLS LAST, event_time DESC",
            [namespace, name],
        )
        if not rows and not self._query(
            "SELECT 1 FROM io WHERE namespace = ? AND name = ? LIMIT 1", [namespace, name]
        ):
            raise LineageNotFoundError(f"no dataset {namespace}:{name} in the lineage store")
        return rows

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self._query(
            "SELECT job_name AS name, count(*) AS runs, max(coalesce(ended_at, started_at, first_seen)) AS updated_at, "
            "arg_max(state, coalesce(started_at, first_seen)) AS latest_state "
            "FROM runs WHERE job_namespace = ? GROUP BY job_name ORDER BY job_name",
            [namespace],
        )

    def job_runs(self, namespace: str, name: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT run_id, state, started_at, ended_at, code_version FROM runs WHERE job_namespace = ? "
            f"AND job_name = ? ORDER BY coalesce(started_at, first_seen) DESC LIMIT {int(limit)}",
            [namespace, name],
        )
        if not rows:
            raise LineageNotFoundError(f"no job {namespace}:{name} in the lineage store")
        return rows

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The raw events of one run, in order (read from the Delta table)."""
        table = self._table()
        if table is None:
            return []
        import pyarrow.dataset as ds

        data = arrow_dataset(table).to_table(
            columns=["event", "event_time"], filter=ds.field("run_id") == run_id
        )
        return [json.loads(e) for e in data.sort_by("event_time").column("event").to_pylist()]

    def node_lineage(self, node_id: str, *, depth: int = 20) -> Graph:
        """The Marquez ``/lineage`` answer: everything connected to a ``dataset:`` or ``job:`` node id."""
        if not node_id.startswith(("dataset:", "job:")):
            raise LineageNotFoundError(f"node id must start with dataset: or job:, got {node_id!r}")
        graph = self.graph(include_system=True)
        if node_id not in graph.ids():
            raise LineageNotFoundError(f"no node {node_id!r} in the lineage graph")
        return component(graph, node_id, depth)


__all__ = ["DatasetVersion", "LineageStore", "RunInfo"]
