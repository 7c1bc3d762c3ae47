"""A lakebed project: the folder a team keeps in git (docs/projects.md).

``load_project(root)`` reads lakebed.toml, ``sources/*.yaml``, ``contracts/*.yaml`` and
``feature_views/*.yaml`` and checks that they fit together, before anything runs. Every problem is a
:class:`~lakebed.errors.ProjectError` naming the file, the entry and the field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import graphlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lakebed.config import PROJECT_FILE, read_project_file
from lakebed.errors import ContractError, ProjectError
from lakebed.schemas.access import find_access, load_access
from lakebed.schemas.contract import TableContract
from lakebed.schemas.cron import check_cron
from lakebed.schemas.features import FeatureView
from lakebed.schemas.loading import problems, read_yaml
from lakebed.schemas.models import Model, read_sql_model
from lakebed.schemas.naming import table_name_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSection(_Strict):
    name: str
    description: str | None = None


class PathsSection(_Strict):
    """The project's folders, relative to it."""

    sources: str = "sources"
    contracts: str = "contracts"
    feature_views: str = "feature_views"
    models: str = "models"


class RunSpec(_Strict):
    """How a source runs: on a cron ``schedule``, when files land (``sensor: true``, files sources only),
    or on demand (neither)."""

    schedule: str | None = None
    sensor: bool = False

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return check_cron(value) if value is not None else None

    @model_validator(mode="after")
    def _one_way(self) -> RunSpec:
        if self.schedule is not None and self.sensor:
            raise ValueError("a source runs on a schedule or by a sensor, not both")
        return self


class _Source(_Strict):
    table: str
    contract: str | None = None  # a file in the contracts folder
    description: str | None = None
    owners: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    run: RunSpec = RunSpec()

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return table_name_validator(value)


class FilesSource(_Source):
    """CSV, JSON-lines or Parquet files: a path, folder, glob or ``s3://`` prefix."""

    kind: Literal["files"]
    path: str
    format: Literal["csv", "tsv", "json", "parquet"] | None = None
    partition_by: str | None = None
    on_bad_rows: Literal["error", "reject"] = "reject"
    on_change: Literal["replace", "append", "skip"] = "replace"
    encoding: str | None = None


EmbedderName = Literal["wordllama", "all-minilm-l6-v2"]
"""The embedders lakebed can load by name (``lakebed.pipelines.embeddings.embedder.EMBEDDERS``)."""


class EmbedSpec(_Strict):
    """An unstructured source's ``embed:``: its text chunked and embedded into ``table`` (default
    ``<source table>__chunks``). ``chunk_size`` and ``overlap`` count the embedder's tokens; a chunk size
    above the embedder's limit is refused when the embedding runs."""

    embedder: EmbedderName = "wordllama"
    chunk_size: int = Field(default=256, ge=1)
    overlap: int = Field(default=32, ge=0)
    table: str | None = None

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return table_name_validator(value) if value is not None else None

    @model_validator(mode="after")
    def _overlap_below_size(self) -> EmbedSpec:
        if self.overlap >= self.chunk_size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than chunk_size ({self.chunk_size})")
        return self


class UnstructuredSource(_Source):
    """Documents, images and audio: folders and zip archives; ``embed`` also chunks and embeds their text."""

    kind: Literal["unstructured"]
    paths: tuple[str, ...] = Field(min_length=1)
    embed: EmbedSpec | None = None

    @property
    def embedding_table(self) -> str | None:
        """The table this source's embeddings go to, when it asks for them."""
        if self.embed is None:
            return None
        return self.embed.table or f"{self.table}__chunks"

    @model_validator(mode="after")
    def _no_sensor(self) -> UnstructuredSource:
        if self.run.sensor:
            raise ValueError("run.sensor watches files sources only")
        return self


class StreamSource(_Source):
    """A Kafka topic ingested exactly once into ``table``."""

    kind: Literal["stream"]
    topic: str
    group: str | None = None

    @model_validator(mode="after")
    def _no_sensor(self) -> StreamSource:
        if self.run.sensor or self.run.schedule:
            raise ValueError(
                "a stream source runs from the Kafka offsets sensor: no run.schedule or run.sensor"
            )
        return self


Source = Annotated[FilesSource | UnstructuredSource | StreamSource, Field(discriminator="kind")]


