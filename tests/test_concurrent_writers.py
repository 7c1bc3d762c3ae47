"""Writers racing on one table: every writer lands and every row is written once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lakebed.pipelines.read import read_table

WRITERS = 4
ROWS = 500
ROUNDS = 2  # each a new table (and the first round a new ingest manifest)

# Each process waits for the same start instant, then ingests its own file through the CLI's code path.
_WRITER = """
import sys, time
from pathlib import Path
start, csv, table = float(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
import lakebed
time.sleep(max(0.0, start - time.time()))
lakebed.ingest_files([csv], table=table)
"""


def _files(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for writer in range(WRITERS):
        path = folder / f"part{writer}.csv"
        lines = ["id,name,amount"] + [f"{writer * ROWS + i},n{i},{i * 1.5}" for i in range(ROWS)]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _race(paths: list[Path], table: str) -> list[subprocess.CompletedProcess[str]]:
    start = time.time() + 4.0  # after every interpreter has imported lakebed
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, repr(start), str(path), table],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in paths
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_four_writers_creating_one_table_all_land(tmp_path: Path) -> None:
    paths = _files(tmp_path / "data")
    for round_ in range(ROUNDS):
        table = f"raced_{round_}"
        results = _race(paths, table)
        failed = [r.stderr[-2000:] for r in results if r.returncode != 0]
        assert not failed, failed
        ids = read_table(table, columns=["id"]).column("id").to_pylist()
        assert sorted(ids) == list(range(WRITERS * ROWS))  # every row once
        manifest = read_table("ingested_files").to_pylist()
        recorded = sorted(Path(r["path"]).name for r in manifest if r["table_name"] == table)
        assert recorded == [p.name for p in paths]
