"""tierq's own job API: submit, read (with long-polling), cancel."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tierq.core.errors import IdempotencyConflictError, InvalidJobError, JobWaitTimeout
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.producers.gateway.deps import Gateway, GatewayState, Tenant, owned_job
from tierq.producers.gateway.errors import APIError, error_responses, from_invalid_job
from tierq.producers.gateway.job_models import JobSubmission
from tierq.producers.gateway.waiting import ClientGone, unless_gone
from tierq.producers.submission import prepare

router = APIRouter(prefix="/v1", tags=["jobs"], responses=error_responses(401, 422, 503))

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="The same key and request within the result TTL return the first job.",
    ),
]


class JobAccepted(BaseModel):
    id: str
    object: Literal["tierq.job"] = "tierq.job"
    status: JobStatus
    status_url: str


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobAccepted]


class JobBatch(BaseModel):
    """Many jobs in one request; all are validated first, so one bad job enqueues none."""

    model_config = ConfigDict(extra="forbid")

    jobs: Annotated[list[JobSubmission], Field(min_length=1)]
    # One key (or null) per job, as the Idempotency-Key header is for one job.
    idempotency_keys: list[Annotated[str, Field(min_length=1, max_length=255)] | None] | None = None


def tenant_scoped_key(tenant: str, key: str | None) -> str | None:
    # Keys are per tenant: two tenants using "order-42" get two jobs.
    return None if key is None else f"tenant:{tenant}:{key}"


async def _submit(
    gateway: Gateway, tenant: str, jobs: list[JobSubmission], keys: list[str | None] | None
) -> list[JobAccepted]:
    await gateway.memory_guard.check()  # 507 while Redis is nearly full: nothing enqueued
    scoped = [tenant_scoped_key(tenant, key) for key in keys] if keys is not None else None
    async with await gateway.quota.reserve(tenant, len(jobs)) as reservation:
        job_ids = await gateway.client.submit_many(
            [job.request() for job in jobs],
            scoped,
            tenant=tenant,
            labels=[job.labels for job in jobs],
            context_overflow=[job.context_overflow for job in jobs],
            priority=[job.priority for job in jobs],
            deadline=[job.deadline for job in jobs],
        )
        await reservation.fill(job_ids)
    statuses = await gateway.client.statuses(job_ids)
    return [
        JobAccepted(id=job_id, status=status or JobStatus.QUEUED, status_url=f"/v1/jobs/{job_id}")
        for job_id, status in zip(job_ids, statuses, strict=True)
    ]


@router.post(
    "/jobs",
    status_code=202,
    summary="Submit one job",
    responses=error_responses(409, 413, 422, 429, 507),
)
async def submit_job(
    job: JobSubmission,
    gateway: GatewayState,
    tenant: Tenant,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """Validate and enqueue a Chat Completions job; 202 with its id as soon as it is queued.

    The body is the API's request; tierq's own fields (`labels`) go in a `tierq` object."""
    accepted = (await _submit(gateway, tenant, [job], [idempotency_key]))[0]
    response.headers["Location"] = accepted.status_url
    return accepted


@router.post(
    "/jobs:batch",
    status_code=202,
    summary="Submit many jobs",
    responses=error_responses(409, 413, 422, 429, 507),
)
async def submit_jobs(batch: JobBatch, gateway: GatewayState, tenant: Tenant) -> JobList:
    limit = gateway.settings.gateway.max_jobs_per_request
    if len(batch.jobs) > limit:
        raise APIError(
            413,
            f"{len(batch.jobs)} jobs in one request, over the limit of {limit} "
            "(TIERQ_GATEWAY__MAX_JOBS_PER_REQUEST)",
            param="jobs",
            code="too_many_jobs",
        )
    keys = batch.idempotency_keys
    if keys is not None and len(keys) != len(batch.jobs):
        raise APIError(
            422, "idempotency_keys must hold one key (or null) per job", param="idempotency_keys"
        )
    try:
        return JobList(data=await _submit(gateway, tenant, batch.jobs, keys))
    except InvalidJobError as refused:
        raise _naming_the_job(gateway.settings, batch.jobs, refused) from None


def _naming_the_job(
    settings: Settings, jobs: list[JobSubmission], refused: InvalidJobError
) -> InvalidJobError | APIError:
    """The refusal of a batch, naming the job (`jobs.3.temperature`) whose model or tier rules
    refused it. `submit_many` stops at the first job that breaks one without saying which, so
    the jobs are checked again in order until it is found: a cost paid only by a refused
    batch, never by one that is accepted."""
    if isinstance(refused, IdempotencyConflictError):
        return refused  # about a key, not a job's parameters
    for index, job in enumerate(jobs):
        try:
            prepare(settings, job.request())
        except InvalidJobError as found:
            return from_invalid_job(found, at=f"jobs.{index}")
    return refused


@router.get(
    "/jobs/{job_id}",
    summary="Read a job; optionally wait for it to finish",
    responses=error_responses(404, 422, 429),
)
async def get_job(
    job_id: str,
    request: Request,
    gateway: GatewayState,
    tenant: Tenant,
    wait: Annotated[
        float,
        Query(ge=0, le=600, description="Seconds to wait for the job to finish (capped)."),
    ] = 0,
) -> JobResult:
    """The job's record; with `wait`, answers when the job finishes or the wait runs out."""
    record = await owned_job(gateway, tenant, job_id)
    wait = min(wait, gateway.settings.gateway.max_wait_seconds)
    if record.status.is_final or wait <= 0:
        return record
    with gateway.waiters.slot(tenant):
        try:
            return await unless_gone(request, gateway.held.wait(job_id, timeout=wait))
        except (JobWaitTimeout, ClientGone):
            return await owned_job(gateway, tenant, job_id)


@router.delete("/jobs/{job_id}", summary="Cancel a job", responses=error_responses(404))
async def cancel_job(job_id: str, gateway: GatewayState, tenant: Tenant) -> JobResult:
    """A queued job never runs; a running one's answer is discarded. A finished job is left."""
    await owned_job(gateway, tenant, job_id)
    return await gateway.client.cancel(job_id)
