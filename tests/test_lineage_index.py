"""The lineage index answers exactly as the SQL walk over the DuckDB copy did.

A random lineage store (many runs, tables and versions; several runs writing the same version; failed and
still-running runs; column lineage; quality results; system jobs; runs nested under a worker and a Dagster
run) is loaded by the real store. Its answers (``upstream`` with and without a column at several depths and
versions, ``downstream``, ``run``, ``producer``, ``graph``) are compared with the walk the store made before
the index: one SQL query per step against the same DuckDB copy, kept here as the reference. A reload after
more events are appended must answer from the new events.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from lakebed.config import get_config
from lakebed.errors import LineageNotFoundError
from lakebed.lineage.emit import events_path
from lakebed.lineage.graph import Edge, Graph, Node, dataset_id, job_id
from lakebed.lineage.store import DatasetVersion, LineageStore, RunInfo

TERMINAL = "('COMPLETE', 'FAIL', 'ABORT')"


# --- the reference: the SQL walk of the store before the index ---------------------------------------


class _Reference:
    def __init__(self, store: LineageStore) -> None:
        self.store = store

    def q(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.store._query(sql, params or [])

    def resolve(self, table: str) -> tuple[str, str]:
        rows = self.q(
            "SELECT namespace, name FROM io WHERE table_name = ? ORDER BY event_time DESC LIMIT 1", [table]
        )
        if rows:
            return rows[0]["namespace"], rows[0]["name"]
        for c in self.q("SELECT DISTINCT namespace, name FROM io"):
            if f"{c['namespace']}:{c['name']}" == table or c["name"] == table:
                return c["namespace"], c["name"]
        raise LineageNotFoundError(table)

    def latest_version(self, namespace: str, name: str) -> str | None:
        rows = self.q(
            f"SELECT version FROM io WHERE role = 'output' AND event_type IN {TERMINAL} AND namespace = ? "
            "AND name = ? AND version IS NOT NULL ORDER BY TRY_CAST(version AS BIGINT) DESC NULLS LAST, "
            "event_time DESC LIMIT 1",
            [namespace, name],
        )
        return rows[0]["version"] if rows else None

    def producing_run(self, namespace: str, name: str, version: str) -> str | None:
        rows = self.q(
            f"SELECT run_id FROM io WHERE role = 'output' AND event_type IN {TERMINAL} AND namespace = ? "
            "AND name = ? AND version = ? ORDER BY event_time DESC LIMIT 1",
            [namespace, name, version],
        )
        return rows[0]["run_id"] if rows else None

    def producer(self, table: str, version: str | None) -> RunInfo:
        namespace, name = self.resolve(table)
        wanted = version if version is not None else self.latest_version(namespace, name)
        assert wanted is not None
        run_id = self.producing_run(namespace, name, wanted)
        if run_id is None:
            raise LineageNotFoundError(table)
        return self.run(run_id)

    def run(self, run_id: str) -> RunInfo:
        rows = self.q("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            raise LineageNotFoundError(run_id)
        row = rows[0]
        datasets = self.q(
            "SELECT DISTINCT role, namespace, name, version, table_name, quality FROM io WHERE run_id = ? "
            f"AND (role = 'input' OR event_type IN {TERMINAL}) ORDER BY role, name, version",
            [run_id],
        )
        quality: dict[str, list[dict[str, Any]]] = {}
        for d in datasets:
            if d["role"] == "output" and d["quality"]:
                quality[d["table_name"] or d["name"]] = json.loads(d["quality"])

        def version(d: dict[str, Any]) -> DatasetVersion:
            return DatasetVersion(d["namespace"], d["name"], d["version"], d["table_name"])

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
            dagster_run_id=self.dagster_run(row),
            inputs=tuple(version(d) for d in datasets if d["role"] == "input"),
            outputs=tuple(version(d) for d in datasets if d["role"] == "output"),
            quality=quality,
        )

    def dagster_run(self, row: dict[str, Any]) -> str | None:
        for _ in range(4):
            if row.get("parent_run_id") is None:
                return None
            if row.get("parent_job_namespace") == "dagster":
                return str(row["parent_run_id"])
            parents = self.q("SELECT * FROM runs WHERE run_id = ?", [row["parent_run_id"]])
            if not parents:
                return None
            row = parents[0]
        return None

    def column_sources(
        self, run_id: str, ns: str, nm: str, ver: str, col: str
    ) -> dict[tuple[str, str], set[str]]:
        rows = self.q(
            "SELECT column_lineage FROM io WHERE run_id = ? AND role = 'output' AND namespace = ? AND name = ? "
            "AND version = ? AND column_lineage IS NOT NULL LIMIT 1",
            [run_id, ns, nm, ver],
        )
        sources: dict[tuple[str, str], set[str]] = {}
        if not rows:
            return sources
        for source in json.loads(rows[0]["column_lineage"]).get(col, {}).get("inputFields", []):
            sources.setdefault((source["namespace"], source["name"]), set()).add(source["field"])
        return sources

    def upstream(self, table: str, version: str | None, depth: int, column: str | None) -> Graph:
        namespace, name = self.resolve(table)
        start = version if version is not None else self.latest_version(namespace, name)
        if start is not None and self.producing_run(namespace, name, start) is None:
            raise LineageNotFoundError(table)
        b = _OldBuilder(self)
        b.dataset(namespace, name, start, columns=[column] if column else None)
        frontier: list[tuple[str, str, str | None, str | None]] = [(namespace, name, start, column)]
        seen: set[tuple[str, str, str | None, str | None]] = set()
        for _ in range(depth):
            following: list[tuple[str, str, str | None, str | None]] = []
            for ns, nm, ver, col in frontier:
                if (ns, nm, ver, col) in seen or ver is None:
                    continue
                seen.add((ns, nm, ver, col))
                run_id = self.producing_run(ns, nm, ver)
                if run_id is None:
                    continue
                run = self.run(run_id)
                job = b.job(run)
                b.edge(job, dataset_id(ns, nm), f"v{ver}")
                sources = self.column_sources(run_id, ns, nm, ver, col) if col else None
                for source in run.inputs:
                    if sources is not None and (source.namespace, source.name) not in sources:
                        continue
                    fields = sorted(sources[(source.namespace, source.name)]) if sources is not None else None
                    node = b.dataset(source.namespace, source.name, source.version, columns=fields)
                    b.edge(node, job, f"v{source.version}" if source.version else None)
                    for field_name in fields if fields is not None else [None]:
                        following.append((source.namespace, source.name, source.version, field_name))
            frontier = following
        return b.graph()

    def downstream(self, table: str, version: str | None, depth: int) -> Graph:
        namespace, name = self.resolve(table)
        b = _OldBuilder(self)
        b.dataset(namespace, name, version)
        frontier: list[tuple[str, str, str | None]] = [(namespace, name, version)]
        seen: set[tuple[str, str]] = set()
        for _ in range(depth):
            following: list[tuple[str, str, str | None]] = []
            for ns, nm, ver in frontier:
                if (ns, nm) in seen:
                    continue
                seen.add((ns, nm))
                readers = self.q(
                    "SELECT run_id, version FROM io WHERE role = 'input' AND namespace = ? AND name = ?"
                    + (" AND TRY_CAST(version AS BIGINT) >= TRY_CAST(? AS BIGINT)" if ver is not None else "")
                    + " GROUP BY run_id, version ORDER BY min(rowid)",  # in the order first read
                    [ns, nm, ver] if ver is not None else [ns, nm],
                )
                for reader in readers:
                    run = self.run(reader["run_id"])
                    job = b.job(run)
                    b.edge(dataset_id(ns, nm), job, f"v{reader['version']}" if reader["version"] else None)
                    for out in run.outputs:
                        node = b.dataset(out.namespace, out.name, out.version)
                        b.edge(job, node, f"v{out.version}" if out.version else None)
                        following.append((out.namespace, out.name, None))
            frontier = following
        return b.graph()

    def graph(self, include_system: bool) -> Graph:
        system = "" if include_system else " AND coalesce(kind, '') <> 'system'"
        rows = self.q(
            "SELECT DISTINCT job_namespace, job_name, role, namespace, name, table_name FROM io "
            f"WHERE event_time <= ? AND (role = 'input' OR event_type IN {TERMINAL}){system}",
            [dt.datetime.now(dt.UTC)],
        )
        b = _OldBuilder(self)
        for row in rows:
            job = b.job_named(row["job_namespace"], row["job_name"])
            node = b.dataset(row["namespace"], row["name"], None, table=row["table_name"])
            if row["role"] == "input":
                b.edge(node, job)
            else:
                b.edge(job, node)
        return b.graph()


class _OldBuilder:
    def __init__(self, ref: _Reference) -> None:
        self.ref = ref
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str, str | None], Edge] = {}

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
        existing = self.nodes.get(node_id)
        versions = list(existing.details.get("versions", [])) if existing else []
        if version is not None and version not in versions:
            versions.append(version)
        known = list(existing.details.get("columns", [])) if existing else []
        for column in columns or []:
            if column not in known:
                known.append(column)
        label = table or (existing.label if existing else None) or self.label(namespace, name)
        details: dict[str, Any] = {"versions": versions}
        if known:
            details["columns"] = known
        self.nodes[node_id] = Node(node_id, "dataset", label, namespace, name, details)
        return node_id

    def label(self, namespace: str, name: str) -> str:
        rows = self.ref.q(
            "SELECT table_name FROM io WHERE namespace = ? AND name = ? AND table_name IS NOT NULL LIMIT 1",
            [namespace, name],
        )
        if rows:
            return str(rows[0]["table_name"])
        return name if namespace != "file" else Path(name).name

    def job(self, run: RunInfo) -> str:
        node_id = self.job_named(run.job_namespace, run.job_name)
        node = self.nodes[node_id]
        runs = [*node.details.get("runs", []), run.run_id]
        self.nodes[node_id] = Node(node_id, "job", node.label, node.namespace, node.name, {"runs": runs})
        return node_id

    def job_named(self, namespace: str, name: str) -> str:
        node_id = job_id(namespace, name)
        self.nodes.setdefault(node_id, Node(node_id, "job", name, namespace, name, {}))
        return node_id

    def edge(self, source: str, target: str, label: str | None = None) -> None:
        self.edges.setdefault((source, target, label), Edge(source, target, label))

    def graph(self) -> Graph:
        return Graph(tuple(self.nodes.values()), tuple(self.edges.values()))


def _exact(graph: Graph) -> tuple[Any, ...]:
    """Everything of a graph, in order, node details included."""
    return graph.nodes, tuple(n.details for n in graph.nodes), graph.edges


def _unordered(graph: Graph) -> tuple[Any, ...]:
    """A graph whose walk met readers in no set order (DISTINCT without ORDER BY): as sets and counts."""

    def details(n: Node) -> tuple[Any, ...]:
        return tuple(sorted((k, tuple(sorted(v))) for k, v in n.details.items()))

    return {(n, details(n)) for n in graph.nodes}, len(graph.nodes), set(graph.edges), len(graph.edges)


# --- a random lineage store ----------------------------------------------------------------------------


class _Events:
    """Random OpenLineage events appended to the event file: tables in levels, each run reading tables of
    lower levels at versions that exist (or at none), some runs failing, some never finishing."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.config = get_config()
        self.path = events_path(self.config)
        self.moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.tables = [f"t{level}_{i}" for level in range(4) for i in range(4)]
        self.versions: dict[str, list[int]] = {t: [] for t in self.tables}
        self.files = [f"/landing/{n}.csv" for n in ("a", "b", "c")]
        self.columns = ["id", "amount", "day"]
        self.produced: list[tuple[str, str]] = []  # (table, version) written by some run

    def tick(self) -> str:
        self.moment += dt.timedelta(milliseconds=self.rng.randint(1, 900))
        return self.moment.isoformat()

    def dataset(self, table: str, version: str | None, *, system: bool = False) -> dict[str, Any]:
        facets: dict[str, Any] = {"lakebed": {"table": table, "kind": "system" if system else "table"}}
        if version is not None:
            facets["version"] = {"datasetVersion": version}
        return {"namespace": "file", "name": f"/lake/tables/{table}", "facets": facets}

    def write(self, events: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            for event in events:
                out.write(json.dumps(event) + "\n")

    def run_events(self, *, parent: tuple[str, str, str] | None = None) -> list[dict[str, Any]]:
        rng = self.rng
        table = rng.choice(self.tables)
        level = int(table[1])
        system = rng.random() < 0.05
        inputs: list[dict[str, Any]] = []
        sources: list[dict[str, Any]] = []
        if level == 0:
            path = rng.choice(self.files)
            sha = rng.choice(["aa11", "bb22", "cc33" * 5])
            inputs.append({"namespace": "file", "name": path, "facets": {"version": {"datasetVersion": sha}}})
            sources.append(inputs[-1])
        else:
            for below in rng.sample([t for t in self.tables if int(t[1]) < level], k=rng.randint(1, 3)):
                known = self.versions[below]
                version = str(rng.choice(known)) if known and rng.random() < 0.9 else None
                ref = self.dataset(below, version)
                if rng.random() < 0.2:
                    ref["inputFacets"] = {
                        "dataQualityAssertions": {"assertions": [{"assertion": "not_null", "success": True}]}
                    }
                inputs.append(ref)
                sources.append(ref)
        known = self.versions[table]
        # A quarter of the runs write a version already written (a retry, a replay).
        version = rng.choice(known) if known and rng.random() < 0.25 else (known[-1] + 1 if known else 0)
        output = self.dataset(table, str(version), system=system)
        if rng.random() < 0.7:
            fields = {}
            for column in self.columns:
                picked = rng.sample(sources, k=rng.randint(0, len(sources)))
                fields[column] = {
                    "inputFields": [
                        {"namespace": s["namespace"], "name": s["name"], "field": rng.choice(self.columns)}
                        for s in picked
                    ]
                }
            output["facets"]["columnLineage"] = {"fields": fields}
        if rng.random() < 0.3:
            output["facets"]["dataQualityAssertions"] = {
                "assertions": [{"assertion": "unique", "success": rng.random() < 0.8, "column": "id"}]
            }
        run_id = str(uuid.uuid4())
        job = {
            "namespace": "lakebed",
            "name": f"{'maintain' if system else 'transform'}:{table}",
            "facets": {"sourceCodeLocation": {"version": rng.choice(["c0ffee", "beef01"])}},
        }
        run: dict[str, Any] = {"runId": run_id, "facets": {}}
        if parent is not None:
            run["facets"]["parent"] = {
                "run": {"runId": parent[0]},
                "job": {"namespace": parent[1], "name": parent[2]},
            }
        start = {
            "eventType": "START",
            "eventTime": self.tick(),
            "run": run,
            "job": job,
            "inputs": inputs,
            "outputs": [],
        }
        events = [start]
        ending = rng.random()
        if ending < 0.08:
            return events  # still running
        if ending < 0.2:
            run_fail = json.loads(json.dumps(run))
            run_fail["facets"]["errorMessage"] = {"message": "boom", "programmingLanguage": "python"}
            events.append(
                {
                    "eventType": "FAIL",
                    "eventTime": self.tick(),
                    "run": run_fail,
                    "job": job,
                    "inputs": inputs,
                    "outputs": [output] if rng.random() < 0.5 else [],
                }
            )
        else:
            events.append(
                {
                    "eventType": "COMPLETE",
                    "eventTime": self.tick(),
                    "run": run,
                    "job": job,
                    "inputs": inputs,
                    "outputs": [output],
                }
            )
        if events[-1]["outputs"]:
            if version not in known:
                known.append(version)
            self.produced.append((table, str(version)))
        return events

    def append(self, runs: int) -> None:
        events: list[dict[str, Any]] = []
        dagster = (str(uuid.uuid4()), "dagster", "daily")
        worker: tuple[str, str, str] | None = None
        for i in range(runs):
            if i % 25 == 0:
                dagster = (str(uuid.uuid4()), "dagster", "daily")
                worker_id = str(uuid.uuid4())
                events.append(
                    {
                        "eventType": "START",
                        "eventTime": self.tick(),
                        "run": {
                            "runId": worker_id,
                            "facets": {
                                "parent": {
                                    "run": {"runId": dagster[0]},
                                    "job": {"namespace": "dagster", "name": "daily"},
                                }
                            },
                        },
                        "job": {"namespace": "lakebed", "name": "stream_ingest:topic"},
                        "inputs": [],
                        "outputs": [],
                    }
                )
                worker = (worker_id, "lakebed", "stream_ingest:topic")
            choice = self.rng.random()
            parent = dagster if choice < 0.4 else worker if choice < 0.6 else None
            events.extend(self.run_events(parent=parent))
        self.write(events)


def _compare(store: LineageStore, events: _Events, rng: random.Random, samples: int) -> None:
    ref = _Reference(store)
    run_ids = [r["run_id"] for r in store.runs(limit=1_000_000)]
    assert run_ids
    for run_id in run_ids:
        assert store.run(run_id) == ref.run(run_id)
    tables = sorted({t for t, _ in events.produced})
    for table, version in rng.sample(events.produced, k=min(samples, len(events.produced))):
        assert store.producer(table, version) == ref.producer(table, version)
        assert store.producer(table, int(version)) == ref.producer(table, version)
    for table in tables:
        assert store.producer(table) == ref.producer(table, None)
        for depth in (1, 3, 5):
            assert _exact(store.upstream(table, depth=depth)) == _exact(
                ref.upstream(table, None, depth, None)
            )
            for column in ("id", "amount", "missing"):
                assert _exact(store.upstream(table, depth=depth, column=column)) == _exact(
                    ref.upstream(table, None, depth, column)
                )
    for table, version in rng.sample(events.produced, k=min(samples, len(events.produced))):
        depth = rng.choice([1, 2, 4, 6])
        column = rng.choice([None, "id", "day"])
        mine = store.upstream(table, version, depth=depth, column=column)
        assert _exact(mine) == _exact(ref.upstream(table, version, depth, column))
        for start in (None, version, "0", "not-a-number"):
            assert _unordered(store.downstream(table, start, depth=depth)) == _unordered(
                ref.downstream(table, start, depth)
            )
    for source in events.files:  # a file (no table name): by namespace:name and by its bare name
        for name in (f"file:{source}", source):
            assert _unordered(store.downstream(name, depth=3)) == _unordered(ref.downstream(name, None, 3))
    for include_system in (False, True):
        assert _unordered(store.graph(include_system=include_system)) == _unordered(ref.graph(include_system))
    with pytest.raises(LineageNotFoundError):
        store.upstream(tables[0], 10_000)
    with pytest.raises(LineageNotFoundError):
        store.run("no-such-run")
    with pytest.raises(LineageNotFoundError):
        store.producer("no_such_table")


def test_index_answers_as_the_sql_walk() -> None:
    events = _Events(seed=11)
    events.append(300)
    store = LineageStore()
    _compare(store, events, random.Random(3), samples=30)
    # Several runs wrote one version: the producer is the latest of them, as before.
    counts: dict[tuple[str, str], int] = {}
    for produced in events.produced:
        counts[produced] = counts.get(produced, 0) + 1
    assert max(counts.values()) > 1
    # The edges table for SQL users: one row per distinct input and terminal output of a run.
    edges = store._query("SELECT count(*) AS n FROM edges")[0]["n"]
    distinct = store._query(
        f"SELECT count(*) AS n FROM (SELECT DISTINCT run_id, role, namespace, name, version FROM io "
        f"WHERE role = 'input' OR event_type IN {TERMINAL})"
    )[0]["n"]
    assert edges == distinct > 0


def test_a_reload_after_new_events_updates_the_index() -> None:
    events = _Events(seed=5)
    events.append(100)
    store = LineageStore()
    before = {t: store.producer(t).run_id for t, _ in events.produced}
    known = set(store._query("SELECT run_id FROM runs")[0].values())
    events.append(100)
    store.refresh()
    after_runs = {r["run_id"] for r in store.runs(limit=10_000)}
    assert len(after_runs) > len(known)
    _compare(store, events, random.Random(9), samples=30)
    changed = [t for t in before if store.producer(t).run_id != before[t]]
    assert changed  # new versions were written: the latest producers moved on


@pytest.mark.parametrize("seed", [2, 17])
def test_downstream_from_the_precomputed_readers_is_the_walk_in_order(seed: int) -> None:
    """The readers and outputs made at build time give the very graph of a walk that asks DuckDB for the
    readers of each dataset (in the order first read) and each run's outputs: same nodes, details and edges,
    in the same order, from every table, at several depths and start versions."""
    events = _Events(seed=seed)
    events.append(120)
    store = LineageStore()
    ref = _Reference(store)
    walked = 0
    for table in sorted({t for t, _ in events.produced}):
        versions = sorted({int(v) for t, v in events.produced if t == table})
        for start in (None, str(versions[0]), str(versions[-1]), "not-a-number"):
            for depth in (1, 2, 4):
                mine = store.downstream(table, start, depth=depth)
                assert _exact(mine) == _exact(ref.downstream(table, start, depth))
                walked += len(mine.edges)
    assert walked > 1_000  # the graphs were not trivial
    # Runs of one job that read one version of a dataset share that edge: one object in the index.
    index = store._indexed()
    for reads in index.readers.values():
        by_value: dict[Edge, Edge] = {}
        for _number, _run_id, _job, _job_namespace, _job_name, edge, _written in reads:
            assert by_value.setdefault(edge, edge) is edge


def test_the_index_is_frozen_out_of_the_cyclic_collector() -> None:
    """After a reload the index's objects are in the permanent generation, so full collections skip them."""
    import gc

    events = _Events(seed=4)
    events.append(40)
    store = LineageStore()
    gc.unfreeze()
    store.refresh()
    index = store._indexed()
    assert gc.get_freeze_count() > len(index.runs)
    assert gc.isenabled()
    gc.collect()
    assert not any(o is index for o in gc.get_objects())  # frozen objects are not in any generation


def test_walks_pause_the_cyclic_collector_and_restore_it() -> None:
    import gc

    from lakebed.lineage.answers import cyclic_gc_paused as _cyclic_gc_paused

    assert gc.isenabled()
    with _cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with _cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), _cyclic_gc_paused():
        raise RuntimeError("walk failed")
    assert gc.isenabled()
