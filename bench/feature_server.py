"""The feature server over HTTP against the floor of its HTTP stack.

Data: the online table of view ``online_bench:v1`` (:mod:`bench.online_lookup`'s rows: 100,000 entities,
``--quick`` 5,000; four features) in a fresh lakebed home. ``lakebed serve features`` (one worker, a bearer
token) serves it; the floor is a minimal ASGI app on uvicorn with the same options
(:mod:`bench._floor_server`) answering every request with the pre-serialised bytes of one real answer.

Load: :mod:`bench._http_load` in its own process, keep-alive connections sending Feast-shaped one-entity
``POST /get-online-features`` bodies (random entities; the floor gets the same bodies), 3,000 requests at
concurrency 1 and 12,000 at concurrency 16 (``--quick``: a tenth). Each round runs the floor then lakebed
at both concurrencies; a pair's ratios are lakebed / floor for p50, p99 and throughput. Targets (median
over the pairs): p99 ≤ 2× the floor at both concurrencies, throughput at 16 ≥ 0.5× the floor, and not one
error (non-200, reset, timeout) at any concurrency. Answers are checked against the in-process
``FeatureStore`` for a sample of entities. Feast 0.67's own server measured on this machine is printed
beside for reference.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_ROOT,
    BenchOptions,
    free_port,
    isolated_env,
    lakebed_home,
    log,
    report,
    stop_process,
    wait_for_port,
)
from bench.online_lookup import FEATURES, TABLE, TTL, VERSION, VIEW, online_rows
from bench.pit_retrieval import register_view

TOKEN = "bench-feature-server-token"
ENTITIES = 100_000
REQUESTS = {1: 3_000, 16: 12_000}
FEAST = {1: "p50 2.1 ms, p99 8.2 ms, 420 req/s", 16: "227 req/s, p99 1.6 s, connections reset"}
BODIES = 500


def _start(command: list[str], env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, env=env, cwd=str(REPO_ROOT), stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, process, f"{' '.join(command[2:4])} (log: {log_path})")
    return process


def _load(url: str, concurrency: int, total: int, bodies_path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench._http_load",
            url,
            TOKEN,
            str(concurrency),
            str(total),
            str(bodies_path),
        ],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(opts: BenchOptions) -> str:
    import numpy as np

    from lakebed.feature_store import FeatureStore
    from lakebed.pipelines.features.online import default_online_store
    from lakebed.serving.client import FeatureClient

    n_entities = opts.scaled(ENTITIES)
    requests = {c: max(200, n // 10) if opts.quick else n for c, n in REQUESTS.items()}
    refs = [f"{VIEW}:v{VERSION}:{name}" for name in FEATURES]
    log(f"feature_server{opts.label}: {n_entities:,} entities; one-entity requests over HTTP vs the floor")
    home = opts.workdir / "feature_server_home"
    rng = np.random.default_rng(23)
    with lakebed_home(home) as config:
        register_view(VIEW, VERSION, entities=["entity_id"], features=FEATURES, ttl=TTL, config=config)
        store = default_online_store(config)
        store.write(TABLE, online_rows(n_entities, time.time_ns() // 1000), ["entity_id"])
        keys = rng.integers(0, n_entities, BODIES).tolist()
        bodies = [{"features": refs, "entities": {"entity_id": [k]}} for k in keys]
        bodies_path = opts.workdir / "feature_server_bodies.json"
        bodies_path.write_text(json.dumps(bodies))
        env = {**isolated_env(home.resolve()), "LAKEBED_FEATURE_SERVER_TOKEN": TOKEN}
        port = free_port()
        server = _start(
            [sys.executable, "-m", "lakebed.cli", "serve", "features", "--port", str(port)],
            env,
            port,
            opts.workdir / "feature_server.log",
        )
        url = f"http://127.0.0.1:{port}/get-online-features"
        try:
            # The floor answers with the bytes of a real answer; answers are checked on a sample.
            client = FeatureClient(f"http://127.0.0.1:{port}", token=TOKEN)
            in_process = FeatureStore(config, online_store=store)
            identical = all(
                client.get_online_feature_dict(refs, {"entity_id": k})
                == in_process.get_online_feature_dict(refs, {"entity_id": k})
                for k in keys[:100]
            )
            sample = json.dumps(
                client.get_online_response(refs, {"entity_id": [keys[0]]}, full_feature_names=False)
            )
            client.close()
            floor_body = opts.workdir / "feature_server_floor.json"
            floor_body.write_text(sample)
            floor_port = free_port()
            floor = _start(
                [sys.executable, "-m", "bench._floor_server", str(floor_port), str(floor_body)],
                env,
                floor_port,
                opts.workdir / "feature_server_floor.log",
            )
            floor_url = f"http://127.0.0.1:{floor_port}/get-online-features"
            try:
                for concurrency in requests:  # warm-up: imports, connections, page cache
                    _load(floor_url, concurrency, 300, bodies_path)
                    _load(url, concurrency, 300, bodies_path)
                rounds: list[dict[str, dict[int, dict[str, Any]]]] = []
                for round_no in range(1, opts.rounds + 1):
                    pair: dict[str, dict[int, dict[str, Any]]] = {"floor": {}, "lakebed": {}}
                    for concurrency, total in requests.items():
                        for side, target in (("floor", floor_url), ("lakebed", url)):
                            pair[side][concurrency] = _load(target, concurrency, total, bodies_path)
                    rounds.append(pair)
                    log(
                        f"  round {round_no}: "
                        + "; ".join(
                            f"c={c} floor p50 {pair['floor'][c]['p50_us']:.0f} µs p99 {pair['floor'][c]['p99_us']:.0f} µs "
                            f"{pair['floor'][c]['rps']:,.0f}/s | lakebed p50 {pair['lakebed'][c]['p50_us']:.0f} µs "
                            f"p99 {pair['lakebed'][c]['p99_us']:.0f} µs {pair['lakebed'][c]['rps']:,.0f}/s"
                            for c in requests
                        )
                    )
            finally:
                stop_process(floor)
        finally:
            stop_process(server)
        store.close()

    def ratios(concurrency: int, metric: str) -> list[float]:
        return [r["lakebed"][concurrency][metric] / r["floor"][concurrency][metric] for r in rounds]

    def median(side: str, concurrency: int, metric: str) -> float:
        return statistics.median(r[side][concurrency][metric] for r in rounds)

    errors = sum(r[side][c]["errors"] for r in rounds for side in ("floor", "lakebed") for c in requests)
    lakebed_errors = sum(r["lakebed"][c]["errors"] for r in rounds for c in requests)
    samples = [r["lakebed"][c]["error_sample"] for r in rounds for c in requests if r["lakebed"][c]["errors"]]
    for concurrency in requests:
        log(
            f"  c={concurrency:<2} lakebed: p50 {median('lakebed', concurrency, 'p50_us') / 1000:.2f} ms, "
            f"p99 {median('lakebed', concurrency, 'p99_us') / 1000:.2f} ms, "
            f"{median('lakebed', concurrency, 'rps'):,.0f} req/s; floor p50 "
            f"{median('floor', concurrency, 'p50_us') / 1000:.2f} ms, p99 {median('floor', concurrency, 'p99_us') / 1000:.2f} ms, "
            f"{median('floor', concurrency, 'rps'):,.0f} req/s; Feast 0.67 (same machine): {FEAST[concurrency]}"
        )
    log(
        f"  errors: lakebed {lakebed_errors}, all {errors} {samples[:1]}; answers identical to FeatureStore: {'yes' if identical else 'no'}"
    )
    detail = f"errors {lakebed_errors}, identical answers: {'yes' if identical else 'no'}"
    lines = [
        report(
            "feature_server_p99_c1",
            ratios(1, "p99_us"),
            target=2.0,
            better="lower",
            detail=detail,
            quick=opts.quick,
        ),
        report("feature_server_p99_c16", ratios(16, "p99_us"), target=2.0, better="lower", quick=opts.quick),
        report("feature_server_rps_c16", ratios(16, "rps"), target=0.5, quick=opts.quick),
        report(
            "feature_server_errors",
            [float(lakebed_errors)],
            target=0.0,
            better="lower",
            unit="errors",
            quick=opts.quick,
        ),
        report("feature_server_p50_c1", ratios(1, "p50_us"), target=None, better="lower", quick=opts.quick),
    ]
    return "\n".join(lines)
