"""The outcome of a check run: one :class:`RuleResult` per rule, and its OpenLineage shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lakebed.quality.rules import Rule

# Columns a quarantine table adds to the rows it holds.
RULES_COLUMN = "_rules"
REASON_COLUMN = "_reason"
RAW_COLUMN = "_raw"


@dataclass(frozen=True)
class RuleResult:
    """How one rule fared on the data checked. ``observed`` is the measured value in words (failing rows,
    the row count, duplicate keys, the lag of the newest event)."""

    rule: Rule
    passed: bool
    checked_rows: int
    failed_rows: int = 0
    observed: str = ""
    engine: str = "polars"
    samples: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    @property
    def blocking(self) -> bool:
        """Whether this failure stops data: an ``error`` table rule blocks a commit, an ``error`` row rule
        quarantines its rows."""
        return not self.passed and self.rule.severity == "error"


@dataclass(frozen=True)
class CheckRun:
    """Every rule's result on one table (at one Delta version, or on a write that was blocked)."""

    table: str
    results: tuple[RuleResult, ...]
    version: int | None = None
    run_id: str | None = None
    check_id: str | None = None

    @property
    def passed(self) -> bool:
        return not any(r.blocking for r in self.results)

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed)


__all__ = ["CheckRun", "RuleResult"]
