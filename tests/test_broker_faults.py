"""Redis faults while jobs are in flight: nothing lost, nothing paid for twice, workers live on.

Each test runs its own Redis (the embedded server, with append-only persistence) so it can cut
connections or restart it without touching the other tests.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.support import Fleet, Simulator, all_running, eventually, nonce, slow_jobs, user
from tierq.core.results import JobStatus
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow


def wait_until_running(client: TierqClient, ids: list[str]) -> None:
    eventually(lambda: client.get_many(ids), until=all_running, what="the jobs running", timeout=20)


def test_cut_broker_connections_pay_for_no_call_twice(
    start_fleet: Fleet, simulator: Simulator, private_redis: EmbeddedRedis
) -> None:
    # Given 5 jobs in flight on one worker
    workers, settings = start_fleet(
        TIERQ_REDIS_URL=private_redis.url, TIERQ_REQUEST_TIMEOUT_SECONDS="30"
    )
    marker = nonce()
    with TierqClient(settings) as client:
        ids = client.submit_many(slow_jobs(marker, 5, latency_ms=2500))
        wait_until_running(client, ids)

        # When every client connection to Redis is cut (kombu then hands the unacknowledged
        # messages out again, while the first deliveries are still running)
        redis.Redis.from_url(private_redis.url).execute_command("CLIENT", "KILL", "TYPE", "normal")
        results = client.wait_many(ids, timeout=60)
        # The redelivered copies found their jobs running (claimed, leased) and were put off
        # until the lease would lapse; by then the jobs are finished and they will call nothing.

    # Then every job succeeded once, the API was called once per job, the worker lives on
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 5
    assert [r.attempts for r in results] == [1] * 5
    assert len(simulator.requests_with(marker)) == 5
    assert workers[0].alive()


def test_a_worker_survives_a_redis_restart_with_jobs_in_flight(
    start_fleet: Fleet, simulator: Simulator, private_redis: EmbeddedRedis
) -> None:
    workers, settings = start_fleet(
        TIERQ_REDIS_URL=private_redis.url, TIERQ_REQUEST_TIMEOUT_SECONDS="30"
    )
    marker = nonce()
    with TierqClient(settings) as client:
        ids = client.submit_many(slow_jobs(marker, 5, latency_ms=2500))
        wait_until_running(client, ids)

        # When Redis goes away for a few seconds and comes back with its data
        private_redis.stop(keep_data=True)
        time.sleep(3)
        private_redis.start()

        results = client.wait_many(ids, timeout=60)
        after = client.wait(
            client.submit(model="gpt-4o-mini", messages=user(f"{marker} after")),
            timeout=60,
        )

    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 5
    assert after.status is JobStatus.SUCCEEDED  # the worker reconnected and takes new jobs
    assert len(simulator.requests_with(marker)) == 6
    assert workers[0].alive()
    assert "Unrecoverable error" not in workers[0].log_text()
