"""Job records in Redis: one hash per job, written by producers and workers, read by pollers.

Why not Celery's result backend: a job must be known from the moment it is accepted (Celery
answers PENDING for any id, known or not), a failure must carry the API's error rather than a
Python exception, and status, attempts and timestamps belong in one record that later features
(idempotency, cancellation, tenants) extend. The record is a hash of two fields: `status`, so a
script can act on it atomically, and `record`, the `JobResult` as JSON; while an attempt runs,
`owner` (the attempt's token) and `lease_until` say who holds the job and until when.

Every write refreshes the TTL (`result_ttl_seconds`), so a result stays readable that long after
the job's last change. The client retries on connection errors and timeouts (what Celery's
`result_backend_always_retry` would do for its own backend).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from tierq.core import accounting, scripts
from tierq.core.durability import MEMORY, Confirmation, Durability
from tierq.core.keys import Keys
from tierq.core.redis_clients import sync_client
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings

log = structlog.get_logger("tierq.jobstore")

# Seconds between pings on an idle pooled connection, so a dead one is noticed before use.
HEALTH_CHECK_INTERVAL_SECONDS = 25
# Attempts of one Redis command across a brief outage (with exponential back-off, ~10 s in all).
REDIS_COMMAND_RETRIES = 8


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of `JobStore.claim`: claimed, or why not."""

    claimed: bool
    finished: JobResult | None = None
    busy_for_seconds: float = 0.0
    # The message was superseded by a newer one of the same job.
    stale: bool = False


def connect(
    settings: Settings,
    *,
    socket_timeout_seconds: float = 10.0,
    retries: int = REDIS_COMMAND_RETRIES,
) -> redis.Redis:
    """A pooled client for job records, resilient to brief Redis outages.

    Workers ride out an outage of several seconds; producers pass shorter timeouts, so a
    caller with a deadline (`wait(timeout=...)`) hears of a hung Redis in seconds.
    """
    return sync_client(
        settings,
        socket_keepalive=True,
        socket_connect_timeout=min(5.0, socket_timeout_seconds),
        socket_timeout=socket_timeout_seconds,
        health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        decode_responses=False,
    )


