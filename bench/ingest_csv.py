"""CSV → Delta benchmarks: throughput against a bare pyarrow + deltalake baseline, and peak memory.

``csv_ingest``: one generated orders CSV (~512 MiB, enough for ~5 s ingests, small enough for 5 pairs in a
couple of minutes; ``--quick`` ~27 MB), ingested alternately by the bare
baseline ``write_deltalake(uri, pyarrow.csv.open_csv(path))`` (a streaming RecordBatchReader into a fresh
table) and by lakebed's ``ingest_files(path, table="orders_bench")`` (fresh lakebed home each time: it
hashes the file, streams it through the one Delta write path and updates its manifest). Each round is a
pair; the ratio is the median over the pairs of lakebed / baseline in MB/s of CSV (10^6 bytes/s), with its
min–max. Target: lakebed ≥ 0.9 × baseline.

``csv_peak_rss``: a ~1.25 GiB CSV (larger than the 1024 MiB target, so the path must stream it; ``--quick``
~67 MB) ingested by each path in a child process. The peak RSS
is ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (KiB on Linux), read after the child exits. It is
read by a small launcher process whose only child is the ingest (see ``bench._rss_child``): read in
this process it would be the maximum over all children so far, each starting at this process's own
peak. The child's ``VmHWM`` is printed as a cross-check. Each round runs both children (alternating which
goes first); ``csv_peak_rss`` is the median of lakebed's peaks, target ≤ 1024 MiB, and
``csv_peak_rss_ratio`` the median of the per-pair ratios lakebed / baseline peak RSS (lower is better,
target ≤ 1.3).
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

from bench.common import (
    GB,
    MB,
    BenchOptions,
    ChildRun,
    GiB,
    RoundTimes,
    fmt_size,
    free_bytes,
    lakebed_home,
    log,
    remove,
    report,
    run_rss_child,
    timed,
)

BASELINE_NAME = "bare pyarrow.csv+write_deltalake"
THROUGHPUT_BYTES = GiB // 2
RSS_BYTES = 5 * GiB // 4
RSS_MIN_FREE = 8 * GB
THROUGHPUT_TARGET = 0.90
RSS_RATIO_TARGET = 1.3
RSS_TARGET_MIB = 1024
TABLE = "orders_bench"
_WARMUP_LINES = 5_000


def _write_orders(path: Path, target_bytes: int) -> int:
    """``lakebed.samples.write_orders_csv``, stopping on the file's real size rather than the samples'
    bytes-per-row estimate (about 10% high for this data): the same rows, ending at the batch boundary
    nearest ``target_bytes``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from lakebed.samples import orders, orders_csv_batches

    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pacsv.CSVWriter(sink, orders(1).schema) as writer:
        last = 0
        for batch in orders_csv_batches(4 * target_bytes):  # a generous budget; we stop ourselves
            writer.write_table(batch)
            size = sink.tell()
            if size + (size - last) / 2 >= target_bytes:
                break
            last = size
    return path.stat().st_size


_GENERATED_BYTES = 128 * MB


def _grow(path: Path, target_bytes: int) -> int:
    """Append the file's rows (all but the header line) to itself until it reaches ``target_bytes``: a large
    file in seconds instead of a minute of generation (the rows repeat, which no benchmark here minds)."""
    with path.open("rb") as source:
        source.readline()
        body = source.read()
    with path.open("ab") as out:
        size = out.tell()
        while size + len(body) / 2 < target_bytes:
            out.write(body)
            size += len(body)
    return path.stat().st_size


def generate_csv(path: Path, target_bytes: int) -> int:
    """Write the orders CSV at ``path`` (about ``target_bytes``: up to 128 MB of generated rows, repeated
    to size); returns its actual size."""
    seconds, size = timed(
        lambda: _grow(path, target_bytes) if _write_orders(path, min(target_bytes, _GENERATED_BYTES)) else 0
    )
    log(f"  generated {path.name}: {fmt_size(size)} ({size / GiB:.3f} GiB) in {seconds:.1f} s")
    return size


def _head(source: Path, dest: Path, lines: int) -> Path:
    with source.open("rb") as src, dest.open("wb") as out:
        out.writelines(itertools.islice(src, lines))
    return dest


# --- throughput ---------------------------------------------------------------------------------------


def _baseline_ingest(csv: Path, table_dir: Path) -> None:
    """The bare baseline, timed by the caller: stream the CSV into a fresh Delta table."""
    import pyarrow.csv as pacsv
    from deltalake import write_deltalake

    write_deltalake(str(table_dir), pacsv.open_csv(str(csv)))


def _count_rows(table_dir: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(table_dir)).count()


def _run_baseline(csv: Path, table_dir: Path) -> tuple[float, int]:
    remove(table_dir)
    seconds, _ = timed(lambda: _baseline_ingest(csv, table_dir))
    rows = _count_rows(table_dir)  # outside the timing
    remove(table_dir)
    return seconds, rows


