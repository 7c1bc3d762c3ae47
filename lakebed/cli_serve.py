"""Server commands of the ``lakebed`` CLI: ``serve features``."""

from __future__ import annotations

import click


@click.group()
def serve() -> None:
    """Serve lakebed over HTTP."""


@serve.command("features")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=6566, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes on the port.",
)
@click.option(
    "--request-log/--no-request-log", default=False, show_default=True, help="uvicorn's log line per request."
)
def features(host: str, port: int, workers: int, request_log: bool) -> None:
    """Serve online features over HTTP (Feast's /get-online-features, /feature-views, /health; OpenAPI at
    /openapi.json).

    Requests need ``Authorization: Bearer <token>``: a token of the project's access.yaml (its role
    decides what it may read), or ``LAKEBED_FEATURE_SERVER_TOKEN``; without any token it only listens on
    a loopback address. Every request is kept in the access_log table."""
    from lakebed.config import get_config
    from lakebed.serving.app import serve as run_server

    config = get_config()
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    click.echo(
        f"feature server on http://{shown}:{port}  (OpenAPI: /openapi.json; home {config.home}); Ctrl-C stops it"
    )
    run_server(config, host=host, port=port, workers=workers, request_log=request_log)
