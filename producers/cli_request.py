"""`tierq submit`'s options and files, made into one Chat Completions request body.

The body is judged afterwards by the job contract, as any client's is; what is decided here is
only how the command line reads: which option sets which field, what a file may hold, and the
one-line error for a file that cannot be read. `--json-schema FILE` takes each shape a user is
likely to have at hand (see `response_format_from`), so a schema exported by another tool, or a
`response_format` copied from code written for the SDK, works as it is.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierq.core.exit_codes import ExitCode, fail

# Options copied as they are into the request's field of the same name.
SIMPLE_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "n",
    "logprobs",
    "top_logprobs",
    "stream",
    "reasoning_effort",
)
# What JSON Schema's `type` may name; `{"type": "json_object"}` is a response_format, not a
# schema.
SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# Keywords of which a bare JSON Schema at the top of a file has at least one.
SCHEMA_KEYWORDS = frozenset({
    "$schema", "$id", "$ref", "$defs", "definitions", "type", "properties", "items",
    "anyOf", "oneOf", "allOf", "enum", "const",
})  # fmt: skip
# Characters the API's response-format name may not hold (`^[a-zA-Z0-9_-]{1,64}$`).
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_-]+")
NAME_MAX_CHARS = 64


def read_json(source: str) -> Any:
    """The JSON in file `source` (`-`: stdin); a missing file or bad JSON ends the command."""
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as error:
            fail(f"{source}: {error.strerror}", ExitCode.INVALID)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        fail(f"{source}: not valid JSON ({error})", ExitCode.INVALID)


def schema_name(source: str) -> str:
    """A response format's name from the schema file's name: `order form.v2.json` gives
    `order_form_v2`; stdin, or a name with nothing usable, gives `schema`."""
    stem = "" if source == "-" else Path(source).stem
    return _NOT_IN_NAME.sub("_", stem).strip("_")[:NAME_MAX_CHARS] or "schema"


def _is_json_schema(document: dict[str, Any]) -> bool:
    kind = document.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    return bool(SCHEMA_KEYWORDS & document.keys()) and all(k in SCHEMA_TYPES for k in kinds)


def _shape_of(document: Any) -> str:
    if isinstance(document, dict):
        return "an object that is none of these"
    kinds = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(document), "a number")


def response_format_from(document: Any, source: str) -> dict[str, Any]:
    """The `response_format` for `--json-schema`, from any of the three shapes a file may hold:

    - the whole `response_format`: `{"type": "json_schema", "json_schema": {...}}`;
    - its `json_schema` part: `{"name", "schema", "strict", "description"}` (named after the
      file if it has no name);
    - a bare JSON Schema (`{"type": "object", "properties": ...}`), named after the file.

    Anything else ends the command with one line saying what was expected.
    """
    response_format = _recognised(document, source)
    if response_format is None:
        fail(
            f"--json-schema {source}: expected a JSON Schema, its response_format part "
            '({"name", "schema", "strict"}) or a whole response_format ({"type": '
            f'"json_schema", "json_schema": ...}}); the file holds {_shape_of(document)}',
            ExitCode.INVALID,
        )
    return response_format


def _recognised(document: Any, source: str) -> dict[str, Any] | None:
    if not isinstance(document, dict):
        return None
    if document.get("type") == "json_schema" and isinstance(document.get("json_schema"), dict):
        return document
    if isinstance(document.get("schema"), dict):
        return {"type": "json_schema", "json_schema": {"name": schema_name(source), **document}}
    if _is_json_schema(document):
        return {
            "type": "json_schema",
            "json_schema": {"name": schema_name(source), "schema": document},
        }
    return None


def build_labels(items: Sequence[str]) -> dict[str, str]:
    """`--label KEY=VALUE` options as the job's labels (tierq's; the API's `metadata` goes in
    the --request body)."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--label {item!r} is not KEY=VALUE", ExitCode.INVALID)
        labels[key] = value
    return labels


def build_request(options: dict[str, Any]) -> dict[str, Any]:
    """The request body `submit`'s options describe: `--request`'s, then the options over it."""
    request: dict[str, Any] = {}
    if options["request_source"]:
        loaded = read_json(options["request_source"])
        if not isinstance(loaded, dict):
            fail("--request must hold a JSON object", ExitCode.INVALID)
        request.update(loaded)
    messages = list(request.get("messages") or [])
    if options["messages_source"]:
        loaded = read_json(options["messages_source"])
        if not isinstance(loaded, list):
            fail("--messages must hold a JSON list of messages", ExitCode.INVALID)
        messages = loaded
    for role, key in (("system", "system_text"), ("developer", "developer_text")):
        if options[key] is not None:
            messages.append({"role": role, "content": options[key]})
    if options["user_text"] is not None:
        messages.append({"role": "user", "content": options["user_text"]})
    if messages:
        request["messages"] = messages
    if options["model"]:
        request["model"] = options["model"]
    for name in SIMPLE_FIELDS:
        if options[name] is not None:
            request[name] = options[name]
    if options["stop"]:
        request["stop"] = list(options["stop"])
    if options["end_user"] is not None:
        request["user"] = options["end_user"]
    if options["response_format"]:
        request["response_format"] = {"type": options["response_format"]}
    if source := options["json_schema"]:
        request["response_format"] = response_format_from(read_json(source), source)
    if options["tools_source"]:
        request["tools"] = read_json(options["tools_source"])
    choice = options["tool_choice"]
    if choice is not None:
        request["tool_choice"] = (
            choice
            if choice in ("none", "auto", "required")
            else {"type": "function", "function": {"name": choice}}
        )
    if "model" not in request:
        fail("a model is needed: --model, or in --request", ExitCode.INVALID)
    return request
