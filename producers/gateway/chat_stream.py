"""A streamed drop-in answer: a job's deltas as the API's `chat.completion.chunk` events.

The deltas come from the job's delta stream, read by the events route's follower
(events.py), as the worker publishes them (worker/deltas.py); this module turns each into the
chunk the API would have sent and ends the stream as the API does: a chunk with the
`finish_reason`, the usage chunk (`choices: []`) when `stream_options.include_usage` asked for
it, then `data: [DONE]`.

The job's record is the authority. Publishing deltas is best-effort, so when the record comes
the text it holds beyond what was streamed is sent before the end, and an answer whose deltas
never came at all is streamed from the record in one chunk per choice.

A stream interrupted by a new attempt (its worker crashed, or the provider cut the answer and
tierq retried) does not resume: the next attempt writes a new answer, which would not continue
the text already delivered. Such a stream ends with an error event (`code`
`stream_interrupted`, the SDK raises `APIError`) naming the job, whose whole answer is read
with `GET /v1/jobs/{id}` once it ends. An attempt that changes before any delta was delivered
is invisible: the stream starts with the attempt that answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from sse_starlette import ServerSentEvent

from tierq.core.results import ChatCompletion, JobResult, JobStatus
from tierq.producers.gateway.deps import Gateway
from tierq.producers.gateway.events import follow_job_events as follow_job
from tierq.producers.gateway.failures import error_body

log = structlog.get_logger("tierq.gateway")

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class Delta:
    """One published delta: its attempt, its choice and what it carries."""

    attempt: int
    index: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    """The job's final record."""

    record: JobResult


async def job_events(gateway: Gateway, record: JobResult) -> AsyncGenerator[Delta | Finished, None]:
    """The job's deltas, oldest first, then its final record; ends without a `Finished` when
    the follower's connection limit passed or the record is gone."""
    async for event in follow_job(gateway, record, "0-0"):
        if event.event == "delta":
            data = json.loads(str(event.data))
            attempt, index = int(data.pop("attempt", 0)), int(data.pop("index", 0))
            yield Delta(attempt, index, data)
        elif event.event == "result":
            yield Finished(JobResult.model_validate_json(str(event.data)))


class StreamDiverged(Exception):
    """The record's answer does not continue the text already streamed."""


