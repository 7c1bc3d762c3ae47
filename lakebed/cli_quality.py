"""Quality commands of the ``lakebed`` CLI: ``quality check|replay|quarantine|results|rules``.

Heavy layers are imported inside the commands, so ``lakebed --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import click

from lakebed.cli_output import OutputFormat, emit, emit_arrow, format_option
from lakebed.config import get_config

if TYPE_CHECKING:
    from lakebed.quality.results import CheckRun


@click.group("quality")
def quality() -> None:
    """Quality rules from table contracts: checks, quarantine, replay, results."""


@quality.command("check")
@click.argument("table")
@click.option("--version", type=int, default=None, help="Check this Delta version (default: the latest).")
@click.option(
    "--engine",
    type=click.Choice(["polars", "gx"]),
    default="polars",
    show_default=True,
    help="polars: the write path's engine; gx: the contract's Great Expectations suite.",
)
@format_option
def check(table: str, version: int | None, engine: Literal["polars", "gx"], fmt: OutputFormat) -> None:
    """Check TABLE against its contract and record the results, one row per rule (result: pass, warn or
    FAIL); exit status 1 when an error rule fails."""
    from lakebed.pipelines.quality import check_table

    run = check_table(table, version=version, engine=engine, config=get_config())
    emit(
        _result_rows(run),
        CHECK_COLUMNS,
        fmt,
        title=f"{run.table} version {run.version} ({engine})",
        table_columns=["rule", "severity", "result", "failed_rows", "observed"],
        styles={"result": {"pass": "green", "FAIL": "red", "warn": "yellow"}},
    )
    if not run.passed:
        failed = ", ".join(r.rule.name for r in run.results if r.blocking)
        click.secho(f"error: {table} version {run.version} fails error rule(s): {failed}", fg="red", err=True)
        sys.exit(1)


@quality.command("replay")
@click.argument("table")
def replay_command(table: str) -> None:
    """Re-run TABLE's quarantined rows under its current contract (after a fix), exactly once."""
    from lakebed.pipelines.quality import replay

    result = replay(table, config=get_config())
    if result.skipped:
        click.echo(f"{table}: nothing replayed: {result.skipped}")
        return
    click.echo(
        f"{table}: replayed {result.replayed:,} quarantined row(s) (up to quarantine version "
        f"{result.quarantine_version}): {result.committed:,} committed at version {result.version}, "
        f"{result.requarantined:,} quarantined again"
    )


QUARANTINE_OUTPUT = ["rules", "reason", "source", "row", "quarantined_at", "run_id"]
POSITION_COLUMNS = ("_source_file", "_source_line", "_topic", "_partition", "_offset")


@quality.command("quarantine")
@click.argument("table")
@click.option("--limit", type=int, default=20, show_default=True)
@format_option
def quarantine(table: str, limit: int, fmt: OutputFormat) -> None:
    """Show TABLE's quarantined rows: the rules they broke, why, where they came from (file and line, or
    topic, partition and offset) and the row itself."""
    from lakebed.pipelines.quality import QUARANTINE_COLUMNS, quarantine_rows
    from lakebed.quality.results import REASON_COLUMN, RULES_COLUMN

    rows = quarantine_rows(table, config=get_config())
    if not rows.num_rows:
        if fmt == "table":
            click.echo(f"{table}: no quarantined rows")
        else:
            emit([], QUARANTINE_OUTPUT, fmt)
        return
    position = [c for c in POSITION_COLUMNS if c in rows.column_names]
    data = [c for c in rows.column_names if c not in QUARANTINE_COLUMNS and c not in position]

    def summaries() -> Iterator[dict[str, object]]:
        for batch in rows.slice(0, max(limit, 0)).to_batches():
            for record in batch.to_pylist():
                yield {
                    "rules": record.get(RULES_COLUMN),
                    "reason": record.get(REASON_COLUMN),
                    "source": {c: record[c] for c in position},
                    "row": {c: record[c] for c in data},
                    "quarantined_at": record.get("_quarantined_at"),
                    "run_id": record.get("_run_id"),
                }

    emit(
        summaries(),
        QUARANTINE_OUTPUT,
        fmt,
        title=f"{table}__quarantine ({rows.num_rows:,} rows)",
        table_columns=["rules", "source", "row"],
        count=True,
    )


@quality.command("results")
@click.argument("table", required=False)
@click.option("--limit", type=int, default=30, show_default=True)
@click.option("--failed", is_flag=True, help="Only rules that did not pass.")
@format_option
def results(table: str | None, limit: int, failed: bool, fmt: OutputFormat) -> None:
    """Recorded check results, newest first (every write and every `quality check`)."""
    from lakebed.pipelines.quality import RESULTS_TABLE
    from lakebed.pipelines.read import sql

    where = []
    if table:
        where.append(f"table_name = '{table.replace(chr(39), chr(39) * 2)}'")
    if failed:
        where.append("NOT passed")
    query = (
        "SELECT checked_at, table_name, delta_version, rule, severity, engine, passed, failed_rows, observed"
        f" FROM {RESULTS_TABLE}{' WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY checked_at DESC, rule LIMIT {int(limit)}"
    )
    emit_arrow(sql(query, config=get_config()), fmt, title="quality_results")


@quality.command("rules")
@click.argument("table")
@click.option("--gx", "as_gx", is_flag=True, help="Print the Great Expectations suite instead.")
@format_option
def rules(table: str, as_gx: bool, fmt: OutputFormat) -> None:
    """The rules TABLE's contract compiles to (or, with --gx, its Great Expectations suite as JSON)."""
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.quality import table_contract
    from lakebed.quality.rules import compile_rules

    contract = table_contract(table, Catalog(get_config()))
    if as_gx:
        from lakebed.quality.gx_engine import build_suite

        click.echo(json.dumps(build_suite(contract).to_json_dict(), indent=2, default=str))
        return
    rows = (
        {"rule": r.name, "level": r.level, "severity": r.severity, "checks": r.description}
        for r in compile_rules(contract).rules
    )
    emit(rows, ["rule", "level", "severity", "checks"], fmt, title=f"rules of {table}")


CHECK_COLUMNS = [
    "table",
    "version",
    "check_id",
    "rule",
    "kind",
    "severity",
    "result",
    "passed",
    "failed_rows",
    "checked_rows",
    "observed",
    "engine",
    "samples",
]


def _result_rows(run: CheckRun) -> Iterator[dict[str, object]]:
    for r in run.results:
        yield {
            "table": run.table,
            "version": run.version,
            "check_id": run.check_id,
            "rule": r.rule.name,
            "kind": r.rule.kind,
            "severity": r.rule.severity,
            "result": "pass" if r.passed else ("FAIL" if r.blocking else "warn"),
            "passed": r.passed,
            "failed_rows": r.failed_rows,
            "checked_rows": r.checked_rows,
            "observed": r.observed,
            "engine": r.engine,
            "samples": list(r.samples),
        }


__all__ = ["quality"]