class JobStore:
    """Reads and writes `JobResult` records; safe to share between threads."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str,
        ttl_seconds: int,
        usage_ttl_seconds: int = 90 * 86_400,
        durability: Durability = MEMORY,
    ) -> None:
        self._redis = client
        self.durability = durability
        self.keys = Keys(key_prefix)
        self._ttl_seconds = ttl_seconds
        self._usage_ttl_seconds = usage_ttl_seconds
        self._claim_script = scripts.register(client, "claim")
        self._settle_script = scripts.register(client, "settle")
        self._unwatch_script = scripts.register(client, "unwatch_published")

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> JobStore:
        return cls(
            client or connect(settings),
            key_prefix=settings.key_prefix,
            ttl_seconds=settings.result_ttl_seconds,
            usage_ttl_seconds=settings.usage_ttl_seconds,
            durability=Durability.from_settings(settings),
        )

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    def key(self, job_id: str) -> str:
        return self.keys.job(job_id)

    def save_many(
        self,
        results: Sequence[JobResult],
        messages: Sequence[str],
        *,
        watch_until: float | None = None,
    ) -> None:
        """Write new jobs' records, with their queue messages (kept for a re-queue), in one
        round trip (bulk submission); with `watch_until` (epoch seconds), on the watch list
        until then, so a producer that dies before publishing them loses none: a reaper
        enqueues them from their kept messages (`unwatch_published` takes them off)."""
        pipe = self._redis.pipeline(transaction=False)
        if watch_until is not None and results:
            pipe.zadd(self.keys.watch, {result.job_id: watch_until for result in results})
        for result, message in zip(results, messages, strict=True):
            key = self.key(result.job_id)
            pipe.hset(
                key,
                mapping={
                    "status": result.status.value,
                    "record": result.to_json(),
                    "message": message,
                    "gen": 0,
                },
            )
            pipe.expire(key, self._ttl_seconds)
        pipe.execute()

    def unwatch_published(self, job_ids: Sequence[str], watch_until: float) -> Confirmation | None:
        """Take published jobs off the watch list, unless a worker has put them there since
        (a claim or a retry sets another due time): a queue's backlog is not the reaper's.

        Written after the publish, so under `TIERQ_DURABILITY` its wait vouches for the jobs'
        records and messages too; the confirmation is returned (None: no wait was asked for).
        """
        if not job_ids:
            return None
        _, confirmation = self._write(
            "submission", self._unwatch_script, [self.keys.watch], [repr(watch_until), *job_ids]
        )
        return confirmation

    def _write(
        self, what: str, script: Script, keys: list[str], args: list[Any]
    ) -> tuple[Any, Confirmation | None]:
        """Run a writing script; under `TIERQ_DURABILITY`, followed in the same pipeline (the
        same connection) by the wait for it. A worker's writes go on when the wait falls short,
        logged: the claim or the answer is already made, and withholding it helps nobody."""
        if not self.durability.waits:
            return script(keys=keys, args=args), None
        with self._redis.pipeline(transaction=False) as pipe:
            script(keys=keys, args=args, client=pipe)
            self.durability.queue_wait(pipe)
            written, reply = pipe.execute(raise_on_error=False)
        if isinstance(written, Exception):
            raise written
        confirmation = self.durability.read(reply)
        if not confirmation.durable:
            log.warning(
                "durability.unconfirmed",
                write=what,
                confirmed=confirmation.describe(),
                timeout_seconds=self.durability.timeout_seconds,
            )
        return written, confirmation

    def watch(self, job_ids: Sequence[str], due_in_seconds: float) -> None:
        """Put jobs on the watch list: a reaper re-queues them unless they move on in time."""
        if job_ids:
            due = time.time() + due_in_seconds
            self._redis.zadd(self.keys.watch, dict.fromkeys(job_ids, due))

    def claim(
        self, result: JobResult, token: str, lease_seconds: float, message: str, generation: int
    ) -> Claim:
        """Make the job this attempt's (status running), unless it ended, the message is stale,
        or another attempt holds a live lease on it. `message` (JSON) is kept for a re-queue.
        One script, lua/claim.lua, says each case."""
        (outcome, detail), _ = self._write(
            "claim",
            self._claim_script,
            [self.key(result.job_id), self.keys.watch],
            [
                token,
                result.to_json(),
                lease_seconds,
                self._ttl_seconds,
                message,
                result.job_id,
                generation,
            ],
        )
        if outcome == b"stale":
            return Claim(claimed=False, stale=True)
        if outcome == b"final":
            return Claim(claimed=False, finished=JobResult.from_json(detail))
        if outcome == b"busy":
            return Claim(claimed=False, busy_for_seconds=float(detail))
        return Claim(claimed=True)

    def settle(
        self,
        result: JobResult,
        token: str | None,
        *,
        due_in_seconds: float = 0.0,
        dead_letter: bool = False,
        generation: int | None = None,
        account: bool = True,
    ) -> bool:
        """Write an attempt's outcome if this attempt (`token`) still owns the job.

        A job that is not finished (retrying, or queued again) must move on within
        `due_in_seconds`, or a reaper re-queues it; `dead_letter` adds a failed job to the
        dead letters. With `account`, the outcome's bill and counts go to the usage ledger
        and the stats counters (tierq/core/accounting.py) in the same step: one script,
        lua/settle.lua.
        """
        moment = result.finished_at or datetime.now(UTC)
        billed = accounting.bill(result) if account and result.status is JobStatus.SUCCEEDED else {}
        counted = accounting.counts(result) if account else {}
        written, _ = self._write(
            "outcome",
            self._settle_script,
            [
                self.key(result.job_id),
                self.keys.watch,
                self.keys.dead,
                self.keys.usage(accounting.hour_of(moment)),
                self.keys.stats(accounting.minute_of(moment)),
                *self.keys.tenant_in_flight_of(result.tenant),
            ],
            [
                token or "",
                result.status.value,
                result.to_json(),
                self._ttl_seconds,
                self.keys.done_channel(result.job_id),
                result.job_id,
                due_in_seconds,
                "1" if dead_letter else "0",
                "" if generation is None else generation,
                json.dumps(billed) if billed else "",
                json.dumps(counted) if counted else "",
                self._usage_ttl_seconds,
                accounting.STATS_TTL_SECONDS,
            ],
        )
        return bool(written)

    def done_channel(self, job_id: str) -> str:
        """The pub/sub channel on which the job's final outcome is announced."""
        return self.keys.done_channel(job_id)

    def statuses(self, job_ids: Sequence[str]) -> list[bytes | None]:
        """Each job's status alone (not its record), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.key(job_id), "status")
        return list(pipe.execute())

    def get(self, job_id: str) -> JobResult | None:
        raw = self._redis.hget(self.key(job_id), "record")
        return JobResult.from_json(raw) if raw else None

    def get_many(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        """Records for many jobs in one round trip; None where a job is unknown or expired."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.key(job_id), "record")
        return [JobResult.from_json(raw) if raw else None for raw in pipe.execute()]

    def delete(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._redis.delete(*(self.key(job_id) for job_id in job_ids))

    def status(self, job_id: str) -> JobStatus | None:
        raw = self._redis.hget(self.key(job_id), "status")
        if not raw:
            return None
        return JobStatus(raw.decode() if isinstance(raw, bytes) else raw)
