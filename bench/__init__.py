"""lakebed benchmarks: ``python -m bench [csv|unstructured ...] [--quick]`` (``make bench`` runs them all).

Every benchmark measures lakebed against a bare baseline in the same run, in alternating pairs (at least 5,
``--rounds``), and prints the median of the per-pair ratios with their min–max (``bench.common.RoundTimes``
and ``report``); the machine is small and noisy, so absolute numbers are only context, and one round is
not evidence. ``python -m bench`` ends with a table of every result (also ``bench/out/last-results.json``).
Nothing here asserts on timings: a target that is missed prints FAIL, and the exit status is non-zero only
when a benchmark could not run.

Kept light on purpose: ``bench._rss_child`` is started as a child process, and its peak memory should not
include anything it does not need.
"""
