"""What a caller or an operator does to jobs after submission: cancel, retry dead letters, and
reserve idempotency keys. Each is one Lua script over the job's record, so it cannot race a
worker writing the same record (worker/jobstore.py holds the workers' side).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tierq.core.contract import JobRequest
from tierq.core.jobstore import JobStore
from tierq.core.results import JobResult, JobStatus

# KEYS: job, watch. ARGV: cancelled record, done channel, job id.
# A job not yet finished becomes cancelled: a queued one will not reach the API (its claim
# finds it final), a running one's result is discarded (its settle never overwrites it).
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  return {'final', redis.call('HGET', KEYS[1], 'record')}
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'record', ARGV[1])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'cancelled', ''}
"""

# KEYS: job, dead, watch. ARGV: queued record, job id, seconds until the reaper re-queues it if
# the publish that follows never arrives. A dead letter goes back to queued, with its message
# and a new generation (any older message of the job that turns up late is not run).
_RETRY_DEAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return {'not_dead', ''} end
local s = redis.call('HMGET', KEYS[1], 'status', 'message')
if s[1] ~= 'failed' or not s[2] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return {'not_dead', ''}
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'record', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[2])
local generation = redis.call('HINCRBY', KEYS[1], 'gen', 1)
return {'queued', s[2], tostring(generation)}
"""

# KEYS: idempotency key. ARGV: "job id|fingerprint", ttl. The key's first job, or nil after
# taking it for this one.
_RESERVE = """
local taken = redis.call('GET', KEYS[1])
if taken then return taken end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


def fingerprint(request: JobRequest) -> str:
    """What makes two submissions the same request, for idempotency keys."""
    fields = {**request.api_fields(), "metadata": request.metadata}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Reservation:
    """An idempotency key's job: this submission's (new) or an earlier one's."""

    job_id: str
    new: bool
    conflict: bool = False


class JobControl:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        client = store.redis
        self._cancel = client.register_script(_CANCEL)
        self._retry_dead = client.register_script(_RETRY_DEAD)
        self._reserve = client.register_script(_RESERVE)

    def cancel(self, record: JobResult) -> tuple[str, JobResult | None]:
        """Cancel the job `record` describes; ("cancelled" | "final" | "missing", record)."""
        cancelled = record.model_copy(
            update={"status": JobStatus.CANCELLED, "finished_at": datetime.now(UTC)}
        )
        keys = self.store.keys
        outcome, detail = self._cancel(
            keys=[keys.job(record.job_id), keys.watch],
            args=[cancelled.to_json(), keys.done_channel(record.job_id), record.job_id],
        )
        if outcome == b"cancelled":
            return "cancelled", cancelled
        if outcome == b"final":
            return "final", JobResult.from_json(detail)
        return "missing", None

    def retry_dead(self, record: JobResult, requeue_after_seconds: float) -> dict[str, Any] | None:
        """Move a dead letter back to queued; its queue message, or None if it is not dead."""
        queued = record.model_copy(
            update={
                "status": JobStatus.QUEUED,
                "error": None,
                "attempts": 0,
                "started_at": None,
                "finished_at": None,
                "retry_at": None,
            }
        )
        keys = self.store.keys
        outcome, message, *generation = self._retry_dead(
            keys=[keys.job(record.job_id), keys.dead, keys.watch],
            args=[queued.to_json(), record.job_id, requeue_after_seconds],
        )
        if outcome != b"queued":
            return None
        return {**json.loads(message), "generation": int(generation[0])}

    def dead_letters(self, limit: int) -> list[JobResult]:
        """The most recent dead letters, newest first (expired records are dropped)."""
        raw_ids = self.store.redis.zrevrange(self.store.keys.dead, 0, limit - 1)
        ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in raw_ids]
        records = self.store.get_many(ids)
        gone = [job_id for job_id, record in zip(ids, records, strict=True) if record is None]
        if gone:
            self.store.redis.zrem(self.store.keys.dead, *gone)
        return [record for record in records if record is not None]

    def reserve(
        self, keys_and_jobs: Sequence[tuple[str, str, str]], ttl_seconds: int
    ) -> list[Reservation]:
        """Take each (idempotency key, job id, fingerprint) for its job, or find who has it."""
        pipe = self.store.redis.pipeline(transaction=False)
        for key, job_id, print_ in keys_and_jobs:
            self._reserve(
                keys=[self.store.keys.idempotency(key)],
                args=[f"{job_id}|{print_}", ttl_seconds],
                client=pipe,
            )
        reservations = []
        for (_, job_id, print_), taken in zip(keys_and_jobs, pipe.execute(), strict=True):
            if not taken:
                reservations.append(Reservation(job_id=job_id, new=True))
                continue
            earlier_job, _, earlier_print = taken.decode().partition("|")
            reservations.append(
                Reservation(job_id=earlier_job, new=False, conflict=earlier_print != print_)
            )
        return reservations

    def release(self, keys: Sequence[str]) -> None:
        """Free idempotency keys whose jobs were never enqueued."""
        if keys:
            self.store.redis.delete(*(self.store.keys.idempotency(key) for key in keys))
