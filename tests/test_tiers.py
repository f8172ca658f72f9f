"""Routing a job to its tier by model, and the parameter rules of reasoning (o-series) models."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tierq.core.catalog import SHIPPED_MODELS, ModelInfo
from tierq.core.contract import JobRequest, parse_job_request
from tierq.core.errors import InvalidJobError, UnknownModelError
from tierq.core.settings import Settings, TierSettings
from tierq.core.tiers import api_params, check_model_rules, route

REASONING_MODELS = ["o3", "o4-mini"]
# Sampling knobs at values other than their defaults, which o-series models refuse.
SAMPLING_KNOBS = [("temperature", 0.2), ("top_p", 0.5)]
# The same knobs at the API's defaults, which o-series models accept ("Only the default (1)
# value is supported"); the penalties they refuse at any value.
DEFAULT_SAMPLING = {"temperature": 1, "top_p": 1}
O3 = ModelInfo(name="o3", tier="reasoning", reasoning=True)
GPT_4O = ModelInfo(name="gpt-4o", tier="standard", reasoning=False)


@pytest.fixture(autouse=True)
def no_tierq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default tier table, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.upper().startswith(("TIERQ_", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture
def default_settings() -> Settings:
    return Settings(_env_file=None)


def job(model: str, **fields: Any) -> JobRequest:
    return parse_job_request(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            **fields,
        }
    )


def refusal_of(request: JobRequest, settings: Settings) -> InvalidJobError:
    with pytest.raises(InvalidJobError) as caught:
        route(request, settings)
    return caught.value


# --- routing with the default tier table --------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("gpt-4o-mini", "fast"),
        ("gpt-4o", "standard"),
        ("o4-mini", "reasoning"),
        ("o3", "reasoning"),
    ],
)
def test_a_job_is_routed_to_the_tier_that_lists_its_model(
    model: str, tier: str, default_settings: Settings
) -> None:
    assert route(job(model), default_settings) == tier


@pytest.mark.parametrize("model", ["gpt-5-ultra", "GPT-4o", "gpt-4o-2024-08-06", " gpt-4o"])
def test_a_model_no_tier_lists_is_refused_with_the_known_models(
    model: str, default_settings: Settings
) -> None:
    with pytest.raises(UnknownModelError) as caught:
        route(job(model), default_settings)

    error = caught.value
    assert error.model == model
    assert error.known_models == sorted(SHIPPED_MODELS)
    assert error.errors == [{"field": "model", "message": f"unknown model {model!r}"}]
    assert str(error) == (
        f"model {model!r} is not served by any tier; known models: "
        + ", ".join(sorted(SHIPPED_MODELS))
    )


def test_an_unknown_model_error_is_an_invalid_job_error(default_settings: Settings) -> None:
    assert isinstance(refusal_of(job("davinci"), default_settings), UnknownModelError)


# --- reasoning models ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", REASONING_MODELS)
@pytest.mark.parametrize(("field", "value"), SAMPLING_KNOBS)
def test_a_sampling_parameter_off_its_default_is_refused_for_a_reasoning_model(
    model: str, field: str, value: object, default_settings: Settings
) -> None:
    error = refusal_of(job(model, **{field: value}), default_settings)

    assert [problem["field"] for problem in error.errors] == [field]
    assert f"{field}: unsupported value {value!r}" in str(error)
    assert f"{model} is a reasoning model" in str(error)
    assert f"only the default ({DEFAULT_SAMPLING[field]}) value is supported" in str(error)


@pytest.mark.parametrize("model", REASONING_MODELS)
def test_sampling_parameters_at_their_defaults_are_accepted_for_a_reasoning_model(
    model: str, default_settings: Settings
) -> None:
    request = job(model, **DEFAULT_SAMPLING)

    assert route(request, default_settings) == "reasoning"
    params = api_params(request, default_settings.model_info(model))
    assert {name: params[name] for name in DEFAULT_SAMPLING} == DEFAULT_SAMPLING


@pytest.mark.parametrize("model", REASONING_MODELS)
def test_sampling_parameters_set_to_null_are_accepted_for_a_reasoning_model_and_sent(
    model: str, default_settings: Settings
) -> None:
    # null is the API's "not set": the default applies, which reasoning models accept.
    request = job(model, temperature=None, top_p=None)

    assert route(request, default_settings) == "reasoning"
    params = api_params(request, default_settings.model_info(model))
    assert params["temperature"] is None
    assert params["top_p"] is None


@pytest.mark.parametrize("model", REASONING_MODELS)
@pytest.mark.parametrize(
    ("field", "value"),
    [("logprobs", True), ("stop", "END"), ("frequency_penalty", 0), ("presence_penalty", 0)],
)
def test_logprobs_stop_and_penalties_are_refused_for_a_reasoning_model_naming_the_field(
    model: str, field: str, value: object, default_settings: Settings
) -> None:
    error = refusal_of(job(model, **{field: value}), default_settings)

    assert [problem["field"] for problem in error.errors] == [field]
    assert f"{field}: unsupported parameter" in str(error)
    assert f"{model} is a reasoning model" in str(error)


@pytest.mark.parametrize("model", REASONING_MODELS)
def test_every_refused_parameter_of_a_reasoning_model_is_named_at_once(
    model: str, default_settings: Settings
) -> None:
    request = job(
        model,
        temperature=0,
        top_p=0.9,
        frequency_penalty=1,
        presence_penalty=1,
        logprobs=True,
        top_logprobs=3,
        stop=["END"],
    )

    error = refusal_of(request, default_settings)

    expected = [
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "stop",
        "logprobs",
        "top_logprobs",
    ]
    assert [problem["field"] for problem in error.errors] == expected
    for field in expected:
        assert f"{field}: unsupported " in str(error)


@pytest.mark.parametrize("model", REASONING_MODELS)
@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_is_accepted_for_a_reasoning_model(
    model: str, effort: str, default_settings: Settings
) -> None:
    request = job(model, reasoning_effort=effort, max_completion_tokens=2000)

    assert route(request, default_settings) == "reasoning"


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini"])
def test_reasoning_effort_is_refused_for_a_non_reasoning_model_naming_the_field(
    model: str, default_settings: Settings
) -> None:
    error = refusal_of(job(model, reasoning_effort="high"), default_settings)

    assert [problem["field"] for problem in error.errors] == ["reasoning_effort"]
    assert "reasoning_effort: unsupported parameter" in str(error)
    assert f"{model} is not a reasoning model" in str(error)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini"])
def test_sampling_parameters_are_accepted_for_a_non_reasoning_model(
    model: str, default_settings: Settings
) -> None:
    request = job(model, **dict(SAMPLING_KNOBS), logprobs=True, top_logprobs=2, stop="END")

    assert route(request, default_settings) in {"fast", "standard"}


def test_model_rules_check_what_the_caller_set_not_the_defaults() -> None:
    check_model_rules(job("o3"), O3)  # temperature etc. hold defaults but are unset


# --- the API call's parameters ------------------------------------------------------------------


def test_max_tokens_is_sent_as_max_completion_tokens_to_a_reasoning_tier() -> None:

    params = api_params(job("o3", max_tokens=500), O3)

    assert params["max_completion_tokens"] == 500
    assert "max_tokens" not in params


def test_max_tokens_is_sent_unchanged_to_a_non_reasoning_tier() -> None:

    params = api_params(job("gpt-4o", max_tokens=500), GPT_4O)

    assert params["max_tokens"] == 500
    assert "max_completion_tokens" not in params


@pytest.mark.parametrize("reasoning", [True, False])
def test_max_completion_tokens_is_sent_unchanged_to_any_tier(reasoning: bool) -> None:
    tier = ModelInfo(name="m", tier="t", reasoning=reasoning)

    params = api_params(job("m", max_completion_tokens=700), tier)

    assert params["max_completion_tokens"] == 700
    assert "max_tokens" not in params


def test_the_api_call_carries_exactly_the_set_parameters_the_apis_metadata_included() -> None:
    request = job("gpt-4o", temperature=0, seed=7, store=True, metadata={"tenant": "acme"})

    params = api_params(request, GPT_4O)

    assert params == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "temperature": 0.0,
        "seed": 7,
        "store": True,
        "metadata": {"tenant": "acme"},
    }


@pytest.mark.parametrize(
    "stream_options",
    [{}, {"stream_options": {}}, {"stream_options": {"include_usage": False}}],
    ids=["unset", "empty", "caller-said-no"],
)
def test_a_streamed_call_always_asks_for_usage(stream_options: dict[str, Any]) -> None:

    params = api_params(job("gpt-4o", stream=True, **stream_options), GPT_4O)

    assert params["stream"] is True
    assert params["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [{}, {"stream": False}], ids=["unset", "false"])
def test_a_call_that_does_not_stream_gets_no_stream_options(stream: dict[str, bool]) -> None:

    assert "stream_options" not in api_params(job("gpt-4o", **stream), GPT_4O)


def test_a_streamed_call_with_null_stream_options_still_asks_for_usage() -> None:

    params = api_params(job("gpt-4o", stream=True, stream_options=None), GPT_4O)

    assert params["stream_options"] == {"include_usage": True}


def test_a_null_max_tokens_does_not_erase_max_completion_tokens_for_a_reasoning_tier() -> None:

    params = api_params(job("o3", max_tokens=None, max_completion_tokens=500), O3)

    assert params["max_completion_tokens"] == 500
    assert "max_tokens" not in params


def test_building_the_call_leaves_the_request_unchanged() -> None:
    request = job("o3", max_tokens=500, stream=True)

    api_params(request, O3)

    assert request.api_fields()["max_tokens"] == 500
    assert "stream_options" not in request.api_fields()


# --- a custom tier table ------------------------------------------------------------------------


@pytest.fixture
def custom_settings() -> Settings:
    """An operator's table: a fine-tune added to "fast", and a new reasoning tier."""
    return Settings(
        tiers={
            "fast": TierSettings(models=["gpt-4o-mini", "ft:gpt-4o-mini:acme::abc123"]),
            "deep": TierSettings(models=["my-reasoner"], reasoning=True, concurrency=5),
        },
        _env_file=None,
    )


