"""The model catalog: the shipped facts per model, how operators extend them, and the per-model
rules a job meets at submission (refused with `InvalidJobError` naming the field and the rule,
nothing enqueued)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import (
    TenantKey,
    gateway_client,
    in_flight,
    nonce,
    refused_with,
    run_tierq,
    user,
    waiting_jobs,
)
from tierq.core.catalog import ModelInfo
from tierq.core.contract import JobRequest, parse_job_request
from tierq.core.errors import ConfigurationError, InvalidJobError, UnknownModelError
from tierq.core.pricing import ModelPrice
from tierq.core.settings import Settings, get_settings
from tierq.core.tiers import check_model_rules, route
from tierq.devkit.processes import settings_for
from tierq.producers.client import TierqClient


@pytest.fixture(autouse=True)
def clean_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No developer's TIERQ_* variables or .env; `get_settings`' cache empty."""
    for name in list(os.environ):
        if name.upper().startswith(("TIERQ_", "OPENAI_")) and name != "TIERQ_TEST_REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def defaults() -> Settings:
    return Settings(_env_file=None)


def job(model: str, **fields: Any) -> JobRequest:
    return parse_job_request({"model": model, "messages": user("Why is the sky blue?"), **fields})


def refusal(request: JobRequest, info: ModelInfo) -> InvalidJobError:
    with pytest.raises(InvalidJobError) as caught:
        check_model_rules(request, info)
    return caught.value


# --- the shipped catalog ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tier", "reasoning", "window", "max_output", "price"),
    [
        ("gpt-4o-mini", "fast", False, 128_000, 16_384, (0.15, 0.075, 0.60)),
        ("gpt-4o", "standard", False, 128_000, 16_384, (2.50, 1.25, 10.00)),
        ("o4-mini", "reasoning", True, 200_000, 100_000, (1.10, 0.275, 4.40)),
        ("o3", "reasoning", True, 200_000, 100_000, (2.00, 0.50, 8.00)),
        ("gpt-4.1-nano", "fast", False, 1_047_576, 32_768, (0.10, 0.025, 0.40)),
        ("gpt-4.1-mini", "fast", False, 1_047_576, 32_768, (0.40, 0.10, 1.60)),
        ("gpt-4.1", "standard", False, 1_047_576, 32_768, (2.00, 0.50, 8.00)),
        ("gpt-5-nano", "reasoning", True, 400_000, 128_000, (0.05, 0.005, 0.40)),
        ("gpt-5-mini", "reasoning", True, 400_000, 128_000, (0.25, 0.025, 2.00)),
        ("gpt-5", "reasoning", True, 400_000, 128_000, (1.25, 0.125, 10.00)),
    ],
)
def test_the_shipped_catalog_knows_each_models_facts(
    defaults: Settings,
    model: str,
    tier: str,
    reasoning: bool,
    window: int,
    max_output: int,
    price: tuple[float, float, float],
) -> None:
    info = defaults.model_info(model)

    assert (info.tier, info.reasoning) == (tier, reasoning)
    assert (info.context_window_tokens, info.max_output_tokens) == (window, max_output)
    assert info.price == ModelPrice(input=price[0], cached_input=price[1], output=price[2])


@pytest.mark.parametrize("model", ["o3", "o4-mini"])
def test_an_o_series_model_takes_low_medium_and_high_effort_and_refuses_stop(
    defaults: Settings, model: str
) -> None:
    info = defaults.model_info(model)

    assert info.reasoning_efforts == ("low", "medium", "high")
    assert {"stop", "frequency_penalty", "presence_penalty"} <= set(info.refused_parameters)
    assert dict(info.default_only_parameters) == {"temperature": 1, "top_p": 1}


# --- the rules, called directly -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["o3", "o4-mini"])
def test_reasoning_effort_minimal_is_refused_naming_the_accepted_values(
    defaults: Settings, model: str
) -> None:
    error = refusal(job(model, reasoning_effort="minimal"), defaults.model_info(model))

    assert error.errors == [
        {
            "field": "reasoning_effort",
            "message": f"unsupported value 'minimal': {model} accepts low, medium, high",
        }
    ]
    assert f"reasoning_effort: unsupported value 'minimal': {model} accepts" in str(error)


