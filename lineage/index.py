"""The lineage index: the graph of the lineage store as plain Python dicts, so a walk takes no SQL.

:class:`LineageIndex` is built by :meth:`LineageStore.refresh` from its DuckDB copy (tables ``io`` and
``runs``) once per reload, with a handful of bulk queries. It holds:

* who produced each dataset version: ``(namespace, name, version)`` → run id (of the terminal events naming
  that output, the latest by event time, as ``LineageStore._producing_run`` always chose);
* the latest version of each dataset (numeric versions first, then by event time);
* each run's job and its inputs and outputs at their versions (the rows ``LineageStore.run`` lists), and the
  quality results of its outputs as JSON;
* who read each dataset: ``(namespace, name)`` → one :data:`Read` per distinct ``(run id, version read)``
  in the order of first appearance, with the version as an integer where it is one (``TRY_CAST(version AS
  BIGINT)``), the run's job, the edge from the dataset to that job and the run's :class:`Written` outputs
  (node ids and edges). A downstream walk of a long history meets tens of thousands of reader runs: made
  here once, in the order a walk visits them, its edges and ids are looked up rather than formatted and
  allocated per answer;
* each dataset's table label, which dataset a table name resolves to, and the column lineage of each output
  version, kept as its JSON text and parsed only when a column walk needs it.

The remaining run details (state, times, code version, parents, error) stay in an Arrow table and are read
row by row when :meth:`LineageStore.run` asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lakebed.lineage.graph import Edge, dataset_id, job_id

TERMINAL_SQL = "('COMPLETE', 'FAIL', 'ABORT')"
_RUN_COLUMNS = (
    "run_id",
    "job_namespace",
    "job_name",
    "state",
    "started_at",
    "ended_at",
    "code_version",
    "processing",
    "parent_run_id",
    "parent_job_namespace",
    "parent_job_name",
    "error",
)


@dataclass(slots=True)
class Written:
    """One output of a run as a downstream walk adds it: the dataset's node id and key, the version
    written and the edge from the run's job to the dataset (labelled with that version). Not frozen: one
    is made per output of every run read by another, and a frozen dataclass is slower to make."""

    node_id: str
    dataset: tuple[str, str]  # (namespace, name)
    version: str | None
    edge: Edge


@dataclass(slots=True)
class IndexedRun:
    """What a walk needs of one run: its job and its inputs and outputs, in ``LineageStore.run`` order."""

    row: int  # in ``LineageIndex.details``
    job_namespace: str
    job_name: str
    job_id: str
    run_id: str  # the key of ``LineageIndex.runs`` (one string object wherever the run is named)
    inputs: list[Any] = field(default_factory=list)  # DatasetVersion
    outputs: list[Any] = field(default_factory=list)  # DatasetVersion
    quality: list[tuple[str, str]] = field(default_factory=list)  # (output table or name, JSON)
    written: tuple[Written, ...] | None = None  # the outputs as downstream adds them, for runs that read


# A run that read a dataset: the version read as an integer (None when it is not one), the run id, its job
# (node id, namespace, name), the edge from the dataset to that job (labelled with the version read) and
# the run's outputs (in ``IndexedRun.outputs`` order). A plain tuple: a walk unpacks it, and there is one
# per input of every run.
Read = tuple[int | None, str, str, str, str, Edge, tuple[Written, ...]]


@dataclass
class LineageIndex:
    producers: dict[tuple[str, str, str], str]
    latest: dict[tuple[str, str], str]
    runs: dict[str, IndexedRun]
    details: pa.Table  # one row per run, _RUN_COLUMNS
    readers: dict[tuple[str, str], list[Read]]
    labels: dict[tuple[str, str], str]
    by_table: dict[str, tuple[str, str]]
    by_text: dict[str, tuple[str, str]]  # "namespace:name" and bare names → dataset
    column_lineage: dict[tuple[str, str, str, str], str]

    def detail(self, run: IndexedRun) -> dict[str, Any]:
        """The ``runs`` row of ``run`` as a dict."""
        return dict(self.details.slice(run.row, 1).to_pylist()[0])

    def column_sources(
        self, run_id: str, namespace: str, name: str, version: str, column: str
    ) -> dict[tuple[str, str], set[str]]:
        """The input datasets and their columns that output ``column`` derives from (none known: empty)."""
        sources: dict[tuple[str, str], set[str]] = {}
        raw = self.column_lineage.get((run_id, namespace, name, version))
        if raw is None:
            return sources
        fields = json.loads(raw).get(column, {})
        for source in fields.get("inputFields", []):
            sources.setdefault((source["namespace"], source["name"]), set()).add(source["field"])
        return sources


def _columns(db: Any, sql: str) -> list[list[Any]]:
    table = db.sql(sql).to_arrow_table()
    return [table.column(i).to_pylist() for i in range(table.num_columns)]


def _readers(db: Any, runs: dict[str, IndexedRun]) -> dict[tuple[str, str], list[Read]]:
    """Who read each dataset, as a downstream walk adds them. The rows come grouped by dataset, so equal
    edges (runs of one job reading one version) share one object, and a run's outputs are made when it is
    first met, so a walk over one dataset's readers reads memory made in that order. Each dataset's key
    and node id, and each label ``v<version>``, are one object wherever they appear."""
    labels: dict[str, str] = {}
    nodes: dict[tuple[str, str], tuple[tuple[str, str], str]] = {}

    def label(version: str | None) -> str | None:
        if not version:
            return None
        found = labels.get(version)
        if found is None:
            found = labels[version] = f"v{version}"
        return found

    def node(namespace: str, name: str) -> tuple[tuple[str, str], str]:
        key = (namespace, name)
        found = nodes.get(key)
        if found is None:
            found = nodes[key] = (key, dataset_id(namespace, name))
        return found

    def written(run: IndexedRun) -> tuple[Written, ...]:
        if run.written is None:
            outputs = []
            for out in run.outputs:
                key, node_id = node(out.namespace, out.name)
                edge = Edge(run.job_id, node_id, label(out.version))
                outputs.append(Written(node_id, key, out.version, edge))
            run.written = tuple(outputs)
        return run.written

    readers: dict[tuple[str, str], list[Read]] = {}
    ns, nm, rid, ver, num = _columns(
        db,
        "SELECT namespace, name, run_id, version, TRY_CAST(version AS BIGINT) FROM io WHERE role = 'input' "
        "GROUP BY namespace, name, run_id, version ORDER BY namespace, name, min(rowid)",
    )
    current: tuple[str, str] | None = None
    reads: list[Read] = []
    edges: dict[tuple[str, str | None], Edge] = {}  # of the current dataset: (job id, version) → edge
    source = ""
    for n, m, r, v, k in zip(ns, nm, rid, ver, num, strict=True):
        if (n, m) != current:
            current, source = node(n, m)
            reads = readers[current] = []
            edges = {}
        run = runs[r]
        edge = edges.get((run.job_id, v))
        if edge is None:
            edge = edges[(run.job_id, v)] = Edge(source, run.job_id, label(v))
        reads.append((k, run.run_id, run.job_id, run.job_namespace, run.job_name, edge, written(run)))
    return readers


def build_index(db: Any, make_dataset: Any) -> LineageIndex:
    """Build the index from the DuckDB copy ``db`` (tables ``io`` and ``runs``); ``make_dataset(namespace,
    name, version, table)`` makes the dataset objects runs list (one object per distinct value)."""
    strings: dict[str, str] = {}

    def intern(value: Any) -> Any:
        return value if value is None else strings.setdefault(value, value)

    details = db.sql(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs ORDER BY run_id").to_arrow_table()
    runs: dict[str, IndexedRun] = {}
    jobs: dict[tuple[str, str], str] = {}
    run_ids = details.column("run_id").to_pylist()
    job_namespaces = details.column("job_namespace").to_pylist()
    job_names = details.column("job_name").to_pylist()
    for row, (run_id, job_namespace, job_name) in enumerate(
        zip(run_ids, job_namespaces, job_names, strict=True)
    ):
        key = (job_namespace, job_name)
        node = jobs.get(key)
        if node is None:
            node = jobs[key] = job_id(job_namespace, job_name)
            job_namespace, job_name = intern(job_namespace), intern(job_name)
        else:
            job_namespace, job_name = strings[job_namespace], strings[job_name]
        runs[run_id] = IndexedRun(row, job_namespace, job_name, node, run_id)
    del run_ids, job_namespaces, job_names

    # The rows LineageStore.run lists: DISTINCT (role, namespace, name, version, table, quality) of the run's
    # inputs and terminal outputs, ordered by role, name, version (then the rest, so ties are stable).
    datasets: dict[tuple[str, str, str | None, str | None], Any] = {}
    rid, role, ns, nm, ver, tbl, qual = _columns(
        db,
        "SELECT DISTINCT run_id, role, namespace, name, version, table_name, quality FROM io "
        f"WHERE role = 'input' OR event_type IN {TERMINAL_SQL} "
        "ORDER BY run_id, role, name, version, namespace, table_name, quality",
    )
    current: IndexedRun | None = None
    last = None
    for i in range(len(rid)):
        if rid[i] != last:
            last = rid[i]
            current = runs[last]
        assert current is not None
        identity = (ns[i], nm[i], ver[i], tbl[i])
        dataset = datasets.get(identity)
        if dataset is None:
            dataset = datasets[identity] = make_dataset(intern(ns[i]), intern(nm[i]), ver[i], intern(tbl[i]))
        if role[i] == "input":
            current.inputs.append(dataset)
        else:
            current.outputs.append(dataset)
            if qual[i]:
                current.quality.append((tbl[i] or nm[i], qual[i]))
    del rid, role, ns, nm, ver, tbl, qual, datasets

    producers: dict[tuple[str, str, str], str] = {}
    ns, nm, ver, rid = _columns(
        db,
        "SELECT namespace, name, version, arg_max(run_id, event_time) FROM io WHERE role = 'output' "
        f"AND event_type IN {TERMINAL_SQL} AND version IS NOT NULL GROUP BY namespace, name, version",
    )
    for n, m, v, r in zip(ns, nm, ver, rid, strict=True):
        producers[(strings.get(n, n), strings.get(m, m), v)] = r

    latest: dict[tuple[str, str], str] = {}
    ns, nm, ver = _columns(
        db,
        "SELECT namespace, name, version FROM (SELECT namespace, name, version, row_number() OVER ("
        "PARTITION BY namespace, name ORDER BY TRY_CAST(version AS BIGINT) DESC NULLS LAST, event_time DESC"
        f") AS n FROM io WHERE role = 'output' AND event_type IN {TERMINAL_SQL} AND version IS NOT NULL) "
        "WHERE n = 1",
    )
    for n, m, v in zip(ns, nm, ver, strict=True):
        latest[(n, m)] = v

    readers = _readers(db, runs)

    labels: dict[tuple[str, str], str] = {}
    ns, nm, tbl = _columns(
        db,
        "SELECT namespace, name, arg_min(table_name, rowid) FROM io WHERE table_name IS NOT NULL "
        "GROUP BY namespace, name",
    )
    for n, m, t in zip(ns, nm, tbl, strict=True):
        labels[(n, m)] = t

    by_table: dict[str, tuple[str, str]] = {}
    tbl, ns, nm = _columns(
        db,
        "SELECT table_name, namespace, name FROM (SELECT table_name, namespace, name, row_number() OVER ("
        "PARTITION BY table_name ORDER BY event_time DESC) AS n FROM io WHERE table_name IS NOT NULL) WHERE n = 1",
    )
    for t, n, m in zip(tbl, ns, nm, strict=True):
        by_table[t] = (n, m)

    by_text: dict[str, tuple[str, str]] = {}
    ns, nm = _columns(db, "SELECT DISTINCT namespace, name FROM io ORDER BY namespace, name")
    for n, m in zip(ns, nm, strict=True):
        by_text.setdefault(m, (n, m))
    for n, m in zip(ns, nm, strict=True):
        by_text[f"{n}:{m}"] = (n, m)  # a namespace:name match wins over a bare name

    column_lineage: dict[tuple[str, str, str, str], str] = {}
    rid, ns, nm, ver, raw = _columns(
        db,
        "SELECT run_id, namespace, name, version, arg_min(column_lineage, rowid) FROM io WHERE role = 'output' "
        "AND column_lineage IS NOT NULL AND version IS NOT NULL GROUP BY run_id, namespace, name, version",
    )
    for r, n, m, v, c in zip(rid, ns, nm, ver, raw, strict=True):
        column_lineage[(r, n, m, v)] = strings.setdefault(c, c)  # runs of one job repeat the same text
    del rid, ns, nm, ver, raw, tbl

    return LineageIndex(
        producers=producers,
        latest=latest,
        runs=runs,
        details=details,
        readers=readers,
        labels=labels,
        by_table=by_table,
        by_text=by_text,
        column_lineage=column_lineage,
    )


__all__ = ["IndexedRun", "LineageIndex", "Read", "Written", "build_index"]
