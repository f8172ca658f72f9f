"""The job record: status, the API's response and usage in the API's own shapes, and errors.

One `JobResult` per job lives in Redis from submission until `result_ttl_seconds` after its last
change. Producers read it to poll; workers rewrite it as the job moves. The response models
mirror the SDK's `ChatCompletion` without importing `openai` (producers must not need it), and
keep any field the API adds (`extra="allow"`), so nothing the provider returned is dropped.

Two readers turn an answer back into what the caller works with: `parsed` (the structured
object, as the SDK's `parse()` gives it; tierq/core/structured.py) and `message_param` (the
answer as the next request's assistant message, to continue a conversation or a tool loop).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

from tierq.core.errors import JobNotSucceededError
from tierq.core.structured import parse_choice

T = TypeVar("T")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class _APIShape(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCallOut(_APIShape):
    name: str
    arguments: str


class ToolCallOut(_APIShape):
    id: str
    type: str = "function"
    function: FunctionCallOut


class ResponseMessage(_APIShape):
    # Some OpenAI-compatible servers stream no role; the API's answer is always the assistant.
    role: Annotated[str, BeforeValidator(lambda role: role or "assistant")] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class TopLogprob(_APIShape):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(_APIShape):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(_APIShape):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(_APIShape):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class PromptTokensDetails(_APIShape):
    cached_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionTokensDetails(_APIShape):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class Usage(_APIShape):
    """Token usage exactly as the API reports it; reasoning tokens are inside completion_tokens."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @property
    def reasoning_tokens(self) -> int:
        details = self.completion_tokens_details
        return (details.reasoning_tokens or 0) if details else 0

    @property
    def cached_tokens(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if details else 0


class ChatCompletion(_APIShape):
    id: str
    object: str = "chat.completion"
    created: int | None = None
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


class JobError(BaseModel):
    """Why a job failed (or, while retrying, why its last attempt did)."""

    # Stable machine name: rate_limited, timeout, unavailable, bad_request, quota_exceeded, ...
    type: str
    message: str
    status_code: int | None = None
    # The API's own `code`, `param` and error `type` (`invalid_request_error`, ...), when it
    # gave them; `type` above is tierq's kind.
    code: str | None = None
    param: str | None = None
    api_type: str | None = None
    # True when tierq retried this kind of error before giving up; False when retrying could
    # not help (a bad request, a bad key, an exhausted quota) and the job failed at once.
    retried: bool = False


class JobResult(BaseModel):
    """Everything known about a job; what `get`, `wait` and `tierq result` return."""

    job_id: str
    status: JobStatus
    tier: str
    # The model the caller asked for; `answered_by` is the snapshot the API says answered.
    model: str
    answered_by: str | None = None
    response: ChatCompletion | None = None
    usage: Usage | None = None
    error: JobError | None = None
    # Attempts started so far (1 on the first call, 2 after one retry, ...).
    attempts: int = 0
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # When a retrying job's next attempt is due.
    retry_at: datetime | None = None
    # The Celery node that ran the latest attempt ("fast-1234@host"): which tier's worker took it.
    worker: str | None = None
    # The caller's labels (tierq's own, never sent to the API; not the API's `metadata`).
    labels: dict[str, str] = {}
    # The gateway tenant that submitted the job; None for jobs from the Python client.
    tenant: str | None = None
    # What the opt-in sliding window (`context_overflow="sliding_window"`) dropped from the
    # conversation to fit the model's context window: the oldest messages, and their prompt
    # tokens as counted at submit. 0 when nothing was dropped.
    context_dropped_messages: int = 0
    context_dropped_tokens: int = 0
    # What the answer cost in USD, from its usage and the price table when it was recorded
    # (tierq/core/pricing.py); None when nothing was billed or the model has no price.
    cost_usd: float | None = None
    # What the same answer would have cost at the default service tier, when it was served at
    # another (flex, priority): the saving (or the premium) against running it as default.
    cost_at_default_usd: float | None = None
    # The caller's deadline (tierq's, never sent): by when the result must exist.
    deadline: datetime | None = None
    # The `service_tier` the latest call asked for when tierq chose it for the deadline
    # (tierq/core/spend.py): `flex`, `priority`, or `default` after a flex call was turned away;
    # None when the request went as the caller wrote it. `response.service_tier` is what the
    # API says served it, and what it is priced at.
    service_tier_chosen: str | None = None

    @property
    def content(self) -> str | None:
        """The first choice's text, the usual thing a caller wants."""
        if self.response is None or not self.response.choices:
            return None
        return self.response.choices[0].message.content

    def parsed(self, schema: type[T], *, choice: int = 0) -> T:
        """The answer validated as `schema`, the class the job was submitted with as its
        `response_format` (classes cannot travel through Redis, so the reader names it).

        Raises `JobNotSucceededError` for a job without an answer, and for an answer that is
        not a `schema`: `StructuredOutputRefusal`, `StructuredOutputTruncated` or
        `StructuredOutputInvalid`.
        """
        return parse_choice(self._choice(choice), schema, self.job_id)

    def message_param(self, *, choice: int = 0) -> dict[str, Any]:
        """The answer as an assistant message in the request's shape, to append to the
        conversation of a next job: its text, refusal and `tool_calls` (answer each call id
        with a `tool` message after it). Only the fields a request takes are kept.
        Raises `JobNotSucceededError` for a job without an answer."""
        message = self._choice(choice).message
        param: dict[str, Any] = {"role": "assistant"}
        if message.content is not None:
            param["content"] = message.content
        if message.refusal is not None:
            param["refusal"] = message.refusal
        if message.tool_calls:
            param["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type,
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in message.tool_calls
            ]
        audio = getattr(message, "audio", None)
        if isinstance(audio, dict) and audio.get("id"):
            param["audio"] = {"id": audio["id"]}  # the API refers to its earlier audio by id
        return param

    def _choice(self, index: int) -> Choice:
        """The answer's choice `index`; raises `JobNotSucceededError` when there is no answer."""
        if self.status is not JobStatus.SUCCEEDED or self.response is None:
            why = f"{self.error.type}: {self.error.message}" if self.error else None
            raise JobNotSucceededError(self.job_id, self.status.value, why)
        choices = self.response.choices
        if not 0 <= index < len(choices):
            raise IndexError(f"job {self.job_id!r} has {len(choices)} choice(s), not {index + 1}")
        return choices[index]

    @property
    def latency_seconds(self) -> float | None:
        """Submission to finish, queueing and retries included."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.submitted_at).total_seconds()

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobResult:
        return cls.model_validate_json(raw)

    def summary(self) -> dict[str, Any]:
        """A flat view for tables and logs: no prompt, no completion text."""
        usage = self.usage
        return {
            "job_id": self.job_id,
            "tier": self.tier,
            "model": self.model,
            "status": self.status.value,
            "attempts": self.attempts,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "reasoning_tokens": usage.reasoning_tokens if usage else None,
            "latency_seconds": self.latency_seconds,
            "error": self.error.type if self.error else None,
        }
