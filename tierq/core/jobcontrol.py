"""What a caller or an operator does to jobs after submission: cancel, retry dead letters, and
reserve idempotency keys. Each is one Lua script over the job's record (lua/cancel.lua,
lua/retry_dead.lua, lua/reserve_idempotency.lua), so it cannot race a worker writing the same
record (tierq/core/jobstore.py holds the workers' side).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tierq.core import scripts
from tierq.core.contract import JobRequest
from tierq.core.jobstore import JobStore
from tierq.core.results import JobResult, JobStatus


def fingerprint(request: JobRequest, labels: Mapping[str, str]) -> str:
    """What makes two submissions the same request, for idempotency keys: the body and the
    caller's labels."""
    fields = {"request": request.api_fields(), "labels": dict(labels)}
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
        self._cancel = scripts.register(client, "cancel")
        self._retry_dead = scripts.register(client, "retry_dead")
        self._reserve = scripts.register(client, "reserve_idempotency")

    def cancel(
        self, record: JobResult, *, spare_running: bool = False
    ) -> tuple[str, JobResult | None]:
        """Cancel the job `record` describes; ("cancelled" | "final" | "missing", record).

        With `spare_running`, a job a worker is running is left to finish ("running", None):
        its call is paid for, so its answer is kept (a batch's cancel, as in the OpenAI API).
        """
        cancelled = record.model_copy(
            update={"status": JobStatus.CANCELLED, "finished_at": datetime.now(UTC)}
        )
        keys = self.store.keys
        outcome, detail = self._cancel(
            keys=[keys.job(record.job_id), keys.watch, *keys.tenant_in_flight_of(record.tenant)],
            args=[
                cancelled.to_json(),
                keys.done_channel(record.job_id),
                record.job_id,
                "spare_running" if spare_running else "",
            ],
        )
        if outcome == b"cancelled":
            return "cancelled", cancelled
        if outcome == b"final":
            return "final", JobResult.from_json(detail)
        if outcome == b"running":
            return "running", None
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
            keys=[
                keys.job(record.job_id),
                keys.dead,
                keys.watch,
                *keys.tenant_in_flight_of(record.tenant),
            ],
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
