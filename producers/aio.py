"""The producer for asyncio apps: the same calls as `TierqClient`, awaitable.

The asyncio face of the client core (client_base.py). Reads and waits use `redis.asyncio`, so
waiting on jobs never blocks the event loop. Publishing goes through Celery's (blocking)
producer, so submitting, cancelling and retrying run the sync face (`TierqClient`) in a worker
thread; one submission is a couple of Redis round trips, well under a millisecond on a local
network.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio
from redis import Redis as SyncRedis
from redis.asyncio.client import PubSub as AsyncPubSub

from tierq.core.deadline import DeadlineLike
from tierq.core.redis_clients import async_client
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.core.sliding_window import ContextOverflow
from tierq.producers.client import TierqClient
from tierq.producers.client_base import (
    PRODUCER_SOCKET_TIMEOUT_SECONDS,
    BaseClient,
    decode_record,
    decode_status,
    redis_errors,
)
from tierq.producers.submission import RequestLike
from tierq.producers.waiting import DEFAULT_WAIT_SECONDS, Waiter


class AsyncTierqClient(BaseClient):
    """Awaitable submit/get/wait; create one per event loop."""

    def __init__(
        self, settings: Settings | None = None, *, max_connections: int | None = None
    ) -> None:
        """`max_connections` caps the asyncio pool (redis-py's default: 100); a command that
        finds every connection in use waits for one (up to the client's socket timeout)."""
        super().__init__(settings)
        self._sync = TierqClient(self.settings)
        # A capped pool waits for a free connection (a burst queues) rather than failing.
        pool = (
            {}
            if max_connections is None
            else {
                "max_connections": max_connections,
                "wait_for_connection_seconds": PRODUCER_SOCKET_TIMEOUT_SECONDS,
            }
        )
        self._redis = async_client(
            self.settings,
            **pool,
            socket_keepalive=True,
            socket_connect_timeout=PRODUCER_SOCKET_TIMEOUT_SECONDS,
            socket_timeout=PRODUCER_SOCKET_TIMEOUT_SECONDS,
            health_check_interval=25,
        )

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
        labels: Sequence[Mapping[str, str] | None] | None = None,
        context_overflow: ContextOverflow | Sequence[ContextOverflow | None] | None = None,
        priority: str | Sequence[str | None] | None = None,
        deadline: DeadlineLike | Sequence[DeadlineLike | None] | None = None,
        provider_batch: bool = False,
    ) -> list[str]:
        return await asyncio.to_thread(
            functools.partial(
                self._sync.submit_many,
                tenant=tenant,
                labels=labels,
                context_overflow=context_overflow,
                priority=priority,
                deadline=deadline,
                provider_batch=provider_batch,
            ),
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
        with redis_errors():
            raw = await self._redis.hget(self._keys.job(job_id), "record")
        return self._found(job_id, decode_record(raw))

    async def get_many(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        with redis_errors():
            return await self._records(job_ids)

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        """Each job's status alone (None for an unknown id): one pipelined read."""
        with redis_errors():
            return [decode_status(raw) for raw in await self._fields(job_ids, "status")]

    async def _records(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        return [decode_record(raw) for raw in await self._fields(job_ids, "record")]

    async def _fields(self, job_ids: Sequence[str], field: str) -> list[bytes | None]:
        """One field of each job's hash, in one pipelined round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._keys.job(job_id), field)
            return list(await pipe.execute())

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
        waiter = self._waiter(job_ids, timeout)
        while not waiter.done():
            try:
                async for record in self._watch(waiter):
                    yield record
            except redis.RedisError as error:
                await asyncio.sleep(waiter.broker_failed(error))

    async def _watch(self, waiter: Waiter) -> AsyncIterator[JobResult]:
        """Carry out `waiter`'s steps (see `Waiter`) on one subscription."""
        subscription = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            for channels in waiter.subscriptions():
                await subscription.subscribe(*channels)
            while not waiter.done():
                check = waiter.to_check()
                statuses = await self._fields(check, "status") if check else []
                finished = waiter.finished_among(check, statuses)
                records = await self._records(finished) if finished else []
                for record in waiter.finish(records):
                    yield record
                if not waiter.done():
                    await self._listen(subscription, waiter)
        finally:
            await subscription.aclose()  # type: ignore[no-untyped-call]

    @staticmethod
    async def _listen(subscription: AsyncPubSub, waiter: Waiter) -> None:
        """Hand `waiter` the announcements: the first within its wake-up time, then the rest
        already received."""
        timeout = waiter.next_wake()
        while message := await subscription.get_message(
            ignore_subscribe_messages=True, timeout=timeout
        ):
            waiter.heard(message)
            timeout = 0.0

    async def aclose(self) -> None:
        await self._redis.aclose()
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncTierqClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
