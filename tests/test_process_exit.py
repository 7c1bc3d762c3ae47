"""Every process that reads a table exits cleanly: short processes read a real Delta table through the CLI
and the Python API, and none of them may leave with a non-zero status (a SIGABRT at interpreter exit
shows up as -6; docs/design.md, "Clean exits")."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

LAKEBED = Path(sys.executable).with_name("lakebed")

# (label, argv): the CLI reads the table through DuckDB over a pyarrow dataset, the Python API through
# pyarrow (read_table) and Polars (scan_table).
READERS: list[tuple[str, list[str]]] = [
    ("lakebed show", [str(LAKEBED), "show", "orders"]),
    ("lakebed sql", [str(LAKEBED), "sql", "SELECT count(*) AS n, sum(amount) AS total FROM orders"]),
    (
        "read_table",
        [sys.executable, "-c", "import lakebed; assert lakebed.read_table('orders').num_rows == 40"],
    ),
    (
        "scan_table",
        [sys.executable, "-c", "import lakebed; assert lakebed.scan_table('orders').collect().height == 40"],
    ),
]


@pytest.fixture
def orders(lakebed_home: Path, tmp_path: Path) -> Path:
    """A real Delta table ``orders`` in the test's lakebed home: two CSV files ingested (two commits)."""
    import lakebed

    files = []
    for part in range(2):
        source = tmp_path / f"orders-{part}.csv"
        rows = "".join(f"{part * 20 + i},c{i % 7},{i * 1.25}\n" for i in range(20))
        source.write_text("order_id,customer,amount\n" + rows)
        files.append(source)
    result = lakebed.ingest_files(files, table="orders")
    assert result.rows == 40
    return lakebed_home


def _run_many(runs: int, home: Path) -> tuple[collections.Counter[tuple[str, int]], list[str]]:
    """Run the readers round-robin ``runs`` times in total, two processes at a time; the exit codes seen
    per reader and the stderr tails of the failed runs."""
    env = {**os.environ, "LAKEBED_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}

    def one(index: int) -> tuple[str, int, str]:
        label, argv = READERS[index % len(READERS)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        return label, done.returncode, done.stderr[-400:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, range(runs)))
    codes = collections.Counter((label, code) for label, code, _ in results)
    failures = [f"{label} exited {code}: {err.strip()}" for label, code, err in results if code != 0]
    return codes, failures


def _assert_clean(runs: int, home: Path) -> None:
    codes, failures = _run_many(runs, home)
    bad = sum(count for (_, code), count in codes.items() if code != 0)
    assert bad == 0, (
        f"{bad} of {runs} reading processes exited non-zero; exit codes per reader: "
        f"{dict(sorted(codes.items()))}\n" + "\n".join(failures[:5])
    )


def test_reading_processes_exit_cleanly(orders: Path) -> None:
    _assert_clean(30, orders)


@pytest.mark.slow
def test_reading_processes_exit_cleanly_soak(orders: Path) -> None:
    _assert_clean(200, orders)
