"""Real parts for the tests: Redis, the simulator over HTTP, and Celery worker processes.

Redis is the one at TIERQ_TEST_REDIS_URL (default: database 15 of the local server), or an
embedded server when none answers. The database is flushed once per session, not per test:
flushing under live workers would also delete kombu's queue bindings, and publishes to an
unbound exchange are dropped. Tests stay independent by unique job ids and unique prompt
nonces instead; a test that needs a worker configured differently starts its own with its own
queue and key prefixes (`start_worker`).

Fixtures that start processes stop them by PID at teardown; the factories (`start_fleet`,
`start_gateway_with`, `start_simulator_with`) stop everything they started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import redis

from tests.support import (
    API_KEY,
    TEST_REDIS_URL,
    WORKER_OVERRIDES,
    Fleet,
    GatewayFactory,
    Simulator,
    SimulatorFactory,
    WorkerFactory,
    clean_environment,
    create_api_key,
    nonce,
    settings_for,
    unique_tenant,
)
from tierq.core.settings import Settings
from tierq.devkit.local_redis import EmbeddedRedis, ensure_redis
from tierq.devkit.processes import (
    ManagedProcess,
    start_gateway,
    start_simulator,
    start_worker,
    worker_ready,
)
from tierq.producers.client import TierqClient


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, embedded = ensure_redis(TEST_REDIS_URL)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url
    if embedded is not None:
        embedded.stop()


@pytest.fixture(scope="session")
def simulator(logs_dir: Path) -> Iterator[Simulator]:
    process, base_url = start_simulator(logs_dir / "simulator.log", args=["--seed", "1"])
    sim = Simulator(base_url)
    yield sim
    sim.http.close()
    process.stop()


@pytest.fixture(scope="session")
def worker_env(redis_url: str, simulator: Simulator) -> dict[str, str]:
    return {
        **clean_environment(),
        **WORKER_OVERRIDES,
        "TIERQ_REDIS_URL": redis_url,
        "OPENAI_BASE_URL": simulator.base_url,
        "OPENAI_API_KEY": API_KEY,
    }


@pytest.fixture(scope="session")
def workers(worker_env: dict[str, str], logs_dir: Path) -> Iterator[dict[str, ManagedProcess]]:
    """One worker process per default tier, shared by the session."""
    tiers = list(settings_for(worker_env).tiers)
    started = {
        tier: start_worker(
            tier, logs_dir / f"worker-{tier}.log", worker_env, concurrency=20, wait=False
        )
        for tier in tiers
    }
    try:
        for process in started.values():
            process.wait_until(partial(worker_ready, process))
        yield started
    finally:
        for process in started.values():
            process.stop()


@pytest.fixture(scope="session")
def gateway_url(
    worker_env: dict[str, str], logs_dir: Path, workers: dict[str, ManagedProcess]
) -> Iterator[str]:
    """A `tierq gateway` process in front of the session's workers; its root URL."""
    process, root = start_gateway(logs_dir / "gateway.log", worker_env)
    yield root
    process.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A connection to the tests' Redis (replies as bytes), closed after the test."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A Redis server of the test's own, to stop, cut or pause without touching the other
    tests; it persists every write (append-only), so it restarts with its data."""
    server = EmbeddedRedis(appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def tenant_key(settings: Settings) -> Callable[[str | None], tuple[str, str]]:
    """Factory: (tenant, API key); a fresh tenant unless one is named."""

    def make(tenant: str | None = None) -> tuple[str, str]:
        tenant = tenant or unique_tenant()
        return tenant, create_api_key(settings, tenant)

    return make


@pytest.fixture
def settings(worker_env: dict[str, str]) -> Settings:
    return settings_for(worker_env)


@pytest.fixture
def client(settings: Settings, workers: dict[str, ManagedProcess]) -> Iterator[TierqClient]:
    with TierqClient(settings) as tierq:
        yield tierq


@pytest.fixture
def start_fleet(worker_env: dict[str, str], logs_dir: Path) -> Iterator[Fleet]:
    """Factory: worker processes sharing their own settings, isolated by their own queue and
    key prefixes; `base_url` points them at another simulator."""
    started: list[ManagedProcess] = []

    def start(
        tier: str = "fast",
        *,
        workers: int = 1,
        base_url: str | None = None,
        concurrency: int | None = None,
        **overrides: str,
    ) -> tuple[list[ManagedProcess], Settings]:
        isolation = nonce()
        env = {
            **worker_env,
            "TIERQ_QUEUE_PREFIX": f"tierq-{isolation}.",
            "TIERQ_KEY_PREFIX": f"tierq-{isolation}:",
            **({"OPENAI_BASE_URL": base_url} if base_url else {}),
            **overrides,
        }
        fleet = [
            start_worker(
                tier,
                logs_dir / f"worker-{tier}-{isolation}-{n}.log",
                env,
                concurrency=concurrency,
                wait=False,
            )
            for n in range(workers)
        ]
        started.extend(fleet)
        for process in fleet:
            process.wait_until(partial(worker_ready, process))
        return fleet, settings_for(env)

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_worker_with(start_fleet: Fleet) -> WorkerFactory:
    """Factory: one worker with its own settings (see `start_fleet`)."""

    def start(tier: str = "fast", **overrides: str) -> tuple[ManagedProcess, Settings]:
        fleet, settings = start_fleet(tier, **overrides)
        return fleet[0], settings

    return start


@pytest.fixture
def start_gateway_with(worker_env: dict[str, str], logs_dir: Path) -> Iterator[GatewayFactory]:
    """Factory: a `tierq gateway` process of its own, its environment the workers' with
    `overrides` (e.g. its own Redis or key prefix); its root URL and the settings it reads."""
    started: list[ManagedProcess] = []

    def start(**overrides: str) -> tuple[str, Settings]:
        env = {**worker_env, **overrides}
        process, root = start_gateway(logs_dir / f"gateway-{nonce()}.log", env)
        started.append(process)
        return root, settings_for(env)

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_simulator_with(logs_dir: Path) -> Iterator[SimulatorFactory]:
    """Factory: a simulator of its own, started with `args` (e.g. "--rpm", "600")."""
    started: list[tuple[ManagedProcess, Simulator]] = []

    def start(*args: str) -> Simulator:
        process, base_url = start_simulator(logs_dir / f"simulator-{nonce()}.log", args=args)
        simulator = Simulator(base_url)
        started.append((process, simulator))
        return simulator

    yield start
    for process, simulator in started:
        simulator.http.close()
        process.stop()
