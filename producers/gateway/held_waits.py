"""Every held request of a gateway process waits on one Redis subscription, not one each.

A drop-in call or a long-poll waits for its job to end. Waiting the way `AsyncTierqClient.wait`
does (a subscription per wait, and a status read per wait every second) costs each held request
a Redis connection from the process's pool: at the pool's size (redis-py's default is 100) the
next request of any kind failed. Here one listener task holds one pattern subscription to every
job's done channel (`Keys.done_channels`, published by the script that makes a job final) and
resolves the waits it knows of; jobs nobody here waits for are ignored. A thousand held requests
cost one connection, one pipelined status read a second for all of them (a notification lost
with a dropped connection is found by it), and nothing else.

The order that makes it exact: a wait is registered before its job's status is first read, and
the listener's subscription is live before any wait is registered, so an end published between
the two is heard. A listener that loses Redis reconnects and rechecks every pending job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import redis
import redis.asyncio
import structlog

from tierq.core.errors import JobNotFoundError, JobWaitTimeout
from tierq.core.keys import Keys, as_text
from tierq.core.results import JobResult, JobStatus
from tierq.producers.aio import AsyncTierqClient

log = structlog.get_logger("tierq.gateway")

# A full status check of every pending wait at least this often (covers lost notifications).
RECHECK_SECONDS = 1.0
# Pause before the listener subscribes again after Redis was lost.
RECONNECT_SECONDS = 0.5
_FINAL = {status.value for status in JobStatus if status.is_final}


class HeldWaits:
    """Waits for job ends, resolved by one listener; start it with `run()` as a task."""

    def __init__(self, client: AsyncTierqClient, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._prefix = keys.done_channel("")
        self._waits: dict[str, list[asyncio.Future[None]]] = {}
        self._listening = asyncio.Event()

    @property
    def pending(self) -> int:
        return sum(len(futures) for futures in self._waits.values())

    async def wait(self, job_id: str, timeout: float) -> JobResult:
        """The job's record once it has ended; `JobWaitTimeout` (naming the status read at the
        deadline) if it has not within `timeout`; `JobNotFoundError` for an unknown job."""
        deadline = time.monotonic() + timeout
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Registered before the first read: an end published from here on resolves it.
        self._waits.setdefault(job_id, []).append(ended)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._listening.wait(), max(0.0, deadline - time.monotonic())
                )
            if await self._status(job_id) not in _FINAL:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended, max(0.0, deadline - time.monotonic()))
                if not ended.done() or ended.cancelled():
                    # The deadline: one more read, so an end at the last moment still counts.
                    status = await self._status(job_id)
                    if status not in _FINAL:
                        raise JobWaitTimeout(job_id, timeout, status)
        finally:
            self._forget(job_id, ended)
        return await self._client.get(job_id)

    async def _status(self, job_id: str) -> str:
        (status,) = await self._client.statuses([job_id])
        if status is None:
            raise JobNotFoundError(job_id)
        return status.value

    def _forget(self, job_id: str, ended: asyncio.Future[None]) -> None:
        futures = self._waits.get(job_id, [])
        if ended in futures:
            futures.remove(ended)
        if not futures:
            self._waits.pop(job_id, None)
        if not ended.done():
            ended.cancel()

    def _resolve(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            for ended in self._waits.get(job_id, []):
                if not ended.done():
                    ended.set_result(None)

    async def run(self) -> None:
        """Listen for job ends until cancelled, through Redis outages."""
        while True:
            subscription = self._client.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await subscription.psubscribe(self._keys.done_channels)
                self._listening.set()
                # Ends published while no one listened are found by the recheck that follows.
                next_recheck = 0.0
                while True:
                    if time.monotonic() >= next_recheck:
                        await self._recheck()
                        next_recheck = time.monotonic() + RECHECK_SECONDS
                    message = await subscription.get_message(
                        ignore_subscribe_messages=True,
                        timeout=max(0.0, next_recheck - time.monotonic()),
                    )
                    if message is not None and message.get("type") == "pmessage":
                        channel = as_text(message["channel"])
                        self._resolve([channel.removeprefix(self._prefix)])
            except (redis.RedisError, OSError) as error:
                self._listening.clear()
                log.warning("held_waits.listener_lost", error=str(error))
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await subscription.aclose()  # type: ignore[no-untyped-call]

    async def _recheck(self) -> None:
        """Read the status of every job waited for, in one pipelined round trip, and resolve
        the ended ones: the cover for a notification lost with a dropped connection."""
        job_ids = list(self._waits)
        if not job_ids:
            return
        statuses = await self._client.statuses(job_ids)
        self._resolve(
            [
                job_id
                for job_id, status in zip(job_ids, statuses, strict=True)
                if status is None or status.is_final
            ]
        )
