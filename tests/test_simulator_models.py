"""The simulator's model table, `service_tier`, and the API's refusals of what a model cannot do.

Each refusal is checked for the status, `type`, `code`, `param` and wording the API uses, since
clients classify errors by them (tierq retries none of these 400s).
"""

from typing import Any

import openai
import pytest
from openai.types.chat import completion_create_params

from tests import test_simulator as shared
from tests.test_simulator import USER_HELLO
from tierq_simulator.request import KNOWN_PARAMETERS

# The simulator fixtures of tests/test_simulator.py: one simulator process for this module.
base_url = shared.base_url
sim_client = shared.sim_client
client = shared.client
fresh_simulator = shared.fresh_simulator

REASONING = ("o3", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano")


def refusal(client: openai.OpenAI, **body: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(messages=USER_HELLO, **body)
    assert raised.value.type == "invalid_request_error"
    return raised.value


# --- service_tier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "served"),
    [
        (None, "default"),
        ("auto", "default"),
        ("default", "default"),
        ("flex", "flex"),
        ("priority", "priority"),
        ("fast", "priority"),
    ],
)
def test_the_answer_names_the_service_tier_that_served_it(
    client: openai.OpenAI, asked: str | None, served: str
) -> None:
    tier: Any = {} if asked is None else {"service_tier": asked}

    completion = client.chat.completions.create(model="o3", messages=USER_HELLO, **tier)
    chunks = list(
        client.chat.completions.create(model="o3", messages=USER_HELLO, stream=True, **tier)
    )

    assert completion.service_tier == served
    assert {chunk.service_tier for chunk in chunks} == {served}


def test_an_unknown_service_tier_is_refused(client: openai.OpenAI) -> None:
    error = refusal(client, model="gpt-4o", extra_body={"service_tier": "turbo"})

    assert error.code == "invalid_value"
    assert error.param == "service_tier"
    assert error.message.endswith(
        "Invalid value: 'turbo'. Supported values are: 'auto', 'default', 'flex', 'scale', "
        "'priority', and 'fast'."
    )


# --- unknown parameters --------------------------------------------------------------------


def test_an_unknown_parameter_is_refused_as_the_api_refuses_it(client: openai.OpenAI) -> None:
    one = refusal(client, model="gpt-4o", extra_body={"temprature": 0.5})
    two = refusal(client, model="gpt-4o", extra_body={"temprature": 0.5, "max_token": 9})

    assert one.message.endswith("Unrecognized request argument supplied: temprature")
    assert (one.code, one.param) == (None, None)
    assert two.message.endswith("Unrecognized request arguments supplied: temprature, max_token")


def test_every_parameter_the_sdk_can_send_is_known() -> None:
    sdk_parameters = set(completion_create_params.CompletionCreateParamsBase.__annotations__)

    assert sdk_parameters | {"stream"} <= KNOWN_PARAMETERS


# --- reasoning models ----------------------------------------------------------------------


@pytest.mark.parametrize("model", REASONING)
@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("stop", ["\n"]),
        ("frequency_penalty", 0.5),
        ("presence_penalty", 0.5),
        ("logprobs", True),
        ("logit_bias", {"1734": -100}),
    ],
)
def test_reasoning_models_refuse_parameters_they_do_not_take(
    client: openai.OpenAI, model: str, parameter: str, value: object
) -> None:
    error = refusal(client, model=model, extra_body={parameter: value})

    assert error.code == "unsupported_parameter"
    assert error.param == parameter
    assert error.message.endswith(
        f"Unsupported parameter: '{parameter}' is not supported with this model."
    )


@pytest.mark.parametrize("model", ["o4-mini", "gpt-5"])
def test_reasoning_models_take_temperature_only_at_its_default(
    client: openai.OpenAI, model: str
) -> None:
    error = refusal(client, model=model, temperature=0.5)

    assert error.code == "unsupported_value"
    assert error.param == "temperature"
    assert error.message.endswith(
        "Unsupported value: 'temperature' does not support 0.5 with this model. Only the "
        "default (1) value is supported."
    )


