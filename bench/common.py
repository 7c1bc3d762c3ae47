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
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    rounds: int = 2

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


@dataclass
class RoundTimes:
    """Wall-clock seconds of alternating baseline/lakebed rounds of benchmark ``name``; the summary compares
    the best (shortest) round of each side as a rate in ``unit`` (see :func:`ratio_line`)."""

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

    def summary(self, work: float) -> str:
        """The :func:`ratio_line` of ``work`` (rows, MB, files, ...) per best round of each side."""
        return ratio_line(
            self.name,
            ours=work / min(self.seconds["lakebed"]),
            theirs=work / min(self.seconds["baseline"]),
            unit=self.unit,
            baseline_name=self.baseline_name,
            target=self.target,
            quick=self.quick,
        )


def ratio_line(
    name: str,
    *,
    ours: float,
    theirs: float,
    unit: str,
    baseline_name: str,
    target: float | None,
    quick: bool,
) -> str:
    """``name: lakebed X unit vs <baseline> Y unit → ratio R (target ≥ T) PASS`` (higher is better)."""
    ratio = ours / theirs if theirs > 0 else float("nan")
    line = (
        f"{name}: lakebed {fmt_rate(ours)} {unit} vs {baseline_name} {fmt_rate(theirs)} {unit} "
        f"→ ratio {ratio:.2f}"
    )
    if target is None:
        line += " (no target)"
    else:
        line += f" (target ≥ {target:.2f}) {verdict(ratio >= target)}"
    return line + (" [quick]" if quick else "")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


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
