"""One model build in a process of its own, so its peak memory can be read.

``python -m bench._model_child ROWS WORKDIR`` writes the models benchmark's project with ROWS input rows
under WORKDIR, ingests them into a lakebed home there, resets the process's RSS high-water mark (writing
``5`` to ``/proc/self/clear_refs``, Linux ≥ 4.0), rebuilds the model ``orders_paid`` (one output row per
paid input row, streamed from DuckDB to the write path) and prints one JSON line: rows, seconds and the
``VmHWM`` of the build alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import isolated_config, report_work, vm_hwm_kib


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench._model_child ROWS WORKDIR", file=sys.stderr)
        return 2
    rows, workdir = int(argv[0]), Path(argv[1])
    from bench.models import _ingest, _project
    from lakebed.pipelines.models.run import run_model
    from lakebed.schemas.project import load_project

    project = load_project(_project(workdir / "project", rows))
    config = isolated_config((workdir / "home").resolve())
    _ingest(project, config)
    Path("/proc/self/clear_refs").write_text("5")
    before = vm_hwm_kib()
    return report_work(
        lambda: run_model(project, "orders_paid", full_refresh=True, config=config).rows,
        input_rows=rows,
        hwm_before_kib=before,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
