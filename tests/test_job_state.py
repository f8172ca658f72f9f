"""The job's state across messages: duplicates, late copies, outages; nothing paid twice."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

import tierq.producers.client
from tests.support import (
    Fleet,
    Simulator,
    all_running,
    eventually,
    logged,
    nonce,
    user,
    without_fair_dispatch,
)
from tierq.core.celery_app import TASK_NAME, create_app
from tierq.core.errors import BrokerUnavailableError
from tierq.core.keys import Keys
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import ManagedProcess
from tierq.producers.client import TierqClient


def test_a_redelivered_message_of_a_finished_job_calls_nothing(
    client: TierqClient,
    settings: Settings,
    simulator: Simulator,
    workers: dict[str, ManagedProcess],
) -> None:
    marker = nonce()
    job_id = client.submit(model="gpt-4o-mini", messages=user(marker))
    assert client.wait(job_id, timeout=30).status is JobStatus.SUCCEEDED

    # When the same message is delivered again (as Redis does after a visibility timeout)
    kept = client.redis.hget(Keys(settings.key_prefix).job(job_id), "message")
    assert kept is not None
    app = create_app(settings)
    app.send_task(TASK_NAME, args=[json.loads(kept)], task_id=job_id)
    app.close()

    # Then the worker takes the copy and drops it; the job keeps its one answer and the API
    # heard of it once
    eventually(
        lambda: logged(workers["fast"], "job.already_finished", job_id=job_id),
        what="the worker dropping the redelivered copy",
        timeout=30,
    )
    assert client.get(job_id).status is JobStatus.SUCCEEDED
    assert len(simulator.requests_with(marker)) == 1


@pytest.mark.slow
def test_a_paid_answer_survives_a_redis_outage_longer_than_the_lease(
    start_fleet: Fleet, simulator: Simulator, private_redis: EmbeddedRedis
) -> None:
    # Given a 3 s call on a worker with a 6 s lease
    (worker,), settings = start_fleet(
        TIERQ_REDIS_URL=private_redis.url,
        TIERQ_LEASE_SECONDS="6",
        TIERQ_REQUEST_TIMEOUT_SECONDS="30",
    )
    marker = nonce()
    with TierqClient(settings) as client:
        job_id = client.submit(
            model="gpt-4o-mini", messages=user(f"{marker} [sim latency_ms=3000]")
        )
        eventually(
            lambda: client.get_many([job_id]),
            until=all_running,
            what="the call running",
            timeout=20,
        )
        lease_until = float(client.redis.hget(Keys(settings.key_prefix).job(job_id), "lease_until"))

        # When Redis goes away until the call has finished and its lease has lapsed (by its
        # recorded end, plus one renewal the worker may have made before the outage)
        private_redis.stop(keep_data=True)
        eventually(
            lambda: logged(worker, "job.settle_waiting_for_redis", job_id=job_id),
            what="the paid answer waiting for Redis",
            timeout=30,
        )
        lapsed = lease_until + settings.lease_seconds / 3
        eventually(time.time, until=lambda now: now > lapsed, what="the lease lapsing", timeout=30)
        private_redis.start()
        result = client.wait(job_id, timeout=90)
        # A reaper pass after the outage, had the lapsed lease misled one
        resumed, *_ = eventually(
            lambda: logged(worker, "leases.reaping_resumed"),
            what="the reaper judging leases again",
            timeout=60,
        )
        dead = {record.job_id for record in client.dead_letters()}

    # Then the answer is recorded, not failed, and was paid for once: the reaper left it be
    print(f"\noutage: reaper resumed, requeued={resumed['requeued']}")
    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 1
    assert job_id not in dead
    assert logged(worker, "job.requeued", job_id=job_id) == []
    assert len(simulator.requests_with(marker)) == 1


@pytest.mark.slow
def test_a_late_retry_is_not_run_twice_after_a_reaper_requeued_it(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given one worker slot and a 5 s lease; a job failing on every call (4 attempts), and a
    # 15 s job that holds the slot while the first job's retry waits behind it
    (worker,), settings = start_fleet(
        concurrency=1, TIERQ_LEASE_SECONDS="5", TIERQ_REQUEST_TIMEOUT_SECONDS="30"
    )
    marker = nonce()
    with TierqClient(settings) as client:
        failing = client.submit(model="gpt-4o-mini", messages=user(f"{marker} F [sim fail=500]"))
        blocking = client.submit(
            model="gpt-4o-mini", messages=user(f"{marker} B [sim latency_ms=15000]")
        )
        failed, _ = client.wait_many([failing, blocking], timeout=120)

        # The reaper re-queued the job while its retry waited (so it could have run twice),
        # and every copy beyond its 4 attempts reached the worker and was dropped
        requeued = len(logged(worker, "job.requeued", job_id=failing))
        assert requeued >= 1

        def dropped() -> int:
            stale = logged(worker, "job.stale_message", job_id=failing)
            return len(stale) + len(logged(worker, "job.already_finished", job_id=failing))

        eventually(
            dropped,
            until=lambda count: count >= requeued,
            what=f"the {requeued} superseded copies dropped",
            timeout=30,
        )

    # Then the reaper's re-queue replaced the late retry instead of doubling it: the job spent
    # exactly its 4 attempts
    calls = [call for call in simulator.requests_with(marker) if " F " in str(call["body"])]
    print(f"\nlate retry: api_calls={len(calls)} requeued={requeued} dropped={dropped()}")
    assert failed.status is JobStatus.FAILED
    assert failed.attempts == 4
    assert len(calls) == 4


def test_jobs_that_may_have_been_enqueued_keep_their_idempotency_keys(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the broker fails while the second of two batches is being published
    # (an injected fault: the publish itself is the real one for every other message)
    monkeypatch.setattr(tierq.producers.client, "PUBLISH_BATCH", 2)
    published = 0
    real_publish = TierqClient._publish

    def failing_on_the_third(self: TierqClient, envelope: Any, producer: Any) -> None:
        nonlocal published
        published += 1
        if published == 3:
            raise OperationalError("connection reset by the broker")
        real_publish(self, envelope, producer)

    monkeypatch.setattr(TierqClient, "_publish", failing_on_the_third)
    # (the publish path itself: on a tier with fair dispatch a worker's script publishes)
    isolated = without_fair_dispatch(settings).model_copy(
        update={"queue_prefix": f"tierq-idem-{nonce()}."}
    )
    requests = [{"model": "gpt-4o-mini", "messages": user(f"idem {i}")} for i in range(6)]
    keys = [f"{nonce()}-{i}" for i in range(6)]

    with TierqClient(isolated) as client:
        with pytest.raises(BrokerUnavailableError) as failed:
            client.submit_many(requests, idempotency_keys=keys)
        first_ids = failed.value.job_ids

        # When the caller submits again with the same keys, the broker being back
        monkeypatch.setattr(TierqClient, "_publish", real_publish)
        again = client.submit_many(requests, idempotency_keys=keys)

    # Then the 4 jobs that were (or may have been) enqueued keep their ids; only the 2 never
    # sent are enqueued anew
    queue = redis.Redis.from_url(settings.redis_url.get_secret_value())
    assert again[:4] == first_ids
    assert set(again[4:]).isdisjoint(first_ids)
    assert queue.llen(isolated.queue_for("fast")) == 2 + 2
