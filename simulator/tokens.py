"""Token counting: prompts as the API counts them, generated text one word per token.

Prompts are counted with the model's real tokenizer (`tokenizer.py`) under the rules OpenAI's
cookbook ("How to count tokens with tiktoken") documents for Chat Completions:
- every message costs `TOKENS_PER_MESSAGE`, plus the tokens of each of its text fields (role,
  content, name, tool_call_id, ...); a `name` costs `TOKENS_PER_NAME` more;
- every reply is primed with `<|start|>assistant<|message|>`: `TOKENS_FOR_REPLY`;
- tool definitions are rendered as the model sees them: per function a fixed cost, then
  "name:description", and per parameter "name:type:description" and its enum values.
This is the simulator's own count, written from those rules and not from any client's
estimator, so a client that estimates differently is caught by the usage it reads back.

Generated output is made of pieces (a word or a punctuation mark with the whitespace before
it) and each piece is one completion token, so joined stream deltas give back the text exactly.
"""

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tierq_simulator.tokenizer import encoding, encoding_name_for_model

# A token is a word or one punctuation mark, with the whitespace before it attached so
# that joining the pieces gives back the text exactly (needed for streamed deltas).
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")

# The rate limiter's estimate of a request's size before counting it: about 4 characters per
# token, OpenAI's rule of thumb for English text.
CHARACTERS_PER_TOKEN = 4
# The chat format's overhead, from the cookbook: per message, per name, and for the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_FOR_REPLY = 3
# The cookbook's costs of the tool definitions' format, for o200k models (gpt-4o and later).
TOOL_FUNCTION_START = 7
TOOL_PROPERTIES_START = 3
TOOL_PROPERTY = 3
TOOL_ENUM_START = -3
TOOL_ENUM_ITEM = 3
TOOLS_END = 12
# Older cl100k models (gpt-4, gpt-3.5-turbo) pay more to start each function.
TOOL_FUNCTION_START_CL100K = 10
# An image, which the simulator does not decode: the vision guide's 85 tokens at "low" detail,
# else the cost of a 1024x1024 image at high detail (85 + 4 tiles of 170).
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_HIGH = 765
# Content parts whose characters are not text (left out of the character estimate).
_NOT_TEXT_PARTS = frozenset({"image_url", "input_audio", "file"})


def split_tokens(text: str) -> list[str]:
    """Split text into token pieces whose concatenation is exactly `text`."""
    pieces: list[str] = _PIECE.findall(text)
    if not pieces:
        return [text] if text else []
    if text[-1].isspace():
        # Trailing whitespace has no token of its own; keep it on the last piece.
        pieces[-1] += text[len(text.rstrip()) :]
    return pieces


def count_tokens(text: str) -> int:
    """Count the tokens of generated text (one per piece)."""
    return len(split_tokens(text))


def count_text_tokens(text: str, model: str) -> int:
    """Tokens of `text` in `model`'s real encoding (special tokens counted as plain text)."""
    if not text:
        return 0
    return len(encoding(encoding_name_for_model(model)).encode(text, disallowed_special=()))


def count_prompt_tokens(
    messages: Iterable[Mapping[str, Any]], tools: list[Any] | None = None, model: str = "gpt-4o"
) -> int:
    """A request's prompt tokens, as the API reports them in `usage.prompt_tokens`."""
    tokens = TOKENS_FOR_REPLY
    for message in messages:
        tokens += _message_tokens(message, model)
    if tools:
        tokens += _tools_tokens(tools, model)
    return tokens


def estimate_tokens_from_characters(
    messages: Iterable[Mapping[str, Any]], tools: object = None
) -> int:
    """A request's size as a rate limiter estimates it without a tokenizer: the characters of
    every string in its messages and tool definitions, `CHARACTERS_PER_TOKEN` to a token.

    Images, audio and files are left out: their encoded bytes say nothing of their tokens.
    """
    characters = _characters(list(messages)) + _characters(tools)
    return -(-characters // CHARACTERS_PER_TOKEN)


def _characters(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        if value.get("type") in _NOT_TEXT_PARTS:
            return 0
        return sum(_characters(item) for item in value.values())
    if isinstance(value, list):
        return sum(_characters(item) for item in value)
    return 0


def _message_tokens(message: Mapping[str, Any], model: str) -> int:
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if isinstance(value, str):
            tokens += count_text_tokens(value, model)
            if key == "name":
                tokens += TOKENS_PER_NAME
        elif key == "content":
            tokens += _parts_tokens(value or [], model)
        elif key == "tool_calls":
            for call in value or []:
                tokens += _call_tokens(call.get("function") or call.get("custom") or {}, model)
        elif key == "function_call":
            tokens += _call_tokens(value or {}, model)
    return tokens


def _parts_tokens(parts: Iterable[Mapping[str, Any]], model: str) -> int:
    tokens = 0
    for part in parts:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            tokens += count_text_tokens(str(part.get(kind, "")), model)
        elif kind == "image_url":
            low = (part.get("image_url") or {}).get("detail") == "low"
            tokens += IMAGE_TOKENS_LOW if low else IMAGE_TOKENS_HIGH
    return tokens


def _call_tokens(call: Mapping[str, Any], model: str) -> int:
    """A tool call the assistant made: its name and its arguments (a custom tool's input)."""
    arguments = call.get("arguments", call.get("input", ""))
    return count_text_tokens(str(call.get("name", "")), model) + count_text_tokens(
        str(arguments), model
    )


def _tools_tokens(tools: Iterable[Mapping[str, Any]], model: str) -> int:
    cl100k = encoding_name_for_model(model) == "cl100k_base"
    start = TOOL_FUNCTION_START_CL100K if cl100k else TOOL_FUNCTION_START
    tokens = TOOLS_END
    for tool in tools:
        function = tool.get("function") or tool.get("custom") or {}
        tokens += start
        line = f"{function.get('name', '')}:{_sentence(function.get('description'))}"
        tokens += count_text_tokens(line, model)
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            tokens += TOOL_PROPERTIES_START
        for name, schema in properties.items():
            tokens += TOOL_PROPERTY
            if "enum" in schema:
                tokens += TOOL_ENUM_START
                for item in schema["enum"]:
                    tokens += TOOL_ENUM_ITEM + count_text_tokens(str(item), model)
            kind = schema.get("type", "")
            kind = kind if isinstance(kind, str) else json.dumps(kind)
            line = f"{name}:{kind}:{_sentence(schema.get('description'))}"
            tokens += count_text_tokens(line, model)
    return tokens


def _sentence(description: Any) -> str:
    """A description as the tool format writes it: without its final full stop."""
    text = str(description or "")
    return text.removesuffix(".")
