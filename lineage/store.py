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

import contextlib
import datetime as dt
import gc
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import LineageNotFoundError
from lakebed.lineage.emit import events_path
from lakebed.lineage.graph import Edge, Graph, Node, dataset_id, job_id
from lakebed.lineage.index import TERMINAL_SQL, LineageIndex, Written, build_index
from lakebed.storage import arrow_dataset

log = logging.getLogger("lakebed.lineage")
STORE_NAME = "lineage_events"
SYNC_APP_ID = "lineage-events-file"
SYNC_CHUNK_BYTES = 32 << 20
TERMINAL = ("COMPLETE", "FAIL", "ABORT")

_DATASET = pa.struct(
    [
        ("namespace", pa.string()),
        ("name", pa.string()),
        ("version", pa.string()),
        ("table_name", pa.string()),
        ("kind", pa.string()),  # the lakebed table kind: table, rejects or system
        ("rows", pa.int64()),
        ("size", pa.int64()),
        ("quality", pa.string()),  # the dataQualityAssertions facet's assertions, as JSON
        ("column_lineage", pa.string()),  # the columnLineage facet's fields, as JSON
    ]
)
STORE_SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job_namespace", pa.string(), nullable=False),
        pa.field("job_name", pa.string(), nullable=False),
        pa.field("parent_run_id", pa.string()),
        pa.field("parent_job_namespace", pa.string()),
        pa.field("parent_job_name", pa.string()),
        pa.field("processing", pa.string()),
        pa.field("code_version", pa.string()),
        pa.field("error", pa.string()),
        pa.field("inputs", pa.list_(_DATASET)),
        pa.field("outputs", pa.list_(_DATASET)),
        pa.field("event", pa.string(), nullable=False),  # the whole event, as received
        pa.field("file_offset", pa.int64(), nullable=False),
    ]
)
_COMPACT = [f.name for f in STORE_SCHEMA if f.name != "event"]


@dataclass(frozen=True)
class DatasetVersion:
    namespace: str
    name: str
    version: str | None
    table: str | None

    def describe(self) -> str:
        """``table@version`` (a file by its name, a long version such as a content hash shortened)."""
        label = self.table or (Path(self.name).name if self.namespace == "file" else self.name)
        if self.version is None:
            return label
        version = self.version if len(self.version) <= 16 else self.version[:12] + "…"
        return f"{label}@{version}"


