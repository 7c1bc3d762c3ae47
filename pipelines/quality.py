"""Quality checks where data is written and read: quarantine, the results table, checks and replay.

The write path (:func:`lakebed.pipelines.delta.commit`) runs a :class:`WriteCheck` on every write into a
table whose contract declares rules:

1. each batch is split by the Polars engine: rows failing an ``error`` row rule are held back for
   ``<table>__quarantine`` with the rules they broke, the run id and their source position (the
   ``_source_file``/``_source_line`` or ``_topic``/``_partition``/``_offset`` columns they carry);
2. after the last batch, table rules judge the written rows: an ``error`` failure blocks the commit
   (:class:`~lakebed.errors.QualityError`), a ``warn`` failure is recorded and the write goes on;
3. the quarantined rows are committed, then the data (so a crash between the two loses nothing); a
   write carrying application transactions fences its quarantine commit with them, so a retried write
   never quarantines twice;
4. every rule's result lands in the ``quality_results`` system table with the data's Delta version.

:func:`check_table` checks a table (at any version) with either engine; :func:`replay` re-runs
quarantined rows through the write path after a contract fix, exactly once.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import datetime as dt
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, Transaction

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import ContractError, QualityError, TableNotFoundError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.metrics import QUALITY_RESULTS, QUARANTINED_ROWS
from lakebed.pipelines.catalog import Catalog
from lakebed.quality.results import RAW_COLUMN, REASON_COLUMN, RULES_COLUMN, CheckRun, RuleResult
from lakebed.quality.rules import RuleSet, compile_rules
from lakebed.schemas.contract import TableContract
from lakebed.storage import arrow_dataset

if TYPE_CHECKING:
    from lakebed.pipelines.delta import RunContext, WriteMode
    from lakebed.quality.polars_engine import RowOutcome

QUARANTINE_SUFFIX = "__quarantine"
RESULTS_TABLE = "quality_results"
QUARANTINE_ID = "_quarantine_id"
CONTRACT_COLUMN = "_contract"
QUARANTINE_COLUMNS = (
    RULES_COLUMN,
    REASON_COLUMN,
    RAW_COLUMN,
    QUARANTINE_ID,
    CONTRACT_COLUMN,
    "_run_id",
    "_quarantined_at",
)
REPLAY_APP_ID = "quality-replay:{table}"
Engine = Literal["polars", "gx"]

RESULTS_SCHEMA = pa.schema(
    [
        pa.field("check_id", pa.string(), nullable=False),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("delta_version", pa.int64()),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("level", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("column_name", pa.string()),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("checked_rows", pa.int64(), nullable=False),
        pa.field("failed_rows", pa.int64(), nullable=False),
        pa.field("observed", pa.string()),
        pa.field("passed", pa.bool_(), nullable=False),
        pa.field("blocked", pa.bool_(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("job", pa.string()),
        pa.field("checked_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
RESULTS_CONTRACT = TableContract.from_arrow(RESULTS_TABLE, RESULTS_SCHEMA)
_T = TypeVar("_T")


def quarantine_table(table: str) -> str:
    """The name of the quarantine table of ``table``."""
    return f"{table}{QUARANTINE_SUFFIX}"


def checks_writes(contract: TableContract | None, kind: str) -> bool:
    """Whether writes of ``kind`` into a table under ``contract`` run quality checks."""
    return kind == "table" and contract is not None and contract.has_rules()


class WriteCheck:
    """The quality checks of one write (see the module docstring for the order of events)."""

    def __init__(
        self,
        table: str,
        contract: TableContract,
        *,
        run: RunContext,
        mode: WriteMode,
        existing: DeltaTable | None,
        overwrite_predicate: str | None,
        app_transactions: Sequence[Transaction],
        quarantine_key: Sequence[str] = (),
        config: LakebedConfig,
        catalog: Catalog,
    ) -> None:
        self.table = table
        self.quarantine_key = list(quarantine_key)
        # The Polars engine is imported only by writes that check rules (an ingest without rules never
        # loads Polars: less memory, faster start).
        from lakebed.quality.polars_engine import RowChecker, TableRuleState

        self.rules = compile_rules(contract)
        self.checker = RowChecker(self.rules, contract)
        self.state = TableRuleState(self.rules)
        self.run = run
        self.mode = mode
        self.existing = existing
        self.overwrite_predicate = overwrite_predicate
        self.app_transactions = list(app_transactions)
        self.config = config
        self.catalog = catalog
        self.rows = 0
        self.failed: Counter[str] = Counter()
        self.quarantined: list[pa.Table] = []
        self.results: list[RuleResult] = []
        # The writer may pull our batches on one of its own threads, where the caller's context (the
        # lineage run being recorded) is unknown: work done after the last batch runs in the caller's.
        self._context = contextvars.copy_context()

    def target_schema(self, incoming: pa.Schema) -> pa.Schema:
        """The schema of the checked batches (text columns converted to their declared types)."""
        return self.checker.target_schema(incoming)

    @property
    def quarantined_rows(self) -> int:
        return sum(t.num_rows for t in self.quarantined)

    def apply(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The valid rows of ``batches``; after the last one, judge the table rules and quarantine.

        Consecutive batches of one schema are checked together, up to ``batch_rows`` rows per Polars pass
        (readers hand over ~1 MiB blocks: many small batches, each pass has fixed costs). Each group is
        checked on a worker thread while the writer takes the previous one (Polars releases the GIL), so
        checking overlaps reading and writing; at most two groups are in flight."""
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lakebed-quality") as pool:
            pending: concurrent.futures.Future[tuple[int, RowOutcome]] | None = None
            for group in self._groups(batches):
                following = pool.submit(self._check, group)
                if pending is not None:
                    yield from self._take(*pending.result())
                pending = following
            if pending is not None:
                yield from self._take(*pending.result())
        # Still inside the Delta writer (before it commits): a blocking failure here aborts the write.
        _outside_writer(self._context, self._finish)

    def _groups(self, batches: Iterator[pa.RecordBatch]) -> Iterator[list[pa.RecordBatch]]:
        group: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            if group and (rows + batch.num_rows > self.config.batch_rows or batch.schema != group[0].schema):
                yield group
                group, rows = [], 0
            group.append(batch)
            rows += batch.num_rows
        if group:
            yield group

    def _check(self, group: list[pa.RecordBatch]) -> tuple[int, RowOutcome]:
        return sum(b.num_rows for b in group), self.checker.check_together(group)

    def _take(self, rows: int, outcome: RowOutcome) -> Iterator[pa.RecordBatch]:
        self.rows += rows
        self.failed.update(outcome.failed)
        if outcome.quarantined is not None:
            self.quarantined.append(outcome.quarantined)
        for valid in outcome.valid:
            self.state.update(valid)
            if valid.num_rows:
                yield valid

    def _finish(self) -> None:
        self.results = self._row_results() + self.state.evaluate(
            existing_rows=self._existing_rows(), existing_keys=self._existing_keys()
        )
        blocking = [r for r in self.results if r.blocking and r.rule.level == "table"]
        if blocking:
            self.record(None, blocked=True)
            described = "; ".join(f"{r.rule.name} ({r.rule.description}): {r.observed}" for r in blocking)
            raise QualityError(
                f"write to table {self.table!r} blocked by quality rule(s): {described}",
                table=self.table,
                rules=[r.rule.name for r in blocking],
            )
        if self.quarantined:
            self._write_quarantine()

    def _row_results(self) -> list[RuleResult]:
        from lakebed.quality.polars_engine import row_results

        first = self.quarantined[0] if self.quarantined else None
        return row_results(self.rules, self.failed, self.rows, first)

    def _existing_rows(self) -> int | None:
        if self.existing is None or (self.mode == "overwrite" and self.overwrite_predicate is None):
            return 0
        if self.mode != "append":
            return None  # a merge or a partial overwrite: the resulting count is not known in advance
        from lakebed.pipelines.delta import table_size

        return table_size(self.existing)[0]

    def _existing_keys(self) -> pa.Table | None:
        rule = next((r for r in self.rules.table_rules if r.kind == "unique_keys"), None)
        if rule is None or self.existing is None or self.mode != "append":
            return None
        return arrow_dataset(self.existing).to_table(columns=list(rule.columns))

    def _write_quarantine(self) -> None:
        from lakebed.pipelines.delta import commit

        name = quarantine_table(self.table)
        transactions = [
            Transaction(app_id=f"quarantine:{t.app_id}", version=t.version, last_updated=t.last_updated)
            for t in self.app_transactions
        ]
        if transactions and _already_applied(name, transactions, self.catalog):
            return  # an earlier attempt of this very write quarantined these rows
        rows = pa.concat_tables(self.quarantined, promote_options="permissive")
        if self.quarantine_key:
            rows = _not_yet_quarantined(rows, name, self.quarantine_key, self.catalog)
            if not rows.num_rows:
                return
        rows = _stamp(rows, self.run.run_id, self.rules.fingerprint)
        QUARANTINED_ROWS.labels(self.table).inc(rows.num_rows)
        commit(
            name,
            rows,
            kind="rejects",
            run=self.run,
            app_transactions=transactions,
            config=self.config,
            catalog=self.catalog,
        )

    def record(self, version: int | None, *, blocked: bool = False) -> CheckRun:
        """Write this write's results (at the data's Delta ``version``) to the results table."""
        run = CheckRun(self.table, tuple(self.results), version, self.run.run_id, str(uuid.uuid4()))
        write_results(run, run_context=self.run, blocked=blocked, config=self.config, catalog=self.catalog)
        return run


