"""Waiting for jobs: told by Redis the moment a job finishes, checked in full now and then.

A worker that records a job's final outcome publishes the job id on that job's own channel
(`JobStore.done_channel`, from the same Lua script that writes the record). A waiter
subscribes to the channels of the jobs it waits for *before* it first reads their status, so
no completion can slip between the two, and then sleeps on the subscription: a finished job is
seen within a millisecond or so, and waiting costs Redis nothing while nothing finishes. Every
`RECHECK_SECONDS` it reads the status of all pending jobs anyway (one pipelined round trip of
`HGET status`, not whole records), which covers a notification lost with a dropped connection.

`Waiter` holds the bookkeeping shared by the sync and the asyncio client, which differ only in
how they talk to Redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tierq.core.errors import BrokerUnavailableError, JobNotFoundError, JobWaitTimeout
from tierq.core.results import JobResult, JobStatus

DEFAULT_WAIT_SECONDS = 300.0
# A full status check of every pending job at least this often, whatever the notifications.
RECHECK_SECONDS = 1.0
# Pause before trying again after Redis could not be reached (until the deadline).
BROKER_RETRY_SECONDS = 0.2
_FINAL = {status.value.encode() for status in JobStatus if status.is_final}


class Waiter:
    """The state of one wait: which jobs are pending, what has finished, the deadline."""

    def __init__(self, job_ids: Sequence[str], timeout: float) -> None:
        self.job_ids = list(job_ids)
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._pending = dict.fromkeys(self.job_ids)
        self._done: dict[str, JobResult] = {}
        self._last_status: dict[str, str] = {}
        self._next_recheck = 0.0

    def pending(self) -> list[str]:
        return list(self._pending)

    def to_check(self, announced: Sequence[str]) -> list[str]:
        """Jobs whose status to read now: those announced, or all pending when a recheck is due."""
        now = time.monotonic()
        if now >= self._next_recheck:
            self._next_recheck = now + RECHECK_SECONDS
            return self.pending()
        return [job_id for job_id in announced if job_id in self._pending]

    def finished_among(
        self, job_ids: Sequence[str], statuses: Sequence[bytes | str | None]
    ) -> list[str]:
        """The ids whose status is final; raises `JobNotFoundError` for one with no record."""
        finished = []
        for job_id, status in zip(job_ids, statuses, strict=True):
            if status is None:
                raise JobNotFoundError(job_id)
            raw = status.encode() if isinstance(status, str) else status
            self._last_status[job_id] = raw.decode()
            if raw in _FINAL:
                finished.append(job_id)
        return finished

    def finish(self, record: JobResult) -> None:
        self._pending.pop(record.job_id, None)
        self._done[record.job_id] = record

    def done(self) -> bool:
        return not self._pending

    def results(self) -> list[JobResult]:
        return [self._done[job_id] for job_id in self.job_ids]

    def seconds_left(self) -> float:
        """Time left to wait; raises `JobWaitTimeout` once it is spent."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            first = next(iter(self._pending))
            raise JobWaitTimeout(first, self.timeout, self._last_status.get(first, "unknown"))
        return left

    def next_wake(self) -> float:
        """How long to sleep on the subscription before a recheck is due."""
        return max(0.0, min(self.seconds_left(), self._next_recheck - time.monotonic()))

    def broker_failed(self, error: Exception) -> float:
        """Redis could not be reached: how long to pause before trying again, until the deadline."""
        if time.monotonic() + BROKER_RETRY_SECONDS >= self._deadline:
            raise BrokerUnavailableError(f"cannot reach Redis to read job records: {error}")
        self._next_recheck = 0.0  # notifications may have been lost: check everything next
        return BROKER_RETRY_SECONDS
