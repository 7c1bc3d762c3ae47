"""The one typed configuration object.

Resolution order (first wins): keyword arguments, ``LAKEBED_*`` environment variables, the project's
``lakebed.toml``, defaults. The project is found as git finds its root: ``$LAKEBED_PROJECT`` (the CLI's
``--project``), else the nearest ``lakebed.toml`` at or above the current directory (``$LAKEBED_CONFIG``
names a file directly). In a project, state lives in ``<project>/.lakebed/``; outside any project,
everything runs embedded under ``./.lakebed/``. Object-store credentials come from the usual ``AWS_*``
variables. Secrets are :class:`pydantic.SecretStr` and are redacted whenever the config is shown or recorded.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REDACTED = "**********"


class S3Settings(BaseSettings):
    """Object-store (S3 API) credentials, read from the standard ``AWS_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="AWS_", extra="ignore")

    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str = "us-east-1"
    allow_http: bool = False

    def to_storage_options(self) -> dict[str, str]:
        """Options for delta-rs / object_store (``storage_options=``)."""
        options: dict[str, str] = {"AWS_REGION": self.region}
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.allow_http or (self.endpoint_url or "").startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
        if self.access_key_id:
            options["AWS_ACCESS_KEY_ID"] = self.access_key_id.get_secret_value()
        if self.secret_access_key:
            options["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key.get_secret_value()
        if self.session_token:
            options["AWS_SESSION_TOKEN"] = self.session_token.get_secret_value()
        # Safe concurrent commits on S3 without a lock table.
        options["aws_conditional_put"] = "etag"
        return options

    def to_boto3_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client("s3", ...)``."""
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            kwargs["aws_access_key_id"] = self.access_key_id.get_secret_value()
        if self.secret_access_key:
            kwargs["aws_secret_access_key"] = self.secret_access_key.get_secret_value()
        if self.session_token:
            kwargs["aws_session_token"] = self.session_token.get_secret_value()
        return kwargs


PROJECT_FILE = "lakebed.toml"

# lakebed.toml's sections that hold settings: section → {key: LakebedConfig field}. [project] and [paths]
# describe the project itself (schemas/project.py).
SETTINGS_SECTIONS: dict[str, dict[str, str]] = {
    "storage": {
        "home": "home",
        "hot_root": "hot_root",
        "cold_root": "cold_root",
        "landing_dir": "landing_dir",
    },
    "kafka": {"bootstrap": "kafka_bootstrap"},
    "features": {"online_cache_rows": "online_cache_rows"},
    "lineage": {"namespace": "lineage_namespace", "enabled": "lineage_enabled", "timeout": "lineage_timeout"},
    "ingest": {
        "batch_rows": "batch_rows",
        "max_file_bytes": "max_file_bytes",
        "inline_content_bytes": "inline_content_bytes",
    },
}
PROJECT_SECTIONS = ("project", "paths")
_PATH_FIELDS = ("home", "hot_root", "landing_dir")


def find_project(start: Path | None = None) -> Path | None:
    """The project folder: ``$LAKEBED_PROJECT`` if set, else the nearest folder at or above ``start``
    (default: the current directory) that holds a lakebed.toml; None outside any project."""
    from lakebed.errors import ConfigError

    explicit = os.environ.get("LAKEBED_PROJECT")
    if explicit:
        root = Path(explicit).expanduser().resolve()
        if not (root / PROJECT_FILE).is_file():
            raise ConfigError(
                f"{root}: not a lakebed project (no {PROJECT_FILE}); run `lakebed init {explicit}`"
            )
        return root
    return project_above((start or Path.cwd()).resolve())


def project_above(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` (a folder, or a file whose folder is meant) that holds a
    lakebed.toml; None when there is none."""
    here = path if path.is_dir() else path.parent
    return next((folder for folder in (here, *here.parents) if (folder / PROJECT_FILE).is_file()), None)


def _config_file() -> Path | None:
    explicit = os.environ.get("LAKEBED_CONFIG")
    if explicit:
        return Path(explicit)
    root = find_project()
    return root / PROJECT_FILE if root is not None else None


def read_project_file(path: Path) -> dict[str, Any]:
    """lakebed.toml as parsed TOML; a file that is not TOML raises ConfigError naming it."""
    from lakebed.errors import ConfigError

    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


class _ProjectFileSettings(PydanticBaseSettingsSource):
    """The settings sections of a project's lakebed.toml as config fields; relative paths are taken from
    the project folder, and the home defaults to ``<project>/.lakebed``."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is returned at once by __call__

    def __call__(self) -> dict[str, Any]:
        from lakebed.errors import ConfigError

        root = self.path.resolve().parent
        values: dict[str, Any] = {"home": root / ".lakebed"}
        for section, table in read_project_file(self.path).items():
            if section in PROJECT_SECTIONS:
                continue
            fields = SETTINGS_SECTIONS.get(section)
            if fields is None or not isinstance(table, dict):
                known = ", ".join(f"[{s}]" for s in (*PROJECT_SECTIONS, *SETTINGS_SECTIONS))
                raise ConfigError(f"{self.path}: unknown setting {section!r} (sections: {known})")
            for key, value in table.items():
                if key not in fields:
                    raise ConfigError(
                        f"{self.path}: [{section}] has no setting {key!r} (known: {', '.join(fields)})"
                    )
                name = fields[key]
                values[name] = root / Path(value).expanduser() if name in _PATH_FIELDS else value
        return values


class LakebedConfig(BaseSettings):
    """lakebed settings. Every field can be set as ``LAKEBED_<FIELD>`` or in lakebed.toml."""

    model_config = SettingsConfigDict(env_prefix="LAKEBED_", extra="forbid", validate_default=True)

    home: Path = Field(default=Path(".lakebed"), description="Root of all embedded state.")
    hot_root: Path | None = Field(
        default=None, description="Local path of the hot tier (default: HOME/tables)."
    )
    cold_root: str | None = Field(
        default=None, description="Cold tier root: file:// path or s3://bucket/prefix."
    )
    landing_dir: Path | None = Field(default=None, description="Folder the landing sensor watches.")
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka cluster; unset starts the embedded broker."
    )
    lineage_namespace: str = Field(default="lakebed", description="OpenLineage job namespace.")
    lineage_api_token: SecretStr | None = Field(default=None, description="Bearer token of the lineage API.")
    feature_server_token: SecretStr | None = Field(
        default=None, description="Bearer token of the feature server (`lakebed serve features`)."
    )
    lineage_enabled: bool = Field(default=True, description="Emit OpenLineage events for every run.")
    lineage_timeout: float = Field(
        default=2.0, gt=0, description="Seconds to wait for an OPENLINEAGE_URL backend before buffering."
    )
    code_version: str | None = Field(default=None, description="Code version recorded on every commit.")
    batch_rows: int = Field(default=131_072, gt=0, description="Rows per Arrow batch when streaming input.")
    max_file_bytes: int = Field(
        default=100 * 1024 * 1024, gt=0, description="Unstructured files above this are rejected."
    )
    inline_content_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Unstructured content up to this size is stored inline."
    )
    online_cache_rows: int = Field(
        default=100_000,
        ge=0,
        description="Online rows a process keeps in memory for point lookups, exact across processes (0: none).",
    )
    s3: S3Settings = Field(default_factory=S3Settings, exclude=False)

    @field_validator("home", "hot_root", "landing_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = cls.settings_file()
        if toml_path is not None:
            sources.append(_ProjectFileSettings(settings_cls, toml_path))
        return tuple(sources)

    @classmethod
    def settings_file(cls) -> Path | None:
        """The lakebed.toml read: the current project's (or ``$LAKEBED_CONFIG``), None outside any."""
        return _config_file()

    # Derived locations -------------------------------------------------------------------------
    @property
    def tables_root(self) -> Path:
        return self.hot_root or self.home / "tables"

    @property
    def system_root(self) -> Path:
        """Where lakebed keeps its own tables (catalog, manifests)."""
        return self.home / "system"

    @property
    def landing_root(self) -> Path:
        return self.landing_dir or self.home / "landing"

    @property
    def cold_uri(self) -> str:
        return self.cold_root or (self.home / "cold").as_uri()

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")

    def prepare_dagster_home(self) -> Path:
        """Create DAGSTER_HOME (runs persist there, so the UI shows them) with a minimal dagster.yaml."""
        home = self.dagster_home
        home.mkdir(parents=True, exist_ok=True)
        settings = home / "dagster.yaml"
        if not settings.exists():
            settings.write_text("telemetry:\n  enabled: false\n")
        os.environ.setdefault("DAGSTER_HOME", str(home))
        return home

    def secret_values(self) -> list[str]:
        """Every secret this config holds, in clear (to scrub them from anything lakebed records)."""
        values = [
            self.lineage_api_token,
            self.feature_server_token,
            self.s3.access_key_id,
            self.s3.secret_access_key,
            self.s3.session_token,
        ]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret replaced: safe to print, log or record."""
        return self.model_dump(mode="json")


@functools.cache
def _settings_of(project: Path) -> type[LakebedConfig]:
    """LakebedConfig reading ``project``'s lakebed.toml whatever the current directory or LAKEBED_PROJECT:
    keyword arguments, then LAKEBED_* variables, then that file (home defaults to <project>/.lakebed)."""
    toml = project / PROJECT_FILE

    class ProjectConfig(LakebedConfig):
        @classmethod
        def settings_file(cls) -> Path | None:
            return toml

    return ProjectConfig


def project_config(project: str | Path, *, home: str | Path | None = None) -> LakebedConfig:
    """The configuration of the project in folder ``project`` (``home`` overrides its state folder)."""
    settings = _settings_of(Path(project).resolve())
    return settings(home=Path(home)) if home is not None else settings()


@functools.cache
def get_config() -> LakebedConfig:
    """The process-wide config, read once. Call :func:`reset_config` after changing the environment."""
    from lakebed.errors import ConfigError

    try:
        return LakebedConfig()
    except ConfigError:
        raise
    except Exception as exc:  # pydantic's ValidationError names the field
        source = _config_file()
        where = f" ({source})" if source else ""
        raise ConfigError(f"invalid lakebed configuration{where}: {exc}") from exc


def reset_config() -> None:
    get_config.cache_clear()
