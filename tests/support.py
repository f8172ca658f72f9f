"""Helpers shared by the tests: the simulator's handle, nonces, a child's environment."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import httpx2
import redis.asyncio

from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.devkit.processes import settings_for
from tierq.producers.gateway.auth import KeyStore

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


def nonce() -> str:
    """A unique marker to put in a prompt, to find that job's calls in the simulator."""
    return uuid.uuid4().hex[:12]


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


def unique_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def clean_environment() -> dict[str, str]:
    """This process's environment without tierq's or the SDK's settings from the shell."""
    return {
        key: value for key, value in os.environ.items() if not key.startswith(("TIERQ_", "OPENAI_"))
    }


__all__ = [
    "API_KEY",
    "TEST_REDIS_URL",
    "WORKER_OVERRIDES",
    "Simulator",
    "clean_environment",
    "create_api_key",
    "nonce",
    "settings_for",
    "unique_tenant",
]
