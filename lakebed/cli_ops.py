"""Operations commands of the ``lakebed`` CLI: ``metrics serve`` and ``status``.

``status`` reads everything from where lakebed keeps it, as the metrics do: the readiness checks of the
servers' ``/ready``, each stream ingest's lag from its Delta transactions, each view version's freshness
from the online store, the last run of each job from the lineage store and the unsent lineage events.
Heavy layers are imported inside the commands, so ``lakebed --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from lakebed.config import LakebedConfig, get_config

DEFAULT_METRICS_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses by default


@click.group("metrics")
def metrics() -> None:
    """Prometheus metrics of the lake (freshness, tiers, quality, unsent lineage)."""


@metrics.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_METRICS_PORT, show_default=True)
def metrics_serve(host: str, port: int) -> None:
    """Serve the table-derived gauges on /metrics, computed from the tables at each scrape.

    For batch use: jobs run and exit, Prometheus scrapes this instead. Ctrl-C stops it."""
    from prometheus_client import start_http_server

    from lakebed.pipelines.table_metrics import table_registry

    config = get_config()
    try:
        server, thread = start_http_server(port, addr=host, registry=table_registry(lambda: config))
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (is the port already in use?)"
        ) from None
    click.echo(f"metrics of {config.home} on http://{host}:{server.server_port}/metrics; Ctrl-C stops it")
    try:
        while thread.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        server.shutdown()


def project_status(config: LakebedConfig) -> dict[str, Any]:
    """Everything ``lakebed status`` shows, as data."""
    from lakebed.lineage.emit import pending
    from lakebed.pipelines.table_metrics import freshness
    from lakebed.probes import broker_address, readiness

    ready = readiness(config)
    answer: dict[str, Any] = {
        "home": str(config.home),
        "ready": ready.ready,
        "checks": [c.model_dump() for c in ready.checks],
        "broker": broker_address(config),
        "streams": [],
        "views": [
            {"view": name, "version": version, "freshness_seconds": round(seconds, 3)}
            for name, version, seconds in freshness(config)
        ],
        "runs": _last_runs(config),
        "lineage_unsent": pending(config),
    }
    broker_ok = next(c.ok for c in ready.checks if c.name == "broker")
    if answer["broker"] is not None and broker_ok:
        from lakebed.pipelines.stream.lag import stream_lag

        answer["streams"] = [
            {
                "table": p.table,
                "topic": p.topic,
                "partition": p.partition,
                "end_offset": p.end_offset,
                "next_offset": p.next_offset,
                "lag": p.lag,
            }
            for p in stream_lag(config, answer["broker"])
        ]
    return answer


def _last_runs(config: LakebedConfig) -> list[dict[str, Any]]:
    from lakebed.lineage.store import LineageStore

    if not config.lineage_enabled or not config.home.is_dir():
        return []
    return LineageStore(config).last_runs()


@click.command("status")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: a report for reading; json: one JSON object (checks, streams, views, runs).",
)
@click.pass_context
def status(ctx: click.Context, fmt: str) -> None:
    """The project's health: readiness (home, broker, object store), each stream ingest's lag, each
    feature view's freshness, the last run of each job and unsent lineage. Exit status 1 when not ready."""
    from lakebed.cli_output import json_value

    config = get_config()
    answer = project_status(config)
    if fmt == "json":
        click.echo(json.dumps(json_value(answer)))
    else:
        _print(answer)
    ctx.exit(0 if answer["ready"] else 1)


def _print(answer: dict[str, Any]) -> None:
    click.echo(f"lakebed home {answer['home']}: {'ready' if answer['ready'] else 'NOT READY'}")
    for check in answer["checks"]:
        click.echo(f"  {'ok ' if check['ok'] else 'FAIL'} {check['name']:<12} {check['detail']}")
    click.echo("streams:" if answer["streams"] else "streams: none (or no broker)")
    for s in answer["streams"]:
        click.echo(
            f"  {s['table']} ← {s['topic']} p{s['partition']}: lag {s['lag']:,} "
            f"(next offset {s['next_offset']:,} of {s['end_offset']:,})"
        )
    click.echo("feature views:" if answer["views"] else "feature views: none online")
    for v in answer["views"]:
        age = dt.timedelta(seconds=round(v["freshness_seconds"]))
        click.echo(f"  {v['view']}:v{v['version']}: newest feature_ts {age} ago")
    click.echo("last runs:" if answer["runs"] else "last runs: none recorded")
    for r in answer["runs"]:
        ended = r["ended_at"].isoformat(timespec="seconds") if r["ended_at"] else "-"
        click.echo(f"  {r['job']}: {r['state']} (ended {ended})")
    click.echo(f"unsent lineage events: {answer['lineage_unsent']}")


COMMANDS: tuple[click.Command, ...] = (metrics, status)


def register(group: click.Group) -> None:
    """Add ``metrics`` and ``status`` to ``group`` (the ``lakebed`` main group)."""
    for command in COMMANDS:
        group.add_command(command)