def _run_lakebed(csv: Path, home: Path) -> tuple[float, int]:
    from lakebed.pipelines.ingest import ingest_files

    with lakebed_home(home) as config:
        seconds, result = timed(lambda: ingest_files(csv, table=TABLE, config=config))
    return seconds, result.rows


def run_throughput(opts: BenchOptions) -> str:
    log(f"csv_ingest{opts.label}: CSV → Delta throughput, lakebed vs {BASELINE_NAME}")
    csv = opts.workdir / "orders_throughput.csv"
    warm = opts.workdir / "orders_warmup.csv"
    try:
        size = generate_csv(csv, opts.scaled(THROUGHPUT_BYTES))
        # Untimed warm-up of both paths (imports, first-use setup) on the first lines of the same file.
        _head(csv, warm, _WARMUP_LINES)
        _run_baseline(warm, opts.workdir / "warmup_table")
        _run_lakebed(warm, opts.workdir / "warmup_home")

        times = RoundTimes("csv_ingest", "MB/s", BASELINE_NAME, THROUGHPUT_TARGET, opts.quick)
        for round_no in range(1, opts.rounds + 1):
            seconds, base_rows = _run_baseline(csv, opts.workdir / "baseline_table")
            times.record(
                "baseline", round_no, seconds, f"{size / MB / seconds:7.1f} MB/s  {base_rows:,} rows"
            )
            seconds, our_rows = _run_lakebed(csv, opts.workdir / "lakebed_home")
            times.record("lakebed", round_no, seconds, f"{size / MB / seconds:7.1f} MB/s  {our_rows:,} rows")
            if our_rows != base_rows:
                raise RuntimeError(f"row counts differ: lakebed wrote {our_rows:,}, baseline {base_rows:,}")
    finally:
        remove(csv)
        remove(warm)
    return times.summary(size / MB)


# --- peak RSS -----------------------------------------------------------------------------------------


def _run_child(which: str, csv: Path, out: Path) -> ChildRun:
    """Ingest ``csv`` in a child process (through the small launcher) and return its report."""
    args = [which, str(csv), str(out)]
    return run_rss_child("bench._rss_child", args, out, what=which, make_home=which == "lakebed")


def run_peak_rss(opts: BenchOptions) -> str:
    log(f"csv_peak_rss{opts.label}: peak RSS of a child process ingesting a large CSV")
    target_bytes = opts.scaled(RSS_BYTES)
    need = opts.scaled(RSS_MIN_FREE)
    free = free_bytes(opts.workdir)
    if free < need:
        return (
            f"csv_peak_rss: skipped (only {fmt_size(free)} free under {opts.workdir}, "
            f"need {fmt_size(need)} for the {fmt_size(target_bytes)} CSV)"
        )
    csv = opts.workdir / "orders_rss.csv"
    try:
        size = generate_csv(csv, target_bytes)
        pairs: list[dict[str, ChildRun]] = []
        for round_no in range(1, opts.rounds + 1):
            pair: dict[str, ChildRun] = {}
            # Alternate which goes first, as the throughput rounds do.
            for which in ("baseline", "lakebed") if round_no % 2 else ("lakebed", "baseline"):
                run = _run_child(which, csv, opts.workdir / f"rss_{which}")
                pair[which] = run
                log(
                    f"  round {round_no} {which + ' child:':16} peak RSS {run.peak_rss_kib / 1024:6.0f} MiB "
                    f"(VmHWM {run.hwm_text}), "
                    f"{run.seconds:6.2f} s ({size / MB / run.seconds:.0f} MB/s), {run.rows:,} rows"
                )
            if pair["lakebed"].rows != pair["baseline"].rows:
                raise RuntimeError(
                    f"row counts differ: lakebed wrote {pair['lakebed'].rows:,}, "
                    f"baseline {pair['baseline'].rows:,}"
                )
            pairs.append(pair)
    finally:
        remove(csv)
    ours = [p["lakebed"].peak_rss_kib / 1024 for p in pairs]
    theirs = [p["baseline"].peak_rss_kib / 1024 for p in pairs]
    what = f"ingesting a {fmt_size(size)} CSV"
    return "\n".join(
        (
            report(
                "csv_peak_rss",
                ours,
                target=RSS_TARGET_MIB,
                better="lower",
                unit="MiB",
                detail=f"lakebed peak RSS {what}",
                quick=opts.quick,
            ),
            report(
                "csv_peak_rss_ratio",
                [o / t for o, t in zip(ours, theirs, strict=True)],
                target=RSS_RATIO_TARGET,
                better="lower",
                detail=f"lakebed / {BASELINE_NAME} peak RSS per pair {what} "
                f"(median baseline {statistics.median(theirs):,.0f} MiB)",
                quick=opts.quick,
            ),
        )
    )
