"""The shared limiter itself, on real Redis: pacing, both budgets at once, pauses, corrections."""

from __future__ import annotations

import itertools
import threading

import pytest
import redis

from tests.support import eventually, nonce
from tierq.core.ratelimit import SharedRateLimiter
from tierq.core.ratelimit_headers import RateLimitHeaders, parse_duration_seconds
from tierq.core.settings import LimiterSettings, RateLimitGroup, Settings


def limited_settings(groups: dict[str, RateLimitGroup], **limiter: float) -> Settings:
    """Settings with these rate-limit groups, under a key prefix of their own."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        key_prefix=f"tierq-{nonce()}:",
        rate_limits=groups,
        limiter=LimiterSettings(**limiter),  # type: ignore[arg-type]
    )


def limiter_for(
    client: redis.Redis, groups: dict[str, RateLimitGroup], **limiter: float
) -> SharedRateLimiter:
    return SharedRateLimiter(client, limited_settings(groups, **limiter))


def test_calls_are_paced_evenly_at_the_limit_after_a_short_burst(
    redis_client: redis.Redis,
) -> None:
    # 600 RPM is one call per 0.1 s; 2% headroom makes it 0.102 s; a 0.5 s burst is 5 calls.
    limiter = limiter_for(redis_client, {"gpt-4o": RateLimitGroup(rpm=600)})

    waits = [limiter.acquire("gpt-4o", 10).wait_seconds for _ in range(20)]

    assert waits[:4] == [0.0] * 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(waits[5:])]
    assert all(gap == pytest.approx(60 / (600 * 0.98), abs=0.002) for gap in gaps)


def test_the_token_budget_paces_calls_by_their_cost(redis_client: redis.Redis) -> None:
    # 60,000 TPM is 1,000 tokens a second: a 2,000-token call every 2 s.
    limiter = limiter_for(redis_client, {"gpt-4o": RateLimitGroup(rpm=10_000, tpm=60_000)})

    first, second, third = (limiter.acquire("gpt-4o", 2_000).wait_seconds for _ in range(3))

    assert first == 0.0
    assert second == pytest.approx(2 / 0.98, abs=0.01)
    assert third == pytest.approx(4 / 0.98, abs=0.01)


def test_a_start_beyond_the_wait_in_slot_is_not_reserved(redis_client: redis.Redis) -> None:
    limiter = limiter_for(
        redis_client, {"gpt-4o": RateLimitGroup(tpm=60_000)}, max_wait_in_slot_seconds=1.0
    )
    limiter.acquire("gpt-4o", 2_000)

    later = limiter.acquire("gpt-4o", 2_000)
    again = limiter.acquire("gpt-4o", 2_000)

    assert not later.reserved
    assert later.wait_seconds > 1.0
    # Nothing was spent by the refusal: the next caller is told the same wait.
    assert again.wait_seconds == pytest.approx(later.wait_seconds, abs=0.05)


def test_a_call_larger_than_the_whole_tpm_limit_is_refused(redis_client: redis.Redis) -> None:
    limiter = limiter_for(redis_client, {"gpt-4o": RateLimitGroup(tpm=1_000)})

    admission = limiter.acquire("gpt-4o", 1_500)

    assert admission.too_large
    assert admission.tpm == 1_000


def test_models_in_one_group_share_one_budget(redis_client: redis.Redis) -> None:
    settings = limited_settings({"o-series": RateLimitGroup(models=["o3", "o4-mini"], rpm=60)})
    limiter = SharedRateLimiter(redis_client, settings)

    # The group is resolved by the settings, as workers do
    group = settings.limit_group_for("o3")
    first = limiter.acquire(settings.limit_group_for("o4-mini"), 1)
    second = limiter.acquire(group, 1)

    assert group == "o-series"
    assert first.wait_seconds == 0.0
    assert second.wait_seconds > 0.5  # 60 RPM: the second call of the group waits ~1 s


def test_concurrent_callers_never_overspend_the_budget(redis_client: redis.Redis) -> None:
    # 8 threads race for 400 reservations at 6,000 RPM (one per 10.2 ms).
    limiter = limiter_for(redis_client, {"gpt-4o": RateLimitGroup(rpm=6_000)})
    starts: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(50):
            wait = limiter.acquire("gpt-4o", 1).wait_seconds
            with lock:
                starts.append(wait)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Admissions are relative to each call's own time, so compare the last start with the
    # count: 400 calls at 10.2 ms apart, less the burst, need ~3.5 s whatever the interleaving.
    assert len(starts) == 400
    assert max(starts) >= (400 - 50) * 60 / (6_000 * 0.98) - 0.5


def test_a_pause_holds_every_caller_of_the_group(redis_client: redis.Redis) -> None:
    limiter = limiter_for(redis_client, {"gpt-4o": RateLimitGroup(rpm=6_000)})

    limiter.pause("gpt-4o", 2.0)

    assert limiter.acquire("gpt-4o", 1).wait_seconds == pytest.approx(2.0, abs=0.05)
    assert limiter.acquire("gpt-4o-mini", 1).wait_seconds == 0.0  # another group: untouched


def test_more_tokens_used_than_estimated_delay_the_next_call(redis_client: redis.Redis) -> None:
    limiter = limiter_for(redis_client, {"gpt-4o": RateLimitGroup(tpm=60_000)})
    limiter.acquire("gpt-4o", 100)

    limiter.adjust("gpt-4o", 1_900)  # the call really cost 2,000 tokens

    # 2,000 spent plus this call's 100, at 980 tokens a second, less the 0.5 s burst.
    assert limiter.acquire("gpt-4o", 100).wait_seconds == pytest.approx(2_100 / 980 - 0.5, abs=0.05)


def test_limits_learned_from_headers_apply_when_none_are_configured(
    redis_client: redis.Redis,
) -> None:
    limiter = limiter_for(redis_client, {})
    assert limiter.acquire("gpt-4o", 1).wait_seconds == 0.0
    assert limiter.acquire("gpt-4o", 1).wait_seconds == 0.0  # unknown limit: no pacing yet

    limiter.learn("gpt-4o", RateLimitHeaders(limit_requests=60, limit_tokens=1_000_000))
    waits = [limiter.acquire("gpt-4o", 1).wait_seconds for _ in range(2)]

    assert waits[1] > 0.5  # 60 RPM now paces the group
    limiter.flush()  # the use held while the group had no limit
    usage = limiter.usage("gpt-4o", ["gpt-4o"])
    assert (usage.rpm, usage.tpm, usage.source) == (60, 1_000_000, "learned")
    # Every call is counted: the two before the limit was known too.
    assert usage.requests_this_minute + usage.requests_last_minute == 4


def requests_and_tokens(limiter: SharedRateLimiter, group: str) -> tuple[int, int]:
    """A group's use this minute and last, as `tierq limits` and `tierq stats` read it."""
    usage = limiter.usage(group, [group])
    return (
        usage.requests_this_minute + usage.requests_last_minute,
        usage.tokens_this_minute + usage.tokens_last_minute,
    )


