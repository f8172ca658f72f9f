"""The job contract: Chat Completions parameters as the API names, bounds and defaults them.

Every refusal must name the parameter to fix, both in `InvalidJobError.errors` (for a gateway
or CLI to point at) and in the message. Only what the caller set is sent on, so the API's own
defaults apply as if the caller had called it directly; that must survive the JSON hop through
the queue.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tierq.core.contract import (
    JobEnvelope,
    JobRequest,
    parse_job_request,
    parse_labels,
    request_size_bytes,
)
from tierq.core.errors import InvalidJobError, TierqError
from tierq.core.validation import describe_validation_error

USER = {"role": "user", "content": "Name three rivers."}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def request(**fields: Any) -> dict[str, Any]:
    """A valid request dict (one user message to gpt-4o) with `fields` set on top."""
    return {"model": "gpt-4o", "messages": [USER], **fields}


def tool_call(call_id: str, name: str = "get_weather") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def refusal_of(data: dict[str, Any]) -> InvalidJobError:
    """Parse `data`, which must be refused, and return the error."""
    with pytest.raises(InvalidJobError) as caught:
        parse_job_request(data)
    return caught.value


def refused_fields(data: dict[str, Any]) -> list[str]:
    return [problem["field"] for problem in refusal_of(data).errors]


def assert_refused_naming(data: dict[str, Any], field: str) -> InvalidJobError:
    """`data` is refused, with `field` among the named fields and in the message."""
    error = refusal_of(data)
    assert field in [problem["field"] for problem in error.errors]
    assert f"{field}:" in str(error)
    return error


# --- a minimal request and the API's defaults -------------------------------------------------


def test_a_model_and_one_message_make_a_complete_request() -> None:
    job = parse_job_request(request())

    assert job.api_fields() == {"model": "gpt-4o", "messages": [USER]}


@pytest.mark.parametrize(
    ("field", "api_default"),
    [
        ("temperature", 1.0),
        ("top_p", 1.0),
        ("frequency_penalty", 0.0),
        ("presence_penalty", 0.0),
        ("n", 1),
        ("logprobs", False),
        ("stream", False),
        ("max_tokens", None),
        ("max_completion_tokens", None),
        ("stop", None),
        ("seed", None),
        ("top_logprobs", None),
        ("stream_options", None),
        ("response_format", None),
        ("tools", None),
        ("tool_choice", None),
        ("parallel_tool_calls", None),
        ("reasoning_effort", None),
        ("user", None),
    ],
)
def test_an_unset_parameter_has_the_api_default_and_is_not_sent(
    field: str, api_default: object
) -> None:
    job = parse_job_request(request())

    assert getattr(job, field) == api_default
    assert field not in job.api_fields()


def test_a_parameter_set_to_its_default_value_is_still_sent() -> None:
    job = parse_job_request(request(temperature=1.0, n=1, stream=False))

    assert job.api_fields() == {**request(), "temperature": 1.0, "n": 1, "stream": False}


def test_an_optional_parameter_set_to_null_is_sent_as_null() -> None:
    job = parse_job_request(request(seed=None))

    assert job.api_fields() == {**request(), "seed": None}


@pytest.mark.parametrize(
    "field",
    ["temperature", "top_p", "frequency_penalty", "presence_penalty", "n", "logprobs", "stream"],
)
def test_null_for_a_parameter_the_sdk_types_optional_is_accepted_and_sent_as_null(
    field: str,
) -> None:
    job = parse_job_request(request(**{field: None}))

    assert job.api_fields() == {**request(), field: None}


def test_top_logprobs_with_logprobs_null_is_refused_naming_top_logprobs() -> None:
    assert_refused_naming(request(logprobs=None, top_logprobs=2), "top_logprobs")


def test_unset_fields_of_a_message_are_not_sent() -> None:
    job = parse_job_request(request(messages=[{"role": "user", "content": "hi"}]))

    assert job.api_fields()["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("missing", ["model", "messages"])
def test_a_request_without_a_required_parameter_is_refused_naming_it(missing: str) -> None:
    data = request()
    del data[missing]

    assert_refused_naming(data, missing)


def test_a_request_without_messages_is_refused() -> None:
    assert_refused_naming(request(messages=[]), "messages")


def test_an_empty_model_name_is_refused() -> None:
    assert_refused_naming(request(model=""), "model")


# --- ranges -------------------------------------------------------------------------------------


def test_temperature_above_two_is_refused_naming_the_field() -> None:
    error = assert_refused_naming(request(temperature=2.01), "temperature")

    assert error.errors == [
        {"field": "temperature", "message": "Input should be less than or equal to 2"}
    ]


def test_temperature_below_zero_is_refused_naming_the_field() -> None:
    assert_refused_naming(request(temperature=-0.1), "temperature")


def test_top_p_above_one_is_refused_naming_the_field() -> None:
    assert_refused_naming(request(top_p=1.01), "top_p")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0),
        ("temperature", 0.7),
        ("temperature", 2),
        ("top_p", 0),
        ("top_p", 1),
        ("frequency_penalty", -2),
        ("frequency_penalty", 2),
        ("presence_penalty", -2),
        ("presence_penalty", 2),
        ("n", 1),
        ("n", 128),
        ("max_tokens", 1),
        ("max_completion_tokens", 1),
        ("seed", -(2**63)),
        ("seed", 2**63 - 1),
        ("user", "u" * 512),
    ],
)
def test_a_value_inside_the_api_range_is_accepted_and_sent(field: str, value: object) -> None:
    job = parse_job_request(request(**{field: value}))

    assert job.api_fields()[field] == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("temperature", -0.01, id="temperature-below-0"),
        pytest.param("temperature", 2.01, id="temperature-above-2"),
        pytest.param("temperature", math.nan, id="temperature-nan"),
        pytest.param("temperature", math.inf, id="temperature-inf"),
        pytest.param("top_p", -0.01, id="top_p-below-0"),
        pytest.param("top_p", 1.01, id="top_p-above-1"),
        pytest.param("frequency_penalty", -2.01, id="frequency_penalty-below-minus-2"),
        pytest.param("frequency_penalty", 2.01, id="frequency_penalty-above-2"),
        pytest.param("presence_penalty", -2.01, id="presence_penalty-below-minus-2"),
        pytest.param("presence_penalty", 2.01, id="presence_penalty-above-2"),
        pytest.param("n", 0, id="n-zero"),
        pytest.param("n", -1, id="n-negative"),
        pytest.param("n", 129, id="n-above-128"),
        pytest.param("max_tokens", 0, id="max_tokens-zero"),
        pytest.param("max_completion_tokens", 0, id="max_completion_tokens-zero"),
        pytest.param("user", "u" * 513, id="user-too-long"),
        pytest.param("seed", 2**63, id="seed-above-int64"),
        pytest.param("seed", -(2**63) - 1, id="seed-below-int64"),
    ],
)
def test_a_value_outside_the_api_range_is_refused_naming_the_field(
    field: str, value: object
) -> None:
    assert refused_fields(request(**{field: value})) == [field]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "hot"),
        ("top_p", [0.5]),
        ("n", 1.5),
        ("seed", "lucky"),
        ("logprobs", "maybe"),
        ("stream", {"on": True}),
        ("model", 4),
        ("messages", "hello"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(field: str, value: object) -> None:
    assert_refused_naming(request(**{field: value}), field)


def test_every_bad_parameter_is_named_in_one_error() -> None:
    error = refusal_of(request(temperature=3, top_p=2, n=0))

    assert [problem["field"] for problem in error.errors] == ["temperature", "top_p", "n"]
    assert str(error).startswith("invalid job request: ")
    for field in ("temperature:", "top_p:", "n:"):
        assert field in str(error)


def test_an_invalid_job_error_is_a_tierq_error_and_a_value_error() -> None:
    error = refusal_of(request(temperature=3))

    assert isinstance(error, TierqError)
    assert isinstance(error, ValueError)


# --- stop ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["\n", ["END"], ["a", "b", "c", "d"]])
def test_stop_is_one_string_or_up_to_four(stop: str | list[str]) -> None:
    assert parse_job_request(request(stop=stop)).api_fields()["stop"] == stop


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(["a", "b", "c", "d", "e"], id="five-sequences"),
        pytest.param("", id="empty-string"),
        pytest.param(["END", ""], id="empty-sequence-in-list"),
        pytest.param(7, id="not-a-string"),
        pytest.param([7], id="list-of-non-strings"),
    ],
)
def test_a_bad_stop_is_refused_naming_stop(stop: object) -> None:
    fields = refused_fields(request(stop=stop))

    assert "stop" in fields
    assert all(field == "stop" or field.startswith("stop.") for field in fields)


# --- logprobs, streaming, max tokens ------------------------------------------------------------


@pytest.mark.parametrize("top_logprobs", [0, 20])
def test_top_logprobs_from_zero_to_twenty_is_accepted_with_logprobs(top_logprobs: int) -> None:
    job = parse_job_request(request(logprobs=True, top_logprobs=top_logprobs))

    assert job.api_fields()["top_logprobs"] == top_logprobs


@pytest.mark.parametrize("top_logprobs", [-1, 21])
def test_top_logprobs_outside_zero_to_twenty_is_refused(top_logprobs: int) -> None:
    assert refused_fields(request(logprobs=True, top_logprobs=top_logprobs)) == ["top_logprobs"]


@pytest.mark.parametrize("logprobs", [{}, {"logprobs": False}], ids=["unset", "false"])
def test_top_logprobs_without_logprobs_is_refused_naming_top_logprobs(
    logprobs: dict[str, bool],
) -> None:
    error = assert_refused_naming(request(top_logprobs=5, **logprobs), "top_logprobs")

    assert "requires logprobs to be true" in str(error)


def test_stream_options_with_stream_is_accepted() -> None:
    job = parse_job_request(request(stream=True, stream_options={"include_usage": True}))

    assert job.api_fields()["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [{}, {"stream": False}], ids=["unset", "false"])
def test_stream_options_without_stream_is_refused_naming_stream_options(
    stream: dict[str, bool],
) -> None:
    error = assert_refused_naming(
        request(stream_options={"include_usage": True}, **stream), "stream_options"
    )

    assert "only allowed when stream is true" in str(error)


def test_unknown_stream_options_are_refused() -> None:
    assert_refused_naming(request(stream=True, stream_options={"chunk": 1}), "stream_options.chunk")


def test_max_tokens_and_max_completion_tokens_together_are_refused() -> None:
    error = assert_refused_naming(request(max_tokens=10, max_completion_tokens=10), "max_tokens")

    assert "not both" in str(error)


# --- tools --------------------------------------------------------------------------------------


def test_tools_with_every_tool_choice_are_accepted() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("none", "auto", "required", named):
        job = parse_job_request(request(tools=[WEATHER_TOOL], tool_choice=choice))

        assert job.api_fields()["tool_choice"] == choice


@pytest.mark.parametrize(
    "choice",
    ["none", "auto", "required", {"type": "function", "function": {"name": "get_weather"}}],
)
def test_tool_choice_without_tools_is_refused_naming_tool_choice(choice: object) -> None:
    error = assert_refused_naming(request(tool_choice=choice), "tool_choice")

    assert "only allowed when tools are specified" in str(error)


def test_tool_choice_naming_a_function_not_among_tools_is_refused() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}

    error = assert_refused_naming(request(tools=[WEATHER_TOOL], tool_choice=choice), "tool_choice")

    assert "'get_time'" in str(error)


def test_an_unknown_tool_choice_is_refused_naming_tool_choice() -> None:
    fields = refused_fields(request(tools=[WEATHER_TOOL], tool_choice="always"))

    assert fields
    assert all(field.startswith("tool_choice") for field in fields)


SQL_TOOL = {
    "type": "custom",
    "custom": {
        "name": "run_sql",
        "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": "select .*"}},
    },
}


@pytest.mark.parametrize(
    "choice",
    [
        pytest.param({"type": "custom", "custom": {"name": "run_sql"}}, id="named-custom"),
        pytest.param(
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
            id="allowed-tools",
        ),
    ],
)
def test_custom_tools_and_every_sdk_tool_choice_are_accepted_and_sent(choice: object) -> None:
    job = parse_job_request(request(tools=[WEATHER_TOOL, SQL_TOOL], tool_choice=choice))

    assert job.api_fields()["tools"] == [WEATHER_TOOL, SQL_TOOL]
    assert job.api_fields()["tool_choice"] == choice


@pytest.mark.parametrize(
    ("tools", "choice"),
    [
        pytest.param(
            [WEATHER_TOOL], {"type": "custom", "custom": {"name": "run_sql"}}, id="custom-absent"
        ),
        pytest.param(
            [SQL_TOOL],
            {"type": "function", "function": {"name": "run_sql"}},
            id="function-naming-a-custom-tool",
        ),
    ],
)
def test_tool_choice_naming_a_tool_not_among_tools_is_refused(
    tools: list[dict[str, Any]], choice: object
) -> None:
    error = assert_refused_naming(request(tools=tools, tool_choice=choice), "tool_choice")

    assert "'run_sql'" in str(error)


def test_an_unknown_field_inside_a_custom_tool_is_refused_naming_its_path() -> None:
    tool = {"type": "custom", "custom": {"name": "run_sql", "grammar": "x"}}

    assert refused_fields(request(tools=[tool])) == ["tools.0.custom.grammar"]


def test_parallel_tool_calls_without_tools_is_refused_naming_it() -> None:
    assert_refused_naming(request(parallel_tool_calls=True), "parallel_tool_calls")


def test_parallel_tool_calls_with_tools_is_accepted() -> None:
    job = parse_job_request(request(tools=[WEATHER_TOOL], parallel_tool_calls=False))

    assert job.api_fields()["parallel_tool_calls"] is False


@pytest.mark.parametrize("name", ["get weather", "résumé", "", "f" * 65, "get.weather"])
def test_a_function_name_outside_the_api_pattern_is_refused_naming_it(name: str) -> None:
    tool = {"type": "function", "function": {"name": name}}

    assert refused_fields(request(tools=[tool])) == ["tools.0.function.name"]


@pytest.mark.parametrize("name", ["f", "get_weather-v2", "F" * 64])
def test_a_function_name_of_letters_digits_underscores_and_dashes_is_accepted(name: str) -> None:
    tool = {"type": "function", "function": {"name": name}}

    assert parse_job_request(request(tools=[tool])).tools is not None


def test_more_than_128_tools_are_refused_naming_tools() -> None:
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]

    assert refused_fields(request(tools=tools)) == ["tools"]


def test_128_tools_are_accepted() -> None:
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(128)]

    assert len(parse_job_request(request(tools=tools)).api_fields()["tools"]) == 128


def test_an_empty_tools_list_is_refused_naming_tools() -> None:
    assert_refused_naming(request(tools=[]), "tools")


# --- response format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Answer in JSON."}, USER],
        [{"role": "user", "content": "give me json please"}],
        [{"role": "developer", "content": [{"type": "text", "text": "Reply as Json."}]}, USER],
        [{"role": "user", "content": [{"type": "text", "text": "Return JSON."}]}],
    ],
)
def test_json_object_format_is_accepted_when_a_message_mentions_json(
    messages: list[dict[str, Any]],
) -> None:
    job = parse_job_request(request(messages=messages, response_format={"type": "json_object"}))

    assert job.api_fields()["response_format"] == {"type": "json_object"}


def test_json_object_format_without_json_in_the_messages_is_refused_with_the_api_wording() -> None:
    error = assert_refused_naming(
        request(response_format={"type": "json_object"}), "response_format"
    )

    assert "'messages' must contain the word 'json' in some form" in str(error)


def test_json_schema_format_keeps_the_api_name_schema_on_the_wire() -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "rivers", "schema": {"type": "object"}, "strict": True},
    }

    job = parse_job_request(request(response_format=response_format))

    assert job.api_fields()["response_format"] == response_format


def test_json_schema_format_with_a_bad_name_is_refused_naming_it() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "my schema"}}

    [field] = refused_fields(request(response_format=response_format))

    assert field.startswith("response_format.")
    assert field.endswith(".name")


def test_an_unknown_response_format_type_is_refused_naming_response_format() -> None:
    fields = refused_fields(request(response_format={"type": "yaml"}))

    assert fields == ["response_format"]


# --- messages: roles and content ----------------------------------------------------------------


TOOL_ROUND = [
    USER,
    {"role": "assistant", "tool_calls": [tool_call("call_1")]},
    {"role": "tool", "tool_call_id": "call_1", "content": "12 C, light rain"},
]


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([{"role": "system", "content": "Be brief."}, USER], id="system-text"),
        pytest.param(
            [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, USER],
            id="system-text-parts",
        ),
        pytest.param(
            [{"role": "developer", "content": "Be brief.", "name": "ops"}, USER],
            id="developer-text",
        ),
        pytest.param(
            [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, USER],
            id="developer-text-parts",
        ),
        pytest.param([{"role": "user", "content": "hi", "name": "ana"}], id="user-text"),
        pytest.param(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.test/a.png", "detail": "low"},
                        },
                    ],
                }
            ],
            id="user-text-and-image",
        ),
        pytest.param(
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_audio",
                            "input_audio": {"data": "UklGRg==", "format": "wav"},
                        }
                    ],
                }
            ],
            id="user-audio",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-123"}}]}],
            id="user-file",
        ),
        pytest.param(
            [USER, {"role": "assistant", "content": "Nile, Amazon, Yangtze."}, USER],
            id="assistant-text",
        ),
        pytest.param(
            [
                USER,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Nile."},
                        {"type": "refusal", "refusal": "I cannot name more."},
                    ],
                },
                USER,
            ],
            id="assistant-text-and-refusal-parts",
        ),
        pytest.param(TOOL_ROUND, id="assistant-tool-calls-then-tool-answer"),
        pytest.param(
            [
                USER,
                {"role": "assistant", "function_call": {"name": "get_weather", "arguments": "{}"}},
                {"role": "function", "name": "get_weather", "content": "12 C"},
                {"role": "function", "name": "get_weather", "content": None},
            ],
            id="assistant-function-call-then-function-answers",
        ),
        pytest.param(
            [USER, {"role": "assistant", "audio": {"id": "audio_1"}}, USER],
            id="assistant-audio-only",
        ),
        pytest.param(
            [
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "custom", "custom": {"name": "sql", "input": "1"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "1"},
            ],
            id="assistant-custom-tool-call-then-tool-answer",
        ),
        pytest.param(
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "What is in this picture?",
                            "prompt_cache_breakpoint": {"mode": "explicit"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://a.test/a.png", "detail": "original"},
                            "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"},
                        },
                    ],
                }
            ],
            id="user-image-original-detail-and-cache-breakpoints",
        ),
        pytest.param(
            [
                USER,
                {"role": "assistant", "tool_calls": [tool_call("call_1")]},
                {
                    "role": "tool",
                    "tool_call_id": "call_1",
                    "content": [{"type": "text", "text": "12 C"}],
                },
            ],
            id="tool-text-parts",
        ),
    ],
)
def test_every_api_role_with_text_or_content_parts_is_accepted_and_sent_as_given(
    messages: list[dict[str, Any]],
) -> None:
    job = parse_job_request(request(messages=messages))

    assert job.api_fields()["messages"] == messages


@pytest.mark.parametrize("role", ["bot", "", None])
def test_a_message_with_an_unknown_role_is_refused_naming_the_message(role: object) -> None:
    assert refused_fields(request(messages=[{"role": role, "content": "hi"}])) == ["messages.0"]


def test_a_function_message_without_its_name_is_refused_naming_the_name() -> None:
    message = {"role": "function", "content": "sunny"}

    assert refused_fields(request(messages=[USER, message])) == ["messages.1.name"]


def test_a_message_without_a_role_is_refused_naming_the_message() -> None:
    assert refused_fields(request(messages=[{"content": "hi"}])) == ["messages.0"]


def test_an_assistant_message_without_content_or_tool_calls_is_refused() -> None:
    error = refusal_of(request(messages=[USER, {"role": "assistant"}]))

    [problem] = error.errors
    assert problem["field"].startswith("messages.1")
    assert problem["field"].endswith("content")
    assert problem["message"] == (
        "an assistant message needs content, tool_calls, function_call or audio"
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"role": "user", "content": []}, id="user-empty-parts"),
        pytest.param({"role": "system", "content": []}, id="system-empty-parts"),
        pytest.param(
            {
                "role": "system",
                "content": [{"type": "image_url", "image_url": {"url": "https://a.test/x.png"}}],
            },
            id="system-image-part",
        ),
        pytest.param(
            {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]},
            id="user-refusal-part",
        ),
        pytest.param(
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://a.test/x.png", "detail": "4k"},
                    }
                ],
            },
            id="user-image-unknown-detail",
        ),
        pytest.param(
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}],
            },
            id="user-audio-unknown-format",
        ),
        pytest.param({"role": "user", "content": 42}, id="user-number-content"),
        pytest.param({"role": "user"}, id="user-no-content"),
        pytest.param({"role": "user", "content": "hi", "temperature": 0}, id="unknown-field"),
    ],
)
def test_a_malformed_message_is_refused_naming_that_message(message: dict[str, Any]) -> None:
    fields = refused_fields(request(messages=[message]))

    assert fields
    assert all(field.startswith("messages.0") for field in fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"messages": [{"role": "user", "content": 42}]},
            {"messages.0.content"},
            id="message-content",
        ),
        pytest.param(
            {"tools": [WEATHER_TOOL], "tool_choice": "always"}, {"tool_choice"}, id="tool_choice"
        ),
        pytest.param(
            {"response_format": {"type": "json_schema", "json_schema": {"name": "my schema"}}},
            {"response_format.json_schema.name"},
            id="json_schema-name",
        ),
    ],
)
def test_a_refused_field_is_named_by_its_path_without_union_member_names(
    fields: dict[str, Any], expected: set[str]
) -> None:
    assert set(refused_fields(request(**fields))) == expected


# --- messages: the tool-call ordering rule ------------------------------------------------------


def test_each_tool_call_answered_right_after_its_assistant_message_is_accepted() -> None:
    messages = [
        USER,
        {"role": "assistant", "tool_calls": [tool_call("call_1"), tool_call("call_2")]},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
        {"role": "assistant", "content": "Rain in one place, sun in the other."},
        USER,
    ]

    assert len(parse_job_request(request(messages=messages)).messages) == 6


def test_a_tool_message_with_no_tool_call_before_it_is_refused_naming_its_index() -> None:
    messages = [USER, {"role": "tool", "tool_call_id": "call_1", "content": "rain"}]

    error = assert_refused_naming(request(messages=messages), "messages.1")

    assert "'call_1'" in str(error)


def test_a_tool_message_answering_an_unknown_id_is_refused_naming_its_index() -> None:
    messages = [*TOOL_ROUND[:2], {"role": "tool", "tool_call_id": "call_9", "content": "rain"}]

    assert refused_fields(request(messages=messages)) == ["messages.2"]


def test_a_tool_call_answered_twice_is_refused_naming_the_second_answer() -> None:
    messages = [*TOOL_ROUND, {"role": "tool", "tool_call_id": "call_1", "content": "again"}]

    assert refused_fields(request(messages=messages)) == ["messages.3"]


def test_a_message_before_every_tool_call_is_answered_is_refused_listing_the_missing_ids() -> None:
    messages = [
        USER,
        {"role": "assistant", "tool_calls": [tool_call("call_1"), tool_call("call_2")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        USER,
    ]

    error = assert_refused_naming(request(messages=messages), "messages.3")

    assert "missing: call_2" in str(error)


def test_a_tool_message_after_a_later_user_message_is_refused() -> None:
    messages = [*TOOL_ROUND, USER, {"role": "tool", "tool_call_id": "call_1", "content": "late"}]

    assert refused_fields(request(messages=messages)) == ["messages.4"]


def test_a_conversation_ending_with_unanswered_tool_calls_is_refused() -> None:
    messages = [USER, {"role": "assistant", "tool_calls": [tool_call("call_1")]}]

    assert_refused_naming(request(messages=messages), "messages.1")


# --- unknown fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["temprature", "api_key", "prompt", "labels"])
def test_an_unknown_parameter_is_refused_naming_it_as_the_api_does(field: str) -> None:
    error = refusal_of(request(**{field: 1}))

    message = f"Unrecognized request argument supplied: {field}"
    assert error.errors == [{"field": field, "message": message}]
    assert f"{field}: {message}" in str(error)


def test_a_parameter_of_the_sdk_that_tierq_does_not_declare_is_checked_against_its_sdk_type() -> (
    None
):
    location = {"type": "approximate", "approximate": {"city": "Oslo", "planet": "Earth"}}

    assert refused_fields(request(web_search_options={"user_location": location})) == [
        "web_search_options.user_location.approximate.planet"
    ]
    assert refused_fields(request(verbosity="loud")) == ["verbosity"]
    assert refused_fields(request(store="yes")) == ["store"]


def test_an_unknown_field_inside_a_tool_is_refused_naming_its_path() -> None:
    tool = {"type": "function", "function": {"name": "f", "returns": "string"}}

    assert refused_fields(request(tools=[tool])) == ["tools.0.function.returns"]


# --- metadata (the API's) and labels (tierq's) ---------------------------------------------------


def test_metadata_is_the_apis_and_is_sent_unchanged() -> None:
    job = parse_job_request(request(store=True, metadata={"tenant": "acme", "run": "42"}))

    assert job.api_fields()["metadata"] == {"tenant": "acme", "run": "42"}


def test_metadata_of_the_wrong_type_is_refused_naming_its_key() -> None:
    assert refused_fields(request(metadata={"run": 42})) == ["metadata.run"]


def test_sixteen_labels_are_accepted() -> None:
    labels = {f"key{i}": "v" for i in range(16)}

    assert parse_labels(labels) == labels


def test_seventeen_labels_are_refused_naming_labels() -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_labels({f"key{i}": "v" for i in range(17)})

    assert [problem["field"] for problem in caught.value.errors] == ["labels"]


def test_a_label_key_of_64_characters_and_a_value_of_512_are_accepted() -> None:
    labels = {"k" * 64: "v" * 512}

    assert parse_labels(labels) == labels


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({"k" * 65: "v"}, id="key-too-long"),
        pytest.param({"": "v"}, id="empty-key"),
        pytest.param({"k": "v" * 513}, id="value-too-long"),
        pytest.param({"k": 1}, id="integer-value"),
        pytest.param({"k": None}, id="null-value"),
        pytest.param({"k": ["v"]}, id="list-value"),
        pytest.param({"k": True}, id="boolean-value"),
        pytest.param(["k", "v"], id="not-a-mapping"),
    ],
)
def test_labels_outside_the_limits_are_refused_naming_labels(labels: Any) -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_labels(labels)

    fields = [problem["field"] for problem in caught.value.errors]
    assert fields
    assert all(field.startswith("labels") for field in fields)


def test_request_size_is_the_compact_json_of_what_is_sent() -> None:
    job = parse_job_request(request(temperature=0.5))

    expected = json.dumps(job.api_fields(), separators=(",", ":")).encode()
    assert request_size_bytes(job) == len(expected)


# --- parse_job_request and describe_validation_error --------------------------------------------


def test_a_request_model_is_passed_through_unchanged() -> None:
    job = JobRequest.model_validate(request())

    assert parse_job_request(job) is job


def test_pydantics_report_becomes_an_invalid_job_error_naming_each_field() -> None:
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate(request(temperature=5, seed="x"))

    error = describe_validation_error(caught.value, JobRequest)

    assert isinstance(error, InvalidJobError)
    assert [problem["field"] for problem in error.errors] == ["temperature", "seed"]


def test_a_refusal_does_not_chain_pydantics_error() -> None:
    error = refusal_of(request(temperature=5))

    assert error.__cause__ is None
    assert error.__suppress_context__


# --- the envelope -------------------------------------------------------------------------------


def envelope_for(data: dict[str, Any], **fields: Any) -> JobEnvelope:
    return JobEnvelope(
        job_id="job-1",
        tier="standard",
        submitted_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        request=parse_job_request(data),
        **fields,
    )


def across_the_queue(envelope: JobEnvelope) -> JobEnvelope:
    """What a worker rebuilds from the message a producer sent."""
    return JobEnvelope.model_validate(json.loads(json.dumps(envelope.to_message())))


def test_the_envelope_message_carries_only_what_the_caller_set() -> None:
    message = envelope_for(
        request(temperature=0.2, metadata={"run": "7"}), labels={"tenant": "acme"}
    ).to_message()

    assert message == {
        "job_id": "job-1",
        "tier": "standard",
        "submitted_at": "2025-01-02T03:04:05Z",
        "request": {**request(), "temperature": 0.2, "metadata": {"run": "7"}},
        "labels": {"tenant": "acme"},
        "generation": 0,
    }


def test_a_parameter_set_to_its_default_survives_the_queue_as_set() -> None:
    restored = across_the_queue(envelope_for(request(temperature=1.0)))

    assert restored.request.model_fields_set == {"model", "messages", "temperature"}
    assert restored.request.api_fields()["temperature"] == 1.0


def test_labels_survive_the_queue_beside_the_request_and_are_not_sent() -> None:
    restored = across_the_queue(envelope_for(request(), labels={"tenant": "acme"}))

    assert restored.labels == {"tenant": "acme"}
    assert restored.request.api_fields() == request()


def test_an_envelope_with_an_unknown_field_is_refused() -> None:
    message = envelope_for(request()).to_message()

    with pytest.raises(ValidationError):
        JobEnvelope.model_validate({**message, "priority": 1})


def test_an_envelope_whose_request_breaks_the_contract_is_refused() -> None:
    message = envelope_for(request()).to_message()
    message["request"]["temperature"] = 9

    with pytest.raises(ValidationError):
        JobEnvelope.model_validate(message)


# --- properties ---------------------------------------------------------------------------------

bounded = hypothesis_settings(max_examples=150, deadline=None, database=None)

texts = st.text(max_size=12)
nonempty_texts = st.text(min_size=1, max_size=12)
function_names = st.from_regex(r"[a-zA-Z0-9_-]{1,16}", fullmatch=True)
text_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts}), min_size=1, max_size=2
)
user_parts = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
        st.fixed_dictionaries(
            {
                "type": st.just("image_url"),
                "image_url": st.fixed_dictionaries(
                    {"url": st.just("https://example.test/a.png")},
                    optional={"detail": st.sampled_from(["auto", "low", "high"])},
                ),
            }
        ),
    ),
    min_size=1,
    max_size=2,
)
instructions = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer"]), "content": texts | text_parts},
    optional={"name": texts},
)
user_messages = st.fixed_dictionaries(
    {"role": st.just("user"), "content": texts | user_parts},
    optional={"name": texts},
)
json_schema_formats = st.fixed_dictionaries(
    {
        "type": st.just("json_schema"),
        "json_schema": st.fixed_dictionaries(
            {"name": function_names},
            optional={
                "description": texts,
                "schema": st.just({"type": "object", "properties": {}}),
                "strict": st.booleans() | st.none(),
            },
        ),
    }
)
function_tools = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": function_names},
            optional={
                "description": texts,
                "parameters": st.just({"type": "object", "properties": {}}),
                "strict": st.booleans(),
            },
        ),
    }
)
simple_parameters = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2) | st.integers(0, 2),
        "top_p": st.floats(0, 1),
        "frequency_penalty": st.floats(-2, 2),
        "presence_penalty": st.floats(-2, 2),
        "stop": st.none() | nonempty_texts | st.lists(nonempty_texts, max_size=4),
        "seed": st.none() | st.integers(-(2**63), 2**63 - 1),
        "n": st.integers(1, 128),
        "reasoning_effort": st.none()
        | st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max"]),
        "user": texts,
        "metadata": st.dictionaries(
            st.text(min_size=1, max_size=64), st.text(max_size=20), max_size=16
        ),
    },
)


# Those the SDK types `Optional` (it does not, for response_format, tools, tool_choice and
# parallel_tool_calls).
NULLABLE_PARAMETERS = ("max_tokens", "max_completion_tokens", "top_logprobs", "stream_options")


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = draw(st.lists(instructions, max_size=1))
    messages.append(draw(user_messages))
    if draw(st.booleans()):
        ids = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3, unique=True))
        assistant: dict[str, Any] = {
            "role": "assistant",
            "tool_calls": [tool_call(call_id, draw(function_names)) for call_id in ids],
        }
        if draw(st.booleans()):
            assistant["content"] = None
        messages.append(assistant)
        messages.extend(
            {"role": "tool", "tool_call_id": call_id, "content": draw(texts | text_parts)}
            for call_id in draw(st.permutations(ids))
        )
        messages.append({"role": "assistant", "content": draw(texts)})
        messages.append(draw(user_messages))
    return messages


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Request dicts the contract accepts, each setting a different subset of parameters."""
    data: dict[str, Any] = {
        "model": draw(st.sampled_from(["gpt-4o", "gpt-4o-mini", "o3", "o4-mini"])),
        "messages": draw(conversations()),
        **draw(simple_parameters),
    }
    limit = draw(st.sampled_from([None, "max_tokens", "max_completion_tokens"]))
    if limit is not None:
        data[limit] = draw(st.integers(1, 100_000))
    if draw(st.booleans()):
        data["logprobs"] = draw(st.booleans())
        if data["logprobs"] and draw(st.booleans()):
            data["top_logprobs"] = draw(st.integers(0, 20))
    if draw(st.booleans()):
        data["stream"] = draw(st.booleans())
        if data["stream"] and draw(st.booleans()):
            data["stream_options"] = draw(
                st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})
            )
    if draw(st.booleans()):
        tools: list[dict[str, Any]] = draw(st.lists(function_tools, min_size=1, max_size=3))
        data["tools"] = tools
        names = [tool["function"]["name"] for tool in tools]
        named = st.sampled_from(names).map(
            lambda name: {"type": "function", "function": {"name": name}}
        )
        if draw(st.booleans()):
            data["tool_choice"] = draw(st.sampled_from(["none", "auto", "required"]) | named)
        if draw(st.booleans()):
            data["parallel_tool_calls"] = draw(st.booleans())
    response_format = draw(
        st.none()
        | st.just({"type": "text"})
        | st.just({"type": "json_object"})
        | json_schema_formats
    )
    if response_format is not None:
        data["response_format"] = response_format
        if response_format["type"] == "json_object":
            data["messages"] = [{"role": "system", "content": "Reply in JSON."}, *data["messages"]]
    # A caller may also send an optional parameter as an explicit null.
    for name in NULLABLE_PARAMETERS:
        if name not in data and draw(st.booleans()):
            data[name] = None
    return data


