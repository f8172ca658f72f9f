"""Per-model request and token limits, enforced the way the OpenAI API enforces them.

The API does not count fixed minutes: each limit is a bucket that refills continuously at
limit/60 per second and holds at most limit x window_seconds / 60 (so with the default 1 s
window a 600 RPM limit admits a burst of 10, then 10 per second). A request needs one
request and its token cost; it is refused with a 429, consuming nothing, when either bucket
is short. A request costing more tokens than the bucket can ever hold is admitted once the
bucket is full, taking the level below zero, so large prompts are slowed, not starved.

Every answer to an admitted or refused request carries `x-ratelimit-*` headers describing
the buckets: `remaining` is what could be admitted right now and `reset` is how long the
bucket takes to refill completely.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from tierq_simulator.errors import ApiError, rate_limit_message

_EPSILON = 1e-9  # float slack so a bucket refilled to exactly 1.0 admits


def format_duration(seconds: float) -> str:
    """Format a wait the way the API's headers do: `120ms`, `1s`, `1.5s`, `6m0s`."""
    millis = max(0, math.ceil(seconds * 1000 - _EPSILON))  # round up: waiting this long works
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs = f"{millis // 1000}" if millis % 1000 == 0 else f"{millis / 1000:.3f}".rstrip("0")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class TokenBucket:
    """A continuously refilling bucket; `level` may go negative after an oversized request."""

    __slots__ = ("capacity", "level", "rate_per_second", "updated_at")

    def __init__(self, limit_per_minute: int, window_seconds: float, now: float) -> None:
        self.rate_per_second = limit_per_minute / 60.0
        self.capacity = max(1.0, limit_per_minute * window_seconds / 60.0)
        self.level = self.capacity
        self.updated_at = now

    def refill(self, now: float) -> None:
        """Add what has dripped in since the last look, up to capacity."""
        elapsed = now - self.updated_at
        if elapsed > 0:
            self.level = min(self.capacity, self.level + elapsed * self.rate_per_second)
            self.updated_at = now

    def shortfall_seconds(self, needed: float) -> float:
        """How long until the bucket holds `needed` (capped at its capacity); 0 if it does."""
        needed = min(needed, self.capacity)
        if self.level + _EPSILON >= needed:
            return 0.0
        return (needed - self.level) / self.rate_per_second

    def used_of(self, limit_per_minute: int) -> int:
        """How much of the per-minute limit counts as used, for the 429 message."""
        share_left = max(0.0, self.level) / self.capacity
        return limit_per_minute - math.floor(share_left * limit_per_minute)

    def seconds_to_full(self) -> float:
        """How long until the bucket is back to capacity."""
        return max(0.0, (self.capacity - self.level) / self.rate_per_second)


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's verdict: headers for the answer and, if refused, the 429 to send."""

    headers: dict[str, str]
    refusal: ApiError | None = None


_UNLIMITED = Admission(headers={})


class RateLimiter:
    """In-memory RPM and TPM buckets, one pair per model name as requested."""

    def __init__(
        self,
        rpm: int,
        tpm: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window_seconds = window_seconds
        self._clock = clock
        self._buckets: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.rpm > 0 or self.tpm > 0

    def _buckets_for(self, model: str, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        buckets = self._buckets.get(model)
        if buckets is None:
            buckets = (
                TokenBucket(self.rpm, self.window_seconds, now) if self.rpm else None,
                TokenBucket(self.tpm, self.window_seconds, now) if self.tpm else None,
            )
            self._buckets[model] = buckets
        return buckets

    def admit(self, model: str, token_cost: int) -> Admission:
        """Take one request and `token_cost` tokens for `model`, or refuse with a 429."""
        if not self.enabled:
            return _UNLIMITED
        now = self._clock()
        requests, tokens = self._buckets_for(model, now)
        if requests is not None:
            requests.refill(now)
        if tokens is not None:
            tokens.refill(now)

        refusal: ApiError | None = None
        if requests is not None and (wait := requests.shortfall_seconds(1)) > 0:
            refusal = _refusal(model, "requests", self.rpm, requests.used_of(self.rpm), 1, wait)
        elif tokens is not None and (wait := tokens.shortfall_seconds(token_cost)) > 0:
            used = tokens.used_of(self.tpm)
            refusal = _refusal(model, "tokens", self.tpm, used, token_cost, wait)
        else:
            if requests is not None:
                requests.level -= 1
            if tokens is not None:
                tokens.level -= token_cost

        headers: dict[str, str] = {}
        if requests is not None:
            headers["x-ratelimit-limit-requests"] = str(self.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, math.floor(requests.level)))
            headers["x-ratelimit-reset-requests"] = format_duration(requests.seconds_to_full())
        if tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(self.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(tokens.level)))
            headers["x-ratelimit-reset-tokens"] = format_duration(tokens.seconds_to_full())
        if refusal is not None:
            refusal.headers.update(headers)
        return Admission(headers=headers, refusal=refusal)


def retry_after_headers(seconds: float) -> dict[str, str]:
    """`retry-after` (seconds, may be fractional) and `retry-after-ms` for a wait."""
    millis = max(0, math.ceil(seconds * 1000 - _EPSILON))
    seconds_text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    return {"retry-after": seconds_text, "retry-after-ms": str(millis)}


def _refusal(model: str, kind: str, limit: int, used: int, requested: int, wait: float) -> ApiError:
    message = rate_limit_message(model, kind, limit, used, requested, format_duration(wait))
    return ApiError(
        429, message, type=kind, code="rate_limit_exceeded", headers=retry_after_headers(wait)
    )
