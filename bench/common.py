"""Shared helpers: options, isolated lakebed homes, timing, sizes, output formatting, and the peak-RSS
child-process protocol (launcher + worker report) used by ``bench._rss_child`` and ``bench.stream_ingest``.

Stdlib only at import time: the RSS workers import this module, and their peak memory should not include
anything they do not need."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from lakebed.config import LakebedConfig

QUICK_ENV = "LAKEBED_BENCH_QUICK"
QUICK_DIVISOR = 20
REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_ROOT = REPO_ROOT / "bench" / "out"

MB = 1_000_000
GB = 1_000_000_000
MiB = 1 << 20
GiB = 1 << 30

T = TypeVar("T")


@dataclass(frozen=True)
class BenchOptions:
    """What every benchmark is told: size scale, where to put its data, how many alternating rounds."""

    quick: bool
    workdir: Path
    rounds: int = 5

    def scaled(self, full: int) -> int:
        """``full`` in a normal run, about 1/20 of it with ``--quick``."""
        return max(1, full // QUICK_DIVISOR) if self.quick else full

    @property
    def label(self) -> str:
        return " [quick]" if self.quick else ""


def quick_from_env() -> bool:
    return os.environ.get(QUICK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def log(message: str) -> None:
    print(message, flush=True)


def fresh_dir(path: Path) -> Path:
    """``path`` as a new, empty directory (anything there before is removed)."""
    remove(path)
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def free_bytes(path: Path) -> int:
    """Free space on the file system holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def isolated_config(home: Path) -> LakebedConfig:
    """A config rooted entirely in ``home``: explicit keyword arguments beat any ``LAKEBED_*`` variable
    or ``lakebed.toml``, so a benchmark can never write into the developer's own lakebed."""
    from lakebed.config import LakebedConfig

    return LakebedConfig(
        home=home,
        hot_root=home / "tables",
        cold_root=(home / "cold").as_uri(),
        landing_dir=home / "landing",
    )


def isolated_env(home: Path) -> dict[str, str]:
    """The environment for a child process whose lakebed lives in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEBED_")}
    env["LAKEBED_HOME"] = str(home)
    env["DAGSTER_HOME"] = str(home / "dagster")
    return env


@contextlib.contextmanager
def lakebed_home(home: Path) -> Iterator[LakebedConfig]:
    """A fresh lakebed home at ``home``: ``LAKEBED_HOME`` points there (and the process config is reset)
    for the duration, and the config is also yielded to pass explicitly. The home is removed afterwards."""
    from lakebed.config import reset_config

    fresh_dir(home)
    saved = {k: os.environ.get(k) for k in ("LAKEBED_HOME", "LAKEBED_CONFIG", "DAGSTER_HOME")}
    os.environ["LAKEBED_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ.pop("LAKEBED_CONFIG", None)
    reset_config()
    try:
        yield isolated_config(home)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_config()
        remove(home)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall-clock seconds of ``fn()`` and its result (garbage collected first, so runs start alike)."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass(frozen=True)
class Result:
    """One benchmark's outcome for the final table: the median of its per-pair ratios, their min–max,
    and the target the median is judged against (``better`` says which way: ``higher`` or ``lower``)."""

    name: str
    median: float
    low: float
    high: float
    target: float | None
    better: str
    unit: str
    quick: bool

    @property
    def passed(self) -> bool | None:
        """Whether the median meets the target; ``None`` without a target."""
        if self.target is None:
            return None
        return self.median >= self.target if self.better == "higher" else self.median <= self.target

    @property
    def verdict(self) -> str:
        return "—" if self.passed is None else verdict(self.passed)

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        return f"{'≥' if self.better == 'higher' else '≤'} {fmt_value(self.target)}"


RESULTS: list[Result] = []
"""Every result reported in this process, in order (the final table of ``python -m bench``)."""


def report(
    name: str,
    ratios: Sequence[float],
    *,
    target: float | None,
    better: str = "higher",
    unit: str = "ratio",
    detail: str = "",
    quick: bool = False,
) -> str:
    """Register the :class:`Result` of per-pair ``ratios`` (one per alternating baseline/lakebed pair)
    and return its line: ``name: median R (min–max L–H over N pairs) [unit] (target ≥ T) PASS — detail``."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    if not ratios:
        raise ValueError(f"{name}: no pairs to report")
    result = Result(
        name=name,
        median=statistics.median(ratios),
        low=min(ratios),
        high=max(ratios),
        target=target,
        better=better,
        unit=unit,
        quick=quick,
    )
    RESULTS.append(result)
    line = f"{name}: median {fmt_value(result.median)}"
    if unit != "ratio":
        line += f" {unit}"
    line += f" (min–max {fmt_value(result.low)}–{fmt_value(result.high)} over {len(ratios)} pairs)"
    line += " (no target)" if target is None else f" (target {result.target_text}) {result.verdict}"
    if detail:
        line += f"; {detail}"
    return line + (" [quick]" if quick else "")


def results_table(results: Sequence[Result]) -> str:
    """Plain-text aligned table of ``results``: benchmark, median, min–max, target, verdict."""
    rows = [("benchmark", "median", "min–max", "target", "verdict")]
    for r in results:
        unit = "" if r.unit == "ratio" else f" {r.unit}"
        name = r.name + (" [quick]" if r.quick else "")
        rows.append(
            (
                name,
                fmt_value(r.median) + unit,
                f"{fmt_value(r.low)}–{fmt_value(r.high)}",
                r.target_text,
                r.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def write_results(results: Sequence[Result], path: Path) -> Path:
    """``results`` as a JSON list (one object per result, with its verdict) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(r), "verdict": r.verdict} for r in results]
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    return path


@dataclass
class RoundTimes:
    """Wall-clock seconds of alternating baseline/lakebed rounds of benchmark ``name``; the summary is the
    median (and min–max) of the per-pair rate ratios, pair i being baseline round i vs lakebed round i."""

    name: str
    unit: str
    baseline_name: str
    target: float | None
    quick: bool
    seconds: dict[str, list[float]] = field(default_factory=lambda: {"baseline": [], "lakebed": []})

    def record(self, which: str, round_no: int, seconds: float, detail: str) -> None:
        """Keep ``seconds`` for ``which`` (``baseline`` or ``lakebed``) and log its round line."""
        self.seconds[which].append(seconds)
        log(f"  round {round_no} {which + ':':9} {seconds:6.2f} s  {detail}")

    def pair_ratios(self) -> list[float]:
        """Lakebed rate / baseline rate of each pair, i.e. baseline seconds / lakebed seconds."""
        return [
            b / o if o > 0 else float("nan")
            for b, o in zip(self.seconds["baseline"], self.seconds["lakebed"], strict=True)
        ]

    def summary(self, work: float) -> str:
        """The :func:`report` line of the per-pair ratios, with the best rate of each side in ``unit``
        (``work`` rows, MB, files, ... per round) for information."""
        ours, theirs = work / min(self.seconds["lakebed"]), work / min(self.seconds["baseline"])
        return report(
            self.name,
            self.pair_ratios(),
            target=self.target,
            detail=f"best lakebed {fmt_rate(ours)} {self.unit} vs {self.baseline_name} {fmt_rate(theirs)} {self.unit}",
            quick=self.quick,
        )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt_value(value: float) -> str:
    """A result's median, bound or target: two decimals for ratios, whole numbers from 100 up (MiB, µs)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def fmt_rate(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_size(n: int) -> str:
    if n >= GB:
        return f"{n / GB:.2f} GB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / 1000:.1f} kB"


def machine_line() -> str:
    import deltalake
    import pyarrow

    return (
        f"python {sys.version.split()[0]}, pyarrow {pyarrow.__version__}, deltalake {deltalake.__version__}, "
        f"{os.cpu_count()} CPU(s)"
    )


# --- peak RSS of a child process ----------------------------------------------------------------------
#
# ``python -m MODULE launch ARGS...`` is a small launcher: it starts ``python -m MODULE ARGS...`` (the
# worker) as its only child, waits for it, and adds ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (KiB on
# Linux) to the worker's JSON report. See ``bench._rss_child`` for why the launcher is needed.


@dataclass(frozen=True)
class ChildRun:
    rows: int
    seconds: float
    peak_rss_kib: int  # getrusage(RUSAGE_CHILDREN).ru_maxrss in the launcher, whose only child this was
    vm_hwm_kib: int | None  # the child's own /proc VmHWM, as a cross-check

    @property
    def hwm_text(self) -> str:
        return f"{self.vm_hwm_kib / 1024:.0f} MiB" if self.vm_hwm_kib is not None else "n/a"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a server started next binds it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    """Return once ``process`` (``what``) listens on ``port``; raise if it exits or does not in time."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Terminate ``process``, killing it when it does not exit within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_rss_child(module: str, args: list[str], home: Path, *, what: str, make_home: bool = True) -> ChildRun:
    """Run ``python -m module launch *args`` with its lakebed in ``home`` (fresh, removed afterwards;
    created first when ``make_home``) and return the worker's report."""
    import subprocess

    remove(home)
    if make_home:
        home.mkdir(parents=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, "launch", *args],
            cwd=str(REPO_ROOT),
            env=isolated_env(home.resolve()),
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        remove(home)
    if done.returncode != 0:
        raise RuntimeError(f"{what} child exited with status {done.returncode}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    hwm = report.get("vm_hwm_kib")
    return ChildRun(
        rows=int(report["rows"]),
        seconds=float(report["seconds"]),
        peak_rss_kib=int(report["maxrss_children_kib"]),
        vm_hwm_kib=int(hwm) if hwm is not None else None,
    )


def launch_worker(module: str, args: list[str]) -> int:
    """The launcher: run ``python -m module *args`` as the only child and print its report with
    ``maxrss_children_kib`` added."""
    import resource
    import subprocess

    worker = subprocess.run(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True, check=False
    )
    if worker.returncode != 0:
        print(f"worker exited with status {worker.returncode}", file=sys.stderr)
        return 1
    report = json.loads(worker.stdout.strip().splitlines()[-1])
    report["maxrss_children_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(report), flush=True)
    return 0


def vm_hwm_kib() -> int | None:
    """This process's ``VmHWM`` (high-water RSS of its address space) from ``/proc``, if readable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def report_work(work: Callable[[], int], **extra: object) -> int:
    """The worker: time ``work()`` (which returns the rows written) and print one JSON line with
    ``extra``, ``rows``, ``seconds`` and ``vm_hwm_kib``."""
    start = time.perf_counter()
    rows = work()
    seconds = time.perf_counter() - start
    print(json.dumps({**extra, "rows": rows, "seconds": seconds, "vm_hwm_kib": vm_hwm_kib()}), flush=True)
    return 0
