"""Redis faults while jobs are in flight: nothing lost, nothing paid for twice, workers live on.

Each test runs its own Redis (the embedded server, with append-only persistence) so it can cut
connections or restart it without touching the other tests.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.support import (
    Fleet,
    Simulator,
    all_running,
    eventually,
    logged,
    nonce,
    slow_jobs,
    user,
)
from tierq.core.results import JobStatus
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import ManagedProcess
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow


def wait_until_running(client: TierqClient, ids: list[str]) -> None:
    eventually(lambda: client.get_many(ids), until=all_running, what="the jobs running", timeout=20)


def put_off(worker: ManagedProcess, ids: list[str]) -> int:
    """How many copies of these jobs reached `worker` while their job ran, and were put off."""
    return sum(len(logged(worker, "job.duplicate_delivery", job_id=job_id)) for job_id in ids)


def wait_for_put_off_copies_dropped(worker: ManagedProcess, ids: list[str]) -> None:
    """Wait until each copy `worker` put off has come back, found its job finished and been
    dropped: only then may a test count the calls made."""

    def dropped(job_id: str) -> bool:
        finished = logged(worker, "job.already_finished", job_id=job_id)
        return len(finished) >= len(logged(worker, "job.duplicate_delivery", job_id=job_id))

    eventually(
        lambda: all(dropped(job_id) for job_id in ids),
        what="the copies put off coming back and being dropped",
        timeout=60,
    )


def test_cut_broker_connections_pay_for_no_call_twice(
    start_fleet: Fleet, simulator: Simulator, private_redis: EmbeddedRedis
) -> None:
    # Given 5 jobs in flight on one worker (with a 10 s lease, so copies put off for the rest
    # of a lease come back within the test)
    (worker,), settings = start_fleet(
        TIERQ_REDIS_URL=private_redis.url,
        TIERQ_REQUEST_TIMEOUT_SECONDS="30",
        TIERQ_LEASE_SECONDS="10",
    )
    marker = nonce()
    with TierqClient(settings) as client:
        ids = client.submit_many(slow_jobs(marker, 5, latency_ms=2500))
        wait_until_running(client, ids)

        # When every client connection to Redis is cut (kombu then hands the unacknowledged
        # messages out again, while the first deliveries are still running)
        redis.Redis.from_url(private_redis.url).execute_command("CLIENT", "KILL", "TYPE", "normal")
        results = client.wait_many(ids, timeout=60)

        # The redelivered copies reached the worker while their jobs ran (each could have paid
        # for a second call) and were put off until the lease would lapse; by then the jobs
        # have finished, and the copies are dropped
        redelivered = put_off(worker, ids)
        assert redelivered >= 1
        wait_for_put_off_copies_dropped(worker, ids)

    # Then every job succeeded once, the API was called once per job, the worker lives on
    calls = simulator.requests_with(marker)
    print(f"\ncut connections: copies_put_off={redelivered} api_calls={len(calls)}")
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 5
    assert [r.attempts for r in results] == [1] * 5
    assert len(calls) == 5
    assert worker.alive()


def test_a_worker_survives_a_redis_restart_with_jobs_in_flight(
    start_fleet: Fleet, simulator: Simulator, private_redis: EmbeddedRedis
) -> None:
    (worker,), settings = start_fleet(
        TIERQ_REDIS_URL=private_redis.url,
        TIERQ_REQUEST_TIMEOUT_SECONDS="30",
        TIERQ_LEASE_SECONDS="10",
    )
    marker = nonce()
    with TierqClient(settings) as client:
        ids = client.submit_many(slow_jobs(marker, 5, latency_ms=2500))
        wait_until_running(client, ids)

        # When Redis goes away for a few seconds and comes back with its data
        private_redis.stop(keep_data=True)
        time.sleep(3)  # the outage itself
        private_redis.start()

        results = client.wait_many(ids, timeout=60)
        after = client.wait(
            client.submit(model="gpt-4o-mini", messages=user(f"{marker} after")),
            timeout=60,
        )
        # Copies handed out again while their jobs ran come back after a lease: count the
        # calls once they have been dropped
        wait_for_put_off_copies_dropped(worker, ids)

    print(f"\nredis restart: copies_put_off={put_off(worker, ids)}")
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 5
    assert after.status is JobStatus.SUCCEEDED  # the worker reconnected and takes new jobs
    assert len(simulator.requests_with(marker)) == 6
    assert worker.alive()
    assert "Unrecoverable error" not in worker.log_text()
