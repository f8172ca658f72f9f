"""POST /v1/chat/completions: the API's own route, answered by a tierq job.

An `openai` client pointed at the gateway (`base_url` the gateway root + `/v1`, `api_key` a
tierq key) calls it unchanged. The body becomes a job on its tier, validated by the same
contract and run under the same shared limits, retries and accounting as any other; the
connection is held until the job ends, and the answer is the job's `ChatCompletion` (or, with
`stream=true`, its deltas as the API's chunks: chat_stream.py). Every answer about a job
carries its id in `Tierq-Job-Id`; `GET /v1/jobs/{id}` reads its record (usage, cost, attempts).

Holding, and the statuses a caller hears:

- Refused before anything is enqueued: 400 in the API's error shape, `param` naming the field
  (the API's status for `invalid_request_error`, where the job API says 422); 409 for an
  `Idempotency-Key` reused for another request; 413 over a size limit; 429 with `Retry-After`
  when the tenant's jobs in flight (or its open waits) are at their quota, or when the tier's
  expected queue wait is past `TIERQ_GATEWAY__MAX_QUEUE_WAIT_SECONDS` (queue_wait.py), which
  the SDK's own retry waits out; 507 while Redis is nearly full. An upstream 429 never
  reaches the caller: the workers wait it out.
- The job fails: the provider's status and error body (failures.py), `x-should-retry: false`.
- The hold lasts at most `TIERQ_GATEWAY__MAX_WAIT_SECONDS`, for a streamed answer until its
  first delta. Past it: 504 `hold_expired`. A job not yet started is then cancelled (nobody
  would collect it) unless the request carried an `Idempotency-Key`, whose retry picks the
  same job up again; the header `x-should-retry` tells the SDK whether retrying is safe.
- The client leaves before its job started: the job is cancelled, and never reaches the API.
  After it started, the job finishes and is recorded: its call is paid for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from tierq.core.contract import JobRequest, parse_job_request
from tierq.core.errors import InvalidJobError
from tierq.core.jobcontrol import JobControl
from tierq.core.jobstore import JobStore
from tierq.core.results import ChatCompletion, JobResult, JobStatus
from tierq.core.tiers import route
from tierq.producers.gateway.chat_stream import Chunks, Finished, answer_stream, job_events
from tierq.producers.gateway.deps import Gateway, GatewayState, Tenant
from tierq.producers.gateway.errors import (
    FASTAPI_BODY_ERROR,
    APIError,
    ErrorResponse,
    error_responses,
    from_invalid_job,
)
from tierq.producers.gateway.events import PING_SECONDS, HeldStream
from tierq.producers.gateway.failures import NOT_RETRIED, error_body
from tierq.producers.gateway.jobs import IdempotencyKey, tenant_scoped_key
from tierq.producers.gateway.waiting import ClientGone, unless_gone

log = structlog.get_logger("tierq.gateway")

# The header naming the job behind an answer.
JOB_ID_HEADER = "Tierq-Job-Id"
# What a client that left is answered (nobody reads it; nginx's "client closed request").
CLIENT_CLOSED_STATUS = 499


def invalid_request(error: RequestValidationError) -> APIError:
    """A refusal FastAPI found, as the API words it: 400, `param` naming the field."""
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return _not_json()
    location = tuple(first.get("loc", ()))
    if location[:1] == ("body",) and isinstance(error.body, dict):
        try:
            parse_job_request(error.body)  # the contract's own description of the problem
        except InvalidJobError as refused:
            return from_invalid_job(refused, status_code=400)
    param = ".".join(str(part) for part in location[1:]) or None
    message = f"invalid request: {param}: {first.get('msg')}" if param else str(first.get("msg"))
    return APIError(400, message, param=param, code="invalid_request")


def _not_json() -> APIError:
    return APIError(400, "the request body is not valid JSON", code="invalid_json")


class DropInRoute(APIRoute):
    """A route of the API's own: an invalid request answers 400, as the API does, where
    FastAPI's handler (errors.py) answers the job API's 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                return invalid_request(error).response()
            except StarletteHTTPException as error:
                if error.status_code == 400 and error.detail == FASTAPI_BODY_ERROR:
                    return _not_json().response()
                raise

        return handle


