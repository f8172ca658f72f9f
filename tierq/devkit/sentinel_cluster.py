"""A Redis primary, its replicas and three Sentinels on this machine, for failover tests.

    with SentinelCluster() as cluster:           # started, replicas in sync, sentinels agreed
        sentinel = redis.sentinel.Sentinel(cluster.sentinel_addresses)
        primary = sentinel.master_for(cluster.master_name, password=cluster.password)
        primary.set("k", "v")
        cluster.kill_primary()                   # SIGKILL, as a machine dies
        print(cluster.wait_for_failover(timeout=30))   # "127.0.0.1:PORT", a master now
        primary.get("k")                         # the same client follows the new primary

Every server is a real `redis-server` child process (the binary `local_redis` uses; Sentinel
mode is `redis-server sentinel.conf --sentinel`) on a free loopback port, with its config,
data and log in one temporary directory that `stop()` removes. The primary and the replicas
share one password (`requirepass` and `masterauth`, so any of them can serve or follow) and
append-only persistence, as production runs them; the Sentinels monitor the primary under
`master_name` with a quorum of 2, notice a dead primary after `down_after_milliseconds` and
promote a replica.

Every wait is bounded and says what it waited for; a process that dies or a wait that runs
out raises `ClusterError` with the state last seen and the log tails of the processes
involved.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tierq.devkit.local_redis import redis_server_binary
from tierq.devkit.processes import ManagedProcess, free_port

T = TypeVar("T")

HOST = "127.0.0.1"
# Sentinels in the cluster, and how many must agree that the primary is down.
SENTINEL_COUNT = 3
QUORUM = 2
# How long start() may take: servers up, replicas in sync, sentinels aware of each other
# (they find each other through hello messages sent every 2 s).
START_TIMEOUT_SECONDS = 30.0
# Every probe of a server: short, so a dead or paused one does not stall a wait.
PROBE_TIMEOUT_SECONDS = 0.5
# How often a wait looks again.
POLL_INTERVAL_SECONDS = 0.1
# How much of a process's log an error shows.
LOG_TAIL_CHARS = 2_000
# How long a server may take to stop on SIGTERM before it is killed.
STOP_GRACE_SECONDS = 5.0


class ClusterError(RuntimeError):
    """Raised when a process of the cluster dies or the cluster does not reach a state in time;
    the message names the processes and shows their log tails."""


@dataclass
class SentinelCluster:
    """A primary, `replicas` replicas and three Sentinels; `stop()` ends all and removes their
    directory. Also a context manager (started on entry, stopped on exit)."""

    replicas: int = 1
    master_name: str = "tierq"
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    down_after_milliseconds: int = 1_000
    failover_timeout_milliseconds: int = 5_000
    binary: str = field(default_factory=redis_server_binary)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tierq-sent-")))
    servers: dict[int, ManagedProcess] = field(default_factory=dict)  # by port
    sentinel_processes: dict[int, ManagedProcess] = field(default_factory=dict)  # by port
    primary_port: int = 0
    killed: set[int] = field(default_factory=set)

    # --- what clients need -------------------------------------------------------------------

    @property
    def sentinels(self) -> list[str]:
        """The Sentinels as `host:port` (what TIERQ_REDIS_SENTINELS lists)."""
        return [f"{HOST}:{port}" for port in self.sentinel_processes]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The Sentinels as (host, port) pairs, as `redis.sentinel.Sentinel` takes them."""
        return [(HOST, port) for port in self.sentinel_processes]

    @property
    def primary(self) -> str:
        """The current primary as `host:port`, as the cluster last saw it."""
        return f"{HOST}:{self.primary_port}"

    def url(self, db: int = 0) -> str:
        """A `redis://` URL of the current primary with the cluster's password and `db` (a
        client that asks the Sentinels takes only the password and db from it)."""
        return f"redis://:{self.password}@{self.primary}/{db}"

    def server(self, port: int) -> redis.Redis:
        """A client of one data server (not through the Sentinels), with short timeouts."""
        return _probe_client(port, self.password)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SentinelCluster:
        """Start every process and wait until the replicas are in sync and each Sentinel knows
        the primary, its replicas and the other Sentinels."""
        if self.replicas < 1:
            raise ValueError("a failover needs at least one replica")
        try:
            self.primary_port = self._start_server("primary", replica_of=None)
            for n in range(1, self.replicas + 1):
                self._start_server(f"replica-{n}", replica_of=self.primary_port)
            self._wait_for_servers()
            self.wait_for_replicas_in_sync(self.replicas, timeout=START_TIMEOUT_SECONDS)
            for n in range(1, SENTINEL_COUNT + 1):
                self._start_sentinel(n)
            self._wait("every sentinel seeing the primary, its replicas and the other sentinels",
                       self._sentinels_agreed, timeout=START_TIMEOUT_SECONDS)  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process (Sentinels first, so none starts a failover meanwhile) and
        remove the directory."""
        for process in self.sentinel_processes.values():
            process.stop(STOP_GRACE_SECONDS)
        for port, process in sorted(self.servers.items(), key=lambda i: i[0] == self.primary_port):
            process.stop(STOP_GRACE_SECONDS)
            self.killed.add(port)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------

    def kill_primary(self) -> int:
        """SIGKILL the current primary (no shutdown, no last write to its replicas); returns
        its port."""
        port = self.primary_port
        process = self.servers[port]
        self.killed.add(port)
        process.signal(signal.SIGKILL)
        assert process.process is not None
        process.process.wait(STOP_GRACE_SECONDS)
        return port

    def wait_for_failover(self, timeout: float = 30.0) -> str:
        """Wait until every live Sentinel names a new primary and that server answers as a
        master; returns its `host:port` (and `primary_port` follows it)."""
        old = self.primary_port

        def new_primary() -> int | None:
            named = {self._named_primary(port) for port in self._live_sentinels()}
            if len(named) != 1:
                return None
            (port,) = named
            if port is None or port == old or self._role(port) != "master":
                return None
            return port

        self.primary_port = self._wait(
            f"the sentinels to promote a replica of {HOST}:{old}",
            new_primary,
            timeout=timeout,
        )
        return self.primary

    def wait_for_replicas_in_sync(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the current primary has `count` replicas online, each having confirmed
        the primary's latest write (so a `WAIT count` can succeed)."""

        def in_sync() -> bool:
            try:
                info = self.server(self.primary_port).info("replication")
            except redis.RedisError:
                return False
            offset = int(info.get("master_repl_offset", -1))
            online = [
                value
                for key, value in info.items()
                if key.startswith("slave") and isinstance(value, dict)
                and value.get("state") == "online" and int(value.get("offset", -1)) >= offset
            ]  # fmt: skip
            return len(online) >= count

        self._wait(f"{count} replica(s) of {self.primary} in sync", in_sync, timeout=timeout)

    def log_tails(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The last `chars` of every process's log, each under its name: for a failure's
        message."""
        processes = [*self.servers.values(), *self.sentinel_processes.values()]
        return "\n".join(_tail(process, chars) for process in processes)

    # --- starting ----------------------------------------------------------------------------

    def _start_server(self, role: str, replica_of: int | None) -> int:
        port = free_port()
        home = self.directory / f"{role}-{port}"
        home.mkdir()
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f'dir "{home}"',
            'logfile ""',
            f'requirepass "{self.password}"',
            f'masterauth "{self.password}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
        ]
        if replica_of is not None:
            lines.append(f"replicaof {HOST} {replica_of}")
        self.servers[port] = self._launch(f"redis {role} :{port}", home, lines, sentinel=False)
        return port

    def _start_sentinel(self, n: int) -> None:
        port = free_port()
        home = self.directory / f"sentinel-{n}-{port}"
        home.mkdir()
        name = self.master_name
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f'dir "{home}"',
            'logfile ""',
            f"sentinel monitor {name} {HOST} {self.primary_port} {QUORUM}",
            f'sentinel auth-pass {name} "{self.password}"',
            f"sentinel down-after-milliseconds {name} {self.down_after_milliseconds}",
            f"sentinel failover-timeout {name} {self.failover_timeout_milliseconds}",
            f"sentinel parallel-syncs {name} 1",
        ]
        process = self._launch(f"sentinel {n} :{port}", home, lines, sentinel=True)
        self.sentinel_processes[port] = process

    def _launch(self, name: str, home: Path, lines: list[str], *, sentinel: bool) -> ManagedProcess:
        config = home / ("sentinel.conf" if sentinel else "redis.conf")
        config.write_text("\n".join(lines) + "\n")  # a Sentinel rewrites its own file
        argv = [self.binary, str(config), *(["--sentinel"] if sentinel else [])]
        return ManagedProcess(name, argv, home / "output.log").start()

    def _wait_for_servers(self) -> None:
        def answering() -> bool:
            return all(_answers(self.server(port)) for port in self.servers)

        self._wait("every data server answering PING", answering, timeout=START_TIMEOUT_SECONDS)

    def _sentinels_agreed(self) -> bool:
        for port in self.sentinel_processes:
            master = _sentinel_master(port, self.master_name)
            if master is None or master["port"] != self.primary_port:
                return False
            down = master["is_sdown"] or master["is_odown"]
            others = int(master["num-other-sentinels"])
            known_replicas = int(master["num-slaves"])
            if down or others < SENTINEL_COUNT - 1 or known_replicas < self.replicas:
                return False
        return True

    # --- probing -----------------------------------------------------------------------------

    def _live_sentinels(self) -> list[int]:
        return [port for port, process in self.sentinel_processes.items() if process.alive()]

    def _named_primary(self, sentinel_port: int) -> int | None:
        client = _probe_client(sentinel_port)
        try:
            address = client.sentinel_get_master_addr_by_name(
                self.master_name, return_responses=True
            )
        except redis.RedisError:
            return None
        finally:
            client.close()
        return int(address[1]) if isinstance(address, tuple) else None

    def _role(self, port: int) -> str | None:
        client = self.server(port)
        try:
            role = client.role()
        except redis.RedisError:
            return None
        finally:
            client.close()
        return str(role[0]) if isinstance(role, list) and role else None

    def _wait(self, what: str, observe: Callable[[], T | None], *, timeout: float) -> T:
        """`observe()`'s first truthy value within `timeout` seconds; a `ClusterError` if a
        process dies unasked or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            value = observe()
            if value:
                return value
            dead = self._died_unasked()
            if dead:
                names = ", ".join(process.name for process in dead)
                tails = "\n".join(_tail(process, LOG_TAIL_CHARS) for process in dead)
                raise ClusterError(f"{names} exited while waiting for {what}:\n{tails}")
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"gave up waiting for {what} after {timeout}s; last seen: {value!r}\n"
                    f"{self.log_tails()}"
                )
            time.sleep(POLL_INTERVAL_SECONDS)

    def _died_unasked(self) -> list[ManagedProcess]:
        servers = [p for port, p in self.servers.items() if port not in self.killed]
        return [p for p in [*servers, *self.sentinel_processes.values()] if not p.alive()]


def _probe_client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host=HOST,
        port=port,
        password=password,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _sentinel_master(port: int, name: str) -> dict[str, Any] | None:
    """What the Sentinel on `port` knows of master `name` (`SENTINEL MASTER`, parsed by
    redis-py: numbers as ints, `is_sdown` and `is_odown` from the flags), None if it does not
    answer."""
    client = _probe_client(port)
    try:
        reply = client.sentinel_master(name, return_responses=True)
    except redis.RedisError:
        return None
    finally:
        client.close()
    return reply if isinstance(reply, dict) else None


def _tail(process: ManagedProcess, chars: int) -> str:
    state = "running" if process.alive() else f"exited ({_exit_status(process)})"
    return f"--- {process.name}, {state}, log tail:\n{process.log_text()[-chars:]}"


def _exit_status(process: ManagedProcess) -> str:
    code = process.process.returncode if process.process is not None else None
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return f"status {code}"
