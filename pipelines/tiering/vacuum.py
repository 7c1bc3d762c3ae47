"""Deleting the files moves and recalls removed, from both tiers, once readers of older versions are done."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TierError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.tiering.storage import cold_uri, in_flight, open_table, policy_of, scrub, where


@dataclass(frozen=True)
class VacuumResult:
    table: str
    hot_files: int
    cold_files: int
    note: str = ""

    def describe(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return (
            f"{self.table}: {self.hot_files} file(s) deleted from the hot tier, {self.cold_files} from the cold "
            f"tier{note}"
        )


def vacuum(
    table: str, *, grace: dt.timedelta | None = None, config: LakebedConfig | None = None
) -> VacuumResult:
    """Delete the files moves and recalls removed (and any other file no table version needs) from both
    tiers once ``grace`` (default: the policy's) has passed since their removal: readers of older
    versions keep working until then. The cold tier is left alone while an operation is in flight (readers
    then still read an older cold version)."""
    config = config or get_config()
    entry = Catalog(config).get(table)
    policy = policy_of(entry)
    grace = grace if grace is not None else (policy.grace if policy else dt.timedelta(days=7))
    hours = math.ceil(grace.total_seconds() / 3600)  # never shorter than asked

    def vacuum_table(delta: DeltaTable) -> int:
        return len(delta.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False))

    hot = DeltaTable(entry.uri)
    hot_files = vacuum_table(hot)
    if policy is None:
        return VacuumResult(table, hot_files, 0)
    if in_flight(hot, table):
        return VacuumResult(table, hot_files, 0, "cold tier skipped: an operation is in flight")
    cold = open_table(cold_uri(table, config), config)
    try:
        cold_files = vacuum_table(cold) if cold is not None else 0
    except (DeltaError, OSError) as exc:
        raise TierError(
            f"cannot vacuum the cold tier {where(cold_uri(table, config))}: {scrub(str(exc), config)}"
        ) from exc
    return VacuumResult(table, hot_files, cold_files)
