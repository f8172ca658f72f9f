"""The fleet-wide memory guard: new work is refused while Redis is nearly full.

Redis holds the queues, the job records, the results and the gateway's files. Once it reaches
its `maxmemory`, every write fails (with the default `noeviction` policy), including the writes
that let queued jobs finish: a worker could not store a result, a gateway could not record an
acknowledgement. So the producers stop adding work a little before that, at
`TIERQ_REDIS_MEMORY_GUARD_FRACTION` (0.9) of `maxmemory`, and answer `StoreFullError` (HTTP 507
in the gateway); what is already queued still fits and drains.

    guard = MemoryGuard(client, settings.redis_memory_guard_fraction)         # redis.Redis
    guard.check()           # raises StoreFullError once used_memory >= fraction * maxmemory

    guard = AsyncMemoryGuard(client, settings.redis_memory_guard_fraction)    # redis.asyncio
    await guard.check()

`check()` costs nothing per call: the reading (`INFO memory`: `used_memory`, `maxmemory`) is
taken at most once a second (`READING_MAX_AGE_SECONDS`) per guard, so a process keeps one guard
and calls it before every submission. Concurrent async callers share one reading: while a
fresh one is being taken they are judged by the last. A Redis without `maxmemory` (0) is not
guarded, nor is any Redis when the fraction is 1; the guard then still reads Redis once a
second, so a `CONFIG SET maxmemory` takes effect without a restart. A Redis that cannot be
reached raises redis-py's error, as the submission itself would.

The judgement is sans-IO (`MemoryReading`, `GuardState`), written once for both faces, as the
producers' `Waiter` is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from tierq.core.errors import StoreFullError

# How old a reading of Redis's memory may be before the next check takes a fresh one.
READING_MAX_AGE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """What `INFO memory` said: bytes in use, and the configured ceiling (0: none)."""

    used_bytes: int
    max_bytes: int

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> MemoryReading:
        return cls(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))

    def refusal(self, fraction: float) -> StoreFullError | None:
        """The error to raise under this reading, or None if new work still fits."""
        if self.max_bytes <= 0 or fraction >= 1:
            return None
        if self.used_bytes >= fraction * self.max_bytes:
            return StoreFullError(self.used_bytes, self.max_bytes, fraction)
        return None


class GuardState:
    """The guard without I/O: when a reading is due, and what the last one says."""

    def __init__(
        self,
        fraction: float,
        *,
        max_age_seconds: float = READING_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fraction = fraction
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self.reading: MemoryReading | None = None
        # When the last reading was asked for (not received): callers arriving while it is in
        # flight are judged by the previous one rather than each asking Redis again.
        self._asked_at: float | None = None

    def due(self) -> bool:
        """Whether this check must read Redis (no reading yet, or the last one too old)."""
        if self.reading is None:
            return True
        return self._asked_at is None or self._clock() - self._asked_at >= self.max_age_seconds

    def asking(self) -> None:
        self._asked_at = self._clock()

    def record(self, info: Mapping[str, Any]) -> None:
        self.reading = MemoryReading.from_info(info)

    def failed(self) -> None:
        """A reading that could not be taken: the next check asks again."""
        self._asked_at = None

    def judge(self) -> None:
        """Raise `StoreFullError` if the last reading says Redis is nearly full."""
        refusal = self.reading.refusal(self.fraction) if self.reading is not None else None
        if refusal is not None:
            raise refusal


class MemoryGuard:
    """The guard for a blocking `redis.Redis` client (the Python client's submissions)."""

    def __init__(self, client: redis.Redis, fraction: float) -> None:
        self._redis = client
        self.state = GuardState(fraction)

    def check(self) -> None:
        """Raise `StoreFullError` once Redis uses `fraction` of its `maxmemory`."""
        if self.state.due():
            self.state.asking()
            try:
                self.state.record(self._redis.info("memory"))
            except BaseException:
                self.state.failed()
                raise
        self.state.judge()


class AsyncMemoryGuard:
    """The guard for an asyncio `redis.asyncio.Redis` client (the gateway's routes)."""

    def __init__(self, client: redis.asyncio.Redis, fraction: float) -> None:
        self._redis = client
        self.state = GuardState(fraction)

    async def check(self) -> None:
        """Raise `StoreFullError` once Redis uses `fraction` of its `maxmemory`."""
        if self.state.due():
            self.state.asking()
            try:
                self.state.record(await self._redis.info("memory"))
            except BaseException:
                self.state.failed()
                raise
        self.state.judge()