# tierq's job options the SDK can send as headers (`extra_headers`); checked by the
# submission, so a wrong one answers 400 naming `priority` or `deadline`, as a body parameter
# would.
TierqPriority = Annotated[
    str | None,
    Header(
        alias="Tierq-Priority",
        description="`interactive`, `default` or `bulk`: on a tier with fair dispatch, how soon "
        "the job leaves its backlog.",
    ),
]

TierqDeadline = Annotated[
    str | None,
    Header(
        alias="Tierq-Deadline",
        description="By when the result must exist: seconds from now (`3600`) or an RFC 3339 "
        "time (`2026-12-02T09:00:00Z`). A job with time to spare runs at the provider's "
        "cheaper `flex` service tier where its model offers it.",
    ),
]

router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    route_class=DropInRoute,
    responses=error_responses(400, 401, 409, 413, 429, 503, 507),
)

HELD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The job's `ChatCompletion`; with `stream=true`, its chunks as "
        "Server-Sent Events ending with `data: [DONE]`. `Tierq-Job-Id` names the job.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    "4XX": {"model": ErrorResponse, "description": "The provider refused the job's call"},
    502: {"model": ErrorResponse, "description": "The job failed without a provider status"},
    504: {"model": ErrorResponse, "description": "The hold ended before the job did"},
}


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    summary="Create a chat completion (the API's route, run as a tierq job)",
    responses=HELD_RESPONSES,
)
async def create_chat_completion(
    body: JobRequest,
    request: Request,
    gateway: GatewayState,
    tenant: Tenant,
    idempotency_key: IdempotencyKey = None,
    priority: TierqPriority = None,
    due: TierqDeadline = None,
) -> Response:
    """The body is the API's request; the answer is the API's, once the job has ended."""
    deadline = time.monotonic() + gateway.settings.gateway.max_wait_seconds
    try:
        tier = route(body, gateway.settings)
    except InvalidJobError:
        tier = None  # refused by `_submit`, in the API's shape
    if tier is not None:
        # 429 when the jobs ahead of it would outlast the maximum
        await gateway.queue_waits.check(tier, priority)
    gateway.waiters.take(tenant)  # before submitting: a refusal here enqueues nothing
    handed_over = False
    try:
        job_id = await _submit(gateway, tenant, body, idempotency_key, priority, due)
        hold = Hold(gateway, request, tenant, job_id, deadline, keyed=idempotency_key is not None)
        if not body.stream:
            return await hold.answer()
        response = await hold.stream(body)
        if isinstance(response, HeldStream):
            handed_over = True  # its slot is given back when the stream closes
        return response
    finally:
        if not handed_over:
            gateway.waiters.give_back(tenant)


async def _submit(
    gateway: Gateway,
    tenant: str,
    body: JobRequest,
    key: str | None,
    priority: str | None,
    deadline: str | None,
) -> str:
    """Enqueue the request as the job API does (quota, contract, tier, idempotency)."""
    await gateway.memory_guard.check()  # 507 while Redis is nearly full: nothing enqueued
    async with await gateway.quota.reserve(tenant, 1) as reservation:
        try:
            job_ids = await gateway.client.submit_many(
                [body],
                [tenant_scoped_key(tenant, key)],
                tenant=tenant,
                priority=priority,
                deadline=deadline,
            )
        except InvalidJobError as refused:
            error = from_invalid_job(refused, status_code=400)
            error.headers = {**(error.headers or {}), **NOT_RETRIED}
            raise error from None
        await reservation.fill(job_ids)
    return job_ids[0]


