"""Helpers shared by the tests, each written once here: waiting (`eventually`), job requests,
the simulator's handle, a child process's environment and the `tierq` command, the gateway's
HTTP face. Fixtures that start or clean up something live in conftest.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import redis
import redis.asyncio

from tierq.core.dispatch import Backlogs
from tierq.core.keys import Keys
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.devkit.processes import ManagedProcess, log_events, settings_for
from tierq.producers.gateway.auth import KeyStore

T = TypeVar("T")

TEST_REDIS_URL = os.environ.get("TIERQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# A recognisable fake key: the log tests look for it in every worker log.
API_KEY = f"sk-test-{uuid.uuid4().hex}"
# Short enough that retry paths finish in seconds, long enough for a loaded 2-core machine.
WORKER_OVERRIDES = {
    "TIERQ_REQUEST_TIMEOUT_SECONDS": "3",
    "TIERQ_RETRY__MAX_ATTEMPTS": "4",
    "TIERQ_RETRY__BACKOFF_MAX_SECONDS": "2",
    "TIERQ_LOG_FORMAT": "json",
    "TIERQ_LOG_LEVEL": "INFO",
}
# How much of the last value seen a failed `eventually` shows.
EVENTUALLY_SHOWN_CHARS = 1_000


# --- waiting -----------------------------------------------------------------------------------


def eventually(
    observe: Callable[[], T],
    *,
    what: str,
    timeout: float,
    until: Callable[[T], object] = bool,
    interval: float = 0.05,
) -> T:
    """Call `observe` every `interval` seconds until its value holds, and return that value.

    The value holds when `until(value)` is true; by default, when the value itself is truthy.
    So a test waits for something and uses it at once:

        record = eventually(lambda: client.get(job_id), until=lambda r: r.status.is_final,
                            what="the job finishing", timeout=30)

    Bounded: if no value holds within `timeout` seconds (`observe` is called once more at the
    deadline), the test fails with an AssertionError naming `what` it waited for and showing
    the last value seen. Exceptions from `observe` are not caught: they fail the test at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = observe()
        if until(value):
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            shown = repr(value)
            if len(shown) > EVENTUALLY_SHOWN_CHARS:
                shown = f"{shown[:EVENTUALLY_SHOWN_CHARS]}..."
            raise AssertionError(f"gave up waiting for {what} after {timeout}s; last seen: {shown}")
        time.sleep(min(interval, remaining))


def logged(process: ManagedProcess, event: str, **fields: object) -> list[dict[str, object]]:
    """`process`'s JSON log lines of `event` whose fields hold these values (`job_id=...`).

    The evidence a test waits for before it asserts that something did not happen: a worker
    logs `job.already_finished` when a copy of a finished (or cancelled) job reaches it and is
    dropped, `job.stale_message` for a superseded copy, `job.duplicate_delivery` for a copy put
    off while another runs, `job.result_discarded` for an answer that came too late.
    """
    return [
        line
        for line in log_events(process.log_path)
        if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
    ]


# --- jobs --------------------------------------------------------------------------------------


def nonce() -> str:
    """A unique marker to put in a prompt, to find that job's calls in the simulator."""
    return uuid.uuid4().hex[:12]


def user(text: str) -> list[dict[str, Any]]:
    """The messages of a conversation of one user message."""
    return [{"role": "user", "content": text}]


def job(text: str | None = None, **params: Any) -> dict[str, Any]:
    """A gpt-4o-mini job request asking `text` (a fresh nonce by default): what `submit_many`
    and `POST /v1/jobs` take."""
    return {"model": "gpt-4o-mini", "messages": user(text or nonce()), **params}


def slow_jobs(marker: str, count: int, latency_ms: int) -> list[dict[str, Any]]:
    """`count` jobs marked `marker`, each answered by the simulator after `latency_ms`."""
    return [job(f"{marker} {i} [sim latency_ms={latency_ms}]") for i in range(count)]


def all_running(records: Sequence[JobResult | None]) -> bool:
    """Whether every one of these job records (`client.get_many`) is running."""
    return all(record is not None and record.status is JobStatus.RUNNING for record in records)


# --- the simulator -----------------------------------------------------------------------------


