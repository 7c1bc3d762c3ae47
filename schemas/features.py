"""Feature-view specs: hopping-window aggregations over an event source. Pure data, no I/O.

A feature view (docs/streaming.md, "Feature store semantics") names its entity key columns, its source (a Delta
table, optionally fed by a stream topic), its event-time column, its aggregations (each a function over a
column and a window size), one hop, a ttl and an allowed lateness. Views are versioned: the registry stores
:meth:`FeatureView.definition_hash` of each ``(name, version)`` and refuses a changed definition under an
old version.

Durations are strings such as ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"2w"`` or compounds
like ``"1h30m"``; they are stored in the canonical form (the largest exact unit: ``"90m"``, ``"1h"``), so
``"60m"`` and ``"1h"`` are the same definition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from lakebed.errors import ContractError, FeatureNotFoundError, FeatureRefError
from lakebed.schemas.durations import duration_us, format_duration, parse_duration
from lakebed.schemas.loading import read_yaml, validate
from lakebed.schemas.naming import table_name_validator

AggregationFunction = Literal["sum", "mean", "count", "min", "max", "last"]

FEATURE_TS = "feature_ts"
"""Name of the window-end column of every offline and online feature table."""
FEATURE_VALID_TO = "feature_valid_to"
"""Offline tables: the first hop end at which a row's values no longer hold (docs/streaming.md)."""

IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""View and feature names: a lowercase letter, then lowercase letters, digits or underscores (≤ 63)."""

_REF_VERSION = re.compile(r"v([1-9][0-9]*)")


def _identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: use a lowercase letter followed by lowercase letters, digits or "
            "underscores (at most 63 characters)"
        )
    return value


# Specs ----------------------------------------------------------------------------------------------
class Aggregation(BaseModel):
    """One feature: ``function`` over ``column`` in a window of ``window`` ending at each hop.

    ``count`` without a column counts events; with a column it counts the events whose value is not null
    (so ``count`` of ``amount`` counts purchases in a stream where only purchases carry an amount).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    function: AggregationFunction
    column: str | None = None
    window: dt.timedelta

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _identifier(value, "feature name")

    @field_validator("column")
    @classmethod
    def _valid_column(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("column must not be empty")
        return value

    @field_validator("window", mode="before")
    @classmethod
    def _parse_window(cls, value: object) -> dt.timedelta:
        return parse_duration(value)

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: dt.timedelta) -> dt.timedelta:
        if duration_us(value) <= 0:
            raise ValueError(f"window must be positive, got {format_duration(value)}")
        return value

    @model_validator(mode="after")
    def _column_needed(self) -> Aggregation:
        if self.column is None and self.function != "count":
            raise ValueError(f"{self.function} needs a column (only count may omit it)")
        return self

    @field_serializer("window")
    def _dump_window(self, value: dt.timedelta) -> str:
        return format_duration(value)

    @property
    def window_us(self) -> int:
        return duration_us(self.window)


