"""Waiting for jobs: told by Redis the moment a job finishes, checked in full now and then.

A worker that records a job's final outcome publishes the job id on that job's own channel
(`Keys.done_channel`, from the same Lua script that writes the record). A waiter subscribes to
the channels of the jobs it waits for *before* it first reads their status, so no completion
can slip between the two, and then sleeps on the subscription: a finished job is seen within a
millisecond or so, and waiting costs Redis nothing while nothing finishes. Every
`RECHECK_SECONDS` it reads the status of all pending jobs anyway (one pipelined round trip of
`HGET status`, not whole records), which covers a notification lost with a dropped connection.
When the deadline comes, it reads them once more before giving up: a job that finished at the
last moment is returned, and `JobWaitTimeout` names the status the job has at the timeout
(`running`), not the one it had at the last recheck (`queued`, up to a second before).

`Waiter` holds all of a wait that needs no I/O: which channels to subscribe to, what was
announced, which jobs to check, the deadline and the pause after a Redis fault. The sync and
the asyncio client only carry out its steps, each with its own Redis client.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from tierq.core.errors import BrokerUnavailableError, JobNotFoundError, JobWaitTimeout
from tierq.core.keys import Keys, as_text
from tierq.core.results import JobResult, JobStatus

DEFAULT_WAIT_SECONDS = 300.0
# A full status check of every pending job at least this often, whatever the notifications.
RECHECK_SECONDS = 1.0
# Pause before trying again after Redis could not be reached (until the deadline).
BROKER_RETRY_SECONDS = 0.2
# Channels per SUBSCRIBE command when waiting on many jobs.
SUBSCRIBE_BATCH = 1000
_FINAL = {status.value.encode() for status in JobStatus if status.is_final}


class Waiter:
    """The state of one wait: which jobs are pending, what was announced, the deadline.

    A client's loop, until `done()`: subscribe to each of `subscriptions()`; then read the
    statuses of `to_check()`, the records of those `finished_among` them, and pass the records
    to `finish`; then listen for up to `next_wake()` seconds, passing each message to `heard`.
    On a Redis fault it sleeps `broker_failed(error)` seconds and starts over. Once the
    deadline has passed, `to_check()` asks for every pending job, and the `next_wake()` after
    that read raises `JobWaitTimeout` with the status just read.
    """

    def __init__(self, job_ids: Sequence[str], timeout: float, keys: Keys) -> None:
        self.job_ids = list(job_ids)
        self.timeout = timeout
        self._keys = keys
        self._deadline = time.monotonic() + timeout
        self._pending = dict.fromkeys(self.job_ids)
        self._announced: list[str] = []
        self._last_status: dict[str, str] = {}
        self._next_recheck = 0.0
        # Whether the statuses last read were read at or after the deadline (the final check).
        self._checked_at_deadline = False

    def pending(self) -> list[str]:
        return list(self._pending)

    def subscriptions(self) -> list[list[str]]:
        """The pending jobs' done channels, a SUBSCRIBE command's worth at a time."""
        channels = [self._keys.done_channel(job_id) for job_id in self._pending]
        return [
            channels[start : start + SUBSCRIBE_BATCH]
            for start in range(0, len(channels), SUBSCRIBE_BATCH)
        ]

    def heard(self, message: Mapping[str, Any]) -> None:
        """Note a pub/sub message: a published one names a job that has finished."""
        if message.get("type") == "message":
            self._announced.append(as_text(message["data"]))

    def to_check(self) -> list[str]:
        """Jobs whose status to read now: those announced, or all pending when a recheck is due
        or the deadline has passed (the final check, whose statuses a timeout reports)."""
        announced, self._announced = self._announced, []
        now = time.monotonic()
        if now >= self._next_recheck or now >= self._deadline:
            self._next_recheck = now + RECHECK_SECONDS
            self._checked_at_deadline = now >= self._deadline
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

    def finish(self, records: Sequence[JobResult | None]) -> list[JobResult]:
        """Take the finished jobs' records off the wait and return them; a record that expired
        since its status was read (None) stays pending, and the next recheck reports it gone."""
        found = [record for record in records if record is not None]
        for record in found:
            self._pending.pop(record.job_id, None)
        return found

    def done(self) -> bool:
        return not self._pending

    def next_wake(self) -> float:
        """How long to sleep on the subscription before a recheck is due: 0 once the deadline
        has passed, so the final check comes next. Raises `JobWaitTimeout` after that check,
        naming the first pending job and the status it had then."""
        if self._checked_at_deadline:
            first = next(iter(self._pending))
            raise JobWaitTimeout(first, self.timeout, self._last_status.get(first, "unknown"))
        now = time.monotonic()
        return max(0.0, min(self._deadline - now, self._next_recheck - now))

    def broker_failed(self, error: Exception) -> float:
        """Redis could not be reached: how long to pause before trying again, until the deadline."""
        if time.monotonic() + BROKER_RETRY_SECONDS >= self._deadline:
            raise BrokerUnavailableError(f"cannot reach Redis to read job records: {error}")
        self._next_recheck = 0.0  # notifications may have been lost: check everything next
        return BROKER_RETRY_SECONDS
