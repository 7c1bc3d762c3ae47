"""Sending OpenLineage events: always to the lakebed home's event file, also to a configured backend.

Every event is appended as one JSON line to ``HOME/lineage/events.jsonl`` (the default file transport; the
lineage store loads it). When ``OPENLINEAGE_URL`` or ``OPENLINEAGE_CONFIG`` is set, the event is also sent
with ``openlineage-python``'s transport from that configuration (Marquez, Kafka, ...). A failing or slow
backend never fails the job: the event is kept in ``HOME/lineage/unsent.jsonl``, a warning is logged, the
backend is left alone for a while, and kept events are re-sent (in order) before the next event once it
answers again, or by ``lakebed lineage flush``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from lakebed.config import LakebedConfig

log = logging.getLogger("lakebed.lineage")
EVENTS_FILE = "events.jsonl"
UNSENT_FILE = "unsent.jsonl"
RETRY_AFTER_SECONDS = 30.0


def lineage_dir(config: LakebedConfig) -> Path:
    return config.home / "lineage"


def events_path(config: LakebedConfig) -> Path:
    return lineage_dir(config) / EVENTS_FILE


def _lock(path: Path) -> FileLock:
    """The lock other lakebed processes take before changing ``path`` (a ``.lock`` file beside it)."""
    return FileLock(path.with_name(path.name + ".lock"))


def append_line(path: Path, line: str) -> None:
    """Append one line atomically with respect to other lakebed processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode()
    with _lock(path), open(path, "ab") as handle:
        handle.write(data)


class _EventFile:
    """The event file, kept open for appending: one ``write`` per event. ``O_APPEND`` writes of one
    buffer are atomic with respect to other appenders on local filesystems, so lines never interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        with self._lock:
            if self._fd is None or not self.path.exists():  # (re)opened when the file was removed
                if self._fd is not None:
                    os.close(self._fd)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, data)


class Emitter:
    """Where events go for one lakebed home (see the module docstring)."""

    def __init__(self, config: LakebedConfig) -> None:
        self.config = config
        self.path = events_path(config)
        self.file = _EventFile(self.path)
        self.unsent = lineage_dir(config) / UNSENT_FILE
        # Secrets as they appear in clear and inside JSON strings (escaped).
        self.secrets = sorted(
            {v for secret in config.secret_values() for v in (secret, json.dumps(secret)[1:-1])}
        )
        self.remote = _remote_transport(config)
        self._down_until = 0.0
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        """Record ``event`` (scrubbed of secrets first) in the event file, and send it to the backend."""
        from lakebed.lineage.events import scrub

        line = scrub(json.dumps(event, separators=(",", ":"), default=str), self.secrets)
        self.file.append(line)
        if self.remote is not None:
            with self._lock:
                self._send(json.loads(line), line)

    def _send(self, event: dict[str, Any], line: str) -> None:
        if time.monotonic() < self._down_until:
            append_line(self.unsent, line)
            return
        try:
            if self.unsent.exists():
                self._resend()
            self.remote.emit(event)
        except Exception as exc:
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            append_line(self.unsent, line)
            log.warning(
                "lineage backend unavailable (%s); event kept in %s and re-sent later",
                _short(exc, self.secrets),
                self.unsent,
            )

    def _resend(self) -> None:
        """Send the kept events in order; stops (raising) at the first failure, keeping the rest."""
        sent = 0
        with _lock(self.unsent):
            try:
                lines = [line for line in self.unsent.read_bytes().splitlines() if line.strip()]
            except FileNotFoundError:  # another process re-sent them meanwhile
                return
            try:
                for line in lines:
                    self.remote.emit(json.loads(line))
                    sent += 1
            finally:
                if sent == len(lines):
                    self.unsent.unlink(missing_ok=True)
                elif sent:
                    kept = self.unsent.with_name(self.unsent.name + ".tmp")
                    kept.write_bytes(b"".join(line + b"\n" for line in lines[sent:]))
                    os.replace(kept, self.unsent)
        if sent:
            log.info("re-sent %d kept lineage event(s)", sent)

    def flush(self) -> int:
        """Re-send kept events now; returns how many are still kept."""
        if self.remote is not None and self.unsent.exists():
            with self._lock:
                try:
                    self._resend()
                    self._down_until = 0.0
                except Exception as exc:
                    log.warning("lineage backend still unavailable: %s", _short(exc, self.secrets))
        return pending(self.config)


def pending(config: LakebedConfig) -> int:
    """How many events wait in ``unsent.jsonl`` for the backend."""
    path = lineage_dir(config) / UNSENT_FILE
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def _short(exc: BaseException, secrets: list[str]) -> str:
    from lakebed.lineage.events import scrub

    return scrub(f"{type(exc).__name__}: {exc}", secrets)[:300]


def _remote_transport(config: LakebedConfig) -> Any:
    """The transport ``OPENLINEAGE_CONFIG`` / ``OPENLINEAGE_URL`` configure, or None when neither is set."""
    if not (os.environ.get("OPENLINEAGE_CONFIG") or os.environ.get("OPENLINEAGE_URL")):
        return None
    if os.environ.get("OPENLINEAGE_DISABLED", "").lower() in ("1", "true"):
        return None
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.http import HttpTransport

    transport = OpenLineageClient().transport
    if isinstance(transport, HttpTransport) and not os.environ.get("OPENLINEAGE_CONFIG"):
        # A slow or dead backend must not slow the job: one attempt, a short timeout; kept events are
        # re-sent later by lakebed itself.
        transport.timeout = config.lineage_timeout
        transport.config.retry = {"total": 0, "connect": 0, "read": 0, "status": 0, "backoff_factor": 0}
    return transport


_EMITTERS: dict[tuple[Any, ...], Emitter] = {}


def get_emitter(config: LakebedConfig) -> Emitter:
    """The emitter of ``config``'s home (one per home and backend configuration)."""
    key = (
        config.home,
        os.environ.get("OPENLINEAGE_URL"),
        os.environ.get("OPENLINEAGE_CONFIG"),
        config.lineage_timeout,
        tuple(config.secret_values()),
    )
    emitter = _EMITTERS.get(key)
    if emitter is None:
        emitter = _EMITTERS[key] = Emitter(config)
    return emitter


__all__ = ["Emitter", "append_line", "events_path", "get_emitter", "lineage_dir", "pending"]
