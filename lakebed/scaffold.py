"""Making a project folder: an empty project, or a copy of an example (``lakebed init``, ``lakebed demo``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lakebed.config import PROJECT_FILE, read_project_file
from lakebed.errors import ProjectError
from lakebed.examples import SHOP

EXAMPLES = {"shop": SHOP}
DEFINITIONS = "import lakebed.dagster\n\ndefs = lakebed.dagster.definitions(__file__)\n"
GITIGNORE = ".lakebed/\n"
# Left out of a copied example: state and caches of a project that was run in place.
_NOT_COPIED = (".lakebed", "__pycache__", ".git")

_LAKEBED_TOML = """\
# The lakebed project {title}: sources/, contracts/, models/ and feature_views/ hold its definitions,
# `lakebed plan` shows what they change in the lake, `lakebed apply` registers them, `lakebed run`
# builds the models.
# Settings sections: [storage] [kafka] [lineage] [ingest] [features]; state lives in .lakebed/.
[project]
name = {name}
"""

_SOURCES = """\
# What the project ingests, one entry per source. Paths are relative to the project folder.
# kind: files (csv, tsv, json, parquet: a file, folder or glob), unstructured (folders, zips) or stream.
#
# sources:
#   - table: orders
#     kind: files
#     path: data/orders
#     format: csv
#     contract: orders.yaml          # a file in contracts/
#     run: {sensor: true}            # or {schedule: "0 3 * * *"}; neither: on demand
sources: []
"""

_CONTRACTS = """\
# Table contracts

One YAML file per table; a source names its contract by file (`contract: orders.yaml`).

```yaml
name: orders
drift: strict            # or evolve: new nullable columns are let in
keys: [order_id]
columns:
  - {name: order_id, type: int64, nullable: false, unique: true}
  - {name: amount, type: float64, min: 0}
  - {name: ordered_at, type: timestamp}
rules:
  - {name: positive_amount, sql: "amount > 0"}
```
"""

_MODELS = """\
# Models

A model is a derived table: `<table>.sql`, one DuckDB SELECT over the project's tables by name, or a
function in a `.py` file decorated with `@lakebed.model(inputs=[...])`. `lakebed run` builds them in
dependency order; each is also a Dagster asset (lakebed's README, "Models", has the options).

```sql
/* lakebed
materialized: incremental     # table (default) | incremental | merge (with keys: [...])
*/
SELECT order_id, customer_id, amount FROM orders WHERE amount > 0
```
"""

_FEATURE_VIEWS = """\
# Feature views

One YAML file per view version (`name:vN`). A registered version never changes meaning: to change a
view, copy it with `version` bumped.

```yaml
name: customer_orders
version: 1
entities: [customer_id]
source: {table: orders}
event_time: ordered_at
hop: 1h
ttl: 2d
aggregations:
  - {name: orders_1d, function: count, window: 1d}
  - {name: spend_1d, function: sum, column: amount, window: 1d}
```
"""


_ACCESS = """\
# Who may do what on this project's servers (`lakebed serve features`, `lakebed lineage serve`); see
# lakebed's docs/access.md. Roles engineer, model and auditor exist by default; deny by default.
# `lakebed access token create NAME --role ROLE` prints a token once and the line to add below.
#
# roles:
#   model:
#     allow:
#       - actions: [read_features_online, search]
#         resources: ["customer_*"]          # table or view name patterns, or tag:NAME
# tokens:
#   - {name: churn-model, role: model, sha256: <the line `lakebed access token create` prints>}
"""


def init_project(root: Path, example: str | None = None) -> int:
    """Make ``root`` a lakebed project (or a copy of ``example``); returns how many files were written.
    Refuses a non-empty folder that is not already that project; a project's own files are never
    overwritten, so running it again is safe."""
    made = _copy_example(root, example) if example is not None else _scaffold(root)
    return made + sum(
        _write_new(root / name, text)
        for name, text in ((".gitignore", GITIGNORE), ("definitions.py", DEFINITIONS))
    )


def project_name(root: Path) -> str:
    section = read_project_file(root / PROJECT_FILE).get("project")
    return str(section.get("name", root.name)) if isinstance(section, dict) else root.name


def _contents(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name != ".git"] if root.is_dir() else []


def _scaffold(root: Path) -> int:
    if (root / PROJECT_FILE).is_file():
        return 0  # already a project: nothing of it is rewritten
    if _contents(root):
        raise ProjectError(
            f"{root} is not empty and not a lakebed project (no {PROJECT_FILE}): give an empty or new folder"
        )
    files = {
        PROJECT_FILE: _LAKEBED_TOML.format(
            title=root.name, name=json.dumps(root.name)
        ),  # a TOML basic string
        "sources/sources.yaml": _SOURCES,
        "contracts/README.md": _CONTRACTS,
        "models/README.md": _MODELS,
        "feature_views/README.md": _FEATURE_VIEWS,
        "access.yaml": _ACCESS,
    }
    return sum(_write_new(root / name, text) for name, text in files.items())


def _copy_example(root: Path, example: str) -> int:
    """Copy the example's files that ``root`` lacks; refuses a non-empty ``root`` that is another project."""
    source = EXAMPLES[example]
    settings = root / PROJECT_FILE
    same = settings.is_file() and settings.read_bytes() == (source / PROJECT_FILE).read_bytes()
    if _contents(root) and not same:
        raise ProjectError(
            f"{root} is not empty and not a copy of the {example} example: give an empty or new folder"
        )
    copied = 0
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or any(part in _NOT_COPIED for part in relative.parts):
            continue
        target = root / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    return copied


def _write_new(path: Path, text: str) -> int:
    """Write ``path`` unless it exists (a project's own files are never overwritten); 1 if written."""
    if path.exists():
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return 1


__all__ = ["DEFINITIONS", "EXAMPLES", "init_project", "project_name"]
