"""``lakebed plan`` and ``lakebed apply``: a project compared with the lake, then made true in it.

:func:`plan` is a pure diff: it reads the catalog, the feature registry and the schema of tables already
written, and changes nothing. Each :class:`Change` says what ``apply`` would do with one table or one
feature-view version: ``create``, ``update``, ``unchanged`` or ``refuse``. A refused change is one the
lake would not accept: an edit of a feature-view version already registered with another definition (a
version's features must not change meaning), a column whose type no longer fits the data already written,
or a column a ``strict`` table would reject. :func:`apply` registers contracts in the catalog and new
feature-view versions in the registry; it never ingests data, and does nothing at all when anything is
refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import LakebedError
from lakebed.pipelines.catalog import Catalog, TableEntry
from lakebed.pipelines.delta import open_delta
from lakebed.pipelines.features.registry import FeatureRegistry, RegisteredView, _changed_fields
from lakebed.schemas.contract import ColumnSpec, TableContract
from lakebed.schemas.features import FeatureView
from lakebed.schemas.project import Project
from lakebed.schemas.types import delta_type, type_name, widens_to
from lakebed.storage import is_local

ChangeKind = Literal["table", "model", "feature_view"]
Action = Literal["create", "update", "unchanged", "refuse"]
CHANGE_COLUMNS = ("kind", "name", "action", "detail", "file")


class PlanRefusedError(LakebedError):
    """``apply`` of a plan that refuses a change: nothing was applied."""


@dataclass(frozen=True)
class Change:
    """One line of a plan: what happens to table or feature-view version ``name`` and why."""

    kind: ChangeKind
    name: str
    action: Action
    detail: str
    file: Path | None = None  # the file it comes from, relative to the project folder
    contract: TableContract | None = None  # tables: the contract to register
    view: FeatureView | None = None  # feature views: the definition to register

    def row(self) -> dict[str, object]:
        """The change as one output row (the keys of :data:`CHANGE_COLUMNS`)."""
        file = str(self.file) if self.file is not None else None
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "detail": self.detail,
            "file": file,
        }


@dataclass(frozen=True)
class Plan:
    """The changes a project makes to the lake, tables first, then feature views."""

    project: Project
    changes: tuple[Change, ...]

    @property
    def refused(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action == "refuse")

    @property
    def pending(self) -> tuple[Change, ...]:
        """The changes apply performs."""
        return tuple(c for c in self.changes if c.action in ("create", "update"))


def plan(project: Project, config: LakebedConfig | None = None) -> Plan:
    """Compare ``project`` with the lake of ``config`` (the catalog, the registry, written tables)."""
    config = config or get_config()
    catalog = Catalog(config)
    tables = [_table_change(project, table, catalog.find(table)) for table in _tables(project)]
    registered = {entry.key: entry for entry in FeatureRegistry(config).list()}
    views = [
        _view_change(project, key, view, registered)
        for key, view in sorted(
            project.feature_views.items(), key=lambda item: (item[1].name, item[1].version)
        )
    ]
    models = [_model_change(project, name, catalog.find(name)) for name in project.models]
    return Plan(project, (*tables, *models, *views))


def apply(plan: Plan, config: LakebedConfig | None = None) -> list[Change]:
    """Register what ``plan`` creates or updates; the changes made. Raises :class:`PlanRefusedError`
    (and changes nothing) when the plan refuses anything."""
    if plan.refused:
        raise PlanRefusedError(f"nothing applied: {refusal(plan)}")
    config = config or get_config()
    catalog, registry = Catalog(config), FeatureRegistry(config)
    done = []
    for change in plan.pending:
        if change.kind == "model":
            continue  # a model's table is made by `lakebed run` (or its Dagster asset)
        if change.kind == "table":
            # A catalog entry only: the table's data is written by its first ingest.
            catalog.register(change.name, kind="table", contract=change.contract)
        elif change.view is not None:
            registry.register(change.view)
        done.append(change)
    return done


# Tables ----------------------------------------------------------------------------------------------
def _tables(project: Project) -> list[str]:
    return sorted({source.table for source in project.sources})


def _declared_contract(project: Project, table: str) -> TableContract | None:
    """The contract the sources of ``table`` name (they all name the same one), or None."""
    named = any(source.contract is not None for source in project.sources_of(table))
    return project.contract_of(table) if named else None


def _table_change(project: Project, table: str, entry: TableEntry | None) -> Change:
    contract = _declared_contract(project, table)
    origin = project.origins.get(f"contract:{table}") if contract is not None else None
    file = _shown(project, origin or project.origins.get(f"source:{table}"))
    if entry is None:
        detail = f"new table, {_describe(contract)}; nothing is ingested until its source runs"
        return Change("table", table, "create", detail, file, contract=contract)
    if contract is None or contract == entry.contract:
        return Change("table", table, "unchanged", _describe(entry.contract), file, contract=contract)
    changes = contract_changes(entry.contract, contract)
    refusals = _refusals(entry, contract)
    if refusals:
        detail = "; ".join([*refusals, *changes])
        return Change("table", table, "refuse", detail, file, contract=contract)
    return Change("table", table, "update", "; ".join(changes), file, contract=contract)


def _model_change(project: Project, name: str, entry: TableEntry | None) -> Change:
    from lakebed.pipelines.models.run import last_code_version

    model = project.models[name]
    file = _shown(project, model.path)
    what = f"{model.options.materialized} model reading {', '.join(model.inputs) or 'no table'}"
    if entry is None:
        return Change("model", name, "create", f"new {what}; built by `lakebed run`", file)
    built = last_code_version(open_delta(entry.uri))
    if built != model.code_version:
        return Change("model", name, "update", f"{what}; its code changed: the next run rebuilds it", file)
    return Change("model", name, "unchanged", what, file)


def _shown(project: Project, path: Path | None) -> Path | None:
    """``path`` relative to the project folder (as a user names it), absolute when outside it."""
    if path is None or not path.is_relative_to(project.root):
        return path
    return path.relative_to(project.root)


def _describe(contract: TableContract | None) -> str:
    if contract is None:
        return "no contract (columns as the data has them)"
    parts = [f"{len(contract.columns)} column(s)"]
    if contract.keys:
        parts.append(f"keys {', '.join(contract.keys)}")
    parts.append(f"drift {contract.drift}")
    rules = len(contract.rules) + sum(_column_rules(c) for c in contract.columns)
    rules += sum(1 for rule in contract.table_rules.model_dump().values() if rule is not None)
    if rules:
        parts.append(f"{rules} rule(s)")
    return "contract: " + ", ".join(parts)


def _column_rules(column: ColumnSpec) -> int:
    """How many quality rules ``column`` declares (not null, unique, between, allowed, regex)."""
    bounded = column.min is not None or column.max is not None
    declared = (
        not column.nullable,
        column.unique,
        bounded,
        column.allowed is not None,
        column.regex is not None,
    )
    return sum(declared)


def contract_changes(old: TableContract | None, new: TableContract) -> list[str]:
    """What differs from ``old`` (the registered contract) to ``new``, one phrase per difference."""
    if old is None:
        return [f"contract added: {_describe(new)}"]
    before = {c.name: c for c in old.columns}
    after = {c.name: c for c in new.columns}
    changes = [f"column {n!r} added ({after[n].type})" for n in after if n not in before]
    changes += [f"column {n!r} removed" for n in before if n not in after]
    for name in (n for n in after if n in before):
        changes += _column_changes(before[name], after[name])
    for field in ("keys", "partition_by"):
        if getattr(old, field) != getattr(new, field):
            changes.append(
                f"{field} ({', '.join(getattr(old, field))}) -> ({', '.join(getattr(new, field))})"
            )
    if old.drift != new.drift:
        changes.append(f"drift {old.drift} -> {new.drift}")
    old_rules = {r.name: r for r in old.rules}
    new_rules = {r.name: r for r in new.rules}
    changes += [f"rule {n!r} added" for n in new_rules if n not in old_rules]
    changes += [f"rule {n!r} removed" for n in old_rules if n not in new_rules]
    changes += [f"rule {n!r} changed" for n in new_rules if n in old_rules and new_rules[n] != old_rules[n]]
    for field in ("table_rules", "tiering", "encoding", "description"):
        if getattr(old, field) != getattr(new, field):
            changes.append(f"{field} changed")
    return changes


def _column_changes(old: ColumnSpec, new: ColumnSpec) -> list[str]:
    changes = []
    if old.type != new.type:
        changes.append(f"column {new.name!r} retyped {old.type} -> {new.type}")
    if old.nullable != new.nullable:
        changes.append(f"column {new.name!r} {'nullable' if new.nullable else 'not nullable'}")
    rules = ("unique", "min", "max", "allowed", "regex", "severity")
    changed = [rule for rule in rules if getattr(old, rule) != getattr(new, rule)]
    if changed:
        changes.append(f"column {new.name!r} rules changed ({', '.join(changed)})")
    return changes


def _refusals(entry: TableEntry, contract: TableContract) -> list[str]:
    """What the write path would refuse once ``contract`` governs the data already in ``entry``'s table:
    columns whose type the data's type no longer fits, and (strict tables) columns the table lacks."""
    if not is_local(entry.uri):
        return []
    table = open_delta(entry.uri)
    if table is None:
        return []  # registered, not written yet: any contract fits
    import pyarrow as pa

    current = pa.schema(table.schema().to_arrow())
    refusals = []
    for column in contract.columns:
        index = current.get_field_index(column.name)
        if index < 0:
            if contract.drift == "strict":
                refusals.append(
                    f"table {entry.name!r} is strict and its data has no column {column.name!r}: "
                    f"writes with column {column.name!r} would be refused"
                )
            continue
        written = current.field(index).type
        if not widens_to(delta_type(column.arrow_type), written):
            refusals.append(
                f"column {column.name!r} is {type_name(written)} in the table, the contract makes it {column.type}: "
                "a column's type never changes"
            )
    return refusals


