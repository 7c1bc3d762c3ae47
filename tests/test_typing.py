"""The type checker sees lakebed's own modules: a wrong call into the write path fails mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "uses_commit.py"
    module.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", str(module)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_mypy_rejects_a_wrong_call_to_commit(tmp_path: Path) -> None:
    result = _mypy(tmp_path, "from lakebed.pipelines.delta import commit\n\ncommit(1, 2, 3, 4)\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "uses_commit.py:3: error" in result.stdout, result.stdout


def test_mypy_sees_the_signature_of_commit(tmp_path: Path) -> None:
    result = _mypy(tmp_path, "from lakebed.pipelines.delta import commit\n\nreveal_type(commit)\n")
    assert 'Revealed type is "def (table: str, data:' in result.stdout, result.stdout
    assert "-> lakebed.pipelines.delta.CommitResult" in result.stdout, result.stdout
