"""The feature registry: every registered feature-view version, its definition and definition hash.

A system table ``feature_registry`` (written through the one write path, ``kind="system"``) holds one row
per ``(name, version)``: the definition hash (:meth:`FeatureView.definition_hash`), the full definition
as JSON and when it was first registered. Registering the same definition again is a no-op; registering a
different definition under an existing ``(name, version)`` raises :class:`FeatureViewChangedError`: a
version's rows must never change meaning, so a new definition needs a new version.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import FeatureViewChangedError, FeatureViewNotFoundError, TableNotFoundError
from lakebed.pipelines.delta import RunContext, commit
from lakebed.pipelines.read import read_table
from lakebed.schemas.contract import ColumnSpec, TableContract
from lakebed.schemas.features import Aggregation, FeatureRef, FeatureView

REGISTRY_TABLE = "feature_registry"

CONTRACT = TableContract(
    name=REGISTRY_TABLE,
    description="Registered feature-view versions (lakebed feature store).",
    keys=("name", "version"),
    drift="strict",
    columns=(
        ColumnSpec(name="name", type="string", nullable=False),
        ColumnSpec(name="version", type="int64", nullable=False),
        ColumnSpec(name="definition_hash", type="string", nullable=False),
        ColumnSpec(name="definition", type="string", nullable=False, description="FeatureView JSON"),
        ColumnSpec(name="registered_at", type="timestamp", nullable=False),
    ),
)


@dataclass(frozen=True)
class RegisteredView:
    """One registry row."""

    name: str
    version: int
    definition_hash: str
    view: FeatureView
    registered_at: dt.datetime

    @property
    def key(self) -> str:
        return f"{self.name}:v{self.version}"


class FeatureRegistry:
    """Register and look up feature-view versions. Cheap to construct; reads the registry table on use."""

    def __init__(self, config: LakebedConfig | None = None) -> None:
        self.config = config or get_config()

    def _entries(self) -> dict[tuple[str, int], RegisteredView]:
        try:
            rows = read_table(REGISTRY_TABLE, config=self.config).to_pylist()
        except TableNotFoundError:
            return {}
        entries = {}
        for row in rows:
            view = FeatureView.from_dict(
                json.loads(row["definition"]),
                source=f"feature registry entry {row['name']}:v{row['version']}",
            )
            entries[(row["name"], int(row["version"]))] = RegisteredView(
                name=row["name"],
                version=int(row["version"]),
                definition_hash=row["definition_hash"],
                view=view,
                registered_at=row["registered_at"],
            )
        return entries

    def register(self, view: FeatureView, *, run: RunContext | None = None) -> RegisteredView:
        """Store ``view`` the first time; the same definition again is a no-op; a different definition
        under an existing ``(name, version)`` raises :class:`FeatureViewChangedError`."""
        digest = view.definition_hash()
        existing = self._entries().get((view.name, view.version))
        if existing is not None:
            if existing.definition_hash == digest:
                return existing
            changed = _changed_fields(existing.view, view)
            versions = sorted(v for (n, v) in self._entries() if n == view.name)
            raise FeatureViewChangedError(
                f"feature view {view.key} is already registered with a different definition "
                f"(registered {existing.registered_at:%Y-%m-%d %H:%M:%S} UTC, hash "
                f"{existing.definition_hash[:12]}; new hash {digest[:12]}; changed: {', '.join(changed)}). "
                f"A version's features must not change meaning: bump the version (e.g. version: "
                f"{max(versions) + 1}) to register the new definition."
            )
        entry = RegisteredView(
            name=view.name,
            version=view.version,
            definition_hash=digest,
            view=view,
            registered_at=dt.datetime.now(dt.UTC),
        )
        row = pa.Table.from_pylist(
            [
                {
                    "name": entry.name,
                    "version": entry.version,
                    "definition_hash": digest,
                    "definition": view.to_json(),
                    "registered_at": entry.registered_at,
                }
            ],
            schema=CONTRACT.arrow_schema(),
        )
        commit(
            REGISTRY_TABLE,
            row,
            mode="merge",
            keys=["name", "version"],
            contract=CONTRACT,
            kind="system",
            run=run or RunContext(job="features.register"),
            metadata={"lakebed.features.view": view.key, "lakebed.features.definition_hash": digest},
            config=self.config,
        )
        return entry

    def entry(self, name: str, version: int) -> RegisteredView:
        """The registry row of ``name`` version ``version``; a clear error naming the known versions."""
        entries = self._entries()
        found = entries.get((name, int(version)))
        if found is not None:
            return found
        versions = sorted(v for (n, v) in entries if n == name)
        if versions:
            raise FeatureViewNotFoundError(
                f"feature view {name!r} has no version {version} (registered versions: "
                f"{', '.join(f'v{v}' for v in versions)})"
            )
        raise FeatureViewNotFoundError(_unknown_view(name, entries))

    def get(self, name: str, version: int) -> FeatureView:
        """The definition of ``name`` version ``version``."""
        return self.entry(name, version).view

    def list(self) -> builtins.list[RegisteredView]:
        """Every registered view version, by name then version."""
        return sorted(self._entries().values(), key=lambda e: (e.name, e.version))

    def versions(self, name: str) -> builtins.list[int]:
        return sorted(v for (n, v) in self._entries() if n == name)

    def latest(self, name: str) -> FeatureView:
        """The highest registered version of ``name``."""
        entries = self._entries()
        versions = sorted(v for (n, v) in entries if n == name)
        if not versions:
            raise FeatureViewNotFoundError(_unknown_view(name, entries))
        return entries[(name, versions[-1])].view

    def resolve(self, ref: str | FeatureRef) -> tuple[FeatureView, Aggregation]:
        """The view version and aggregation a reference ``view:vN:feature`` names (clear errors for a
        malformed reference, an unknown view or version, or a feature the view lacks)."""
        parsed = ref if isinstance(ref, FeatureRef) else FeatureRef.parse(ref)
        view = self.get(parsed.view, parsed.version)
        return view, view.aggregation(parsed.feature)


def _unknown_view(name: str, entries: dict[tuple[str, int], RegisteredView]) -> str:
    known = sorted({n for (n, _) in entries})
    return (
        f"no feature view named {name!r} is registered (registered views: {', '.join(known) or 'none yet'})"
    )


def _changed_fields(old: FeatureView, new: FeatureView) -> builtins.list[str]:
    before, after = old.definition(), new.definition()
    changed = []
    for field in sorted(set(before) | set(after)):
        if before.get(field) == after.get(field):
            continue
        if field == "aggregations":
            changed.append(_changed_aggregations(before[field], after[field]))
        elif isinstance(before.get(field), str | int) and isinstance(after.get(field), str | int):
            changed.append(f"{field} {before.get(field)} -> {after.get(field)}")
        else:
            changed.append(field)
    return changed


def _changed_aggregations(
    before: builtins.list[dict[str, object]], after: builtins.list[dict[str, object]]
) -> str:
    old = {a["name"]: a for a in before}
    new = {a["name"]: a for a in after}
    parts = [f"+{n}" for n in new if n not in old] + [f"-{n}" for n in old if n not in new]
    parts += [f"~{n}" for n in new if n in old and new[n] != old[n]]
    if not parts:
        parts = ["order"]
    return f"aggregations ({' '.join(str(p) for p in parts)})"


# Module-level helpers on the default registry ---------------------------------------------------------
def register(view: FeatureView, *, config: LakebedConfig | None = None) -> RegisteredView:
    return FeatureRegistry(config).register(view)


def get(name: str, version: int, *, config: LakebedConfig | None = None) -> FeatureView:
    return FeatureRegistry(config).get(name, version)


def latest(name: str, *, config: LakebedConfig | None = None) -> FeatureView:
    return FeatureRegistry(config).latest(name)


def list_views(*, config: LakebedConfig | None = None) -> builtins.list[RegisteredView]:
    return FeatureRegistry(config).list()


def resolve(ref: str | FeatureRef, *, config: LakebedConfig | None = None) -> tuple[FeatureView, Aggregation]:
    return FeatureRegistry(config).resolve(ref)


__all__ = [
    "REGISTRY_TABLE",
    "FeatureRegistry",
    "FeatureViewChangedError",
    "FeatureViewNotFoundError",
    "RegisteredView",
    "get",
    "latest",
    "list_views",
    "register",
    "resolve",
]
