"""What every route shares: the gateway's state, and the caller's tenant from its bearer key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tierq.core.errors import JobNotFoundError
from tierq.core.keys import Keys
from tierq.core.memory_guard import AsyncMemoryGuard
from tierq.core.results import JobResult
from tierq.core.settings import Settings
from tierq.producers.aio import AsyncTierqClient
from tierq.producers.gateway.auth import KeyStore
from tierq.producers.gateway.errors import APIError, broker_unavailable, not_found
from tierq.producers.gateway.held_waits import HeldWaits
from tierq.producers.gateway.queue_wait import QueueWaits
from tierq.producers.gateway.quota import TenantQuota
from tierq.producers.gateway.upload_slots import UploadSlots
from tierq.producers.gateway.waiting import Waiters


@dataclass
class Gateway:
    """Built once per process in the app's lifespan (`Gateway.open`); routes reach it through
    `state`."""

    settings: Settings
    client: AsyncTierqClient
    keys: Keys
    key_store: KeyStore
    quota: TenantQuota
    waiters: Waiters
    uploads: UploadSlots
    memory_guard: AsyncMemoryGuard
    queue_waits: QueueWaits
    held: HeldWaits

    @classmethod
    def open(cls, settings: Settings) -> Gateway:
        """A gateway's state on one Redis connection pool (opened lazily, on first use);
        `aclose()` closes it."""
        client = AsyncTierqClient(settings, max_connections=settings.gateway.redis_max_connections)
        keys = Keys(settings.key_prefix)
        return cls(
            settings=settings,
            client=client,
            keys=keys,
            key_store=KeyStore(client.redis, keys),
            quota=TenantQuota(
                client.redis,
                keys,
                settings.gateway.tenant_max_in_flight,
                settings.result_ttl_seconds,
            ),
            waiters=Waiters(settings.gateway.max_waiting_per_tenant),
            uploads=UploadSlots(settings.gateway.max_concurrent_uploads),
            memory_guard=AsyncMemoryGuard(client.redis, settings.redis_memory_guard_fraction),
            queue_waits=QueueWaits(client.redis, settings),
            held=HeldWaits(client, keys),
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def state(request: Request) -> Gateway:
    gateway = request.app.state.gateway
    assert isinstance(gateway, Gateway)
    return gateway


bearer = HTTPBearer(auto_error=False, description="A tierq API key: `tierq keys create TENANT`.")


MISSING_KEY = "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
WRONG_KEY = "Incorrect API key provided."


async def tenant_of(gateway: Gateway, authorization: str | None) -> str:
    """The tenant of a live key in an Authorization header; `APIError` 401 otherwise."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise APIError(401, MISSING_KEY, code="invalid_api_key")
    record = await gateway.key_store.authenticate(secret.strip())
    if record is None:
        raise APIError(401, WRONG_KEY, code="invalid_api_key")
    return record.tenant


class RequireKey:
    """Every /v1 request is authenticated before the app reads its body, so a request without
    a live key hears 401 whatever it sent (FastAPI parses a body before it runs a route's
    dependencies). The tenant goes to the request's state for the `Tenant` dependency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        gateway = scope["app"].state.gateway
        try:
            owner = await tenant_of(gateway, Headers(scope=scope).get("authorization"))
        except APIError as refused:
            await refused.response()(scope, receive, send)
            return
        except redis.RedisError:
            await broker_unavailable().response()(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = owner
        await self.app(scope, receive, send)


async def tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The tenant of the caller's key (found by `RequireKey`); declared with the bearer
    scheme so the OpenAPI document says how to authenticate."""
    owner = getattr(request.state, "tenant", None)
    if isinstance(owner, str):
        return owner
    header = f"Bearer {credentials.credentials}" if credentials is not None else None
    return await tenant_of(state(request), header)


GatewayState = Annotated[Gateway, Depends(state)]
Tenant = Annotated[str, Depends(tenant)]


async def owned_job(gateway: Gateway, tenant: str, job_id: str) -> JobResult:
    """The job's record if `tenant` owns it; 404 for unknown and for another tenant's."""
    try:
        record = await gateway.client.get(job_id)
    except JobNotFoundError:
        raise not_found("job", job_id) from None
    if record.tenant != tenant:
        raise not_found("job", job_id)
    return record