def test_a_model_added_to_a_tier_by_settings_is_routed_there(custom_settings: Settings) -> None:
    assert route(job("ft:gpt-4o-mini:acme::abc123"), custom_settings) == "fast"


def test_a_reasoning_tier_added_by_settings_gets_the_reasoning_rules(
    custom_settings: Settings,
) -> None:
    assert route(job("my-reasoner", reasoning_effort="low"), custom_settings) == "deep"
    error = refusal_of(job("my-reasoner", temperature=0.3), custom_settings)
    assert [problem["field"] for problem in error.errors] == ["temperature"]

    params = api_params(
        job("my-reasoner", max_tokens=50), custom_settings.model_info("my-reasoner")
    )

    assert params["max_completion_tokens"] == 50
    assert "max_tokens" not in params


def test_a_custom_table_replaces_the_default_models(custom_settings: Settings) -> None:
    with pytest.raises(UnknownModelError) as caught:
        route(job("gpt-4o"), custom_settings)

    # The shipped catalog still serves its fast models; gpt-4o's tier is gone.
    assert caught.value.known_models == [
        "ft:gpt-4o-mini:acme::abc123",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4o-mini",
        "my-reasoner",
    ]


def test_a_tier_table_given_as_plain_data_routes_the_same() -> None:
    settings = Settings(
        tiers={"batch": {"models": ["o3"], "reasoning": True, "rate_limit": "60/m"}},
        _env_file=None,
    )

    assert route(job("o3", reasoning_effort="high"), settings) == "batch"
    assert [p["field"] for p in refusal_of(job("o3", top_p=0.1), settings).errors] == ["top_p"]
