"""``lakebed features ...``: feature views from the command line.

Attached to the main CLI with ``main.add_command(features)``. Like the rest of the CLI it imports the
heavy layers inside commands, so ``lakebed --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lakebed.cli_output import OutputFormat, emit, emit_arrow, format_option

if TYPE_CHECKING:
    import pyarrow as pa

_TABLE_SUFFIXES = ".parquet, .csv, .tsv, .json, .jsonl, .ndjson"


@click.group()
def features() -> None:
    """Feature views: backfill, materialize, point-in-time and online reads, training sets."""


def _view_ref(value: str) -> tuple[str, int]:
    """``VIEW:vN`` → ``(view, N)``."""
    view, sep, version = value.partition(":")
    if not sep or not version.startswith("v") or not version[1:].isdigit() or not view:
        raise click.BadParameter(f"expected VIEW:vN (e.g. orders:v1), got {value!r}")
    return view, int(version[1:])


def _view(value: str, file: Path | None) -> Any:
    """The FeatureView ``VIEW:vN``: from ``--file`` if given, else the registry, else the feature views of
    the current project (``lakebed apply`` registers them)."""
    from lakebed.config import find_project
    from lakebed.pipelines.features import registry
    from lakebed.schemas.features import FeatureView
    from lakebed.schemas.project import load_project

    name, version = _view_ref(value)
    if file is not None:
        view = FeatureView.from_yaml(file)
        if (view.name, view.version) != (name, version):
            raise click.BadParameter(f"{file} defines {view.key}, not {name}:v{version}", param_hint="--file")
        return view
    try:
        return registry.get(name, version)
    except registry.FeatureViewNotFoundError:
        root = find_project()
        defined = load_project(root).feature_views.get(f"{name}:v{version}") if root is not None else None
        if defined is None:
            raise
        return defined


def _report(result: Any) -> None:
    rows = f"{result.feature_rows:,} feature row(s)"
    late = f"{result.late_events:,} late event(s)"
    raw = "none" if result.raw_version is None else str(result.raw_version)
    click.echo(
        f"{result.view}: {result.events:,} event(s) read, {rows} → {result.offline_table}, {late} → "
        f"{result.late_table}, {result.online_rows:,} online row(s); raw version processed: {raw}"
    )
    for note in result.notes:
        click.echo(f"  note: {note}")


_FILE_OPTION = click.option(
    "--file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML definition of the view (default: the registry, then the current project's views).",
)


@features.command()
@click.argument("view")
@_FILE_OPTION
def backfill(view: str, file: Path | None) -> None:
    """Recompute VIEW:vN (e.g. customer_activity:v1) from its raw table: offline, late and online rows."""
    from lakebed.pipelines.features.materialize import backfill as run_backfill

    _report(run_backfill(_view(view, file)))


@features.command()
@click.argument("view")
@_FILE_OPTION
def materialize(view: str, file: Path | None) -> None:
    """Process VIEW:vN's new raw commits into its offline table and the online store (incremental)."""
    from lakebed.pipelines.features.materialize import materialize as run_materialize

    _report(run_materialize(_view(view, file)))


@features.command("list")
@format_option
def list_views(fmt: OutputFormat) -> None:
    """List registered feature views: entities, ttl (lakebed's duration syntax, e.g. 2d), offline table
    and features."""
    from lakebed.feature_store import FeatureStore
    from lakebed.schemas.features import format_duration

    rows = (
        {
            "view": view.key,
            "entities": list(view.entities),
            "ttl": format_duration(view.ttl),
            "offline_table": view.offline_table,
            "features": list(view.feature_names),
        }
        for view in FeatureStore().list_feature_views()
    )
    emit(rows, ["view", "entities", "ttl", "offline_table", "features"], fmt, title="feature views")