@pytest.mark.parametrize(
    ("model", "cap_field", "maximum"),
    [
        ("gpt-4o", "max_tokens", 16_384),
        ("gpt-4o-mini", "max_completion_tokens", 16_384),
        ("o3", "max_completion_tokens", 100_000),
        ("o4-mini", "max_tokens", 100_000),
    ],
)
def test_an_output_cap_over_the_models_maximum_is_refused_naming_the_maximum(
    defaults: Settings, model: str, cap_field: str, maximum: int
) -> None:
    info = defaults.model_info(model)

    error = refusal(job(model, **{cap_field: maximum + 1}), info)

    assert [problem["field"] for problem in error.errors] == [cap_field]
    assert f"{maximum + 1} is over {model}'s maximum output of {maximum} tokens" in str(error)
    check_model_rules(job(model, **{cap_field: maximum}), info)  # the maximum itself is fine


@pytest.mark.parametrize("model", ["o3", "o4-mini"])
def test_stop_is_refused_for_an_o_series_model(defaults: Settings, model: str) -> None:
    error = refusal(job(model, stop=["END"]), defaults.model_info(model))

    assert error.errors == [
        {
            "field": "stop",
            "message": f"unsupported parameter ({model} is a reasoning model, which does not "
            "support it)",
        }
    ]


@pytest.mark.parametrize("model", ["o3", "o4-mini"])
@pytest.mark.parametrize(
    ("field", "default", "other"),
    [
        ("temperature", 1, 0.7),
        ("top_p", 1, 0.9),
    ],
)
def test_an_o_series_model_takes_a_sampling_knob_only_at_its_default(
    defaults: Settings, model: str, field: str, default: float, other: float
) -> None:
    info = defaults.model_info(model)

    check_model_rules(job(model, **{field: default}), info)
    error = refusal(job(model, **{field: other}), info)
    assert error.errors[0]["field"] == field
    assert f"only the default ({default}) value is supported" in str(error)


@pytest.mark.parametrize("model", ["o3", "o4-mini"])
@pytest.mark.parametrize("field", ["frequency_penalty", "presence_penalty"])
def test_an_o_series_model_refuses_a_penalty_whatever_its_value(
    defaults: Settings, model: str, field: str
) -> None:
    # The API answers "Unsupported parameter" for these, even at 0
    error = refusal(job(model, **{field: 0}), defaults.model_info(model))
    assert error.errors[0]["field"] == field


# --- extending and correcting the catalog from settings -----------------------------------------


def test_one_field_of_a_shipped_entry_is_changed_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_MODELS", json.dumps({"gpt-4o": {"max_output_tokens": 4_096}}))

    info = get_settings().model_info("gpt-4o")

    assert (info.max_output_tokens, info.context_window_tokens) == (4_096, 128_000)
    assert info.price is not None
    assert info.price.input == 2.50
    assert refusal(job("gpt-4o", max_tokens=4_097), info).errors[0]["field"] == "max_tokens"


def test_a_model_added_from_the_environment_is_served_by_its_tier_with_its_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = {
        "tier": "fast",
        "context_window_tokens": 32_000,
        "max_output_tokens": 1_000,
        "price": {"input": 1, "cached_input": 0.5, "output": 4},
    }
    monkeypatch.setenv("TIERQ_MODELS", json.dumps({"my-model": entry}))
    settings = get_settings()

    assert route(job("my-model"), settings) == "fast"
    assert "my-model" in settings.tiers["fast"].models
    assert settings.price_of("my-model") == ModelPrice(input=1, cached_input=0.5, output=4)
    with pytest.raises(InvalidJobError, match="maximum output of 1000 tokens"):
        route(job("my-model", max_tokens=1_001), settings)


def test_a_reasoning_entry_without_rules_gets_the_o_series_rules() -> None:
    settings = Settings(models={"my-reasoner": {"tier": "reasoning", "reasoning": True}})

    info = settings.model_info("my-reasoner")

    assert info.reasoning_efforts == ("low", "medium", "high")
    assert refusal(job("my-reasoner", stop="x"), info).errors[0]["field"] == "stop"


def test_an_entry_can_set_its_own_reasoning_efforts_and_refused_parameters() -> None:
    entry = {"tier": "reasoning", "reasoning_efforts": ["minimal", "low"], "refused_parameters": []}
    settings = Settings(models={"o3": entry}, _env_file=None)
    info = settings.model_info("o3")

    check_model_rules(job("o3", reasoning_effort="minimal", stop="x"), info)
    error = refusal(job("o3", reasoning_effort="high"), info)
    assert "o3 accepts minimal, low" in str(error)


