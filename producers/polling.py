"""Waiting for many jobs at once: which to fetch next, when to give up, how long to sleep.

Shared by the sync and the asyncio client, which differ only in how they fetch and sleep.
Each poll fetches every unfinished job in one round trip; the interval starts short (quick
jobs return quickly) and grows to a cap (long waits cost Redis little).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from worker.errors import BrokerUnavailableError, JobNotFoundError, JobWaitTimeout
from worker.results import JobResult

FIRST_POLL_SECONDS = 0.02
MAX_POLL_SECONDS = 0.5
POLL_GROWTH = 1.5
DEFAULT_WAIT_SECONDS = 300.0


class Poller:
    """The state of one `wait_many`: finished records so far and the deadline."""

    def __init__(self, job_ids: Sequence[str], timeout: float) -> None:
        self.job_ids = list(job_ids)
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._interval = FIRST_POLL_SECONDS
        self._done: dict[str, JobResult] = {}
        self._last_status: dict[str, str] = {}

    def pending(self) -> list[str]:
        return [job_id for job_id in dict.fromkeys(self.job_ids) if job_id not in self._done]

    def absorb(self, job_ids: Sequence[str], records: Sequence[JobResult | None]) -> bool:
        """Take one poll's records; True once every job has finished."""
        for job_id, record in zip(job_ids, records, strict=True):
            if record is None:
                raise JobNotFoundError(job_id)
            self._last_status[job_id] = record.status.value
            if record.status.is_final:
                self._done[job_id] = record
        return not self.pending()

    def broker_failed(self, error: Exception) -> None:
        """A poll could not reach Redis: keep trying until the deadline, then say so."""
        if time.monotonic() >= self._deadline:
            raise BrokerUnavailableError(f"cannot reach Redis to read job records: {error}")

    def results(self) -> list[JobResult]:
        return [self._done[job_id] for job_id in self.job_ids]

    def next_sleep(self) -> float:
        """Seconds to sleep before the next poll; raises `JobWaitTimeout` past the deadline."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            first = self.pending()[0]
            raise JobWaitTimeout(first, self.timeout, self._last_status.get(first, "unknown"))
        sleep = min(self._interval, remaining)
        self._interval = min(self._interval * POLL_GROWTH, MAX_POLL_SECONDS)
        return sleep
