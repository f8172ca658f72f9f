"""The drop-in route refuses, with 429 and Retry-After, a job whose queue wait is too long.

The estimate's arithmetic is checked alone; the refusal through a real gateway, a real worker
held busy by a slow job, and the real SDK, which reads the 429 as the API's own.
"""

from __future__ import annotations

import threading
from typing import Any

import openai
import pytest
import redis

from tests.support import (
    Fleet,
    GatewayFactory,
    create_api_key,
    env_of,
    eventually,
    gateway_client,
    job,
    nonce,
    unique_tenant,
    user,
)
from tierq.core.accounting import SEP
from tierq.core.queues import queue_snapshots
from tierq.producers.gateway.queue_wait import QueueReading, finished_rate

CALL_TIMEOUT_SECONDS = 30.0


def test_an_empty_queue_has_no_wait() -> None:
    assert QueueReading(0, 0.0, None).expected_wait_seconds() == 0.0


def test_the_wait_is_the_depth_over_the_recent_finish_rate() -> None:
    assert QueueReading(30, 2.0, 1.0).expected_wait_seconds() == 15.0


def test_with_nothing_finished_lately_the_oldest_jobs_age_stands_in() -> None:
    assert QueueReading(3, 0.0, 42.0).expected_wait_seconds() == 42.0


def test_a_job_waits_behind_the_backlogs_of_its_class_and_higher_ones_only() -> None:
    # With fair dispatch a higher class leaves its backlog first: a lower one does not delay it
    reading = QueueReading(2, 1.0, None, {"interactive": 1, "default": 3, "bulk": 100})
    assert reading.expected_wait_seconds("interactive") == 3.0
    assert reading.expected_wait_seconds("default") == 6.0
    assert reading.expected_wait_seconds() == 6.0
    assert reading.expected_wait_seconds("bulk") == 106.0


def test_the_finish_rate_counts_successes_and_failures_of_the_tier_only() -> None:
    minutes: list[dict[bytes | str, bytes | str]] = [
        {f"fast{SEP}succeeded".encode(): b"50", f"fast{SEP}failed".encode(): b"10"},
        {f"fast{SEP}succeeded": "30", f"standard{SEP}succeeded": "500", f"fast{SEP}tokens": "9"},
    ]
    assert finished_rate(minutes, "fast", 90.0) == pytest.approx(1.0)


def test_a_request_whose_queue_would_outlast_the_maximum_gets_429_with_retry_after(
    start_fleet: Fleet, start_gateway_with: GatewayFactory
) -> None:
    # Given one worker with one slot, held by a slow job, and a gateway that refuses a queue
    # wait over 2 s.
    (_,), settings = start_fleet("fast", concurrency=1, TIERQ_REQUEST_TIMEOUT_SECONDS="60")
    root, _ = start_gateway_with(**env_of(settings), TIERQ_GATEWAY__MAX_QUEUE_WAIT_SECONDS="2")
    key = create_api_key(settings, unique_tenant())
    with gateway_client(root, key) as http:
        blocker = http.post("/v1/jobs", json=job(f"{nonce()} [sim latency_ms=20000]")).json()["id"]
        eventually(
            lambda: http.get(f"/v1/jobs/{blocker}").json()["status"],
            until=lambda status: status == "running",
            what="the blocker running",
            timeout=CALL_TIMEOUT_SECONDS,
        )
    sdk = openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0, timeout=60)
    held: list[Any] = []

    def hold_one() -> None:
        try:
            held.append(sdk.chat.completions.create(model="gpt-4o-mini", messages=user(nonce())))
        except openai.APIError as error:
            held.append(error)

    # When a first request queues behind it: the queue was empty, so it is held, not refused
    first = threading.Thread(target=hold_one)
    first.start()
    # ... and once its job has waited in the queue past the maximum (and the gateway's
    # one-second reading is renewed),
    redis_client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    eventually(
        lambda: next(s for s in queue_snapshots(redis_client, settings) if s.tier == "fast"),
        until=lambda snap: snap.depth == 1 and (snap.oldest_age_seconds or 0) > 3.5,
        what="the first request's job waiting in the queue for 3.5 s",
        timeout=CALL_TIMEOUT_SECONDS,
    )
    # Then the next request is refused at once, in the API's shape the SDK reads as a 429
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=user(nonce()))
    assert refused.value.code == "queue_wait_too_long"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    # ... while the held one is answered once the slot frees.
    first.join(timeout=CALL_TIMEOUT_SECONDS + 30)
    assert held, "the held request never ended"
    assert not isinstance(held[0], Exception), held[0]
    sdk.close()
    redis_client.close()
