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

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

USAGE = "usage: python -m bench._rss_child [launch] {lakebed|baseline} CSV OUT"


def _baseline(csv: Path, out: Path) -> int:
    import pyarrow.csv as pacsv
    from deltalake import DeltaTable, write_deltalake

    write_deltalake(str(out), pacsv.open_csv(str(csv)))
    return DeltaTable(str(out)).count()


def _lakebed(csv: Path, out: Path) -> int:
    from lakebed.pipelines.ingest import ingest_files

    from bench.common import isolated_config  # stdlib-only at import time

    return ingest_files(csv, table="orders_bench", config=isolated_config(out.resolve())).rows


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _work(which: str, csv: Path, out: Path) -> int:
    start = time.perf_counter()
    rows = (_lakebed if which == "lakebed" else _baseline)(csv, out)
    seconds = time.perf_counter() - start
    report = {"which": which, "rows": rows, "seconds": seconds, "vm_hwm_kib": _vm_hwm_kib()}
    print(json.dumps(report), flush=True)
    return 0


def _launch(args: list[str]) -> int:
    worker = subprocess.run(
        [sys.executable, "-m", "bench._rss_child", *args], stdout=subprocess.PIPE, text=True, check=False
    )
    if worker.returncode != 0:
        print(f"worker exited with status {worker.returncode}", file=sys.stderr)
        return 1
    report = json.loads(worker.stdout.strip().splitlines()[-1])
    report["maxrss_children_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(report), flush=True)
    return 0


def main(argv: list[str]) -> int:
    launch = bool(argv) and argv[0] == "launch"
    args = argv[1:] if launch else argv
    if len(args) != 3 or args[0] not in ("lakebed", "baseline"):
        print(USAGE, file=sys.stderr)
        return 2
    if launch:
        return _launch(args)
    return _work(args[0], Path(args[1]), Path(args[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