def _stamp(rows: pa.Table, run_id: str, fingerprint: str) -> pa.Table:
    """Quarantined rows with their id, the contract that failed them, the run and the time."""
    now = dt.datetime.now(dt.UTC)
    n = rows.num_rows
    rows = rows.append_column(QUARANTINE_ID, pa.array([str(uuid.uuid4()) for _ in range(n)], pa.string()))
    rows = rows.append_column(CONTRACT_COLUMN, pa.array([fingerprint] * n, pa.string()))
    rows = rows.append_column("_run_id", pa.array([run_id] * n, pa.string()))
    return rows.append_column("_quarantined_at", pa.array([now] * n, pa.timestamp("us", tz="UTC")))


def _not_yet_quarantined(rows: pa.Table, name: str, key: Sequence[str], catalog: Catalog) -> pa.Table:
    """``rows`` without those whose source record (``key`` columns) an earlier attempt quarantined."""
    import polars as pl

    entry = catalog.find(name)
    if entry is None:
        return rows
    held = pl.from_arrow(arrow_dataset(DeltaTable(entry.uri)).to_table(columns=list(key)))
    new = pl.from_arrow(rows.select(list(key)))
    assert isinstance(held, pl.DataFrame) and isinstance(new, pl.DataFrame)
    held = held.cast(dict(new.schema.items()), strict=False).unique()
    fresh = new.with_row_index("__row").join(held, on=list(key), how="anti")["__row"]
    return rows.take(fresh.to_arrow())


