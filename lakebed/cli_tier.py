"""Tiering commands of the ``lakebed`` CLI: ``tier plan|move|recall|status|vacuum``.

Heavy layers are imported inside the commands, so ``lakebed --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from lakebed.cli_output import OutputFormat, emit, format_option, progress_bar
from lakebed.config import get_config

STATUS_COLUMNS = [
    "table",
    "column",
    "watermark",
    "hot_rows",
    "hot_bytes",
    "cold_rows",
    "cold_bytes",
    "cold_uri",
    "policy_hot_for",
    "policy_hot_bytes",
    "in_flight",
]


@click.group("tier")
def tier() -> None:
    """Hot/cold tiering: older rows on object storage, read transparently with the rest."""


@tier.command("status")
@click.argument("table")
@format_option
def status_command(table: str, fmt: OutputFormat) -> None:
    """Rows and bytes on each tier, the watermark, and whether an operation is unfinished.

    json and csv give one row per table; policy_hot_for is an ISO 8601 duration, in_flight is true while
    an interrupted move or recall is pending. The table format is a short report."""
    from lakebed.pipelines.tiering import status

    state = status(table, config=get_config())
    policy = state.policy
    if fmt != "table":
        row = {
            "table": table,
            "column": state.column,
            "watermark": state.watermark,
            "hot_rows": state.hot_rows,
            "hot_bytes": state.hot_bytes,
            "cold_rows": state.cold_rows,
            "cold_bytes": state.cold_bytes,
            "cold_uri": state.cold_uri,
            "policy_hot_for": policy.hot_for if policy else None,
            "policy_hot_bytes": policy.hot_bytes if policy else None,
            "in_flight": state.in_flight,
        }
        emit([row], STATUS_COLUMNS, fmt)
        return
    click.echo(
        f"{table}: tiered on {state.column or '-'}, watermark {state.watermark or '- (nothing moved yet)'}"
    )
    click.echo(f"  hot   {state.hot_rows:>14,} rows {state.hot_bytes:>16,} bytes")
    click.echo(f"  cold  {state.cold_rows:>14,} rows {state.cold_bytes:>16,} bytes   {state.cold_uri}")
    if policy is not None:
        limits = [
            f"hot for {policy.hot_for.days}d" if policy.hot_for else "",
            f"hot bytes {policy.hot_bytes:,}" if policy.hot_bytes else "",
        ]
        click.echo(f"  policy {', '.join(x for x in limits if x)}")
    if state.in_flight:
        click.secho(
            f"  an interrupted move or recall is pending: `lakebed tier move {table}` finishes it",
            fg="yellow",
        )


@tier.command("plan")
@click.argument("table")
@click.option("--before", help="Move rows with the tiering column before this value (default: the policy).")
def plan_command(table: str, before: str | None) -> None:
    """What `tier move` would move, without moving anything."""
    import pyarrow as pa

    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.read import open_table
    from lakebed.pipelines.tiering import plan_move

    config = get_config()
    plan = plan_move(table, before=before, config=config)
    entry = Catalog(config).get(table)
    dtype = pa.schema(open_table(entry.name, config=config).schema().to_arrow()).field(plan.column).type
    click.echo(plan.describe(dtype) if plan.rows else f"{table}: nothing to move ({plan.reason})")


@tier.command("move")
@click.argument("table")
@click.option("--before", help="Move rows with the tiering column before this value (default: the policy).")
def move_command(table: str, before: str | None) -> None:
    """Move the rows below the new watermark to the cold tier (finishing an interrupted move first)."""
    from lakebed.pipelines.tiering import describe, move

    with _progress() as report:
        result = move(table, before=before, progress=report, config=get_config())
    click.echo(describe(result))


@tier.command("recall")
@click.argument("table")
@click.option("--since", required=True, help="Bring rows with the tiering column at or after this back hot.")
def recall_command(table: str, since: str) -> None:
    """Bring a range of rows back to the hot tier (lowers the watermark)."""
    from lakebed.pipelines.tiering import describe, recall

    with _progress() as report:
        result = recall(table, since=since, progress=report, config=get_config())
    click.echo(describe(result))


@tier.command("vacuum")
@click.argument("table")
@click.option(
    "--grace",
    default=None,
    help="Keep removed files this long for readers of old versions (default: the policy's grace, 7d).",
)
def vacuum_command(table: str, grace: str | None) -> None:
    """Delete the files moves and recalls removed from both tiers, once the grace period has passed."""
    from lakebed.pipelines.tiering import vacuum
    from lakebed.schemas.durations import parse_duration

    result = vacuum(table, grace=parse_duration(grace) if grace else None, config=get_config())
    click.echo(result.describe())


@contextmanager
def _progress() -> Iterator[Any]:
    with progress_bar() as bar:
        tasks: dict[str, Any] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(f"{step} rows", total=total or None)
            bar.update(tasks[step], completed=done, total=total or None)

        yield report


__all__ = ["tier"]