class FeatureSource(BaseModel):
    """Where a view's events come from: a lakebed table, optionally fed by a stream topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    topic: str | None = None

    @field_validator("table")
    @classmethod
    def _valid_table(cls, value: str) -> str:
        return table_name_validator(value)

    @field_validator("topic")
    @classmethod
    def _valid_topic(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("topic must not be empty")
        return value


class FeatureView(BaseModel):
    """A versioned set of hopping-window aggregations over one event source.

    Offline table: ``fv_<name>_v<version>`` (entity keys, ``feature_ts``, one column per aggregation);
    late events: ``fv_<name>_v<version>__late``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    entities: tuple[str, ...]
    source: FeatureSource
    event_time: str
    aggregations: tuple[Aggregation, ...]
    hop: dt.timedelta
    ttl: dt.timedelta
    allowed_lateness: dt.timedelta = dt.timedelta(0)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        # At most 63 characters, so fv_<name>_v<version>__late stays a valid table name.
        return _identifier(value, "feature view name")

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"version must be an integer >= 1, got {value!r}")
        return value

    @field_validator("entities")
    @classmethod
    def _valid_entities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a feature view needs at least one entity key column")
        blank = [e for e in value if not e.strip()]
        if blank:
            raise ValueError("entity column names must not be empty")
        duplicates = sorted({e for e in value if value.count(e) > 1})
        if duplicates:
            raise ValueError(f"duplicate entity columns {duplicates}")
        if FEATURE_TS in value:
            raise ValueError(f"{FEATURE_TS!r} is reserved for the window end and cannot be an entity")
        return value

    @field_validator("event_time")
    @classmethod
    def _valid_event_time(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("event_time must name the source's event-time column")
        return value

    @field_validator("hop", "ttl", "allowed_lateness", mode="before")
    @classmethod
    def _parse_durations(cls, value: object) -> dt.timedelta:
        return parse_duration(value)

    @field_validator("hop", "ttl")
    @classmethod
    def _positive(cls, value: dt.timedelta) -> dt.timedelta:
        if duration_us(value) <= 0:
            raise ValueError(f"must be positive, got {format_duration(value)}")
        return value

    @field_validator("allowed_lateness")
    @classmethod
    def _not_negative(cls, value: dt.timedelta) -> dt.timedelta:
        if duration_us(value) < 0:
            raise ValueError(f"must not be negative, got {format_duration(value)}")
        return value

    @field_validator("aggregations")
    @classmethod
    def _some_aggregations(cls, value: tuple[Aggregation, ...]) -> tuple[Aggregation, ...]:
        if not value:
            raise ValueError("a feature view needs at least one aggregation")
        names = [a.name for a in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names {duplicates}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureView:
        hop = duration_us(self.hop)
        for index, aggregation in enumerate(self.aggregations):
            if aggregation.window_us % hop:
                raise ValueError(
                    f"aggregations.{index}.window: {format_duration(aggregation.window)} "
                    f"({aggregation.name}) is not a multiple of hop {format_duration(self.hop)}"
                )
            if aggregation.name in self.entities or aggregation.name == FEATURE_TS:
                raise ValueError(
                    f"aggregations.{index}.name: {aggregation.name!r} clashes with an entity column or "
                    f"{FEATURE_TS!r}"
                )
        if self.event_time in self.entities:
            raise ValueError(f"event_time {self.event_time!r} cannot also be an entity key column")
        return self

    @field_serializer("hop", "ttl", "allowed_lateness")
    def _dump_duration(self, value: dt.timedelta) -> str:
        return format_duration(value)

    # Derived names ------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """``name:vN``: how references and the registry name this view version."""
        return f"{self.name}:v{self.version}"

    @property
    def offline_table(self) -> str:
        return f"fv_{self.name}_v{self.version}"

    @property
    def late_table(self) -> str:
        return f"{self.offline_table}__late"

    @property
    def app_id(self) -> str:
        """The Delta application-transaction id of this view's processing state."""
        return f"features:{self.name}:v{self.version}"

    @property
    def hop_us(self) -> int:
        return duration_us(self.hop)

    @property
    def ttl_us(self) -> int:
        return duration_us(self.ttl)

    @property
    def allowed_lateness_us(self) -> int:
        return duration_us(self.allowed_lateness)

    @property
    def max_window(self) -> dt.timedelta:
        return max(a.window for a in self.aggregations)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.aggregations)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The source columns the view reads: entities, event time, then aggregated columns."""
        columns = [*self.entities, self.event_time]
        columns += [a.column for a in self.aggregations if a.column is not None]
        return tuple(dict.fromkeys(columns))

    def aggregation(self, name: str) -> Aggregation:
        """The aggregation (feature) called ``name``; a clear error listing the view's features if none."""
        for aggregation in self.aggregations:
            if aggregation.name == name:
                return aggregation
        raise FeatureNotFoundError(
            f"feature view {self.key} has no feature {name!r} (its features: {', '.join(self.feature_names)})"
        )

    # Definition and hash ------------------------------------------------------------------------
    def definition(self) -> dict[str, Any]:
        """The canonical definition: every field that changes the rows a view produces or serves
        (everything except ``description``), durations in canonical form."""
        data = self.model_dump(mode="json", exclude={"description"})
        data["entities"] = list(self.entities)
        data["aggregations"] = [a.model_dump(mode="json") for a in self.aggregations]
        return data

    def definition_json(self) -> str:
        """:meth:`definition` as canonical JSON (sorted keys, no whitespace)."""
        return json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))

    def definition_hash(self) -> str:
        """sha256 (hex) of :meth:`definition_json`: stable across processes, key order, YAML layout,
        equivalent duration spellings and the description."""
        return hashlib.sha256(self.definition_json().encode()).hexdigest()

    def to_json(self) -> str:
        """The full spec (with the description) as JSON; :meth:`from_dict` reads it back."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    # Loading ------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureView:
        """Load a view from YAML; an invalid file names itself and the offending field."""
        return cls.from_dict(read_yaml(path, what="feature view"), source=str(path))

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<feature view>") -> FeatureView:
        return validate(cls, data, source=source, what="feature view")


def load_feature_views(folder: str | Path) -> dict[str, FeatureView]:
    """Every ``*.yaml``/``*.yml`` view in ``folder``, keyed by ``name:vN``; a ``(name, version)``
    defined twice is an error naming both files."""
    views: dict[str, FeatureView] = {}
    origin: dict[str, Path] = {}
    for path in sorted(Path(folder).glob("*.y*ml")):
        view = FeatureView.from_yaml(path)
        if view.key in views:
            raise ContractError(f"{path}: feature view {view.key} is already defined in {origin[view.key]}")
        views[view.key] = view
        origin[view.key] = path
    return views


# References -----------------------------------------------------------------------------------------
class FeatureRef(BaseModel):
    """A reference to one feature of one view version: ``view:vN:feature``."""

    model_config = ConfigDict(frozen=True)

    view: str
    version: int
    feature: str

    @classmethod
    def parse(cls, ref: str) -> FeatureRef:
        if not isinstance(ref, str):
            raise FeatureRefError(f"a feature reference is a string 'view:vN:feature', got {ref!r}")
        parts = ref.strip().split(":")
        if len(parts) != 3:
            raise FeatureRefError(
                f"invalid feature reference {ref!r}: expected 'view:vN:feature' "
                f"(e.g. 'customer_activity:v1:purchases_1h'), got {len(parts)} part(s)"
            )
        view, version, feature = parts
        if not IDENTIFIER.fullmatch(view):
            raise FeatureRefError(f"invalid feature reference {ref!r}: {view!r} is not a valid view name")
        match = _REF_VERSION.fullmatch(version)
        if match is None:
            raise FeatureRefError(
                f"invalid feature reference {ref!r}: the version must be 'v' and a number >= 1 "
                f"(e.g. 'v1'), got {version!r}"
            )
        if not IDENTIFIER.fullmatch(feature):
            raise FeatureRefError(
                f"invalid feature reference {ref!r}: {feature!r} is not a valid feature name"
            )
        return cls(view=view, version=int(match.group(1)), feature=feature)

    @property
    def view_key(self) -> str:
        return f"{self.view}:v{self.version}"

    def __str__(self) -> str:
        return f"{self.view}:v{self.version}:{self.feature}"


__all__ = [
    "FEATURE_TS",
    "Aggregation",
    "AggregationFunction",
    "FeatureNotFoundError",
    "FeatureRef",
    "FeatureRefError",
    "FeatureSource",
    "FeatureView",
    "duration_us",
    "format_duration",
    "load_feature_views",
    "parse_duration",
]