def _already_applied(name: str, transactions: Sequence[Transaction], catalog: Catalog) -> bool:
    entry = catalog.find(name)
    if entry is None:
        return False
    try:
        table = DeltaTable(entry.uri)
    except Exception:
        return False
    return all((table.transaction_version(t.app_id) or -1) >= t.version for t in transactions)


def _outside_writer(context: contextvars.Context, function: Callable[..., _T], *args: Any) -> _T:
    """Run ``function`` in ``context`` on a fresh thread: delta-rs cannot open or write a table from inside
    the runtime that is consuming our batches (it would panic), and batches are consumed there."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(context.run, function, *args).result()


def write_results(
    run: CheckRun,
    *,
    run_context: RunContext,
    blocked: bool = False,
    config: LakebedConfig | None = None,
    catalog: Catalog | None = None,
) -> int | None:
    """Append one row per rule of ``run`` to the ``quality_results`` table; returns its Delta version."""
    from lakebed.pipelines.delta import commit

    if not run.results:
        return None
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "check_id": run.check_id or str(uuid.uuid4()),
            "table_name": run.table,
            "delta_version": run.version,
            "rule": r.rule.name,
            "kind": r.rule.kind,
            "level": r.rule.level,
            "severity": r.rule.severity,
            "column_name": ",".join(r.rule.columns) or None,
            "engine": r.engine,
            "checked_rows": r.checked_rows,
            "failed_rows": r.failed_rows,
            "observed": r.observed,
            "passed": r.passed,
            "blocked": blocked and r.blocking,
            "run_id": run.run_id,
            "job": run_context.job,
            "checked_at": now,
        }
        for r in run.results
    ]
    table = pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)
    for r in run.results:
        QUALITY_RESULTS.labels(run.table, r.rule.name, _outcome(r)).inc()
    return commit(
        RESULTS_TABLE,
        table,
        kind="system",
        contract=RESULTS_CONTRACT,
        run=run_context,
        config=config,
        catalog=catalog,
    ).version


def _outcome(result: RuleResult) -> str:
    """``passed``, ``warned`` (a failed ``warn`` rule) or ``failed``."""
    if result.passed:
        return "passed"
    return "failed" if result.rule.severity == "error" else "warned"


# --- checking a table -----------------------------------------------------------------------------


def table_contract(table: str, catalog: Catalog) -> TableContract:
    """The contract registered for ``table``; a clear error when it has none or no rules."""
    entry = catalog.get(table)
    if entry.contract is None or not entry.contract.has_rules():
        raise ContractError(f"table {table!r} has no contract with quality rules to check")
    return entry.contract


def check_table(
    table: str,
    *,
    version: int | None = None,
    engine: Engine = "polars",
    contract: TableContract | None = None,
    run: RunContext | None = None,
    record: bool = True,
    config: LakebedConfig | None = None,
) -> CheckRun:
    """Check every rule of ``table``'s contract on the table (at ``version``, default the latest).

    Row rules count failing rows over the whole table; table rules judge the whole table, freshness
    against the time the version was committed. Results are recorded in ``quality_results`` unless
    ``record=False``.
    """
    from lakebed.pipelines.delta import RunContext, commit_time
    from lakebed.pipelines.read import open_table

    config = config or get_config()
    catalog = Catalog(config)
    contract = contract or table_contract(table, catalog)
    run = run or RunContext(job=f"quality_check:{table}")
    with lineage_run(run, config=config) as lineage:
        delta = open_table(table, version=version, config=config)  # an input at the version checked
        data = arrow_dataset(delta).to_table()
        committed_at = commit_time(delta)
        rules = compile_rules(contract)
        if engine == "gx":
            from lakebed.quality.gx_engine import run_suite

            results = run_suite(contract, data, now=committed_at)
        else:
            results = evaluate(rules, contract, data, now=committed_at)
        checked = CheckRun(table, tuple(results), delta.version(), run.run_id, str(uuid.uuid4()))
        # The checked version carries the results as its dataQualityAssertions facet.
        lineage.add_input(table_dataset(table, delta.table_uri, delta.version(), quality=checked))
        if record:
            write_results(checked, run_context=run, config=config, catalog=catalog)
    return checked


def evaluate(
    rules: RuleSet, contract: TableContract, data: pa.Table, *, now: dt.datetime
) -> list[RuleResult]:
    """Every rule of ``rules`` on ``data`` as a whole, with the Polars engine (nothing is split off)."""
    from lakebed.quality.polars_engine import RowChecker, TableRuleState, row_results

    checker = RowChecker(rules, contract)
    state = TableRuleState(rules)
    combined = data.combine_chunks()
    batch = combined.to_batches()[0] if combined.num_rows else pa.RecordBatch.from_pylist([], data.schema)
    outcome = checker.check(batch)
    state.update(batch)
    results = row_results(rules, outcome.failed, data.num_rows, outcome.quarantined)
    return results + state.evaluate(existing_rows=0, existing_keys=None, now=now)


# --- replay ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: quarantined rows re-run, committed to the table and quarantined again; the
    quarantine version replayed up to; ``skipped`` says why nothing ran."""

    table: str
    replayed: int = 0
    committed: int = 0
    requarantined: int = 0
    quarantine_version: int | None = None
    version: int | None = None
    skipped: str | None = None


