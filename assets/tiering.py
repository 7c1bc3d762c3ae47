"""Tiering in Dagster: a daily schedule moving every tiered table by its policy (then deleting the files
earlier moves removed, once the policy's grace has passed), and a sensor that moves a table as soon as its
hot tier is over its byte quota. Wiring only: the work is in pipelines/tiering/."""

import dagster as dg

from lakebed.assets.resources import LakebedResource
from lakebed.errors import LakebedError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.tiering import describe, move, policy_of, status, vacuum


class TierMoveConfig(dg.Config):
    tables: list[str] = []  # empty: every table with a tiering policy


@dg.op(
    description="Move the rows each tiered table's policy sends to the cold tier (finishing interrupted moves), "
    "then vacuum both tiers of files removed longer ago than the policy's grace."
)
def move_tiered_tables(
    context: dg.OpExecutionContext, config: TierMoveConfig, lakebed: LakebedResource
) -> None:
    settings = lakebed.config()
    failed = []
    for entry in Catalog(settings).list(kind="table"):
        if policy_of(entry) is None or (config.tables and entry.name not in config.tables):
            continue
        try:
            result = move(
                entry.name,
                run=lakebed.run_context(context, job=f"dagster:tier:{entry.name}"),
                config=settings,
            )
            context.log.info(describe(result))
            context.log.info(vacuum(entry.name, config=settings).describe())
        except LakebedError as exc:  # one table's trouble does not hold the others back
            context.log.error(f"{entry.name}: {exc}")
            failed.append(entry.name)
    if failed:
        raise dg.Failure(f"tiering failed for {', '.join(failed)} (the others moved); see the log")


@dg.job(description="Hot/cold tiering: move older rows of every tiered table to object storage.")
def tier_move_job() -> None:
    move_tiered_tables()


tier_move_schedule = dg.ScheduleDefinition(
    name="tier_move_schedule",
    job=tier_move_job,
    cron_schedule="43 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: move rows past each tiered table's hot_for age to the cold tier.",
)


@dg.sensor(
    job=tier_move_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Moves a tiered table when its hot tier holds more bytes than its policy's hot_bytes quota.",
)
def hot_tier_quota_sensor(context: dg.SensorEvaluationContext, lakebed: LakebedResource) -> dg.SensorResult:
    settings = lakebed.config()
    over = []
    for entry in Catalog(settings).list(kind="table"):
        policy = policy_of(entry)
        if policy is None or policy.hot_bytes is None:
            continue
        try:
            state = status(entry.name, config=settings)
        except LakebedError as exc:
            context.log.warning(f"{entry.name}: {exc}")
            continue
        if state.hot_bytes > policy.hot_bytes:
            over.append((entry.name, state.hot_bytes))
    if not over:
        return dg.SensorResult(skip_reason=dg.SkipReason("every tiered table is within its hot-tier quota"))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{name}:{size}",
                run_config={"ops": {"move_tiered_tables": {"config": {"tables": [name]}}}},
                tags={"lakebed/table": name},
            )
            for name, size in over
        ]
    )
