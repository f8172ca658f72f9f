"""Celery owns retrying: transient faults are retried with back-off, bad requests never are.

Faults are asked of the simulator per job with a directive in the prompt, e.g.
`[sim fail=429 times=1 retry_after=2]` fails the first call of that exact request only.
Workers here run with 4 attempts, back-off capped at 2 s and a 3 s request timeout.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support import Fleet, Simulator, SimulatorFactory, eventually, job, nonce, user
from tierq.core.results import JobResult, JobStatus
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow


def test_a_rate_limited_job_waits_for_retry_after_then_succeeds(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    prompt = f"{marker} [sim fail=429 times=1 retry_after=2]"

    result = client.wait(client.submit(model="gpt-4o-mini", messages=user(prompt)), timeout=30)

    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 2
    first, second = simulator.requests_with(marker)
    assert first["status"] == 429
    assert second["status"] == 200
    assert second["received_at"] - first["received_at"] >= 2.0


def test_insufficient_quota_fails_at_once_without_a_retry(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    prompt = f"{marker} [sim fail=429 code=insufficient_quota]"

    result = client.wait(client.submit(model="gpt-4o-mini", messages=user(prompt)), timeout=30)

    assert result.status is JobStatus.FAILED
    assert result.attempts == 1
    assert result.error is not None
    assert result.error.type == "quota_exceeded"
    assert result.error.status_code == 429
    assert result.error.code == "insufficient_quota"
    assert result.error.retried is False
    assert len(simulator.requests_with(marker)) == 1


def test_a_timed_out_call_is_retried(client: TierqClient, simulator: Simulator) -> None:
    marker = nonce()
    prompt = f"{marker} [sim fail=timeout times=1 delay=6]"

    result = client.wait(client.submit(model="gpt-4o", messages=user(prompt)), timeout=40)

    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 2
    assert len(simulator.requests_with(marker)) == 2


def test_a_server_error_is_retried(client: TierqClient, simulator: Simulator) -> None:
    marker = nonce()
    prompt = f"{marker} [sim fail=503 times=2]"

    result = client.wait(client.submit(model="gpt-4o", messages=user(prompt)), timeout=30)

    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 3
    assert [call["status"] for call in simulator.requests_with(marker)] == [503, 503, 200]


def test_a_bad_request_fails_at_once_with_the_apis_message(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    prompt = f"{marker} [sim fail=400 code=context_length_exceeded]"

    result = client.wait(client.submit(model="gpt-4o", messages=user(prompt)), timeout=30)

    assert result.status is JobStatus.FAILED
    assert result.attempts == 1
    assert result.error is not None
    assert result.error.status_code == 400
    assert result.error.type == "bad_request"
    assert result.error.code == "context_length_exceeded"
    assert "maximum context length" in result.error.message
    assert result.error.retried is False
    assert len(simulator.requests_with(marker)) == 1


def test_a_job_that_exhausts_its_attempts_fails_with_the_last_error(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    prompt = f"{marker} [sim fail=500]"

    result = client.wait(client.submit(model="gpt-4o-mini", messages=user(prompt)), timeout=60)

    assert result.status is JobStatus.FAILED
    assert result.attempts == 4  # TIERQ_RETRY__MAX_ATTEMPTS for the test workers
    assert result.error is not None
    assert result.error.type == "server_error"
    assert result.error.status_code == 500
    assert result.error.retried is True
    assert len(simulator.requests_with(marker)) == 4


def test_a_retrying_job_shows_its_status_and_attempt_while_it_waits(
    client: TierqClient,
) -> None:
    prompt = f"{nonce()} [sim fail=429 times=1 retry_after=3]"
    job_id = client.submit(model="gpt-4o-mini", messages=user(prompt))

    seen: set[tuple[JobStatus, int]] = set()

    def observed() -> JobResult:
        record = client.get(job_id)
        seen.add((record.status, record.attempts))
        return record

    result = eventually(
        observed, until=lambda r: r.status.is_final, what="the job finishing", timeout=30
    )

    assert (JobStatus.RETRYING, 1) in seen
    assert result.status is JobStatus.SUCCEEDED


def test_a_fault_storm_ends_every_job_succeeded_or_dead_lettered_with_its_reason(
    start_fleet: Fleet,
    start_simulator_with: SimulatorFactory,
) -> None:
    # Given an API answering 30% 429s, 10% timeouts and 5% 5xx, and the default 6 attempts
    simulator = start_simulator_with(
        "--fail-rate", "429=0.3", "--fail-rate", "timeout=0.1", "--fail-rate", "500=0.05",
        "--seed", "5",
    )  # fmt: skip
    _, settings = start_fleet(
        workers=2, concurrency=30, base_url=simulator.base_url, TIERQ_RETRY__MAX_ATTEMPTS="6"
    )
    marker = nonce()

    with TierqClient(settings) as client:
        ids = client.submit_many([job(f"{marker} {i}") for i in range(100)])
        results = client.wait_many(ids, timeout=180)
        dead = {record.job_id for record in client.dead_letters(1000)}

    succeeded = [r for r in results if r.status is JobStatus.SUCCEEDED]
    failed = [r for r in results if r.status is JobStatus.FAILED]
    calls = simulator.requests_with(marker)
    print(
        f"\nfault storm: jobs=100 succeeded={len(succeeded)} dead_lettered={len(failed)} "
        f"api_calls={len(calls)} attempts={sum(r.attempts for r in results)}"
    )
    assert len(succeeded) + len(failed) == 100  # none left running or retrying
    for record in failed:
        assert record.job_id in dead
        assert record.attempts == 6
        assert record.error is not None
        assert record.error.type in ("rate_limited", "timeout", "server_error")
    assert len(succeeded) >= 95


@pytest.mark.parametrize("stream", [False, True], ids=["unstreamed", "streamed"])
def test_a_job_past_its_tiers_time_limit_fails_at_once_and_frees_its_slot(
    start_fleet: Fleet, simulator: Simulator, stream: bool
) -> None:
    # Given a tier whose calls may last 1.5 s at most, on a worker with one slot
    _, settings = start_fleet(concurrency=1, TIERQ_TIERS__FAST__TIME_LIMIT_SECONDS="1.5")
    marker = nonce()

    with TierqClient(settings) as client:
        slow = client.submit(
            model="gpt-4o-mini", messages=user(f"[sim latency_ms=5000] {marker}"), stream=stream
        )
        after = client.submit(model="gpt-4o-mini", messages=user("next"))
        slow_result, after_result = client.wait_many([slow, after], timeout=30)

    assert slow_result.status is JobStatus.FAILED
    assert slow_result.attempts == 1
    assert slow_result.error is not None
    assert slow_result.error.type == "time_limit_exceeded"
    assert "1.5s" in slow_result.error.message
    assert after_result.status is JobStatus.SUCCEEDED
    # The one slot was freed for the next job when the slow one failed, and that job was
    # answered before the slow call's 5 s answer would have come: the call was cut, not awaited
    (slow_call,) = simulator.requests_with(marker)
    answer_due = datetime.fromtimestamp(slow_call["received_at"] + 5, UTC)
    assert slow_result.finished_at is not None
    assert after_result.started_at is not None
    assert after_result.finished_at is not None
    assert slow_result.finished_at <= after_result.started_at
    assert after_result.finished_at < answer_due
