"""Running a model (docs/models.md): its SELECT over its inputs pinned at the versions read now, written
through the one write path (contract, quality rules, quarantine, drift policy, lineage).

Exactly once: the model's commit carries one application transaction per input, ``model:<model>:<input>``
at the input version the run consumed, atomically with the rows. An incremental (or merge) run reads only
the files its incremental input added since the version its last commit recorded; a crash before the commit
leaves the table as it was and the rerun reads from the same version, a crash after it finds the versions
recorded. A commit in between that is not an append (an overwrite, merge, delete or tier move of the input)
makes the run a full rebuild, said in its result.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, Transaction

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import ModelError, ProjectError, TableNotFoundError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, WriteMode, commit, open_delta
from lakebed.pipelines.deltalog import appended_files
from lakebed.pipelines.models.columns import ColumnSources, column_lineage
from lakebed.pipelines.read import local_files, register, register_files, tiers
from lakebed.pipelines.tiering import Tiers, view_schema
from lakebed.schemas.contract import TableContract
from lakebed.schemas.models import Model, SqlModel
from lakebed.schemas.python_models import PythonModel
from lakebed.storage import arrow_dataset

if TYPE_CHECKING:
    import duckdb

    from lakebed.lineage.events import DatasetRef
    from lakebed.schemas.project import Project

APP_ID = "model:{model}:{input}"
METADATA_KEY = "lakebed.model"
Status = Literal["rebuilt", "incremental", "up_to_date"]


@dataclass(frozen=True)
class ModelResult:
    """What one run of a model did: ``rebuilt`` (every input row read), ``incremental`` (the new rows of
    its incremental input), or ``up_to_date`` (its code and inputs unchanged since its last commit)."""

    model: str
    status: Status
    rows: int = 0
    version: int | None = None
    inputs: dict[str, int] = field(default_factory=dict)  # input table → the version read
    reason: str | None = None  # why a rebuild, when the model could have run incrementally
    columns: ColumnSources = field(default_factory=dict)  # output column → input columns (lineage)

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "status": self.status,
            "rows": self.rows,
            "version": self.version,
            "inputs": self.inputs,
            "reason": self.reason,
        }


def run_model(
    project: Project,
    name: str,
    *,
    full_refresh: bool = False,
    run: RunContext | None = None,
    config: LakebedConfig | None = None,
) -> ModelResult:
    """Build model ``name`` of ``project`` once (see the module docstring)."""
    model = project.models.get(name)
    if model is None:
        known = ", ".join(project.models) or "none"
        raise ProjectError(f"{project.root}: no model named {name!r} (models: {known})")
    config = config or get_config()
    catalog = Catalog(config)
    run = run or RunContext(job=f"model:{name}")
    entry = catalog.find(name)
    existing = open_delta(entry.uri) if entry is not None else None
    consumed = _consumed(existing, model)
    with lineage_run(run, config=config) as lineage:
        found = {table: _input(model, table, config) for table in model.inputs}
        versions = {table: f.hot.version() for table, f in found.items()}
        recorded = _recorded(existing)
        if (
            not full_refresh
            and recorded.get("code_version") == model.code_version
            and all(consumed.get(t) == v for t, v in versions.items())
        ):
            return ModelResult(
                name, "up_to_date", version=existing.version() if existing else None, inputs=versions
            )
        incremental, reason, new = _plan(model, existing, recorded, consumed, found, full_refresh)
        with contextlib.ExitStack() as stack:
            reader, columns = _compute(model, found, incremental, new, config, stack)
            for column, sources in columns.items():
                lineage.add_column_lineage(
                    name, column, [(_ref(t, found[t]), c, how) for t, c, how in sources]
                )
            result = commit(
                name,
                reader,
                mode=_mode(model, incremental),
                keys=model.options.keys or None,
                partition_by=model.options.partition_by or None,
                drift=model.options.drift,
                contract=_contract(project, model),
                run=run,
                metadata={METADATA_KEY: json.dumps({"code_version": model.code_version, "inputs": versions})},
                app_transactions=[
                    Transaction(app_id=APP_ID.format(model=name, input=t), version=v)
                    for t, v in versions.items()
                ],
                opened=existing,
                config=config,
                catalog=catalog,
            )
    status: Status = "incremental" if incremental is not None else "rebuilt"
    return ModelResult(
        name,
        status,
        rows=result.rows,
        version=result.version,
        inputs=versions,
        reason=reason,
        columns=columns,
    )


def _compute(
    model: Model,
    found: dict[str, Tiers],
    incremental: str | None,
    new: set[str],
    config: LakebedConfig,
    stack: contextlib.ExitStack,
) -> tuple[pa.RecordBatchReader, ColumnSources]:
    """The model's rows as a stream (read by the write path) and its column lineage; the incremental
    input is only its files named ``new`` (those added since the last run)."""
    if isinstance(model, SqlModel):
        connection = stack.enter_context(_connection(config))
        for table, tiered in found.items():
            if table != incremental:
                register(connection, table, tiered)
                continue
            files = local_files(tiered)
            added = [f for f in files or () if f.rsplit("/", 1)[-1] in new]
            if files is None or not added:
                connection.register(table, _added(tiered, new))
            else:
                register_files(connection, table, added)
        columns = column_lineage(model, {t: f.hot.schema().to_arrow() for t, f in found.items()})
        return connection.sql(model.sql).to_arrow_reader(_DUCKDB_BATCH_ROWS), columns
    assert isinstance(model, PythonModel)
    import polars as pl

    frames = {
        t: pl.scan_pyarrow_dataset(_added(f, new) if t == incremental else f.dataset(view_schema(f.hot)))
        for t, f in found.items()
    }
    output = model.function(**frames)
    declared = {
        out: [(t, c, "DIRECT:TRANSFORMATION") for t, c in refs] for out, refs in model.columns.items()
    }
    return _as_reader(model, output, config.batch_rows), declared


def _as_reader(model: Model, output: object, batch_rows: int) -> pa.RecordBatchReader:
    import polars as pl

    if isinstance(output, pl.LazyFrame):
        output = output.collect(engine="streaming")
    if isinstance(output, pl.DataFrame):
        output = output.to_arrow()
    if isinstance(output, pa.Table):
        return pa.RecordBatchReader.from_batches(output.schema, output.to_batches(max_chunksize=batch_rows))
    if isinstance(output, pa.RecordBatchReader):
        return output
    raise ModelError(
        f"model {model.name!r} ({model.path}) returned {type(output).__name__}: a model returns a pyarrow "
        "Table or RecordBatchReader, or a polars DataFrame or LazyFrame"
    )


def _input(model: Model, table: str, config: LakebedConfig) -> Tiers:
    try:
        return tiers(table, config=config)  # also an input of the run, at the version read
    except TableNotFoundError:
        raise TableNotFoundError(
            f"model {model.name!r} ({model.path}) reads table {table!r}, which has not been written yet: "
            "build what makes it first"
        ) from None


def last_code_version(table: DeltaTable | None) -> object:
    """The code version the model's last commit into ``table`` recorded (None when there is none)."""
    return _recorded(table).get("code_version")


