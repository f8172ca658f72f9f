"""The job's state across messages: duplicates, late copies, outages; nothing paid twice."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

import tierq.producers.client
from tests.support import Fleet, Simulator, all_running, eventually, nonce, user
from tierq.core.celery_app import TASK_NAME, create_app
from tierq.core.errors import BrokerUnavailableError
from tierq.core.keys import Keys
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import log_events
from tierq.producers.client import TierqClient


def test_a_redelivered_message_of_a_finished_job_calls_nothing(
    client: TierqClient, settings: Settings, simulator: Simulator
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
    time.sleep(2)

    # Then the job keeps its one answer and the API heard of it once
    assert client.get(job_id).status is JobStatus.SUCCEEDED
    assert len(simulator.requests_with(marker)) == 1


@pytest.mark.slow
def test_a_paid_answer_survives_a_redis_outage_longer_than_the_lease(
    start_fleet: Fleet, simulator: Simulator, private_redis: EmbeddedRedis
) -> None:
    # Given a 3 s call on a worker with a 6 s lease
    _, settings = start_fleet(
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

        # When Redis is away for 16 s (the call finishes meanwhile, and the lease lapses)
        private_redis.stop(keep_data=True)
        time.sleep(16)
        private_redis.start()
        result = client.wait(job_id, timeout=90)
        time.sleep(8)  # a reaper pass, had the lapsed lease misled one
        dead = {record.job_id for record in client.dead_letters()}

    # Then the answer is recorded, not failed, and was paid for once
    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 1
    assert job_id not in dead
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
        time.sleep(8)  # any late copy has arrived

    # Then the reaper's re-queue replaced the late retry instead of doubling it: the job spent
    # exactly its 4 attempts
    calls = [call for call in simulator.requests_with(marker) if " F " in str(call["body"])]
    events = log_events(worker.log_path)
    print(
        f"\nlate retry: api_calls={len(calls)} "
        f"requeued={sum(e.get('event') == 'job.requeued' for e in events)} "
        f"stale={sum(e.get('event') == 'job.stale_message' for e in events)}"
    )
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
    isolated = settings.model_copy(update={"queue_prefix": f"tierq-idem-{nonce()}."})
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
