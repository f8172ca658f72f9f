"""Behaviour directives that a test embeds in a prompt to steer one request.

Tests and demos drive every error path through the ordinary client by writing a directive
into any message's text; nothing outside the request body is needed, so retries of the
same body see the same directive.

Grammar::

    directive := "[sim" { WHITESPACE key "=" value } [WHITESPACE] "]"
    value     := one or more characters other than whitespace and "]"

A directive may appear anywhere in the text of any message (string content or `text`
content parts, any role). Several directives merge; for a key given twice, the later one
(in message order) wins. An unknown key or a bad value is answered with a 400, so a typo
never passes silently. Keys:

``fail=KIND``
    ``429``, ``500``, ``502``, ``503``, ``400``, ``401``, ``403``, ``404``, ``422``: answer
    with that status in the API's error shape; ``timeout``: hang for ``delay`` seconds
    before answering normally, so the client times out first; ``disconnect``: close the
    connection without any response; ``stream_cut``: close the connection after ``after``
    chunks of a stream (a non-streamed answer: halfway through its body); ``stream_error``:
    send the API's mid-stream error event after ``after`` chunks and end the stream there
    (a non-streamed request gets that error as a 500).
``after=N``
    How many chunks a stream sends before a ``stream_cut`` or ``stream_error``; default 0
    (the stream's headers, then the fault). Counted in ``chat.completion.chunk`` events.
``times=N``
    Fail only the first N times this exact body is seen (counted by sha256 of the canonical
    JSON body), then answer normally. Default: fail every time.
``retry_after=SECONDS``
    Float; sent as ``retry-after`` and ``retry-after-ms`` headers on the error answer.
``code=CODE``
    Error code of the answer, worded as the API words it: ``insufficient_quota`` (429,
    type ``insufficient_quota``), ``context_length_exceeded`` (400), ``rate_limit_exceeded``
    (429), ``invalid_api_key`` (401), ``model_not_found`` (404), ``server_error`` (500).
    Without ``fail=``, the status comes from that list (400 for any other code).
``delay=SECONDS``
    How long ``fail=timeout`` hangs; default 30 s (``SimulatorConfig.timeout_fault_seconds``).
``latency_ms=N``
    This request's latency, replacing the server's ``--latency-ms``.
``chunk_delay_ms=N``
    This stream's delay between two chunks, replacing the server's ``--chunk-delay-ms``.
``tokens=N``
    Length of each generated text answer, in tokens (before ``stop``/``max_tokens`` cut it).
``flex=unavailable``
    A request served at ``service_tier="flex"`` is answered with the 429 flex gives when it
    has no capacity (code ``resource_unavailable``, nothing billed); other tiers ignore it.
``refuse=yes``
    Answer with a refusal, as the API does when a model declines a structured-output
    request: ``message.refusal`` holds the text, ``content`` is null, ``finish_reason`` is
    ``stop``.

Example: ``Summarise this. [sim fail=429 times=2 retry_after=0.5]``.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

MARKER = "[sim"  # cheap substring test before any regex work
FAIL_KINDS = frozenset(
    {"429", "500", "502", "503", "400", "401", "403", "404", "422", "timeout", "disconnect"}
    | {"stream_cut", "stream_error"}
)

_DIRECTIVE = re.compile(r"\[sim(?=[\s\]])([^\]]*)\]")


class DirectiveError(ValueError):
    """Raised when a `[sim ...]` directive has an unknown key or a bad value."""


@dataclass(frozen=True, slots=True)
class Directives:
    """What the directives of one request ask for; `None` means not asked."""

    fail: str | None = None
    times: int | None = None
    retry_after_seconds: float | None = None
    code: str | None = None
    delay_seconds: float | None = None
    latency_ms: float | None = None
    chunk_delay_ms: float | None = None
    after: int | None = None
    tokens: int | None = None
    refuse: bool = False
    flex_unavailable: bool = False

    @property
    def wants_fault(self) -> bool:
        """Whether these directives ask for a fault (an error, a hang or a disconnect)."""
        return self.fail is not None or self.code is not None


NO_DIRECTIVES = Directives()


def _non_negative_float(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DirectiveError(f"[sim {key}=...] expects a number of seconds, got {raw!r}") from None
    if not value >= 0:  # also rejects nan
        raise DirectiveError(f"[sim {key}=...] must not be negative, got {raw!r}")
    return value


def _non_negative_int(key: str, raw: str) -> int:
    if not raw.isdigit():
        raise DirectiveError(f"[sim {key}=...] expects a non-negative integer, got {raw!r}")
    return int(raw)


def _fail_kind(key: str, raw: str) -> str:
    if raw not in FAIL_KINDS:
        raise DirectiveError(f"[sim fail=...] expects one of {sorted(FAIL_KINDS)}, got {raw!r}")
    return raw


def _code(key: str, raw: str) -> str:
    return raw


def _unavailable(key: str, raw: str) -> bool:
    if raw != "unavailable":
        raise DirectiveError(f"[sim {key}=...] expects 'unavailable', got {raw!r}")
    return True


def _yes(key: str, raw: str) -> bool:
    if raw != "yes":
        raise DirectiveError(f"[sim {key}=...] expects 'yes', got {raw!r}")
    return True


# key in the text -> (Directives field, value parser)
_KEYS = {
    "fail": ("fail", _fail_kind),
    "times": ("times", _non_negative_int),
    "retry_after": ("retry_after_seconds", _non_negative_float),
    "code": ("code", _code),
    "delay": ("delay_seconds", _non_negative_float),
    "latency_ms": ("latency_ms", _non_negative_float),
    "chunk_delay_ms": ("chunk_delay_ms", _non_negative_float),
    "after": ("after", _non_negative_int),
    "tokens": ("tokens", _non_negative_int),
    "refuse": ("refuse", _yes),
    "flex": ("flex_unavailable", _unavailable),
}


def parse_text(text: str, into: Directives = NO_DIRECTIVES) -> Directives:
    """Merge the directives found in `text` into `into`."""
    for match in _DIRECTIVE.finditer(text):
        changes: dict[str, Any] = {}
        for pair in match.group(1).split():
            key, sep, raw = pair.partition("=")
            if key not in _KEYS or not sep or not raw:
                raise DirectiveError(
                    f"bad [sim] directive item {pair!r}; expected key=value with key in "
                    f"{sorted(_KEYS)}"
                )
            name, parse = _KEYS[key]
            changes[name] = parse(key, raw)
        if changes:
            into = replace(into, **changes)
    return into


def _texts(content: object) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]


def parse_messages(messages: Iterable[Mapping[str, Any]]) -> Directives:
    """Collect the directives from every message's text."""
    found = NO_DIRECTIVES
    for message in messages:
        for text in _texts(message.get("content")):
            if MARKER in text:
                found = parse_text(text, found)
    return found
