"""Workers killed or stopped mid-call: no job lost, none paid for twice, recovery in seconds.

Each test prints its figures (jobs, results, API calls, recovery time) for the record.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tests.support import (
    Fleet,
    Simulator,
    all_running,
    env_of,
    eventually,
    job,
    logged,
    nonce,
    slow_jobs,
)
from tierq.core.contract import JobEnvelope, JobRequest
from tierq.core.jobstore import JobStore
from tierq.core.results import JobResult, JobStatus
from tierq.devkit.processes import ManagedProcess, log_events
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow

# The test workers' 3 s call timeout would cut these 20 s calls.
LONG_CALLS = {"TIERQ_REQUEST_TIMEOUT_SECONDS": "60"}


def finished_lines(workers: list[ManagedProcess], count: int) -> list[str]:
    """The job ids of the workers' `job.finished` (succeeded) log lines, once there are at least
    `count`: a worker writes a job's line just after recording the result a client waits for."""

    def lines() -> list[str]:
        return [
            str(event["job_id"])
            for worker in workers
            for event in log_events(worker.log_path)
            if event.get("event") == "job.finished" and event.get("status") == "succeeded"
        ]

    return eventually(
        lines, until=lambda found: len(found) >= count, what=f"{count} finished lines", timeout=10
    )