def test_a_shipped_model_is_taken_out_of_service_by_a_null_tier() -> None:
    settings = Settings(models={"o3": {"tier": None}}, _env_file=None)

    with pytest.raises(UnknownModelError):
        route(job("o3"), settings)
    assert "o3" not in settings.known_models()
    assert "o4-mini" in settings.known_models()


def test_a_tier_listing_a_model_serves_it_whatever_its_entry_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_TIERS__QUICK__MODELS", '["o4-mini"]')
    settings = get_settings()

    info = settings.model_info("o4-mini")

    assert info.tier == "quick"
    assert info.reasoning is True  # the catalog's fact, not the tier's flag
    assert "o3" in settings.tiers["reasoning"].models
    assert "o4-mini" not in settings.tiers["reasoning"].models


def test_a_bad_catalog_entry_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_MODELS", json.dumps({"gpt-4o": {"max_output_tokens": 0}}))

    with pytest.raises(ConfigurationError, match="TIERQ_MODELS__GPT-4O__MAX_OUTPUT_TOKENS"):
        get_settings()


def test_the_older_window_and_price_variables_still_override_the_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_CONTEXT_WINDOWS", json.dumps({"gpt-4o": 8_000}))
    monkeypatch.setenv(
        "TIERQ_PRICES", json.dumps({"gpt-4o": {"input": 1, "cached_input": 1, "output": 1}})
    )
    settings = get_settings()

    assert settings.model_info("gpt-4o").context_window_tokens == 8_000
    assert settings.context_window_of("gpt-4o") == 8_000
    assert settings.price_of("gpt-4o") == ModelPrice(input=1, cached_input=1, output=1)
    # A model the old tables do not list keeps the catalog's facts.
    assert settings.context_window_of("o3") == 200_000
    assert settings.price_of("o3") == ModelPrice(input=2.0, cached_input=0.5, output=8.0)


def test_a_dated_snapshot_is_priced_as_its_model(defaults: Settings) -> None:
    assert defaults.price_of("gpt-4o-2024-08-06") == defaults.price_of("gpt-4o")
    assert defaults.price_of("davinci") is None


def test_a_gpt_5_model_takes_minimal_effort_where_o3_refuses_it(defaults: Settings) -> None:
    check_model_rules(job("gpt-5", reasoning_effort="minimal"), defaults.model_info("gpt-5"))

    assert "minimal" not in defaults.model_info("o3").reasoning_efforts
    assert (
        refusal(job("gpt-5", temperature=0.5), defaults.model_info("gpt-5")).errors[0]["field"]
        == "temperature"
    )


def test_shipped_flex_prices_are_half_the_standard_and_priority_prices_are_listed(
    defaults: Settings,
) -> None:
    assert defaults.price_of("o3", "flex") == ModelPrice(input=1.0, cached_input=0.25, output=4.0)
    assert defaults.price_of("gpt-5", "flex") == ModelPrice(
        input=0.625, cached_input=0.0625, output=5.0
    )
    assert defaults.price_of("gpt-4o", "priority") == ModelPrice(
        input=4.25, cached_input=2.125, output=17.0
    )
    # A tier the model has no price for is billed at the standard price.
    assert defaults.price_of("gpt-4o", "flex") == defaults.price_of("gpt-4o")
    assert defaults.price_of("gpt-4o", "default") == defaults.price_of("gpt-4o")


def test_an_answer_billed_at_a_service_tier_with_its_own_price_is_priced_at_it() -> None:
    flex = {"input": 1.0, "cached_input": 0.25, "output": 4.0}
    settings = Settings(models={"o3": {"service_tier_prices": {"flex": flex}}}, _env_file=None)

    assert settings.price_of("o3", "flex") == ModelPrice(**flex)
    assert settings.price_of("o3", "default") == ModelPrice(input=2, cached_input=0.5, output=8)


# --- at submission, through the real client: refused, nothing enqueued ---------------------------


@pytest.fixture
def idle_producer(redis_url: str) -> Iterator[tuple[TierqClient, Settings, redis.Redis]]:
    """A client whose queues no worker consumes (a fresh prefix), and a view of the broker."""
    settings = Settings(
        redis_url=redis_url, queue_prefix=f"tierq-catalog-{nonce()}.", _env_file=None
    )
    broker = redis.Redis.from_url(redis_url)
    with TierqClient(settings) as producer:
        yield producer, settings, broker
    for tier in settings.tiers:
        broker.delete(settings.queue_for(tier))
    broker.close()


