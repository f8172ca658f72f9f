"""GET /v1/jobs/{id}/events: a job's status changes and streamed deltas as Server-Sent Events.

Events, in order:

- `status`, data `{"status": ..., "attempts": n}`: first the job's status as it stands, then
  again whenever its status or its attempt changes.
- `delta` (jobs submitted with `stream=true`), data as the worker published it (worker/deltas.py):
  `{"attempt", "index", "content" | "refusal" | "tool_calls" | "finish_reason"}`. Its `id` is
  the entry's Redis Stream id. Deltas of a new attempt start the answer again from scratch:
  a client drops what it joined when `attempt` changes (the delta's own `attempt` is the one to
  trust: it may arrive before the `status` event of its attempt).
- `result`, data the job's whole record, as `GET /v1/jobs/{id}` returns it, once the job is
  final. It is the last event: the server then closes the stream (there is no `done` event).
  A browser's `EventSource` reconnects when a stream closes, so it should `close()` on `result`.

`Last-Event-ID` (sent by `EventSource` when it reconnects) resumes after that delta, without
repeats. A connection lasts at most `CONNECTION_LIMIT_SECONDS` (a module constant, not a
setting: the settings module is shared with the workers and nothing has needed to tune it
yet). It then closes without a result, as it does if Redis fails under it, and the client
reconnects with its `Last-Event-ID` (`EventSource` does so by itself). Keep-alive comments
go out every `PING_SECONDS`.

The deltas are read with `XREAD BLOCK`, a short block at a time, and the job's status is
re-read from its hash between reads (its record only when the status or the attempt's owner
changed). A worker writes a job's last deltas before it records the outcome, so once the job
is final what remains in the stream is read without blocking, then the result is sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import redis
import structlog
from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from tierq.core.keys import DELTA_FIELD
from tierq.core.results import JobResult
from tierq.producers.gateway.deps import Gateway, GatewayState, Tenant, owned_job
from tierq.producers.gateway.errors import APIError, error_responses

log = structlog.get_logger("tierq.gateway")
router = APIRouter(prefix="/v1", tags=["jobs"], responses=error_responses(401, 503))

# The longest one connection lasts; the client then reconnects with its Last-Event-ID.
CONNECTION_LIMIT_SECONDS = 600.0
# How long one XREAD waits for deltas before the job's status is looked at again.
READ_BLOCK_MILLISECONDS = 500
# Most deltas taken from the stream in one read.
READ_COUNT = 256
# How often an open stream checks that its key has not been revoked.
KEY_CHECK_SECONDS = 5.0
# Seconds between keep-alive comments, so proxies do not drop a quiet stream.
PING_SECONDS = 15.0

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=r"^\d{1,20}-\d{1,20}$",
        description="Resume after this delta (an event `id`), as `EventSource` does.",
    ),
]


@router.get(
    "/jobs/{job_id}/events",
    summary="Follow a job: status changes, streamed deltas, then the result",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Events: `status`, `delta`, then `result`, after which it closes",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(404, 422, 429),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    gateway: GatewayState,
    tenant: Tenant,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Server-Sent Events for one of the tenant's jobs; see this module's docstring."""
    # Checked before the stream starts, so an unknown job is a plain 404 in the API's shape.
    if last_event_id is not None and any(int(part) >= 2**64 for part in last_event_id.split("-")):
        raise APIError(422, "Last-Event-ID is not an event id", param="Last-Event-ID")
    record = await owned_job(gateway, tenant, job_id)
    secret = request.headers.get("authorization", "")[len("bearer ") :].strip()
    events = _events(gateway, record, last_event_id or "0-0", secret)
    gateway.waiters.take(tenant)
    return HeldStream(events, ping=PING_SECONDS, on_close=lambda: gateway.waiters.give_back(tenant))


class HeldStream(EventSourceResponse):
    """An event stream that gives its tenant's waiting slot back however it ends."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _events(
    gateway: Gateway, record: JobResult, cursor: str, secret: str
) -> AsyncIterator[ServerSentEvent]:
    """The events of one connection; a Redis fault ends it as the connection limit does, and
    so does the revocation of the key that opened it (checked every KEY_CHECK_SECONDS)."""
    key_checked = time.monotonic()
    try:
        async for event in follow_job_events(gateway, record, cursor):
            if time.monotonic() - key_checked >= KEY_CHECK_SECONDS:
                if await gateway.key_store.authenticate(secret) is None:
                    log.info("events.key_revoked", job_id=record.job_id)
                    return
                key_checked = time.monotonic()
            yield event
    except redis.RedisError as error:
        # The client reconnects with its Last-Event-ID, and hears a 503 while Redis is away.
        log.warning("events.redis_unavailable", job_id=record.job_id, error=str(error))


async def follow_job_events(
    gateway: Gateway, record: JobResult, cursor: str
) -> AsyncIterator[ServerSentEvent]:
    client = gateway.client.redis
    job_key = gateway.keys.job(record.job_id)
    stream_key = gateway.keys.deltas(record.job_id)
    ends_at = time.monotonic() + CONNECTION_LIMIT_SECONDS
    shown = (record.status, record.attempts)
    yield _status(record)
    seen: list[Any] = [None, None]
    # A worker that lost its claim can still be writing an older attempt's deltas into the
    # stream the new attempt restarted: once a newer attempt has been seen, older ones are
    # not shown.
    newest = 0
    while not record.status.is_final:
        if time.monotonic() >= ends_at:
            return
        read = await client.xread(
            {stream_key: cursor}, count=READ_COUNT, block=READ_BLOCK_MILLISECONDS
        )
        for event, attempt in _deltas(read):
            cursor = event.id or cursor
            if attempt >= newest:
                newest = attempt
                yield event
        state = await client.hmget(job_key, ["status", "owner"])
        if state[0] is None:
            return  # the record expired or was deleted: nothing more will come
        if state != seen:
            seen = state
            raw = await client.hget(job_key, "record")
            if raw is None:
                return
            record = JobResult.from_json(raw)
            if (record.status, record.attempts) != shown:
                shown = (record.status, record.attempts)
                yield _status(record)
    while True:
        read = await client.xread({stream_key: cursor}, count=READ_COUNT)
        events = _deltas(read)
        for event, attempt in events:
            cursor = event.id or cursor
            if attempt >= newest:
                newest = attempt
                yield event
        if len(events) < READ_COUNT:
            break
    yield ServerSentEvent(record.model_dump_json(), event="result")


def _status(record: JobResult) -> ServerSentEvent:
    data = {"status": record.status.value, "attempts": record.attempts}
    return ServerSentEvent(_json(data), event="status")


def _deltas(read: Any) -> list[tuple[ServerSentEvent, int]]:
    """XREAD's answer for one stream as `delta` events, each with its attempt; the entry's JSON
    is sent as it is."""
    if not read:
        return []
    (_, entries), *_ = read
    events = []
    for entry_id, fields in entries:
        data = fields[DELTA_FIELD.encode()].decode()
        attempt = int(json.loads(data).get("attempt", 0))
        events.append((ServerSentEvent(data, event="delta", id=entry_id.decode()), attempt))
    return events


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))
