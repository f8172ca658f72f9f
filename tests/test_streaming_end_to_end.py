"""Streamed jobs against a stream sent chunk by chunk, as the API sends it: deltas published
as they arrive, a stream cut or broken mid-way retried without a duplicate answer, and a slow
stream stopped by the tier's time limit while its chunks still come."""

from __future__ import annotations

import pytest
import redis

from tests.support import Fleet, Simulator, eventually, nonce, user
from tierq.core.keys import Keys
from tierq.core.results import JobStatus
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", ["stream_cut", "stream_error"])
def test_a_stream_broken_mid_way_is_retried_and_the_job_answers_once(
    start_fleet: Fleet, simulator: Simulator, fault: str
) -> None:
    # Given the API breaks the first stream of this request after 3 chunks
    _, settings = start_fleet(TIERQ_RETRY__BACKOFF_MAX_SECONDS="1")
    marker = nonce()
    text = f"{marker} [sim fail={fault} after=3 times=1 tokens=20]"

    with TierqClient(settings) as client:
        result = client.wait(
            client.submit(model="gpt-4o-mini", messages=user(text), stream=True), timeout=60
        )

    # Then the job succeeded on its second attempt, with the whole answer of that attempt
    calls = simulator.requests_with(marker)
    assert len(calls) == 2
    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 2
    assert result.response is not None
    content = result.response.choices[0].message.content
    assert content
    assert len(content.split()) >= 10  # the full answer, not the 3 chunks the cut one carried
    assert result.usage is not None
    assert result.usage.completion_tokens == 20


def test_a_slow_streams_deltas_are_readable_while_it_runs(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given a stream of 30 chunks, 100 ms apart
    _, settings = start_fleet(TIERQ_REQUEST_TIMEOUT_SECONDS="30")
    marker = nonce()
    text = f"{marker} [sim chunk_delay_ms=100 tokens=30]"

    with TierqClient(settings) as client:
        job_id = client.submit(model="gpt-4o-mini", messages=user(text), stream=True)
        deltas = Keys(settings.key_prefix).deltas(job_id)
        # Then some of the answer can be read while the job is still running ...
        with redis.Redis.from_url(settings.redis_url.get_secret_value()) as store:
            eventually(
                lambda: (client.get(job_id), store.xlen(deltas)),
                until=lambda seen: (
                    seen[0] is not None and seen[0].status is JobStatus.RUNNING and seen[1] > 0
                ),
                what="deltas published while the job runs",
                timeout=30,
            )
        result = client.wait(job_id, timeout=30)

    # ... and the finished job holds the whole answer
    assert result.status is JobStatus.SUCCEEDED
    assert result.usage is not None
    assert result.usage.completion_tokens == 30


def test_a_stream_slower_than_the_tiers_time_limit_is_stopped_while_chunks_still_come(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given a tier whose calls may last 1.5 s, and a stream of 50 chunks 100 ms apart (5 s)
    _, settings = start_fleet(
        TIERQ_TIERS__FAST__TIME_LIMIT_SECONDS="1.5", TIERQ_REQUEST_TIMEOUT_SECONDS="30"
    )
    marker = nonce()
    text = f"{marker} [sim chunk_delay_ms=100 tokens=50]"

    with TierqClient(settings) as client:
        result = client.wait(
            client.submit(model="gpt-4o-mini", messages=user(text), stream=True), timeout=30
        )

    # Then the job failed at the limit, once: the chunks arriving did not keep it alive
    assert result.status is JobStatus.FAILED
    assert result.attempts == 1
    assert result.error is not None
    assert result.error.type == "time_limit_exceeded"
    assert len(simulator.requests_with(marker)) == 1