def test_a_killed_workers_jobs_run_again_elsewhere_within_a_minute(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given worker A runs 50 jobs of 10 s each, with a 6 s lease
    lease = {"TIERQ_LEASE_SECONDS": "6", **LONG_CALLS}
    (doomed,), settings = start_fleet(concurrency=50, **lease)
    marker = nonce()
    with TierqClient(settings) as client:
        ids = client.submit_many(slow_jobs(marker, 50, 10_000))
        eventually(
            lambda: client.get_many(ids), until=all_running, what="50 jobs running", timeout=30
        )
        # When A is killed outright, and worker B (same tier, same settings) is running
        doomed_node = client.get(ids[0]).worker
        (survivor,), _ = start_fleet(concurrency=50, **lease, **env_of(settings))
        doomed.signal(signal.SIGKILL)
        killed = time.monotonic()

        def all_running_elsewhere(records: Sequence[JobResult | None]) -> bool:
            return all_running(records) and all(
                r is not None and r.worker != doomed_node for r in records
            )

        eventually(
            lambda: client.get_many(ids),
            until=all_running_elsewhere,
            what="every job running again on B",
            timeout=60,
        )
        recovery = time.monotonic() - killed
        results = client.wait_many(ids, timeout=90)

    calls = simulator.requests_with(marker)
    print(  # the figures of this run, for the record
        f"\nSIGKILL: jobs=50 results={len(results)} api_calls={len(calls)} recovery={recovery:.1f}s"
    )
    # Then nothing is lost, each job has one result, and the API was called at most twice per
    # job (the call cut by the kill, and the one that finished)
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 50
    assert recovery <= 60
    assert len(calls) <= 50 + 50
    assert sorted(finished_lines([survivor], len(ids))) == sorted(ids)


def test_sigterm_lets_running_jobs_finish_and_loses_nothing(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given worker A runs 10 jobs of 2 s with 20 more queued behind them (grace: 20 s)
    (stopping,), settings = start_fleet(concurrency=10, TIERQ_SHUTDOWN_GRACE_SECONDS="20")
    marker = nonce()
    with TierqClient(settings) as client:
        ids = client.submit_many(slow_jobs(marker, 30, 2_000))
        eventually(
            lambda: client.get_many(ids),
            until=lambda records: (
                sum(r is not None and r.status is JobStatus.RUNNING for r in records) == 10
            ),
            what="10 jobs running",
            timeout=30,
        )
        # When A is told to stop (what an orchestrator sends) and B takes over the queue
        stopping.signal(signal.SIGTERM)
        (successor,), _ = start_fleet(concurrency=10, **env_of(settings))
        results = client.wait_many(ids, timeout=90)
        eventually(lambda: not stopping.alive(), what="A exiting", timeout=30)

    calls = simulator.requests_with(marker)
    print(f"\nSIGTERM: jobs=30 results={len(results)} api_calls={len(calls)}")
    # Then A finished what it ran, B ran the rest, and each job was called exactly once
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 30
    assert len(calls) == 30
    assert sorted(finished_lines([stopping, successor], len(ids))) == sorted(ids)


def test_sigterm_past_the_grace_period_hands_running_jobs_back(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given worker A runs 5 jobs of 10 s, and may take only 2 s to stop
    settings_a = {"TIERQ_SHUTDOWN_GRACE_SECONDS": "2", "TIERQ_LEASE_SECONDS": "5", **LONG_CALLS}
    (stopping,), settings = start_fleet(concurrency=5, **settings_a)
    marker = nonce()
    with TierqClient(settings) as client:
        ids = client.submit_many(slow_jobs(marker, 5, 10_000))
        eventually(
            lambda: client.get_many(ids), until=all_running, what="5 jobs running", timeout=30
        )
        stopping.signal(signal.SIGTERM)
        signalled = time.monotonic()
        eventually(lambda: not stopping.alive(), what="A exiting", timeout=30)
        stopped = time.monotonic() - signalled
        at_exit = client.get_many(ids)
        (successor,), _ = start_fleet(
            concurrency=5, TIERQ_LEASE_SECONDS="5", **LONG_CALLS, **env_of(settings)
        )
        results = client.wait_many(ids, timeout=120)

    print(f"\nSIGTERM past grace: A stopped in {stopped:.1f}s; results={len(results)}")
    # Then A left before any of its 10 s calls could answer (it handed them back rather than
    # wait for them), and B ran every one of them to the end
    assert [r.status if r else None for r in at_exit] == [JobStatus.RUNNING] * 5
    assert logged(stopping, "job.finished") == []
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 5
    assert sorted(finished_lines([successor], len(ids))) == sorted(ids)


def test_jobs_recorded_by_a_producer_that_died_before_publishing_still_run_once(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given jobs whose producer recorded them (as submit_many does first) and died before
    # publishing them: records and kept messages, on the watch list, and no queue message
    (worker,), settings = start_fleet("fast", TIERQ_LEASE_SECONDS="5")
    marker = nonce()
    now = datetime.now(UTC)
    envelopes = [
        JobEnvelope(job_id=str(uuid.uuid4()), tier="fast", submitted_at=now,
                    request=JobRequest.model_validate(job))
        for job in slow_jobs(marker, 3, latency_ms=10)
    ]  # fmt: skip
    records = [
        JobResult(job_id=e.job_id, status=JobStatus.QUEUED, tier="fast", model="gpt-4o-mini",
                  submitted_at=now)
        for e in envelopes
    ]  # fmt: skip
    with TierqClient(settings) as client:
        store = JobStore.from_settings(settings, client.redis)
        messages = [json.dumps(e.to_message()) for e in envelopes]
        store.save_many(records, messages, watch_until=time.time() + 2 * settings.lease_seconds)

        # When the workers' reapers find them overdue, then
        ids = [e.job_id for e in envelopes]
        results = client.wait_many(ids, timeout=60)
        # The reaper put each on the queue (a path that could run a job twice, were it to
        # re-queue one again); each copy past the first reached the worker and was dropped,
        # and the finished jobs left the watch list, so no reaper will re-queue them
        requeued = [str(event["job_id"]) for event in logged(worker, "job.requeued")]

        def dropped(job_id: str) -> int:
            stale = logged(worker, "job.stale_message", job_id=job_id)
            return len(stale) + len(logged(worker, "job.already_finished", job_id=job_id))

        eventually(
            lambda: all(dropped(i) >= requeued.count(i) - 1 for i in ids),
            what="the extra copies dropped",
            timeout=30,
        )
        watched = [client.redis.zscore(store.keys.watch, job_id) for job_id in ids]

    # Then each runs, once
    assert set(requeued) == set(ids)
    assert watched == [None] * 3
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 3
    assert len(simulator.requests_with(marker)) == 3


def test_a_published_backlog_is_not_left_to_the_reaper(start_fleet: Fleet) -> None:
    # Jobs for a tier no worker of this fleet serves wait in their queue: once published they
    # are off the watch list, or every reaper pass would re-queue the whole backlog.
    _, settings = start_fleet("fast")
    with TierqClient(settings) as client:
        ids = client.submit_many([job(model="o3")] * 5)
        watched = [client.redis.zscore(JobStore.from_settings(settings).keys.watch, i) for i in ids]
    assert watched == [None] * 5
