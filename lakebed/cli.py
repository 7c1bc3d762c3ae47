"""The ``lakebed`` command line. Heavy layers are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from lakebed.cli_features import features
from lakebed.cli_lineage import lineage
from lakebed.cli_quality import quality
from lakebed.cli_stream import register as register_stream_commands
from lakebed.cli_tier import tier
from lakebed.config import get_config
from lakebed.errors import LakebedError

if TYPE_CHECKING:
    import pyarrow as pa
    from rich.console import Console


def _console() -> Console:
    from rich.console import Console

    return Console()


class _Group(click.Group):
    """Turns lakebed errors into one clear line and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LakebedError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lakebed")
def main() -> None:
    """lakebed: Delta Lake tables, batch and unstructured ingest, streaming features, lineage."""


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--table", "-t", required=True, help="Target table name.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "tsv", "json", "parquet"]), help="Override detection."
)
@click.option(
    "--contract", type=click.Path(exists=True, dir_okay=False), help="YAML contract with column types."
)
@click.option("--mode", type=click.Choice(["append", "overwrite"]), default="append", show_default=True)
@click.option("--partition-by", help="Date or timestamp column to partition by.")
@click.option(
    "--on-bad-rows",
    type=click.Choice(["error", "reject"]),
    default="error",
    show_default=True,
    help="Stop at a bad record, or send bad records to <table>__rejects.",
)
@click.option(
    "--on-change",
    type=click.Choice(["replace", "append", "skip"]),
    default="replace",
    show_default=True,
    help="What to do with a file already ingested whose content changed.",
)
def ingest(
    sources: tuple[str, ...],
    table: str,
    fmt: str | None,
    contract: str | None,
    mode: Literal["append", "overwrite"],
    partition_by: str | None,
    on_bad_rows: Literal["error", "reject"],
    on_change: Literal["replace", "append", "skip"],
) -> None:
    """Ingest CSV, JSON-lines or Parquet files, folders or globs into TABLE."""
    from lakebed.pipelines.ingest import ingest_files, own_files, resolve_sources
    from lakebed.schemas.contract import TableContract

    files = resolve_sources(list(sources), explicit_format=fmt, exclude=own_files(get_config()))
    total = sum(f.stat().st_size for f in files)
    with _progress() as progress:
        task = progress.add_task(f"ingest → {table}", total=total)
        result = ingest_files(
            files,
            table=table,
            format=fmt,
            contract=TableContract.from_yaml(contract) if contract else None,
            mode=mode,
            partition_by=partition_by,
            on_bad_rows=on_bad_rows,
            on_change=on_change,
            progress=lambda path, rows, done: progress.update(
                task, completed=done, description=f"{Path(path).name}: {rows:,} rows"
            ),
        )
        progress.update(task, completed=total, description=f"ingest → {table}")
    console = _console()
    console.print(
        f"[green]{table}[/]: {result.rows:,} rows from {len(result.ingested)} file(s), "
        f"{len(result.skipped)} unchanged file(s) skipped, version {result.version}"
    )
    if result.rejected:
        console.print(f"[yellow]{result.rejected:,} bad record(s) in {table}__rejects[/]")
    if result.quarantined:
        console.print(
            f"[yellow]{result.quarantined:,} row(s) broke quality rules → {table}__quarantine[/] "
            f"(lakebed quality quarantine {table})"
        )


