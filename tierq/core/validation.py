"""pydantic's validation report, retold as the API's field names.

pydantic's error locations include the names of union members it tried ("user" for a
discriminated message, "str" or "list[...]" for `content`, "NamedToolChoice"), which are not
fields a caller can find in a request. `field_path` walks the model's annotations alongside the
location and keeps only what a caller wrote: field names (aliases, as on the wire), list
indexes and dict keys. The result reads `messages.0.content`, `response_format.json_schema.name`.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError

from tierq.core.errors import InvalidJobError


class FieldRuleError(ValueError):
    """A rule across fields, broken; `field` says which parameter to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def describe_validation_error(error: ValidationError, root: type[BaseModel]) -> InvalidJobError:
    """An `InvalidJobError` whose message and `errors` name every refused field."""
    by_field: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        parts = field_path(root, item["loc"])
        message = item["msg"]
        rule = item.get("ctx", {}).get("error")
        if isinstance(rule, FieldRuleError):
            parts.append(rule.field)
            message = str(rule)
        messages = by_field.setdefault(".".join(parts) or "request", [])
        if message not in messages:
            messages.append(message)
    problems = [{"field": field, "message": " or ".join(msgs)} for field, msgs in by_field.items()]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return InvalidJobError(f"invalid job request: {summary}", problems)


def field_path(root: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    path: list[str] = []
    current: Any = root
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the key itself", after the key
            continue
        if current is None and _names_a_type(part):
            # Beyond the declared models (a parameter the SDK's TypedDicts type): pydantic's
            # union member labels are type names, never a caller's field.
            continue
        current = _unwrap(current)
        members = _union_members(current)
        if members is not None:
            # This part names the union member pydantic tried, not a field: skip it.
            current = _member_named(members, part)
            continue
        path.append(str(part))
        current = _child(current, part)
    return path


# pydantic's labels for union members of builtin types, and its prefix for generic ones.
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _names_a_type(part: str | int) -> bool:
    """A location part that is pydantic's label for a union member: a class name
    (`ChatCompletionUserMessageParam`), a builtin type, or a generic (`list[...]`)."""
    if not isinstance(part, str):
        return False
    return part in _TYPE_LABELS or "[" in part or (part[:1].isupper() and part.isidentifier())


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and a `| None` (pydantic adds no location part for either)."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    members = _raw_union_members(annotation)
    if members is not None:
        non_null = [m for m in members if m is not type(None)]
        if len(non_null) == 1:
            return _unwrap(non_null[0])
    return annotation


def _raw_union_members(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return list(typing.get_args(annotation))
    return None


def _union_members(annotation: Any) -> list[Any] | None:
    members = _raw_union_members(annotation)
    if members is None:
        return None
    return [m for m in members if m is not type(None)]


def _member_named(members: list[Any], label: str | int) -> Any:
    """The member pydantic's label points at: a discriminator tag or a type's name."""
    for member in members:
        bare = _unwrap(member)
        if isinstance(bare, type) and issubclass(bare, BaseModel):
            if label == bare.__name__ or _has_tag(bare, label):
                return bare
            continue
        generic = getattr(typing.get_origin(bare), "__name__", None)
        if label == getattr(bare, "__name__", None) or (
            generic and isinstance(label, str) and label.startswith(f"{generic}[")
        ):
            return bare
    return None


def _has_tag(model: type[BaseModel], label: str | int) -> bool:
    for field in model.model_fields.values():
        annotation = field.annotation
        if typing.get_origin(annotation) is Literal and label in typing.get_args(annotation):
            return True
    return False


def _child(current: Any, part: str | int) -> Any:
    """The annotation one step down from `current` at `part`, or None when unknown."""
    if isinstance(current, type) and issubclass(current, BaseModel):
        for name, field in current.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    origin = typing.get_origin(current)
    args = typing.get_args(current)
    if origin is list and args and isinstance(part, int):
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None
