"""Durations in specs: strings such as ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"2w"`` or
compounds such as ``"1h30m"``."""

from __future__ import annotations

import datetime as dt
import re

_UNITS_US: dict[str, int] = {
    "w": 7 * 86_400_000_000,
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
}
_DURATION_PART = re.compile(r"(\d+)(ms|us|w|d|h|m|s)")


def parse_duration(value: object) -> dt.timedelta:
    """``"5m"`` → ``timedelta(minutes=5)``; accepts timedeltas, and compounds such as ``"1h30m"``."""
    if isinstance(value, dt.timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string such as '5m', '1h' or '1d', got {value!r}")
    text = value.strip().lower().replace(" ", "")
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(
            f"invalid duration {value!r}: use a number and a unit (us, ms, s, m, h, d, w), e.g. '5m', "
            "'1h', '1d' or '1h30m'"
        )
    total = sum(int(n) * _UNITS_US[unit] for n, unit in _DURATION_PART.findall(text))
    return dt.timedelta(microseconds=total)


def duration_us(value: dt.timedelta) -> int:
    """A timedelta as whole microseconds (exact, no float rounding)."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def format_duration(value: dt.timedelta) -> str:
    """The canonical string of a duration: one number in the largest unit that divides it exactly."""
    total = duration_us(value)
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    for unit, size in _UNITS_US.items():
        if total % size == 0:
            return f"{sign}{total // size}{unit}"
    raise AssertionError("unreachable: 'us' divides every duration")


__all__ = ["duration_us", "format_duration", "parse_duration"]
