"""Lineage commands of the ``lakebed`` CLI: ``lineage producer|upstream|downstream|history|graph|runs|flush|serve``.

Tables are named ``TABLE`` or ``TABLE@VERSION``. Heavy layers are imported inside the commands, so
``lakebed --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import click

from lakebed.cli_output import OutputFormat, emit, format_option
from lakebed.config import get_config

if TYPE_CHECKING:
    from lakebed.lineage.graph import Graph
    from lakebed.lineage.store import LineageStore

GraphFormat = Literal["text", "json", "dot", "mermaid", "svg", "png"]
GRAPH_FORMATS: list[str] = list(get_args(GraphFormat))


@click.group("lineage")
def lineage() -> None:
    """Who made what from what: OpenLineage runs, versions and graphs of every lakebed table."""


def _store() -> LineageStore:
    from lakebed.lineage.store import LineageStore

    return LineageStore(get_config())


def _split(target: str) -> tuple[str, int | None]:
    table, _, version = target.partition("@")
    if not version:
        return table, None
    try:
        return table, int(version)
    except ValueError:
        raise click.BadParameter(
            f"version must be a number: {target!r}", param_hint="TABLE[@VERSION]"
        ) from None


@lineage.command("producer")
@click.argument("target", metavar="TABLE[@VERSION]")
@format_option
def producer(target: str, fmt: OutputFormat) -> None:
    """The run that wrote TABLE at VERSION (default: the latest): job, code version, inputs at their
    versions, quality results, times and the Dagster run.

    json and csv give one row: the run, with inputs, outputs and quality nested."""
    table, version = _split(target)
    run = _store().producer(table, version)
    if fmt != "table":
        record = run.as_dict()
        emit([record], list(record), fmt)
        return
    versions = [
        int(v) for o in run.outputs if o.table == table and (v := o.version) is not None and v.isdigit()
    ]
    shown = version if version is not None else (max(versions) if versions else "?")
    lines = [
        f"{table}@{shown}  ←  run {run.run_id} ({run.state})",
        f"  job           {run.job_namespace}:{run.job_name}",
        f"  code version  {run.code_version or '-'}",
        f"  started       {_time(run.started_at)}    ended {_time(run.ended_at)}",
    ]
    if run.parent_run_id:
        lines.append(f"  parent run    {run.parent_run_id} ({run.parent_job})")
    if run.dagster_run_id:
        lines.append(f"  dagster run   {run.dagster_run_id}")
    lines.append("  inputs" if run.inputs else "  inputs        (none)")
    lines += [f"    {d.describe():40s} {d.namespace}:{d.name}" for d in run.inputs]
    lines.append("  outputs")
    lines += [f"    {d.describe():40s} {d.namespace}:{d.name}" for d in run.outputs]
    for name, assertions in run.quality.items():
        failed = [a["assertion"] for a in assertions if not a.get("success")]
        verdict = f"{len(failed)} failed: {', '.join(failed)}" if failed else "all passed"
        lines.append(f"  quality       {name}: {len(assertions)} rule(s), {verdict}")
    if run.error:
        lines.append(f"  error         {run.error}")
    click.echo("\n".join(lines))


def _graph_options(command: Any) -> Any:
    command = click.option(
        "--format", "fmt", type=click.Choice(GRAPH_FORMATS), default="text", show_default=True
    )(command)
    return click.option(
        "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
    )(command)


@lineage.command("upstream")
@click.argument("target", metavar="TABLE[@VERSION]")
@click.option("--depth", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--column", help="Follow one column back through column lineage.")
@_graph_options
def upstream(target: str, depth: int, column: str | None, fmt: GraphFormat, output: Path | None) -> None:
    """What TABLE at VERSION was made from: producing runs and the exact versions they read."""
    table, version = _split(target)
    _emit_graph(_store().upstream(table, version, depth=depth, column=column), fmt, output)


@lineage.command("downstream")
@click.argument("target", metavar="TABLE[@VERSION]")
@click.option("--depth", type=click.IntRange(1, 50), default=5, show_default=True)
@_graph_options
def downstream(target: str, depth: int, fmt: GraphFormat, output: Path | None) -> None:
    """What was made from TABLE (from VERSION on): the runs that read it and what they wrote."""
    table, version = _split(target)
    _emit_graph(_store().downstream(table, version, depth=depth), fmt, output)


@lineage.command("graph")
@click.option("--as-of", "as_of", help="Draw the graph as it was at this ISO time (default: now).")
@click.option("--all", "include_system", is_flag=True, help="Include lakebed's system tables.")
@_graph_options
def graph(as_of: str | None, include_system: bool, fmt: GraphFormat, output: Path | None) -> None:
    """Every job and table and how they connect; --format svg|png|dot|mermaid draws it."""
    moment = None
    if as_of:
        try:
            moment = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise click.BadParameter(f"not an ISO time: {as_of!r}", param_hint="--as-of") from None
    _emit_graph(_store().graph(as_of=moment, include_system=include_system), fmt, output)


HISTORY_COLUMNS = ["version", "run_id", "job", "written_at", "code_version", "rows", "size", "parent_run_id"]
RUN_COLUMNS = ["run_id", "job", "state", "started_at", "ended_at", "code_version", "parent_run_id", "error"]


@lineage.command("history")
@click.argument("table")
@format_option
def history(table: str, fmt: OutputFormat) -> None:
    """Every version of TABLE written with lineage, newest first: run, job, time, code version, rows."""
    emit(_store().history(table), HISTORY_COLUMNS, fmt, title=f"lineage of {table}", count=True)


@lineage.command("runs")
@click.option("--failed", is_flag=True, help="Only failed runs.")
@click.option("--job", help="Only runs of this job.")
@click.option("--limit", type=int, default=30, show_default=True)
@format_option
def runs(failed: bool, job: str | None, limit: int, fmt: OutputFormat) -> None:
    """Runs, newest first."""
    rows = _store().runs(failed=failed, job=job, limit=limit)
    emit(rows, RUN_COLUMNS, fmt, title="runs", count=True)


@lineage.command("flush")
def flush() -> None:
    """Re-send events kept while the OpenLineage backend was unreachable, and load the lineage store;
    exit status 1 while events are still waiting for the backend."""
    from lakebed.lineage.emit import get_emitter

    config = get_config()
    left = get_emitter(config).flush()
    added = _store().sync()
    click.echo(f"{added} new event(s) in the lineage store; {left} event(s) still waiting for the backend")
    if left:
        sys.exit(1)


@lineage.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5005, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve the read-only lineage HTTP API with uvicorn (Marquez-style /api/v1, OpenAPI at /openapi.json).

    Requests need ``Authorization: Bearer <token>``: a token of the project's access.yaml whose role may
    read_lineage (details of tables it may not read_table are masked), or ``LAKEBED_LINEAGE_API_TOKEN``;
    without any token it only listens on a loopback address. Every request is kept in access_log."""
    from lakebed.lineage.api import serve as run_server
    from lakebed.lineage.api.app import resolve_token
    from lakebed.lineage.api.guard import REALM
    from lakebed.pipelines.access_log import dataset_tables, server_gate

    store = _store()
    gate = server_gate(store.config, realm=REALM, token=resolve_token(store, None))
    click.echo(f"lineage API on http://{host}:{port}/api/v1  (OpenAPI: /openapi.json); Ctrl-C stops it")
    run_server(store, host=host, port=port, gate=gate, tables=dataset_tables(store.config))