def test_calls_to_a_group_with_no_limit_known_are_counted(redis_client: redis.Redis) -> None:
    # Given a group with no limit configured and none learned, nothing counted yet
    limiter = limiter_for(redis_client, {})
    assert requests_and_tokens(limiter, "gpt-4o") == (0, 0)

    # When five calls of 100 tokens are admitted, and one turns out to have cost 30 more
    admissions = [limiter.acquire("gpt-4o", 100) for _ in range(5)]
    limiter.adjust("gpt-4o", 30)

    # Then none waited (there is no limit to pace by), and all are counted: the first by the
    # script that found the group open, the others (admitted without a round trip) by the
    # process's flush, a second or so later, with no call to flush needed
    assert [admission.wait_seconds for admission in admissions] == [0.0] * 5
    assert limiter.is_open("gpt-4o")
    eventually(
        lambda: requests_and_tokens(limiter, "gpt-4o"),
        until=lambda counted: counted == (5, 530),
        what="the five calls and their tokens counted",
        timeout=5,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("120ms", 0.12), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("1.5", 1.5)],
)
def test_the_apis_reset_durations_are_read(text: str, seconds: float) -> None:
    assert parse_duration_seconds(text) == pytest.approx(seconds)


def test_headers_saying_the_budget_is_spent_give_the_wait_for_the_shortfall() -> None:
    headers = RateLimitHeaders.parse(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "6s",
            "x-ratelimit-limit-tokens": "60000",
            "x-ratelimit-remaining-tokens": "500",
            "x-ratelimit-reset-tokens": "59s",
        }
    )

    assert headers.exhausted_for_seconds(100) == pytest.approx(0.1)  # one request's refill
    assert headers.exhausted_for_seconds(2_500) == pytest.approx(2.0)  # 2,000 tokens' refill
    assert RateLimitHeaders.parse({}).exhausted_for_seconds(10**6) == 0.0
