"""After submission: cancellation, idempotent resubmission, dead letters, poison messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import (
    Fleet,
    Simulator,
    all_running,
    env_of,
    eventually,
    logged,
    nonce,
    run_tierq,
    user,
    without_fair_dispatch,
)
from tierq.core.celery_app import create_app
from tierq.core.dispatch import Backlogs
from tierq.core.errors import IdempotencyConflictError, InvalidJobError
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.devkit.processes import ManagedProcess
from tierq.producers.client import TierqClient


def idle_queues(settings: Settings) -> Settings:
    """The same Redis and records, but queues no worker consumes yet."""
    return settings.model_copy(update={"queue_prefix": f"tierq-idle-{nonce()}."})


@pytest.mark.parametrize("fair_dispatch", [True, False], ids=["in-its-backlog", "on-the-queue"])
def test_a_cancelled_queued_job_never_reaches_the_api(
    settings: Settings, simulator: Simulator, start_fleet: Fleet, fair_dispatch: bool
) -> None:
    # Given two jobs waiting for a tier no worker serves yet: in the tier's backlog (fair
    # dispatch, the default) or on its queue
    waiting = idle_queues(settings if fair_dispatch else without_fair_dispatch(settings))
    kept, dropped = nonce(), nonce()
    with TierqClient(waiting) as client:
        kept_id = client.submit(model="gpt-4o-mini", messages=user(kept))
        job_id = client.submit(model="gpt-4o-mini", messages=user(dropped))

        # When the second is cancelled, and then a worker comes for their tier
        cancelled = client.cancel(job_id)
        (worker,), _ = start_fleet(**env_of(waiting))

        # Then the job waiting beside it reaches the API (so this one could have), while the
        # cancelled one is dropped: by the dispatcher, before it reaches the queue, or by the
        # worker its message reaches
        assert client.wait(kept_id, timeout=30).status is JobStatus.SUCCEEDED
        if fair_dispatch:
            assert Backlogs(client.redis, waiting).waiting("fast") == {}
            assert logged(worker, "job.already_finished", job_id=job_id) == []
        else:
            eventually(
                lambda: logged(worker, "job.already_finished", job_id=job_id, status="cancelled"),
                what="the worker dropping the cancelled job's message",
                timeout=30,
            )
        assert cancelled.status is JobStatus.CANCELLED
        assert client.get(job_id).status is JobStatus.CANCELLED
    assert len(simulator.requests_with(kept)) == 1
    assert simulator.requests_with(dropped) == []


def test_a_cancelled_running_job_has_its_result_discarded(
    client: TierqClient, simulator: Simulator, workers: dict[str, ManagedProcess]
) -> None:
    marker = nonce()
    job_id = client.submit(model="gpt-4o-mini", messages=user(f"{marker} [sim latency_ms=1500]"))
    eventually(
        lambda: client.get_many([job_id]), until=all_running, what="the job running", timeout=10
    )

    client.cancel(job_id)
    # The call finishes meanwhile; its worker drops the answer instead of recording it
    eventually(
        lambda: logged(workers["fast"], "job.result_discarded", job_id=job_id),
        what="the worker discarding the cancelled job's answer",
        timeout=30,
    )

    record = client.get(job_id)
    assert record.status is JobStatus.CANCELLED
    assert record.response is None
    assert len(simulator.requests_with(marker)) == 1  # the call was made, and paid for once


def test_a_job_cancelled_while_it_waits_for_the_rate_limit_is_never_called(
    simulator: Simulator, start_fleet: Fleet
) -> None:
    # Given a worker told the API allows 20 requests a minute: a second job waits about 3 s
    # in its slot (under the 5 s it may wait there) for its turn
    fleet, settings = start_fleet(
        concurrency=4, TIERQ_RATE_LIMITS=json.dumps({"gpt-4o-mini": {"rpm": 20}})
    )
    first, second = nonce(), nonce()
    with TierqClient(settings) as client:
        first_id = client.submit(model="gpt-4o-mini", messages=user(first))
        assert client.wait(first_id, timeout=30).status is JobStatus.SUCCEEDED
        second_id = client.submit(model="gpt-4o-mini", messages=user(second))
        eventually(
            lambda: client.get_many([second_id]),
            until=all_running,
            what="the second job waiting for its turn",
            timeout=10,
            interval=0.02,
        )

        # When it is cancelled while it waits
        client.cancel(second_id)

        # Then its worker gives up the call when its turn comes, and the API never sees it
        fleet[0].wait_until(lambda: "job.cancelled_before_call" in fleet[0].log_text())
        assert client.get(second_id).status is JobStatus.CANCELLED
    assert len(simulator.requests_with(first)) == 1
    assert simulator.requests_with(second) == []


def test_cancelling_a_finished_job_leaves_it_as_it_is(client: TierqClient) -> None:
    job_id = client.submit(model="gpt-4o-mini", messages=user("done"))
    client.wait(job_id, timeout=30)

    assert client.cancel(job_id).status is JobStatus.SUCCEEDED


def test_resubmitting_1000_jobs_with_their_idempotency_keys_calls_the_api_no_more(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    requests = [{"model": "gpt-4o-mini", "messages": user(f"{marker} {i}")} for i in range(1000)]
    keys = [f"{marker}-{i}" for i in range(1000)]

    first = client.submit_many(requests, idempotency_keys=keys)
    client.wait_many(first, timeout=120)
    again = client.submit_many(requests, idempotency_keys=keys)

    calls = len(simulator.requests_with(marker))
    print(f"\nidempotency: jobs=1000 resubmitted=1000 api_calls={calls}")
    assert again == first
    assert calls == 1000


def test_an_idempotency_key_reused_for_another_request_is_refused(client: TierqClient) -> None:
    key = nonce()
    job_id = client.submit(model="gpt-4o-mini", messages=user("one"), idempotency_key=key)

    with pytest.raises(IdempotencyConflictError, match=key) as refused:
        client.submit(model="gpt-4o-mini", messages=user("another"), idempotency_key=key)

    assert refused.value.job_id == job_id
    assert client.submit(model="gpt-4o-mini", messages=user("one"), idempotency_key=key) == job_id


@pytest.mark.slow
def test_a_job_that_exhausts_its_attempts_is_a_dead_letter_that_can_be_retried(
    client: TierqClient, worker_env: dict[str, str], simulator: Simulator
) -> None:
    # Given a job failing with a 500 on its first 4 calls (the test workers' whole budget)
    marker = nonce()
    job_id = client.submit(model="gpt-4o-mini", messages=user(f"{marker} [sim fail=500 times=4]"))
    failed = client.wait(job_id, timeout=60)
    assert failed.status is JobStatus.FAILED

    # Then it is listed as a dead letter, by the client and by `tierq dead`
    assert job_id in [record.job_id for record in client.dead_letters()]
    listed = run_tierq(worker_env, "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    assert job_id in [record["job_id"] for record in json.loads(listed.stdout)]

    # When it is retried, it runs again with a fresh budget, and leaves the dead letters
    retried = run_tierq(worker_env, "retry", job_id)
    assert retried.returncode == 0, retried.stderr
    result = client.wait(job_id, timeout=60)
    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 1
    assert job_id not in [record.job_id for record in client.dead_letters()]
    assert len(simulator.requests_with(marker)) == 5


def test_a_job_that_failed_for_its_request_is_not_a_dead_letter(client: TierqClient) -> None:
    job_id = client.submit(model="gpt-4o-mini", messages=user("[sim fail=400]"))
    assert client.wait(job_id, timeout=30).status is JobStatus.FAILED

    assert job_id not in [record.job_id for record in client.dead_letters()]
    with pytest.raises(InvalidJobError, match="not a dead letter"):
        client.retry(job_id)


@pytest.mark.parametrize(
    "poison",
    [["not a job"], [{"job_id": "x"}], [], ["{broken json"]],
    ids=["a string", "half an envelope", "no arguments", "text"],
)
def test_a_poison_message_is_rejected_and_the_worker_carries_on(
    client: TierqClient,
    settings: Settings,
    workers: dict[str, ManagedProcess],
    poison: list[Any],
) -> None:
    app = create_app(settings)
    app.send_task(
        "tierq.complete", args=poison, task_id=f"poison-{nonce()}", queue=settings.queue_for("fast")
    )
    app.close()

    result = client.wait(client.submit(model="gpt-4o-mini", messages=user("after")), timeout=30)

    assert result.status is JobStatus.SUCCEEDED
    assert workers["fast"].alive()
