"""Deadlines and service levels: a job with time to spare runs at `flex` (half price), falls
back to the default tier when flex has no capacity, and a caller's own `service_tier` wins.

The rules are checked as pure functions first; then end to end, through the session's
workers and the simulator, which serves flex slower, refuses it for models that lack it, and
turns a flex request away when asked (`[sim flex=unavailable]`), so the test can see what
tierq sent and what the answer cost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest

from tests.support import (
    API_KEY,
    GatewayFactory,
    Simulator,
    TenantKey,
    env_of,
    gateway_client,
    nonce,
    run_tierq,
    user,
)
from tierq import InvalidJobError, TierqClient
from tierq.core.catalog import ModelInfo
from tierq.core.deadline import parse_deadline
from tierq.core.results import JobStatus
from tierq.core.settings import Settings, SpendSettings
from tierq.core.spend import service_tier_for

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FLEX_MODEL = "o4-mini"  # the catalog prices flex for it; gpt-4o-mini has none


# --- the rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (3600, NOW + timedelta(hours=1)),
        ("90", NOW + timedelta(seconds=90)),
        (timedelta(hours=2), NOW + timedelta(hours=2)),
        ("2026-12-01T13:00:00Z", NOW + timedelta(hours=1)),
        ("2026-12-01T14:00:00+01:00", NOW + timedelta(hours=1)),
        (datetime(2026, 12, 2, tzinfo=UTC), NOW + timedelta(hours=12)),
        (None, None),
    ],
)
def test_a_deadline_is_seconds_from_now_or_an_rfc_3339_time(given: Any, expected: Any) -> None:
    assert parse_deadline(given, now=NOW) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (-5, "has passed"),
        ("2026-11-30T00:00:00Z", "has passed"),
        ("2026-12-01T13:00:00", "no UTC offset"),
        ("tomorrow", "neither seconds from now nor an RFC 3339 time"),
        ("inf", "not a number of seconds"),
        (86400 * 31, "more than 30 days away"),
        (True, "not a boolean"),
    ],
)
def test_a_bad_deadline_is_refused_naming_the_field(given: Any, says: str) -> None:
    with pytest.raises(InvalidJobError, match=says) as refused:
        parse_deadline(given, now=NOW)
    assert [problem["field"] for problem in refused.value.errors] == ["deadline"]


def model(settings: Settings, name: str) -> ModelInfo:
    return settings.model_info(name)


@pytest.mark.parametrize(
    ("deadline_in", "params", "name", "spend", "expected"),
    [
        (None, {}, FLEX_MODEL, SpendSettings(), None),  # no deadline: as always
        (3600, {}, FLEX_MODEL, SpendSettings(), "flex"),  # time to spare
        (600, {}, FLEX_MODEL, SpendSettings(), None),  # too close for flex
        (3600, {}, "gpt-4o-mini", SpendSettings(), None),  # no flex for this model
        (3600, {"service_tier": "default"}, FLEX_MODEL, SpendSettings(), None),  # caller's
        (3600, {}, FLEX_MODEL, SpendSettings(flex=False), None),  # operator turned it off
        (60, {}, FLEX_MODEL, SpendSettings(priority_within_seconds=120), "priority"),
        (60, {}, FLEX_MODEL, SpendSettings(), None),  # priority only where enabled
    ],
)
def test_the_service_tier_is_the_cheapest_that_meets_the_deadline(
    settings: Settings,
    deadline_in: float | None,
    params: dict[str, Any],
    name: str,
    spend: SpendSettings,
    expected: str | None,
) -> None:
    deadline = None if deadline_in is None else NOW + timedelta(seconds=deadline_in)
    assert service_tier_for(params, model(settings, name), deadline, NOW, spend) == expected


def test_a_tenant_or_a_tier_can_be_kept_off_flex(settings: Settings) -> None:
    info, due = model(settings, FLEX_MODEL), NOW + timedelta(hours=1)
    spend = SpendSettings(tenant_flex={"latency-bound": False})
    assert service_tier_for({}, info, due, NOW, spend, tenant="latency-bound") is None
    assert service_tier_for({}, info, due, NOW, spend, tenant="other") == "flex"
    assert service_tier_for({}, info, due, NOW, spend, tier_allows_flex=False) is None


# --- end to end -----------------------------------------------------------------------------


def sent(simulator: Simulator, marker: str) -> list[tuple[str | None, int]]:
    """Each call the simulator received for `marker`: its `service_tier`, and its status."""
    return [
        (entry["body"].get("service_tier"), entry["status"])
        for entry in simulator.requests_with(marker)
    ]


def test_a_job_with_time_to_spare_runs_at_flex_and_is_priced_at_flex(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    job_id = client.submit(model=FLEX_MODEL, messages=user(marker), deadline=3600)
    record = client.wait(job_id, timeout=60)

    assert record.status is JobStatus.SUCCEEDED
    assert sent(simulator, marker) == [("flex", 200)]
    assert record.service_tier_chosen == "flex"
    assert record.response is not None
    assert record.response.service_tier == "flex"
    assert record.deadline is not None
    assert record.deadline > record.submitted_at + timedelta(minutes=59)
    # Priced at what served it: flex is half the default's price
    assert record.cost_usd is not None
    assert record.cost_at_default_usd is not None
    assert record.cost_usd == pytest.approx(record.cost_at_default_usd / 2)


def test_flex_without_capacity_falls_back_to_the_default_tier_at_once_paid_once(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    job_id = client.submit(
        model=FLEX_MODEL, messages=user(f"{marker} [sim flex=unavailable]"), deadline=3600
    )
    record = client.wait(job_id, timeout=60)

    # The flex call was turned away (nothing billed), and the same attempt called again at the
    # default tier: one paid answer, no retry delay
    assert record.status is JobStatus.SUCCEEDED
    assert sent(simulator, marker) == [("flex", 429), ("default", 200)]
    assert record.attempts == 1
    assert record.service_tier_chosen == "default"
    assert record.response is not None
    assert record.response.service_tier == "default"
    assert record.cost_at_default_usd is None  # paid the default price: nothing saved


def test_a_callers_own_service_tier_wins_over_the_deadline(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    job_id = client.submit(
        model=FLEX_MODEL, messages=user(marker), deadline=3600, service_tier="default"
    )
    record = client.wait(job_id, timeout=60)

    assert sent(simulator, marker) == [("default", 200)]
    assert record.service_tier_chosen is None


def test_a_job_without_a_deadline_or_with_a_near_one_is_sent_as_written(
    client: TierqClient, simulator: Simulator
) -> None:
    none, near, no_flex = nonce(), nonce(), nonce()
    done = client.wait_many(
        [
            client.submit(model=FLEX_MODEL, messages=user(none)),
            client.submit(model=FLEX_MODEL, messages=user(near), deadline=120),
            client.submit(model="gpt-4o-mini", messages=user(no_flex), deadline=3600),
        ],
        timeout=60,
    )

    assert {record.status for record in done} == {JobStatus.SUCCEEDED}
    assert [sent(simulator, marker) for marker in (none, near, no_flex)] == [[(None, 200)]] * 3
    assert [record.service_tier_chosen for record in done] == [None] * 3


def test_flex_asked_for_a_model_without_it_would_be_refused(simulator: Simulator) -> None:
    # Why tierq asks the catalog first: the API refuses flex for the models that lack it
    sdk = openai.OpenAI(base_url=simulator.base_url, api_key=API_KEY, max_retries=0)
    with sdk, pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=user(nonce()), service_tier="flex"
        )
    assert refused.value.body is not None
    assert "service_tier" in json.dumps(refused.value.body)


def test_the_gateway_takes_a_deadline_as_a_header_and_as_a_job_field(
    start_gateway_with: GatewayFactory,
    tenant_key: TenantKey,
    simulator: Simulator,
    client: TierqClient,
    settings: Settings,
) -> None:
    root, _ = start_gateway_with(**env_of(settings))
    _, key = tenant_key()
    by_header, by_field = nonce(), nonce()
    sdk = openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0, timeout=60)
    with sdk:
        # The drop-in route: seconds from now, or an RFC 3339 time
        due = (datetime.now(UTC) + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        answer = sdk.chat.completions.create(
            model=FLEX_MODEL, messages=user(by_header), extra_headers={"Tierq-Deadline": due}
        )
        assert answer.service_tier == "flex"
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(
                model=FLEX_MODEL, messages=user(nonce()), extra_headers={"Tierq-Deadline": "soon"}
            )
        assert refused.value.param == "deadline"
    # The job routes: `tierq.deadline`
    with gateway_client(root, key) as http:
        accepted = http.post(
            "/v1/jobs",
            json={"model": FLEX_MODEL, "messages": user(by_field), "tierq": {"deadline": 7200}},
        )
        assert accepted.status_code == 202, accepted.text
        bad = http.post(
            "/v1/jobs",
            json={"model": FLEX_MODEL, "messages": user(nonce()), "tierq": {"deadline": -1}},
        )
        assert bad.status_code == 422
        assert "deadline" in bad.text
    record = client.wait(accepted.json()["id"], timeout=60)
    assert record.service_tier_chosen == "flex"
    assert sent(simulator, by_header) == [("flex", 200)]
    assert sent(simulator, by_field) == [("flex", 200)]


def test_usage_reports_spend_per_service_tier_and_the_saving(
    client: TierqClient, worker_env: dict[str, str], settings: Settings
) -> None:
    tenant = f"spend-{nonce()}"
    done = client.wait_many(
        client.submit_many(
            [{"model": FLEX_MODEL, "messages": user(nonce())} for _ in range(2)],
            tenant=tenant,
            deadline=[3600, None],
        ),
        timeout=60,
    )
    flex, default = done
    assert flex.cost_usd is not None
    assert default.cost_usd is not None

    shown = run_tierq({**worker_env, **env_of(settings)}, "usage", "--tenant", tenant, "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["rows"]
    assert row["cost_usd_by_service_tier"] == {
        "default": pytest.approx(default.cost_usd, abs=1e-6),
        "flex": pytest.approx(flex.cost_usd, abs=1e-6),
    }
    assert row["saved_usd"] == pytest.approx(flex.cost_usd, abs=1e-6)  # flex is half price
