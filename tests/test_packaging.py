"""Packaging: every subpackage is mapped, imports point down, and the CLI stays light."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


LINKED_FOLDERS = ("schemas", "pipelines", "quality", "lineage", "assets")


def test_top_level_folders_are_lakebed_subpackages() -> None:
    """lakebed/<name> links to the top-level folder, and nothing else maps module names to folders."""
    for name in LINKED_FOLDERS:
        link = ROOT / "lakebed" / name
        assert link.is_symlink(), f"lakebed/{name} must be a link to ../{name}"
        assert link.resolve() == ROOT / name
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in setuptools


def test_every_module_imports_from_its_file(tmp_path: Path) -> None:
    """Outside the repository (no cwd on the path) the installed package resolves each subpackage folder."""
    packages = sorted(
        ".".join(init.parent.relative_to(ROOT).parts)
        for name in ("lakebed", *(f"lakebed/{f}" for f in LINKED_FOLDERS))
        for init in (ROOT / name).rglob("__init__.py")
    )
    code = (
        "import importlib, os, sys\n"
        f"for name in {sorted(set(packages))!r}:\n"
        "    print(name, os.path.realpath(importlib.import_module(name).__file__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    found = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert "lakebed.pipelines.stream" in found and "lakebed.pipelines.features" in found
    for name, path in found.items():
        assert Path(path) == (ROOT / "lakebed" / Path(*name.split(".")[1:]) / "__init__.py").resolve(), name


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


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("lint-imports")),
            "--no-logo",
            "--no-cache",
            str(root / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


def test_layers_contract_holds() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [("pipelines/read.py", "lakebed.broker"), ("quality/rules.py", "lakebed.lineage.events")],
)
def test_layers_contract_fails_on_an_upward_import(tmp_path: Path, module: str, upward: str) -> None:
    """A copy of the package with one upward import (a lazy one, inside a function) breaks `make lint`."""
    shutil.copytree(
        ROOT / "lakebed", tmp_path / "lakebed", symlinks=False, ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "lakebed" / module
    target.write_text(target.read_text() + f"\n\ndef _upward() -> None:\n    import {upward}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "1 broken" in result.stdout and upward in result.stdout, result.stdout


def test_import_config_stays_cheap() -> None:
    code = "import sys, lakebed.config; print('pyarrow' in sys.modules, 'lakebed.pipelines' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