@pytest.mark.parametrize("model", ["o3", "o4-mini", "o3-2025-04-16"])
def test_minimal_reasoning_effort_is_refused_by_o_series_models(
    client: openai.OpenAI, model: str
) -> None:
    error = refusal(client, model=model, reasoning_effort="minimal")

    assert error.code == "unsupported_value"
    assert error.param == "reasoning_effort"
    assert error.message.endswith(
        "Unsupported value: 'reasoning_effort' does not support 'minimal' with this model. "
        "Supported values are: 'low', 'medium', and 'high'."
    )


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "gpt-5-nano"])
def test_gpt5_models_reason_and_take_minimal_effort(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model, messages=USER_HELLO, reasoning_effort="minimal"
    )

    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens_details is not None
    assert 12 <= (usage.completion_tokens_details.reasoning_tokens or 0) <= 20  # 16 ± 25%
    assert completion.model == f"{model}-2025-08-07"
    assert refusal(client, model=model, max_tokens=10).param == "max_tokens"


@pytest.mark.parametrize("model", ["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"])
def test_gpt41_models_do_not_reason(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=USER_HELLO, stop=["zz"])

    assert completion.usage is not None
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0
    assert completion.model == f"{model}-2025-04-14"
    assert refusal(client, model=model, reasoning_effort="low").code == "unsupported_parameter"


# --- output caps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "parameter", "maximum"),
    [
        ("gpt-4o", "max_tokens", 16_384),
        ("gpt-4o-mini-2024-07-18", "max_completion_tokens", 16_384),
        ("gpt-4.1-nano", "max_completion_tokens", 32_768),
        ("o3", "max_completion_tokens", 100_000),
        ("gpt-5-mini", "max_completion_tokens", 128_000),
    ],
)
def test_an_output_cap_above_the_models_maximum_is_refused(
    client: openai.OpenAI, model: str, parameter: str, maximum: int
) -> None:
    client.chat.completions.create(
        model=model, messages=USER_HELLO, extra_body={parameter: maximum}
    )

    error = refusal(client, model=model, extra_body={parameter: maximum + 1})

    assert error.code == "invalid_value"
    assert error.param == parameter
    assert error.message.endswith(
        f"{parameter} is too large: {maximum + 1}. This model supports at most {maximum} "
        f"completion tokens, whereas you provided {maximum + 1}."
    )


def test_models_the_table_does_not_know_are_still_served(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="ft:gpt-4o-mini:acme::abc123", messages=USER_HELLO, max_tokens=50_000
    )

    assert completion.model == "ft:gpt-4o-mini:acme::abc123"


def test_models_list_names_every_alias_and_snapshot(client: openai.OpenAI) -> None:
    listed = {model.id for model in client.models.list().data}

    for alias in ("gpt-4o", "gpt-4o-mini", "o3", "o4-mini", "gpt-4.1", "gpt-4.1-mini"):
        assert alias in listed
    for alias in ("gpt-4.1-nano", "gpt-5", "gpt-5-mini", "gpt-5-nano"):
        assert alias in listed
    assert "gpt-5-2025-08-07" in listed


def test_flex_is_refused_for_a_model_that_lacks_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER_HELLO, service_tier="flex"
        )
    assert refused.value.param == "service_tier"


def test_flex_without_capacity_is_a_429_that_is_not_a_rate_limit(client: openai.OpenAI) -> None:
    unavailable = [{"role": "user", "content": "Hello [sim flex=unavailable]"}]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="o3", messages=unavailable, service_tier="flex")
    assert refused.value.code == "resource_unavailable"
    # The directive concerns flex only: the same request at the default tier is answered
    answered = client.chat.completions.create(model="o3", messages=unavailable)
    assert answered.service_tier == "default"