def _emit_graph(graph: Graph, fmt: GraphFormat, output: Path | None) -> None:
    if fmt == "text":
        text = _text(graph)
    elif fmt == "json":
        text = json.dumps(
            {
                "nodes": [{**n.__dict__} for n in graph.nodes],
                "edges": [{**e.__dict__} for e in graph.edges],
            },
            indent=2,
            default=str,
        )
    else:
        from lakebed.lineage.render import render

        data = render(graph, fmt)
        if output is None and fmt == "png":
            raise click.UsageError("--format png needs -o FILE")
        if output is not None:
            output.write_bytes(data)
            click.echo(f"wrote {output} ({len(graph.nodes)} nodes, {len(graph.edges)} edges)")
            return
        text = data.decode()
    if output is not None:
        output.write_text(text + "\n")
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


def _text(graph: Graph) -> str:
    """An indented listing: each job with what it read and wrote."""
    if not graph.nodes:
        return "(empty graph)"
    labels = {n.id: n.label for n in graph.nodes}
    lines = []
    for job in sorted((n for n in graph.nodes if n.kind == "job"), key=lambda n: n.label):
        reads = [
            f"{labels[e.source]}{'@' + e.label[1:] if e.label else ''}"
            for e in graph.edges
            if e.target == job.id
        ]
        writes = [
            f"{labels[e.target]}{'@' + e.label[1:] if e.label else ''}"
            for e in graph.edges
            if e.source == job.id
        ]
        lines.append(f"{job.label}")
        lines.append(f"  reads   {', '.join(sorted(reads)) or '-'}")
        lines.append(f"  writes  {', '.join(sorted(writes)) or '-'}")
    return "\n".join(lines)


def _time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


__all__ = ["lineage"]
