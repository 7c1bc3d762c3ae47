"""The ``lakebed`` command line. Heavy layers are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from lakebed.cli_access import access
from lakebed.cli_features import features
from lakebed.cli_lineage import lineage
from lakebed.cli_models import register as register_model_commands
from lakebed.cli_ops import register as register_ops_commands
from lakebed.cli_output import OUTPUT_EPILOG, OutputFormat, emit, emit_arrow, format_option, stderr_console
from lakebed.cli_project import register as register_project_commands
from lakebed.cli_quality import quality
from lakebed.cli_search import register as register_search_commands
from lakebed.cli_serve import serve
from lakebed.cli_stream import register as register_stream_commands
from lakebed.cli_tier import tier
from lakebed.config import PROJECT_FILE, get_config, reset_config
from lakebed.errors import LakebedError

if TYPE_CHECKING:
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=OUTPUT_EPILOG)
@click.version_option(package_name="lakebed")
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run against the lakebed project in this folder (default: the nearest lakebed.toml upwards, "
    "or $LAKEBED_PROJECT).",
)
def main(project: Path | None) -> None:
    """lakebed: Delta Lake tables, batch and unstructured ingest, streaming features, lineage."""
    if project is not None:
        root = project.expanduser().resolve()
        if not (root / PROJECT_FILE).is_file():
            raise click.BadParameter(
                f"{root} is not a lakebed project (no {PROJECT_FILE}); run `lakebed init {project}`",
                param_hint="--project",
            )
        os.environ["LAKEBED_PROJECT"] = str(root)
        reset_config()


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
@click.option(
    "--encoding",
    help="Text encoding of CSV/JSON files (a Python codec name: latin-1, cp1252, ...). "
    "Default: the contract's `encoding`, else UTF-8.",
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
    encoding: str | None,
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
            encoding=encoding,
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
    rejected_files = [f for f in result.files if f.status == "rejected"]
    if rejected_files:
        console.print(f"[yellow]{len(rejected_files):,} file(s) rejected whole → {table}__rejects[/]")
    if result.rejected > len(rejected_files):
        console.print(
            f"[yellow]{result.rejected - len(rejected_files):,} bad record(s) in {table}__rejects[/]"
        )
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
@format_option
def tables(fmt: OutputFormat) -> None:
    """List lakebed tables: name, kind, Delta version, rows and location."""
    from deltalake import DeltaTable

    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.delta import table_size

    def rows() -> Iterator[dict[str, object]]:
        for entry in Catalog().list():
            try:
                delta = DeltaTable(entry.uri)
                version, count = delta.version(), table_size(delta)[0]
            except Exception:
                version, count = None, None  # registered but unreadable (e.g. not written yet)
            yield {
                "table": entry.name,
                "kind": entry.kind,
                "version": version,
                "rows": count,
                "location": entry.uri,
            }

    emit(rows(), ["table", "kind", "version", "rows", "location"], fmt)


@main.command()
@click.argument("table")
@click.option("--version", "-v", "version", type=int, help="Delta version to read (time travel).")
@click.option("--as-of", help="Read the table as of an ISO-8601 time.")
@click.option("--limit", "-n", type=int, default=20, show_default=True)
@click.option("--where", help='SQL filter, e.g. "amount > 10".')
@format_option
def show(
    table: str, version: int | None, as_of: str | None, limit: int, where: str | None, fmt: OutputFormat
) -> None:
    """Show rows of TABLE (optionally at a version or time)."""
    import duckdb

    from lakebed.pipelines.read import dataset

    data = dataset(table, version=version, as_of=as_of)
    connection = duckdb.connect()
    connection.register("t", data)
    query = f"SELECT * FROM t {'WHERE ' + where if where else ''} LIMIT {int(limit)}"
    label = f"version {version}" if version is not None else (f"as of {as_of}" if as_of else "latest")
    try:
        relation = connection.sql(query)
    except duckdb.Error as exc:
        raise LakebedError(str(exc)) from None
    # DuckDB 2 names it to_arrow_reader; DuckDB 1 calls it fetch_record_batch.
    reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
    emit_arrow(reader(), fmt, title=f"{table} ({label})")


@main.command()
@click.argument("table")
@click.option("--limit", "-n", type=int, default=None, help="Newest N commits only.")
@format_option
def history(table: str, limit: int | None, fmt: OutputFormat) -> None:
    """Commit history of TABLE, newest first: version, time, operation, rows, run, job, code version."""
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.delta import table_history

    columns = ["version", "timestamp", "operation", "rows", "run_id", "job", "code_version"]
    rows = ({**row, "rows": row["rows_added"]} for row in table_history(Catalog().get(table).uri, limit))
    emit(rows, columns, fmt, title=f"history of {table}")


@main.command()
@click.argument("query")
@format_option
def sql(query: str, fmt: OutputFormat) -> None:
    """Run DuckDB SQL over all lakebed tables by name."""
    import duckdb

    from lakebed.pipelines.read import sql as run_sql

    try:
        result = run_sql(query)
    except duckdb.Error as exc:
        raise LakebedError(str(exc)) from None
    emit_arrow(result, fmt)


@main.command("config")
def show_config() -> None:
    """Show the resolved configuration (secrets redacted)."""
    import json

    click.echo(json.dumps(get_config().redacted(), indent=2, default=str))


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default="shop",
    show_default=True,
    help="Where the shop example project goes (reused when it is already there).",
)
@click.option("--fresh", is_flag=True, help="Delete the demo's previous tables first.")
def demo(directory: Path, fresh: bool) -> None:
    """Copy the shop example project (lakebed init --example shop), apply it, materialise every asset
    through Dagster, and show what was made and where to look."""
    from lakebed.demo import run_demo

    run_demo(directory=directory, fresh=fresh, console=_console())


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(port: int, host: str) -> None:
    """Start the Dagster UI (dagster dev) on the current project (its definitions.py), or outside any
    project on the shop example."""
    from lakebed.config import find_project

    config = get_config()
    config.prepare_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    root = find_project()
    if root is None:
        target = ["-m", "lakebed.assets.definitions"]
    elif (root / "definitions.py").is_file():
        os.chdir(root)
        target = ["-f", "definitions.py"]
    else:
        raise click.ClickException(f"{root}: no definitions.py (run `lakebed init {root}` to add it)")
    command = [str(dagster), "dev", *target, "-h", host, "-p", str(port)]
    where = f"project {root}" if root is not None else "the shop example"
    click.echo(f"Dagster UI on http://{host}:{port} for {where} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    os.execv(command[0], command)


@contextmanager
def _progress() -> Iterator[Any]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        transient=False,
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        yield progress


main.add_command(features)
main.add_command(quality)
main.add_command(lineage)
main.add_command(tier)
main.add_command(serve)
main.add_command(access)
register_stream_commands(main)
register_ops_commands(main)
register_project_commands(main)
register_model_commands(main)
register_search_commands(main)


def run() -> None:
    """The ``lakebed`` console script. It exits through the interpreter's ordinary shutdown, so its exit
    status is the command's own: reads open local tables with Arrow's filesystem, which leaves nothing
    for a worker thread to release under the GIL at exit (docs/design.md, "Clean exits")."""
    main()


if __name__ == "__main__":
    run()
