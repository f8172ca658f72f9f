"""The job request: Chat Completions parameters with the API's names, types, ranges and defaults.

Which parameters exist and what type each takes is the installed `openai` SDK's answer
(`tierq.core.sdk_params` validates against its own request TypedDicts), so a parameter a newer
SDK adds passes through without a code change, and one it does not know is refused as the API
refuses it ("Unrecognized request argument supplied: X"). On top of that, the parameters tierq
itself reads (the model, the messages, the output caps, streaming, tools, the response format,
the sampling knobs the model catalog rules on) are declared here with the API's ranges,
defaults and cross-field rules, and with error paths a caller can find; the others are kept as
given.

Producers validate with these models before anything is enqueued, and workers validate the same
payload again when it arrives, so a hand-made or corrupted message is refused, not sent. Rules
from the model catalog live in `tierq.core.tiers`. Only the parameters a caller set are sent on
(`model_fields_set`), so the API's defaults apply as if the caller had called it directly.
Everything in a `JobRequest` is the API's and is sent, `metadata` included; tierq's own fields
(labels, tenant, what a sliding window dropped) travel beside it on the `JobEnvelope`, and the
idempotency key only in Redis.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails

from tierq.core.errors import InvalidJobError
from tierq.core.priority import PRIORITY_DEFAULT, Priority
from tierq.core.sdk_params import sdk_problems
from tierq.core.validation import FieldRuleError, describe_validation_error

FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
MAX_LABELS = 16


# A gateway tenant's name: it labels jobs, Redis keys and the usage ledger's fields.
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    """Unknown fields are refused, as the API refuses them ("Unrecognized request argument"),
    and so are values of the wrong JSON type (no "1.5" for a number, no true for an integer)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


# --- content parts -------------------------------------------------------------------------


class PromptCacheBreakpoint(_Strict):
    mode: Literal["explicit"]
    ttl: Literal["30m", "12h"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high", "original"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class FileRef(_Strict):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Strict):
    type: Literal["file"]
    file: FileRef
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]
NonEmptyText = Annotated[list[TextPart], Field(min_length=1)]


# --- messages ------------------------------------------------------------------------------


class FunctionCall(_Strict):
    name: str
    arguments: str


class FunctionToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class CustomCall(_Strict):
    name: str
    input: str


class CustomToolCall(_Strict):
    id: str
    type: Literal["custom"]
    custom: CustomCall


ToolCall = Annotated[FunctionToolCall | CustomToolCall, Field(discriminator="type")]


class AssistantAudio(_Strict):
    """A previous audio answer of the model, referred to by its id."""

    id: str


class SystemMessage(_Strict):
    role: Literal["system"]
    content: str | NonEmptyText
    name: str | None = None


class DeveloperMessage(_Strict):
    role: Literal["developer"]
    content: str | NonEmptyText
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: str | Annotated[list[UserPart], Field(min_length=1)]
    name: str | None = None


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str | Annotated[list[AssistantPart], Field(min_length=1)] | None = None
    refusal: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1)] | None = None
    function_call: FunctionCall | None = None
    audio: AssistantAudio | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if (
            self.content is None
            and not self.tool_calls
            and self.function_call is None
            and self.audio is None
        ):
            raise FieldRuleError(
                "content",
                "an assistant message needs content, tool_calls, function_call or audio",
            )
        return self


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: str | NonEmptyText
    tool_call_id: str


class FunctionMessage(_Strict):
    """The answer to an assistant's (deprecated) `function_call`."""

    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]