class Simulator:
    """The running simulator: its base URL and its recorded requests."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.root = base_url.removesuffix("/v1")
        self.http = httpx2.Client(base_url=self.root, timeout=10)

    def requests_with(self, marker: str) -> list[dict[str, Any]]:
        """Recorded calls whose body mentions `marker`, oldest first."""
        data = self.http.get("/sim/requests").json()["data"]
        return [entry for entry in data if marker in str(entry["body"])]

    def configure(self, **fields: Any) -> None:
        self.http.patch("/sim/config", json=fields).raise_for_status()


# The factories conftest.py's fixtures hand a test, each named for its fixture.
Fleet = Callable[..., tuple[list[ManagedProcess], Settings]]  # start_fleet
WorkerFactory = Callable[..., tuple[ManagedProcess, Settings]]  # start_worker_with
GatewayFactory = Callable[..., tuple[str, Settings]]  # start_gateway_with
SimulatorFactory = Callable[..., Simulator]  # start_simulator_with
TenantKey = Callable[..., tuple[str, str]]  # tenant_key


# --- processes ---------------------------------------------------------------------------------


def clean_environment() -> dict[str, str]:
    """This process's environment without tierq's or the SDK's settings from the shell."""
    return {
        key: value for key, value in os.environ.items() if not key.startswith(("TIERQ_", "OPENAI_"))
    }


def env_of(settings: Settings) -> dict[str, str]:
    """The variables that point a child process at the Redis, queues and job records of
    `settings` (to add to an environment such as the `worker_env` fixture)."""
    return {
        "TIERQ_REDIS_URL": settings.redis_url.get_secret_value(),
        "TIERQ_QUEUE_PREFIX": settings.queue_prefix,
        "TIERQ_KEY_PREFIX": settings.key_prefix,
    }


def run_tierq(
    env: Mapping[str, str], *args: str | Path, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`tierq ARGS`, run as a user runs it: a process of its own, its output and exit status
    captured, stopped after `timeout` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "tierq", *map(str, args)],
        env=dict(env), input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# --- the gateway -------------------------------------------------------------------------------


def unique_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def create_api_key(settings: Settings, tenant: str) -> str:
    """A fresh gateway key for `tenant`, made as `tierq keys create` makes it."""

    async def create() -> str:
        client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            secret, _ = await KeyStore(client, Keys(settings.key_prefix)).create(tenant)
            return secret
        finally:
            await client.aclose()

    return asyncio.run(create())


def key_id_of(listed: str, key: str) -> str:
    """The id of `key` in the output of `tierq keys list --json` (one JSON array), found by the
    key's hint, its first seven characters: the key itself is never shown again."""
    return next(str(row["key_id"]) for row in json.loads(listed) if row["hint"] == key[:7])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def gateway_client(root: str, key: str | None = None, *, timeout: float = 30) -> httpx2.Client:
    """An HTTP client of the gateway at `root`, sending `key` as its bearer token if given."""
    return httpx2.Client(base_url=root, headers=bearer(key) if key else {}, timeout=timeout)


def refused_with(
    response: httpx2.Response, status: int, param: str | None = None
) -> dict[str, Any]:
    """The error of a gateway answer, checked: it has `status`, the API's error shape
    (`{"error": {"message", "type", "param", "code"}}`, with a message) and, if given, names
    `param`."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def in_flight(settings: Settings, tenant: str) -> int:
    """How many jobs `tenant` has in flight, as its gateway quota counts them."""
    with redis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
        return int(client.zcard(Keys(settings.key_prefix).tenant_in_flight(tenant)))


__all__ = [
    "API_KEY",
    "TEST_REDIS_URL",
    "WORKER_OVERRIDES",
    "Fleet",
    "GatewayFactory",
    "Simulator",
    "SimulatorFactory",
    "TenantKey",
    "WorkerFactory",
    "all_running",
    "bearer",
    "clean_environment",
    "create_api_key",
    "env_of",
    "eventually",
    "gateway_client",
    "in_flight",
    "job",
    "key_id_of",
    "logged",
    "nonce",
    "refused_with",
    "run_tierq",
    "settings_for",
    "slow_jobs",
    "unique_tenant",
    "user",
]


def waiting_jobs(client: redis.Redis, settings: Settings, tier: str) -> int:
    """Jobs of `tier` waiting to run: on its Celery queue and, with fair dispatch (the
    default), in its backlogs until a worker's dispatcher moves them onto it."""
    backlog = Backlogs(client, settings).waiting(tier)
    return int(client.llen(settings.queue_for(tier))) + sum(
        sum(tenants.values()) for tenants in backlog.values()
    )


def without_fair_dispatch(settings: Settings) -> Settings:
    """`settings` with every tier's submissions published straight to its queue, for a test
    of the publish path itself."""
    tiers = {
        name: tier.model_copy(update={"fair_dispatch": False})
        for name, tier in settings.tiers.items()
    }
    return settings.model_copy(update={"tiers": tiers})