def replay(table: str, *, run: RunContext | None = None, config: LakebedConfig | None = None) -> ReplayResult:
    """Re-run the rows quarantined for ``table`` since the last replay through the write path, under the
    table's current contract: rows that pass now are committed, the rest are quarantined again.

    Exactly once: the data commit carries ``Transaction("quality-replay:<table>", V)``, V being the
    quarantine version replayed up to, so a second replay or a rerun after a crash finds nothing new.
    Rows quarantined under the current contract are not replayed (they would fail again): fix the
    contract (or the data source) first.
    """
    from lakebed.pipelines.delta import RunContext, commit

    config = config or get_config()
    catalog = Catalog(config)
    entry = catalog.get(table)
    qname = quarantine_table(table)
    qentry = catalog.find(qname)
    if qentry is None:
        return ReplayResult(table, skipped="nothing was ever quarantined")
    quarantine = DeltaTable(qentry.uri)
    upto = quarantine.version()
    app_id = REPLAY_APP_ID.format(table=table)
    stored = DeltaTable(entry.uri).transaction_version(app_id)
    done = -1 if stored is None else stored
    if done >= upto:
        return ReplayResult(
            table, quarantine_version=done, skipped="no rows quarantined since the last replay"
        )
    rows = _pending(quarantine, done, upto)
    contract = entry.contract
    if contract is not None and contract.has_rules() and CONTRACT_COLUMN in rows.column_names:
        current = compile_rules(contract).fingerprint
        if rows.num_rows and pc.all(pc.equal(rows.column(CONTRACT_COLUMN), current)).as_py():
            return ReplayResult(
                table,
                quarantine_version=done,
                skipped=f"all {rows.num_rows} pending row(s) were quarantined under the current contract",
            )
    run = run or RunContext(job=f"quality_replay:{table}")
    before = _quarantined_count(catalog, qname)
    with lineage_run(run, config=config, inputs=[table_dataset(qname, qentry.uri, upto)]):
        result = commit(
            table,
            _restore(rows),
            run=run,
            app_transactions=[Transaction(app_id=app_id, version=upto)],
            metadata={"lakebed.replay": json.dumps({"quarantine": qname, "after": done, "upto": upto})},
            config=config,
            catalog=catalog,
        )
    return ReplayResult(
        table,
        replayed=rows.num_rows,
        committed=result.rows,
        requarantined=_quarantined_count(catalog, qname) - before,
        quarantine_version=upto,
        version=result.version,
    )