def _consumed(existing: DeltaTable | None, model: Model) -> dict[str, int]:
    if existing is None:
        return {}
    versions = {
        t: existing.transaction_version(APP_ID.format(model=model.name, input=t)) for t in model.inputs
    }
    return {t: v for t, v in versions.items() if v is not None}


def _recorded(existing: DeltaTable | None) -> dict[str, object]:
    """What the model's last commit recorded (code version and input versions), {} when none."""
    if existing is None:
        return {}
    for commit_info in existing.history(20):
        if METADATA_KEY in commit_info:
            recorded = json.loads(str(commit_info[METADATA_KEY]))
            return recorded if isinstance(recorded, dict) else {}
    return {}


def _plan(
    model: Model,
    existing: DeltaTable | None,
    recorded: dict[str, object],
    consumed: dict[str, int],
    found: dict[str, Tiers],
    full_refresh: bool,
) -> tuple[str | None, str | None, set[str]]:
    """The input read incrementally (None: a full rebuild), for a rebuild of an incremental model why, and
    the names of the files that input added since the version the last run consumed."""
    table = model.incremental_input
    if table is None:
        return None, None, set()
    if full_refresh:
        return None, "--full-refresh", set()
    if existing is None or table not in consumed:
        return None, "first run", set()
    if recorded.get("code_version") != model.code_version:
        return None, "the model's code or options changed", set()
    if found[table].tiered:
        return None, f"input {table!r} is tiered: its rows move between tiers", set()
    hot = found[table].hot
    added = appended_files(hot.table_uri, consumed[table], hot.version())
    if added is not None:
        return table, None, added
    # A remote table, a cleaned-up log or a commit that removed files: compare the versions' file lists.
    before = {
        uri.rsplit("/", 1)[-1] for uri in DeltaTable(hot.table_uri, version=consumed[table]).file_uris()
    }
    now = {uri.rsplit("/", 1)[-1] for uri in hot.file_uris()}
    if not before <= now:
        reason = f"input {table!r} had a commit other than an append since version {consumed[table]}"
        return None, reason, set()
    return table, None, now - before


def _added(found: Tiers, new: set[str]) -> ds.Dataset:
    """The rows of the files named ``new`` of ``found``'s hot table (those added since the last run)."""
    hot = found.hot
    everything = arrow_dataset(hot, view_schema(hot))
    assert isinstance(everything, ds.FileSystemDataset)
    fragments = [f for f in everything.get_fragments() if f.path.rsplit("/", 1)[-1] in new]
    return ds.FileSystemDataset(fragments, everything.schema, everything.format, everything.filesystem)


def _mode(model: Model, incremental: str | None) -> WriteMode:
    if incremental is None:
        return "overwrite"
    return "merge" if model.options.materialized == "merge" else "append"


def _contract(project: Project, model: Model) -> TableContract | None:
    """The model's contract (the project checked that its file names the model's table)."""
    return project.contracts.get(model.name) if model.options.contract is not None else None


def _ref(table: str, found: Tiers) -> DatasetRef:
    return table_dataset(table, found.hot.table_uri, found.hot.version())


def _connection(config: LakebedConfig) -> duckdb.DuckDBPyConnection:
    """A connection to this process's DuckDB database for ``config``'s home, which spills to the home's
    temporary folder instead of running out of memory. Each run gets a cursor of its own (its inputs are
    temporary views, seen by it alone): opening a database costs ~15 ms, a cursor under 1 ms."""
    import duckdb

    spill = config.system_root / "duckdb_tmp"
    with _DATABASES_LOCK:
        database = _DATABASES.get(spill)
        if database is None:
            spill.mkdir(parents=True, exist_ok=True)
            settings: dict[str, str | bool | int | float | list[str]] = {
                "temp_directory": str(spill),
                "preserve_insertion_order": False,
            }
            database = _DATABASES[spill] = duckdb.connect(config=settings)
        return database.cursor()


_DUCKDB_BATCH_ROWS = 16_384
"""Rows per batch DuckDB hands the write path: DuckDB computes ahead of its reader, and smaller batches
keep what waits small (a 3.3M-row model output peaked ~50 MiB lower than with 131,072-row batches)."""
_DATABASES: dict[Path, duckdb.DuckDBPyConnection] = {}
_DATABASES_LOCK = threading.Lock()


__all__ = ["APP_ID", "ModelResult", "last_code_version", "run_model"]
