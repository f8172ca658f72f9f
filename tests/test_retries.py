"""Celery owns retrying: transient faults are retried with back-off, bad requests never are.

Faults are asked of the simulator per job with a directive in the prompt, e.g.
`[sim fail=429 times=1 retry_after=2]` fails the first call of that exact request only.
Workers here run with 4 attempts, back-off capped at 2 s and a 3 s request timeout.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from producers.client import TierqClient
from tests.support import Simulator, nonce
from worker.results import JobStatus

pytestmark = pytest.mark.slow


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


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

    seen = set()
    deadline = time.monotonic() + 30
    result = client.get(job_id)
    while not result.status.is_final and time.monotonic() < deadline:
        seen.add((result.status, result.attempts))
        time.sleep(0.05)
        result = client.get(job_id)

    assert (JobStatus.RETRYING, 1) in seen
    assert result.status is JobStatus.SUCCEEDED
