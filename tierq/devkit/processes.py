"""Start and stop tierq's own processes (simulator, workers) for the demo, tests and benchmarks.

Each process writes its output to a log file, is started in its own session so a stop reaches
its children too, and is stopped by PID: SIGTERM first (Celery's warm shutdown finishes the
jobs in hand), SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tierq.core.settings import Settings

READY_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """A child process whose output goes to `log_path`."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            list(self.argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(self.env) if self.env is not None else None,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until(self, ready: Callable[[], bool], timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                self.stop()
                raise RuntimeError(f"{self.name} exited early; its log:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} not ready in {timeout}s:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        if self.alive():
            os.killpg(self.pid, signum)

    def stop(self, grace_seconds: float = 15.0) -> None:
        if self.process is None:
            return
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_simulator(
    log_path: Path, *, port: int | None = None, args: Sequence[str] = ()
) -> tuple[ManagedProcess, str]:
    """A running simulator and its base URL (for OPENAI_BASE_URL)."""
    port = port or free_port()
    process = ManagedProcess(
        "simulator",
        [sys.executable, "-m", "tierq_simulator", "--port", str(port), *args],
        log_path,
    ).start()
    process.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
    return process, f"http://127.0.0.1:{port}/v1"


def start_worker(
    tier: str,
    log_path: Path,
    env: Mapping[str, str],
    *,
    concurrency: int | None = None,
    wait: bool = True,
) -> ManagedProcess:
    """A running `tierq worker --tier TIER`; waits for its `worker.ready` log line."""
    argv = [sys.executable, "-m", "tierq.worker", "--tier", tier]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    process = ManagedProcess(f"worker[{tier}]", argv, log_path, env).start()
    if wait:
        process.wait_until(lambda: worker_ready(process))
    return process


def start_gateway(
    log_path: Path, env: Mapping[str, str], *, port: int | None = None
) -> tuple[ManagedProcess, str]:
    """A running `tierq gateway` and its root URL (http://127.0.0.1:PORT)."""
    port = port or free_port()
    process = ManagedProcess(
        "gateway",
        [sys.executable, "-m", "tierq", "gateway", "--host", "127.0.0.1", "--port", str(port)],
        log_path,
        env,
    ).start()
    root = f"http://127.0.0.1:{port}"
    process.wait_until(lambda: http_ok(f"{root}/readyz"))
    return process, root


def worker_ready(process: ManagedProcess) -> bool:
    return "worker.ready" in process.log_text()


def log_events(log_path: Path) -> list[dict[str, object]]:
    """The JSON log lines of a process, parsed (other lines skipped)."""
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); after the ")" they sit at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settings_for(env: Mapping[str, str]) -> Settings:
    """The settings a process started with `env` reads (without any .env file), so a parent
    can talk to the Redis and queues of the children it started."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return Settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
