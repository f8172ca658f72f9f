"""The simulator's rate limits, specified through the real `openai` SDK over real HTTP.

What a client can see of them: the token cost charged at admission (the API's estimate: the
larger of the output reserved and the prompt's characters / 4), settled with the real usage
once answered; refused requests counting against the per-minute request budget; and
`x-ratelimit-*` headers on every answer that count the per-minute budget while the limits
are enforced over a sub-minute window. Each test uses its own model name, so its buckets
start full.
"""

import math
import time
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests import test_simulator as shared
from tests.test_simulator import ask, configure
from tierq_simulator.ratelimit import RateLimiter

# The simulator fixtures of tests/test_simulator.py: one simulator process for this module.
base_url = shared.base_url
sim_client = shared.sim_client
client = shared.client
fresh_simulator = shared.fresh_simulator


def estimate(messages: list[ChatCompletionMessageParam]) -> int:
    """The API's rule of thumb, as the simulator applies it: every string, 4 characters a token."""
    characters = sum(len(str(value)) for message in messages for value in message.values())
    return math.ceil(characters / 4)


def remaining_tokens(response: Any) -> int:
    """`x-ratelimit-remaining-tokens` of a raw SDK response or an httpx response."""
    return int(response.headers["x-ratelimit-remaining-tokens"])