class Hold:
    """One held request's job: waited for, answered, or let go of."""

    def __init__(
        self,
        gateway: Gateway,
        request: Request,
        tenant: str,
        job_id: str,
        deadline: float,
        *,
        keyed: bool,
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.tenant = tenant
        self.job_id = job_id
        self.deadline = deadline
        self.keyed = keyed
        self.headers = {JOB_ID_HEADER: job_id}

    @property
    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def answer(self) -> Response:
        """The job's answer once it has ended, unless the client leaves or the hold ends."""
        try:
            waiting = self.gateway.held.wait(self.job_id, timeout=self.remaining)
            record = await unless_gone(self.request, waiting)
        except ClientGone:
            return await self.abandoned()
        except TimeoutError:
            return await self.expired()
        return self.answer_of(record)

    async def stream(self, body: JobRequest) -> Response:
        """The answer as chunks once its first delta came (a job that fails first answers
        with its error's status, as the API does), unless the client leaves or the hold ends."""
        record = await self.gateway.client.get(self.job_id)
        events = job_events(self.gateway, record)
        try:
            first = await unless_gone(
                self.request, asyncio.wait_for(anext(events, None), self.remaining)
            )
        except ClientGone:
            await events.aclose()
            return await self.abandoned()
        except TimeoutError:
            await events.aclose()
            return await self.expired()
        if first is None or (isinstance(first, Finished) and not _answered(first.record)):
            await events.aclose()
            return await self.expired() if first is None else self.answer_of(first.record)
        options = body.stream_options
        chunks = Chunks(
            self.job_id, body.model, include_usage=bool(options and options.include_usage)
        )
        return HeldStream(
            answer_stream(first, events, chunks),
            headers=self.headers,
            ping=PING_SECONDS,
            sep="\n",
            on_close=lambda: self.gateway.waiters.give_back(self.tenant),
        )

    def answer_of(self, record: JobResult) -> Response:
        if _answered(record) and record.response is not None:
            return JSONResponse(record.response.model_dump(mode="json"), headers=self.headers)
        status, error = error_body(record)
        return JSONResponse(error, status_code=status, headers={**self.headers, **NOT_RETRIED})

    async def abandoned(self) -> Response:
        outcome = await self._cancel_unless_started()
        log.info("chat_completions.client_gone", job_id=self.job_id, outcome=outcome)
        return Response(status_code=CLIENT_CLOSED_STATUS, headers=self.headers)

    async def expired(self) -> Response:
        """Past the hold: the job's answer if it just ended, else 504 `hold_expired`."""
        record = await self.gateway.client.get(self.job_id)
        if record.status.is_final:
            return self.answer_of(record)
        outcome = "kept" if self.keyed else await self._cancel_unless_started()
        log.info("chat_completions.hold_expired", job_id=self.job_id, outcome=outcome)
        hold = self.gateway.settings.gateway.max_wait_seconds
        waited = f"job {self.job_id} did not end within the gateway's hold of {hold:g}s"
        if outcome == "cancelled":
            message = (
                f"{waited} and had not started, so it was cancelled: nothing was paid. Send an "
                "Idempotency-Key to keep a job across the retries of its request"
            )
        elif self.keyed:
            message = f"{waited}; it goes on, and a retry with the same Idempotency-Key holds it"
        else:
            message = f"{waited}; it goes on and is recorded: GET /v1/jobs/{self.job_id}"
        # Without a key, a retry would submit (and pay for) a second job beside a running one.
        safe = self.keyed or outcome == "cancelled"
        raise APIError(
            504,
            message,
            type="timeout",
            code="hold_expired",
            headers={**self.headers, "x-should-retry": "true" if safe else "false"},
        )

    async def _cancel_unless_started(self) -> str:
        """Cancel the job if no worker has taken it yet: what the cancel did, or `started`."""
        record = await self.gateway.client.get(self.job_id)
        if record.status is not JobStatus.QUEUED or record.attempts > 0:
            return "final" if record.status.is_final else "started"
        store = JobStore.from_settings(self.gateway.settings, self.gateway.client.sync_redis)
        # A worker that took the job meanwhile runs it under a live lease: left to finish.
        outcome, _ = await asyncio.to_thread(JobControl(store).cancel, record, spare_running=True)
        return outcome


def _answered(record: JobResult) -> bool:
    return record.status is JobStatus.SUCCEEDED and record.response is not None
