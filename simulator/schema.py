"""Build a JSON value that validates against a JSON Schema, for structured outputs and tools.

Clients of `response_format: json_schema` and of tool calls parse and validate what the
model returns (the openai SDK's `parse()` feeds it to pydantic), so simulated answers must
be valid instances. Covered: `type` (object, array, string, number, integer, boolean,
null, or a list of them), `properties`, `required`, `items`, `prefixItems`, `minItems`,
`maxItems`, `uniqueItems`, `enum`, `const`, `minimum`/`maximum` and their exclusive forms,
`minLength`/`maxLength`, common string `format`s, `anyOf`/`oneOf`/`allOf`, and local `$ref`s
(`#/$defs/...`, as pydantic emits them). Not covered: `pattern`, `not`, `if`/`then`,
`dependentRequired`, `multipleOf` for non-integers.
"""

import uuid
from collections.abc import Mapping
from random import Random
from typing import Any

from tierq_simulator.vocabulary import WORDS, phrase

MAX_DEPTH = 6  # past this, only required properties and minimum items (recursive schemas)

_FORMATS = {
    "date-time": lambda rng: f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T09:30:00Z",
    "date": lambda rng: f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
    "time": lambda rng: f"{rng.randint(10, 23)}:30:00",
    "email": lambda rng: f"{rng.choice(WORDS)}@example.com",
    "uri": lambda rng: f"https://example.com/{rng.choice(WORDS)}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
}


def instance_for(schema: object, rng: Random) -> Any:
    """A random value valid for `schema` (the root of any `$ref`s it contains)."""
    root = schema if isinstance(schema, Mapping) else {}
    return _Builder(root, rng).build(schema, 0)


class _Builder:
    def __init__(self, root: Mapping[str, Any], rng: Random) -> None:
        self.root = root
        self.rng = rng

    def resolve(self, ref: str) -> object:
        node: object = self.root
        for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node

    def build(self, schema: object, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return None if schema is False else phrase(self.rng, 2)
        if "$ref" in schema:
            return self.build(self.resolve(str(schema["$ref"])), depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.build(self._pick_branch(list(schema[key]), depth), depth + 1)
        if schema.get("allOf"):
            return self.build(_merge(schema, list(schema["allOf"])), depth + 1)
        kind = self._kind(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _kind(self, schema: Mapping[str, Any]) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            concrete = [k for k in kind if k != "null"]
            return str(concrete[0]) if concrete else "null"
        if isinstance(kind, str):
            return kind
        if "properties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def _pick_branch(self, branches: list[object], depth: int) -> object:
        def is_null(branch: object) -> bool:
            return isinstance(branch, Mapping) and branch.get("type") == "null"

        if depth >= MAX_DEPTH and any(is_null(b) for b in branches):
            return next(b for b in branches if is_null(b))
        return next((b for b in branches if not is_null(b)), branches[0])

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        return {
            name: self.build(sub, depth + 1)
            for name, sub in properties.items()
            if depth < MAX_DEPTH or name in required
        }

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = list(schema.get("prefixItems") or ())
        low = int(schema.get("minItems", 0 if depth >= MAX_DEPTH else 1))
        high = int(schema.get("maxItems", max(low, 3)))
        count = max(self.rng.randint(low, max(low, high)), min(len(prefix), high))
        items = schema.get("items", {})
        values: list[Any] = []
        seen: set[str] = set()
        for _ in range(count * 4):
            if len(values) == count:
                break
            position = len(values)
            value = self.build(prefix[position] if position < len(prefix) else items, depth + 1)
            if schema.get("uniqueItems"):
                key = repr(value)
                if key in seen:
                    continue
                seen.add(key)
            values.append(value)
        return values

    def _integer(self, schema: Mapping[str, Any]) -> int:
        low, high = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first = -(-int(low) // step)
            return step * self.rng.randint(first, max(first, int(high) // step))
        return self.rng.randint(int(low), int(high))

    def _number(self, schema: Mapping[str, Any]) -> float:
        low, high = _bounds(schema, integer=False)
        value = round(self.rng.uniform(low, high), 2)
        return min(max(value, low), high)

    def _string(self, schema: Mapping[str, Any]) -> str:
        make = _FORMATS.get(str(schema.get("format", "")))
        if make is not None:
            return make(self.rng)
        text = phrase(self.rng, self.rng.randint(1, 3))
        min_length = int(schema.get("minLength", 0))
        while len(text) < min_length:
            text += " " + self.rng.choice(WORDS)
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text


def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float, float]:
    nudge = 1 if integer else 0.01
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + nudge
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - nudge
    if low is None:
        low = 0 if high is None or high >= 0 else high - 100
    if high is None:
        high = low + 100
    if integer:
        low, high = -(-low // 1), high // 1  # integers inside the bounds
    return float(low), float(max(low, high))


def _merge(schema: Mapping[str, Any], parts: list[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged
