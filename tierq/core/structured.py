"""Structured outputs: a Pydantic class in, its strict JSON schema sent, a validated object out.

The openai SDK's `chat.completions.parse(response_format=SomeModel)` does three things: it
turns the class into a strict `json_schema` response format, calls the API, and validates the
answer into the class. A tierq job splits those across time and processes: the producer sends
the schema (`response_format_for`), a worker makes the call, and whoever reads the record later
validates it (`JobResult.parsed`, which calls `parse_choice`). The class itself never goes
through Redis; the reader names it again.

The schema comes from the SDK's own conversion (`type_to_response_format_param`, no I/O), so
it is byte for byte what `parse()` sends, and improvements to it arrive with the SDK. It is
imported on first use only, so producers that never pass a class never load `openai`.

Reading an answer fails in distinct ways, each its own error (tierq/core/errors.py): the model
refused (`StructuredOutputRefusal`), ran out of tokens (`StructuredOutputTruncated`), or wrote
something that does not validate (`StructuredOutputInvalid`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pydantic

from tierq.core.errors import (
    InvalidJobError,
    StructuredOutputInvalid,
    StructuredOutputRefusal,
    StructuredOutputTruncated,
)

if TYPE_CHECKING:
    from tierq.core.results import Choice

T = TypeVar("T")


def response_format_for(schema: type) -> dict[str, Any]:
    """The `response_format` the SDK's `parse()` sends for `schema` (a Pydantic model or a
    dataclass-like type): `{"type": "json_schema", "json_schema": {"schema": ..., "name": ...,
    "strict": True}}`. Raises `InvalidJobError` naming `response_format` for a type the SDK
    cannot turn into a strict schema."""
    # Imported here, not at the top: see the module's docstring.
    from openai.lib._parsing import type_to_response_format_param

    try:
        converted = type_to_response_format_param(schema)
    except (TypeError, ValueError, pydantic.PydanticUserError) as error:
        raise InvalidJobError(
            f"invalid job request: response_format: {schema!r} cannot be sent as a strict JSON "
            f"schema: {error}",
            [{"field": "response_format", "message": str(error)}],
        ) from None
    # A class in, so never `omit` out: the SDK returns its TypedDict, a plain dict.
    return dict(cast(Mapping[str, Any], converted))


def with_schema_classes_resolved(request: Mapping[str, Any]) -> dict[str, Any]:
    """`request` as a dict, with a class given as `response_format` replaced by its schema."""
    data = dict(request)
    response_format = data.get("response_format")
    if isinstance(response_format, type):
        data["response_format"] = response_format_for(response_format)
    return data


def parse_choice(choice: Choice, schema: type[T], job_id: str) -> T:
    """Validate one choice's message content as `schema`, or raise the error that says why
    it cannot be: refused, truncated, or not valid for `schema`."""
    message = choice.message
    if message.refusal is not None:
        raise StructuredOutputRefusal(job_id, message.refusal)
    if choice.finish_reason == "length":
        raise StructuredOutputTruncated(job_id, message.content)
    if message.content is None:
        reason = "tool calls" if message.tool_calls else "no content"
        raise StructuredOutputInvalid(
            job_id, schema.__name__, [{"type": "missing", "msg": f"the answer has {reason}"}]
        )
    try:
        return pydantic.TypeAdapter(schema).validate_json(message.content)
    except pydantic.ValidationError as error:
        errors = [
            {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()
        ]
        raise StructuredOutputInvalid(job_id, schema.__name__, errors) from None
