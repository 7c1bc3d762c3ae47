"""Packaging: every subpackage is mapped, imports point down, and the CLI stays light."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setup["package-dir"]
    listed = set(setup["packages"])
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            name = ".".join([package, *relative.parts])
            assert name in listed, f"{name} ({init.parent}) is not listed in [tool.setuptools] packages"


def test_cli_help_does_not_import_heavy_layers() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from lakebed.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = [m for m in ('dagster', 'great_expectations', 'duckdb', 'deltalake', 'polars') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`lakebed --help` imported {out.stdout.strip()}"


def test_core_layers_never_import_dagster() -> None:
    for folder in ("pipelines", "quality", "lineage", "schemas"):
        for source in (ROOT / folder).rglob("*.py"):
            text = source.read_text()
            assert "import dagster" not in text and "from dagster" not in text, source


def test_import_config_stays_cheap() -> None:
    code = "import sys, lakebed.config; print('pyarrow' in sys.modules, 'lakebed.pipelines' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
