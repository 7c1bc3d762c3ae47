"""``python -m bench [TARGET ...] [--quick]``: run lakebed's benchmarks and print one summary line each.

Targets: ``csv`` (= ``csv_ingest`` + ``csv_peak_rss``), ``csv_ingest``, ``csv_peak_rss`` (alias ``rss``),
``unstructured``, ``stream`` (= ``stream_ingest`` + ``stream_peak_rss``), ``features`` (= ``pit_retrieval`` +
``features_sparse`` + ``online_lookup``), ``quality`` (= ``quality_ingest`` + ``quality_engines``), ``lineage`` (= ``lineage_batch`` +
``lineage_stream`` + ``lineage_queries``), ``tiering`` (= ``tier_move`` + ``tier_read``), ``models`` (a SQL model vs bare
DuckDB, ``models_incremental``, ``models_peak_rss``), ``feature_server`` (HTTP vs the floor of its stack), ``embed``
(the embed step vs the bare embedder), ``vector_search`` (HNSW search vs brute-force numpy, recall@10); none given runs
them all.
Each ratio is the median of at least 5 alternating baseline/lakebed pairs (``--rounds``, default 5; fewer
only with ``--quick``), printed with the min–max of the pairs; the run ends with a table of every result
(benchmark, median, min–max, target, verdict), also written as JSON to ``last-results.json`` in ``--workdir`` (default ``bench/out/``).
``--quick`` (or ``LAKEBED_BENCH_QUICK=1``) shrinks the inputs about 20× for a smoke run. Data lives in a
fresh folder under ``bench/out/`` (or ``--workdir``), each lakebed run in its own fresh lakebed home there,
and is removed afterwards. Exit status 1 only when a
benchmark could not run; a missed target prints FAIL but is not an error (timings here are noisy).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    embeddings,
    feature_server,
    features,
    ingest_csv,
    lineage,
    models,
    online_lookup,
    pit_retrieval,
    quality,
    stream_ingest,
    tiering,
    unstructured,
)
from bench.common import (
    OUT_ROOT,
    RESULTS,
    BenchOptions,
    fresh_dir,
    log,
    machine_line,
    quick_from_env,
    remove,
    results_table,
    write_results,
)

MIN_ROUNDS = 5
RESULTS_FILE = "last-results.json"  # under --workdir (default bench/out)

Benchmark = Callable[[BenchOptions], str]
BENCHMARKS: dict[str, Benchmark] = {
    "csv_ingest": ingest_csv.run_throughput,
    "csv_peak_rss": ingest_csv.run_peak_rss,
    "unstructured": unstructured.run,
    "pit_retrieval": pit_retrieval.run,
    "features_sparse": features.run,
    "online_lookup": online_lookup.run,
    "feature_server": feature_server.run,
    "stream_ingest": stream_ingest.run_throughput,
    "stream_peak_rss": stream_ingest.run_peak_rss,
    "quality_ingest": quality.run_ingest_target,
    "quality_engines": quality.run_engines_target,
    "lineage_batch": lineage.run_batch,
    "lineage_stream": lineage.run_stream,
    "lineage_queries": lineage.run_queries,
    "tier_move": tiering.run_move,
    "tier_read": tiering.run_read,
    "models": models.run,
    "embed": embeddings.run_embed,
    "vector_search": embeddings.run_vector_search,
}
GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(BENCHMARKS),
    "csv": ("csv_ingest", "csv_peak_rss"),
    "rss": ("csv_peak_rss",),
    "stream": ("stream_ingest", "stream_peak_rss"),
    "features": ("pit_retrieval", "features_sparse", "online_lookup"),
    "quality": ("quality_ingest", "quality_engines"),
    "lineage": ("lineage_batch", "lineage_stream", "lineage_queries"),
    "tiering": ("tier_move", "tier_read"),
    **{name: (name,) for name in BENCHMARKS},
}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="one of: " + ", ".join(GROUPS))
    parser.add_argument(
        "--quick", action="store_true", help="~20× smaller inputs (also LAKEBED_BENCH_QUICK=1)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=MIN_ROUNDS,
        help=f"alternating baseline/lakebed pairs per ratio (at least {MIN_ROUNDS} unless --quick)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=OUT_ROOT, help="where run data goes (default bench/out)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run folder (large files are removed anyway)"
    )
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in GROUPS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    if args.rounds < 1 or (args.rounds < MIN_ROUNDS and not (args.quick or quick_from_env())):
        parser.error(f"--rounds must be at least {MIN_ROUNDS} (fewer only with --quick)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    selected = list(dict.fromkeys(name for target in (args.targets or ["all"]) for name in GROUPS[target]))
    run_dir = fresh_dir(args.workdir.resolve() / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    opts = BenchOptions(quick=args.quick or quick_from_env(), workdir=run_dir, rounds=args.rounds)
    log(f"lakebed bench{opts.label}: {', '.join(selected)} — {machine_line()}")
    log(f"  data under {run_dir}")
    summary: list[str] = []
    failed = False
    try:
        for name in selected:
            started = time.perf_counter()
            try:
                line = BENCHMARKS[name](opts)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                line = f"{name}: ERROR ({type(exc).__name__}: {exc})"
                failed = True
            log(f"{line}   ({time.perf_counter() - started:.0f} s)\n")
            summary.append(line)
    finally:
        if not args.keep:
            remove(run_dir)
    log("== summary ==")
    for line in summary:
        log(line)
    log("\n== results ==")
    log(results_table(RESULTS))
    log(f"  written to {write_results(RESULTS, args.workdir.resolve() / RESULTS_FILE)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
