from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakebed.config import LakebedConfig, find_project, get_config, reset_config
from lakebed.errors import ConfigError


def test_defaults_are_embedded_under_home(lakebed_home: Path) -> None:
    config = get_config()
    assert config.home == lakebed_home.resolve()
    assert config.tables_root == lakebed_home / "tables"
    assert config.landing_root == lakebed_home / "landing"
    assert config.kafka_bootstrap is None
    assert config.cold_uri.startswith("file://")


def test_project_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lakebed.toml").write_text(
        '[project]\nname = "shop"\n[kafka]\nbootstrap = "broker:9092"\n[ingest]\nbatch_rows = 1000\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAKEBED_BATCH_ROWS", "2000")
    reset_config()
    config = get_config()
    assert config.kafka_bootstrap == "broker:9092"
    assert config.batch_rows == 2000  # environment wins over the file


def test_project_is_found_upwards_and_holds_its_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "my_lake"
    (project / "sources" / "deep").mkdir(parents=True)
    (project / "lakebed.toml").write_text('[project]\nname = "my_lake"\n[storage]\nlanding_dir = "inbox"\n')
    monkeypatch.delenv("LAKEBED_HOME")
    monkeypatch.chdir(project / "sources" / "deep")
    reset_config()
    assert find_project() == project.resolve()
    config = get_config()
    assert config.home == project.resolve() / ".lakebed"  # not the current directory
    assert config.landing_root == project.resolve() / "inbox"
    monkeypatch.chdir(tmp_path)  # outside: embedded defaults in ./.lakebed
    reset_config()
    assert find_project() is None and get_config().home == tmp_path.resolve() / ".lakebed"
    monkeypatch.setenv("LAKEBED_PROJECT", str(project))
    reset_config()
    assert get_config().home == project.resolve() / ".lakebed"
    monkeypatch.setenv("LAKEBED_PROJECT", str(tmp_path / "nowhere"))
    reset_config()
    with pytest.raises(ConfigError, match="not a lakebed project"):
        get_config()


def test_invalid_config_names_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "custom.toml"
    path.write_text("[ingest]\nbatch_rows = -5\n")
    monkeypatch.setenv("LAKEBED_CONFIG", str(path))
    reset_config()
    with pytest.raises(ConfigError) as excinfo:
        get_config()
    assert "custom.toml" in str(excinfo.value) and "batch_rows" in str(excinfo.value)


def test_unknown_setting_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "lakebed.toml").write_text("[storage]\nno_such_setting = 1\n")
    monkeypatch.chdir(tmp_path)
    reset_config()
    with pytest.raises(ConfigError, match=r"lakebed.toml: \[storage\] has no setting 'no_such_setting'"):
        get_config()
    (tmp_path / "lakebed.toml").write_text("[warehouse]\nhome = 'x'\n")
    reset_config()
    with pytest.raises(ConfigError, match="unknown setting 'warehouse'"):
        get_config()


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("LAKEBED_LINEAGE_API_TOKEN", "token-123456")
    reset_config()
    config = get_config()
    shown = json.dumps(config.redacted()) + repr(config) + str(config)
    for secret in ("AKIAEXAMPLEKEY", "very-secret-value", "token-123456"):
        assert secret not in shown
    assert config.s3.to_storage_options()["AWS_SECRET_ACCESS_KEY"] == "very-secret-value"


def test_cli_config_command_redacts(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from lakebed.cli import main

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    reset_config()
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0
    assert "very-secret-value" not in result.output
    assert json.loads(result.output)["s3"]["secret_access_key"] == "**********"


def test_explicit_config_object() -> None:
    config = LakebedConfig(home=Path("/tmp/elsewhere"))
    assert config.tables_root == Path("/tmp/elsewhere/tables")