def test_admission_charges_the_larger_of_the_output_reserved_and_the_character_estimate(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given a TPM limit far from reach
    configure(sim_client, tpm=1_000_000, window_seconds=60)
    raw = client.chat.completions.with_raw_response
    long_prompt = ask("lorem ipsum " * 400)  # 4,800 characters: about 1,200 tokens
    short_prompt = ask("hi")

    # When a long prompt reserves little output, and a short one reserves a lot over n choices
    by_characters = raw.create(model="gpt-4o", messages=long_prompt, max_tokens=5)
    by_output = raw.create(model="gpt-4o-mini", messages=short_prompt, max_tokens=200, n=3)
    by_default = raw.create(model="gpt-4.1", messages=short_prompt)

    # Then each is charged the larger of the two, before any usage is known
    assert remaining_tokens(by_characters) == 1_000_000 - estimate(long_prompt)
    assert remaining_tokens(by_output) == 1_000_000 - 3 * 200
    assert remaining_tokens(by_default) == 1_000_000 - 16  # the output reserved without a cap


def test_the_reservation_is_settled_with_the_real_usage(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given 600 TPM (10 tokens a second) and a window of a minute: no refusals here
    configure(sim_client, tpm=600, window_seconds=60)
    raw = client.chat.completions.with_raw_response
    # A request reserving 300 tokens that uses about 20
    over = raw.create(model="o200k-a", messages=ask("[sim tokens=5]"), max_completion_tokens=300)
    # When the next request is admitted
    after_over = raw.create(model="o200k-a", messages=ask("hi"), max_tokens=1)

    # Then the bucket got back what the first did not use (what it did, it keeps)
    first = over.parse().usage
    assert first is not None
    assert remaining_tokens(over) == 600 - 300
    expected = 600 - first.total_tokens - estimate(ask("hi"))
    assert expected <= remaining_tokens(after_over) <= expected + 5  # + what refilled meanwhile

    # And a request using more than it reserved (no cap: 16) is charged the difference
    under = raw.create(model="o200k-b", messages=ask("[sim tokens=100]"))
    after_under = raw.create(model="o200k-b", messages=ask("hi"), max_tokens=1)
    used = under.parse().usage
    assert used is not None
    assert used.total_tokens > 100
    assert remaining_tokens(under) == 600 - 16
    expected = 600 - used.total_tokens - estimate(ask("hi"))
    assert expected <= remaining_tokens(after_under) <= expected + 5


def test_one_request_of_a_60_rpm_limit_reads_as_the_apis_documented_sample(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # OpenAI's rate-limit guide: limit 60, remaining 59, reset "1s" (the budget refills
    # continuously, so one request's share is back after a second).
    configure(sim_client, rpm=60)

    answer = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask("hello"))

    assert answer.headers["x-ratelimit-limit-requests"] == "60"
    assert answer.headers["x-ratelimit-remaining-requests"] == "59"
    assert answer.headers["x-ratelimit-reset-requests"] == "1s"


def test_headers_count_the_per_minute_budget_while_the_burst_window_enforces(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given 600 RPM in a 1 s window: a burst of 10
    configure(sim_client, rpm=600)
    raw = client.chat.completions.with_raw_response
    answers = [raw.create(model="gpt-4o", messages=ask("hello")) for _ in range(3)]
    remaining = [int(a.headers["x-ratelimit-remaining-requests"]) for a in answers]

    # Then remaining counts down from the minute's 600, reset says when all of it is back
    assert remaining[0] == 599
    assert remaining == sorted(remaining, reverse=True)
    assert remaining[-1] >= 597
    reset_ms = int(answers[-1].headers["x-ratelimit-reset-requests"].removesuffix("ms"))
    assert 200 < reset_ms <= 300  # at most 3 requests' refill of 100 ms each

    # When the client waits that long, the whole budget is back before the next request
    time.sleep(reset_ms / 1000)
    again = raw.create(model="gpt-4o", messages=ask("hello"))
    assert again.headers["x-ratelimit-remaining-requests"] == "599"


def test_refused_requests_take_a_request_and_no_tokens(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given 60 RPM in a 2 s window (a burst of 2, one more a second) and 600 TPM over a minute
    configure(sim_client, rpm=60, tpm=600, window_seconds=2)
    create = client.chat.completions.create
    spent = 0
    for _ in range(2):
        completion = create(model="gpt-4o", messages=ask("hello"), max_tokens=5)
        assert completion.usage is not None
        spent += completion.usage.total_tokens

    # When the third is refused
    with pytest.raises(openai.RateLimitError) as first:
        create(model="gpt-4o", messages=ask("hello"), max_tokens=5)

    # Then it counted as a request of the minute, and took no tokens
    headers = first.value.response.headers
    assert first.value.type == "requests"
    assert int(headers["x-ratelimit-remaining-requests"]) == 60 - 3
    assert 600 - spent <= remaining_tokens(first.value.response) <= 600 - spent + 5

    # And retrying before the retry-after it was given only pushes the wait further
    with pytest.raises(openai.RateLimitError) as second:
        create(model="gpt-4o", messages=ask("hello"), max_tokens=5)
    first_wait = int(headers["retry-after-ms"])
    assert int(second.value.response.headers["retry-after-ms"]) > first_wait


def test_a_400_naming_a_model_takes_a_request_and_carries_the_headers(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given 60 RPM with a burst of 10
    configure(sim_client, rpm=60, tpm=10_000, window_seconds=10)

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=ask("hello"), temperature=5)
    answer = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask("hello"))

    headers = refused.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "59"
    assert headers["x-ratelimit-remaining-tokens"] == "10000"  # no tokens taken
    assert answer.headers["x-ratelimit-remaining-requests"] == "58"


def test_an_injected_fault_carries_the_headers_and_gives_its_tokens_back(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    configure(sim_client, rpm=600, tpm=600, window_seconds=60)

    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model="gpt-4o", messages=ask("[sim fail=500]"), max_tokens=100
        )
    answer = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask("hi"), max_tokens=1
    )

    assert failed.value.response.headers["x-ratelimit-remaining-requests"] == "599"
    assert remaining_tokens(failed.value.response) == 600 - 100  # reserved at admission
    # Nothing was processed: the next request finds the reservation given back
    assert remaining_tokens(answer) >= 600 - estimate(ask("hi"))


def test_no_limits_means_no_ratelimit_headers(client: openai.OpenAI) -> None:
    answer = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask("hello"))

    assert not [name for name in answer.headers if name.startswith("x-ratelimit-")]


# --- the limiter alone, on a fake clock --------------------------------------------------------


def test_refusals_run_up_at_most_one_window_of_debt() -> None:
    # Given 60 RPM in a 2 s window (a bucket of 2), emptied
    now = [0.0]
    limiter = RateLimiter(rpm=60, tpm=0, window_seconds=2, clock=lambda: now[0])
    assert [limiter.admit("m", 0).refusal for _ in range(2)] == [None, None]

    # When a client hammers it with 100 refused requests
    refusals = [limiter.admit("m", 0).refusal for _ in range(100)]

    # Then each was refused, the per-minute count took the first two, and the wait stops
    # growing at one window of debt: from -2 back to 1 at one request a second
    assert all(refusal is not None for refusal in refusals)
    last = refusals[-1]
    assert last is not None
    assert last.headers["retry-after"] == "3"
    assert last.headers["x-ratelimit-remaining-requests"] == str(60 - 4)
    now[0] = 3.0
    assert limiter.admit("m", 0).refusal is None


def test_settling_never_fills_a_bucket_past_its_capacity() -> None:
    now = [0.0]
    limiter = RateLimiter(rpm=0, tpm=6_000, window_seconds=1, clock=lambda: now[0])
    admission = limiter.admit("m", 100)  # the whole bucket

    admission.settle(0)  # nothing used: all of it back
    admission.settle(0)  # settled once only

    assert limiter.admit("m", 0).headers["x-ratelimit-remaining-tokens"] == "6000"