def _pending(quarantine: DeltaTable, done: int, upto: int) -> pa.Table:
    """Quarantined rows added after version ``done`` up to ``upto`` (the table is append-only)."""
    current = arrow_dataset(DeltaTable(quarantine.table_uri, version=upto)).to_table()
    if done < 0:
        return current
    seen = arrow_dataset(DeltaTable(quarantine.table_uri, version=done)).to_table(columns=[QUARANTINE_ID])
    keep = pc.invert(pc.is_in(current.column(QUARANTINE_ID), value_set=seen.column(QUARANTINE_ID)))
    return current.filter(keep)


def _restore(rows: pa.Table) -> pa.Table:
    """Quarantined rows as data again: the original text of converted columns put back."""
    raw = rows.column(RAW_COLUMN).to_pylist() if RAW_COLUMN in rows.column_names else []
    data = rows.drop_columns([c for c in QUARANTINE_COLUMNS if c in rows.column_names])
    originals = [json.loads(r) if r else {} for r in raw]
    for name in sorted({k for o in originals for k in o}):
        text = pc.cast(data.column(name), pa.string())
        restored = [
            o.get(name, v) if name in o else v for o, v in zip(originals, text.to_pylist(), strict=True)
        ]
        data = data.set_column(data.schema.get_field_index(name), name, pa.array(restored, pa.string()))
    return data


def _quarantined_count(catalog: Catalog, name: str) -> int:
    from lakebed.pipelines.delta import table_size

    entry = catalog.find(name)
    return table_size(DeltaTable(entry.uri))[0] if entry is not None else 0


def quarantine_rows(table: str, *, config: LakebedConfig | None = None) -> pa.Table:
    """Every quarantined row of ``table`` (an empty table when none were ever quarantined)."""
    from lakebed.pipelines.read import read_table

    try:
        return read_table(quarantine_table(table), config=config)
    except TableNotFoundError:
        return pa.table({})


__all__ = [
    "QUARANTINE_SUFFIX",
    "RESULTS_SCHEMA",
    "RESULTS_TABLE",
    "ReplayResult",
    "WriteCheck",
    "check_table",
    "checks_writes",
    "evaluate",
    "quarantine_rows",
    "quarantine_table",
    "replay",
    "write_results",
]