def message_text(message: Message) -> str:
    """The plain text a message carries (text parts joined), for checks and token estimates."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content if isinstance(part, TextPart))


# --- response format and tools ---------------------------------------------------------------


class ResponseFormatText(_Strict):
    type: Literal["text"]


class ResponseFormatJSONObject(_Strict):
    type: Literal["json_object"]


class JSONSchemaSpec(_Strict):
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]
    description: str | None = None
    # "schema" would shadow a BaseModel attribute; the alias keeps the API's name on the wire.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJSONSchema(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema,
    Field(discriminator="type"),
]


class FunctionDefinition(_Strict):
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class CustomFormatText(_Strict):
    type: Literal["text"]


class Grammar(_Strict):
    definition: str
    syntax: Literal["lark", "regex"]


class CustomFormatGrammar(_Strict):
    type: Literal["grammar"]
    grammar: Grammar


class CustomDefinition(_Strict):
    name: str
    description: str | None = None
    format: (
        Annotated[CustomFormatText | CustomFormatGrammar, Field(discriminator="type")] | None
    ) = None


class CustomTool(_Strict):
    type: Literal["custom"]
    custom: CustomDefinition


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class NamedCustom(_Strict):
    name: str


class NamedCustomToolChoice(_Strict):
    type: Literal["custom"]
    custom: NamedCustom


class AllowedTools(_Strict):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(_Strict):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        NamedToolChoice | NamedCustomToolChoice | AllowedToolsChoice,
        Field(discriminator="type"),
    ]
)


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None
    include_usage: bool | None = None


# --- the request -------------------------------------------------------------------------------

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
LabelKey = Annotated[str, Field(min_length=1, max_length=64)]
LabelValue = Annotated[str, Field(max_length=512)]
# tierq's labels on a job: kept on its record, never sent to the API.
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]


class JobRequest(_Strict):
    """One Chat Completions call, as the caller would pass it to `client.chat.completions.create`.

    Defaults are the API's; only fields the caller set are sent. Parameters not declared here
    are kept as given (`model_extra`) once the SDK's request type has accepted them.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, strict=True)
    # Declared fields that are tierq's own, not API parameters: a subclass that carries them
    # beside the body (the gateway's) names them here, and the SDK check skips them.
    tierq_fields: ClassVar[frozenset[str]] = frozenset()

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    # null is the API's "not set" for every parameter the SDK types Optional: the default applies.
    temperature: Annotated[float, Field(ge=0, le=2)] | None = 1.0
    top_p: Annotated[float, Field(ge=0, le=1)] | None = 1.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = 0.0
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = 0.0
    stop: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP_SEQUENCES)]
        | None
    ) = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = 1
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: ReasoningEffort | None = None
    user: Annotated[str, Field(max_length=512)] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _typed_as_the_sdk_types_it(
        cls, data: Any, handler: ModelWrapValidatorHandler[JobRequest]
    ) -> JobRequest:
        """Refuse what tierq's declared fields refuse and what the SDK's request type refuses,
        in one report. tierq's wording wins for a parameter both refuse."""
        if isinstance(data, JobRequest) or not isinstance(data, dict):
            return handler(data)
        sdk = sdk_problems({k: v for k, v in data.items() if k not in cls.tierq_fields})
        try:
            request = handler(data)
        except ValidationError as error:
            own = _details(error)
        else:
            if not sdk:
                return request
            own = []
        named = {detail["loc"][0] for detail in own if detail["loc"]}
        extra = [detail for detail in sdk if detail["loc"][0] not in named]
        raise ValidationError.from_exception_data(cls.__name__, own + extra)

    @model_validator(mode="after")
    def _parameters_agree(self) -> JobRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldRuleError("top_logprobs", "top_logprobs requires logprobs to be true")
        if self.stream_options is not None and not self.stream:
            raise FieldRuleError(
                "stream_options", "stream_options is only allowed when stream is true"
            )
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise FieldRuleError("max_tokens", "set max_tokens or max_completion_tokens, not both")
        self._check_tools()
        if isinstance(self.response_format, ResponseFormatJSONObject) and not any(
            "json" in message_text(message).lower() for message in self.messages
        ):
            raise FieldRuleError(
                "response_format",
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'",
            )
        _check_tool_message_order(self.messages)
        return self

    def _check_tools(self) -> None:
        tools = self.tools or []
        if self.tool_choice is not None and not tools:
            raise FieldRuleError(
                "tool_choice", "tool_choice is only allowed when tools are specified"
            )
        named = None
        if isinstance(self.tool_choice, NamedToolChoice):
            named = ("function", self.tool_choice.function.name)
        elif isinstance(self.tool_choice, NamedCustomToolChoice):
            named = ("custom", self.tool_choice.custom.name)
        if named is not None and named not in {_tool_name(tool) for tool in tools}:
            raise FieldRuleError(
                "tool_choice",
                f"tool_choice names {named[0]} tool {named[1]!r}, which is not among tools",
            )
        if self.parallel_tool_calls is not None and not tools:
            raise FieldRuleError(
                "parallel_tool_calls",
                "parallel_tool_calls is only allowed when tools are specified",
            )

    def api_fields(self) -> dict[str, Any]:
        """The parameters the caller set, in the API's JSON shape: the body sent."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


def _tool_name(tool: FunctionTool | CustomTool) -> tuple[str, str]:
    if isinstance(tool, FunctionTool):
        return ("function", tool.function.name)
    return ("custom", tool.custom.name)


def _details(error: ValidationError) -> list[InitErrorDetails]:
    """A validation report's items, as details a merged `ValidationError` is built from."""
    details: list[InitErrorDetails] = []
    for item in error.errors(include_url=False):
        detail = InitErrorDetails(type=item["type"], loc=item["loc"], input=item["input"])
        if "ctx" in item:
            detail["ctx"] = item["ctx"]
        details.append(detail)
    return details


