"""The Chat Completions parameters as the installed `openai` SDK types them.

The SDK's request types (`openai.types.chat.completion_create_params`) are the contract's
source of truth for which parameters exist and what type each takes, so a parameter that a
newer SDK adds passes through tierq without a code change. They are TypedDicts; pydantic
validates them here, strictly (JSON types, no coercion) and refusing unknown keys at any depth,
as the API does.

The SDK's types are imported on first use, not at import time: importing anything under
`openai` runs the package's `__init__`, which loads its HTTP client, and commands that never
validate a request (`tierq status`, `tierq result`) should not pay for it. Nothing here calls
the SDK.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError

# What pydantic returns for an `Iterable[...]` field: validated lazily, item by item.
_LAZY = "ValidatorIterator"


@functools.cache
def _request_types() -> tuple[type[Any], type[Any]]:
    """(non-streaming, streaming) request TypedDicts of the installed SDK."""
    from openai.types.chat import completion_create_params as params

    return params.CompletionCreateParamsNonStreaming, params.CompletionCreateParamsStreaming


@functools.cache
def parameter_names() -> frozenset[str]:
    """Every request parameter the installed SDK knows, streaming or not."""
    names: set[str] = set()
    for request_type in _request_types():
        names |= set(typing.get_type_hints(request_type))
    return frozenset(names)


@functools.cache
def _wrapper(streaming: bool) -> type[BaseModel]:
    """A model holding one request as the SDK types it: its config (strict, no unknown keys)
    reaches every TypedDict inside, which a TypeAdapter on the TypedDict itself cannot set."""
    request_type = _request_types()[1 if streaming else 0]
    config = ConfigDict(extra="forbid", strict=True)
    model: type[BaseModel] = create_model("SDKRequest", __config__=config, body=(request_type, ...))
    return model


def unrecognized(name: str) -> InitErrorDetails:
    """The API's refusal of a parameter it does not know."""
    return InitErrorDetails(
        type=PydanticCustomError(
            "unrecognized_argument",
            "Unrecognized request argument supplied: {name}",
            {"name": name},
        ),
        loc=(name,),
        input=None,
    )


def sdk_problems(data: Mapping[str, Any]) -> list[InitErrorDetails]:
    """What the SDK's request type refuses in `data`, located from the request's root.

    Unknown top-level parameters get the API's wording; the rest is pydantic's report on the
    known ones, with lazily validated lists (the SDK types them `Iterable`) walked to the end
    so every item is checked now, not when the body is sent.
    """
    names = parameter_names()
    problems = [unrecognized(name) for name in data if name not in names]
    known = {name: value for name, value in data.items() if name in names}
    try:
        validated = _wrapper(known.get("stream") is True).model_validate({"body": known})
    except ValidationError as error:
        return problems + [_located(item, ()) for item in _details(error, skip=1)]
    body: dict[str, Any] = getattr(validated, "body")  # noqa: B009 - a field of a made model
    return problems + list(_drained(body, ()))


def _drained(value: Any, loc: tuple[str | int, ...]) -> Iterator[InitErrorDetails]:
    """Walk a validated value, iterating every lazy list so its items are validated."""
    if type(value).__name__ == _LAZY:
        try:
            for index, item in enumerate(value):
                yield from _drained(item, (*loc, index))
        except ValidationError as error:
            yield from (_located(item, loc) for item in _details(error, skip=0))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _drained(item, (*loc, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _drained(item, (*loc, index))


def _details(error: ValidationError, skip: int) -> list[InitErrorDetails]:
    """The error's items as details that can build a new `ValidationError`."""
    details: list[InitErrorDetails] = []
    for item in error.errors(include_url=False):
        detail = InitErrorDetails(type=item["type"], loc=item["loc"][skip:], input=item["input"])
        if "ctx" in item:
            detail["ctx"] = item["ctx"]
        if item["type"] not in _BUILTIN_TYPES:
            detail["type"] = PydanticCustomError(item["type"], item["msg"])
        details.append(detail)
    return details


def _located(detail: InitErrorDetails, prefix: tuple[str | int, ...]) -> InitErrorDetails:
    return {**detail, "loc": (*prefix, *detail["loc"])}


@functools.cache
def _builtin_types() -> frozenset[str]:
    from pydantic_core.core_schema import ErrorType

    return frozenset(typing.get_args(ErrorType))


_BUILTIN_TYPES = _builtin_types()