class _SourcesFile(_Strict):
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True)
class Project:
    """A validated project: pure data, ready for plan, apply and Dagster."""

    root: Path
    name: str
    description: str | None
    paths: PathsSection
    sources: tuple[FilesSource | UnstructuredSource | StreamSource, ...]
    contracts: Mapping[str, TableContract]  # by table
    feature_views: Mapping[str, FeatureView]  # by name:vN
    origins: Mapping[str, Path] = field(default_factory=dict)  # "source:T", "contract:T", "view:K" → file
    models: Mapping[str, Model] = field(default_factory=dict)  # by table, in dependency order

    def sources_of(self, table: str) -> list[FilesSource | UnstructuredSource | StreamSource]:
        return [s for s in self.sources if s.table == table]

    def contract_of(self, table: str) -> TableContract | None:
        return self.contracts.get(table)

    def resolve(self, path: str) -> str:
        """A source path as given (URLs) or resolved against the project folder."""
        return path if "://" in path else str((self.root / Path(path).expanduser()).resolve())


def load_project(root: str | Path) -> Project:
    """The project in folder ``root`` (which holds lakebed.toml), validated as a whole."""
    root = Path(root).resolve()
    settings_file = root / PROJECT_FILE
    if not settings_file.is_file():
        raise ProjectError(f"{root}: not a lakebed project (no {PROJECT_FILE}); run `lakebed init {root}`")
    settings = read_project_file(settings_file)
    project = _section(ProjectSection, settings.get("project"), settings_file, "[project]")
    paths = _section(PathsSection, settings.get("paths", {}), settings_file, "[paths]")
    origins: dict[str, Path] = {}
    contracts = _contracts(root / paths.contracts, origins)
    views = _views(root / paths.feature_views, origins)
    sources = _sources(root / paths.sources, origins)
    by_table = {c.name: c for c in contracts.values()}
    models = _models(root / paths.models)
    loaded = Project(root, project.name, project.description, paths, sources, by_table, views, origins)
    _check(loaded, contracts, models)
    access = find_access(root)
    if access is not None:
        load_access(access)  # a broken policy is the project's error too (`lakebed plan` names it)
    return dataclasses.replace(loaded, models=_check_models(loaded, models, contracts))


def _section(model: type[_Strict], data: object, path: Path, what: str) -> Any:
    if data is None:
        raise ProjectError(f'{path}: {what} is missing (it names the project: name = "...")')
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProjectError(f"{path}: {what}: {problems(exc)}") from None


def _yaml_files(folder: Path) -> list[Path]:
    return (
        sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []
    )


def _contracts(folder: Path, origins: dict[str, Path]) -> dict[str, TableContract]:
    """Contracts by file name (sources refer to them by file)."""
    found: dict[str, TableContract] = {}
    tables: dict[str, Path] = {}
    for path in _yaml_files(folder):
        with _as_project_error():
            contract = TableContract.from_yaml(path)
        if contract.name in tables:
            raise ProjectError(
                f"{path}: the contract of table {contract.name!r} is already in {tables[contract.name]}"
            )
        tables[contract.name] = path
        found[path.name] = contract
        origins[f"contract:{contract.name}"] = path
    return found


def _views(folder: Path, origins: dict[str, Path]) -> dict[str, FeatureView]:
    views: dict[str, FeatureView] = {}
    for path in _yaml_files(folder):
        with _as_project_error():
            view = FeatureView.from_yaml(path)
        if view.key in views:
            raise ProjectError(
                f"{path}: feature view {view.key} is already defined in {origins[f'view:{view.key}']}"
            )
        views[view.key] = view
        origins[f"view:{view.key}"] = path
    return views


