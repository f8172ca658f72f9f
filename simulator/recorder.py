"""What the simulator was asked and how it answered, for tests and benchmarks to inspect.

Records keep the raw body bytes and decode them only when read, so recording costs one
append per request. The `Authorization` header is never kept. Records live in a ring
buffer of `record_limit` entries; counters in `Stats` are never dropped.
"""

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json

# Status recorded when the connection was closed without any response (`fail=disconnect`).
NO_RESPONSE_STATUS = 0


@dataclass(slots=True)
class Record:
    """One chat completion request and the status it was answered with."""

    received_at: float
    body: bytes
    status: int
    fault: str | None

    def as_json(self) -> dict[str, Any]:
        """The record as `GET /sim/requests` lists it, with the body decoded."""
        try:
            body: Any = from_json(self.body)
        except ValueError:
            body = self.body.decode(errors="replace")
        return {
            "received_at": self.received_at,
            "body": body,
            "status": self.status,
            "fault": self.fault,
        }


@dataclass(slots=True)
class Stats:
    """Counters over every chat completion request since start (or the last reset)."""

    started_at: float = field(default_factory=time.time)
    requests_total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0  # 429s from the RPM/TPM limiter (injected 429s not included)
    faults: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0  # in answered (200) requests
    completion_tokens: int = 0
    in_flight: int = 0  # requests being answered right now
    peak_in_flight: int = 0  # the most answered at once: proves a client's concurrency

    def enter(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def as_json(self) -> dict[str, Any]:
        """The counters as `GET /sim/stats` returns them."""
        return {
            "started_at": self.started_at,
            "requests_total": self.requests_total,
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "responses_429": self.by_status[429],
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }


class Recorder:
    """Ring buffer of request records plus running counters."""

    def __init__(self, limit: int) -> None:
        self._records: deque[Record] = deque(maxlen=limit)
        self.stats = Stats()

    def add(
        self,
        received_at: float,
        body: bytes,
        status: int,
        *,
        fault: str | None = None,
        rate_limited: bool = False,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Record one request's outcome."""
        self._records.append(Record(received_at, body, status, fault))
        stats = self.stats
        stats.requests_total += 1
        stats.by_status[status] += 1
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        if rate_limited:
            stats.rate_limited += 1
        if fault is not None:
            stats.faults[fault] += 1

    def records(self, model: str | None = None) -> list[dict[str, Any]]:
        """The kept records, oldest first, optionally only those for `model`."""
        listed = [record.as_json() for record in self._records]
        if model is None:
            return listed
        return [
            entry
            for entry in listed
            if isinstance(entry["body"], dict) and entry["body"].get("model") == model
        ]

    def clear_records(self) -> int:
        """Drop the kept records; return how many there were."""
        count = len(self._records)
        self._records.clear()
        return count

    def reset_stats(self) -> None:
        """Start the counters again from zero."""
        self.stats = Stats()
