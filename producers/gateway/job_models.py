"""A job as the gateway's job routes take it: the API's body, with tierq's own fields beside it.

The body of `POST /v1/jobs` (and each of `jobs` in `POST /v1/jobs:batch`) is the Chat
Completions request as `client.chat.completions.create` would send it, so an OpenAI client's
JSON posts unchanged. tierq's own fields sit in one `tierq` object beside it, a name the API
does not use, so nobody mistakes them for API parameters: `{"model": ..., "messages": ...,
"tierq": {"labels": {"team": "search"}, "context_overflow": "sliding_window", "priority":
"interactive"}}`. The API's own
`metadata` stays a body parameter and is sent; tierq's fields are kept on the job's record (or
act at submit) and are never sent.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tierq.core.contract import JobRequest, Labels
from tierq.core.priority import PRIORITY_DEFAULT, Priority
from tierq.core.sliding_window import CONTEXT_OVERFLOW_DEFAULT, ContextOverflow


class TierqFields(BaseModel):
    """tierq's fields of one job; none is sent to the API."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    labels: Labels = Field(
        default_factory=dict,
        description="Up to 16 string pairs kept on the job's record, never sent to the API.",
    )
    context_overflow: ContextOverflow = Field(
        default=CONTEXT_OVERFLOW_DEFAULT,
        description="A conversation over the model's context window: `refuse` it, or drop its "
        "oldest turns until it fits (`sliding_window`; the record says how many messages and "
        "tokens went).",
    )
    priority: Priority = Field(
        default=PRIORITY_DEFAULT,
        description="`interactive`, `default` or `bulk`: on a tier with fair dispatch, how "
        "soon the job leaves its backlog (a higher class goes first; a lower one still moves).",
    )
    deadline: str | int | float | None = Field(
        default=None,
        description="By when the result must exist: seconds from now (`3600`) or an RFC 3339 "
        'time (`"2026-12-02T09:00:00Z"`). A job with time to spare runs at the provider\'s '
        "cheaper `flex` service tier where its model offers it; unset: as always.",
    )


class JobSubmission(JobRequest):
    """A Chat Completions request, plus tierq's own fields under `tierq`."""

    tierq_fields: ClassVar[frozenset[str]] = frozenset({"tierq"})

    tierq: TierqFields | None = Field(default=None, exclude=True)

    def request(self) -> JobRequest:
        """The API's body alone, as the queue carries it."""
        return JobRequest.model_validate(self.api_fields())

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.tierq.labels) if self.tierq is not None else {}

    @property
    def priority(self) -> Priority:
        return self.tierq.priority if self.tierq is not None else PRIORITY_DEFAULT

    @property
    def deadline(self) -> str | int | float | None:
        return self.tierq.deadline if self.tierq is not None else None

    @property
    def context_overflow(self) -> ContextOverflow:
        return self.tierq.context_overflow if self.tierq is not None else CONTEXT_OVERFLOW_DEFAULT
