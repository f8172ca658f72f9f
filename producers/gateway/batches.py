"""The OpenAI Batches API's routes: create, retrieve, list and cancel.

`POST /v1/batches` checks its parameters and the input file, stores the batch `validating` and
answers at once, as the API does; cancelling only marks it `cancelling`. Everything after
happens in the finalizer (batch_finalizer.py), re-exported here so the app finds the router and
the background task that serves it in one place. The shapes are in batch_models.py, the Redis
layout in batch_store.py.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError

from tierq.producers.batchfile import ENDPOINT
from tierq.producers.gateway.batch_finalizer import finalizer
from tierq.producers.gateway.batch_models import (
    COMPLETION_WINDOW_SECONDS,
    Batch,
    BatchCreate,
    BatchList,
    BatchStatus,
)
from tierq.producers.gateway.batch_store import BatchStore
from tierq.producers.gateway.deps import GatewayState, Tenant
from tierq.producers.gateway.errors import APIError
from tierq.producers.gateway.file_store import FileStore

__all__ = ["finalizer", "router"]

router = APIRouter(prefix="/v1", tags=["batches"])
log = structlog.get_logger("tierq.gateway")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid parameters (the API's error shape)"},
    401: {"description": "Missing or unknown API key"},
    404: {"description": "No such batch or file (another tenant's answer the same)"},
}
_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    507: {"description": "Redis is nearly full (TIERQ_REDIS_MEMORY_GUARD_FRACTION)"},
}
BatchId = Annotated[str, Path(description="A batch id, e.g. batch_8f3c...")]
After = Annotated[str | None, Query(description="A batch id: list those created before it.")]
# Read as text and checked by hand, so a bad one answers 400 as the API does (not 422).
Limit = Annotated[str | None, Query(description="1 to 100 (default 20).")]


def _bad(message: str, param: str | None) -> APIError:
    return APIError(400, message, param=param, code="invalid_request")


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` written in place: the document is hand-attached
    (the body is validated by hand), so nothing would resolve `#/$defs/...` references."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {name: resolve(value) for name, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _create_params(data: Any) -> BatchCreate:
    """Parameters checked by hand, so a bad one answers 400 as the API does (not 422)."""
    if not isinstance(data, dict):
        raise _bad("The request body must be a JSON object.", None)
    try:
        return BatchCreate.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "missing":
            raise _bad(f"Missing required parameter: '{param}'.", param) from None
        if first["type"] == "extra_forbidden":
            raise _bad(f"Unrecognized request argument supplied: {param}", param) from None
        if param == "endpoint":
            message = f"This gateway runs batches for {ENDPOINT} only."
        else:
            message = f"Invalid value for '{param}': {first['msg']}."
        raise _bad(message, param) from None


@router.post(
    "/batches",
    summary="Create a batch from an uploaded input file",
    responses=_CREATE_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(BatchCreate.model_json_schema())}},
        }
    },
)
async def create_batch(request: Request, gateway: GatewayState, tenant: Tenant) -> Batch:
    """Answers `validating` at once; the finalizer validates and submits in the background."""
    try:
        data = await request.json()
    except ValueError:
        raise APIError(400, "The request body is not valid JSON.", code="invalid_json") from None
    params = _create_params(data)
    files = FileStore.of(gateway)
    input_file = await files.get(tenant, params.input_file_id)
    if input_file.purpose != "batch":
        raise _bad(
            f"File {input_file.id!r} has purpose {input_file.purpose!r}, not 'batch'.",
            "input_file_id",
        )
    now = int(time.time())
    batch = Batch(
        id=f"batch_{uuid.uuid4().hex}",
        endpoint=params.endpoint,
        input_file_id=input_file.id,
        completion_window=params.completion_window,
        status=BatchStatus.VALIDATING,
        created_at=now,
        expires_at=now + COMPLETION_WINDOW_SECONDS,
        metadata=params.metadata,
    )
    settings = gateway.settings.gateway
    expiry = params.output_expires_after
    store = BatchStore.of(gateway)
    # Nothing is written while Redis is nearly full (507): a batch adds its requests and jobs.
    await gateway.memory_guard.check()
    # A resumed batch reads its input again: keep it for the whole window. First, so that a
    # failure here leaves no batch behind (a client retrying a 5xx would otherwise pay twice).
    await files.keep_at_least(tenant, input_file.id, COMPLETION_WINDOW_SECONDS + 3_600)
    await store.create(tenant, batch, expiry.seconds if expiry else settings.file_ttl_seconds)
    log.info("batch.created", batch_id=batch.id, tenant=tenant, input_file_id=input_file.id)
    return batch


@router.get("/batches/{batch_id}", summary="Read a batch", responses=_ERRORS)
async def retrieve_batch(batch_id: BatchId, gateway: GatewayState, tenant: Tenant) -> Batch:
    return await BatchStore.of(gateway).get(tenant, batch_id)


@router.get("/batches", summary="List the caller's batches, newest first", responses=_ERRORS)
async def list_batches(
    gateway: GatewayState,
    tenant: Tenant,
    after: After = None,
    limit: Limit = None,
) -> BatchList:
    count = 20
    if limit is not None:
        if not re.fullmatch(r"[0-9]{1,3}", limit.strip()) or not 1 <= int(limit) <= 100:
            raise _bad("limit must be an integer from 1 to 100.", "limit")
        count = int(limit)
    return await BatchStore.of(gateway).page(tenant, after, count)


@router.post(
    "/batches/{batch_id}/cancel",
    summary="Cancel a batch",
    responses={**_ERRORS, 409: {"description": "The batch is past running (or kept changing)"}},
)
async def cancel_batch(batch_id: BatchId, gateway: GatewayState, tenant: Tenant) -> Batch:
    """`cancelling` at once; the finalizer cancels the jobs not started, lets those in flight
    finish, and ends it `cancelled` once none runs, with every answer that came in its output
    (as the OpenAI API does). Cancelling a cancelling or cancelled batch changes nothing; a
    batch already past running (finalizing, completed, failed, expired) answers 409."""
    store = BatchStore.of(gateway)
    for _ in range(5):
        batch = await store.get(tenant, batch_id)
        if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            return batch
        if batch.status not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
            raise APIError(
                409,
                f"Cannot cancel a batch with status '{batch.status.value}'.",
                code="batch_not_cancellable",
            )
        cancelling = batch.model_copy(
            update={"status": BatchStatus.CANCELLING, "cancelling_at": int(time.time())}
        )
        if await store.transition(cancelling, batch.status):
            log.info("batch.cancelling", batch_id=batch_id, tenant=tenant)
            return cancelling
    raise APIError(409, "The batch kept changing while being cancelled; try again.")