def _check_tool_message_order(messages: list[Message]) -> None:
    """The API's rule: tool_calls are answered by tool messages, one per id, right after."""
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            if message.tool_call_id not in pending:
                raise FieldRuleError(
                    f"messages.{index}",
                    f"a 'tool' message must answer a tool_call of the "
                    f"assistant message before it; no pending tool_call_id "
                    f"{message.tool_call_id!r}",
                )
            pending.discard(message.tool_call_id)
            continue
        if pending:
            raise FieldRuleError(
                f"messages.{index}",
                "an assistant message with 'tool_calls' must be followed by tool messages "
                f"answering each tool_call_id (missing: {', '.join(sorted(pending))})",
            )
        if isinstance(message, AssistantMessage) and message.tool_calls:
            pending = {call.id for call in message.tool_calls}
    if pending:
        raise FieldRuleError(
            f"messages.{len(messages) - 1}",
            "an assistant message with 'tool_calls' must be followed by tool messages "
            f"answering each tool_call_id (missing: {', '.join(sorted(pending))})",
        )


class JobEnvelope(_Strict):
    """What travels on the queue: the request plus what the producer decided about it."""

    # Lax at this level only: the timestamp arrives as an ISO string from JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    job_id: str
    tier: str
    submitted_at: datetime
    request: JobRequest
    # The producer's count of prompt tokens, so workers need not tokenize again.
    estimated_prompt_tokens: int | None = None
    # Which of the job's messages this is: each retry, re-queue by a reaper or retry of a dead
    # letter supersedes the earlier ones, so a late copy of an older one is not run again.
    generation: int = 0
    # The gateway tenant that submitted the job (None from the Python client): its record
    # carries it, so one tenant never reads another's jobs.
    tenant: str | None = None
    # The caller's labels for the job (tierq's, not the API's `metadata`): kept on its record,
    # never sent.
    labels: Labels = Field(default_factory=dict)
    # tierq's priority class (tierq/core/priority.py), never sent: on a tier with fair dispatch
    # it decides how soon the job leaves its backlog.
    priority: Priority = PRIORITY_DEFAULT
    # tierq's deadline (tierq/core/deadline.py), never sent: by when the result must exist. It
    # decides the service level the call asks for (tierq/core/spend.py); None: as given.
    deadline: datetime | None = None
    # tierq's, never sent: the job goes to the provider's Batch API whatever its deadline's
    # distance (a gateway batch forwarded there, TIERQ_GATEWAY__BATCHES_VIA_PROVIDER).
    provider_batch: bool = False
    # What the opt-in sliding window dropped from the conversation at submit (the request above
    # is what remains), for the worker to copy onto the record; set only when something was.
    context_dropped_messages: int = 0
    context_dropped_tokens: int = 0

    def to_message(self) -> dict[str, Any]:
        # exclude_unset keeps the request exactly as the caller set it across the JSON hop.
        message = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        message["generation"] = self.generation
        return message


def parse_job_request(data: dict[str, Any] | JobRequest) -> JobRequest:
    """Validate a request given as a dict (or pass a `JobRequest` through)."""
    if isinstance(data, JobRequest):
        return data
    try:
        return JobRequest.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(error, JobRequest) from None


def parse_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a job's labels (tierq's, never sent): up to 16 pairs, keys of 1 to 64
    characters, values up to 512; raises `InvalidJobError` naming `labels`."""
    try:
        return _LabelsOnly.model_validate({"labels": dict(labels or {})}).labels
    except ValidationError as error:
        raise describe_validation_error(error, _LabelsOnly) from None
    except (TypeError, ValueError):
        raise InvalidJobError(
            "invalid job request: labels: must be a mapping of strings to strings",
            [{"field": "labels", "message": "must be a mapping of strings to strings"}],
        ) from None


class _LabelsOnly(_Strict):
    labels: Labels


def request_size_bytes(request: JobRequest) -> int:
    """Size of the request on the wire, for the payload limit."""
    return len(json.dumps(request.api_fields(), separators=(",", ":")).encode())
