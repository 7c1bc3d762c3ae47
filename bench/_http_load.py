"""A keep-alive HTTP/1.1 load generator for the feature-server benchmark, run as its own process:
``python -m bench._http_load URL TOKEN CONCURRENCY REQUESTS BODIES_JSON`` prints one JSON line.

``CONCURRENCY`` connections (asyncio + uvloop streams: the client should cost as little CPU as possible)
each send requests one after another, cycling through the request bodies in ``BODIES_JSON`` (a JSON list
of JSON bodies), until ``REQUESTS`` were answered in all. Every answer's status is checked: non-200
answers, resets and timeouts are counted as errors, never retried. The report: latency p50/p99 in µs,
requests per second over the whole run, errors, and the sha256 of the first answer's body per body index
(so the caller can compare servers' answers).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from urllib.parse import urlsplit


async def _client(
    host: str,
    port: int,
    requests: list[bytes],
    share: int,
    latencies: list[int],
    errors: list[str],
    first: dict[int, str],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter_ns
    try:
        for n in range(share):
            index = n % len(requests)
            started = clock()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(clock() - started)
            if status != 200:
                errors.append(f"status {status}: {body[:200]!r}")
            elif index not in first:
                first[index] = hashlib.sha256(body).hexdigest()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def _run(url: str, token: str, concurrency: int, total: int, bodies: list[object]) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = []
    for body in bodies:
        data = json.dumps(body).encode()
        head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        requests.append(head.encode() + data)
    latencies: list[int] = []
    errors: list[str] = []
    first: dict[int, str] = {}
    shares = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(_client(host, port, requests, s, latencies, errors, first) for s in shares))
    seconds = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000.0
            if latencies
            else float("nan")
        )

    return {
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "rps": len(latencies) / seconds,
        "answered": len(latencies),
        "errors": len(errors),
        "error_sample": errors[:3],
        "first_bodies": {str(k): v for k, v in sorted(first.items())},
    }


def main(argv: list[str]) -> int:
    url, token, concurrency, total, bodies_path = argv
    import uvloop

    with open(bodies_path) as handle:
        bodies = json.load(handle)
    report = uvloop.run(_run(url, token, int(concurrency), int(total), bodies))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
