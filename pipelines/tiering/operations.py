"""Moves and recalls as callers run them: each one a lineage run with the hot and cold tables as datasets,
finishing an interrupted operation first."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from lakebed.config import LakebedConfig, get_config
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.metrics import TIER_MOVE_DURATION
from lakebed.pipelines.delta import RunContext
from lakebed.pipelines.tiering.move import Mover, MoveResult, Progress
from lakebed.pipelines.tiering.plan import plan_for
from lakebed.pipelines.tiering.view import open_tiers
from lakebed.pipelines.tiering.watermark import from_units, to_units


def move(
    table: str,
    *,
    before: Any = None,
    run: RunContext | None = None,
    progress: Progress | None = None,
    config: LakebedConfig | None = None,
    now: dt.datetime | None = None,
) -> MoveResult:
    """Move the rows below the planned watermark (``before``, else the policy's) to the cold tier.

    Finishes an interrupted move or recall first. Idempotent: a move to the current watermark with no
    late rows does nothing."""
    config = config or get_config()
    run = run or RunContext(job=f"tier_move:{table}")
    started = time.perf_counter()
    mover = Mover(table, config, run, progress)
    with lineage_run(run, config=config) as lineage:
        lineage.add_input(table_dataset(table, mover.hot_uri, mover.hot().version()))
        mover.cold()  # an unreachable store, a missing bucket or bad credentials stop us before any commit
        resumed = mover.resume()
        plan = plan_for(mover.entry, mover.hot(), before=before, now=now, config=config)
        if plan.rows and (plan.current is None or plan.target >= plan.current):
            op = mover.begin(plan.target)
            mover.move(op, plan.target)
            mover.result.operation = "move"
        elif resumed:
            mover.result.operation = "resume"
        mover.result.watermark = from_units(
            open_tiers(mover.entry, mover.hot(), config).watermark, mover.dtype
        )
        if mover.result.cold_version is not None:
            lineage.add_output(
                table_dataset(table, mover.cold_uri, mover.result.cold_version, extra={"tier": "cold"})
            )
        if mover.result.hot_version is not None:
            lineage.add_output(
                table_dataset(table, mover.hot_uri, mover.result.hot_version, extra={"tier": "hot"})
            )
    mover.result.seconds = time.perf_counter() - started
    TIER_MOVE_DURATION.labels(table).observe(mover.result.seconds)
    return mover.result


def recall(
    table: str,
    *,
    since: Any,
    run: RunContext | None = None,
    progress: Progress | None = None,
    config: LakebedConfig | None = None,
) -> MoveResult:
    """Bring the cold rows with column >= ``since`` back to the hot tier (lowering the watermark)."""
    config = config or get_config()
    run = run or RunContext(job=f"tier_recall:{table}")
    started = time.perf_counter()
    mover = Mover(table, config, run, progress)
    with lineage_run(run, config=config) as lineage:
        mover.cold()  # an unreachable store, a missing bucket or bad credentials stop us before any commit
        mover.resume()
        target = to_units(since, mover.dtype)
        current = open_tiers(mover.entry, mover.hot(), config).watermark
        if current is None or target >= current:
            mover.result.notes.append("nothing to recall: the cold tier holds no rows at or above that")
        else:
            op = mover.begin(target)
            mover.recall(op, target)
            mover.result.operation = "recall"
            lineage.add_output(
                table_dataset(table, mover.hot_uri, mover.result.hot_version, extra={"tier": "hot"})
            )
            lineage.add_output(
                table_dataset(table, mover.cold_uri, mover.result.cold_version, extra={"tier": "cold"})
            )
        mover.result.watermark = from_units(
            open_tiers(mover.entry, mover.hot(), config).watermark, mover.dtype
        )
    mover.result.seconds = time.perf_counter() - started
    return mover.result


def describe(result: MoveResult) -> str:
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    return (
        f"{result.table}: {result.operation}, {result.rows:,} row(s), watermark {result.watermark}, "
        f"cold version {result.cold_version}, hot version {result.hot_version}, {result.seconds:.2f} s{notes}"
    )
