"""Prompt caching: repeated prompt prefixes reported in `usage.prompt_tokens_details.cached_tokens`.

OpenAI's prompt-caching guide: prompts of 1,024 tokens or more are cached automatically; a
request whose prompt starts with a prefix seen recently (same model, exact match) reports that
prefix as cached, counted in steps of 128 tokens after the first 1,024 (so 1,024, 1,152,
1,280...); a prefix left unused for 5 to 10 minutes is evicted. Clients that price cached
tokens, or that keep their static content first to benefit, need those numbers to be real.

How: the prompt is tokenised in the order the model reads it (tool definitions, then each
message), and a running hash of the tokens is taken at every cache boundary (1,024 + 128k).
Each boundary's hash is one entry of a least-recently-used table, so a request's cached count
is its longest boundary already in the table, and serving it puts all its boundaries in (or
refreshes them). Memory is bounded twice: by `MAX_CACHED_PREFIXES` entries of 16 bytes, and by
the time-to-live, measured from each entry's last use. Images are compared by the text of
their URLs.
"""

import hashlib
import json
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tierq_simulator.tokenizer import encoding, encoding_name_for_model

MIN_CACHED_TOKENS = 1024  # shorter prompts are never cached
CACHE_STEP_TOKENS = 128  # cached prefixes grow by this much past the minimum
MAX_CACHED_PREFIXES = 200_000  # boundaries remembered at most; least recently used dropped
_DIGEST_BYTES = 16


class PromptCache:
    """The prefixes served recently, per model; `lookup_and_store` is the only way in."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_prefixes: int = MAX_CACHED_PREFIXES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._max_prefixes = max_prefixes
        self._clock = clock
        self._last_used: OrderedDict[bytes, float] = OrderedDict()  # oldest use first

    def __len__(self) -> int:
        return len(self._last_used)

    def clear(self) -> None:
        """Forget every prefix (`POST /sim/reset`)."""
        self._last_used.clear()

    def lookup_and_store(
        self,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        tools: object,
        prompt_tokens: int,
    ) -> int:
        """The cached tokens of a prompt about to be served; its prefixes are then cached."""
        if prompt_tokens < MIN_CACHED_TOKENS:
            return 0
        now = self._clock()
        self._expire(now)
        boundaries = _boundary_digests(model, prompt_token_ids(messages, tools, model))
        boundaries = [(length, d) for length, d in boundaries if length <= prompt_tokens]
        cached = next(
            (length for length, digest in reversed(boundaries) if digest in self._last_used), 0
        )
        for _, digest in boundaries:
            self._last_used[digest] = now
            self._last_used.move_to_end(digest)
        while len(self._last_used) > self._max_prefixes:
            self._last_used.popitem(last=False)
        return cached

    def _expire(self, now: float) -> None:
        oldest_kept = now - self.ttl_seconds
        while self._last_used:
            digest, used_at = next(iter(self._last_used.items()))
            if used_at > oldest_kept:
                break
            del self._last_used[digest]


def prompt_token_ids(messages: Iterable[Mapping[str, Any]], tools: object, model: str) -> list[int]:
    """The prompt's tokens in reading order: tool definitions, then each message in full."""
    tokenizer = encoding(encoding_name_for_model(model))
    ids: list[int] = []
    parts = [tools] if tools else []
    parts.extend(messages)
    for part in parts:
        text = json.dumps(part, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        ids.extend(tokenizer.encode(text, disallowed_special=()))
    return ids


def _boundary_digests(model: str, ids: list[int]) -> list[tuple[int, bytes]]:
    """(length, hash of model and the first `length` tokens) at every cache boundary."""
    data = array("I", ids).tobytes()
    width = array("I").itemsize
    hasher = hashlib.blake2b(model.encode() + b"\0", digest_size=_DIGEST_BYTES)
    digests: list[tuple[int, bytes]] = []
    start = 0
    for length in range(MIN_CACHED_TOKENS, len(ids) + 1, CACHE_STEP_TOKENS):
        hasher.update(data[start * width : length * width])
        start = length
        digests.append((length, hasher.copy().digest()))
    return digests