@main.command("ingest-files")
@click.argument("sources", nargs=-1, required=True)
@click.option("--table", "-t", default="documents", show_default=True, help="Target table name.")
def ingest_files_command(sources: tuple[str, ...], table: str) -> None:
    """Ingest documents, images and audio (files, folders, globs, zip archives) into TABLE."""
    from lakebed.pipelines.unstructured import ingest_unstructured

    with _progress() as progress:
        task = progress.add_task(f"files → {table}", total=None)
        result = ingest_unstructured(
            list(sources),
            table=table,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    console = _console()
    console.print(
        f"[green]{table}[/]: {result.rows_written:,} file(s) written of {result.files_seen:,} seen, "
        f"{result.duplicates:,} duplicate content, version {result.version}"
    )
    if result.rejected:
        console.print(f"[yellow]{result.rejected:,} file(s) rejected → {table}__rejects[/]")


@main.command()
def tables() -> None:
    """List lakebed tables."""
    from deltalake import DeltaTable
    from rich.table import Table

    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.delta import table_size

    out = Table("table", "kind", "version", "rows", "location")
    for entry in Catalog().list():
        try:
            delta = DeltaTable(entry.uri)
            version, rows = str(delta.version()), f"{table_size(delta)[0]:,}"
        except Exception:
            version, rows = "-", "-"
        out.add_row(entry.name, entry.kind, version, rows, entry.uri)
    _console().print(out)


@main.command()
@click.argument("table")
@click.option("--version", "-v", "version", type=int, help="Delta version to read (time travel).")
@click.option("--as-of", help="Read the table as of an ISO-8601 time.")
@click.option("--limit", "-n", type=int, default=20, show_default=True)
@click.option("--where", help='SQL filter, e.g. "amount > 10".')
def show(table: str, version: int | None, as_of: str | None, limit: int, where: str | None) -> None:
    """Show rows of TABLE (optionally at a version or time)."""
    import duckdb

    from lakebed.pipelines.read import dataset, fetch_arrow

    data = dataset(table, version=version, as_of=as_of)
    connection = duckdb.connect()
    connection.register("t", data)
    query = f"SELECT * FROM t {'WHERE ' + where if where else ''} LIMIT {int(limit)}"
    label = f"version {version}" if version is not None else (f"as of {as_of}" if as_of else "latest")
    _print_arrow(fetch_arrow(connection.sql(query)), title=f"{table} ({label})")


@main.command()
@click.argument("table")
@click.option("--limit", "-n", type=int, default=None, help="Newest N commits only.")
def history(table: str, limit: int | None) -> None:
    """Commit history of TABLE: version, time, operation, run, job, code version."""
    from rich.table import Table

    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.delta import table_history

    out = Table("version", "timestamp", "operation", "rows", "run_id", "job", "code_version")
    for row in table_history(Catalog().get(table).uri, limit):
        out.add_row(
            str(row["version"]),
            row["timestamp"].isoformat(timespec="seconds"),
            str(row["operation"]),
            str(row["rows_added"] or ""),
            str(row["run_id"] or ""),
            str(row["job"] or ""),
            str(row["code_version"] or ""),
        )
    _console().print(out)


@main.command()
@click.argument("query")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
def sql(query: str, fmt: str) -> None:
    """Run DuckDB SQL over all lakebed tables by name."""
    from lakebed.pipelines.read import sql as run_sql

    result = run_sql(query)
    if fmt == "table":
        _print_arrow(result)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, sys.stdout.buffer)
    else:
        import json

        for row in result.to_pylist():
            click.echo(json.dumps(row, default=_json_value))


@main.command("config")
def show_config() -> None:
    """Show the resolved configuration (secrets redacted)."""
    import json

    click.echo(json.dumps(get_config().redacted(), indent=2, default=str))


@main.command()
@click.option("--fresh", is_flag=True, help="Delete the demo's previous tables first.")
def demo(fresh: bool) -> None:
    """Ingest the shipped sample data end to end and show where to look."""
    from lakebed.demo import run_demo

    run_demo(fresh=fresh, console=_console())


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(port: int, host: str) -> None:
    """Start the Dagster UI (dagster dev) on lakebed's assets."""
    config = get_config()
    config.prepare_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "lakebed.assets.definitions", "-h", host, "-p", str(port)]
    click.echo(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    os.execv(command[0], command)


def _json_value(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _print_arrow(data: pa.Table, *, title: str | None = None) -> None:
    from rich.table import Table

    out = Table(*data.column_names, title=title)
    for row in data.to_pylist():
        out.add_row(*(_cell(v) for v in row.values()))
    _console().print(out)
    click.echo(f"{data.num_rows:,} row(s)")


def _cell(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, bytes):
        return f"<{len(value):,} bytes>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


@contextmanager
def _progress() -> Iterator[Any]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), transient=False
    ) as progress:
        yield progress


main.add_command(features)
main.add_command(quality)
main.add_command(lineage)
main.add_command(tier)
register_stream_commands(main)


def run() -> None:
    """The ``lakebed`` console script. It exits through the interpreter's ordinary shutdown, so its exit
    status is the command's own: reads open local tables with Arrow's filesystem, which leaves nothing
    for a worker thread to release under the GIL at exit (docs/design.md, "Clean exits")."""
    main()


if __name__ == "__main__":
    run()