@bounded
@given(data=valid_requests())
def test_only_the_parameters_the_caller_set_are_sent(data: dict[str, Any]) -> None:
    job = parse_job_request(data)

    assert job.model_fields_set == set(data)
    assert set(job.api_fields()) == set(data)


@bounded
@given(
    data=valid_requests(),
    job_id=st.uuids().map(str),
    tier=st.sampled_from(["fast", "standard", "reasoning"]),
    submitted_at=st.datetimes(timezones=st.just(UTC)),
)
def test_a_valid_request_crosses_the_queue_as_json_unchanged(
    data: dict[str, Any], job_id: str, tier: str, submitted_at: datetime
) -> None:
    envelope = JobEnvelope(
        job_id=job_id, tier=tier, submitted_at=submitted_at, request=parse_job_request(data)
    )

    restored = across_the_queue(envelope)

    assert restored.request.api_fields() == envelope.request.api_fields()
    assert restored.request.model_fields_set == envelope.request.model_fields_set
    assert (restored.job_id, restored.tier, restored.submitted_at) == (job_id, tier, submitted_at)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
junk_keys = st.sampled_from([*JobRequest.model_fields, "schema", "role", "content"]) | st.text(
    max_size=10
)
junk_messages = st.lists(
    st.dictionaries(
        st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "refusal"]),
        st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | json_values,
        max_size=4,
    ),
    max_size=3,
)
junk_dicts = st.dictionaries(junk_keys, json_values | junk_messages, max_size=8)


@bounded
@given(
    data=junk_dicts | st.builds(lambda base, junk: {**base, **junk}, valid_requests(), junk_dicts)
)
def test_junk_is_refused_only_with_an_invalid_job_error_naming_fields(data: dict[str, Any]) -> None:
    try:
        parse_job_request(data)
    except InvalidJobError as error:
        refusal = error
    else:
        return
    assert refusal.errors
    for problem in refusal.errors:
        assert set(problem) == {"field", "message"}
        assert problem["field"]
        assert problem["message"]
        assert f"{problem['field']}: " in str(refusal)


# --- the API's JSON types, not look-alikes -------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "1.5"),
        ("n", True),
        ("n", "2"),
        ("logprobs", "yes"),
        ("seed", 1.0),
        ("max_tokens", "100"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_not_converted(field: str, value: Any) -> None:
    assert_refused_naming(request(**{field: value}), field)


def test_an_integer_is_a_valid_number_for_a_float_parameter() -> None:
    assert parse_job_request(request(temperature=1)).temperature == 1.0
