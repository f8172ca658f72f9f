"""A fleet of worker processes stays within the API's limits, measured by the simulator.

Each test runs its own simulator enforcing a limit the way the API does (per-second buckets,
429 with retry-after and x-ratelimit-* headers) and its own workers, several processes sharing
one budget through Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from tests.support import (
    Fleet,
    Simulator,
    SimulatorFactory,
    env_of,
    eventually,
    job,
    nonce,
    run_tierq,
    user,
)
from tierq.core.errors import InvalidJobError, RequestTooLargeError
from tierq.core.ratelimit import GroupUsage, SharedRateLimiter
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import RateLimitGroup, Settings
from tierq.core.tokens import count_prompt_tokens
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow


def jobs(count: int, marker: str, max_tokens: int = 20) -> list[dict[str, Any]]:
    return [job(f"{marker} job {i}", max_tokens=max_tokens) for i in range(count)]


def run(settings: Settings, requests: list[dict[str, Any]]) -> list[JobResult]:
    with TierqClient(settings) as client:
        return client.wait_many(client.submit_many(requests), timeout=120)


def answered_rate_per_minute(calls: list[dict[str, Any]], weight: Callable[..., int]) -> float:
    """The rate of answered calls between the 10th and 90th percentile of their arrival."""
    times = sorted(call["received_at"] for call in calls if call["status"] == 200)
    low, high = times[len(times) // 10], times[len(times) * 9 // 10]
    inside = sorted(
        (c for c in calls if c["status"] == 200 and low <= c["received_at"] <= high),
        key=lambda call: call["received_at"],
    )
    # n arrivals span n - 1 intervals: the first one's weight is not part of the rate.
    return sum(weight(c) for c in inside[1:]) / (high - low) * 60


def test_three_workers_share_an_rpm_limit_with_no_429s(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    # Given the API allows 1,200 requests a minute (20 a second) and tierq is told so
    simulator = start_simulator_with("--rpm", "1200", "--latency-ms", "50")
    _, settings = start_fleet(
        workers=3,
        base_url=simulator.base_url,
        concurrency=20,
        TIERQ_RATE_LIMITS=json.dumps({"gpt-4o-mini": {"rpm": 1200}}),
    )
    marker = nonce()

    # When 3 worker processes run a burst of 120 jobs
    results = run(settings, jobs(120, marker))

    # Then every job succeeds first time, no call was refused, and the rate kept to the limit
    calls = simulator.requests_with(marker)
    assert {r.status for r in results} == {JobStatus.SUCCEEDED}
    assert {r.attempts for r in results} == {1}
    assert [c for c in calls if c["status"] == 429] == []
    rate = answered_rate_per_minute(calls, lambda call: 1)
    assert 0.85 * 1200 <= rate <= 1.0 * 1200


def test_three_workers_share_a_tpm_limit_with_no_429s(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    # Given 120,000 tokens a minute, and jobs of about 200 tokens (prompt + 180 reserved)
    simulator = start_simulator_with("--tpm", "120000", "--latency-ms", "50")
    _, settings = start_fleet(
        workers=3,
        base_url=simulator.base_url,
        concurrency=20,
        TIERQ_RATE_LIMITS=json.dumps({"gpt-4o-mini": {"tpm": 120_000}}),
    )
    marker = nonce()

    results = run(settings, jobs(80, marker, max_tokens=180))

    calls = simulator.requests_with(marker)
    assert {r.status for r in results} == {JobStatus.SUCCEEDED}
    assert [c for c in calls if c["status"] == 429] == []

    def tokens(call: dict[str, Any]) -> int:
        body = call["body"]
        return count_prompt_tokens(body["messages"], None, body["model"]) + body["max_tokens"]

    rate = answered_rate_per_minute(calls, tokens)
    assert 0.85 * 120_000 <= rate <= 1.0 * 120_000


def test_limits_learned_from_the_apis_headers_hold_the_fleet_with_no_429s(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    # Given no limit is configured: the fleet learns it from the first answer's headers
    simulator = start_simulator_with("--rpm", "1200", "--latency-ms", "50")
    _, settings = start_fleet(workers=2, base_url=simulator.base_url, concurrency=20)
    first = run(settings, jobs(1, nonce()))
    assert first[0].status is JobStatus.SUCCEEDED
    marker = nonce()

    # When a burst follows, once the budget is known
    results = run(settings, jobs(80, marker))

    calls = simulator.requests_with(marker)
    assert {r.status for r in results} == {JobStatus.SUCCEEDED}
    assert [c for c in calls if c["status"] == 429] == []


def test_a_429_pauses_every_worker_so_one_refusal_does_not_become_many(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    simulator = start_simulator_with("--rpm", "600", "--latency-ms", "20")
    _, settings = start_fleet(
        workers=3,
        base_url=simulator.base_url,
        concurrency=20,
        TIERQ_RATE_LIMITS=json.dumps({"gpt-4o-mini": {"rpm": 600}}),
    )
    marker = nonce()
    with TierqClient(settings) as client:
        # (a job first, so the client's tokenizer and the workers' connections are warm and
        # the burst below follows the other app's calls within milliseconds)
        client.wait(client.submit(**job(nonce())), timeout=30)
        # Given another client of the same account has just spent the API's budget
        spend_the_budget_as_another_app(simulator, calls=14)

        # When the fleet starts a burst
        results = client.wait_many(client.submit_many(jobs(60, marker)), timeout=120)

    # Then the 429s stay within the first burst in flight when the first one came back: the
    # pause holds all three workers, which then resume at the steady rate, instead of each
    # worker retrying into the same wall (every refusal counts against the API's limit)
    refused = [c for c in simulator.requests_with(marker) if c["status"] == 429]
    assert {r.status for r in results} == {JobStatus.SUCCEEDED}
    assert 1 <= len(refused) <= 6, f"{len(refused)} 429s"


def test_the_apis_lower_limit_overrides_a_configured_one(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    # Given tierq is configured for 1,200 RPM, but the account really has 600
    simulator = start_simulator_with("--rpm", "600", "--latency-ms", "20")
    _, settings = start_fleet(
        workers=3,
        base_url=simulator.base_url,
        concurrency=20,
        TIERQ_RATE_LIMITS=json.dumps({"gpt-4o-mini": {"rpm": 1200}}),
    )
    assert run(settings, jobs(1, nonce()))[0].status is JobStatus.SUCCEEDED
    marker = nonce()

    # When a burst follows the first answer (whose headers say 600)
    results = run(settings, jobs(60, marker))

    # Then the fleet keeps to 600, with no 429s
    calls = simulator.requests_with(marker)
    assert {r.status for r in results} == {JobStatus.SUCCEEDED}
    assert [c for c in calls if c["status"] == 429] == []
    assert answered_rate_per_minute(calls, lambda call: 1) <= 600


def spend_the_budget_as_another_app(simulator: Simulator, calls: int) -> None:
    """`calls` at once (more than the simulator's one-second burst admits), so its budget is
    spent, and in debt for what it refused, when they return."""

    def call(_: int) -> None:
        simulator.http.post(
            "/v1/chat/completions",
            json=job("other"),
            headers={"Authorization": "Bearer sk-other-app"},
        )

    with ThreadPoolExecutor(max_workers=calls) as pool:
        list(pool.map(call, range(calls)))


def test_a_job_over_the_configured_tpm_limit_is_refused_at_submission(
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"rate_limits": {"gpt-4o": RateLimitGroup(tpm=1_000)}})

    with TierqClient(limited) as client, pytest.raises(RequestTooLargeError) as refused:
        client.submit(model="gpt-4o", messages=user("x"), max_tokens=2_000)

    assert refused.value.errors[0]["field"] == "max_tokens"
    assert "1000 tokens-per-minute limit of gpt-4o" in str(refused.value)


def test_a_job_over_the_context_window_is_refused_at_submission(settings: Settings) -> None:
    # A window narrower than the output cap: gpt-4o's own (128,000) is beyond its maximum
    # output (16,384), which the model rules refuse first.
    narrow = settings.model_copy(update={"context_windows": {"gpt-4o": 1_000}})
    with (
        TierqClient(narrow) as client,
        pytest.raises(InvalidJobError, match="maximum context length is 1000") as refused,
    ):
        client.submit(model="gpt-4o", messages=user("x"), max_tokens=2_000)

    assert refused.value.errors[0]["field"] == "max_tokens"


def test_a_job_over_a_learned_tpm_limit_fails_at_once_without_a_call(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    simulator = start_simulator_with("--tpm", "1000")
    _, settings = start_fleet(base_url=simulator.base_url)
    assert run(settings, jobs(1, nonce(), max_tokens=10))[0].status is JobStatus.SUCCEEDED
    marker = nonce()

    [result] = run(settings, jobs(1, marker, max_tokens=2_000))

    assert result.status is JobStatus.FAILED
    assert result.attempts == 1
    assert result.error is not None
    assert result.error.type == "request_too_large"
    assert "1000 tokens-per-minute" in result.error.message
    assert simulator.requests_with(marker) == []


def test_a_job_that_cannot_start_soon_goes_back_to_the_queue_without_spending_an_attempt(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    # Given jobs may not wait in their slot at all: each one that cannot start at once is
    # re-queued with a countdown
    simulator = start_simulator_with("--rpm", "600")
    workers, settings = start_fleet(
        base_url=simulator.base_url,
        TIERQ_RATE_LIMITS=json.dumps({"gpt-4o-mini": {"rpm": 600}}),
        TIERQ_LIMITER__MAX_WAIT_IN_SLOT_SECONDS="0",
    )
    marker = nonce()

    results = run(settings, jobs(20, marker))

    assert {r.status for r in results} == {JobStatus.SUCCEEDED}
    assert {r.attempts for r in results} == {1}
    assert "job.deferred" in workers[0].log_text()
    assert [c for c in simulator.requests_with(marker) if c["status"] == 429] == []


def test_tierq_limits_shows_each_limit_and_its_use(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory, worker_env: dict[str, str]
) -> None:
    simulator = start_simulator_with("--rpm", "6000")
    limits = json.dumps({"gpt-4o-mini": {"rpm": 6000, "tpm": 900_000}})
    _, settings = start_fleet(base_url=simulator.base_url, TIERQ_RATE_LIMITS=limits)
    run(settings, jobs(5, nonce()))

    env = {**worker_env, **env_of(settings), "TIERQ_RATE_LIMITS": limits}
    shown = run_tierq(env, "limits", "--json")

    assert shown.returncode == 0, shown.stderr
    groups = {group["group"]: group for group in json.loads(shown.stdout)}
    mini = groups["gpt-4o-mini"]
    assert (mini["rpm"], mini["tpm"], mini["source"]) == (6000, 900_000, "configured")
    assert mini["requests_this_minute"] + mini["requests_last_minute"] == 5
    assert "gpt-4o" in groups  # every model of the tier table is listed, limited or not


def test_calls_to_a_model_whose_limit_is_not_known_yet_are_counted(
    start_fleet: Fleet, redis_client: redis.Redis
) -> None:
    # Given a fleet with no limit configured, calling a simulator that enforces none and so
    # sends no x-ratelimit-* headers to learn one from; nothing counted yet
    _, settings = start_fleet(workers=2, concurrency=10)
    reader = SharedRateLimiter(redis_client, settings)

    def use() -> GroupUsage:
        """gpt-4o-mini's use as `tierq limits` and `tierq stats` read it."""
        return reader.usage("gpt-4o-mini", ["gpt-4o-mini"])

    before = use()
    assert (before.requests_this_minute, before.tokens_this_minute) == (0, 0)

    # When 12 jobs run on the two workers
    results = run(settings, jobs(12, nonce()))
    assert {r.status for r in results} == {JobStatus.SUCCEEDED}

    # Then every call is counted, with the tokens it spent (the real prompt, and the output cap
    # of 20 reserved for each), while the limit is still unknown
    counted = eventually(
        use,
        until=lambda u: u.requests_this_minute + u.requests_last_minute == 12,
        what="12 requests counted",
        timeout=10,
    )
    assert (counted.rpm, counted.tpm, counted.source) == (None, None, "none")
    prompts = sum(r.usage.prompt_tokens for r in results if r.usage is not None)
    assert counted.tokens_this_minute + counted.tokens_last_minute == prompts + 12 * 20
