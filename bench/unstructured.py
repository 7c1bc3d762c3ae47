"""Unstructured ingest of many small files, against a bare read + sha256 + content-addressed copy loop.

10,000 small text and markdown files (``--quick``: 1,000) of 200 B–4 KB, varied prose with some exact
duplicates, spread over sub-folders. Alternating rounds of the baseline (walk the folder, read each file,
sha256 it, copy the bytes to ``dest/<sha[:2]>/<sha>`` unless already there) and lakebed's
``ingest_unstructured(folder, table="files_bench")`` into a fresh lakebed home (which also extracts the
text and commits the rows, bytes inline, to Delta); the median of the per-pair files/s ratios. Target:
lakebed ≥ 0.9 × the baseline.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import BenchOptions, RoundTimes, fresh_dir, lakebed_home, log, remove, timed

MODULE = "lakebed.pipelines.unstructured"
BASELINE_NAME = "bare read+sha256+copy"
FILES = 10_000
QUICK_FILES = 1_000
FILES_PER_FOLDER = 100
DUPLICATE_SHARE = 0.05
MIN_BYTES, MAX_BYTES = 200, 4096
TABLE = "files_bench"
TARGET = 0.9
_WARMUP_FILES = 20

_VOCABULARY = (
    "the order pipeline batch table schema commit version customer espresso grinder kettle beans filter "
    "shipment invoice warehouse delivery return refund loyalty tier region Berlin Lisbon Utrecht Madrid "
    "quarterly report revenue margin forecast backlog incident latency throughput partition snapshot "
    "merge upsert contract column drift lineage sensor landing folder manifest checksum retry timeout "
    "we they our team should could will must review agreed decided noted follow up next week after "
    "before during because although however therefore meanwhile roughly about nearly exactly only "
    "new old large small slow fast stable flaky green red blocked done pending open closed urgent minor"
)
_WORDS = _VOCABULARY.split()
_TITLES = (
    "Weekly sync notes",
    "Incident review",
    "Release checklist",
    "Supplier call",
    "Roast profile changes",
    "Warehouse move plan",
    "Data contract proposal",
    "Customer feedback digest",
    "On-call handover",
    "Quarterly planning",
)
_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Radia", "Linus", "Hedy", "Sophie", "Ken")


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(6, 18))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), f"#{rng.randint(100, 9999)}")
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), rng.choice(_NAMES))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


def _markdown(rng: random.Random, size: int) -> str:
    parts = [f"# {rng.choice(_TITLES)} ({rng.randint(2023, 2025)}-{rng.randint(1, 12):02d})", ""]
    while sum(len(p) + 1 for p in parts) < size:
        kind = rng.random()
        if kind < 0.2:
            parts += [f"## {_sentence(rng)[:-1]}", ""]
        elif kind < 0.45:
            parts += [f"- {_sentence(rng)}" for _ in range(rng.randint(2, 5))] + [""]
        elif kind < 0.5:
            parts += ["```", f"lakebed ingest landing/orders-{rng.randint(1, 99):02d}.csv", "```", ""]
        else:
            parts += [_paragraph(rng), ""]
    return "\n".join(parts)


def _plain(rng: random.Random, size: int) -> str:
    parts = [f"{rng.choice(_TITLES)} — {rng.choice(_NAMES)}", ""]
    while sum(len(p) + 1 for p in parts) < size:
        parts += [_paragraph(rng), ""]
    return "\n".join(parts)


def _fit(text: str, size: int) -> bytes:
    """``text`` cut at a word boundary to at most ``size`` bytes (never below MIN_BYTES), newline-ended."""
    data = text.encode()
    if len(data) > size:
        cut = data.rfind(b" ", MIN_BYTES, size)
        data = data[: cut if cut > 0 else size]
    return data.rstrip() + b"\n"


def generate_files(folder: Path, count: int, *, seed: int = 23) -> int:
    """Write ``count`` small .md/.txt files under ``folder``; returns how many are exact duplicates."""
    rng = random.Random(seed)
    written: list[bytes] = []
    duplicates = 0
    for i in range(count):
        sub = folder / f"batch-{i // FILES_PER_FOLDER:03d}"
        if i % FILES_PER_FOLDER == 0:
            sub.mkdir(parents=True, exist_ok=True)
        if written and rng.random() < DUPLICATE_SHARE:
            data = rng.choice(written)
            duplicates += 1
        else:
            size = rng.randint(MIN_BYTES, MAX_BYTES)
            markdown = rng.random() < 0.6
            data = _fit(_markdown(rng, size) if markdown else _plain(rng, size), size)
        suffix = ".md" if data.startswith(b"# ") else ".txt"
        (sub / f"note-{i:05d}{suffix}").write_bytes(data)
        written.append(data)
    return duplicates


def baseline_ingest(folder: Path, dest: Path) -> int:
    """Read every file, sha256 it, copy it into ``dest/<sha[:2]>/<sha>``; returns the files seen."""
    seen = 0
    made: set[str] = set()
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            data = Path(root, name).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            seen += 1
            if sha[:2] not in made:
                (dest / sha[:2]).mkdir(parents=True, exist_ok=True)
                made.add(sha[:2])
            target = dest / sha[:2] / sha
            if not target.exists():
                target.write_bytes(data)
    return seen


def _load() -> Callable[..., Any] | str:
    """``ingest_unstructured``, or the reason it cannot be imported."""
    try:
        from lakebed.pipelines.unstructured import ingest_unstructured
    except ModuleNotFoundError as exc:
        if exc.name == MODULE:
            return "module missing"
        return f"{MODULE} not importable: {exc}"
    except ImportError as exc:
        return f"{MODULE} not importable: {exc}"
    return ingest_unstructured


def run(opts: BenchOptions) -> str:
    log(f"unstructured{opts.label}: many small files, lakebed vs {BASELINE_NAME}")
    ingest = _load()
    if isinstance(ingest, str):
        return f"unstructured: skipped ({ingest})"
    count = QUICK_FILES if opts.quick else FILES
    folder = fresh_dir(opts.workdir / "small_files")
    warm = fresh_dir(opts.workdir / "small_files_warmup")
    dest = opts.workdir / "cas"
    try:
        seconds, duplicates = timed(lambda: generate_files(folder, count))
        log(f"  generated {count:,} files ({duplicates:,} exact duplicates) in {seconds:.1f} s")
        generate_files(warm, _WARMUP_FILES, seed=5)

        def lakebed_round(source: Path, home: Path) -> tuple[float, Any]:
            with lakebed_home(home) as config:
                return timed(lambda: ingest(source, table=TABLE, config=config))

        # Untimed warm-up of both paths (imports, first-use setup) on a few other files.
        baseline_ingest(warm, fresh_dir(dest))
        lakebed_round(warm, opts.workdir / "warmup_home")

        times = RoundTimes("unstructured", "files/s", BASELINE_NAME, TARGET, opts.quick)
        for round_no in range(1, opts.rounds + 1):
            fresh_dir(dest)
            seconds, seen = timed(lambda: baseline_ingest(folder, dest))
            times.record("baseline", round_no, seconds, f"{count / seconds:8.0f} files/s  {seen:,} seen")
            seconds, result = lakebed_round(folder, opts.workdir / "lakebed_home")
            times.record(
                "lakebed",
                round_no,
                seconds,
                f"{count / seconds:8.0f} files/s  "
                f"{result.files_seen:,} seen, {result.rows_written:,} rows written"
                + (f", {result.duplicates:,} duplicates" if hasattr(result, "duplicates") else ""),
            )
            if result.files_seen != count:
                log(f"  note: lakebed saw {result.files_seen:,} files, {count:,} were generated")
    finally:
        for path in (folder, warm, dest):
            remove(path)
    return times.summary(count)
