"""The benchmark harness: per-pair medians with min–max, verdicts both ways, the final table and its JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.common import QUICK_ENV, RESULTS, RoundTimes, report, results_table, write_results


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    RESULTS.clear()
    yield
    RESULTS.clear()


def _times(pairs: list[tuple[float, float]], target: float | None = 1.0) -> RoundTimes:
    times = RoundTimes("rt", "rows/s", "bare", target, quick=False)
    for round_no, (baseline, lakebed) in enumerate(pairs, 1):
        times.record("baseline", round_no, baseline, "")
        times.record("lakebed", round_no, lakebed, "")
    return times


def test_summary_is_the_median_of_per_pair_ratios_with_min_max() -> None:
    # baseline / lakebed seconds per pair: 0.5, 2, 1, 3, 0.25 -> median 1, min 0.25, max 3
    times = _times([(1, 2), (2, 1), (1, 1), (3, 1), (1, 4)])
    line = times.summary(100)
    (result,) = RESULTS
    assert (result.median, result.low, result.high) == (1.0, 0.25, 3.0)
    assert result.better == "higher" and result.passed is True
    assert line.startswith("rt: median 1.00 (min–max 0.25–3.00 over 5 pairs) (target ≥ 1.00) PASS")
    # the best rate of each side is kept for information: 100 / 1 s on both sides
    assert "best lakebed 100 rows/s vs bare 100 rows/s" in line


def test_one_lucky_round_does_not_decide_the_ratio() -> None:
    # lakebed is slower in four pairs of five; a best-of comparison (1.0 vs 1.0) would call it even
    _times([(1, 2), (1, 2), (1, 2), (1, 2), (1, 1)]).summary(1)
    (result,) = RESULTS
    assert result.median == 0.5 and result.high == 1.0
    assert result.passed is False and result.verdict == "FAIL"


def test_even_number_of_pairs_takes_the_middle_mean() -> None:
    report("even", [1.0, 4.0, 2.0, 3.0], target=None)
    assert RESULTS[0].median == 2.5 and RESULTS[0].verdict == "—"


def test_lower_is_better_verdicts() -> None:
    ok = report("overhead_ok", [1.02, 1.08, 1.05], target=1.1, better="lower")
    bad = report("overhead_bad", [1.2, 1.15, 1.3], target=1.1, better="lower", unit="MiB", detail="x")
    assert ok.endswith("(target ≤ 1.10) PASS")
    assert bad == "overhead_bad: median 1.20 MiB (min–max 1.15–1.30 over 3 pairs) (target ≤ 1.10) FAIL; x"
    assert [r.passed for r in RESULTS] == [True, False]
    with pytest.raises(ValueError):
        report("wrong", [1.0], target=1.0, better="faster")
    with pytest.raises(ValueError):
        report("empty", [], target=1.0)


def test_final_table_and_json_hold_every_result(tmp_path: Path) -> None:
    _times([(1, 1)] * 5).summary(10)
    report("no_target", [2.0, 3.0, 4.0, 5.0, 6.0], target=None, quick=True)
    report("rss", [900.0, 950.0, 1000.0, 1100.0, 1200.0], target=1024, better="lower", unit="MiB")
    lines = results_table(RESULTS).splitlines()
    assert lines[0].split() == ["benchmark", "median", "min–max", "target", "verdict"]
    assert [line.split()[0] for line in lines[1:]] == ["rt", "no_target", "rss"]
    assert lines[1].split() == ["rt", "1.00", "1.00–1.00", "≥", "1.00", "PASS"]
    assert lines[2].split() == ["no_target", "[quick]", "4.00", "2.00–6.00", "—", "—"]
    assert lines[3].split() == ["rss", "1,000", "MiB", "900–1,200", "≤", "1,024", "PASS"]
    # aligned: every row's min–max column starts where the header's does
    column = lines[0].index("min–max")
    assert all(line[column - 2 : column] == "  " for line in lines[1:])
    rows = json.loads(write_results(RESULTS, tmp_path / "out" / "last-results.json").read_text())
    assert [(r["name"], r["verdict"]) for r in rows] == [("rt", "PASS"), ("no_target", "—"), ("rss", "PASS")]
    assert rows[2]["median"] == 1000.0 and rows[2]["better"] == "lower" and rows[1]["target"] is None


def test_rounds_default_to_five_and_fewer_need_quick(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(QUICK_ENV, raising=False)
    assert bench_main._parse(["online_lookup"]).rounds == 5
    assert bench_main._parse(["online_lookup", "--quick", "--rounds", "2"]).rounds == 2
    with pytest.raises(SystemExit):
        bench_main._parse(["online_lookup", "--rounds", "3"])
    assert "at least 5" in capsys.readouterr().err