@dataclass(frozen=True)
class RunInfo:
    """One run as the store knows it."""

    run_id: str
    job_namespace: str
    job_name: str
    state: str  # COMPLETE, FAIL, ABORT, or RUNNING when no terminal event has arrived
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    code_version: str | None
    processing: str | None
    parent_run_id: str | None
    parent_job: str | None
    error: str | None
    dagster_run_id: str | None = None
    inputs: tuple[DatasetVersion, ...] = ()
    outputs: tuple[DatasetVersion, ...] = ()
    quality: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # output table → assertions

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("inputs", "outputs")}
        data["inputs"] = [d.__dict__ for d in self.inputs]
        data["outputs"] = [d.__dict__ for d in self.outputs]
        for key in ("started_at", "ended_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


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
                rows.append(_row(json.loads(line), line.decode(), position))
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
                data = arrow_dataset(table).to_table(columns=_COMPACT)
            else:
                data = pa.Table.from_pylist([], schema=STORE_SCHEMA).select(_COMPACT)
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
            self._index = _long_lived_index(db)
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
        return _resolve(self._indexed(), table)

    def _latest_version(self, namespace: str, name: str) -> str | None:
        return self._indexed().latest.get((namespace, name))

    def _producing_run(self, namespace: str, name: str, version: str) -> str | None:
        return self._indexed().producers.get((namespace, name, version))

    # --- the auditor's questions ------------------------------------------------------------------

    def producer(self, table: str, version: int | str | None = None) -> RunInfo:
        """The run that wrote ``table`` at ``version`` (default: its latest): job, code version, inputs at
        their versions, quality results, times, and the Dagster run it belongs to."""
        index = self._indexed()
        namespace, name = _resolve(index, table)
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
        return _run_info(index, run_id)

    def run(self, run_id: str) -> RunInfo:
        """Everything known about one run."""
        return _run_info(self._indexed(), run_id)

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

    def upstream(
        self, table: str, version: int | str | None = None, *, depth: int = 5, column: str | None = None
    ) -> Graph:
        """Where ``table`` at ``version`` came from, ``depth`` runs back: each producing run and the exact
        versions it read. With ``column``: only the columns that column derives from."""
        index = self._indexed()
        namespace, name = _resolve(index, table)
        start = str(version) if version is not None else index.latest.get((namespace, name))
        if start is not None and (namespace, name, start) not in index.producers:
            raise LineageNotFoundError(f"no run in the lineage store wrote version {start} of {table!r}")
        with _cyclic_gc_paused():
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
        builder = _GraphBuilder(index)
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
        namespace, name = _resolve(index, table)
        start = None if version is None else str(version)
        # Only the start dataset is filtered by version (TRY_CAST(version AS BIGINT) >= TRY_CAST(start ...)).
        least = self._as_bigint(start) if start is not None else None
        with _cyclic_gc_paused():
            return self._downstream(index, namespace, name, start, least, depth)

    def _downstream(
        self, index: LineageIndex, namespace: str, name: str, start: str | None, least: int | None, depth: int
    ) -> Graph:
        readers_of = index.readers
        builder = _GraphBuilder(index)
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
        builder = _GraphBuilder(self._indexed())
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
        return _component(graph, node_id, depth)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a walk builds its answer. An answer holds no reference
    cycles, and at a million events the index is millions of objects: a large answer would pay a hundred
    young collections and, now and then, a full one over the whole index (~0.5 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _long_lived_index(db: Any) -> LineageIndex:
    """The index of ``db``, built with the cyclic collector paused and then frozen (``gc.freeze``): it
    holds no reference cycles and lives until the next reload, yet at a million events it is millions of
    objects that every full collection would traverse again (~0.5 s each, the slowest answers). Frozen,
    collections skip it; the previous index is still freed by reference counting when replaced. Garbage
    already waiting is collected first, so nothing unreachable is frozen with it."""
    gc.collect()
    with _cyclic_gc_paused():
        index = build_index(db, DatasetVersion)
    gc.freeze()
    return index


class _GraphBuilder:
    """Collects nodes and edges in the order they are first met; the nodes are made at the end."""

    def __init__(self, index: LineageIndex) -> None:
        self.index = index
        # node id → [label, namespace, name, versions (ordered, as dict keys), columns] or [name, namespace, runs]
        self.datasets: dict[str, list[Any]] = {}
        self.jobs: dict[str, list[Any]] = {}
        self.order: dict[str, None] = {}
        self.edges: dict[Edge, None] = {}

    def dataset(
        self,
        namespace: str,
        name: str,
        version: str | None,
        *,
        columns: list[str] | None = None,
        table: str | None = None,
    ) -> str:
        node_id = dataset_id(namespace, name)
        entry = self.datasets.get(node_id)
        if entry is None:
            entry = self._new_dataset(node_id, namespace, name, table)
        elif table:
            entry[0] = table
        if version is not None:
            entry[3][version] = None
        if columns:
            known = entry[4]
            for column in columns:
                if column not in known:
                    known.append(column)
        return node_id

    def written(self, out: Written) -> None:
        """Add an output of a run met downstream, and the edge to it from the run's job."""
        entry = self.datasets.get(out.node_id)
        if entry is None:
            entry = self._new_dataset(out.node_id, *out.dataset, None)
        if out.version is not None:
            entry[3][out.version] = None
        self.edges[out.edge] = None

    def _new_dataset(self, node_id: str, namespace: str, name: str, table: str | None) -> list[Any]:
        entry = self.datasets[node_id] = [
            table or _table_label(self.index, namespace, name),
            namespace,
            name,
            {},
            [],
        ]
        self.order[node_id] = None
        return entry

    def job(self, node_id: str, namespace: str, name: str, run_id: str) -> str:
        entry = self.jobs.get(node_id)
        if entry is None:
            entry = self.jobs[node_id] = [name, namespace, [run_id]]
            self.order[node_id] = None
        elif entry[2] is None:
            entry[2] = [run_id]
        else:
            entry[2].append(run_id)
        return node_id

    def job_named(self, namespace: str, name: str) -> str:
        node_id = job_id(namespace, name)
        if node_id not in self.jobs:
            self.jobs[node_id] = [name, namespace, None]
            self.order[node_id] = None
        return node_id

    def edge(self, source: str, target: str, label: str | None = None) -> None:
        self.edges[Edge(source, target, label)] = None

    def graph(self) -> Graph:
        nodes: list[Node] = []
        for node_id in self.order:
            entry = self.datasets.get(node_id)
            if entry is not None:
                details: dict[str, Any] = {"versions": list(entry[3])}
                if entry[4]:
                    details["columns"] = entry[4]
                nodes.append(Node(node_id, "dataset", entry[0], entry[1], entry[2], details))
            else:
                name, namespace, runs = self.jobs[node_id]
                nodes.append(
                    Node(node_id, "job", name, namespace, name, {} if runs is None else {"runs": runs})
                )
        return Graph(tuple(nodes), tuple(self.edges))


def _table_label(index: LineageIndex, namespace: str, name: str) -> str:
    label = index.labels.get((namespace, name))
    if label is not None:
        return label
    return name if namespace != "file" else Path(name).name


def _resolve(index: LineageIndex, table: str) -> tuple[str, str]:
    found = index.by_table.get(table) or index.by_text.get(table)
    if found is None:
        raise LineageNotFoundError(f"no lineage for table or dataset {table!r}")
    return found


def _run_info(index: LineageIndex, run_id: str) -> RunInfo:
    from lakebed.lineage.runs import DAGSTER_NAMESPACE

    run = index.runs.get(run_id)
    if run is None:
        raise LineageNotFoundError(f"no run {run_id!r} in the lineage store")
    row = index.detail(run)
    dagster_run_id = None
    parent = row
    for _ in range(4):  # a micro-batch's parent is the worker, whose parent may be the Dagster run
        if parent.get("parent_run_id") is None:
            break
        if parent.get("parent_job_namespace") == DAGSTER_NAMESPACE:
            dagster_run_id = str(parent["parent_run_id"])
            break
        above = index.runs.get(parent["parent_run_id"])
        if above is None:
            break
        parent = index.detail(above)
    quality: dict[str, list[dict[str, Any]]] = {}
    for label, assertions in run.quality:
        quality[label] = json.loads(assertions)
    return RunInfo(
        run_id=run_id,
        job_namespace=row["job_namespace"],
        job_name=row["job_name"],
        state=row["state"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        code_version=row["code_version"],
        processing=row["processing"],
        parent_run_id=row["parent_run_id"],
        parent_job=f"{row['parent_job_namespace']}:{row['parent_job_name']}"
        if row["parent_run_id"]
        else None,
        error=row["error"],
        dagster_run_id=dagster_run_id,
        inputs=tuple(run.inputs),
        outputs=tuple(run.outputs),
        quality=quality,
    )


def _component(graph: Graph, start: str, depth: int) -> Graph:
    """The part of ``graph`` within ``depth`` hops of ``start`` (following edges either way)."""
    neighbours: dict[str, set[str]] = {}
    for e in graph.edges:
        neighbours.setdefault(e.source, set()).add(e.target)
        neighbours.setdefault(e.target, set()).add(e.source)
    keep, frontier = {start}, {start}
    for _ in range(depth):
        frontier = {n for f in frontier for n in neighbours.get(f, ())} - keep
        if not frontier:
            break
        keep |= frontier
    return Graph(
        tuple(n for n in graph.nodes if n.id in keep),
        tuple(e for e in graph.edges if e.source in keep and e.target in keep),
    )


def _row(event: dict[str, Any], raw: str, offset: int) -> dict[str, Any]:
    run, job = event["run"], event["job"]
    run_facets = run.get("facets") or {}
    parent = run_facets.get("parent") or {}
    job_facets = job.get("facets") or {}
    error = (run_facets.get("errorMessage") or {}).get("message")
    return {
        "event_time": _instant(event["eventTime"]),
        "event_type": event.get("eventType") or "OTHER",
        "run_id": str(run["runId"]),
        "job_namespace": job["namespace"],
        "job_name": job["name"],
        "parent_run_id": (parent.get("run") or {}).get("runId"),
        "parent_job_namespace": (parent.get("job") or {}).get("namespace"),
        "parent_job_name": (parent.get("job") or {}).get("name"),
        "processing": (job_facets.get("jobType") or {}).get("processingType"),
        "code_version": (job_facets.get("sourceCodeLocation") or {}).get("version"),
        "error": error,
        "inputs": [_dataset(d) for d in event.get("inputs") or []],
        "outputs": [_dataset(d, output=True) for d in event.get("outputs") or []],
        "event": raw.rstrip("\n"),
        "file_offset": offset,
    }


def _dataset(dataset: dict[str, Any], *, output: bool = False) -> dict[str, Any]:
    facets = dataset.get("facets") or {}
    stats = (dataset.get("outputFacets") or {}).get("outputStatistics") or {}
    quality = facets.get("dataQualityAssertions") or (dataset.get("inputFacets") or {}).get(
        "dataQualityAssertions"
    )
    lineage = facets.get("columnLineage")
    return {
        "namespace": dataset["namespace"],
        "name": dataset["name"],
        "version": (facets.get("version") or {}).get("datasetVersion"),
        "table_name": (facets.get("lakebed") or {}).get("table"),
        "kind": (facets.get("lakebed") or {}).get("kind"),
        "rows": stats.get("rowCount") if output else None,
        "size": stats.get("size") if output else None,
        "quality": json.dumps(quality["assertions"]) if quality else None,
        "column_lineage": json.dumps(lineage["fields"]) if lineage else None,
    }


def _instant(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def iter_events(config: LakebedConfig | None = None) -> Iterator[dict[str, Any]]:
    """Every event in the event file, in order (malformed lines skipped)."""
    path = events_path(config or get_config())
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except ValueError:
                continue


__all__ = ["STORE_SCHEMA", "DatasetVersion", "LineageStore", "RunInfo", "iter_events"]
