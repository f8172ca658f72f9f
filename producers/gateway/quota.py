"""Per-tenant quota on jobs in flight (queued, running or retrying).

Each tenant's submitted jobs go in a sorted set. When a submission would take the set past the
quota, the finished ones are swept out first (one pipelined status read), so the count is
exact at the moment it matters and costs nothing below the quota. The check and the add are
not one atomic step: concurrent submissions of one tenant can overshoot by what they carry
between them, which a quota meant to stop one tenant crowding the queue can bear.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis.asyncio

from tierq.core.errors import TenantQuotaExceededError
from tierq.core.keys import Keys, as_text
from tierq.core.results import JobStatus

FINAL = {status.value.encode() for status in JobStatus if status.is_final}


class TenantQuota:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys, limit: int, ttl: int) -> None:
        self._redis = client
        self._keys = keys
        self.limit = limit
        self._ttl = ttl

    async def check(self, tenant: str, jobs: int) -> None:
        """Raise `TenantQuotaExceededError` if `jobs` more would put the tenant over its quota."""
        key = self._keys.tenant_in_flight(tenant)
        count = int(await self._redis.zcard(key))
        if count + jobs <= self.limit:
            return
        count = await self._sweep(key)
        if count + jobs > self.limit:
            raise TenantQuotaExceededError(tenant, count, self.limit)

    async def add(self, tenant: str, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        key = self._keys.tenant_in_flight(tenant)
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, dict.fromkeys(job_ids, now))
            # Job records expire after the result TTL; so does a set nobody submits to.
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def in_flight(self, tenant: str) -> int:
        return await self._sweep(self._keys.tenant_in_flight(tenant))

    async def _sweep(self, key: str) -> int:
        members = [as_text(m) for m in await self._redis.zrange(key, 0, -1)]
        if not members:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in members:
                pipe.hget(self._keys.job(job_id), "status")
            statuses = await pipe.execute()
        gone = [
            m
            for m, status in zip(members, statuses, strict=True)
            if status in FINAL or status is None
        ]
        if gone:
            await self._redis.zrem(key, *gone)
        return len(members) - len(gone)
