"""``lakebed demo``: materialise the sample-data assets through Dagster, then show what was made."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

from lakebed.config import get_config

if TYPE_CHECKING:
    from rich.console import Console

REVENUE_SQL = """
SELECT p.category, count(*) AS order_lines, sum(o.quantity * o.unit_price)::DECIMAL(14,2) AS revenue
FROM orders o JOIN products p USING (sku)
GROUP BY p.category ORDER BY revenue DESC
"""


# Keep Dagster's step-by-step event log out of the demo's output (it stays in the UI).
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_demo(*, fresh: bool = False, console: Console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    config = get_config()
    config.prepare_dagster_home()
    if fresh:
        for folder in (config.tables_root, config.system_root):
            shutil.rmtree(folder, ignore_errors=True)
    console.print(f"[bold]lakebed demo[/] — home {config.home}")
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("loading Dagster", total=None)
        import dagster as dg

        from lakebed.assets.definitions import defs
        from lakebed.assets.ingest import SAMPLE_ASSETS

        instance = dg.DagsterInstance.get()
        resources = {"lakebed": defs.resources["lakebed"]}
        progress.update(task, total=len(SAMPLE_ASSETS), completed=0)
        for asset in SAMPLE_ASSETS:
            name = asset.key.to_user_string()
            progress.update(task, description=f"materialising {name}")
            result = dg.materialize(
                SAMPLE_ASSETS, selection=[name], instance=instance, resources=resources, run_config=QUIET_LOGS
            )
            if not result.success:
                raise RuntimeError(f"materialising {name} failed (run {result.run_id})")
            progress.advance(task)
        progress.update(task, description="sample data materialised")
    _summary(console, time.monotonic() - started)


def _summary(console: Console, seconds: float) -> None:
    from deltalake import DeltaTable
    from rich.table import Table

    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.read import sql

    config = get_config()
    tables = Table("table", "kind", "version", "rows", "location", title="Tables made")
    for entry in Catalog(config).list():
        delta = DeltaTable(entry.uri)
        rows = sum(int(n or 0) for n in delta.get_add_actions(flatten=True).column("num_records").to_pylist())
        tables.add_row(entry.name, entry.kind, str(delta.version()), f"{rows:,}", entry.uri)
    console.print(tables)

    revenue = sql(REVENUE_SQL, config=config)
    by_category = Table(*revenue.column_names, title="Revenue by category (lakebed sql, orders ⋈ products)")
    for row in revenue.to_pylist():
        by_category.add_row(*(str(v) for v in row.values()))
    console.print(by_category)

    files = sql(
        "SELECT kind, mime_type, count(*) AS files FROM documents GROUP BY ALL ORDER BY files DESC",
        config=config,
    )
    media = Table(*files.column_names, title="Unstructured files (documents table)")
    for row in files.to_pylist():
        media.add_row(*(str(v) for v in row.values()))
    console.print(media)

    lines = [
        f"\n[green]Done in {seconds:.1f} s.[/] Where to look next:",
        f"  • tables (Delta Lake):  {config.tables_root}",
        '  • query them:          lakebed sql "SELECT * FROM orders LIMIT 5"  ·  lakebed tables',
        "  • time travel:         lakebed history orders  ·  lakebed show orders --version 0",
        f"  • Dagster UI:          make ui  →  http://127.0.0.1:3000  (runs kept in {config.dagster_home})",
        f"  • landing folder:      drop CSV/JSON/Parquet files into {config.landing_root}/<table>/",
    ]
    for line in lines:
        console.print(line, soft_wrap=True)
