"""One model build in a process of its own, so its peak memory can be read.

``python -m bench._model_child WORKDIR`` opens the models benchmark's project in ``WORKDIR/project`` and its
lakebed home ``WORKDIR/home`` (made and ingested by the parent, so the ingest's memory is not this
process's), rebuilds the model ``orders_paid`` (one output row per paid input row, streamed from DuckDB to
the write path) and prints one JSON line: rows, seconds and the process's ``VmHWM``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import isolated_config, report_work


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench._model_child WORKDIR", file=sys.stderr)
        return 2
    workdir = Path(argv[0])
    from lakebed.pipelines.models.run import run_model
    from lakebed.schemas.project import load_project

    project = load_project(workdir / "project")
    config = isolated_config((workdir / "home").resolve())
    return report_work(lambda: run_model(project, "orders_paid", full_refresh=True, config=config).rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
