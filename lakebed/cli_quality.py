"""Quality commands of the ``lakebed`` CLI: ``quality check|replay|quarantine|results|rules``.

Heavy layers are imported inside the commands, so ``lakebed --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Literal

import click

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
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(table: str, version: int | None, engine: Literal["polars", "gx"], as_json: bool) -> None:
    """Check TABLE against its contract and record the results; exit status 1 when an error rule fails."""
    from lakebed.pipelines.quality import check_table

    run = check_table(table, version=version, engine=engine, config=get_config())
    if as_json:
        click.echo(json.dumps(_as_dict(run), indent=2, default=str))
    else:
        _print_run(run, engine)
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


@quality.command("quarantine")
@click.argument("table")
@click.option("--limit", type=int, default=20, show_default=True)
def quarantine(table: str, limit: int) -> None:
    """Show TABLE's quarantined rows: the rules they broke and where they came from."""
    import pyarrow as pa

    from lakebed.cli import _print_arrow
    from lakebed.pipelines.quality import QUARANTINE_COLUMNS, quarantine_rows

    rows = quarantine_rows(table, config=get_config())
    if not rows.num_rows:
        click.echo(f"{table}: no quarantined rows")
        return
    position = [
        c
        for c in ("_source_file", "_source_line", "_topic", "_partition", "_offset")
        if c in rows.column_names
    ]
    data = [c for c in rows.column_names if c not in QUARANTINE_COLUMNS and c not in position]
    shown = rows.slice(0, limit)
    summary = pa.table(
        {
            "rules broken": [", ".join(r) for r in shown.column("_rules").to_pylist()],
            "from": [" ".join(str(v) for v in row.values()) for row in shown.select(position).to_pylist()],
            "row": [json.dumps(row, default=str)[:120] for row in shown.select(data).to_pylist()],
        }
    )
    _print_arrow(summary, title=f"{table}__quarantine ({rows.num_rows:,} rows)")


@quality.command("results")
@click.argument("table", required=False)
@click.option("--limit", type=int, default=30, show_default=True)
@click.option("--failed", is_flag=True, help="Only rules that did not pass.")
def results(table: str | None, limit: int, failed: bool) -> None:
    """Recorded check results, newest first (every write and every `quality check`)."""
    from lakebed.cli import _print_arrow
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
    _print_arrow(sql(query, config=get_config()), title="quality_results")


@quality.command("rules")
@click.argument("table")
@click.option("--gx", "as_gx", is_flag=True, help="Print the Great Expectations suite instead.")
def rules(table: str, as_gx: bool) -> None:
    """The rules TABLE's contract compiles to (or its Great Expectations suite as JSON)."""
    from rich.table import Table

    from lakebed.cli import _console
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.quality import table_contract
    from lakebed.quality.rules import compile_rules

    contract = table_contract(table, Catalog(get_config()))
    if as_gx:
        from lakebed.quality.gx_engine import build_suite

        click.echo(json.dumps(build_suite(contract).to_json_dict(), indent=2, default=str))
        return
    out = Table("rule", "level", "severity", "checks", title=f"rules of {table}")
    for rule in compile_rules(contract).rules:
        out.add_row(rule.name, rule.level, rule.severity, rule.description)
    _console().print(out)


def _print_run(run: CheckRun, engine: str) -> None:
    from rich.table import Table

    from lakebed.cli import _console

    out = Table(
        "rule",
        "severity",
        "result",
        "failed rows",
        "observed",
        title=f"{run.table} version {run.version} ({engine})",
    )
    for r in run.results:
        verdict = "[green]pass[/]" if r.passed else ("[red]FAIL[/]" if r.blocking else "[yellow]warn[/]")
        out.add_row(r.rule.name, r.rule.severity, verdict, f"{r.failed_rows:,}", r.observed)
    _console().print(out)


def _as_dict(run: CheckRun) -> dict[str, Any]:
    return {
        "table": run.table,
        "version": run.version,
        "passed": run.passed,
        "check_id": run.check_id,
        "results": [
            {
                "rule": r.rule.name,
                "kind": r.rule.kind,
                "severity": r.rule.severity,
                "passed": r.passed,
                "failed_rows": r.failed_rows,
                "checked_rows": r.checked_rows,
                "observed": r.observed,
                "engine": r.engine,
                "samples": list(r.samples),
            }
            for r in run.results
        ],
    }


__all__ = ["quality"]
