"""``lakebed demo``: the shop example project run as a user would run it: copied (or reused), applied,
every asset materialised through Dagster; then what was made and where to look."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakebed.config import get_config, reset_config

if TYPE_CHECKING:
    from rich.console import Console

DEMO_TOPIC = "shop_events"
DEMO_QUESTION = "How long are old versions of a table kept?"
DEMO_FEATURES = [
    "customer_activity:v1:events_1h",
    "customer_activity:v1:spend_1d",
    "customer_activity:v1:purchases_1d",
    "customer_activity:v1:last_event_type",
]

# Read from the example's models (models/orders_clean.sql → models/daily_revenue.sql).
REVENUE_SQL = """
SELECT category, sum(order_lines) AS order_lines, round(sum(revenue), 2) AS revenue
FROM daily_revenue
GROUP BY category ORDER BY revenue DESC
"""


# Keep Dagster's step-by-step event log out of the demo's output (it stays in the UI).
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_demo(*, directory: Path, fresh: bool = False, console: Console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lakebed.pipelines.project_plan import apply, plan
    from lakebed.scaffold import init_project
    from lakebed.schemas.project import load_project

    started = time.monotonic()
    root = directory.expanduser().resolve()
    made = init_project(root, "shop")  # `lakebed init DIR --example shop`
    os.environ["LAKEBED_PROJECT"] = str(root)  # every step below runs in the project, as `cd DIR` would
    reset_config()
    config = get_config()
    config.prepare_dagster_home()
    if fresh:
        for folder in (config.tables_root, config.system_root):
            shutil.rmtree(folder, ignore_errors=True)
    how = "a new copy of the shop example" if made else "reused"
    console.print(f"[bold]lakebed demo[/] — project {root} ({how}), state in {config.home}")
    shop = load_project(root)
    applied = apply(plan(shop, config), config)  # `lakebed apply`
    console.print(
        f"lakebed apply: {len(applied)} change(s) — {len(shop.sources)} sources, "
        f"{len(shop.contracts)} contracts, {len(shop.feature_views)} feature views registered"
        if applied
        else "lakebed apply: nothing new to register"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("loading Dagster", total=None)
        import dagster as dg

        from lakebed.dagster import definitions, project_assets, project_checks

        defs = definitions(root)
        assert defs.resources is not None
        assets = project_assets(shop)  # in dependency order: sources, raw streams, models, feature views
        runner = _Materializer(
            progress,
            task,
            dg.DagsterInstance.get(),
            {"lakebed": defs.resources["lakebed"]},
            project_checks(shop),
        )
        # Sources, then the embeddings of their documents (once: they do not change with the stream).
        sources = [a for a in assets if a.group_names_by_key[a.key] in ("sources", "embeddings")]
        progress.update(task, total=len(sources), completed=0)
        runner.each(sources)
        progress.update(task, description="sources materialised")
        _tier_move(progress, task)
        _stream_features(progress, runner, [a for a in assets if a not in sources])
    _summary(console)
    _tiering_summary(console)
    _quality_summary(console)
    _features_summary(console)
    _search_summary(console)
    _lineage_summary(console)
    _where_to_look(console, root, time.monotonic() - started)


class _Materializer:
    """Materialises assets one run each (so the Dagster UI shows every run), with their asset checks, and
    advances a progress bar."""

    def __init__(
        self, progress: Any, task: Any, instance: Any, resources: dict[str, Any], checks: list[Any]
    ) -> None:
        self.progress, self.task, self.instance, self.resources = progress, task, instance, resources
        self.checks = checks

    def each(self, assets: list[Any], *, label: str = "") -> None:
        import dagster as dg

        for asset in assets:
            name = asset.key.to_user_string()
            self.progress.update(self.task, description=f"{label}materialising {name}")
            result = dg.materialize(
                [*assets, *self.checks],
                selection=[name],
                instance=self.instance,
                resources=self.resources,
                run_config=QUIET_LOGS,
            )
            if not result.success:
                raise RuntimeError(f"materialising {name} failed (run {result.run_id})")
            self.progress.advance(self.task)


def _stream_features(progress: Any, runner: _Materializer, assets: list[Any]) -> None:
    """Replay the sample event feed through the broker, then materialise raw events and features."""
    from lakebed.broker import embedded_bootstrap
    from lakebed.pipelines.stream.kafka import create_topic, produce_records
    from lakebed.samples import STREAM

    config = get_config()
    task = runner.task = progress.add_task("starting the Kafka broker", total=None)
    with embedded_bootstrap(config) as bootstrap:
        create_topic(bootstrap, DEMO_TOPIC, partitions=3)
        lines = (STREAM / "shop_events.jsonl").read_bytes().splitlines()
        # Poison messages: the stream goes on, they land in shop_events__dead_letter.
        # Two records that cannot be decoded (→ dead letters) and one that breaks the contract's rules
        # (→ quarantine).
        poison = [
            b"{not json",
            b'{"event_id": "bad-1", "customer_id": "n/a"}',
            b'{"event_id": "se-refund-1", "customer_id": 7, "event_type": "refund", "amount": -5.0,'
            b' "event_time": "2025-06-01T12:00:00Z"}',
        ]
        # The feed arrives in three parts; each part is one "available now" run: raw events, then features
        # updated incrementally (late events are judged against the watermark of the parts before).
        parts = [
            lines[: len(lines) // 3],
            lines[len(lines) // 3 : 2 * len(lines) // 3] + poison,
            lines[2 * len(lines) // 3 :],
        ]
        progress.update(task, total=len(parts) * len(assets), completed=0)
        for number, part in enumerate(parts, start=1):
            progress.update(
                task, description=f"part {number}/3: producing {len(part):,} events to {bootstrap}"
            )
            produce_records(bootstrap, DEMO_TOPIC, part, key=_customer_key)
            runner.each(assets, label=f"part {number}/3: ")
        progress.update(task, description="stream ingested and features materialised")


def _customer_key(record: bytes) -> str | None:
    """Partition the feed by customer (a poison record without one goes anywhere)."""
    import json

    try:
        return str(json.loads(record)["customer_id"])
    except (ValueError, KeyError, TypeError):
        return None


def _features_summary(console: Console) -> None:
    import pyarrow as pa

    from lakebed import FeatureStore
    from lakebed.pipelines.read import sql

    config = get_config()
    counts = sql(
        "SELECT (SELECT count(*) FROM shop_events) AS events,"
        " (SELECT count(*) FROM shop_events__dead_letter) AS dead_letters,"
        " (SELECT count(*) FROM fv_customer_activity_v1__late) AS late_events,"
        " (SELECT count(*) FROM fv_customer_activity_v1) AS feature_rows,"
        " (SELECT max(event_time) FROM shop_events) AS stream_end",
        config=config,
    ).to_pylist()[0]
    console.print(
        f"\n[bold]Streaming features[/]: {counts['events']:,} events from Kafka topic {DEMO_TOPIC} "
        f"(exactly once), {counts['dead_letters']} dead letters, {counts['late_events']} late events, "
        f"{counts['feature_rows']:,} feature rows in fv_customer_activity_v1",
        soft_wrap=True,
    )
    store = FeatureStore(config)
    end = counts["stream_end"]
    entity_rows = pa.table(
        {
            "customer_id": [7, 7, 42, 99],
            "event_timestamp": pa.array(
                [end - dt.timedelta(hours=30), end, end - dt.timedelta(hours=6), end],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    historical = _short_names(store.get_historical_features(entity_rows, features=DEMO_FEATURES))
    _print_table(console, historical, "Point-in-time features (FeatureStore.get_historical_features)")
    online = _short_names(store.get_online_features(DEMO_FEATURES, {"customer_id": [7, 42, 99]}, now=end))
    _print_table(console, online, f"Online features as of the stream's end {end:%Y-%m-%d %H:%M} UTC")


def _search_summary(console: Console) -> None:
    from lakebed.feature_store import FeatureStore

    hits = FeatureStore(get_config()).search("documents", DEMO_QUESTION, 3)
    out = _table(
        "rank", "file", "score", "text", title=f"Top 3 chunks for {DEMO_QUESTION!r} (FeatureStore.search)"
    )
    for rank, row in enumerate(hits.to_pylist(), start=1):
        text = " ".join(row["text"].split())
        out.add_row(
            str(rank),
            row["source_path"].rpartition("/data/media/")[2],
            f"{row['score']:.3f}",
            text[:160] + ("…" if len(text) > 160 else ""),
        )
    console.print(out)


def _short_names(data: Any) -> Any:
    return data.rename_columns([name.split("__")[-1] for name in data.column_names])


def _print_table(console: Console, data: Any, title: str) -> None:

    out = _table(*data.column_names, title=title)
    for row in data.to_pylist():
        out.add_row(*(_cell(v) for v in row.values()))
    console.print(out)


def _table(*columns: str, title: str) -> Any:
    """A rich table whose names and values wrap instead of being cut (also in pipes and narrow terminals)."""
    from rich.table import Column, Table

    return Table(*(Column(c, overflow="fold") for c in columns), title=title)


def _cell(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _summary(console: Console) -> None:
    from deltalake import DeltaTable

    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.delta import table_size
    from lakebed.pipelines.read import sql

    config = get_config()
    tables = _table("table", "kind", "version", "rows", "location", title="Tables made")
    for entry in Catalog(config).list():
        delta = DeltaTable(entry.uri)
        rows = table_size(delta)[0]
        tables.add_row(entry.name, entry.kind, str(delta.version()), f"{rows:,}", entry.uri)
    console.print(tables)

    revenue = sql(REVENUE_SQL, config=config)
    by_category = _table(
        *revenue.column_names,
        title="Revenue by category (model daily_revenue ← orders_clean ← orders ⋈ products)",
    )
    for row in revenue.to_pylist():
        by_category.add_row(*(str(v) for v in row.values()))
    console.print(by_category)

    files = sql(
        "SELECT kind, mime_type, count(*) AS files FROM documents GROUP BY ALL ORDER BY files DESC",
        config=config,
    )
    media = _table(*files.column_names, title="Unstructured files (documents table)")
    for row in files.to_pylist():
        media.add_row(*(str(v) for v in row.values()))
    console.print(media)


TIER_TABLE = "web_events"
TIER_BEFORE = "2025-12-01"


def _tier_move(progress: Any, task: Any) -> None:
    """Move the older web events to the cold tier (through the move's own progress reports)."""
    from lakebed.pipelines.tiering import move

    def report(step: str, done: int, total: int) -> None:
        progress.update(task, description=f"tiering {TIER_TABLE}: {step} {done:,}/{total:,} rows")

    move(TIER_TABLE, before=TIER_BEFORE, progress=report)


def _tiering_summary(console: Console) -> None:
    from lakebed.pipelines.read import sql
    from lakebed.pipelines.tiering import status

    config = get_config()
    state = status(TIER_TABLE, config=config)
    total = sql(f"SELECT count(*) AS n FROM {TIER_TABLE}", config=config).to_pylist()[0]["n"]
    console.print(
        f"\n[bold]Tiering[/]: {TIER_TABLE} events before {TIER_BEFORE} moved to the cold tier "
        f"({state.cold_rows:,} rows, {state.cold_bytes:,} bytes at {state.cold_uri}); "
        f"{state.hot_rows:,} rows stay hot. `lakebed sql` still sees all {total:,} rows.",
        soft_wrap=True,
    )


def _quality_summary(console: Console) -> None:

    from lakebed.pipelines.quality import RESULTS_TABLE, quarantine_rows
    from lakebed.pipelines.read import sql

    config = get_config()
    out = _table("table", "rows quarantined", "rules broken", "where from", title="Quality: quarantined rows")
    for table in ("orders", "shop_events"):
        rows = quarantine_rows(table, config=config)
        if not rows.num_rows:
            continue
        broken = sorted({rule for rules in rows.column("_rules").to_pylist() for rule in rules})
        first = rows.slice(0, 1).to_pylist()[0]
        if "_source_file" in rows.column_names:
            where = f"{first['_source_file'].rsplit('/', 1)[-1]} line {first['_source_line']}"
        else:
            where = f"{first['_topic']} partition {first['_partition']} offset {first['_offset']}"
        out.add_row(f"{table}__quarantine", f"{rows.num_rows:,}", ", ".join(broken), f"e.g. {where}")
    console.print(out)
    checks = sql(
        f"SELECT count(*) AS checks, count(*) FILTER (WHERE NOT passed) AS failed FROM {RESULTS_TABLE}",
        config=config,
    ).to_pylist()[0]
    console.print(
        f"{checks['checks']:,} rule results recorded in {RESULTS_TABLE} ({checks['failed']:,} not passed); "
        "every write is checked, and the Dagster asset checks `contract` block downstream assets on errors.",
        soft_wrap=True,
    )


def _lineage_summary(console: Console) -> None:
    from lakebed.lineage.render import render
    from lakebed.lineage.store import LineageStore

    config = get_config()
    store = LineageStore(config)
    runs = store.runs(limit=1_000_000)
    failed = sum(1 for r in runs if r["state"] in ("FAIL", "ABORT"))
    producer = store.producer("fv_customer_activity_v1")
    inputs = ", ".join(d.describe() for d in producer.inputs) or "-"
    graph_path = config.home / "lineage" / "graph.svg"
    graph_path.write_bytes(render(store.graph(), "svg"))
    console.print(
        f"\n[bold]Lineage[/]: {len(runs):,} runs recorded as OpenLineage events ({failed} failed). "
        f"fv_customer_activity_v1@{producer.outputs[0].version if producer.outputs else '?'} was written by "
        f"run {producer.run_id} (job {producer.job_name}, code {producer.code_version}) from {inputs}; "
        f"Dagster run {producer.dagster_run_id or '-'}. Graph: {graph_path}",
        soft_wrap=True,
    )


def _where_to_look(console: Console, root: Path, seconds: float) -> None:
    import shlex

    config = get_config()
    here = shlex.quote(os.path.relpath(root))
    lines = [
        f"\n[green]Done in {seconds:.1f} s.[/] Where to look next:",
        f"  • the project:         {root}  (sources/, contracts/, models/, feature_views/ — edit them,"
        f" then cd {here} && lakebed plan)",
        f"  • tables (Delta Lake):  {config.tables_root}",
        '  • query them:          lakebed sql "SELECT * FROM orders LIMIT 5"  ·  lakebed tables',
        '  • models:              lakebed sql "SELECT * FROM daily_revenue ORDER BY revenue DESC LIMIT 5"'
        "  ·  lakebed run --select +daily_revenue",
        "  • time travel:         lakebed history orders  ·  lakebed show orders --version 0",
        "  • data quality:        lakebed quality quarantine orders  ·  lakebed quality check orders"
        "  ·  lakebed quality results --failed",
        f"  • tiering:             lakebed tier status {TIER_TABLE}  ·  lakebed tier move {TIER_TABLE} --before 2025-12-15",
        "  • lineage:             lakebed lineage producer orders  ·  lakebed lineage upstream "
        "fv_customer_activity_v1 --column spend_1d  ·  lakebed lineage serve",
        f"  • Dagster UI:          make ui  (or lakebed --project {here} ui)  →  http://127.0.0.1:3000"
        f"  (runs kept in {config.dagster_home})",
        f"  • new orders:          drop CSV exports into {root / 'data' / 'orders'} (the orders sensor picks"
        " them up in the UI)",
        "  • features in Python:  from lakebed import FeatureStore  (see README: Feature store)",
        "  • stream more events:  lakebed broker start · lakebed produce shop_events FILE --key customer_id",
    ]
    for line in lines:
        console.print(line, soft_wrap=True)