def _entity_rows_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options naming entity rows, features and the entity timestamp column (shared by commands)."""
    command = click.option(
        "--timestamp-column", default=None, help="Entity timestamp column [default: event_timestamp]."
    )(command)
    command = click.option(
        "--features", "refs", required=True, multiple=True, help="view:vN:feature (repeatable)."
    )(command)
    return click.option(
        "--entities",
        "entities_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"Entity rows ({_TABLE_SUFFIXES}).",
    )(command)


@features.command("get-historical")
@_entity_rows_options
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@format_option
def get_historical(
    entities_path: Path,
    refs: tuple[str, ...],
    timestamp_column: str | None,
    out_path: Path | None,
    fmt: OutputFormat,
) -> None:
    """Point-in-time feature values for every row of an entity file (printed in --format, or written to
    --out as .parquet, .csv or .jsonl; a printed table shows the first 50 rows)."""
    from lakebed.pipelines.features.retrieval import ENTITY_TIMESTAMP, get_historical_features

    ts_column = timestamp_column or ENTITY_TIMESTAMP
    rows = _read_rows(entities_path, timestamp_column=ts_column)
    result = get_historical_features(rows, _split(refs), timestamp_column=ts_column)
    _emit(result, out_path, fmt)


@features.command("get-online")
@click.option("--features", "refs", required=True, multiple=True, help="view:vN:feature (repeatable).")
@click.option("--entity", "pairs", required=True, multiple=True, help="KEY=VALUE (repeatable).")
@click.option("--now", help="Judge the ttl at this ISO-8601 time instead of the current time.")
@format_option
def get_online(refs: tuple[str, ...], pairs: tuple[str, ...], now: str | None, fmt: OutputFormat) -> None:
    """Latest feature values of one entity from the online store (null when older than the ttl)."""
    import pyarrow as pa

    from lakebed.feature_store import FeatureStore

    moment = None
    if now is not None:
        try:
            moment = dt.datetime.fromisoformat(now)
        except ValueError as exc:
            raise click.BadParameter(f"not an ISO-8601 time: {now!r}", param_hint="--now") from exc
    try:
        result = FeatureStore().get_online_features(_split(refs), _entity_row(pairs), now=moment)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise click.BadParameter(str(exc), param_hint="--entity") from exc
    emit_arrow(result, fmt)


@features.group("training-set")
def training_set_group() -> None:
    """Reproducible training sets (manifests of view and Delta versions and the entity rows' hash)."""


@training_set_group.command("create")
@click.argument("name")
@_entity_rows_options
@click.option("--overwrite", is_flag=True, help="Replace an existing training set of that name.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write rows.")
def training_set_create(
    name: str,
    entities_path: Path,
    refs: tuple[str, ...],
    timestamp_column: str | None,
    overwrite: bool,
    out_path: Path | None,
) -> None:
    """Record training set NAME under HOME/training_sets/NAME/ and print its manifest."""
    from lakebed.pipelines.features.retrieval import ENTITY_TIMESTAMP
    from lakebed.pipelines.features.training import create_training_set, load_manifest, training_set

    ts_column = timestamp_column or ENTITY_TIMESTAMP
    rows = _read_rows(entities_path, timestamp_column=ts_column)
    manifest = create_training_set(
        rows, _split(refs), name=name, timestamp_column=ts_column, overwrite=overwrite
    )
    _, folder = load_manifest(manifest)
    click.echo(manifest.to_json())
    click.echo(f"manifest: {folder / 'manifest.json'}", err=True)
    if out_path is not None:
        _emit(training_set(manifest), out_path)


@training_set_group.command("rebuild")
@click.argument("manifest")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@format_option
def training_set_rebuild(manifest: str, out_path: Path | None, fmt: OutputFormat) -> None:
    """Rebuild the rows of a training set (NAME, its folder or its manifest.json) exactly (printed in
    --format, or written to --out; a printed table shows the first 50 rows)."""
    from lakebed.pipelines.features.training import training_set

    _emit(training_set(manifest), out_path, fmt)


# Helpers ---------------------------------------------------------------------------------------------
def _split(refs: tuple[str, ...]) -> list[str]:
    """``--features a --features b,c`` → ``[a, b, c]``."""
    return [part.strip() for ref in refs for part in ref.split(",") if part.strip()]


def _read_rows(path: Path, *, timestamp_column: str | None = None) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pq.read_table(path)
    elif suffix in (".csv", ".tsv"):
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        )
    elif suffix in (".json", ".jsonl", ".ndjson"):
        table = pajson.read_json(path)
    else:
        raise click.BadParameter(f"{path}: unsupported entity file type (use {_TABLE_SUFFIXES})")
    if timestamp_column and timestamp_column in table.column_names:
        import pyarrow as pa

        column = table.column(timestamp_column)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            import polars as pl

            parsed = pl.Series(timestamp_column, column.combine_chunks()).str.to_datetime(time_zone="UTC")
            index = table.column_names.index(timestamp_column)
            table = table.set_column(index, timestamp_column, parsed.to_arrow())
    return table


def _emit(table: pa.Table, out_path: Path | None, fmt: OutputFormat = "table") -> None:
    if out_path is None:
        if fmt == "table":
            _print(table)
        else:
            emit_arrow(table, fmt)
        return
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = out_path.suffix.lower()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        pq.write_table(table, out_path, compression="zstd")
    elif suffix == ".csv":
        pacsv.write_csv(table, out_path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        import json

        from lakebed.cli_output import json_value

        with out_path.open("w") as sink:
            for batch in table.to_batches():
                for record in batch.to_pylist():
                    sink.write(json.dumps(json_value(record)) + "\n")
    else:
        raise click.BadParameter(f"{out_path}: unsupported output type (use .parquet, .csv or .jsonl)")
    click.echo(f"{table.num_rows:,} row(s) → {out_path}", err=True)


def _print(table: pa.Table, limit: int = 50) -> None:
    emit_arrow(table.slice(0, limit), "table")
    if table.num_rows > limit:
        click.echo(f"{table.num_rows:,} row(s) in all, the first {limit} shown")


def _entity_row(pairs: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` pairs as one entity row (the online store casts each value to its key's type)."""
    row: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--entity")
        row[key.strip()] = value
    return row


__all__ = ["features"]
