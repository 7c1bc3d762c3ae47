"""Cron expressions of source schedules (five fields, as Dagster's schedules take them), checked early."""

from __future__ import annotations

import re

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i + 1
            for i, m in enumerate(
                ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
            )
        },
    ),
    ("day of week", 0, 7, {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}),
)
_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
_PART = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")


def check_cron(expression: str) -> str:
    """``expression`` if it is a valid cron schedule, else ValueError saying which field is wrong."""
    text = expression.strip().lower()
    if text in _ALIASES:
        return expression
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"cron expression {expression!r} needs 5 fields (minute hour day month weekday)")
    for value, (what, low, high, names) in zip(fields, _FIELDS, strict=True):
        for part in value.split(","):
            match = _PART.match(part)
            if match is None:
                raise ValueError(f"cron expression {expression!r}: bad {what} {part!r}")
            bounds = [] if match.group(1) == "*" else match.group(1).split("-")
            for bound in bounds:
                number = names.get(bound, int(bound) if bound.isdigit() else None)
                if number is None or not low <= number <= high:
                    raise ValueError(
                        f"cron expression {expression!r}: {what} {bound!r} is not in {low}-{high}"
                    )
            if match.group(2) is not None and int(match.group(2)) == 0:
                raise ValueError(f"cron expression {expression!r}: step 0 in the {what} field")
    return expression
