"""Streaming commands of the ``lakebed`` CLI: ``broker start|stop|status``, ``produce``, ``stream run``.

Attach them to the main group with :func:`register` (``lakebed.cli`` does). Heavy layers are imported
inside the commands, so ``lakebed --help`` stays fast.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from lakebed.config import get_config

if TYPE_CHECKING:
    from lakebed.pipelines.stream.batch import RoundInfo


@click.group("broker")
def broker() -> None:
    """The embedded Kafka broker (Tansu) of this lakebed home."""


@broker.command("start")
@click.option("--port", type=int, default=None, help="Port to listen on (default: a free one).")
def broker_start(port: int | None) -> None:
    """Start the embedded broker in the background and record it in HOME/broker.json."""
    from lakebed.broker import start_detached

    config = get_config()
    if config.kafka_bootstrap:
        click.echo(
            f"LAKEBED_KAFKA_BOOTSTRAP is set ({config.kafka_bootstrap}): lakebed uses that cluster, "
            "no embedded broker started."
        )
        return
    info, started = start_detached(config, port=port)
    state = "started" if started else "already running"
    click.echo(f"broker {state} at {info.bootstrap} (pid {info.pid}); log {info.log}")
    if started:
        click.echo("topics live in memory: they vanish when the broker stops (`lakebed broker stop`).")


@broker.command("stop")
def broker_stop() -> None:
    """Stop the embedded broker of this lakebed home."""
    from lakebed.broker import stop_detached

    info = stop_detached(get_config())
    click.echo(f"broker at {info.bootstrap} (pid {info.pid}) stopped" if info else "no broker was running")


@broker.command("status")
@click.pass_context
def broker_status(ctx: click.Context) -> None:
    """Show which Kafka cluster lakebed uses; exit status 1 when no broker is reachable."""
    from lakebed.broker import broker_file, port_open, running_broker, split_bootstrap

    config = get_config()
    if config.kafka_bootstrap:
        host, port = split_bootstrap(config.kafka_bootstrap)
        reachable = port_open(host, port)
        click.echo(
            f"configured cluster {config.kafka_bootstrap} (LAKEBED_KAFKA_BOOTSTRAP): "
            + ("reachable" if reachable else "NOT reachable")
        )
        ctx.exit(0 if reachable else 1)
    info = running_broker(config)
    if info is None:
        click.echo(
            f"no embedded broker running ({broker_file(config)}); start one with `lakebed broker start`"
        )
        ctx.exit(1)
    click.echo(f"embedded broker running at {info.bootstrap} (pid {info.pid}, since {info.started_at})")


@click.command("produce")
@click.argument("topic")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key", help="Column whose value keys each message (Kafka partitions by key).")
@click.option(
    "--partitions", type=click.IntRange(min=1), help="Create TOPIC with N partitions if it does not exist."
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "tsv", "json", "parquet"]), help="Override detection."
)
def produce(topic: str, file: Path, key: str | None, partitions: int | None, fmt: str | None) -> None:
    """Send each row of FILE (JSON lines, CSV or Parquet) to TOPIC as one JSON message."""
    from lakebed.broker import ensure_bootstrap
    from lakebed.pipelines.stream.kafka import create_topic, produce_file

    bootstrap = ensure_bootstrap(get_config())
    created = create_topic(bootstrap, topic, partitions or 1)
    if created:
        click.echo(f"created topic {topic} with {partitions or 1} partition(s)")
    elif partitions:
        click.echo(f"topic {topic} exists; --partitions {partitions} ignored")
    sent = produce_file(bootstrap, topic, file, key=key, format=fmt)
    click.echo(f"{sent:,} message(s) from {file.name} → {topic} on {bootstrap}")


@click.group("stream")
def stream() -> None:
    """Kafka → Delta stream ingest (exactly once)."""


@stream.command("run")
@click.option("--topic", required=True, help="Kafka topic to read.")
@click.option("--table", "-t", "table", required=True, help="Raw Delta table to append to.")
@click.option("--group", help="Consumer group: run several workers with the same group to share a topic.")
@click.option("--until-caught-up", is_flag=True, help="Stop at the end offsets read at start.")
@click.option(
    "--max-records", type=click.IntRange(min=1), default=50_000, show_default=True, help="Records per batch."
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds a batch may wait.",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=64 << 20,
    show_default=True,
    help="Bytes of values per batch; a larger value goes to the dead letters.",
)
@click.option("--max-batches", type=click.IntRange(min=1), help="Stop after N committed batches.")
@click.option(
    "--contract", type=click.Path(exists=True, dir_okay=False), help="YAML contract with column types."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics (/metrics) on this port (lag, records, dead letters).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address of the metrics endpoint."
)
@click.option("--quiet", "-q", is_flag=True, help="No line per batch.")
def stream_run(
    topic: str,
    table: str,
    group: str | None,
    until_caught_up: bool,
    max_records: int,
    max_seconds: float,
    max_bytes: int,
    max_batches: int | None,
    contract: str | None,
    metrics_port: int | None,
    metrics_host: str,
    quiet: bool,
) -> None:
    """Ingest TOPIC into TABLE until stopped (Ctrl-C / SIGTERM finish the current batch first)."""
    from lakebed.pipelines.stream.ingest import StreamIngestor
    from lakebed.schemas.contract import TableContract

    if metrics_port is not None:
        _serve_metrics(metrics_host, metrics_port)  # before anything is consumed: a busy port stops here

    stop = threading.Event()

    def on_batch(info: RoundInfo) -> None:
        if quiet:
            return
        spans = ", ".join(f"p{p}:{first}-{last}" for p, (first, last) in sorted(info.offsets.items()))
        dead = f", {info.dead_letters:,} dead letter(s)" if info.dead_letters else ""
        version = f"v{info.version}" if info.version is not None else "no data"
        click.echo(f"{version}: +{info.records:,} row(s){dead} [{spans}] {info.seconds:.2f} s")

    from lakebed.broker import ensure_bootstrap

    ingestor = StreamIngestor(
        topic,
        table,
        bootstrap=ensure_bootstrap(get_config()),
        group=group,
        until_caught_up=until_caught_up,
        max_records=max_records,
        max_seconds=max_seconds,
        max_bytes=max_bytes,
        max_batches=max_batches,
        contract=TableContract.from_yaml(contract) if contract else None,
        stop_event=stop,
        progress=on_batch,
    )
    previous = _stop_on_signals(stop)
    try:
        where = f"group {group}" if group else "all partitions"
        click.echo(f"stream {topic} → {table} ({where}) from {ingestor.bootstrap}")
        result = ingestor.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    click.echo(
        f"{table}: {result.records:,} row(s), {result.dead_letters:,} dead letter(s) in "
        f"{result.rounds:,} batch(es), {result.retries} retried, {result.seconds:.1f} s"
        + (" — caught up" if result.caught_up else f" — stopped ({result.stopped_by})")
    )


def _serve_metrics(host: str, port: int) -> None:
    """Serve this process's metrics on ``host:port`` from a daemon thread; a port in use is an error
    naming it."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (is the port already in use? "
            "choose another --metrics-port)"
        ) from None
    click.echo(f"metrics on http://{host}:{server.server_port}/metrics")


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """First SIGINT/SIGTERM: finish the current batch and stop. A second SIGINT interrupts at once."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        click.echo("stopping after the current batch…", err=True)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


COMMANDS: tuple[click.Command, ...] = (broker, produce, stream)


def register(group: click.Group) -> None:
    """Add ``broker``, ``produce`` and ``stream`` to ``group`` (the ``lakebed`` main group)."""
    for command in COMMANDS:
        group.add_command(command)