# Feature views ---------------------------------------------------------------------------------------
def _view_change(
    project: Project, key: str, view: FeatureView, registered: dict[str, RegisteredView]
) -> Change:
    file = _shown(project, project.origins.get(f"view:{key}"))
    existing = registered.get(key)
    versions = sorted(entry.version for entry in registered.values() if entry.name == view.name)
    if existing is None:
        known = f" (registered: {', '.join(f'v{v}' for v in versions)})" if versions else ""
        detail = f"new version: {len(view.aggregations)} feature(s) on {view.source.table}{known}"
        return Change("feature_view", key, "create", detail, file, view=view)
    if existing.definition_hash == view.definition_hash():
        return Change("feature_view", key, "unchanged", "registered, same definition", file, view=view)
    changed = ", ".join(_changed_fields(existing.view, view))
    where = file if file is not None else "its file"
    detail = (
        f"{key} is already registered with another definition (changed: {changed}); a version's features "
        f"must not change meaning: bump the version in {where} (e.g. version: {max(versions) + 1})"
    )
    return Change("feature_view", key, "refuse", detail, file, view=view)


def refusal(plan: Plan) -> str:
    """What ``plan`` refuses, in one line naming each change and its file."""
    listed = "; ".join(f"{c.name} ({c.file}): {c.detail}" for c in plan.refused)
    return f"the plan refuses {len(plan.refused)} change(s): {listed}"


def summary(changes: Sequence[Change]) -> str:
    """``N to create, N to update, N unchanged, N refused``."""
    counts = {action: sum(1 for c in changes if c.action == action) for action in _ACTIONS}
    return ", ".join(f"{counts[a]} {label}" for a, label in _ACTIONS.items())


_ACTIONS: dict[str, str] = {
    "create": "to create",
    "update": "to update",
    "unchanged": "unchanged",
    "refuse": "refused",
}


__all__ = [
    "CHANGE_COLUMNS",
    "Change",
    "Plan",
    "PlanRefusedError",
    "apply",
    "contract_changes",
    "plan",
    "summary",
]
