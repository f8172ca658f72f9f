"""What every route shares: the gateway's state, and the caller's tenant from its bearer key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from producers.aio import AsyncTierqClient
from producers.gateway.auth import KeyStore
from producers.gateway.errors import APIError, not_found
from producers.gateway.quota import TenantQuota
from worker.errors import JobNotFoundError
from worker.keys import Keys
from worker.results import JobResult
from worker.settings import Settings


@dataclass
class Gateway:
    """Built once per process in the app's lifespan; routes reach it through `state`."""

    settings: Settings
    client: AsyncTierqClient
    keys: Keys
    key_store: KeyStore
    quota: TenantQuota


def state(request: Request) -> Gateway:
    gateway = request.app.state.gateway
    assert isinstance(gateway, Gateway)
    return gateway


bearer = HTTPBearer(auto_error=False, description="A tierq API key: `tierq keys create TENANT`.")


async def tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The tenant of the caller's key; 401 in the API's words for a missing or dead key."""
    if credentials is None:
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="invalid_api_key",
        )
    record = await state(request).key_store.authenticate(credentials.credentials)
    if record is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return record.tenant


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
