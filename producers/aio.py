"""The producer for asyncio apps: the same calls as `TierqClient`, awaitable.

Reads and waits use `redis.asyncio`, so waiting on jobs never blocks the event loop. Publishing
goes through Celery's (blocking) producer, so `submit` runs it in a worker thread; one
submission is a couple of Redis round trips, well under a millisecond on a local network.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import redis
import redis.asyncio
from redis import Redis as SyncRedis
from redis.asyncio.client import PubSub as AsyncPubSub

from tierq.core.errors import BrokerUnavailableError, JobNotFoundError
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings, get_settings
from tierq.producers.client import (
    PRODUCER_SOCKET_TIMEOUT_SECONDS,
    SUBSCRIBE_BATCH,
    RequestLike,
    TierqClient,
)
from tierq.producers.waiting import DEFAULT_WAIT_SECONDS, Waiter


class AsyncTierqClient:
    """Awaitable submit/get/wait; create one per event loop."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._sync = TierqClient(self.settings)
        self._redis = redis.asyncio.Redis.from_url(
            self.settings.redis_url.get_secret_value(),
            socket_keepalive=True,
            socket_connect_timeout=PRODUCER_SOCKET_TIMEOUT_SECONDS,
            socket_timeout=PRODUCER_SOCKET_TIMEOUT_SECONDS,
            health_check_interval=25,
        )

    def _key(self, job_id: str) -> str:
        return f"{self.settings.key_prefix}job:{job_id}"

    async def submit(self, request: RequestLike | None = None, /, **params: Any) -> str:
        return await asyncio.to_thread(self._sync.submit, request, **params)

    @property
    def redis(self) -> redis.asyncio.Redis:
        """The client's Redis connection pool, for callers that keep state beside the jobs."""
        return self._redis

    @property
    def sync_redis(self) -> SyncRedis:
        """A blocking client on the same Redis, for work done in a thread (metrics scrapes)."""
        return self._sync.redis

    async def submit_many(
        self,
        requests: Iterable[RequestLike],
        idempotency_keys: Sequence[str | None] | None = None,
        *,
        tenant: str | None = None,
    ) -> list[str]:
        return await asyncio.to_thread(
            functools.partial(self._sync.submit_many, tenant=tenant),
            list(requests),
            idempotency_keys,
        )

    async def cancel(self, job_id: str) -> JobResult:
        return await asyncio.to_thread(self._sync.cancel, job_id)

    async def retry(self, job_id: str) -> str:
        return await asyncio.to_thread(self._sync.retry, job_id)

    async def dead_letters(self, limit: int = 100) -> list[JobResult]:
        return await asyncio.to_thread(self._sync.dead_letters, limit)

    async def get(self, job_id: str) -> JobResult:
        try:
            raw = await self._redis.hget(self._key(job_id), "record")
        except redis.RedisError as error:
            raise BrokerUnavailableError(f"cannot reach Redis: {error}") from None
        if not raw:
            raise JobNotFoundError(job_id)
        return JobResult.from_json(raw)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        try:
            return await self._fetch(job_ids)
        except redis.RedisError as error:
            raise BrokerUnavailableError(f"cannot reach Redis: {error}") from None

    async def _fetch(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._key(job_id), "record")
            raws = await pipe.execute()
        return [JobResult.from_json(raw) if raw else None for raw in raws]

    async def wait(self, job_id: str, timeout: float = DEFAULT_WAIT_SECONDS) -> JobResult:
        return (await self.wait_many([job_id], timeout=timeout))[0]

    async def wait_many(
        self, job_ids: Sequence[str], timeout: float = DEFAULT_WAIT_SECONDS
    ) -> list[JobResult]:
        finished = {record.job_id: record async for record in self.as_completed(job_ids, timeout)}
        return [finished[job_id] for job_id in job_ids]

    async def as_completed(
        self, job_ids: Sequence[str], timeout: float = DEFAULT_WAIT_SECONDS
    ) -> AsyncIterator[JobResult]:
        """Yield each job's record as soon as it finishes (see `TierqClient.as_completed`)."""
        waiter = Waiter(job_ids, timeout)
        while not waiter.done():
            try:
                async for record in self._watch(waiter):
                    yield record
            except redis.RedisError as error:
                await asyncio.sleep(waiter.broker_failed(error))

    async def _watch(self, waiter: Waiter) -> AsyncIterator[JobResult]:
        subscription = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            channels = [self._done_channel(job_id) for job_id in waiter.pending()]
            for start in range(0, len(channels), SUBSCRIBE_BATCH):
                await subscription.subscribe(*channels[start : start + SUBSCRIBE_BATCH])
            announced: list[str] = []
            while not waiter.done():
                check = waiter.to_check(announced)
                finished = (
                    waiter.finished_among(check, await self._statuses(check)) if check else []
                )
                for record in await self._fetch(finished) if finished else []:
                    if record is not None:
                        waiter.finish(record)
                        yield record
                if not waiter.done():
                    announced = await self._announced(subscription, waiter.next_wake())
        finally:
            await subscription.aclose()  # type: ignore[no-untyped-call]

    @staticmethod
    async def _announced(subscription: AsyncPubSub, wait_seconds: float) -> list[str]:
        ids = []
        message = await subscription.get_message(
            ignore_subscribe_messages=True, timeout=wait_seconds
        )
        while message is not None:
            if message.get("type") == "message":
                data = message["data"]
                ids.append(data.decode() if isinstance(data, bytes) else data)
            message = await subscription.get_message(ignore_subscribe_messages=True, timeout=0)
        return ids

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        """Each job's status alone (None for an unknown id): one pipelined read."""
        try:
            raws = await self._statuses(job_ids)
        except redis.RedisError as error:
            raise BrokerUnavailableError(f"cannot reach Redis: {error}") from None
        return [JobStatus(raw.decode()) if raw else None for raw in raws]

    async def _statuses(self, job_ids: Sequence[str]) -> list[bytes | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._key(job_id), "status")
            return list(await pipe.execute())

    def _done_channel(self, job_id: str) -> str:
        return f"{self.settings.key_prefix}done:{job_id}"

    async def aclose(self) -> None:
        await self._redis.aclose()
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncTierqClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
