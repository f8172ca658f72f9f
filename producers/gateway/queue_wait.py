"""The drop-in route's second backpressure: a job whose expected queue wait is too long is
refused at once with 429 and `Retry-After`, rather than held until the hold runs out.

An SDK caller understands a 429: its own retry waits `Retry-After` and sends again. A request
held for a queue that will not reach it in time ends in a 504 after the whole hold instead,
having kept a connection and a slot all along. `TIERQ_GATEWAY__MAX_QUEUE_WAIT_SECONDS` says how
long a wait is too long; unset, every request is held (the in-flight quota still applies).

The estimate is the jobs ahead of the request over the rate its tier's jobs finished at lately
(the settle
script's per-minute counters, tierq/core/accounting.py, over the current and the previous
minute). When none finished lately but jobs are queued, the oldest queued job's age stands in:
it has waited that long already. Readings are taken at most once a second per tier, so the
check costs nothing per request. The jobs ahead are those on the tier's Celery queue (not yet
taken by a worker; those a worker reserved are running or about to) and, with fair dispatch,
those in its backlogs of the request's class or a higher one: a lower class waits behind it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis.asyncio

from tierq.core.accounting import SEP
from tierq.core.keys import Keys, as_text
from tierq.core.priority import PRIORITIES, PRIORITY_DEFAULT
from tierq.core.queues import submitted_at
from tierq.core.settings import Settings
from tierq.producers.gateway.errors import APIError

# How old a tier's reading may be before the next check takes a fresh one.
READING_MAX_AGE_SECONDS = 1.0
# The longest Retry-After suggested: past it, the estimate itself is too uncertain to promise.
MAX_RETRY_AFTER_SECONDS = 60


@dataclass(frozen=True, slots=True)
class QueueReading:
    """One tier's queue as last read: jobs waiting, how fast its jobs finished lately, and how
    long the oldest waiting one has waited (None: unknown or no queue)."""

    depth: int
    finished_per_second: float
    oldest_age_seconds: float | None
    # Jobs in the tier's fair-dispatch backlogs, by priority class.
    backlog: Mapping[str, int] = field(default_factory=dict)

    def ahead_of(self, priority: str) -> int:
        """Jobs a new job of `priority` waits behind: the queue's, and the backlogs' of its
        class and the higher ones."""
        rank = PRIORITIES.index(priority if priority in PRIORITIES else PRIORITY_DEFAULT)
        return self.depth + sum(self.backlog.get(p, 0) for p in PRIORITIES[: rank + 1])

    def expected_wait_seconds(self, priority: str = PRIORITY_DEFAULT) -> float:
        ahead = self.ahead_of(priority)
        if ahead == 0:
            return 0.0
        if self.finished_per_second > 0:
            return ahead / self.finished_per_second
        return self.oldest_age_seconds or 0.0


def finished_rate(
    counters: list[Mapping[bytes | str, bytes | str]], tier: str, seconds: float
) -> float:
    """Jobs of `tier` that ended (succeeded or failed) per second, from per-minute counters."""
    summed: dict[str, float] = defaultdict(float)
    for minute in counters:
        for name, amount in minute.items():
            summed[as_text(name)] += float(amount)
    finished = summed[f"{tier}{SEP}succeeded"] + summed[f"{tier}{SEP}failed"]
    return finished / max(seconds, 1.0)


class QueueWaits:
    """Expected queue waits per tier, read from Redis at most once a second each."""

    def __init__(self, client: redis.asyncio.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self.limit_seconds = settings.gateway.max_queue_wait_seconds
        self._readings: dict[str, tuple[float, QueueReading]] = {}

    async def check(self, tier: str, priority: str | None = None) -> None:
        """Answer 429 (with `Retry-After`) when the expected wait of a job of `tier` and
        `priority` is past the maximum."""
        if self.limit_seconds is None:
            return
        reading = await self.reading(tier)
        # (a wrong class name is refused by the submission, in the API's shape)
        expected = reading.expected_wait_seconds(priority or PRIORITY_DEFAULT)
        if expected <= self.limit_seconds:
            return
        retry_after = min(MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(expected - self.limit_seconds)))
        raise APIError(
            429,
            f"the {tier!r} queue's expected wait is about {expected:.0f}s, more than this "
            f"gateway holds a request for (TIERQ_GATEWAY__MAX_QUEUE_WAIT_SECONDS="
            f"{self.limit_seconds:g}); retry after {retry_after}s",
            type="rate_limit_error",
            code="queue_wait_too_long",
            headers={"Retry-After": str(retry_after)},
        )

    async def reading(self, tier: str) -> QueueReading:
        now = time.monotonic()
        cached = self._readings.get(tier)
        if cached is not None and now - cached[0] < READING_MAX_AGE_SECONDS:
            return cached[1]
        reading = await self._read(tier)
        self._readings[tier] = (now, reading)
        return reading

    async def _read(self, tier: str) -> QueueReading:
        queue = self._settings.queue_for(tier)
        wall = time.time()
        minute = int(wall // 60)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(queue)
            pipe.lindex(queue, -1)
            pipe.hgetall(self._keys.stats(minute - 1))
            pipe.hgetall(self._keys.stats(minute))
            depth, oldest, previous, current = await pipe.execute()
        # The previous whole minute and the current one so far.
        seconds = 60 + (wall - minute * 60)
        submitted = submitted_at(oldest) if oldest else None
        age = max(0.0, wall - submitted.timestamp()) if submitted else None
        backlog: dict[str, int] = {}
        if self._settings.tiers[tier].fair_dispatch:
            backlog, oldest_in_backlog = await self._backlog(queue)
            if oldest_in_backlog is not None:
                # With fair dispatch the queue holds a few jobs; the oldest waits in a backlog.
                age = max(age or 0.0, wall - oldest_in_backlog)
        rate = finished_rate([previous, current], tier, seconds)
        return QueueReading(int(depth), rate, age, backlog)

    async def _backlog(self, queue: str) -> tuple[dict[str, int], float | None]:
        """Jobs in the queue's backlogs by class, and when the oldest was submitted: its
        tenants, then their backlogs' sizes and heads."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for priority in PRIORITIES:
                pipe.zrange(self._keys.backlog_tenants(queue, priority), 0, -1)
            tenants = await pipe.execute()
        async with self._redis.pipeline(transaction=False) as pipe:
            for priority, names in zip(PRIORITIES, tenants, strict=True):
                for name in names:
                    key = self._keys.backlog(queue, priority, as_text(name))
                    pipe.zcard(key)
                    pipe.zrange(key, 0, 0, withscores=True)
            replies = iter(await pipe.execute())
        sizes: dict[str, int] = {}
        heads: list[float] = []
        for priority, names in zip(PRIORITIES, tenants, strict=True):
            sizes[priority] = 0
            for _ in names:
                sizes[priority] += int(next(replies))
                head = next(replies)
                if head:
                    heads.append(float(head[0][1]))
        return sizes, min(heads, default=None)
