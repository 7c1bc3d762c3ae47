"""Tiering policies declared in table contracts. Pure data: pipelines/tiering/ moves the rows.

A tiered table keeps recent rows on the hot tier (a local path) and older rows on the cold tier (object
storage), split by a watermark on ``column`` (a timestamp, date or integer column). ``hot_for`` moves rows
older than that age; ``hot_bytes`` moves the oldest rows until the hot tier holds at most that many
bytes; ``unread_for`` moves rows older than that age unless reads touched them within it (then the
oldest row read stays hot: see pipelines/tiering/access.py); any may be combined (the one moving the most
wins). ``grace`` (default 7 days) is how long the files a move or
recall removed stay for readers of older versions before vacuum deletes them (freeing the hot disk).
"""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from lakebed.schemas.durations import format_duration, parse_duration

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: object) -> int:
    """``"1GiB"``, ``"500MB"``, ``1048576`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"invalid size {value!r}: use bytes or a number with B, KB, MB, GB, KiB, MiB, GiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "B").lower()])


class TierPolicy(BaseModel):
    """When rows of a table move from the hot to the cold tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    hot_for: dt.timedelta | None = None
    hot_bytes: int | None = Field(default=None, gt=0)
    unread_for: dt.timedelta | None = None
    grace: dt.timedelta = dt.timedelta(days=7)

    @field_validator("hot_for", "unread_for", "grace", mode="before")
    @classmethod
    def _duration(cls, value: object) -> dt.timedelta | None:
        return None if value is None else parse_duration(value)

    @field_validator("hot_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> int | None:
        return None if value is None else parse_size(value)

    @field_serializer("hot_for", "unread_for", "grace")
    def _duration_text(self, value: dt.timedelta | None) -> str | None:
        return None if value is None else format_duration(value)

    @model_validator(mode="after")
    def _something(self) -> TierPolicy:
        if self.hot_for is None and self.hot_bytes is None and self.unread_for is None:
            raise ValueError(
                "give hot_for (an age such as 90d), hot_bytes (a quota such as 10GiB), unread_for (an age "
                "such as 30d: what no read touched for that long) or several"
            )
        return self


__all__ = ["TierPolicy", "parse_size"]
