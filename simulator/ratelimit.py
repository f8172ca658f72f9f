"""Per-model request and token limits, enforced and reported the way the OpenAI API does.

Enforcement: the API does not count fixed minutes. Each limit is a bucket that refills
continuously at limit/60 per second and holds at most limit x window_seconds / 60 (so with
the default 1 s window a 600 RPM limit admits a burst of 10, then 10 per second). A request
needs one request and its token cost (`ChatRequest.token_cost`, the API's estimate: the
larger of its output cap and its characters / 4); once its answer is generated the token
bucket is settled with the real usage (`Admission.settle`): it gets back, or is charged, the
difference with prompt + completion tokens. A request costing more tokens than the bucket can
ever hold is admitted once the bucket is full, taking the level below zero, so large prompts
are slowed, not starved.

Refused requests count, as the API's guide says unsuccessful requests do: a 429, or a 400
for a named model, takes its one request, so a client that retries before the `retry-after`
it was given only pushes its wait further (by at most one window: the debt refusals can run
up stops at the bucket's capacity below zero). It takes no tokens: nothing was processed,
and a refused request charged its tokens would refuse its own retries for as long as a
large request takes to fit, the starvation the admission rule above exists to prevent.

Reporting: every answer for a model with a limit carries `x-ratelimit-*` headers about the
per-minute budget, as the API's do: `limit` is the per-minute limit, `remaining` the limit
minus what the last minute's charges still weigh, and `reset` how long until the whole
per-minute budget is back. Charges weigh as the budget refills, continuously (one request of
a 60 RPM limit is back after 1 s: the API's documented sample reads 59 remaining, reset
`1s`). Since both views refill at the same rate from the same charges, what is used is one
number per bucket: the enforcement bucket's capacity minus its level.
"""

import math
import time
from collections.abc import Callable

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

    __slots__ = ("capacity", "level", "limit_per_minute", "rate_per_second", "updated_at")

    def __init__(self, limit_per_minute: int, window_seconds: float, now: float) -> None:
        self.limit_per_minute = limit_per_minute
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

    def take_refused(self, amount: float) -> None:
        """Charge a refused request, running up at most one bucket of debt."""
        self.level = max(self.level - amount, min(self.level, -self.capacity))

    def settle(self, difference: float, now: float) -> None:
        """Give back (positive) or charge (negative) what a reservation got wrong."""
        self.refill(now)
        self.level = min(self.capacity, self.level + difference)

    @property
    def used(self) -> float:
        """What the charges of the last minute still weigh (they fade as the bucket refills)."""
        return max(0.0, self.capacity - self.level)

    def remaining_this_minute(self) -> int:
        """The per-minute limit minus what is used: the API's `x-ratelimit-remaining-*`."""
        return max(0, math.floor(self.limit_per_minute - self.used + _EPSILON))

    def seconds_to_full(self) -> float:
        """How long until nothing is used: the API's `x-ratelimit-reset-*`."""
        return self.used / self.rate_per_second


class Admission:
    """The limiter's verdict: headers for the answer, the 429 to send if refused, and the
    token reservation to settle once the real usage is known."""

    __slots__ = ("_charged", "_clock", "_tokens", "headers", "refusal")

    def __init__(
        self,
        headers: dict[str, str],
        refusal: ApiError | None = None,
        tokens: TokenBucket | None = None,
        charged: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.headers = headers
        self.refusal = refusal
        self._tokens = tokens
        self._charged = charged
        self._clock = clock

    def settle(self, used_tokens: int) -> None:
        """Correct the token bucket from the estimate charged to `used_tokens` (once)."""
        if self._tokens is not None:
            self._tokens.settle(self._charged - used_tokens, self._clock())
            self._tokens = None


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

    def _buckets_for(self, model: str) -> tuple[TokenBucket | None, TokenBucket | None]:
        now = self._clock()
        buckets = self._buckets.get(model)
        if buckets is None:
            buckets = (
                TokenBucket(self.rpm, self.window_seconds, now) if self.rpm else None,
                TokenBucket(self.tpm, self.window_seconds, now) if self.tpm else None,
            )
            self._buckets[model] = buckets
        for bucket in buckets:
            if bucket is not None:
                bucket.refill(now)
        return buckets

    def admit(self, model: str, token_cost: int) -> Admission:
        """Take one request and `token_cost` tokens for `model`, or refuse with a 429."""
        if not self.enabled:
            return Admission(headers={})
        requests, tokens = self._buckets_for(model)
        refusal: ApiError | None = None
        if requests is not None and requests.shortfall_seconds(1) > 0:
            used = round(requests.used)
            requests.take_refused(1)
            refusal = _refusal(model, "requests", self.rpm, used, 1, _wait(requests, tokens, 0))
        elif tokens is not None and tokens.shortfall_seconds(token_cost) > 0:
            if requests is not None:
                requests.take_refused(1)
            wait = _wait(requests, tokens, token_cost)
            refusal = _refusal(model, "tokens", self.tpm, round(tokens.used), token_cost, wait)
        else:
            if requests is not None:
                requests.level -= 1
            if tokens is not None:
                tokens.level -= token_cost
        headers = _headers(requests, tokens)
        if refusal is not None:
            refusal.headers.update(headers)
            return Admission(headers, refusal)
        return Admission(headers, tokens=tokens, charged=token_cost, clock=self._clock)

    def count_refused(self, model: str) -> dict[str, str]:
        """Take the one request of a request refused before admission (a 400 naming `model`);
        return the headers its answer carries."""
        if not self.enabled:
            return {}
        requests, tokens = self._buckets_for(model)
        if requests is not None:
            requests.take_refused(1)
        return _headers(requests, tokens)


def _wait(requests: TokenBucket | None, tokens: TokenBucket | None, token_cost: int) -> float:
    """How long until both buckets hold what a request needs."""
    return max(
        requests.shortfall_seconds(1) if requests is not None else 0.0,
        tokens.shortfall_seconds(token_cost) if tokens is not None else 0.0,
    )


def _headers(requests: TokenBucket | None, tokens: TokenBucket | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, bucket in (("requests", requests), ("tokens", tokens)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit_per_minute)
            headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining_this_minute())
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.seconds_to_full())
    return headers


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
