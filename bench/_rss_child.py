"""One CSV ingest in a process of its own, so its peak RSS can be read once it has exited.

``python -m bench._rss_child launch {lakebed|baseline} CSV OUT`` is what the benchmark runs. The launcher
is a small process. It starts the worker below as its only child, waits for it, reads
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (KiB on Linux) and prints the worker's JSON report
with that value added as ``maxrss_children_kib``.

The launcher is needed because Linux carries a process's RSS high-water mark across ``exec``. A child
forked straight from the benchmark process (hundreds of MiB after generating data) would report the
parent's peak as its own. A child forked from the small launcher starts with only the launcher's mark
(a few MiB).

``python -m bench._rss_child {lakebed|baseline} CSV OUT`` is the worker. It ingests CSV (lakebed:
``ingest_files`` into table ``orders_bench`` of a lakebed home at OUT; baseline: ``write_deltalake`` of a
streaming ``pyarrow.csv.open_csv`` reader into the fresh table folder OUT) and prints one JSON line:
rows, seconds, and its own ``VmHWM`` (the high-water RSS of its address space, unaffected by the fork)
as a cross-check. It imports only what the chosen path needs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import isolated_config, launch_worker, report_work  # stdlib-only at import time

USAGE = "usage: python -m bench._rss_child [launch] {lakebed|baseline} CSV OUT"


def _baseline(csv: Path, out: Path) -> int:
    import pyarrow.csv as pacsv
    from deltalake import DeltaTable, write_deltalake

    write_deltalake(str(out), pacsv.open_csv(str(csv)))
    return DeltaTable(str(out)).count()


def _lakebed(csv: Path, out: Path) -> int:
    from lakebed.pipelines.ingest import ingest_files

    return ingest_files(csv, table="orders_bench", config=isolated_config(out.resolve())).rows


def _work(which: str, csv: Path, out: Path) -> int:
    return report_work(lambda: (_lakebed if which == "lakebed" else _baseline)(csv, out), which=which)


def main(argv: list[str]) -> int:
    launch = bool(argv) and argv[0] == "launch"
    args = argv[1:] if launch else argv
    if len(args) != 3 or args[0] not in ("lakebed", "baseline"):
        print(USAGE, file=sys.stderr)
        return 2
    if launch:
        return launch_worker("bench._rss_child", args)
    return _work(args[0], Path(args[1]), Path(args[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