@dataclass
class Chunks:
    """The chunks of one streamed answer, and what they have delivered so far."""

    job_id: str
    model: str
    include_usage: bool
    created: int = field(default_factory=lambda: int(time.time()))
    attempt: int | None = None
    opened: set[int] = field(default_factory=set)
    text: dict[tuple[int, str], str] = field(default_factory=dict)
    with_tools: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)

    @property
    def id(self) -> str:
        # The provider's id is known only once the answer is whole: every chunk carries the
        # job's, the id GET /v1/jobs/{id} takes.
        return f"chatcmpl-{self.job_id}"

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        if self.include_usage:
            body.setdefault("usage", None)
        return ServerSentEvent(_json(body))

    def _choice(self, index: int, delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        if index not in self.opened:
            # The API opens each choice with its role.
            self.opened.add(index)
            delta = {"role": "assistant", **delta}
        return [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]

    def from_delta(self, delta: Delta) -> list[ServerSentEvent]:
        """The chunks of one delta: its text and tool-call fragments, then its finish."""
        self.attempt = delta.attempt
        carried: dict[str, Any] = {}
        for name in ("content", "refusal"):
            if name in delta.fields:
                carried[name] = delta.fields[name]
                key = (delta.index, name)
                self.text[key] = self.text.get(key, "") + delta.fields[name]
        if "tool_calls" in delta.fields:
            carried["tool_calls"] = delta.fields["tool_calls"]
            self.with_tools.add(delta.index)
        events = []
        if carried or delta.index not in self.opened:
            events.append(self.chunk(self._choice(delta.index, carried)))
        if "finish_reason" in delta.fields:
            events.append(self._finish(delta.index, delta.fields["finish_reason"]))
        return events

    def _finish(self, index: int, reason: str | None) -> ServerSentEvent:
        self.finished.add(index)
        return self.chunk(self._choice(index, {}, reason))

    def rest_of(self, response: ChatCompletion) -> list[ServerSentEvent]:
        """The chunks that complete what was streamed into the recorded answer; raises
        `StreamDiverged` when the streamed text is not the start of the record's."""
        events = []
        for choice in response.choices:
            message, index = choice.message, choice.index
            carried: dict[str, Any] = {}
            for name, whole in (("content", message.content), ("refusal", message.refusal)):
                sent = self.text.get((index, name), "")
                if not (whole or "").startswith(sent):
                    raise StreamDiverged
                if whole and len(whole) > len(sent):
                    carried[name] = whole[len(sent) :]
            if message.tool_calls and index not in self.with_tools:
                carried["tool_calls"] = [
                    {"index": position, **call.model_dump(mode="json", exclude_none=True)}
                    for position, call in enumerate(message.tool_calls)
                ]
            if carried or index not in self.opened:
                events.append(self.chunk(self._choice(index, carried)))
            if index not in self.finished:
                events.append(self._finish(index, choice.finish_reason))
        return events

    def usage(self, record: JobResult) -> ServerSentEvent:
        usage = record.usage.model_dump(mode="json") if record.usage else None
        return self.chunk([], usage=usage)


async def answer_stream(
    first: Delta | Finished, events: AsyncIterator[Delta | Finished], chunks: Chunks
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of the answer, from the first job event (already read) to the end."""
    event: Delta | Finished | None = first
    try:
        while event is not None:
            if isinstance(event, Finished):
                for sse in _ending(event.record, chunks):
                    yield sse
                return
            if chunks.attempt is not None and event.attempt != chunks.attempt:
                log.info("chat_completions.stream_interrupted", job_id=chunks.job_id)
                yield _interrupted(chunks.job_id)
                return
            for sse in chunks.from_delta(event):
                yield sse
            event = await anext(events, None)
        # The follower's connection limit passed before the job ended.
        yield error_event(
            f"the stream of job {chunks.job_id} reached its time limit before the job ended; "
            f"its answer will be at GET /v1/jobs/{chunks.job_id}",
            type="server_error",
            code="stream_time_limit",
        )
    except redis.RedisError as error:
        log.warning("chat_completions.redis_unavailable", job_id=chunks.job_id, error=str(error))
        yield error_event(
            f"the job queue became unreachable while job {chunks.job_id} streamed; its answer "
            f"will be at GET /v1/jobs/{chunks.job_id}",
            type="server_error",
            code="broker_unavailable",
        )


def _ending(record: JobResult, chunks: Chunks) -> list[ServerSentEvent]:
    if record.status is not JobStatus.SUCCEEDED or record.response is None:
        _, body = error_body(record)
        return [ServerSentEvent(_json(body))]
    try:
        rest = chunks.rest_of(record.response)
    except StreamDiverged:
        log.info("chat_completions.stream_interrupted", job_id=chunks.job_id)
        return [_interrupted(chunks.job_id)]
    if chunks.include_usage:
        rest.append(chunks.usage(record))
    return [*rest, ServerSentEvent(DONE)]


def _interrupted(job_id: str) -> ServerSentEvent:
    return error_event(
        f"the answer of job {job_id} was interrupted (its worker stopped or the provider cut "
        f"the stream) and tierq retries it; the retry's answer is not a continuation of the "
        f"text streamed so far. The whole answer will be at GET /v1/jobs/{job_id}",
        type="server_error",
        code="stream_interrupted",
    )


def error_event(message: str, *, type: str, code: str) -> ServerSentEvent:
    """An error inside a stream, as the API sends it: the SDK raises it as an `APIError`."""
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return ServerSentEvent(_json(body))


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