REFUSED_AT_SUBMIT = [
    pytest.param("o3", {"reasoning_effort": "minimal"}, "reasoning_effort", id="o3-minimal"),
    pytest.param("o4-mini", {"stop": ["END"]}, "stop", id="o4-mini-stop"),
    pytest.param("gpt-4o", {"max_tokens": 16_385}, "max_tokens", id="gpt-4o-over-max-output"),
    pytest.param("o3", {"temperature": 0.5}, "temperature", id="o3-temperature-0.5"),
]


@pytest.mark.parametrize(("model", "params", "field"), REFUSED_AT_SUBMIT)
def test_a_model_rule_is_enforced_at_submit_and_nothing_is_enqueued(
    idle_producer: tuple[TierqClient, Settings, redis.Redis],
    model: str,
    params: dict[str, Any],
    field: str,
) -> None:
    producer, settings, broker = idle_producer
    tier = settings.model_info(model).tier
    # Given a valid job for the same model does reach the queue
    producer.submit(model=model, messages=user("fine"))
    assert waiting_jobs(broker, settings, tier) == 1

    # When the job breaks its model's rule
    with pytest.raises(InvalidJobError) as caught:
        producer.submit(model=model, messages=user("refused"), **params)

    # Then it is refused naming the field, and nothing more is on the queue
    assert [problem["field"] for problem in caught.value.errors] == [field]
    assert f"{field}: " in str(caught.value)
    assert waiting_jobs(broker, settings, tier) == 1


def test_temperature_1_on_an_o_series_model_is_accepted_at_submit(
    idle_producer: tuple[TierqClient, Settings, redis.Redis],
) -> None:
    producer, settings, broker = idle_producer

    producer.submit(model="o3", messages=user("hi"), temperature=1, top_p=1)

    assert waiting_jobs(broker, settings, "reasoning") == 1


# --- the same rules from the CLI (exit 2) and over HTTP (422, the API's error shape) ---------

CLI_REFUSALS = [
    pytest.param(("--model", "o3", "--reasoning-effort", "minimal"), "reasoning_effort", id="o3"),
    pytest.param(("--model", "o4-mini", "--stop", "END"), "stop", id="o4-mini-stop"),
    pytest.param(("--model", "gpt-4o", "--max-tokens", "16385"), "max_tokens", id="gpt-4o-cap"),
]


@pytest.mark.parametrize(("args", "field"), CLI_REFUSALS)
def test_a_model_rule_broken_on_the_command_line_exits_2_naming_the_field_and_rule(
    worker_env: dict[str, str], redis_client: redis.Redis, args: tuple[str, ...], field: str
) -> None:
    isolation = nonce()
    env = {
        **worker_env,
        "TIERQ_QUEUE_PREFIX": f"tierq-{isolation}.",
        "TIERQ_KEY_PREFIX": f"tierq-{isolation}:",
    }
    settings = settings_for(env)
    # Given a valid job for the same model is enqueued from the same command line
    accepted = run_tierq(env, "submit", *args[:2], "--user", "fine")
    assert accepted.returncode == 0, accepted.stderr
    assert sum(waiting_jobs(redis_client, settings, tier) for tier in settings.tiers) == 1

    done = run_tierq(env, "submit", *args, "--user", "refused")

    assert done.returncode == 2
    assert f"{field}: " in done.stderr
    assert sum(waiting_jobs(redis_client, settings, tier) for tier in settings.tiers) == 1


HTTP_REFUSALS = [
    pytest.param({"model": "o3", "reasoning_effort": "minimal"}, "reasoning_effort", id="o3"),
    pytest.param({"model": "o4-mini", "stop": ["END"]}, "stop", id="o4-mini-stop"),
    pytest.param({"model": "gpt-4o", "max_tokens": 16_385}, "max_tokens", id="gpt-4o-cap"),
]


@pytest.mark.parametrize(("params", "field"), HTTP_REFUSALS)
def test_a_model_rule_broken_over_http_is_a_422_in_the_apis_shape_naming_the_field(
    gateway_url: str, tenant_key: TenantKey, settings: Settings, params: dict[str, Any], field: str
) -> None:
    tenant, key = tenant_key()
    body = {"messages": user("refused"), **params}
    with gateway_client(gateway_url, key) as http:
        error = refused_with(http.post("/v1/jobs", json=body), 422, field)
    assert field in error["message"]
    assert in_flight(settings, tenant) == 0
