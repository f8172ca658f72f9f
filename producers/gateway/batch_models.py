"""The shapes of the OpenAI Batches API: the Batch object, its status and counts, its errors and
usage, the list page and the create parameters.

They live apart from the routes and the finalizer because both speak them, and so does the
store that keeps them as JSON in Redis: one place for the wire format, with no Redis or
FastAPI routing in sight.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tierq.core.results import Usage
from tierq.producers.gateway.file_models import MAX_EXPIRES_AFTER_SECONDS, MIN_EXPIRES_AFTER_SECONDS
from tierq.producers.gateway.pages import Listed, ListPage

# The API's only completion window, "24h".
COMPLETION_WINDOW_SECONDS = 24 * 3_600


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(BaseModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """The API's batch usage: the succeeded requests' tokens, summed."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0

    def add(self, usage: Usage) -> None:
        self.input_tokens += usage.prompt_tokens
        self.input_tokens_details.cached_tokens += usage.cached_tokens
        self.output_tokens += usage.completion_tokens
        self.output_tokens_details.reasoning_tokens += usage.reasoning_tokens
        self.total_tokens += usage.total_tokens


class Batch(Listed):
    """The API's Batch object (openai.types.Batch)."""

    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None
    model: str | None = None
    usage: BatchUsage | None = None


class BatchList(ListPage[Batch]):
    """The API's page of batches (`client.batches.list()` pages through it by `after`)."""


class OutputExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=MIN_EXPIRES_AFTER_SECONDS, le=MAX_EXPIRES_AFTER_SECONDS)]


class BatchCreate(BaseModel):
    """POST /v1/batches (openai.types.BatchCreateParams)."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: Annotated[str, Field(min_length=1)]
    endpoint: Literal["/v1/chat/completions"]
    completion_window: Literal["24h"]
    metadata: (
        Annotated[
            dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
            Field(max_length=16),
        ]
        | None
    ) = None
    output_expires_after: OutputExpiresAfter | None = None
