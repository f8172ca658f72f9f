"""Cheap, deterministic token counting for prompts and generated text.

The simulator must count tokens on every request without the cost (or the download) of a
real BPE tokenizer, yet its counts must be stable and roughly proportional to the real
ones so that usage figures, TPM limits and context-window checks behave plausibly. A token
here is one regex piece, a run of word characters or a single punctuation mark, and every
message carries the fixed overheads of OpenAI's cookbook counting recipe.

`split_tokens` is the one tokenizer: swap it for a real one (e.g. tiktoken) and everything
else, counting included, follows.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

TOKENS_PER_MESSAGE = 3  # role and separators around each message (cookbook recipe)
TOKENS_PER_NAME = 1  # extra cost of a message's optional `name` field
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>

# A token is a word or one punctuation mark, with the whitespace before it attached so
# that joining the pieces gives back the text exactly (needed for streamed deltas).
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")


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
    """Count the tokens in a piece of text."""
    return len(split_tokens(text))


def count_value_tokens(value: object) -> int:
    """Count the tokens in a JSON value: its strings, plus one per number or boolean.

    Used for non-text message fields (content parts, tool calls) and tool definitions,
    which the API also bills as prompt tokens.
    """
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, Mapping):
        return sum(count_value_tokens(item) for item in value.values())
    if isinstance(value, list):
        return sum(count_value_tokens(item) for item in value)
    if value is None:
        return 0
    return 1


def count_prompt_tokens(
    messages: Iterable[Mapping[str, Any]], tools: list[Any] | None = None
) -> int:
    """Count a request's prompt tokens the way OpenAI's cookbook estimates them."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += count_value_tokens(value)
            if key == "name":
                total += TOKENS_PER_NAME
    if tools:
        total += count_value_tokens(tools)
    return total
