"""A wait that runs out says where the job is at that moment, in both clients.

The waiter reads every pending job's status once a second as a safety net; a timeout between
two of those reads used to report the status of the last one, so a job that had started since
was reported "still queued". The first tests drive the sans-IO `Waiter` (no Redis); the last
one proves the same through each client face against a real worker holding a job running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from tests.support import Fleet, eventually, job, nonce
from tierq.core.errors import JobWaitTimeout
from tierq.core.keys import Keys
from tierq.core.results import JobResult, JobStatus
from tierq.producers.aio import AsyncTierqClient
from tierq.producers.client import TierqClient
from tierq.producers.waiting import RECHECK_SECONDS, Waiter

KEYS = Keys("waiting-test:")
# A wait shorter than the recheck interval: nothing but the deadline reads the status again.
SHORT_WAIT_SECONDS = 0.9


def past_its_deadline(waiter: Waiter, first_status: bytes) -> Waiter:
    """`waiter` after its first full check (each job in `first_status`) and its deadline."""
    checked = waiter.to_check()
    waiter.finished_among(checked, [first_status] * len(checked))
    time.sleep(waiter.timeout + 0.01)
    return waiter


def test_a_timeout_reports_the_status_read_at_the_deadline_not_the_last_recheck() -> None:
    # Given a job seen queued, then a deadline that comes before the next recheck is due
    waiter = past_its_deadline(Waiter(["a"], 0.05, KEYS), b"queued")
    assert waiter.timeout < RECHECK_SECONDS

    # When the wait wakes at its deadline, it reads the status once more before giving up
    assert waiter.next_wake() == 0.0
    assert waiter.to_check() == ["a"]
    waiter.finished_among(["a"], [b"running"])

    # Then the timeout names the status just read
    with pytest.raises(JobWaitTimeout, match="job 'a' still running after") as timed_out:
        waiter.next_wake()
    assert timed_out.value.status == "running"


def test_a_job_that_finishes_at_the_deadline_is_returned_not_timed_out() -> None:
    waiter = past_its_deadline(Waiter(["a"], 0.05, KEYS), b"running")

    assert waiter.to_check() == ["a"]
    ended = waiter.finished_among(["a"], [b"succeeded"])
    record = JobResult(
        job_id="a",
        status=JobStatus.SUCCEEDED,
        tier="fast",
        model="gpt-4o-mini",
        submitted_at=datetime.now(UTC),
    )

    assert ended == ["a"]
    assert waiter.finish([record]) == [record]
    assert waiter.done()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_wait_timeout_reports_a_job_that_started_during_the_wait_as_running(
    start_fleet: Fleet, face: str
) -> None:
    # Given one worker slot, busy for a moment, so the next job is still queued when the
    # wait for it begins, and then runs for 2 s
    _, settings = start_fleet(concurrency=1)
    with TierqClient(settings) as client, waiting_face(face, client) as wait:
        blocker = client.submit(job(f"{nonce()} [sim latency_ms=300]"))
        eventually(
            lambda: client.get(blocker).status,
            until=lambda status: status is JobStatus.RUNNING,
            what="the first job holding the only slot",
            timeout=30,
        )
        target = client.submit(job(f"{nonce()} [sim latency_ms=2000]"))
        assert client.get(target).status is JobStatus.QUEUED

        # When the caller waits for it for less than the recheck interval
        with pytest.raises(JobWaitTimeout) as timed_out:
            wait(target, SHORT_WAIT_SECONDS)

        # Then the timeout says where the job is now: running, not still queued
        assert timed_out.value.status == "running", str(timed_out.value)
        assert f"job {target!r} still running after waiting 0.9s" in str(timed_out.value)
        # and the job carries on
        assert client.wait(target, timeout=30).status is JobStatus.SUCCEEDED


@contextlib.contextmanager
def waiting_face(face: str, client: TierqClient) -> Iterator[Callable[[str, float], JobResult]]:
    """`wait(job_id, timeout)` of the sync client, or of an asyncio client on the same
    settings, made ready beforehand so that the wait starts at once when called."""
    if face == "sync":
        yield client.wait
        return
    with asyncio.Runner() as runner:

        async def connect() -> AsyncTierqClient:
            return AsyncTierqClient(client.settings)

        tierq = runner.run(connect())
        try:
            yield lambda job_id, timeout: runner.run(tierq.wait(job_id, timeout=timeout))
        finally:
            runner.run(tierq.aclose())
