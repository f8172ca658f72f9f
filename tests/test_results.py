"""Polling results: get, wait, timeouts, expiry, and the asyncio client."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from pydantic import SecretStr

from tests.support import WorkerFactory, eventually, nonce, user
from tierq.core.errors import BrokerUnavailableError, JobNotFoundError, JobWaitTimeout
from tierq.core.keys import Keys
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.devkit.processes import free_port
from tierq.producers.aio import AsyncTierqClient
from tierq.producers.client import TierqClient


def test_submit_returns_at_once_with_a_queued_job(client: TierqClient) -> None:
    job_id = client.submit(model="gpt-4o-mini", messages=user("[sim latency_ms=1500] slow one"))

    # The call itself takes 1.5 s: a job not yet finished shows submit did not wait for it
    record = client.get(job_id)
    assert record.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert record.model == "gpt-4o-mini"
    assert client.wait(job_id, timeout=30).status is JobStatus.SUCCEEDED


def test_wait_raises_a_clear_timeout_and_the_job_carries_on(client: TierqClient) -> None:
    job_id = client.submit(model="gpt-4o-mini", messages=user("[sim latency_ms=2000] slow"))

    with pytest.raises(JobWaitTimeout, match="keeps running") as timed_out:
        client.wait(job_id, timeout=0.3)
    # The wait gave up before the 2 s call could end: the job is still unfinished
    assert not client.get(job_id).status.is_final
    assert timed_out.value.job_id == job_id

    assert client.wait(job_id, timeout=30).status is JobStatus.SUCCEEDED


def test_an_unknown_job_id_is_not_found(client: TierqClient) -> None:
    with pytest.raises(JobNotFoundError):
        client.get("no-such-job")
    with pytest.raises(JobNotFoundError):
        client.wait("no-such-job", timeout=1)


def test_results_expire_after_the_ttl(
    start_worker_with: WorkerFactory,
) -> None:
    _, settings = start_worker_with("fast", TIERQ_RESULT_TTL_SECONDS="2")
    with TierqClient(settings) as tierq:
        job_id = tierq.submit(model="gpt-4o-mini", messages=user("short-lived"))
        assert tierq.wait(job_id, timeout=30).status is JobStatus.SUCCEEDED
        store = redis.Redis.from_url(settings.redis_url.get_secret_value())
        record_key = Keys(settings.key_prefix).job(job_id)
        assert 0 < store.ttl(record_key) <= 2

        eventually(lambda: store.exists(record_key) == 0, what="the record expiring", timeout=10)

        with pytest.raises(JobNotFoundError, match="expired"):
            tierq.get(job_id)


def test_the_asyncio_client_submits_and_waits_without_blocking_the_loop(
    settings: Settings, client: TierqClient
) -> None:
    async def scenario() -> tuple[list[JobStatus], int]:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        async with AsyncTierqClient(settings) as tierq:
            ids = await tierq.submit_many(
                [{"model": "gpt-4o-mini", "messages": user(f"async {i}")} for i in range(5)]
            )
            one = await tierq.submit(model="o4-mini", messages=user("[sim latency_ms=300] hi"))
            results = await tierq.wait_many([*ids, one], timeout=30)
            with pytest.raises(JobWaitTimeout):
                await tierq.wait(
                    await tierq.submit(model="gpt-4o", messages=user("[sim latency_ms=3000] x")),
                    timeout=0.2,
                )
        beat.cancel()
        return [result.status for result in results], ticks

    statuses, ticks = asyncio.run(scenario())

    assert statuses == [JobStatus.SUCCEEDED] * 6
    assert ticks > 10  # the loop kept running while the client waited


def test_wait_many_polls_all_jobs_together(client: TierqClient) -> None:
    ids = client.submit_many(
        [{"model": "gpt-4o-mini", "messages": user(f"many {nonce()}")} for _ in range(20)]
    )

    results = client.wait_many(ids, timeout=30)

    assert [r.job_id for r in results] == ids
    assert {r.status for r in results} == {JobStatus.SUCCEEDED}


def test_a_producer_that_cannot_reach_redis_gets_a_clear_error(settings: Settings) -> None:
    # Given nothing listens on the configured Redis port
    unreachable = settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0")}
    )

    # Then submitting fails loudly, and says the job was not enqueued; reading and waiting
    # say so too, and waiting keeps to its deadline (give or take one poll's timeout)
    with TierqClient(unreachable) as tierq:
        with pytest.raises(BrokerUnavailableError, match="Redis"):
            tierq.submit(model="gpt-4o-mini", messages=user("lost?"))
        with pytest.raises(BrokerUnavailableError):
            tierq.get("some-job")
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            tierq.wait("some-job", timeout=1)
        assert time.monotonic() - started < 10


def test_as_completed_yields_each_job_as_it_finishes(client: TierqClient) -> None:
    slow = client.submit(model="gpt-4o-mini", messages=user("[sim latency_ms=1500] slow"))
    fast = client.submit(model="gpt-4o-mini", messages=user("fast"))

    order = [record.job_id for record in client.as_completed([slow, fast], timeout=30)]

    assert order == [fast, slow]


def test_the_asyncio_client_yields_jobs_as_they_finish(
    settings: Settings, client: TierqClient
) -> None:
    async def scenario() -> list[str]:
        async with AsyncTierqClient(settings) as tierq:
            slow = await tierq.submit(model="gpt-4o", messages=user("[sim latency_ms=1500] s"))
            fast = await tierq.submit(model="gpt-4o", messages=user("f"))
            finished = [r.job_id async for r in tierq.as_completed([slow, fast], timeout=30)]
            return [{slow: "slow", fast: "fast"}[job_id] for job_id in finished]

    assert asyncio.run(scenario()) == ["fast", "slow"]