def _sources(
    folder: Path, origins: dict[str, Path]
) -> tuple[FilesSource | UnstructuredSource | StreamSource, ...]:
    sources: list[FilesSource | UnstructuredSource | StreamSource] = []
    for path in _yaml_files(folder):
        with _as_project_error():
            data = read_yaml(path, what="sources")
        if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
            raise ProjectError(f"{path}: expected a mapping with a list `sources: [...]`")
        for index, entry in enumerate(data["sources"]):
            name = entry.get("table", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
            try:
                source = _SourcesFile.model_validate({"sources": [entry]}).sources[0]
            except ValidationError as exc:
                raise ProjectError(f"{path}: source {name}: {problems(exc, skip=3)}") from None
            origins.setdefault(f"source:{source.table}", path)
            sources.append(source)
    return tuple(sources)


def _check(project: Project, contracts: Mapping[str, TableContract], models: Mapping[str, Model]) -> None:
    """References between the files: contract files exist and name their table, paths outside the project
    exist, every feature view reads a table a source or a model produces."""
    targets: dict[str, str | None] = {}
    for source in project.sources:
        where = f"{project.origins[f'source:{source.table}']}: source {source.table}"
        if source.table in targets and targets[source.table] != source.contract:
            raise ProjectError(
                f"{where}: contract: another source writes table {source.table!r} with contract "
                f"{targets[source.table]!r}, this one with {source.contract!r}"
            )
        targets[source.table] = source.contract
        if source.contract is not None:
            _named_contract(project, contracts, source.contract, source.table, where)
        paths: tuple[str, ...] = (source.path,) if isinstance(source, FilesSource) else ()
        paths = source.paths if isinstance(source, UnstructuredSource) else paths
        for path in paths:
            resolved = Path(project.resolve(path)) if "://" not in path else None
            if resolved is not None and not resolved.is_relative_to(project.root) and not _exists(resolved):
                raise ProjectError(f"{where}: path: {path!r} does not exist (outside the project)")
    produced = {s.table for s in project.sources} | set(models)
    for key, view in project.feature_views.items():
        if view.source.table not in produced:
            raise ProjectError(
                f"{project.origins[f'view:{key}']}: feature view {key}: source.table {view.source.table!r} "
                "is not the table of any source or model in the project"
            )


def _named_contract(
    project: Project, contracts: Mapping[str, TableContract], file: str, table: str, where: str
) -> TableContract:
    """The contract in ``file`` of the contracts folder, which must be ``table``'s."""
    contract = contracts.get(file) or contracts.get(f"{file}.yaml")
    if contract is None:
        folder = project.root / project.paths.contracts
        raise ProjectError(f"{where}: contract: no file {file!r} in {folder}")
    if contract.name != table:
        raise ProjectError(
            f"{where}: contract: {file} is the contract of table {contract.name!r}, not {table!r}"
        )
    return contract


def _models(folder: Path) -> dict[str, Model]:
    """The models of ``models/*.sql`` and ``models/*.py`` by table name."""
    from lakebed.schemas.python_models import read_python_models

    if not folder.is_dir():
        return {}
    found: dict[str, Model] = {}
    read: list[Model] = [read_sql_model(p) for p in sorted(folder.glob("*.sql"))]
    read += [m for p in sorted(folder.glob("*.py")) for m in read_python_models(p)]
    for model in read:
        if model.name in found:
            raise ProjectError(
                f"{model.path}: model {model.name!r} is also defined in {found[model.name].path}"
            )
        found[model.name] = model
    return found


def _check_models(
    project: Project, models: Mapping[str, Model], contracts: Mapping[str, TableContract]
) -> dict[str, Model]:
    """Models read tables the project makes (sources, feature views, other models), make a table nothing
    else does, name contract files that exist, and form no cycle; returned in dependency order."""
    made: dict[str, str] = {
        s.table: f"source in {project.origins[f'source:{s.table}']}" for s in project.sources
    }
    for key, view in project.feature_views.items():
        made[view.offline_table] = f"feature view {key}"
    for model in models.values():
        if model.name in made:
            raise ProjectError(
                f"{model.path}: model {model.name!r}: table {model.name!r} is made by a {made[model.name]}"
            )
        if model.options.contract is not None:
            _named_contract(project, contracts, model.options.contract, model.name, str(model.path))
    for model in models.values():
        for ref in model.reads:
            if ref.name not in made and ref.name not in models:
                known = ", ".join(sorted([*made, *models])) or "none"
                raise ProjectError(
                    f"{model.path}:{ref.line}: table {ref.name!r} is made by nothing in the project "
                    f"(tables made here: {known})"
                )
    graph = {name: [t for t in model.inputs if t in models] for name, model in models.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        files = " → ".join(str(models[name].path.name) for name in cycle)
        raise ProjectError(f"{models[cycle[0]].path}: models read each other in a cycle: {files}") from None
    return {name: models[name] for name in order}


def _exists(path: Path) -> bool:
    """A folder or file, or a glob pattern that matches something."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        return any(Path("/").glob(text.lstrip("/")))
    return path.exists()


@contextlib.contextmanager
def _as_project_error() -> Iterator[None]:
    """A contract or view file's own error (it names the file and field) as a ProjectError."""
    try:
        yield
    except ContractError as exc:
        raise ProjectError(str(exc)) from None


__all__ = [
    "FilesSource",
    "PathsSection",
    "Project",
    "ProjectSection",
    "RunSpec",
    "Source",
    "StreamSource",
    "UnstructuredSource",
    "load_project",
]
