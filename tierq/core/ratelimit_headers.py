"""What the API says about its budget in `x-ratelimit-*` headers, parsed.

The API sends, on answers and on 429s: `x-ratelimit-limit-requests|tokens` (the per-minute
limits), `x-ratelimit-remaining-requests|tokens` and `x-ratelimit-reset-requests|tokens` (time
until the budget is full again, as `1s`, `120ms`, `6m0s`, `1h2m3.5s`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration_seconds(value: str | None) -> float | None:
    """`6m0s` → 360.0, `120ms` → 0.12, `1.5` (bare seconds) → 1.5; None when unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_seconds: float | None = None
    reset_tokens_seconds: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders:
        return cls(
            limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
            limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
            remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
            remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
            reset_requests_seconds=parse_duration_seconds(
                headers.get("x-ratelimit-reset-requests")
            ),
            reset_tokens_seconds=parse_duration_seconds(headers.get("x-ratelimit-reset-tokens")),
        )

    def exhausted_for_seconds(self, next_cost_tokens: int) -> float:
        """How long until the API has room for another call like this one (0: room now).

        The budget refills continuously, so the wait is the shortfall at the per-minute rate,
        never more than the API's own time to a full budget.
        """
        return max(
            _shortfall_seconds(
                1, self.remaining_requests, self.limit_requests, self.reset_requests_seconds
            ),
            _shortfall_seconds(
                next_cost_tokens,
                self.remaining_tokens,
                self.limit_tokens,
                self.reset_tokens_seconds,
            ),
        )


def _shortfall_seconds(
    needed: int, remaining: int | None, limit: int | None, reset_seconds: float | None
) -> float:
    if remaining is None or remaining >= needed:
        return 0.0
    full = reset_seconds if reset_seconds is not None else 60.0
    if not limit:
        return full
    return min(full, (needed - remaining) * 60.0 / limit)
